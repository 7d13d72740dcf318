//! Two transform instances in one consumer group on a real Kafka-protocol broker (tansu on
//! loopback): they split the raw topic's partitions, and a rebalance (a second instance
//! joining, then the first one killed mid-stream, without draining or committing) loses
//! nothing: every input record, at every version, appears in the seat-state topic.
//!
//! The instances are in-process tasks running transform's `run_with`, each with its own
//! metrics registry; "killed" means its task is aborted. Needs the `tansu` binary
//! (`TANSU_BIN`, else `~/.cargo/bin/tansu` or the PATH).

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use prometheus::Registry;
use seatwatch_common::http::Health;
use seatwatch_common::kafka::{self, KafkaConfig, Topics};
use seatwatch_common::Shutdown;
use seatwatch_schemas::avro::AvroRecord;
use seatwatch_schemas::{LicenseState, SfObject};
use seatwatch_transform::{run_with, TransformConfig};
use support::*;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const PARTITIONS: i32 = 4;
/// Orgs per raw partition, so that every partition carries events.
const ORGS_PER_PARTITION: usize = 2;
/// Licence records per org in each batch.
const RECORDS_PER_ORG: usize = 20;

/// One transform instance: its task, its metrics and its stop signal.
struct Instance {
    task: JoinHandle<()>,
    registry: Registry,
    shutdown: Shutdown,
}

impl Instance {
    fn start(config: &TransformConfig) -> Self {
        let registry = Registry::new();
        let shutdown = Shutdown::new();
        let task = {
            let (config, registry, shutdown) = (config.clone(), registry.clone(), shutdown.clone());
            tokio::spawn(async move {
                let result = run_with(config, shutdown, &registry, Health::new()).await;
                result.expect("transform runs until stopped");
            })
        };
        Self {
            task,
            registry,
            shutdown,
        }
    }

    /// The sum of every series of the metric `name`.
    fn metric(&self, name: &str) -> f64 {
        let families = self.registry.gather();
        let Some(family) = families.iter().find(|f| f.name() == name) else {
            return 0.0;
        };
        family
            .get_metric()
            .iter()
            .map(|m| m.get_counter().get_value() + m.get_gauge().get_value())
            .sum()
    }

    fn records(&self) -> f64 {
        self.metric("seatwatch_transform_records_total")
    }

    fn assigned(&self) -> f64 {
        self.metric("seatwatch_transform_assigned_partitions")
    }
}

/// Org ids covering every raw partition `ORGS_PER_PARTITION` times.
fn orgs() -> Vec<String> {
    let mut per_partition = vec![0; PARTITIONS as usize];
    let mut orgs = Vec::new();
    for n in 0.. {
        let org = format!("00D5g{n:010}AAA");
        let partition = kafka::partition_for(&org, PARTITIONS) as usize;
        if per_partition[partition] < ORGS_PER_PARTITION {
            per_partition[partition] += 1;
            orgs.push(org);
        }
        if orgs.len() == PARTITIONS as usize * ORGS_PER_PARTITION {
            break;
        }
    }
    orgs
}

/// A licence's key on the seat-state topic and the `used` count that marks its version.
type Version = (String, i64);

/// Writes one batch: per org, the same licences as every batch with `used` counts unique
/// to the batch, then an incremental end marker. Returns the versions it must produce.
async fn write_batch(kafka_config: &KafkaConfig, raw: &str, batch: i64) -> BTreeSet<Version> {
    let mut versions = BTreeSet::new();
    for org in orgs() {
        let sync_id = format!("sync-{batch}");
        let sync = Sync {
            org: &org,
            id: &sync_id,
        };
        let mut events = Vec::new();
        for n in 0..RECORDS_PER_ORG {
            let id = format!("1005g{n:010}AAA");
            let used = batch * 1_000 + n as i64;
            events.push(sync.record(SfObject::UserLicense, &user_license(&id, 100_000, used)));
            versions.insert((format!("{org}/user/{id}"), used));
        }
        events.push(sync.incremental_end(SfObject::UserLicense, RECORDS_PER_ORG as u64));
        let partition = kafka::partition_for(&org, PARTITIONS);
        produce(kafka_config, raw, partition, &events).await;
    }
    versions
}

