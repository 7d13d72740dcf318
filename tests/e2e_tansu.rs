//! End to end on a real Kafka-protocol broker: the simulator, ingest, transform and alert
//! run as separate `seatwatch` processes against a tansu broker, and the test checks the
//! seat state and alerts the simulated org must produce, each service's ops endpoints,
//! and a clean exit on SIGTERM.
//!
//! Needs the `tansu` binary (`scripts/test.sh` installs it; `TANSU_BIN` names
//! it). Everything listens on 127.0.0.1.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::Command;
use std::time::Duration;

use seatwatch_schemas::avro::AvroRecord;
use seatwatch_schemas::{Alert, AlertStatus, LicenseKind, LicenseState, UserState};
use support::*;

/// What the simulator's org holds, read through its own REST API.
struct Expected {
    user_licenses: BTreeMap<String, (String, i64, i64)>,
    users: BTreeSet<String>,
}

fn expected_from_simulator(login_url: &str) -> Expected {
    use seatwatch_common::kafka::KafkaConfig;
    use seatwatch_common::SecretRef;
    use seatwatch_ingest::{IngestConfig, OrgConfig};

    let credentials = seatwatch_simulator::Credentials::demo();
    let config = IngestConfig::with_defaults(KafkaConfig::default());
    let org = OrgConfig {
        name: "expectations".into(),
        login_url: login_url.into(),
        consumer_key: credentials.consumer_key,
        username: credentials.username,
        consumer_secret: Some(SecretRef::Inline(credentials.consumer_secret)),
        password: Some(SecretRef::Inline(credentials.password)),
        security_token: Some(SecretRef::Inline(credentials.security_token)),
        ..Default::default()
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client =
            seatwatch_ingest::salesforce::SalesforceClient::new(&config, &org).unwrap();
        let licences = client
            .query_all("SELECT Id, Name, TotalLicenses, UsedLicenses FROM UserLicense")
            .await
            .unwrap();
        let users = client.query_all("SELECT Id FROM User").await.unwrap();
        let field = |v: &serde_json::Value, f: &str| v[f].clone();
        Expected {
            user_licenses: licences
                .iter()
                .map(|raw| {
                    let v: serde_json::Value = serde_json::from_str(raw.get()).unwrap();
                    let id = field(&v, "Id").as_str().unwrap().to_owned();
                    let name = field(&v, "Name").as_str().unwrap().to_owned();
                    let total = field(&v, "TotalLicenses").as_i64().unwrap();
                    let used = field(&v, "UsedLicenses").as_i64().unwrap();
                    (id, (name, total, used))
                })
                .collect(),
            users: users
                .iter()
                .map(|raw| {
                    let v: serde_json::Value = serde_json::from_str(raw.get()).unwrap();
                    v["Id"].as_str().unwrap().to_owned()
                })
                .collect(),
        }
    })
}

fn write_config(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path
}

