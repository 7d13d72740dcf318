//! Starting and stopping: org files (round trip and every kind of bad file), bind failures,
//! `run` until shutdown, and demo mode over HTTP.

mod common;

use std::io::Write;

use chrono::{Duration, Utc};
use common::Sim;
use seatwatch_simulator::{
    dump_org, load_org, run, start, OrgSource, SimulatorConfig, SimulatorError,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

fn org_file(contents: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(contents.as_bytes()).unwrap();
    file
}

#[tokio::test]
async fn a_dumped_org_loads_back_and_serves_the_same_data() {
    let config = SimulatorConfig::for_tests();
    let org = load_org(&config, Utc::now()).unwrap();
    let file = org_file(&dump_org(&org).unwrap());

    let mut from_file = SimulatorConfig::for_tests();
    from_file.org = OrgSource::File(file.path().to_owned());
    let sim = Sim::start(from_file).await;
    assert_eq!(sim.running.handle().org_id(), org.org_id);
    assert_eq!(sim.running.handle().with_org(|o| o.clone()), org);
    let token = sim.login().await;
    let body = sim.query_ok(&token, "SELECT Id FROM User").await;
    assert_eq!(body["totalSize"], org.users.len());
}

#[tokio::test]
async fn bad_org_files_say_what_is_wrong() {
    let config = SimulatorConfig::for_tests();
    let good = load_org(&config, Utc::now()).unwrap();
    let mut json: Value = serde_json::from_str(&dump_org(&good).unwrap()).unwrap();

    // Broken JSON, an unknown key, a dangling reference, a bad id.
    let mut unknown_key = json.clone();
    unknown_key["colour"] = Value::from("blue");
    let mut dangling = json.clone();
    dangling["users"][3]["profile_id"] = Value::from("00e5g0000000000AAA");
    json["users"][4]["id"] = Value::from("005shortid");
    let cases = [
        ("{ not json".to_owned(), "line 1"),
        (unknown_key.to_string(), "colour"),
        (dangling.to_string(), "00e5g0000000000AAA"),
        (json.to_string(), "005shortid"),
    ];
    for (contents, mentioned) in cases {
        let file = org_file(&contents);
        let mut config = SimulatorConfig::for_tests();
        config.org = OrgSource::File(file.path().to_owned());
        match start(config, CancellationToken::new()).await {
            Err(e @ SimulatorError::OrgFileInvalid { .. }) => {
                let message = e.to_string();
                assert!(message.contains(mentioned), "{message}");
                assert!(
                    message.contains(&file.path().display().to_string()),
                    "{message}"
                );
            }
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("a bad org file was accepted"),
        }
    }

    // A missing file.
    let mut config = SimulatorConfig::for_tests();
    config.org = OrgSource::File("/nonexistent/org.json".into());
    let result = start(config, CancellationToken::new()).await;
    assert!(matches!(
        result,
        Err(SimulatorError::OrgFileUnreadable { .. })
    ));
}

#[tokio::test]
async fn the_integration_user_must_exist() {
    let mut config = SimulatorConfig::for_tests();
    let org = load_org(&config, Utc::now()).unwrap();
    let file = org_file(&dump_org(&org).unwrap());
    config.org = OrgSource::File(file.path().to_owned());
    config.credentials.username = "nobody@elsewhere.example".into();
    let result = start(config, CancellationToken::new()).await;
    assert!(matches!(result, Err(SimulatorError::InvalidConfig(m)) if m.contains("nobody@")));
}

#[tokio::test]
async fn a_taken_port_is_a_bind_error() {
    let sim = Sim::default().await;
    let mut config = SimulatorConfig::for_tests();
    config.listen_addr = sim.running.local_addr();
    let result = start(config, CancellationToken::new()).await;
    assert!(matches!(result, Err(SimulatorError::Bind { .. })));
}

#[tokio::test]
async fn run_serves_until_shutdown() {
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(SimulatorConfig::for_tests(), shutdown.clone()));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!task.is_finished());
    shutdown.cancel();
    let result = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
    assert!(matches!(result, Ok(Ok(Ok(())))));
}

#[tokio::test]
async fn stop_ends_serving_even_with_open_connections() {
    let sim = Sim::default().await;
    let base = sim.base.clone();
    let client = sim.client.clone();

    // A finished request leaves a keep-alive connection open.
    let token = sim.login().await;
    assert_eq!(
        sim.query(&token, "SELECT Id FROM UserLicense")
            .await
            .status(),
        200
    );
    let started = std::time::Instant::now();
    sim.running.stop().await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "stop waited for idle connections"
    );
    let result = client.get(format!("{base}/healthz")).send().await;
    assert!(result.is_err());
}

#[tokio::test(start_paused = true)]
async fn demo_mode_frees_the_full_pool_over_http_time() {
    let mut config = SimulatorConfig::for_tests();
    config.demo = true;
    let sim = Sim::start(config).await;
    let handle = sim.running.handle();
    let used = |h: &seatwatch_simulator::SimulatorHandle| {
        h.with_org(|org| {
            let sfdc = org.user_license_by_key("SFDC").unwrap();
            (
                org.seat_counts().user_license(&sfdc.id),
                sfdc.total_licenses,
            )
        })
    };
    let (before, total) = used(&handle);
    assert!(before * 100 >= total * 95);

    // Four 5-second steps; the clock is paused, so this does not really wait.
    tokio::time::sleep(std::time::Duration::from_secs(21)).await;
    let (after, _) = used(&handle);
    assert!(after * 100 < total * 90, "{after}/{total}");
    let idle_platform = handle.with_org(|org| {
        let aul = org.user_license_by_key("AUL").unwrap().id.clone();
        let now = Utc::now();
        org.active_users_of_license(&aul)
            .iter()
            .filter(|u| {
                u.last_login_date
                    .is_none_or(|at| now - at > Duration::days(90))
            })
            .count()
    });
    assert_eq!(idle_platform, 0);
}