/// Reads the seat-state topic until every wanted version is in it.
async fn await_versions(reader: &mut OutputReader, wanted: &BTreeSet<Version>) {
    let wanted_now = wanted.clone();
    reader
        .read_until("every version of every licence", move |got| {
            let seen = versions_in(got);
            wanted_now.iter().all(|version| seen.contains(version))
        })
        .await;
}

fn versions_in(received: &[Received]) -> BTreeSet<Version> {
    received
        .iter()
        .filter_map(|r| {
            let state = LicenseState::from_avro(r.value.as_deref()?).ok()?;
            Some((r.key_text(), state.used))
        })
        .collect()
}

/// Waits until `check` holds, re-checking every 100 ms.
async fn await_condition(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_split_the_partitions_and_a_rebalance_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let tansu = Tansu::start(dir.path());
    let prefix = format!("cg-{}.", uuid::Uuid::new_v4().simple());
    let topics = Topics::new(&prefix);
    let kafka_config = KafkaConfig {
        bootstrap_servers: tansu.bootstrap.clone(),
        topic_prefix: prefix,
        partitions: PARTITIONS,
        ..KafkaConfig::default()
    };
    let config = TransformConfig {
        kafka: kafka_config.clone(),
        group_id: "cg-transform".into(),
        flush_interval_ms: 50,
        ..TransformConfig::default()
    };

    // One instance owns every partition.
    let first = Instance::start(&config);
    await_condition("the first instance to own every partition", || {
        first.assigned() == f64::from(PARTITIONS)
    })
    .await;
    let mut wanted = write_batch(&kafka_config, &topics.raw, 1).await;
    let mut reader = OutputReader::new(&kafka_config, &[(&topics.license_state, PARTITIONS)]);
    await_versions(&mut reader, &wanted).await;

    // A second instance joins: the partitions are split between the two, and both work.
    let second = Instance::start(&config);
    await_condition("the partitions to be split between the instances", || {
        let (a, b) = (first.assigned(), second.assigned());
        a > 0.0 && b > 0.0 && a + b == f64::from(PARTITIONS)
    })
    .await;
    let before = (first.records(), second.records());
    wanted.extend(write_batch(&kafka_config, &topics.raw, 2).await);
    await_versions(&mut reader, &wanted).await;
    let first_share = first.records() - before.0;
    let second_share = second.records() - before.1;
    assert!(
        first_share > 0.0 && second_share > 0.0,
        "both instances process a share of the second batch: {first_share} and {second_share}"
    );

    // The first instance dies mid-stream, without draining or committing; the second
    // takes its partitions over and replays what the first had not committed.
    let third_batch = write_batch(&kafka_config, &topics.raw, 3);
    let (versions, ()) = tokio::join!(third_batch, async { first.task.abort() });
    wanted.extend(versions);
    assert!(first.task.await.unwrap_err().is_cancelled());
    await_condition("the survivor to own every partition", || {
        second.assigned() == f64::from(PARTITIONS)
    })
    .await;
    wanted.extend(write_batch(&kafka_config, &topics.raw, 4).await);
    await_versions(&mut reader, &wanted).await;
    let seen = versions_in(&reader.received);
    let missing: Vec<&Version> = wanted.iter().filter(|v| !seen.contains(*v)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert_eq!(
        wanted.len(),
        4 * PARTITIONS as usize * ORGS_PER_PARTITION * RECORDS_PER_ORG
    );

    second.shutdown.cancel();
    first.shutdown.cancel();
    tokio::time::timeout(PATIENCE, second.task)
        .await
        .expect("the survivor stops after shutdown")
        .expect("the survivor does not fail");
}
