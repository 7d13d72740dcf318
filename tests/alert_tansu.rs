//! The alert service on a real Kafka-protocol broker, with a real Alertmanager and a
//! webhook receiver, all on 127.0.0.1.
//!
//! The test writes seat state straight into the compacted topics (as transform would),
//! runs `seatwatch alert` as a process and checks, through what the receivers got:
//!
//! 1. every rule kind fires, Alertmanager lists each through its own API, and the idle
//!    seat becomes a priced reclaim recommendation;
//! 2. utilisation holds through a flap inside its hysteresis band, then resolves;
//! 3. with the service stopped, every condition clears; after the restart each resolve
//!    arrives, nothing fires again and nothing already sent is sent again, and the
//!    recommendation is withdrawn;
//! 4. a webhook receiver that answers 503 for a while gets the next alert once it
//!    recovers, exactly once.
//!
//! Needs `tansu` (`TANSU_BIN`) and Debian's `prometheus-alertmanager`
//! (`ALERTMANAGER_BIN`); `scripts/test.sh` installs both and sets `REQUIRE_TEST_TOOLS=1`,
//! under which a missing Alertmanager fails the test instead of skipping it.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use seatwatch_common::kafka::partition_for;
use seatwatch_schemas::avro::AvroRecord;
use seatwatch_schemas::{
    Alert, AlertStatus, LicenseKind, LicenseState, LicenseStatus, Recommendation, SyncOutcome,
    SyncStatus, UserState,
};
use serde_json::Value as Json;
use support::*;

const PARTITIONS: i32 = 3;
const PATIENCE: Duration = Duration::from_secs(90);
const DAY_MS: i64 = 24 * 3600 * 1000;
const HOUR_MS: i64 = 3600 * 1000;

const ORG_A: &str = "00D000000000001AAA";
const ORG_AUTH: &str = "00D000000000002AAA";
const ORG_STALE: &str = "00D000000000003AAA";
const ORG_QUOTA: &str = "00D000000000004AAA";

const EVERY_RULE: [&str; 8] = [
    "utilization",
    "exhausted",
    "expiring",
    "idle_seats",
    "forecast",
    "stale_sync",
    "sync_auth_failed",
    "sync_paused_for_quota",
];

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// What the webhook receiver got: accepted bodies, and how many requests it refused.
#[derive(Clone, Default)]
struct Receiver {
    accepted: Arc<Mutex<Vec<Json>>>,
    refused: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

impl Receiver {
    fn alerts(&self) -> Vec<Alert> {
        let accepted = self.accepted.lock().unwrap();
        accepted
            .iter()
            .map(|body| serde_json::from_value(body.clone()).unwrap())
            .collect()
    }

