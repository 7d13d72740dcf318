//! What the ingest tests share: the simulator's org as ingest config, and a mock cluster
//! with seatwatch's topics under a fresh prefix.

#![allow(dead_code)]

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use seatwatch_common::kafka::{KafkaConfig, Topics};
use seatwatch_common::SecretRef;
use seatwatch_ingest::OrgConfig;
use seatwatch_simulator::Credentials;

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