#[test]
fn pipeline_on_tansu_produces_seat_state_and_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Tansu::start(dir.path());
    let prefix = format!("e2e-{}.", &uuid::Uuid::new_v4().simple().to_string()[..8]);

    // Topics first: tansu creates none by itself.
    let created = seatwatch()
        .args(["topics", "create", "--bootstrap-servers", &broker.bootstrap])
        .args(["--topic-prefix", &prefix, "--partitions", "3"])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "topics create: {}",
        String::from_utf8_lossy(&created.stderr)
    );

    // The simulator, as its own process, with the static built-in org.
    let sim_port = free_port();
    let login_url = format!("http://127.0.0.1:{sim_port}");
    let mut simulator_cmd = seatwatch();
    simulator_cmd.args(["simulator", "--listen", &format!("127.0.0.1:{sim_port}")]);
    let mut simulator = Proc::spawn("simulator", simulator_cmd, dir.path());
    wait_for("the simulator", Duration::from_secs(30), || {
        simulator.assert_running();
        http_get(&format!("{login_url}/healthz")).filter(|(s, _)| *s == 200)
    });
    let expected = expected_from_simulator(&login_url);
    assert!(expected.users.len() > 1000, "the default org is mid-size");

    let kafka = format!(
        "[kafka]\nbootstrap_servers = \"{}\"\ntopic_prefix = \"{prefix}\"\ncreate_topics = false\n",
        broker.bootstrap
    );
    let ingest_config = write_config(
        dir.path(),
        "ingest.toml",
        &format!(
            "poll_interval_secs = 5\n{kafka}\n[[orgs]]\nname = \"simulated\"\n\
             login_url = \"{login_url}\"\n\
             consumer_key = \"{}\"\nusername = \"{}\"\n\
             consumer_secret = {{ env = \"{SF_CONSUMER_SECRET_ENV}\" }}\n\
             password = {{ env = \"{SF_PASSWORD_ENV}\" }}\n\
             security_token = {{ env = \"{SF_SECURITY_TOKEN_ENV}\" }}\n",
            seatwatch_simulator::Credentials::demo().consumer_key,
            seatwatch_simulator::Credentials::demo().username,
        ),
    );
    let transform_config = write_config(dir.path(), "transform.toml", &kafka);
    let alert_config = write_config(
        dir.path(),
        "alert.toml",
        &format!("evaluate_interval_secs = 1\n{kafka}"),
    );

    let (mut ingest, ingest_url) =
        spawn_service("ingest", &["ingest", "run"], &ingest_config, dir.path());
    let (mut transform, transform_url) =
        spawn_service("transform", &["transform"], &transform_config, dir.path());
    let (mut alert, alert_url) = spawn_service("alert", &["alert"], &alert_config, dir.path());
    let mut services = [&mut ingest, &mut transform, &mut alert];

    // Seat state: every user licence with Salesforce's own counts, every user.
    let license_topic = format!("{prefix}seats.license-state");
    let user_topic = format!("{prefix}seats.user-state");
    let licences: BTreeMap<String, LicenseState> = wait_for(
        "every user licence in seats.license-state",
        Duration::from_secs(120),
        || {
            for s in services.iter_mut() {
                s.assert_running();
            }
            let state: BTreeMap<String, LicenseState> =
                latest(read_topic(&broker.bootstrap, &license_topic))
                    .into_values()
                    .flatten()
                    .map(|bytes| LicenseState::from_avro(&bytes).unwrap())
                    .filter(|l| l.kind == LicenseKind::User)
                    .map(|l| (l.license_id.clone(), l))
                    .collect();
            (state.len() == expected.user_licenses.len()).then_some(state)
        },
    );
    for (id, (name, total, used)) in &expected.user_licenses {
        let state = &licences[id];
        assert_eq!(
            (&state.name, state.total, state.used),
            (name, Some(*total), *used),
            "{id}"
        );
        if *total > 0 {
            let utilization = state.utilization.unwrap();
            assert!((utilization - *used as f64 / *total as f64).abs() < 1e-9);
            assert_eq!(state.available, Some(total - used));
        }
    }
    let full_pool = licences
        .values()
        .find(|l| l.utilization.unwrap_or(0.0) >= 0.95);
    let full_pool = full_pool
        .expect("the default org has a pool at >= 95%")
        .name
        .clone();

    wait_for(
        "every user in seats.user-state",
        Duration::from_secs(120),
        || {
            let users: BTreeSet<String> = latest(read_topic(&broker.bootstrap, &user_topic))
                .into_values()
                .flatten()
                .map(|bytes| UserState::from_avro(&bytes).unwrap().user_id)
                .collect();
            (users == expected.users).then_some(())
        },
    );

    // Alerts: the full pool's utilisation alert and an idle-seat alert fire.
    let alerts_topic = format!("{prefix}seats.alerts");
    let alerts: Vec<Alert> = wait_for(
        "utilisation and idle-seat alerts",
        Duration::from_secs(120),
        || {
            let alerts: Vec<Alert> = read_topic(&broker.bootstrap, &alerts_topic)
                .into_iter()
                .filter_map(|(_, v)| v)
                .map(|bytes| Alert::from_avro(&bytes).unwrap())
                .collect();
            let fired = |rule: &str, pool: Option<&str>| {
                alerts.iter().any(|a| {
                    a.rule == rule
                        && a.status == AlertStatus::Firing
                        && pool.is_none_or(|p| a.pool.as_deref() == Some(p))
                })
            };
            (fired("utilization", Some(&full_pool)) && fired("idle_seats", None)).then_some(alerts)
        },
    );
    let fingerprints: BTreeSet<(&str, &str)> = alerts
        .iter()
        .map(|a| (a.fingerprint.as_str(), a.status.as_str()))
        .collect();
    assert_eq!(
        fingerprints.len(),
        alerts.len(),
        "an alert transition was sent twice"
    );

    // Every service serves its ops endpoints, with metrics promtool accepts, and together
    // they export every metric the Grafana dashboard queries.
    let mut exported = String::new();
    for (name, url) in [
        ("ingest", &ingest_url),
        ("transform", &transform_url),
        ("alert", &alert_url),
    ] {
        assert_eq!(
            http_get(&format!("{url}/healthz")).unwrap().0,
            200,
            "{name} /healthz"
        );
        assert_eq!(
            http_get(&format!("{url}/readyz")).unwrap().0,
            200,
            "{name} /readyz"
        );
        let (status, metrics) = http_get(&format!("{url}/metrics")).unwrap();
        assert_eq!(status, 200);
        assert!(
            metrics.contains(&format!("seatwatch_{name}_")),
            "{name} metrics:\n{metrics}"
        );
        check_metrics_with_promtool(name, &metrics);
        exported.push_str(&metrics);
    }
    for metric in dashboard_metric_names() {
        let series = format!("\n{metric}{{");
        let bare = format!("\n{metric} ");
        assert!(
            exported.contains(&series) || exported.contains(&bare),
            "the dashboard queries {metric}, which no service exports"
        );
    }

    // SIGTERM: each service drains and exits 0.
    for s in services.iter_mut() {
        let status = s.terminate(Duration::from_secs(30));
        assert!(
            status.success(),
            "{} exited with {status}:\n{}",
            s.name,
            s.log_text()
        );
    }
    let status = simulator.terminate(Duration::from_secs(10));
    assert!(status.success(), "simulator exited with {status}");
}

/// Every `seatwatch_*` name in the Grafana dashboard's queries.
fn dashboard_metric_names() -> BTreeSet<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/compose/grafana/dashboards/seatwatch.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut names = BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap_or_default().to_owned());
        }
    }
    for expr in exprs {
        for (at, _) in expr.match_indices("seatwatch_") {
            let name: String = expr[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    assert!(names.len() > 10, "{names:?}");
    names
}

/// Runs `promtool check metrics` when promtool is installed (the test command installs
/// it); its lint findings fail the test.
fn check_metrics_with_promtool(name: &str, metrics: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        let strict = std::env::var("REQUIRE_TEST_TOOLS").is_ok_and(|v| v == "1");
        assert!(
            !strict,
            "promtool is required here (scripts/test.sh installs it)"
        );
        eprintln!("promtool not installed; skipping the metrics lint for {name}");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics ({name}): {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
