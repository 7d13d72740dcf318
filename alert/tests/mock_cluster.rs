//! The alert service end to end on librdkafka's in-process mock cluster: seat state in,
//! FIRING and RESOLVED transitions out (to the alerts topic and to a channel sink), and
//! a restart on the same topics that sends nothing again.
//!
//! Each test run uses its own random topic prefix and group ids. The mock cluster's
//! group coordinator waits 3 s before the first join of a group (the rdkafka wrapper does
//! not expose that setting), and after the last member left it waits about a session
//! timeout before taking new members, so the consumers here use a short session timeout.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{Encoder, Registry, TextEncoder};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use seatwatch_alert::{run_with, AlertConfig, RunOptions};
use seatwatch_common::http::Health;
use seatwatch_common::kafka::{partition_for, KafkaConfig, Topics};
use seatwatch_common::Shutdown;
use seatwatch_schemas::avro::AvroRecord;
use seatwatch_schemas::{
    Alert, AlertStatus, LicenseKind, LicenseState, LicenseStatus, Severity, SyncOutcome,
    SyncStatus, UserState,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

const ORG: &str = "00D000000000001EAA";
const PARTITIONS: i32 = 3;
const DAY_MS: i64 = 24 * 3600 * 1000;
/// Upper bound for anything the service should do: joins, catch-up, a few ticks.
const PATIENCE: Duration = Duration::from_secs(60);

struct Fixture {
    // Declared first so it is dropped last, after every client that talks to it.
    _cluster: MockCluster<'static, DefaultProducerContext>,
    config: AlertConfig,
    topics: Topics,
    producer: FutureProducer,
}

fn fixture() -> Fixture {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let prefix = format!("t{run_id}.");
    let topics = Topics::new(&prefix);
    for spec in topics.specs() {
        cluster.create_topic(&spec.name, PARTITIONS, 1).unwrap();
    }

    let config = AlertConfig {
        kafka: KafkaConfig {
            bootstrap_servers: cluster.bootstrap_servers(),
            topic_prefix: prefix,
            partitions: PARTITIONS,
            create_topics: false,
            properties: BTreeMap::from([("session.timeout.ms".into(), "6000".into())]),
            ..KafkaConfig::default()
        },
        listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        group_id: format!("alert-{run_id}"),
        notify_group_id: format!("alert-notify-{run_id}"),
        evaluate_interval_secs: 1,
        ..AlertConfig::default()
    };
    let producer = config
        .kafka
        .producer_config("alert-test")
        .unwrap()
        .create()
        .expect("producer");
    Fixture {
        _cluster: cluster,
        config,
        topics,
        producer,
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn salesforce_pool(used: i64) -> LicenseState {
    let total = 300;
    LicenseState {
        org_id: ORG.into(),
        kind: LicenseKind::User,
        license_id: "100000000000001AAA".into(),
        name: "Salesforce".into(),
        label: "Salesforce".into(),
        definition_key: Some("SFDC".into()),
        status: LicenseStatus::Active,
        total: Some(total),
        used,
        available: Some(total - used),
        utilization: Some(used as f64 / total as f64),
        expires_at: None,
        observed_at: now_ms(),
        sync_id: "sync-1".into(),
    }
}

fn user(id: &str, user_type: &str, last_login_days_ago: Option<i64>) -> UserState {
    UserState {
        org_id: ORG.into(),
        user_id: id.into(),
        username: format!("{id}@example.invalid"),
        active: true,
        user_type: user_type.into(),
        profile_name: Some("Standard User".into()),
        user_license_id: Some("100000000000001AAA".into()),
        user_license: Some("Salesforce".into()),
        license_definition_key: Some("SFDC".into()),
        last_login_at: last_login_days_ago.map(|days| now_ms() - days * DAY_MS),
        last_activity_at: None,
        permission_set_licenses: vec![],
        package_licenses: vec![],
        observed_at: now_ms(),
        sync_id: "sync-1".into(),
    }
}

fn sync_status() -> SyncStatus {
    SyncStatus {
        org_id: ORG.into(),
        org_name: "acme".into(),
        sync_id: "sync-1".into(),
        outcome: SyncOutcome::Success,
        started_at: now_ms(),
        finished_at: now_ms(),
        last_success_at: Some(now_ms()),
        records: BTreeMap::new(),
        api_calls: 4,
        api_used: None,
        api_limit: None,
        error_class: None,
        error_message: None,
    }
}

async fn produce(producer: &FutureProducer, topic: &str, key: &str, payload: Vec<u8>) {
    let record = FutureRecord::to(topic)
        .key(key)
        .payload(&payload)
        .partition(partition_for(ORG, PARTITIONS));
    producer
        .send(record, Duration::from_secs(10))
        .await
        .expect("test record delivered");
}

/// Seeds one org: a pool at 96.7% and two idle seats among three seat holders.
async fn seed(fixture: &Fixture) {
    let (producer, topics) = (&fixture.producer, &fixture.topics);
    let pool = salesforce_pool(290);
    produce(
        producer,
        &topics.license_state,
        &pool.key(),
        pool.to_avro().unwrap(),
    )
    .await;
    let users = [
        user("005000000000001AAA", "Standard", None),
        user("005000000000002AAA", "Standard", Some(120)),
        user("005000000000003AAA", "Standard", Some(2)),
        user("005000000000004AAA", "Guest", None),
    ];
    for user in users {
        produce(
            producer,
            &topics.user_state,
            &user.key(),
            user.to_avro().unwrap(),
        )
        .await;
    }
    let status = sync_status();
    produce(
        producer,
        &topics.sync_status,
        ORG,
        status.to_avro().unwrap(),
    )
    .await;
}

struct Running {
    shutdown: Shutdown,
    health: Arc<Health>,
    registry: Registry,
    alerts: mpsc::Receiver<Alert>,
    task: JoinHandle<Result<(), seatwatch_alert::AlertError>>,
}

fn start(config: &AlertConfig) -> Running {
    let (sender, alerts) = mpsc::channel(16);
    let shutdown = Shutdown::new();
    let health = Health::new();
    let registry = Registry::new();
    let options = RunOptions {
        registry: registry.clone(),
        health: health.clone(),
        sink: Some(sender),
        ..RunOptions::default()
    };
    let task = tokio::spawn(run_with(config.clone(), shutdown.clone(), options));
    Running {
        shutdown,
        health,
        registry,
        alerts,
        task,
    }
}

async fn stop(running: Running) {
    running.shutdown.cancel();
    let result = timeout(PATIENCE, running.task)
        .await
        .expect("run returns within the drain deadline")
        .expect("run did not panic");
    assert!(result.is_ok(), "run ends cleanly on shutdown: {result:?}");
}

async fn next_alert(alerts: &mut mpsc::Receiver<Alert>) -> Alert {
    timeout(PATIENCE, alerts.recv())
        .await
        .expect("an alert within the patience bound")
        .expect("the service is still running")
}

/// Polls `condition` every 50 ms until it holds, failing after `PATIENCE`.
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(50)).await;
    }
}

