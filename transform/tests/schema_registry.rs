//! transform with a schema registry configured, on librdkafka's mock cluster and a registry
//! double on loopback: both state schemas are registered at start under the topic-name
//! strategy, once each, and every seat-state value is in the Confluent wire format (magic
//! byte, then the 4-byte big-endian id the registry gave the topic's subject), decodable by
//! the `schemas` decoder that accepts both framings; an unknown id is an error there.

mod support;

#[path = "../../schemas/tests/support/mod.rs"]
mod registry_double;

use registry_double::RegistryDouble;
use seatwatch_common::Shutdown;
use seatwatch_schemas::avro::AvroRecord;
use seatwatch_schemas::encoding::{CONFLUENT_HEADER_LEN, CONFLUENT_MAGIC};
use seatwatch_schemas::{Encoder, EncodingError, LicenseState, RegistryClient};
use seatwatch_transform::{run, TransformConfig};
use support::*;

const ORG: &str = "00D5g000004XyZwEAK";
const LICENSES: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_written_in_the_confluent_format_with_registered_ids() {
    let registry = RegistryDouble::start().await;
    let MockRun {
        cluster: _cluster,
        run_id,
        topics,
        mut kafka_config,
    } = MockRun::start("sr", |_, _| 1);
    kafka_config.schema_registry_url = Some(registry.url.clone());

    let sync = Sync { org: ORG, id: "s1" };
    let events = sync.user_licenses(LICENSES);
    produce(&kafka_config, &topics.raw, 0, &events).await;

    let config = TransformConfig {
        kafka: kafka_config.clone(),
        group_id: format!("sr-transform-{run_id}"),
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        flush_interval_ms: 50,
        ..TransformConfig::default()
    };
    let shutdown = Shutdown::new();
    let transform = tokio::spawn(run(config, shutdown.clone()));
    let mut reader = OutputReader::new(&kafka_config, &[(&topics.license_state, 1)]);
    reader
        .read_until("every licence's state", |got| got.len() >= LICENSES)
        .await;

    // Each state topic's subject was registered once, at start, and nothing else asked.
    let requests = registry.requests();
    let subject = |topic: &str| format!("POST /subjects/{topic}-value/versions");
    assert_eq!(
        requests,
        [subject(&topics.license_state), subject(&topics.user_state)],
    );

    // The id in each frame is the one the registry gives the licence subject (registering
    // the same schema again returns it).
    let client = RegistryClient::new(&registry.url).unwrap();
    let schema = <LicenseState as AvroRecord>::SCHEMA;
    let license_id = client
        .register(&format!("{}-value", topics.license_state), schema)
        .await
        .unwrap();
    let decoder = Encoder::confluent(RegistryClient::new(&registry.url).unwrap());
    for received in &reader.received {
        let value = received.value.as_deref().unwrap();
        assert_eq!(value[0], CONFLUENT_MAGIC);
        assert_eq!(value[1..CONFLUENT_HEADER_LEN], license_id.0.to_be_bytes());
        let state: LicenseState = decoder.decode(value).await.unwrap();
        assert_eq!(
            received.key_text(),
            format!("{ORG}/user/{}", state.license_id)
        );
        assert_eq!(state.total, Some(10));
    }

    // A frame naming an id the registry never gave is an error, not a panic.
    let mut unknown = reader.received[0].value.clone().unwrap();
    unknown[1..CONFLUENT_HEADER_LEN].copy_from_slice(&9_999u32.to_be_bytes());
    let error = decoder.decode::<LicenseState>(&unknown).await.unwrap_err();
    assert!(
        matches!(error, EncodingError::UnknownSchemaId { .. }),
        "{error:?}"
    );

    stop_cleanly(&shutdown, transform).await;
}
