//! Helpers shared by transform's broker tests: a mock cluster holding a fresh set of
//! topics, raw events as ingest writes them, a producer for the raw topic, transform
//! started and stopped on a task, a reader of the output topics, the group's committed
//! offsets, and a tansu broker on a free loopback port. Everything listens on 127.0.0.1.

#![allow(dead_code)] // each test binary uses part of the helpers

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use seatwatch_common::http::Health;
use seatwatch_common::kafka::{self, KafkaConfig, Topics};
use seatwatch_common::Shutdown;
use seatwatch_schemas::{EnvelopeKind, RawEnvelope, SfObject, SnapshotEnd, SnapshotMode};
use seatwatch_transform::{run_with, TransformConfig, TransformError};
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long any awaited condition may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Starts transform on a task of its own, with its metrics in `registry`.
pub fn spawn_transform(
    config: &TransformConfig,
    shutdown: &Shutdown,
    registry: &Registry,
) -> JoinHandle<Result<(), TransformError>> {
    let (config, shutdown, registry) = (config.clone(), shutdown.clone(), registry.clone());
    tokio::spawn(async move { run_with(config, shutdown, &registry, Health::new()).await })
}

/// Stops transform and checks that it stopped in time, without a panic or an error.
pub async fn stop_cleanly(shutdown: &Shutdown, transform: JoinHandle<Result<(), TransformError>>) {
    shutdown.cancel();
    let stopped = tokio::time::timeout(PATIENCE, transform)
        .await
        .expect("transform stops after shutdown")
        .expect("transform does not panic");
    assert!(stopped.is_ok(), "transform stops cleanly: {stopped:?}");
}

/// librdkafka's in-process mock cluster holding every topic under a prefix of its own, and
/// the Kafka settings that reach it.
pub struct MockRun {
    pub cluster: MockCluster<'static, DefaultProducerContext>,
    /// Unique to this run, for prefixes and group ids.
    pub run_id: String,
    pub topics: Topics,
    pub kafka_config: KafkaConfig,
}

impl MockRun {
    /// Topics prefixed `<name>-<run id>.`, each with the partitions `partitions` gives for
    /// its full name.
    pub fn start(name: &str, partitions: impl Fn(&Topics, &str) -> i32) -> Self {
        let cluster = MockCluster::new(1).unwrap();
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("{name}-{run_id}.");
        let topics = Topics::new(&prefix);
        for spec in topics.specs() {
            let count = partitions(&topics, &spec.name);
            cluster.create_topic(&spec.name, count, 1).unwrap();
        }
        let kafka_config = KafkaConfig {
            bootstrap_servers: cluster.bootstrap_servers(),
            topic_prefix: prefix,
            create_topics: false,
            ..KafkaConfig::default()
        };
        Self {
            cluster,
            run_id,
            topics,
            kafka_config,
        }
    }
}

/// One raw event: the key and value ingest would write.
#[derive(Clone, Debug)]
pub struct Event {
    pub key: String,
    pub value: Vec<u8>,
}

/// The events of one sync of one org.
#[derive(Clone, Copy, Debug)]
pub struct Sync<'a> {
    pub org: &'a str,
    pub id: &'a str,
}

impl Sync<'_> {
    fn envelope(
        self,
        object: SfObject,
        record: Option<&Value>,
        end: Option<SnapshotEnd>,
    ) -> Vec<u8> {
        let kind = match end {
            Some(_) => EnvelopeKind::SnapshotEnd,
            None => EnvelopeKind::Record,
        };
        let envelope = RawEnvelope {
            org_id: self.org.into(),
            sync_id: self.id.into(),
            object,
            fetched_at: "2024-05-01T12:00:00Z".parse().unwrap(),
            api_version: "62.0".into(),
            kind,
            record: record.map(|r| RawValue::from_string(r.to_string()).unwrap()),
            snapshot: end,
        };
        serde_json::to_vec(&envelope).unwrap()
    }

    /// A record event of `object`, keyed by the record's `Id`.
    pub fn record(self, object: SfObject, record: &Value) -> Event {
        let id = record["Id"].as_str().expect("the record has an Id");
        Event {
            key: format!("{}/{object}/{id}", self.org),
            value: self.envelope(object, Some(record), None),
        }
    }

    /// `count` `UserLicense` records (10 seats, `n` used for the `n`th) and the end marker
    /// of their incremental snapshot.
    pub fn user_licenses(self, count: usize) -> Vec<Event> {
        let mut events: Vec<Event> = (0..count)
            .map(|n| {
                let id = format!("1005g000000000{n}AAA");
                let used = i64::try_from(n).unwrap();
                self.record(SfObject::UserLicense, &user_license(&id, 10, used))
            })
            .collect();
        let records = u64::try_from(count).unwrap();
        events.push(self.incremental_end(SfObject::UserLicense, records));
        events
    }

    /// The end marker of an incremental snapshot of `object` holding `records` records.
    pub fn incremental_end(self, object: SfObject, records: u64) -> Event {
        let end = SnapshotEnd {
            mode: SnapshotMode::Incremental,
            records,
        };
        Event {
            key: format!("{}/{object}", self.org),
            value: self.envelope(object, None, Some(end)),
        }
    }
}

