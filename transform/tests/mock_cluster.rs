//! transform end to end on librdkafka's in-process mock cluster: envelopes of a small org
//! in, seat state and one dead letter out, offsets committed once everything is
//! acknowledged, and a clean stop on shutdown.

mod support;

use prometheus::Registry;
use seatwatch_common::kafka::{self, KafkaConfig, Topics};
use seatwatch_common::Shutdown;
use seatwatch_schemas::avro::AvroRecord;
use seatwatch_schemas::{
    EnvelopeKind, LicenseState, RawEnvelope, SfObject, SnapshotEnd, SnapshotMode, UserState,
};
use seatwatch_transform::{
    run, Input, Metrics, Output, Processor, Target, TransformConfig, TransformError,
};
use serde_json::value::RawValue;
use serde_json::Value;
use support::{await_commit, produce, spawn_transform, stop_cleanly, Event, MockRun, OutputReader};
use tokio::task::JoinHandle;

const ORG: &str = "00D5g000004XyZwEAK";
const RAW_PARTITIONS: i32 = 2;
const STATE_PARTITIONS: i32 = 3;
const DLQ_PARTITIONS: i32 = 2;

fn fixture(text: &str) -> Vec<Value> {
    let document: Value = serde_json::from_str(text).unwrap();
    document["body"]["records"].as_array().unwrap().clone()
}

fn envelope(object: SfObject, record: Option<&Value>, end: Option<SnapshotEnd>) -> Vec<u8> {
    let envelope = RawEnvelope {
        org_id: ORG.into(),
        sync_id: "sync-1".into(),
        object,
        fetched_at: "2024-05-01T12:00:00Z".parse().unwrap(),
        api_version: "62.0".into(),
        kind: if end.is_some() {
            EnvelopeKind::SnapshotEnd
        } else {
            EnvelopeKind::Record
        },
        record: record.map(|r| RawValue::from_string(r.to_string()).unwrap()),
        snapshot: end,
    };
    serde_json::to_vec(&envelope).unwrap()
}

/// One full sync of a small org; the second permission-set licence lacks TotalLicenses.
fn small_org_sync() -> Vec<Event> {
    let user_licenses = fixture(include_str!(
        "../../fixtures/salesforce/query_userlicense_page1.json"
    ));
    let psls = fixture(include_str!(
        "../../fixtures/salesforce/query_permissionsetlicense.json"
    ));
    let packages = fixture(include_str!(
        "../../fixtures/salesforce/query_packagelicense.json"
    ));
    let assigns = fixture(include_str!(
        "../../fixtures/salesforce/query_permissionsetlicenseassign.json"
    ));
    let users = fixture(include_str!(
        "../../fixtures/salesforce/query_user_with_profile_license.json"
    ));
    let mut broken = psls[0].clone();
    broken.as_object_mut().unwrap().remove("TotalLicenses");

    let snapshots = [
        (SfObject::UserLicense, user_licenses[..2].to_vec()),
        (
            SfObject::PermissionSetLicense,
            vec![psls[1].clone(), broken],
        ),
        (SfObject::PackageLicense, vec![packages[1].clone()]),
        (
            SfObject::PermissionSetLicenseAssign,
            vec![assigns[0].clone()],
        ),
        (SfObject::UserPackageLicense, vec![]),
        (SfObject::User, vec![users[0].clone()]),
    ];
    let mut events = Vec::new();
    for (object, records) in snapshots {
        for record in &records {
            let id = record["Id"].as_str().unwrap();
            events.push(Event {
                key: format!("{ORG}/{object}/{id}"),
                value: envelope(object, Some(record), None),
            });
        }
        let end = SnapshotEnd {
            mode: SnapshotMode::Full,
            records: records.len() as u64,
        };
        events.push(Event {
            key: format!("{ORG}/{object}"),
            value: envelope(object, None, Some(end)),
        });
    }
    events
}

