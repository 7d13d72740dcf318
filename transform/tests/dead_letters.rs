//! Every reason transform rejects an event, one test each, through the Kafka pipeline on
//! librdkafka's in-process mock cluster.
//!
//! Each test writes one bad event, then a good `UserLicense` record and an incremental
//! snapshot end, to one raw partition, and runs transform over them. It checks that the bad
//! event is in `salesforce.usage.dlq` with its original key and bytes and the stage, error
//! class, message and source headers; that the good record after it became seat state; and
//! that the group's committed offset moved past them all, so the partition keeps flowing.

mod support;

use seatwatch_common::Shutdown;
use seatwatch_schemas::avro::AvroRecord;
use seatwatch_schemas::{LicenseState, SfObject};
use seatwatch_transform::dlq::{
    HEADER_ERROR_CLASS, HEADER_ERROR_MESSAGE, HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC, HEADER_STAGE,
};
use seatwatch_transform::{run, TransformConfig};
use serde_json::{json, Value};
use support::*;

const ORG: &str = "00D5g000004XyZwEAK";
const SYNC: Sync<'static> = Sync {
    org: ORG,
    id: "sync-1",
};
/// The raw partition the events are written to; not 0, so the source header is checked.
const RAW_PARTITION: i32 = 1;
const GOOD_LICENSE_ID: &str = "1005g0000000009AAA";

/// A bad event and what its dead letter must say.
struct Rejected {
    event: Event,
    class: &'static str,
    /// Words the error message must contain, naming the field or value at fault.
    message_names: &'static [&'static str],
    /// The object whose snapshot the bad event opened, when not `UserLicense`: its end
    /// marker is written too, since an open snapshot rightly holds the commit back.
    opens_snapshot_of: Option<SfObject>,
}

/// A well-formed envelope of `object` (given as text, so unknown ones can be written)
/// around `record`.
fn envelope_of(object: &str, record: &Value) -> Vec<u8> {
    let envelope = json!({
        "org_id": ORG,
        "sync_id": SYNC.id,
        "object": object,
        "fetched_at": "2024-05-01T12:00:00Z",
        "api_version": "62.0",
        "kind": "record",
        "record": record,
    });
    serde_json::to_vec(&envelope).unwrap()
}

