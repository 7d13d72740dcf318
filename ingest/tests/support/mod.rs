//! What the ingest tests share: the simulator's org as ingest config, and a mock cluster
//! with seatwatch's topics under a fresh prefix.

#![allow(dead_code)]

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{Message, Offset, TopicPartitionList};
use seatwatch_common::kafka::{KafkaConfig, Topics};
use seatwatch_common::{SecretRef, Shutdown};
use seatwatch_ingest::{sync_once, IngestConfig, OrgConfig};
use seatwatch_schemas::{RawEnvelope, SyncOutcome, SyncStatus};
use seatwatch_simulator::{Credentials, RunningSimulator, SimulatorConfig};

/// An org signing in to the simulator at `login_url` with the password flow.
pub fn simulated_org(name: &str, login_url: &str, credentials: &Credentials) -> OrgConfig {
    OrgConfig {
        name: name.into(),
        login_url: login_url.into(),
        consumer_key: credentials.consumer_key.clone(),
        username: credentials.username.clone(),
        consumer_secret: Some(SecretRef::Inline(credentials.consumer_secret.clone())),
        password: Some(SecretRef::Inline(credentials.password.clone())),
        security_token: Some(SecretRef::Inline(credentials.security_token.clone())),
        ..Default::default()
    }
}

/// Creates every seatwatch topic on `cluster` under a random prefix and returns the
/// Kafka config that reaches them (the mock has no admin API: nothing is created later).
pub fn mock_kafka(cluster: &MockCluster<'static, DefaultProducerContext>) -> KafkaConfig {
    let prefix = format!("t-{}.", uuid::Uuid::new_v4().simple());
    for spec in Topics::new(&prefix).specs() {
        cluster.create_topic(&spec.name, 1, 1).unwrap();
    }
    KafkaConfig {
        bootstrap_servers: cluster.bootstrap_servers(),
        topic_prefix: prefix,
        create_topics: false,
        ..KafkaConfig::default()
    }
}

/// Every envelope on the raw topic of `kafka` (one partition, as [`mock_kafka`] creates).
pub fn raw_envelopes(kafka: &KafkaConfig) -> Vec<RawEnvelope> {
    let topic = Topics::new(&kafka.topic_prefix).raw;
    values_of(kafka, &topic)
        .iter()
        .map(|value| serde_json::from_slice(value).unwrap())
        .collect()
}

/// Every value on `topic` of `kafka` as it is now (one partition, as [`mock_kafka`]
/// creates).
pub fn values_of(kafka: &KafkaConfig, topic: &str) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = kafka
        .consumer_config("ingest-test", "ingest-test")
        .unwrap()
        .create()
        .unwrap();
    let timeout = Duration::from_secs(10);
    let (low, high) = consumer.fetch_watermarks(topic, 0, timeout).unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Offset(low))
        .unwrap();
    consumer.assign(&assignment).unwrap();

    let mut values = Vec::new();
    let mut next = low;
    while next < high {
        let message = consumer.poll(timeout).expect("a message").unwrap();
        next = message.offset() + 1;
        values.push(message.payload().unwrap().to_vec());
    }
    values
}

/// The simulator's built-in org (pages of 200 rows) and an ingest config that reaches it
/// through a mock cluster of its own.
pub struct SimulatedOrg {
    pub cluster: MockCluster<'static, DefaultProducerContext>,
    pub sim: RunningSimulator,
    pub config: IngestConfig,
}

impl SimulatedOrg {
    /// Starts both; `adjust` changes the ingest config before it is used.
    pub async fn start(adjust: impl FnOnce(&mut IngestConfig)) -> Self {
        let cluster = MockCluster::new(1).unwrap();
        let sim_config = SimulatorConfig {
            page_size: 200,
            ..SimulatorConfig::for_tests()
        };
        let sim = seatwatch_simulator::start(sim_config, Shutdown::new())
            .await
            .unwrap();
        let mut config = IngestConfig::with_defaults(mock_kafka(&cluster));
        let org = simulated_org("sim", &sim.base_url(), &Credentials::demo());
        config.orgs.push(org);
        adjust(&mut config);
        Self {
            cluster,
            sim,
            config,
        }
    }

    /// One sync by a fresh ingest, which must succeed.
    pub async fn sync(&self) -> SyncStatus {
        let status = sync_once(self.config.clone(), Shutdown::new())
            .await
            .unwrap()
            .remove(0);
        assert_eq!(
            status.outcome,
            SyncOutcome::Success,
            "{:?}",
            status.error_message
        );
        status
    }
}
