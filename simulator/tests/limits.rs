//! Versions, limits, API usage counting, and the plain endpoints.

mod common;

use std::collections::BTreeSet;

use common::{assert_matches_fixture, fixture, limit_info, Sim, VERSION};
use seatwatch_simulator::SimulatorConfig;
use serde_json::Value;

#[tokio::test]
async fn versions_equal_the_recording_and_need_no_session() {
    let sim = Sim::default().await;
    for path in ["/services/data/", "/services/data"] {
        let response = sim
            .client
            .get(format!("{}{path}", sim.base))
            .send()
            .await
            .unwrap();
        assert!(limit_info(&response).is_none());
        assert_matches_fixture(response, "versions.json").await;
    }
    assert_eq!(sim.running.handle().api_calls(), 0);
}

#[tokio::test]
async fn usage_header_is_on_every_data_answer_and_counts_each_call() {
    let mut config = SimulatorConfig::for_tests();
    config.page_size = 1000;
    let sim = Sim::start(config).await;
    let token = sim.login().await;
    let handle = sim.running.handle();
    assert_eq!(handle.api_calls(), 0, "logging in is not a data call");

    // Query, next page, limits, and a refused query each count once.
    let first = sim.query(&token, "SELECT Id FROM User").await;
    assert_eq!(limit_info(&first), Some((1, 115_000)));
    let body: Value = first.json().await.unwrap();
    let next = sim
        .get(&token, body["nextRecordsUrl"].as_str().unwrap())
        .await;
    assert_eq!(limit_info(&next), Some((2, 115_000)));
    let limits = sim
        .get(&token, &format!("/services/data/{VERSION}/limits"))
        .await;
    assert_eq!(limit_info(&limits), Some((3, 115_000)));
    let bad = sim.query(&token, "SELECT Nope FROM User").await;
    assert_eq!(bad.status(), 400);
    assert_eq!(limit_info(&bad), Some((4, 115_000)));

    // An unauthenticated call carries the header but is not counted.
    let unauthenticated = sim.query("nope", "SELECT Id FROM User").await;
    assert_eq!(unauthenticated.status(), 401);
    assert_eq!(limit_info(&unauthenticated), Some((4, 115_000)));
    assert_eq!(handle.api_calls(), 4);
}

#[tokio::test]
async fn limits_have_the_recorded_shape_and_agree_with_usage() {
    let mut config = SimulatorConfig::for_tests();
    config.api_daily_limit = 50_000;
    let sim = Sim::start(config).await;
    sim.running.handle().set_api_calls(10_230);
    let token = sim.login().await;
    let response = sim
        .get(&token, &format!("/services/data/{VERSION}/limits/"))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/json;charset=UTF-8"
    );
    let (used, limit) = limit_info(&response).unwrap();
    assert_eq!((used, limit), (10_231, 50_000));
    let body: Value = response.json().await.unwrap();

    let recorded = fixture("limits.json");
    let keys = |v: &Value| {
        v.as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(keys(&body), keys(&recorded["body"]));
    let daily = &body["DailyApiRequests"];
    assert_eq!(daily["Max"], 50_000);
    assert_eq!(daily["Remaining"], 50_000 - 10_231);
    assert!(
        daily.as_object().unwrap().len() > 2,
        "per-app entries sit beside Max/Remaining"
    );
    for (name, entry) in body.as_object().unwrap() {
        assert!(
            entry["Max"].is_u64() && entry["Remaining"].is_u64(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn the_daily_allocation_is_enforced() {
    let mut config = SimulatorConfig::for_tests();
    config.api_daily_limit = 2;
    let sim = Sim::start(config).await;
    let token = sim.login().await;
    for _ in 0..2 {
        assert_eq!(
            sim.query(&token, "SELECT Id FROM UserLicense")
                .await
                .status(),
            200
        );
    }
    let refused = sim.query(&token, "SELECT Id FROM UserLicense").await;
    assert_eq!(limit_info(&refused), Some((2, 2)));
    assert_matches_fixture(refused, "error_request_limit_exceeded.json").await;
    assert_eq!(sim.running.handle().api_calls(), 2);
}

#[tokio::test]
async fn health_and_unknown_resources() {
    let sim = Sim::default().await;
    let health = sim
        .client
        .get(format!("{}/healthz", sim.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let token = sim.login().await;
    for path in [
        "/services/data/v20.0/limits",
        "/services/data/v62.0/sobjects",
        "/nothing",
    ] {
        let response = sim.get(&token, path).await;
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body[0]["errorCode"], "NOT_FOUND");
    }
}