/// Every record of the alerts topic, with its partition, in offset order per partition.
async fn read_alerts(fixture: &Fixture, expected: usize) -> Vec<(i32, String, Alert)> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &fixture.config.kafka.bootstrap_servers)
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut partitions = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        partitions
            .add_partition_offset(&fixture.topics.alerts, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&partitions).unwrap();

    let mut records = Vec::new();
    while records.len() < expected {
        let message = timeout(PATIENCE, consumer.recv())
            .await
            .expect("alert records within the patience bound")
            .unwrap();
        let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
        let alert = Alert::from_avro(message.payload().unwrap()).expect("Avro alert");
        records.push((message.partition(), key, alert));
    }
    records
}

/// The sum of the alerts topic's high watermarks: how many records it holds.
fn alerts_written(fixture: &Fixture) -> i64 {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &fixture.config.kafka.bootstrap_servers)
        .set("group.id", "watermarks")
        .create()
        .unwrap();
    (0..PARTITIONS)
        .map(|partition| {
            consumer
                .fetch_watermarks(&fixture.topics.alerts, partition, Duration::from_secs(10))
                .unwrap()
                .1
        })
        .sum()
}

fn metrics_text(registry: &Registry) -> String {
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .unwrap();
    String::from_utf8(out).unwrap()
}