/// Runs transform over the bad event followed by a good record and its snapshot end, and
/// checks the dead letter, the good record's seat state and the committed offset.
async fn rejected_and_flowing(rejected: Rejected) {
    let MockRun {
        cluster: _cluster,
        run_id,
        topics,
        kafka_config,
    } = MockRun::start("dlq", |_, _| 2);

    let good = SYNC.record(
        SfObject::UserLicense,
        &user_license(GOOD_LICENSE_ID, 40, 31),
    );
    let end = SYNC.incremental_end(SfObject::UserLicense, 1);
    let mut events = vec![rejected.event.clone(), good, end];
    if let Some(object) = rejected.opens_snapshot_of {
        events.push(SYNC.incremental_end(object, 1));
    }
    produce(&kafka_config, &topics.raw, RAW_PARTITION, &events).await;

    let config = TransformConfig {
        kafka: kafka_config.clone(),
        group_id: format!("dlq-transform-{run_id}"),
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        flush_interval_ms: 50,
        ..TransformConfig::default()
    };
    let shutdown = Shutdown::new();
    let transform = tokio::spawn(run(config.clone(), shutdown.clone()));

    // The dead letter and the good record's seat state both arrive.
    let good_key = format!("{ORG}/user/{GOOD_LICENSE_ID}");
    let outputs = [(topics.dlq.as_str(), 2), (topics.license_state.as_str(), 2)];
    let mut reader = OutputReader::new(&kafka_config, &outputs);
    let dlq_topic = topics.dlq.clone();
    let wanted_key = good_key.clone();
    reader
        .read_until("the dead letter and the good record's state", move |got| {
            got.iter().any(|r| r.topic == dlq_topic)
                && got.iter().any(|r| r.key_text() == wanted_key)
        })
        .await;

    // The dead letter is the original event, untouched, with its reason.
    let letters: Vec<&Received> = reader
        .received
        .iter()
        .filter(|r| r.topic == topics.dlq)
        .collect();
    assert_eq!(letters.len(), 1, "{letters:#?}");
    let letter = letters[0];
    assert_eq!(letter.key.as_deref(), Some(rejected.event.key.as_bytes()));
    assert_eq!(
        letter.value.as_deref(),
        Some(rejected.event.value.as_slice())
    );
    assert_eq!(letter.header(HEADER_STAGE), Some("transform"));
    assert_eq!(letter.header(HEADER_ERROR_CLASS), Some(rejected.class));
    let message = letter.header(HEADER_ERROR_MESSAGE).unwrap_or_default();
    for word in rejected.message_names {
        assert!(message.contains(word), "{message:?} lacks {word:?}");
    }
    assert_eq!(
        letter.header(HEADER_SOURCE_TOPIC),
        Some(topics.raw.as_str())
    );
    let partition = RAW_PARTITION.to_string();
    assert_eq!(
        letter.header(HEADER_SOURCE_PARTITION),
        Some(partition.as_str())
    );
    assert_eq!(letter.header(HEADER_SOURCE_OFFSET), Some("0"));

    // The record after it was processed normally.
    let state = reader
        .received
        .iter()
        .find(|r| r.key_text() == good_key)
        .unwrap();
    let state = LicenseState::from_avro(state.value.as_deref().unwrap()).unwrap();
    assert_eq!((state.total, state.used), (Some(40), 31));

    // And the partition's committed offset passed every event.
    let end_offset = events.len() as i64;
    await_commit(
        &kafka_config,
        &config.group_id,
        &topics.raw,
        RAW_PARTITION,
        end_offset,
    )
    .await;

    stop_cleanly(&shutdown, transform).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_is_dead_lettered() {
    let value = br#"{"org_id": "00D5g000004XyZwEAK", "sync_id": "#.to_vec();
    rejected_and_flowing(Rejected {
        event: Event {
            key: format!("{ORG}/UserLicense/1005g0000000001AAA"),
            value,
        },
        class: "invalid_json",
        message_names: &["not JSON"],
        opens_snapshot_of: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_field_is_dead_lettered() {
    let mut record = user_license("1005g0000000001AAA", 10, 5);
    record.as_object_mut().unwrap().remove("UsedLicenses");
    rejected_and_flowing(Rejected {
        event: SYNC.record(SfObject::UserLicense, &record),
        class: "invalid_record",
        message_names: &["required field UsedLicenses is missing"],
        opens_snapshot_of: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_of_the_wrong_type_is_dead_lettered() {
    let mut record = user_license("1005g0000000001AAA", 10, 5);
    record["TotalLicenses"] = json!("ten");
    rejected_and_flowing(Rejected {
        event: SYNC.record(SfObject::UserLicense, &record),
        class: "invalid_record",
        message_names: &["TotalLicenses", "string", "integer"],
        opens_snapshot_of: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_object_is_dead_lettered() {
    let record = json!({"Id": "0015g00000AAAAAAAA", "Name": "Acme"});
    rejected_and_flowing(Rejected {
        event: Event {
            key: format!("{ORG}/Account/0015g00000AAAAAAAA"),
            value: envelope_of("Account", &record),
        },
        class: "unknown_object",
        message_names: &["\"Account\""],
        opens_snapshot_of: None,
    })
    .await;
}

/// A value of the right type outside what the contract allows: a package allowance below
/// -1 (the site-licence marker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_out_of_range_is_dead_lettered() {
    let record = json!({
        "attributes": {"type": "PackageLicense"},
        "Id": "0505g0000000001AAA",
        "NamespacePrefix": "acme",
        "AllowedLicenses": -7,
        "UsedLicenses": 3,
        "Status": "Active",
    });
    rejected_and_flowing(Rejected {
        event: SYNC.record(SfObject::PackageLicense, &record),
        class: "invalid_record",
        message_names: &["AllowedLicenses is -7"],
        opens_snapshot_of: Some(SfObject::PackageLicense),
    })
    .await;
}

/// JSON that is not a raw envelope: a timestamp that is not RFC 3339.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_envelope_is_dead_lettered() {
    let mut envelope: Value = serde_json::from_slice(
        &SYNC
            .record(
                SfObject::UserLicense,
                &user_license("1005g0000000001AAA", 1, 1),
            )
            .value,
    )
    .unwrap();
    envelope["fetched_at"] = json!("noon");
    rejected_and_flowing(Rejected {
        event: Event {
            key: format!("{ORG}/UserLicense/1005g0000000001AAA"),
            value: serde_json::to_vec(&envelope).unwrap(),
        },
        class: "invalid_envelope",
        message_names: &["fetched_at", "noon"],
        opens_snapshot_of: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_does_not_match_the_record_is_dead_lettered() {
    let mut event = SYNC.record(
        SfObject::UserLicense,
        &user_license("1005g0000000001AAA", 1, 1),
    );
    event.key = format!("{ORG}/UserLicense/1005g0000000002AAA");
    rejected_and_flowing(Rejected {
        event,
        class: "key_mismatch",
        message_names: &["1005g0000000002AAA", "1005g0000000001AAA"],
        opens_snapshot_of: None,
    })
    .await;
}