    fn dedup_keys(&self) -> Vec<String> {
        let accepted = self.accepted.lock().unwrap();
        accepted
            .iter()
            .map(|body| body["dedup_key"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The accepted transitions of `rule` with `status`.
    fn with(&self, rule: &str, status: AlertStatus) -> Vec<Alert> {
        let alerts = self.alerts();
        alerts
            .into_iter()
            .filter(|alert| alert.rule == rule && alert.status == status)
            .collect()
    }
}

async fn receive(State(receiver): State<Receiver>, body: axum::body::Bytes) -> StatusCode {
    if receiver.down.load(Ordering::SeqCst) {
        receiver.refused.fetch_add(1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let body: Json = serde_json::from_slice(&body).unwrap();
    receiver.accepted.lock().unwrap().push(body);
    StatusCode::OK
}

/// Serves the receiver on a loopback port from a thread of its own.
fn start_receiver() -> (String, Receiver) {
    let receiver = Receiver::default();
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(receiver.clone());
    let addr = serve_on_loopback(app);
    (format!("http://{addr}/hook"), receiver)
}

/// Debian's Alertmanager on a free loopback port, clustering off. `None` when it is not
/// installed and the run does not require it.
fn start_alertmanager(dir: &Path) -> Option<(Proc, String)> {
    let bin =
        std::env::var("ALERTMANAGER_BIN").unwrap_or_else(|_| "prometheus-alertmanager".into());
    let port = free_port();
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
    )
    .unwrap();
    let mut command = Command::new(&bin);
    command
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.join("am-data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=");
    if Command::new(&bin).arg("--version").output().is_err() {
        let strict = std::env::var("REQUIRE_TEST_TOOLS").is_ok_and(|v| v == "1");
        assert!(
            !strict,
            "{bin} is not installed; scripts/test.sh installs it"
        );
        eprintln!("skipping: {bin} is not installed");
        return None;
    }
    let mut proc = Proc::spawn("alertmanager", command, dir);
    let url = format!("http://127.0.0.1:{port}");
    wait_for("Alertmanager to be ready", PATIENCE, || {
        proc.assert_running();
        http_get(&format!("{url}/-/ready")).filter(|(status, _)| *status == 200)
    });
    Some((proc, url))
}

/// The alertnames Alertmanager lists as active through `GET /api/v2/alerts`.
fn alertmanager_active(url: &str) -> BTreeSet<String> {
    let Some((200, body)) = http_get(&format!("{url}/api/v2/alerts?active=true")) else {
        return BTreeSet::new();
    };
    let alerts: Vec<Json> = serde_json::from_str(&body).unwrap();
    alerts
        .iter()
        .filter(|alert| alert["status"]["state"] == "active")
        .filter_map(|alert| alert["labels"]["alertname"].as_str().map(str::to_owned))
        .collect()
}

/// Writes Avro seat state into the topics, partitioned by org as transform does.
struct Writer {
    producer: BaseProducer,
    prefix: String,
}

impl Writer {
    fn send(&self, topic: &str, org_id: &str, key: &str, payload: Option<Vec<u8>>) {
        let topic = format!("{}{topic}", self.prefix);
        let mut record = BaseRecord::<str, [u8]>::to(&topic)
            .key(key)
            .partition(partition_for(org_id, PARTITIONS));
        if let Some(payload) = &payload {
            record = record.payload(payload);
        }
        self.producer.send(record).map_err(|(e, _)| e).unwrap();
        self.producer.flush(Duration::from_secs(10)).unwrap();
    }

    fn license(&self, license: &LicenseState) {
        let payload = license.to_avro().unwrap();
        self.send(
            "seats.license-state",
            &license.org_id,
            &license.key(),
            Some(payload),
        );
    }

    fn forget_license(&self, license: &LicenseState) {
        self.send("seats.license-state", &license.org_id, &license.key(), None);
    }

    fn user(&self, user: &UserState) {
        let payload = user.to_avro().unwrap();
        self.send("seats.user-state", &user.org_id, &user.key(), Some(payload));
    }

    fn sync(&self, status: &SyncStatus) {
        let payload = status.to_avro().unwrap();
        self.send(
            "salesforce.sync-status",
            &status.org_id,
            &status.org_id,
            Some(payload),
        );
    }
}

fn license(name: &str, kind: LicenseKind, used: i64, total: i64, at: i64) -> LicenseState {
    LicenseState {
        org_id: ORG_A.into(),
        kind,
        license_id: format!("100{}", name.replace(' ', "")),
        name: name.into(),
        label: name.into(),
        definition_key: None,
        status: LicenseStatus::Active,
        total: Some(total),
        used,
        available: Some(total - used),
        utilization: Some(used as f64 / total as f64),
        expires_at: None,
        observed_at: at,
        sync_id: "sync-1".into(),
    }
}

fn idle_user(last_login_at: Option<i64>, at: i64) -> UserState {
    UserState {
        org_id: ORG_A.into(),
        user_id: "005000000000001AAA".into(),
        username: "idle@example.invalid".into(),
        active: true,
        user_type: "Standard".into(),
        profile_name: None,
        user_license_id: Some("100Salesforce".into()),
        user_license: Some("Salesforce".into()),
        license_definition_key: None,
        last_login_at,
        last_activity_at: None,
        permission_set_licenses: vec![],
        package_licenses: vec![],
        observed_at: at,
        sync_id: "sync-1".into(),
    }
}

fn sync_status(org_id: &str, outcome: SyncOutcome, last_success_at: i64, at: i64) -> SyncStatus {
    SyncStatus {
        org_id: org_id.into(),
        org_name: format!("org-{}", &org_id[14..15]),
        sync_id: format!("sync-{at}"),
        outcome,
        started_at: at - 1000,
        finished_at: at,
        last_success_at: Some(last_success_at),
        records: BTreeMap::new(),
        api_calls: 7,
        api_used: Some(100),
        api_limit: Some(15_000),
        error_class: None,
        error_message: None,
    }
}

/// The value of one sample of `/metrics`, by name and label fragment.
fn metric(ops_url: &str, name: &str, labels: &str) -> Option<f64> {
    let (_, text) = http_get(&format!("{ops_url}/metrics"))?;
    text.lines()
        .filter(|line| line.starts_with(name) && line.contains(labels))
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
}

fn start_alert(config: &Path, dir: &Path, name: &str) -> (Proc, String) {
    let port = free_port();
    let mut command = seatwatch();
    command
        .args(["alert", "--config"])
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("SEATWATCH_LOG", "info,librdkafka=warn")
        .env("SEATWATCH_LOG_FORMAT", "json");
    let url = format!("http://127.0.0.1:{port}");
    let mut proc = Proc::spawn(name, command, dir);
    wait_for("the alert service to be ready", PATIENCE, || {
        proc.assert_running();
        http_get(&format!("{url}/readyz")).filter(|(status, _)| *status == 200)
    });
    (proc, url)
}

/// Waits until the service has evaluated twice more, so that state already in its
/// metrics went through a full evaluation.
fn two_more_evaluations(ops_url: &str) {
    let name = "seatwatch_alert_evaluations_total";
    let start = metric(ops_url, name, "").unwrap_or(0.0);
    wait_for("two more evaluations", PATIENCE, || {
        metric(ops_url, name, "").filter(|count| *count >= start + 2.0)
    });
}

#[test]
fn every_rule_fires_and_resolves_through_restarts_and_receiver_outages() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_alertmanager, alertmanager_url)) = start_alertmanager(dir.path()) else {
        return;
    };
    let broker = Tansu::start(dir.path());
    let prefix = format!("al-{}.", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let created = seatwatch()
        .args(["topics", "create", "--bootstrap-servers", &broker.bootstrap])
        .args([
            "--topic-prefix",
            &prefix,
            "--partitions",
            &PARTITIONS.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );

    let (hook_url, receiver) = start_receiver();
    let config = dir.path().join("alert.toml");
    std::fs::write(
        &config,
        format!(
            "evaluate_interval_secs = 1\nrepeat_interval_secs = 0\n\
             [kafka]\nbootstrap_servers = \"{}\"\ntopic_prefix = \"{prefix}\"\n\
             create_topics = false\n\
             [webhook]\nurl = \"{hook_url}\"\n\
             [alertmanager]\nurl = \"{alertmanager_url}\"\nresend_interval_secs = 1\n\
             [prices]\ncurrency = \"EUR\"\nmonthly = {{ \"Salesforce\" = 150.0 }}\n",
            broker.bootstrap
        ),
    )
    .unwrap();
    let writer = Writer {
        producer: ClientConfig::new()
            .set("bootstrap.servers", &broker.bootstrap)
            .create()
            .unwrap(),
        prefix: prefix.clone(),
    };

    // 1. A state where every rule holds.
    let now = now_ms();
    let hot = license("Salesforce", LicenseKind::User, 95, 100, now);
    let full = license("Identity", LicenseKind::User, 50, 50, now);
    let mut expiring = license("Sales PSL", LicenseKind::PermissionSet, 1, 10, now);
    expiring.expires_at = Some(now + 5 * DAY_MS);
    let growing: Vec<LicenseState> = (0..3)
        .map(|hour| {
            let used = 50 + 10 * hour;
            license(
                "Platform",
                LicenseKind::User,
                used,
                100,
                now - (3 - hour) * HOUR_MS,
            )
        })
        .collect();
    for state in [&hot, &full, &expiring].into_iter().chain(&growing) {
        writer.license(state);
    }
    writer.user(&idle_user(None, now));
    writer.sync(&sync_status(ORG_A, SyncOutcome::Success, now, now));
    writer.sync(&sync_status(
        ORG_AUTH,
        SyncOutcome::AuthFailed,
        now - 600_000,
        now,
    ));
    writer.sync(&sync_status(
        ORG_STALE,
        SyncOutcome::Failed,
        now - 3 * HOUR_MS,
        now,
    ));
    writer.sync(&sync_status(
        ORG_QUOTA,
        SyncOutcome::PausedForQuota,
        now,
        now,
    ));

    let (mut alert, ops) = start_alert(&config, dir.path(), "alert-1");
    wait_for("every rule to fire at the webhook", PATIENCE, || {
        alert.assert_running();
        EVERY_RULE
            .iter()
            .all(|rule| !receiver.with(rule, AlertStatus::Firing).is_empty())
            .then_some(())
    });
    let firing = receiver.alerts();
    let idle = firing.iter().find(|a| a.rule == "idle_seats").unwrap();
    assert!(
        idle.summary.contains("saves about EUR 150 a month"),
        "{}",
        idle.summary
    );
    wait_for("Alertmanager to list every rule", PATIENCE, || {
        let active = alertmanager_active(&alertmanager_url);
        EVERY_RULE
            .iter()
            .all(|rule| active.contains(*rule))
            .then_some(())
    });
    let recommendations_topic = format!("{prefix}seats.recommendations");
    let recommendation = wait_for("the reclaim recommendation", PATIENCE, || {
        latest(read_topic(&broker.bootstrap, &recommendations_topic))
            .into_values()
            .flatten()
            .next()
            .map(|bytes| Recommendation::from_avro(&bytes).unwrap())
    });
    assert_eq!(
        recommendation.user_id.as_deref(),
        Some("005000000000001AAA")
    );
    assert_eq!(recommendation.estimated_monthly_saving, Some(150.0));
    assert_eq!(recommendation.currency, "EUR");
    assert_eq!(
        metric(
            &ops,
            "seatwatch_reclaimable_monthly_saving",
            "pool=\"Salesforce\""
        ),
        Some(150.0)
    );
    assert_eq!(
        metric(&ops, "seatwatch_seats_used", "pool=\"Salesforce\""),
        Some(95.0)
    );

    // The same state through `seatwatch report`, and readiness through `healthcheck`.
    let report = seatwatch()
        .args(["report", "--format", "json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let rows: Vec<Json> = serde_json::from_slice(&report.stdout).unwrap();
    let row = rows.iter().find(|row| row["pool"] == "Salesforce").unwrap();
    assert_eq!(
        (row["total"].as_i64(), row["used"].as_i64()),
        (Some(100), Some(95))
    );
    assert_eq!(row["idle"].as_u64(), Some(1));
    assert_eq!(row["potential_monthly_saving"].as_f64(), Some(150.0));
    let expiring_row = rows.iter().find(|row| row["pool"] == "Sales PSL").unwrap();
    assert_eq!(expiring_row["expires_in_days"].as_i64(), Some(4));
    let healthy = seatwatch()
        .args(["healthcheck", "--url", &format!("{ops}/readyz")])
        .status()
        .unwrap();
    assert!(healthy.success());
    let nobody = format!("http://127.0.0.1:{}/readyz", free_port());
    let unhealthy = seatwatch()
        .args(["healthcheck", "--url", &nobody])
        .output()
        .unwrap();
    assert!(!unhealthy.status.success());
    assert!(String::from_utf8_lossy(&unhealthy.stderr).contains("did not answer"));

    // 2. Flap inside the hysteresis band (threshold 0.90, clears below 0.85).
    for used in [87, 92, 86] {
        writer.license(&license(
            "Salesforce",
            LicenseKind::User,
            used,
            100,
            now_ms(),
        ));
        wait_for("the new count in the seat metrics", PATIENCE, || {
            let seen = metric(&ops, "seatwatch_seats_used", "pool=\"Salesforce\"");
            (seen == Some(used as f64)).then_some(())
        });
        two_more_evaluations(&ops);
    }
    let salesforce = |status| {
        receiver
            .with("utilization", status)
            .into_iter()
            .filter(|a| a.pool.as_deref() == Some("Salesforce"))
            .count()
    };
    assert_eq!(salesforce(AlertStatus::Firing), 1, "held through the flap");
    assert_eq!(
        salesforce(AlertStatus::Resolved),
        0,
        "held through the flap"
    );
    writer.license(&license("Salesforce", LicenseKind::User, 80, 100, now_ms()));
    wait_for("utilisation to resolve below the band", PATIENCE, || {
        (salesforce(AlertStatus::Resolved) == 1).then_some(())
    });

    // 3. Stop the service; every remaining condition clears while it is down.
    assert!(
        alert.terminate(Duration::from_secs(30)).success(),
        "{}",
        alert.log_text()
    );
    let now = now_ms();
    writer.license(&license("Identity", LicenseKind::User, 30, 50, now));
    let mut renewed = expiring.clone();
    renewed.expires_at = Some(now + 400 * DAY_MS);
    renewed.observed_at = now;
    writer.license(&renewed);
    writer.forget_license(&growing[0]);
    writer.user(&idle_user(Some(now), now));
    for org in [ORG_A, ORG_AUTH, ORG_STALE, ORG_QUOTA] {
        writer.sync(&sync_status(org, SyncOutcome::Success, now, now));
    }
    let sent_before_restart = receiver.dedup_keys().len();

    let (mut alert, ops) = start_alert(&config, dir.path(), "alert-2");
    wait_for("every rule to resolve after the restart", PATIENCE, || {
        alert.assert_running();
        EVERY_RULE
            .iter()
            .all(|rule| {
                let fired = receiver.with(rule, AlertStatus::Firing).len();
                receiver.with(rule, AlertStatus::Resolved).len() == fired
            })
            .then_some(())
    });
    for rule in EVERY_RULE {
        let fired: BTreeSet<String> = receiver
            .with(rule, AlertStatus::Firing)
            .into_iter()
            .map(|a| a.fingerprint)
            .collect();
        assert_eq!(
            fired.len(),
            receiver.with(rule, AlertStatus::Firing).len(),
            "{rule} fired again after the restart"
        );
    }
    assert!(receiver.dedup_keys().len() > sent_before_restart);
    wait_for("Alertmanager to drop the resolved alerts", PATIENCE, || {
        alertmanager_active(&alertmanager_url)
            .is_empty()
            .then_some(())
    });
    wait_for("the recommendation to be withdrawn", PATIENCE, || {
        let current = latest(read_topic(&broker.bootstrap, &recommendations_topic));
        current.values().all(Option::is_none).then_some(())
    });

    // 4. The receiver goes down; an alert fires meanwhile and arrives once it is back.
    receiver.down.store(true, Ordering::SeqCst);
    writer.license(&license("Salesforce", LicenseKind::User, 99, 100, now_ms()));
    wait_for(
        "the notifier to retry against the receiver",
        PATIENCE,
        || (receiver.refused.load(Ordering::SeqCst) >= 2).then_some(()),
    );
    receiver.down.store(false, Ordering::SeqCst);
    wait_for("the alert after the outage", PATIENCE, || {
        (salesforce(AlertStatus::Firing) == 2).then_some(())
    });
    two_more_evaluations(&ops);

    let keys = receiver.dedup_keys();
    let unique: BTreeSet<&String> = keys.iter().collect();
    assert_eq!(
        unique.len(),
        keys.len(),
        "a notification arrived twice: {keys:#?}"
    );
    assert!(
        alert.terminate(Duration::from_secs(30)).success(),
        "{}",
        alert.log_text()
    );
}

/// `/readyz` follows the broker: ready, then not ready (saying why) while every connection
/// to the broker is cut, then ready again once it is reachable.
#[test]
fn readiness_follows_the_broker() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, cutter) = Tansu::start_behind_cutter(dir.path());
    let prefix = format!("rd-{}.", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let config = dir.path().join("alert.toml");
    std::fs::write(
        &config,
        format!(
            "evaluate_interval_secs = 1\n[kafka]\nbootstrap_servers = \"{}\"\n\
             topic_prefix = \"{prefix}\"\npartitions = 1\n",
            broker.bootstrap
        ),
    )
    .unwrap();
    let (mut alert, ops) = start_alert(&config, dir.path(), "alert-readiness");

    cutter.cut();
    let (_, reason) = wait_for("/readyz to turn unready", PATIENCE, || {
        alert.assert_running();
        http_get(&format!("{ops}/readyz")).filter(|(status, _)| *status == 503)
    });
    assert!(reason.contains("kafka: cluster unreachable"), "{reason}");
    assert_eq!(
        http_get(&format!("{ops}/healthz")).unwrap().0,
        200,
        "still alive"
    );

    cutter.restore();
    wait_for("/readyz to recover", PATIENCE, || {
        alert.assert_running();
        http_get(&format!("{ops}/readyz")).filter(|(status, _)| *status == 200)
    });
    assert!(
        alert.terminate(Duration::from_secs(30)).success(),
        "{}",
        alert.log_text()
    );
}
