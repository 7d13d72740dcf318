//! The partitioned processors must say what one processor fed every event says.

use std::collections::BTreeMap;

use prometheus::Registry;
use seatwatch_schemas::{EnvelopeKind, RawEnvelope, SfObject, SnapshotEnd, SnapshotMode};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::*;
use crate::processor::Target;

const RAW_TOPIC: &str = "test.salesforce.usage.raw";
const PARTITIONS: i32 = 3;

/// One raw event with its place in the raw topic.
struct Event {
    partition: i32,
    offset: i64,
    key: String,
    value: Vec<u8>,
}

fn envelope(org: &str, sync: &str, object: SfObject, record: Option<&Value>) -> Vec<u8> {
    let end = match record {
        Some(_) => None,
        None => Some(SnapshotEnd {
            mode: SnapshotMode::Full,
            records: 0,
        }),
    };
    let envelope = RawEnvelope {
        org_id: org.into(),
        sync_id: sync.into(),
        object,
        fetched_at: "2024-05-01T12:00:00Z".parse().unwrap(),
        api_version: "62.0".into(),
        kind: match record {
            Some(_) => EnvelopeKind::Record,
            None => EnvelopeKind::SnapshotEnd,
        },
        record: record.map(|r| RawValue::from_string(r.to_string()).unwrap()),
        snapshot: end,
    };
    serde_json::to_vec(&envelope).unwrap()
}

/// The events of one org's syncs, in order: the second sync's full snapshots have one
/// record fewer than the first's, so it tombstones one licence and one user; the third
/// sync never ends.
fn org_events(org_index: i32) -> Vec<(String, Vec<u8>)> {
    let org = format!("00D00000000000{org_index}AAA");
    let license = |n: usize| {
        json!({
            "Id": format!("100{org_index}0000000000{n}AA"), "Name": format!("Licence {n}"),
            "MasterLabel": format!("Licence {n}"), "LicenseDefinitionKey": format!("KEY_{n}"),
            "Status": "Active", "TotalLicenses": 10, "UsedLicenses": n,
        })
    };
    let user = |n: usize| {
        json!({
            "Id": format!("005{org_index}0000000000{n}AA"),
            "Username": format!("user{n}@org{org_index}.example.com"),
            "IsActive": true, "UserType": "Standard",
        })
    };
    let mut events = Vec::new();
    let mut snapshot = |sync: &str, object: SfObject, records: Vec<Value>, end: bool| {
        let count = records.len() as u64;
        for record in &records {
            let key = format!("{org}/{object}/{}", record["Id"].as_str().unwrap());
            events.push((key, envelope(&org, sync, object, Some(record))));
        }
        if end {
            let mut value: Value =
                serde_json::from_slice(&envelope(&org, sync, object, None)).unwrap();
            value["snapshot"]["records"] = json!(count);
            events.push((
                format!("{org}/{object}"),
                serde_json::to_vec(&value).unwrap(),
            ));
        }
    };
    for (sync, size) in [("sync-1", 4), ("sync-2", 3), ("sync-3", 2)] {
        let ends = sync != "sync-3";
        snapshot(
            sync,
            SfObject::UserLicense,
            (0..size).map(license).collect(),
            ends,
        );
        snapshot(
            sync,
            SfObject::User,
            (0..size + 2).map(user).collect(),
            ends,
        );
    }
    events
}

/// The events of `PARTITIONS` orgs, one per partition, interleaved event by event.
fn interleaved() -> Vec<Event> {
    let per_org: Vec<_> = (0..PARTITIONS).map(org_events).collect();
    let longest = per_org.iter().map(Vec::len).max().unwrap();
    let mut events = Vec::new();
    for position in 0..longest {
        for (partition, org) in per_org.iter().enumerate() {
            if let Some((key, value)) = org.get(position) {
                events.push(Event {
                    partition: partition as i32,
                    offset: position as i64,
                    key: key.clone(),
                    value: value.clone(),
                });
            }
        }
    }
    events
}

