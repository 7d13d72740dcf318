//! Injected faults: server errors, Edge HTML, session expiry after N calls, slow answers.

mod common;

use std::time::{Duration, Instant};

use common::{assert_matches_fixture, limit_info, Sim};

const SOQL: &str = "SELECT Id, Name FROM UserLicense";

#[tokio::test]
async fn the_next_calls_fail_with_server_unavailable() {
    let sim = Sim::default().await;
    let token = sim.login().await;
    sim.running
        .handle()
        .with_faults(|f| f.fail_next_data_calls = 2);
    for _ in 0..2 {
        let response = sim.query(&token, SOQL).await;
        assert!(limit_info(&response).is_some());
        assert_matches_fixture(response, "error_server_unavailable.json").await;
    }
    assert_eq!(sim.query(&token, SOQL).await.status(), 200);
    assert_eq!(
        sim.running.handle().api_calls(),
        1,
        "failed calls are not counted"
    );
}

#[tokio::test]
async fn edge_html_is_served_with_420() {
    let sim = Sim::default().await;
    let token = sim.login().await;
    sim.running
        .handle()
        .with_faults(|f| f.edge_html_next_data_calls = 1);
    assert_matches_fixture(sim.query(&token, SOQL).await, "error_edge_420_html.json").await;
    assert_eq!(sim.query(&token, SOQL).await.status(), 200);
}

#[tokio::test]
async fn a_session_expires_after_n_data_calls_and_a_new_login_recovers() {
    let sim = Sim::default().await;
    sim.running
        .handle()
        .with_faults(|f| f.expire_session_after_data_calls = Some(3));
    let token = sim.login().await;
    for _ in 0..3 {
        assert_eq!(sim.query(&token, SOQL).await.status(), 200);
    }
    assert_matches_fixture(
        sim.query(&token, SOQL).await,
        "error_invalid_session_id.json",
    )
    .await;

    let fresh = sim.login().await;
    assert_ne!(fresh, token);
    assert_eq!(sim.query(&fresh, SOQL).await.status(), 200);
    assert_eq!(sim.running.handle().logins(), 2);
}

#[tokio::test]
async fn expire_sessions_invalidates_every_token() {
    let sim = Sim::default().await;
    let tokens = [sim.login().await, sim.login().await];
    assert_eq!(sim.running.handle().open_sessions(), 2);
    sim.running.handle().expire_sessions();
    for token in &tokens {
        assert_matches_fixture(
            sim.query(token, SOQL).await,
            "error_invalid_session_id.json",
        )
        .await;
    }
    assert_eq!(sim.running.handle().open_sessions(), 0);
}

#[tokio::test]
async fn slow_answers_are_slow() {
    let sim = Sim::default().await;
    let token = sim.login().await;
    let delay = Duration::from_millis(300);
    sim.running
        .handle()
        .with_faults(|f| f.data_call_delay = Some(delay));
    let started = Instant::now();
    assert_eq!(sim.query(&token, SOQL).await.status(), 200);
    assert!(started.elapsed() >= delay);
}
