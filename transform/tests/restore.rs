//! A restarted transform remembers what was published before it stopped: on librdkafka's
//! in-process mock cluster, one instance turns an org's full sync into seat state and stops;
//! a new instance of the same group reads the state topics back at start, so the org's next
//! full sync tombstones exactly the licence and the user it no longer contains.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use rdkafka::consumer::{BaseConsumer, Consumer};
use seatwatch_common::http::Health;
use seatwatch_common::kafka::{self, KafkaConfig, Topics};
use seatwatch_common::Shutdown;
use seatwatch_schemas::{EnvelopeKind, RawEnvelope, SfObject, SnapshotEnd, SnapshotMode};
use seatwatch_transform::{run_with, TransformConfig};
use serde_json::Value;
use support::*;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const ORG: &str = "00D5g000004XyZwEAK";
const RAW_PARTITIONS: i32 = 2;
const STATE_PARTITIONS: i32 = 3;

const LICENCES: [&str; 3] = [
    "1005g0000000001AAA",
    "1005g0000000002AAA",
    "1005g0000000003AAA",
];

/// Users of the fixture org.
fn users() -> Vec<Value> {
    let text = include_str!("../../fixtures/salesforce/query_user_with_profile_license.json");
    let document: Value = serde_json::from_str(text).unwrap();
    document["body"]["records"].as_array().unwrap()[..3].to_vec()
}

fn user_id(record: &Value) -> &str {
    record["Id"].as_str().unwrap()
}

/// A full snapshot of `object`: its records, then an end marker announcing all of them.
fn full(sync: Sync<'_>, object: SfObject, records: &[Value]) -> Vec<Event> {
    let mut events: Vec<Event> = records.iter().map(|r| sync.record(object, r)).collect();
    let end = SnapshotEnd {
        mode: SnapshotMode::Full,
        records: records.len() as u64,
    };
    let marker = RawEnvelope {
        org_id: sync.org.into(),
        sync_id: sync.id.into(),
        object,
        fetched_at: "2024-05-01T12:00:00Z".parse().unwrap(),
        api_version: "62.0".into(),
        kind: EnvelopeKind::SnapshotEnd,
        record: None,
        snapshot: Some(end),
    };
    let value = serde_json::to_vec(&marker).unwrap();
    events.push(Event {
        key: format!("{}/{object}", sync.org),
        value,
    });
    events
}

/// One org sync: full licence and user snapshots.
fn sync(id: &str, licences: &[&str], users: &[Value]) -> Vec<Event> {
    let sync = Sync { org: ORG, id };
    let licences: Vec<Value> = licences
        .iter()
        .map(|id| user_license(id, 100, 40))
        .collect();
    let mut events = full(sync, SfObject::UserLicense, &licences);
    events.extend(full(sync, SfObject::User, users));
    events
}

/// One transform instance run in-process with its own health.
struct Instance {
    task: JoinHandle<()>,
    health: Arc<Health>,
    shutdown: Shutdown,
}

impl Instance {
    fn start(config: &TransformConfig) -> Self {
        let health = Health::new();
        let shutdown = Shutdown::new();
        let task = {
            let (config, health, shutdown) = (config.clone(), health.clone(), shutdown.clone());
            tokio::spawn(async move {
                let registry = Registry::new();
                let result = run_with(config, shutdown, &registry, health).await;
                result.expect("transform runs until stopped");
            })
        };
        Self {
            task,
            health,
            shutdown,
        }
    }