fn input(event: &Event) -> Input<'_> {
    Input {
        partition: event.partition,
        offset: event.offset,
        key: Some(event.key.as_bytes()),
        value: Some(&event.value),
    }
}

fn metrics() -> Metrics {
    Metrics::new(&Registry::new()).unwrap()
}

#[test]
fn bursts_over_partitions_give_what_one_processor_gives_partition_by_partition() {
    let events = interleaved();

    let mut single = Processor::new(RAW_TOPIC, metrics());
    let mut expected: BTreeMap<i32, Vec<Output>> = BTreeMap::new();
    for event in &events {
        let outputs = single.process(input(event));
        expected.entry(event.partition).or_default().extend(outputs);
    }

    let mut partitioned =
        PartitionProcessors::new(RAW_TOPIC, metrics(), StateEncoder::single_object(), 2).unwrap();
    let mut actual: BTreeMap<i32, Vec<Output>> = BTreeMap::new();
    let mut burst_sizes = [1, 2, 7, 3, 40].into_iter().cycle();
    let mut rest = &events[..];
    while !rest.is_empty() {
        let (burst, after) = rest.split_at(burst_sizes.next().unwrap().min(rest.len()));
        rest = after;
        let inputs: Vec<Input<'_>> = burst.iter().map(input).collect();
        let done = partitioned.process(&inputs);

        let mut indices: Vec<usize> = done.iter().map(|(index, _)| *index).collect();
        for partition in 0..PARTITIONS {
            let of_partition: Vec<usize> = indices
                .iter()
                .copied()
                .filter(|&index| inputs[index].partition == partition)
                .collect();
            assert!(
                of_partition.is_sorted(),
                "partition {partition} out of order: {of_partition:?}"
            );
        }
        indices.sort_unstable();
        assert_eq!(indices, (0..inputs.len()).collect::<Vec<_>>());
        for (index, outputs) in done {
            actual
                .entry(inputs[index].partition)
                .or_default()
                .extend(outputs);
        }
    }

    let tombstones = |outputs: &[Output]| outputs.iter().filter(|o| o.is_tombstone()).count();
    for partition in 0..PARTITIONS {
        let outputs = &expected[&partition];
        assert_eq!(
            tombstones(outputs),
            2,
            "sync-2 drops a licence and a user of each org"
        );
        assert!(outputs.iter().all(|o| o.target != Target::Dlq));
    }
    assert_eq!(actual, expected);
    assert_eq!(partitioned.remembered(), single.remembered());

    // The last sync never ended, so each partition must resume from its first event.
    let last = events.iter().map(|e| e.offset).max().unwrap();
    for partition in 0..PARTITIONS {
        let resume = partitioned.committable_offset(partition, last);
        assert_eq!(resume, single.committable_offset(partition, last));
        assert!(
            resume <= last,
            "the open snapshot holds partition {partition} back"
        );
    }

    partitioned.revoke(1);
    single.revoke(1);
    assert_eq!(partitioned.remembered(), single.remembered());
    assert_eq!(partitioned.committable_offset(1, last), last + 1);
}

#[test]
fn restored_state_lands_on_its_partition_and_is_forgotten_there() {
    let mut partitioned =
        PartitionProcessors::new(RAW_TOPIC, metrics(), StateEncoder::single_object(), 2).unwrap();
    partitioned.restore_license(0, "00D000000000000AAA", LicenseKind::User, "100A");
    partitioned.restore_license(2, "00D000000000002AAA", LicenseKind::User, "100B");
    assert_eq!(partitioned.remembered(), (2, 0));

    partitioned.forget_license(0, "00D000000000002AAA", LicenseKind::User, "100B");
    assert_eq!(
        partitioned.remembered(),
        (2, 0),
        "the licence is not on partition 0"
    );
    partitioned.forget_license(2, "00D000000000002AAA", LicenseKind::User, "100B");
    assert_eq!(partitioned.remembered(), (1, 0));
    partitioned.revoke(0);
    assert_eq!(partitioned.remembered(), (0, 0));
}