/// A `UserLicense` record as Salesforce returns it.
pub fn user_license(id: &str, total: i64, used: i64) -> Value {
    serde_json::json!({
        "attributes": {"type": "UserLicense"},
        "Id": id,
        "Name": "Salesforce",
        "MasterLabel": "Salesforce",
        "LicenseDefinitionKey": "SFDC",
        "Status": "Active",
        "TotalLicenses": total,
        "UsedLicenses": used,
    })
}

/// Produces `events` to one partition of `topic`, in order, and waits for every ack.
pub async fn produce(kafka_config: &KafkaConfig, topic: &str, partition: i32, events: &[Event]) {
    let producer: FutureProducer = kafka_config
        .producer_config("it-ingest")
        .unwrap()
        .create()
        .unwrap();
    let mut deliveries = Vec::with_capacity(events.len());
    for event in events {
        let record = FutureRecord::to(topic)
            .partition(partition)
            .key(&event.key)
            .payload(&event.value);
        deliveries.push(kafka::enqueue(&producer, record).await.unwrap());
    }
    for delivery in deliveries {
        kafka::delivered(delivery).await.unwrap();
    }
}

/// One message read back from an output topic.
#[derive(Clone, Debug)]
pub struct Received {
    pub topic: String,
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
}

impl Received {
    pub fn key_text(&self) -> String {
        String::from_utf8_lossy(self.key.as_deref().unwrap_or_default()).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Reads every partition of some topics from the beginning, keeping what it has read.
pub struct OutputReader {
    consumer: StreamConsumer,
    pub received: Vec<Received>,
}

impl OutputReader {
    /// A reader of `topics` (name and partition count), outside any consumer group.
    pub fn new(kafka_config: &KafkaConfig, topics: &[(&str, i32)]) -> Self {
        let consumer: StreamConsumer = kafka_config
            .consumer_config("it-reader", "it-reader")
            .unwrap()
            .create()
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        for (name, partitions) in topics {
            for partition in 0..*partitions {
                assignment
                    .add_partition_offset(name, partition, Offset::Beginning)
                    .unwrap();
            }
        }
        consumer.assign(&assignment).unwrap();
        Self {
            consumer,
            received: Vec::new(),
        }
    }

    /// Reads until `done` holds for everything read so far, or fails after [`PATIENCE`]
    /// showing what did arrive.
    pub async fn read_until(&mut self, what: &str, done: impl Fn(&[Received]) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done(&self.received) {
            let Ok(message) = tokio::time::timeout_at(deadline, self.consumer.recv()).await else {
                panic!(
                    "timed out waiting for {what}; {} messages arrived: {:#?}",
                    self.received.len(),
                    self.received
                );
            };
            let message = message.unwrap();
            let headers = message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| {
                            let value = h.value.unwrap_or_default();
                            (
                                h.key.to_owned(),
                                String::from_utf8_lossy(value).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            self.received.push(Received {
                topic: message.topic().to_owned(),
                partition: message.partition(),
                key: message.key().map(<[u8]>::to_vec),
                value: message.payload().map(<[u8]>::to_vec),
                headers,
            });
        }
    }
}

/// The group's committed offset of one partition, if any.
pub async fn committed_offset(
    kafka_config: &KafkaConfig,
    group: &str,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let checker: BaseConsumer = kafka_config
        .consumer_config("it-checker", group)
        .unwrap()
        .create()
        .unwrap();
    let checker = Arc::new(checker);
    let mut wanted = TopicPartitionList::new();
    wanted.add_partition(topic, partition);
    let committed = tokio::task::spawn_blocking(move || {
        checker.committed_offsets(wanted, Duration::from_secs(5))
    })
    .await
    .unwrap();
    match committed.ok()?.find_partition(topic, partition)?.offset() {
        Offset::Offset(offset) => Some(offset),
        _ => None,
    }
}

/// Polls the group's committed offset of a partition until it reaches `end`.
pub async fn await_commit(
    kafka_config: &KafkaConfig,
    group: &str,
    topic: &str,
    partition: i32,
    end: i64,
) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let offset = committed_offset(kafka_config, group, topic, partition).await;
        if offset == Some(end) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "committed offset of {topic}/{partition} is {offset:?}, not {end}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A tansu broker on a free loopback port, storing into a SQLite file under `dir`; killed
/// on drop.
pub struct Tansu {
    pub bootstrap: String,
    child: Child,
}

impl Tansu {
    /// Starts `tansu` (or `$TANSU_BIN`) and waits until it accepts connections.
    pub fn start(dir: &Path) -> Tansu {
        let bin = std::env::var("TANSU_BIN").unwrap_or_else(|_| default_tansu());
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data = dir.join("tansu-data");
        std::fs::create_dir_all(&data).unwrap();
        let log = std::fs::File::create(dir.join("tansu.log")).unwrap();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            // tansu resolves a sqlite path against its working directory.
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        let mut tansu = Tansu {
            bootstrap: format!("127.0.0.1:{port}"),
            child,
        };
        let addr: SocketAddr = tansu.bootstrap.parse().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = tansu.child.try_wait().unwrap() {
                panic!("tansu exited with {status}; see {}", dir.display());
            }
            assert!(std::time::Instant::now() < deadline, "tansu did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        tansu
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tansu` on the PATH, else where `cargo install` puts it.
fn default_tansu() -> String {
    let installed = std::env::var("HOME")
        .map(|home| format!("{home}/.cargo/bin/tansu"))
        .ok()
        .filter(|path| Path::new(path).exists());
    installed.unwrap_or_else(|| "tansu".into())
}
