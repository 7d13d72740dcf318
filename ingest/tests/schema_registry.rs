//! ingest with a schema registry configured, against the simulator and a mock cluster on
//! loopback: the sync-status schema is registered at start under the topic-name strategy,
//! and each status is written in the Confluent wire format with the registered id.

mod support;

#[path = "../../schemas/tests/support/mod.rs"]
mod registry_double;

use registry_double::RegistryDouble;
use seatwatch_common::kafka::Topics;
use seatwatch_schemas::encoding::{CONFLUENT_HEADER_LEN, CONFLUENT_MAGIC};
use seatwatch_schemas::{Encoder, RegistryClient, SyncOutcome, SyncStatus};
use support::SimulatedOrg;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_status_is_written_in_the_confluent_format_with_its_registered_id() {
    let registry = RegistryDouble::start().await;
    let org = SimulatedOrg::start(|config| {
        config.kafka.schema_registry_url = Some(registry.url.clone());
    })
    .await;
    let status = org.sync().await;

    let topic = Topics::new(&org.config.kafka.topic_prefix).sync_status;
    assert_eq!(
        registry.requests(),
        [format!("POST /subjects/{topic}-value/versions")],
        "the sync-status subject is registered once, at start"
    );

    // Registering the same schema again returns the id the frames must carry.
    let client = RegistryClient::new(&registry.url).unwrap();
    let schema = <SyncStatus as seatwatch_schemas::avro::AvroRecord>::SCHEMA;
    let id = client
        .register(&format!("{topic}-value"), schema)
        .await
        .unwrap();
    let values = support::values_of(&org.config.kafka, &topic);
    assert!(!values.is_empty(), "at least the final status");
    let decoder = Encoder::from_url(Some(&registry.url)).unwrap();
    for value in &values {
        assert_eq!(value[0], CONFLUENT_MAGIC);
        assert_eq!(value[1..CONFLUENT_HEADER_LEN], id.0.to_be_bytes());
        let written: SyncStatus = decoder.decode(value).await.unwrap();
        assert_eq!(written.org_id, status.org_id);
    }
    let last: SyncStatus = decoder.decode(values.last().unwrap()).await.unwrap();
    assert_eq!(last.outcome, SyncOutcome::Success);
}