/// Lints the exposition with `promtool check metrics`, when promtool is installed.
fn assert_promtool_accepts(text: &str) {
    let spawned = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = spawned else {
        eprintln!("promtool is not installed; metrics lint skipped");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool rejects the metrics: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fires_resolves_and_sends_nothing_twice_across_a_restart() {
    let fixture = fixture();
    seed(&fixture).await;

    // First run: both rules fire.
    let mut first = start(&fixture.config);
    let mut fired = [
        next_alert(&mut first.alerts).await,
        next_alert(&mut first.alerts).await,
    ];
    fired.sort_by(|a, b| a.rule.cmp(&b.rule));
    let (idle, utilization) = (&fired[0], &fired[1]);
    assert_eq!(idle.rule, "idle_seats");
    assert_eq!(idle.status, AlertStatus::Firing);
    assert_eq!(idle.value, 2.0);
    assert_eq!(idle.severity, Severity::Info);
    assert_eq!(utilization.rule, "utilization");
    assert_eq!(utilization.status, AlertStatus::Firing);
    assert_eq!(utilization.severity, Severity::Warning);
    assert_eq!(utilization.pool.as_deref(), Some("Salesforce"));
    assert_eq!(
        utilization.summary,
        "Salesforce pool at 96.7% (290 of 300 seats)"
    );
    assert!(first.health.is_ready());

    // The pool drops to 80%: utilisation resolves, idle seats keep firing.
    let cooler = salesforce_pool(240);
    let payload = cooler.to_avro().unwrap();
    produce(
        &fixture.producer,
        &fixture.topics.license_state,
        &cooler.key(),
        payload,
    )
    .await;
    let resolved = next_alert(&mut first.alerts).await;
    assert_eq!(resolved.status, AlertStatus::Resolved);
    assert_eq!(resolved.fingerprint, utilization.fingerprint);
    assert_eq!(resolved.starts_at, utilization.starts_at);
    assert!(resolved.ends_at.unwrap() >= resolved.starts_at);
    assert!(
        resolved.summary.starts_with("Resolved after "),
        "{}",
        resolved.summary
    );

    // The alerts topic holds exactly those three transitions, keyed by fingerprint and
    // placed on the org's partition.
    let records = read_alerts(&fixture, 3).await;
    for (partition, key, alert) in &records {
        assert_eq!(*partition, partition_for(ORG, PARTITIONS));
        assert_eq!(key, &alert.fingerprint);
        assert_eq!(alert.org_id, ORG);
    }
    let transitions: Vec<(&str, AlertStatus)> = records
        .iter()
        .map(|(_, _, alert)| (alert.rule.as_str(), alert.status))
        .collect();
    let utilization_history: Vec<AlertStatus> = transitions
        .iter()
        .filter(|(rule, _)| *rule == "utilization")
        .map(|(_, status)| *status)
        .collect();
    assert_eq!(
        utilization_history,
        [AlertStatus::Firing, AlertStatus::Resolved]
    );
    assert!(transitions.contains(&("idle_seats", AlertStatus::Firing)));
    assert_eq!(records[2].2, resolved);

    let text = metrics_text(&first.registry);
    for line in [
        "seatwatch_alert_transitions_total{rule=\"utilization\",status=\"firing\"} 1",
        "seatwatch_alert_transitions_total{rule=\"utilization\",status=\"resolved\"} 1",
        "seatwatch_alert_transitions_total{rule=\"idle_seats\",status=\"firing\"} 1",
        "seatwatch_alert_notifications_total{outcome=\"delivered\",sink=\"channel\"} 3",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    assert_promtool_accepts(&text);
    stop(first).await;
    assert_eq!(alerts_written(&fixture), 3);

    // Second run on the same topics and groups: it rebuilds the firing set from the
    // alerts topic and finds nothing to send, and the notifier resumes after what it
    // already delivered.
    let mut second = start(&fixture.config);
    let health = second.health.clone();
    eventually("the restarted service to be ready", || {
        let ready = health.is_ready();
        async move { ready }
    })
    .await;
    let quiet = timeout(Duration::from_secs(4), second.alerts.recv()).await;
    assert!(
        quiet.is_err(),
        "no transition after a restart, got {quiet:?}"
    );
    assert_eq!(alerts_written(&fixture), 3);
    let text = metrics_text(&second.registry);
    assert!(
        text.contains("seatwatch_alert_firing{rule=\"idle_seats\"} 1"),
        "the replayed idle alert is still firing:\n{text}"
    );
    stop(second).await;
}