    /// Waits until the instance is ready, returning how long its state restore took as
    /// readiness showed it (zero if "restoring state" was never observed).
    async fn ready(&self) -> Duration {
        let deadline = Instant::now() + PATIENCE;
        let mut restoring_since = None;
        while !self.health.is_ready() {
            if self.health.not_ready_reason() == "restoring state" && restoring_since.is_none() {
                restoring_since = Some(Instant::now());
            }
            assert!(!self.task.is_finished(), "transform stopped before ready");
            assert!(Instant::now() < deadline, "transform never became ready");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        restoring_since.map_or(Duration::ZERO, |since| since.elapsed())
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("transform stops after shutdown")
            .expect("transform does not fail");
    }
}

/// How many messages the topics hold now, over all partitions.
async fn message_count(kafka_config: &KafkaConfig, topics: &[&str]) -> i64 {
    let consumer: BaseConsumer = kafka_config
        .consumer_config("it-counter", "it-counter")
        .unwrap()
        .create()
        .unwrap();
    let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut total = 0;
        for topic in &topics {
            for partition in 0..STATE_PARTITIONS {
                let (low, high) = consumer
                    .fetch_watermarks(topic, partition, Duration::from_secs(10))
                    .unwrap();
                total += high - low;
            }
        }
        total
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_transform_tombstones_what_vanished_while_it_was_stopped() {
    let raw_or_state = |topics: &Topics, topic: &str| {
        if topic == topics.raw {
            RAW_PARTITIONS
        } else {
            STATE_PARTITIONS
        }
    };
    let MockRun {
        cluster: _cluster,
        run_id,
        topics,
        kafka_config,
    } = MockRun::start("it", raw_or_state);
    let config = TransformConfig {
        kafka: kafka_config.clone(),
        group_id: format!("it-transform-{run_id}"),
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        flush_interval_ms: 50,
        max_in_flight: 1_000,
        ..TransformConfig::default()
    };
    let raw_partition = kafka::partition_for(ORG, RAW_PARTITIONS);
    let state_topics = [
        (topics.license_state.as_str(), STATE_PARTITIONS),
        (topics.user_state.as_str(), STATE_PARTITIONS),
    ];
    let users = users();

    // The first instance publishes the org's three licences and three users, then stops.
    let first_sync = sync("sync-1", &LICENCES, &users);
    produce(&kafka_config, &topics.raw, raw_partition, &first_sync).await;
    let first = Instance::start(&config);
    let mut reader = OutputReader::new(&kafka_config, &state_topics);
    reader
        .read_until("the first sync's seat state", |r| r.len() >= 6)
        .await;
    assert!(reader.received.iter().all(|r| r.value.is_some()));
    let end = first_sync.len() as i64;
    await_commit(
        &kafka_config,
        &config.group_id,
        &topics.raw,
        raw_partition,
        end,
    )
    .await;
    first.stop().await;

    // A licence-state value that does not decode is skipped by the restore, so the licence
    // it names is not tombstoned either.
    let undecodable = Event {
        key: format!("{ORG}/user/1005g0000000009AAA"),
        value: b"not avro".to_vec(),
    };
    let state_partition = kafka::partition_for(ORG, STATE_PARTITIONS);
    produce(
        &kafka_config,
        &topics.license_state,
        state_partition,
        std::slice::from_ref(&undecodable),
    )
    .await;

    // The next sync lacks the third licence and the third user.
    let second_sync = sync("sync-2", &LICENCES[..2], &users[..2]);
    produce(&kafka_config, &topics.raw, raw_partition, &second_sync).await;
    let second = Instance::start(&config);
    let restore = second.ready().await;
    println!("restore and readiness of the second instance took {restore:?}");

    // Both are tombstoned, next to the values the sync re-publishes.
    let vanished_user = format!("{ORG}/{}", user_id(&users[2]));
    let vanished_licence = format!("{ORG}/user/{}", LICENCES[2]);
    reader
        .read_until("the second sync's tombstones", |received| {
            let tombstones = received.iter().filter(|r| r.value.is_none()).count();
            tombstones >= 2 && received.len() >= 6 + 1 + 4 + 2
        })
        .await;
    let end = end + second_sync.len() as i64;
    await_commit(
        &kafka_config,
        &config.group_id,
        &topics.raw,
        raw_partition,
        end,
    )
    .await;
    second.stop().await;

    // Every output was acknowledged before the commit: nothing is left to read.
    let names = [topics.license_state.as_str(), topics.user_state.as_str()];
    let total = message_count(&kafka_config, &names).await;
    assert_eq!(
        total,
        reader.received.len() as i64,
        "{:#?}",
        reader.received
    );

    let tombstones: BTreeSet<(String, String)> = reader
        .received
        .iter()
        .filter(|r| r.value.is_none())
        .map(|r| (r.topic.clone(), r.key_text()))
        .collect();
    let expected = BTreeSet::from([
        (topics.license_state.clone(), vanished_licence),
        (topics.user_state.clone(), vanished_user),
    ]);
    assert_eq!(tombstones, expected);
    let republished: BTreeSet<String> = reader.received[7..]
        .iter()
        .filter(|r| r.value.is_some())
        .map(Received::key_text)
        .collect();
    let kept = [
        format!("{ORG}/user/{}", LICENCES[0]),
        format!("{ORG}/user/{}", LICENCES[1]),
        format!("{ORG}/{}", user_id(&users[0])),
        format!("{ORG}/{}", user_id(&users[1])),
    ];
    assert_eq!(republished, BTreeSet::from(kept));
    for tombstone in reader.received.iter().filter(|r| r.value.is_none()) {
        assert_eq!(tombstone.partition, state_partition);
    }
}
