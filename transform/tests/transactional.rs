//! transform's delivery modes on librdkafka's in-process mock cluster (tansu 0.6 cannot run
//! the transactional one: it lacks Kafka's `EndTxn`), each test printing which mode ran.
//!
//! With `delivery = "transactional"` transform commits Kafka transactions carrying both the
//! outputs and the input offsets; with `at_least_once` it commits none and stores the
//! offsets in the group. The mock cluster's transactions are shallow (librdkafka 2.12: no
//! commit markers in partitions, offsets sent in a transaction checked but not stored), so
//! the transactional test reads transform's own counts of committed transactions and of
//! committed offset sets, which move only when the coordinator accepted `EndTxn` after
//! `TxnOffsetCommit`; the at-least-once tests read the group's offset from the broker.
//! One of them (built with the `failpoints` feature, as the test command builds) holds a
//! commit at its fail point to show that processing goes on while a flush commits.

mod support;

use prometheus::Registry;
use seatwatch_common::kafka::KafkaConfig;
use seatwatch_common::Shutdown;
use seatwatch_transform::{Delivery, TransformConfig};
use support::*;

const ORG: &str = "00D5g000004XyZwEAK";
const LICENSES: usize = 5;

/// Runs transform in `delivery` mode over one org's licences until every state record is
/// readable (`read_committed`) and the input offsets are committed; returns how many
/// records were read and how many transactions transform committed.
async fn run_in(delivery: Delivery) -> (usize, f64) {
    let MockRun {
        cluster: _cluster,
        run_id,
        topics,
        kafka_config,
    } = MockRun::start("tx", |_, _| 1);

    let sync = Sync { org: ORG, id: "s1" };
    let events = sync.user_licenses(LICENSES);
    produce(&kafka_config, &topics.raw, 0, &events).await;

    let config = config_for(
        &kafka_config,
        format!("tx-transform-{run_id}"),
        50,
        delivery,
    );
    let shutdown = Shutdown::new();
    let registry = Registry::new();
    let transform = spawn_transform(&config, &shutdown, &registry);

    // Consumers of this crate read committed data only, so these outputs were committed.
    let mut reader = OutputReader::new(&kafka_config, &[(&topics.license_state, 1)]);
    reader
        .read_until("every licence's state", |got| got.len() >= LICENSES)
        .await;
    match delivery {
        Delivery::AtLeastOnce => {
            let end = events.len() as i64;
            await_commit(&kafka_config, &config.group_id, &topics.raw, 0, end).await;
        }
        Delivery::Transactional => await_committed_offsets(&registry).await,
    }

    stop_cleanly(&shutdown, transform).await;

    let transactions = counter(&registry, "seatwatch_transform_transactions_total");
    (reader.received.len(), transactions)
}

/// transform on `kafka_config` in `group_id`, flushing every `flush_interval_ms`.
fn config_for(
    kafka_config: &KafkaConfig,
    group_id: String,
    flush_interval_ms: u64,
    delivery: Delivery,
) -> TransformConfig {
    TransformConfig {
        kafka: kafka_config.clone(),
        group_id,
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        flush_interval_ms,
        delivery,
        ..TransformConfig::default()
    }
}

/// The value of a counter transform registered.
fn counter(registry: &Registry, name: &str) -> f64 {
    let families = registry.gather();
    let family = families.iter().find(|f| f.name() == name);
    family.map_or(0.0, |f| f.get_metric()[0].get_counter().get_value())
}

/// Waits until transform has committed a set of input offsets at least once.
async fn await_committed_offsets(registry: &Registry) {
    let commits = || counter(registry, "seatwatch_transform_commits_total");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while commits() < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no transaction with offsets committed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_delivery_commits_outputs_and_offsets_in_transactions() {
    let (records, transactions) = run_in(Delivery::Transactional).await;
    println!("delivery mode: transactional; {records} records in {transactions} transactions");
    assert_eq!(records, LICENSES);
    assert!(transactions >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_delivery_commits_offsets_without_transactions() {
    let (records, transactions) = run_in(Delivery::AtLeastOnce).await;
    println!("delivery mode: at_least_once; {records} records, {transactions} transactions");
    assert_eq!(records, LICENSES);
    assert_eq!(transactions, 0.0);
}

/// At least once, a flush commits beside processing: while its commit is held at the
/// fail point, after every output it awaited was acknowledged, transform goes on reading,
/// processing and producing the events written since, until the next flush (which waits
/// for that commit); a later commit then covers them. Flushes 5 s apart leave the second
/// sync that long to be processed.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn processing_goes_on_while_an_at_least_once_flush_commits() {
    use std::sync::mpsc;
    use std::sync::Mutex;

    let MockRun {
        cluster: _cluster,
        run_id,
        topics,
        kafka_config,
    } = MockRun::start("overlap", |_, _| 1);

    // The first commit announces itself and waits until the test lets it go (or for as
    // long as the test waits for anything, so that a failing run ends); once the release
    // sender is dropped, later commits pass straight through.
    let (reached_tx, reached_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (reached_tx, release_rx) = (Mutex::new(reached_tx), Mutex::new(release_rx));
    fail::cfg_callback("transform-before-commit", move || {
        let _ = reached_tx.lock().unwrap().send(());
        let _ = release_rx.lock().unwrap().recv_timeout(PATIENCE);
    })
    .unwrap();

    let first = Sync { org: ORG, id: "s1" }.user_licenses(LICENSES);
    produce(&kafka_config, &topics.raw, 0, &first).await;
    let group_id = format!("overlap-transform-{run_id}");
    let config = config_for(&kafka_config, group_id, 5_000, Delivery::AtLeastOnce);
    let shutdown = Shutdown::new();
    let registry = Registry::new();
    let transform = spawn_transform(&config, &shutdown, &registry);
    let reached = tokio::task::spawn_blocking(move || reached_rx.recv_timeout(PATIENCE));
    reached
        .await
        .unwrap()
        .expect("transform reaches its first commit");

    // The next sync's licences are published again while that commit is held.
    let second = Sync { org: ORG, id: "s2" }.user_licenses(LICENSES);
    produce(&kafka_config, &topics.raw, 0, &second).await;
    let mut reader = OutputReader::new(&kafka_config, &[(&topics.license_state, 1)]);
    reader
        .read_until("both syncs' licences", |got| got.len() >= 2 * LICENSES)
        .await;
    let commits = counter(&registry, "seatwatch_transform_commits_total");
    assert_eq!(commits, 0.0, "the first commit is still held");

    drop(release_tx);
    let end = (first.len() + second.len()) as i64;
    await_commit(&kafka_config, &config.group_id, &topics.raw, 0, end).await;
    stop_cleanly(&shutdown, transform).await;
    fail::remove("transform-before-commit");
    println!(
        "delivery mode: at_least_once; {} outputs produced while a commit was held",
        reader.received.len()
    );
}