/// What the processor alone makes of the events: the pipeline must ship exactly this.
fn expected_outputs(topics: &Topics, events: &[Event], partition: i32) -> Vec<Output> {
    let metrics = Metrics::new(&Registry::new()).unwrap();
    let mut processor = Processor::new(topics.raw.clone(), metrics);
    let mut outputs = Vec::new();
    for (offset, event) in events.iter().enumerate() {
        outputs.extend(processor.process(Input {
            partition,
            offset: offset as i64,
            key: Some(event.key.as_bytes()),
            value: Some(&event.value),
        }));
    }
    outputs
}

fn partitions(topics: &Topics, topic: &str) -> i32 {
    if topic == topics.raw {
        RAW_PARTITIONS
    } else if topic == topics.dlq {
        DLQ_PARTITIONS
    } else {
        STATE_PARTITIONS
    }
}

/// The output topics with their partition counts, as [`OutputReader`] reads them.
fn output_topics(topics: &Topics) -> [(&str, i32); 3] {
    [
        (topics.license_state.as_str(), STATE_PARTITIONS),
        (topics.user_state.as_str(), STATE_PARTITIONS),
        (topics.dlq.as_str(), DLQ_PARTITIONS),
    ]
}

/// Waits until transform's group has committed `end` on the org's raw partition, then
/// stops transform and checks that it stopped cleanly.
async fn commit_then_stop(
    kafka_config: &KafkaConfig,
    config: &TransformConfig,
    raw_topic: &str,
    end: i64,
    shutdown: Shutdown,
    transform: JoinHandle<Result<(), TransformError>>,
) {
    let raw_partition = kafka::partition_for(ORG, RAW_PARTITIONS);
    await_commit(
        kafka_config,
        &config.group_id,
        raw_topic,
        raw_partition,
        end,
    )
    .await;
    stop_cleanly(&shutdown, transform).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_org_becomes_seat_state_and_a_dead_letter() {
    let MockRun {
        cluster: _cluster,
        run_id,
        topics,
        kafka_config,
    } = MockRun::start("it", partitions);

    // The org's sync, on the org's partition of the raw topic.
    let raw_partition = kafka::partition_for(ORG, RAW_PARTITIONS);
    let events = small_org_sync();
    produce(&kafka_config, &topics.raw, raw_partition, &events).await;

    let config = TransformConfig {
        kafka: kafka_config.clone(),
        group_id: format!("it-transform-{run_id}"),
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        flush_interval_ms: 50,
        max_in_flight: 1_000,
        ..TransformConfig::default()
    };
    let shutdown = Shutdown::new();
    let transform = tokio::spawn(run(config.clone(), shutdown.clone()));

    // Exactly what the processor makes of the events arrives, in order, on the org's
    // partition of each topic.
    let expected = expected_outputs(&topics, &events, raw_partition);
    assert_eq!(expected.len(), 2 + 2 + 1 + 1);
    let mut reader = OutputReader::new(&kafka_config, &output_topics(&topics));
    reader
        .read_until("every expected output", |got| got.len() >= expected.len())
        .await;
    let received = reader.received;
    for want in &expected {
        let (topic, partitions) = match want.target {
            Target::LicenseState => (&topics.license_state, STATE_PARTITIONS),
            Target::UserState => (&topics.user_state, STATE_PARTITIONS),
            Target::Dlq => (&topics.dlq, DLQ_PARTITIONS),
        };
        let got = received
            .iter()
            .find(|r| &r.topic == topic && r.key == want.key)
            .unwrap_or_else(|| panic!("missing output {want:?}"));
        assert_eq!(got.value, want.value);
        assert_eq!(got.partition, kafka::partition_for(ORG, partitions));
    }

    // A few facts by hand, so the comparison above is not circular.
    let by_key = |key: &str| {
        received
            .iter()
            .find(|r| r.key.as_deref() == Some(key.as_bytes()))
            .unwrap_or_else(|| panic!("no output keyed {key}"))
    };
    let site = by_key(&format!("{ORG}/package/0505g0000000002AAA"));
    let site = LicenseState::from_avro(site.value.as_deref().unwrap()).unwrap();
    assert_eq!((site.total, site.used, site.available), (None, 312, None));
    let identity = by_key(&format!("{ORG}/permission-set/0PL5g0000000002GAA"));
    let identity = LicenseState::from_avro(identity.value.as_deref().unwrap()).unwrap();
    assert_eq!(identity.expires_at, Some(1_738_281_600_000));
    let integration = by_key(&format!("{ORG}/0055g00000AbCdEAAV"));
    let integration = UserState::from_avro(integration.value.as_deref().unwrap()).unwrap();
    assert_eq!(
        integration.permission_set_licenses,
        vec!["0PL5g0000000001GAA"]
    );

    // The dead letter is the original event with its reason.
    let bad = &events[4];
    assert_eq!(
        bad.key,
        format!("{ORG}/PermissionSetLicense/0PL5g0000000001GAA")
    );
    let letter = by_key(&bad.key);
    assert_eq!(letter.topic, topics.dlq);
    assert_eq!(letter.value.as_deref(), Some(bad.value.as_slice()));
    let header = |name: &str| letter.headers.get(name).map(String::as_str);
    assert_eq!(header("seatwatch.stage"), Some("transform"));
    assert_eq!(header("seatwatch.error.class"), Some("invalid_record"));
    assert!(header("seatwatch.error.message")
        .unwrap()
        .contains("TotalLicenses"));
    assert_eq!(header("seatwatch.source.topic"), Some(topics.raw.as_str()));
    let partition_text = raw_partition.to_string();
    assert_eq!(
        header("seatwatch.source.partition"),
        Some(partition_text.as_str())
    );
    assert_eq!(header("seatwatch.source.offset"), Some("4"));

    // Every snapshot ended and every output is acknowledged, so the group's offset reaches
    // the end of the input.
    let end = events.len() as i64;
    commit_then_stop(
        &kafka_config,
        &config,
        &topics.raw,
        end,
        shutdown,
        transform,
    )
    .await;
}

/// With room for one message in the producer's queue, most outputs find it full: they wait
/// in order while the queue drains, and none is lost, reordered or committed early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_a_full_producer_queue_holds_back_arrive_in_order() {
    let MockRun {
        cluster: _cluster,
        run_id,
        topics,
        kafka_config,
    } = MockRun::start("queue", partitions);
    let raw_partition = kafka::partition_for(ORG, RAW_PARTITIONS);
    let events = small_org_sync();
    produce(&kafka_config, &topics.raw, raw_partition, &events).await;

    let mut transform_kafka = kafka_config.clone();
    transform_kafka
        .properties
        .insert("queue.buffering.max.messages".into(), "1".into());
    let config = TransformConfig {
        kafka: transform_kafka,
        group_id: format!("queue-transform-{run_id}"),
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        flush_interval_ms: 50,
        max_in_flight: 1_000,
        ..TransformConfig::default()
    };
    let shutdown = Shutdown::new();
    let registry = Registry::new();
    let transform = spawn_transform(&config, &shutdown, &registry);

    let expected = expected_outputs(&topics, &events, raw_partition);
    let mut reader = OutputReader::new(&kafka_config, &output_topics(&topics));
    reader
        .read_until("every expected output", |got| got.len() >= expected.len())
        .await;
    // The full queue did refuse outputs, so the order below went through the wait.
    let held = registry
        .gather()
        .iter()
        .find(|family| family.name() == "seatwatch_transform_outputs_held_total")
        .map(|family| family.get_metric()[0].get_counter().get_value())
        .expect("the held-outputs counter is registered");
    assert!(held > 0.0, "no output waited for the full queue");
    // Each topic holds the processor's outputs for it, in the processor's order.
    for (target, topic) in [
        (Target::LicenseState, &topics.license_state),
        (Target::UserState, &topics.user_state),
        (Target::Dlq, &topics.dlq),
    ] {
        let want: Vec<_> = expected
            .iter()
            .filter(|output| output.target == target)
            .map(|output| (output.key.clone(), output.value.clone()))
            .collect();
        let got: Vec<_> = reader
            .received
            .iter()
            .filter(|received| &received.topic == topic)
            .map(|received| (received.key.clone(), received.value.clone()))
            .collect();
        assert_eq!(got, want, "outputs in {topic}");
    }

    let end = events.len() as i64;
    commit_then_stop(
        &kafka_config,
        &config,
        &topics.raw,
        end,
        shutdown,
        transform,
    )
    .await;
}
