//! The fault suite: every scenario runs the real services as processes on
//! loopback, injects one kind of fault, gives every Salesforce record a unique version,
//! and afterwards compares the sets of (key, version) seen at each stage.
//!
//! Each scenario prints one line per fault,
//! `FAULT <scenario>: in=<n> out=<n> dlq=<n> duplicates=<n> lost=<n>`, which
//! `RELIABILITY.md` records, and asserts `lost=0`:
//!
//! 1. `broker_down_and_back` / `broker_down_past_message_timeout`: the broker goes away
//!    while ingest and transform run a sync, first shorter than `message.timeout.ms`, then
//!    longer, so that the sync fails and runs again. On librdkafka's mock cluster
//!    (`broker_down`/`broker_up`); the same on tansu behind a `support::Cutter` is ignored
//!    while tansu 0.6's storage panics on it (see `RELIABILITY.md`);
//! 2. `transform_sigkill`: transform is SIGKILLed once it has written outputs past its
//!    committed offset, and restarted; `transform_fail_point_abort` (with the `failpoints`
//!    feature): transform aborts itself at its `transform-before-commit` fail point, after
//!    its outputs are acknowledged and before their offsets are committed;
//! 3. `alert_sigkill_and_receiver_500`: the webhook receiver answers 500, then hangs past
//!    the timeout, then takes one notification and SIGKILLs alert before answering;
//! 4. `duplicate_replay`: the raw events twice, and a transform group reading from 0;
//! 5. `malformed_input`: hostile values on the raw topic each end in exactly one place;
//! 6. `rebalance`: a second transform joins the group mid-stream and is SIGKILLed;
//! 7. `broker_restart_sigkill` / `broker_restart_sigkill_incremental`: the tansu process is
//!    SIGKILLed mid-sync and started again on the same storage (`support::RestartableTansu`,
//!    behind a `support::Cutter`), twice; the same with SIGTERM first
//!    (`broker_restart_sigterm`) is ignored while tansu 0.6's storage panics on the
//!    producer epoch librdkafka bumps after the SIGTERM's failed requests.
//!
//! Needs `tansu` (`TANSU_BIN`). Everything listens on 127.0.0.1.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use seatwatch_schemas::avro::AvroRecord;
use seatwatch_schemas::{
    Alert, EnvelopeKind, LicenseKind, LicenseState, RawEnvelope, SfObject, SnapshotEnd,
    SnapshotMode, UserState,
};
use serde_json::value::RawValue;
use serde_json::{json, Value as Json};
use support::*;

const PATIENCE: Duration = Duration::from_secs(120);
const ORG: &str = "00D000000000001AAA";

// ---------------------------------------------------------------------------------------
// Shared plumbing
// ---------------------------------------------------------------------------------------

/// One message as read back, with where it sits and its headers.
#[derive(Clone, Debug)]
struct Msg {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: BTreeMap<String, Vec<u8>>,
}

impl Msg {
    fn key_str(&self) -> String {
        String::from_utf8_lossy(self.key.as_deref().unwrap_or_default()).into_owned()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// Every message of every partition of `topic`, partition by partition in offset order;
/// retried while the broker is unreachable (a cut that was just restored).
fn read_all(bootstrap: &str, topic: &str) -> Vec<Msg> {
    wait_for(&format!("a full read of {topic}"), PATIENCE, || {
        try_read_all(bootstrap, topic)
            .map_err(|e| {
                eprintln!("reading {topic}: {e}; retrying");
                assert_broker_sane();
            })
            .ok()
    })
}

/// The log of the tansu broker of the running test, if it has one.
static BROKER_LOG: Mutex<Option<std::path::PathBuf>> = Mutex::new(None);

/// Fails at once when the broker panicked, rather than after every retry ran out.
fn assert_broker_sane() {
    let log = BROKER_LOG.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(log) = log {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(at) = text.find("panicked") {
            panic!(
                "the broker panicked and is unusable from here on:\n{}",
                &text[at..text.len().min(at + 1500)]
            );
        }
    }
}

fn try_read_all(bootstrap: &str, topic: &str) -> Result<Vec<Msg>, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("fault-reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| e.to_string())?;
    let partitions = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len() as i32)
        .filter(|n| *n > 0)
        .ok_or("no partitions in the metadata")?;
    let mut out = Vec::new();
    for partition in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, timeout)
            .map_err(|e| e.to_string())?;
        if high <= low {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(low))
            .map_err(|e| e.to_string())?;
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut next = low;
        while next < high {
            if Instant::now() > deadline {
                return Err("timed out".into());
            }
            let Some(message) = consumer.poll(Duration::from_millis(500)) else {
                continue;
            };
            let message = message.map_err(|e| e.to_string())?;
            if message.partition() != partition {
                continue;
            }
            next = message.offset() + 1;
            let mut headers = BTreeMap::new();
            if let Some(h) = message.headers() {
                for header in h.iter() {
                    headers.insert(
                        header.key.to_owned(),
                        header.value.map(<[u8]>::to_vec).unwrap_or_default(),
                    );
                }
            }
            out.push(Msg {
                partition,
                offset: message.offset(),
                key: message.key().map(<[u8]>::to_vec),
                value: message.payload().map(<[u8]>::to_vec),
                headers,
            });
        }
    }
    Ok(out)
}

/// The high watermark of one partition of `topic`, if the broker answers.
fn high_watermark(bootstrap: &str, topic: &str, partition: i32) -> Option<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .ok()?;
    consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(5))
        .ok()
        .map(|(_, high)| high)
}

/// Creates every seatwatch topic under a fresh prefix, one partition each.
fn create_topics(bootstrap: &str, tag: &str) -> String {
    create_topics_with(bootstrap, tag, 1)
}

/// Creates every seatwatch topic under a fresh prefix with `partitions` partitions each.
fn create_topics_with(bootstrap: &str, tag: &str, partitions: i32) -> String {
    let prefix = format!("{tag}-{}.", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let created = seatwatch()
        .args(["topics", "create", "--bootstrap-servers", bootstrap])
        .args([
            "--topic-prefix",
            &prefix,
            "--partitions",
            &partitions.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "topics create: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    prefix
}

fn kafka_section(bootstrap: &str, prefix: &str, extra: &str) -> String {
    format!(
        "[kafka]\nbootstrap_servers = \"{bootstrap}\"\ntopic_prefix = \"{prefix}\"\n\
         create_topics = false\npartitions = 1\n{extra}"
    )
}

/// Starts `seatwatch <args>` with a config file and an ops port; returns it and its URL.
fn service(name: &str, args: &[&str], config_text: &str, dir: &Path) -> (Proc, String) {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, config_text).unwrap();
    spawn_service(name, args, &config, dir)
}

/// The sum of the samples of `name` whose labels contain `labels`.
fn metric(ops_url: &str, name: &str, labels: &str) -> Option<f64> {
    let (status, text) = http_get(&format!("{ops_url}/metrics"))?;
    if status != 200 {
        return None;
    }
    Some(
        text.lines()
            .filter(|line| {
                line.starts_with(name)
                    && line[name.len()..].starts_with(['{', ' '])
                    && line.contains(labels)
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

/// SIGKILL: no drain, no commit, no goodbye.
fn hard_kill(proc: &mut Proc) {
    let pid = proc.child.id() as libc::pid_t;
    // SAFETY: kill(2) on a child this test spawned and has not reaped yet.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_for(&format!("{} to die", proc.name), PATIENCE, || {
        proc.child.try_wait().unwrap()
    });
}

fn fault_line(scenario: &str, figures: &Figures) {
    println!(
        "FAULT {scenario}: in={} out={} dlq={} duplicates={} lost={}",
        figures.input, figures.output, figures.dlq, figures.duplicates, figures.lost
    );
}

#[derive(Debug, Default)]
struct Figures {
    input: usize,
    output: usize,
    dlq: usize,
    duplicates: usize,
    lost: usize,
}

// ---------------------------------------------------------------------------------------
// The simulator, in process, so the test can change records and inject faults
// ---------------------------------------------------------------------------------------

struct Sim {
    runtime: tokio::runtime::Runtime,
    running: Option<seatwatch_simulator::RunningSimulator>,
    handle: seatwatch_simulator::SimulatorHandle,
    url: String,
}

impl Sim {
    fn start(users: usize, page_size: usize) -> Sim {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let mut config = seatwatch_simulator::SimulatorConfig::for_tests();
        config.org = seatwatch_simulator::OrgSource::BuiltIn { users };
        config.page_size = page_size;
        let running = runtime
            .block_on(seatwatch_simulator::start(
                config,
                tokio_util::sync::CancellationToken::new(),
            ))
            .unwrap();
        let handle = running.handle();
        let url = running.base_url();
        let sim = Sim {
            runtime,
            running: Some(running),
            handle,
            url,
        };
        // Every user gets a SystemModstamp of its own: the version the suite compares.
        let base = Utc::now() - chrono::Duration::hours(1);
        sim.restamp(|_| true, base);
        sim
    }

    /// Gives every user `pick` selects a new, unique SystemModstamp from `from` on (one
    /// millisecond apart); returns how many.
    fn restamp(&self, pick: impl Fn(usize) -> bool, from: DateTime<Utc>) -> usize {
        self.handle.with_org(|org| {
            let mut n = 0;
            for (i, user) in org.users.iter_mut().enumerate() {
                if pick(i) {
                    let at = from + chrono::Duration::milliseconds(n as i64);
                    user.system_modstamp = at;
                    user.last_modified_date = at;
                    n += 1;
                }
            }
            n
        })
    }

    /// Every user's (id, SystemModstamp in ms) right now.
    fn user_versions(&self) -> BTreeSet<(String, i64)> {
        self.handle.with_org(|org| {
            org.users
                .iter()
                .map(|u| (u.id.clone(), u.system_modstamp.timestamp_millis()))
                .collect()
        })
    }

    fn ingest_config(&self, kafka: &str, extra: &str) -> String {
        let credentials = seatwatch_simulator::Credentials::demo();
        format!(
            "poll_interval_secs = 2\nbatch_size = 200\n{extra}\n{kafka}\n[[orgs]]\n\
             name = \"simulated\"\nlogin_url = \"{}\"\nconsumer_key = \"{}\"\nusername = \"{}\"\n\
             consumer_secret = {{ env = \"{SF_CONSUMER_SECRET_ENV}\" }}\n\
             password = {{ env = \"{SF_PASSWORD_ENV}\" }}\n\
             security_token = {{ env = \"{SF_SECURITY_TOKEN_ENV}\" }}\n",
            self.url, credentials.consumer_key, credentials.username,
        )
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            self.runtime.block_on(running.stop());
        }
    }
}

/// A raw `User` event as read back: its key, record id, SystemModstamp (ms) and sync.
#[derive(Clone, Debug)]
struct RawUser {
    id: String,
    modstamp: i64,
    sync_id: String,
}

fn raw_users(bootstrap: &str, prefix: &str) -> Vec<RawUser> {
    read_all(bootstrap, &format!("{prefix}salesforce.usage.raw"))
        .into_iter()
        .filter_map(|m| {
            let envelope: Json = serde_json::from_slice(m.value.as_deref()?).ok()?;
            if envelope["object"] != "User" || envelope["kind"] == "snapshot_end" {
                return None;
            }
            let record = &envelope["record"];
            let stamp = record["SystemModstamp"].as_str()?;
            let modstamp = seatwatch_schemas::salesforce::parse_datetime(stamp)
                .ok()?
                .timestamp_millis();
            Some(RawUser {
                id: record["Id"].as_str()?.to_owned(),
                modstamp,
                sync_id: envelope["sync_id"].as_str()?.to_owned(),
            })
        })
        .collect()
}

/// Every `seats.user-state` value: (user id, sync id), in offset order.
fn user_states(bootstrap: &str, prefix: &str) -> Vec<(String, String)> {
    read_all(bootstrap, &format!("{prefix}seats.user-state"))
        .into_iter()
        .filter_map(|m| {
            let state = UserState::from_avro(m.value.as_deref()?).unwrap();
            Some((state.user_id, state.sync_id))
        })
        .collect()
}

/// The `User` cursors ingest wrote, oldest first, as the SystemModstamp (ms) each names.
fn user_cursors(bootstrap: &str, prefix: &str) -> Vec<i64> {
    read_all(bootstrap, &format!("{prefix}salesforce.ingest-cursors"))
        .into_iter()
        .filter(|m| m.key_str().ends_with("/User"))
        .filter_map(|m| {
            let cursor: Json = serde_json::from_slice(m.value.as_deref()?).ok()?;
            let stamp: DateTime<Utc> = cursor["modstamp"].as_str()?.parse().ok()?;
            Some(stamp.timestamp_millis())
        })
        .collect()
}

/// Compares the stages of an ingest → transform run against every version the simulator
/// ever held, and checks that no cursor passed an event the broker did not take.
fn compare_stages(
    bootstrap: &str,
    prefix: &str,
    expected: &BTreeSet<(String, i64)>,
) -> (Figures, Vec<RawUser>) {
    let raw = raw_users(bootstrap, prefix);
    let raw_versions: BTreeSet<(String, i64)> =
        raw.iter().map(|r| (r.id.clone(), r.modstamp)).collect();
    let missing: Vec<_> = expected.difference(&raw_versions).take(5).collect();
    assert!(
        missing.is_empty(),
        "versions the simulator held never reached the raw topic: {missing:?}"
    );

    // The cursor never passes an unacknowledged event: every version at or before a
    // written cursor is in the raw topic.
    let cursors = user_cursors(bootstrap, prefix);
    assert!(!cursors.is_empty(), "ingest wrote no User cursor");
    for cursor in &cursors {
        let behind: Vec<_> = expected
            .iter()
            .filter(|(_, stamp)| stamp <= cursor)
            .filter(|v| !raw_versions.contains(v))
            .take(5)
            .collect();
        assert!(
            behind.is_empty(),
            "cursor {cursor} passed events not in the topic: {behind:?}"
        );
    }

    // transform: every (user, sync) of the raw topic is in seats.user-state.
    let states = user_states(bootstrap, prefix);
    let out: BTreeSet<(String, String)> = states.iter().cloned().collect();
    let input: BTreeSet<(String, String)> = raw
        .iter()
        .map(|r| (r.id.clone(), r.sync_id.clone()))
        .collect();
    let lost: Vec<_> = input.difference(&out).take(5).collect();
    let lost_count = input.difference(&out).count();

    // The latest user-state per user comes from the latest raw record of that user.
    let mut last_raw: BTreeMap<&str, &str> = BTreeMap::new();
    for r in &raw {
        last_raw.insert(&r.id, &r.sync_id);
    }
    let mut last_out: BTreeMap<&str, &str> = BTreeMap::new();
    for (id, sync) in &states {
        last_out.insert(id, sync);
    }
    for (id, sync) in &last_raw {
        assert_eq!(
            last_out.get(id),
            Some(sync),
            "user {id}: the latest user-state is not from the latest raw record"
        );
    }

    // Versions that reached user-state (through any of the syncs that carried them).
    let out_versions: BTreeSet<(&str, i64)> = raw
        .iter()
        .filter(|r| out.contains(&(r.id.clone(), r.sync_id.clone())))
        .map(|r| (r.id.as_str(), r.modstamp))
        .collect();
    let figures = Figures {
        input: raw_versions.len(),
        output: out_versions.len(),
        dlq: read_all(bootstrap, &format!("{prefix}salesforce.usage.dlq")).len(),
        duplicates: raw.len() - raw_versions.len(),
        lost: missing.len() + lost_count,
    };
    assert!(
        lost.is_empty(),
        "raw users missing from user-state: {lost:?}"
    );
    (figures, raw)
}

/// Waits until the raw topic holds every version, the User cursor reached the newest,
/// and user-state caught up with the raw topic.
fn wait_converged(
    bootstrap: &str,
    prefix: &str,
    expected: &BTreeSet<(String, i64)>,
    procs: &mut [&mut Proc],
) {
    let newest = expected.iter().map(|(_, s)| *s).max().unwrap();
    wait_for("ingest and transform to catch up", PATIENCE, || {
        assert_broker_sane();
        for p in procs.iter_mut() {
            p.assert_running();
        }
        let raw: BTreeSet<(String, i64)> = raw_users(bootstrap, prefix)
            .into_iter()
            .map(|r| (r.id, r.modstamp))
            .collect();
        if !expected.is_subset(&raw) {
            return None;
        }
        if user_cursors(bootstrap, prefix).last() < Some(&newest) {
            return None;
        }
        let input: BTreeSet<(String, String)> = raw_users(bootstrap, prefix)
            .into_iter()
            .map(|r| (r.id, r.sync_id))
            .collect();
        let out: BTreeSet<(String, String)> = user_states(bootstrap, prefix).into_iter().collect();
        input.is_subset(&out).then_some(())
    });
}

// ---------------------------------------------------------------------------------------
// 1. Broker down and back; down longer than message.timeout.ms
// ---------------------------------------------------------------------------------------

const MESSAGE_TIMEOUT_MS: u64 = 5000;

/// ingest and transform against a broker the test can take away (`down`) and bring back
/// (`up`), with a simulated org whose every user has a version of its own.
struct Outage<'a> {
    bootstrap: String,
    prefix: String,
    sim: Sim,
    ingest: Proc,
    ingest_url: String,
    transform: Proc,
    expected: BTreeSet<(String, i64)>,
    down: Box<dyn Fn() + 'a>,
    up: Box<dyn Fn() + 'a>,
}

impl<'a> Outage<'a> {
    fn start(
        bootstrap: &str,
        prefix: &str,
        users: usize,
        dir: &Path,
        down: Box<dyn Fn() + 'a>,
        up: Box<dyn Fn() + 'a>,
        broker_log: Option<std::path::PathBuf>,
    ) -> Self {
        *BROKER_LOG.lock().unwrap_or_else(|e| e.into_inner()) = broker_log;
        // Pages of 200, each data call held 100 ms: a sync takes seconds, so a cut lands
        // mid-stream.
        let sim = Sim::start(users, 200);
        sim.handle
            .with_faults(|f| f.data_call_delay = Some(Duration::from_millis(100)));
        let expected = sim.user_versions();
        let kafka = kafka_section(
            bootstrap,
            prefix,
            &format!("message_timeout_ms = {MESSAGE_TIMEOUT_MS}\n"),
        );
        let (ingest, ingest_url) = service(
            "ingest",
            &["ingest", "run"],
            &sim.ingest_config(&kafka, ""),
            dir,
        );
        // A short session: a member whose join the outage interrupted is replaced within
        // seconds instead of librdkafka's default 45 s.
        let transform_config = format!(
            "{kafka}[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\
             \"heartbeat.interval.ms\" = \"1000\"\n"
        );
        let (transform, _) = service("transform", &["transform"], &transform_config, dir);
        Outage {
            bootstrap: bootstrap.into(),
            prefix: prefix.into(),
            sim,
            ingest,
            ingest_url,
            transform,
            expected,
            down,
            up,
        }
    }

    fn converge(&mut self) {
        wait_converged(
            &self.bootstrap,
            &self.prefix,
            &self.expected,
            &mut [&mut self.ingest, &mut self.transform],
        );
    }

    /// Down and back within the message timeout, while the first (full) sync streams.
    fn down_and_back(&mut self) -> Figures {
        let calls = self.sim.handle.api_calls();
        wait_for("the first sync to be under way", PATIENCE, || {
            self.ingest.assert_running();
            (self.sim.handle.api_calls() >= calls + 6).then_some(())
        });
        (self.down)();
        std::thread::sleep(Duration::from_millis(MESSAGE_TIMEOUT_MS / 2)); // the outage
        (self.up)();
        self.converge();
        compare_stages(&self.bootstrap, &self.prefix, &self.expected).0
    }

    /// Down longer than message.timeout.ms while a third of the users change: the sync
    /// fails, its cursor stays, and the next sync after the broker is back sends them.
    fn down_past_the_message_timeout(&mut self) -> Figures {
        let (bootstrap, prefix) = (self.bootstrap.clone(), self.prefix.clone());
        let failed = "seatwatch_ingest_syncs_total";
        let failed_before = metric(&self.ingest_url, failed, "failed").unwrap();
        let raw_before = raw_users(&bootstrap, &prefix).len();
        let cursor_before = *user_cursors(&bootstrap, &prefix).last().unwrap();
        (self.down)();
        let changed = self.sim.restamp(|i| i % 3 == 0, Utc::now());
        self.expected.extend(self.sim.user_versions());
        wait_for("a sync to fail on the broker", PATIENCE, || {
            self.ingest.assert_running();
            metric(&self.ingest_url, failed, "failed").filter(|n| *n > failed_before)
        });
        let log = self.ingest.log_text();
        assert!(
            log.contains("broker"),
            "the failure names the broker:\n{log}"
        );
        (self.up)();
        self.converge();
        let (mut figures, raw) = compare_stages(&bootstrap, &prefix, &self.expected);
        // The cursor stayed where it was until the events came again and were acknowledged.
        let cursors = user_cursors(&bootstrap, &prefix);
        let after_cut = &cursors[cursors.iter().rposition(|c| *c == cursor_before).unwrap()..];
        assert!(after_cut.windows(2).all(|w| w[0] <= w[1]));
        let phase_two = raw[raw_before..].len();
        assert!(
            phase_two >= changed,
            "{phase_two} events for {changed} changes"
        );
        figures.input = changed;
        figures.output = raw[raw_before..]
            .iter()
            .map(|r| (&r.id, r.modstamp))
            .collect::<BTreeSet<_>>()
            .len();
        figures.duplicates = phase_two - figures.output;
        let failures = metric(&self.ingest_url, failed, "failed").unwrap();
        println!("  failed syncs counted by {failed}{{outcome=failed}}: {failures}");
        figures
    }
}

/// Both outages on librdkafka's mock cluster (in this process, listening on loopback):
/// `broker_down` disconnects the broker and refuses new connections until `broker_up`.
/// 2,000 users keep the raw partition below the mock's 5 MiB retention, which is checked.
#[test]
fn broker_down_and_back_then_down_past_the_message_timeout() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let prefix = format!("bm-{}.", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    for spec in seatwatch_common::kafka::Topics::new(&prefix).specs() {
        cluster.create_topic(&spec.name, 1, 1).unwrap();
    }
    let mut run = Outage::start(
        &bootstrap,
        &prefix,
        2000,
        dir.path(),
        Box::new(|| cluster.broker_down(1).unwrap()),
        Box::new(|| cluster.broker_up(1).unwrap()),
        None,
    );
    let figures = run.down_and_back();
    fault_line("broker_down_and_back", &figures);
    println!("  wall {:.1}s", started.elapsed().as_secs_f64());
    assert_eq!(figures.lost, 0);

    let second = Instant::now();
    let figures = run.down_past_the_message_timeout();
    fault_line("broker_down_past_message_timeout", &figures);
    println!("  wall {:.1}s", second.elapsed().as_secs_f64());
    assert_eq!(figures.lost, 0);
    let raw_bytes: usize = read_all(&bootstrap, &format!("{prefix}salesforce.usage.raw"))
        .iter()
        .map(|m| m.value.as_ref().map_or(0, Vec::len) + m.key.as_ref().map_or(0, Vec::len))
        .sum();
    assert!(
        raw_bytes < 5 * 1024 * 1024,
        "{raw_bytes} bytes: past the mock's retention, a loss would not be real"
    );
}

/// The same outages on tansu behind a [`Cutter`]. Ignored: tansu 0.6's SQLite storage
/// panics ("more or less than one row", `idempotent_message_check`) when an idempotent
/// producer's connection is cut mid-produce, intermittently on the short outage and each
/// time on the long one; after that every request fails. See RELIABILITY.md.
#[test]
#[ignore = "tansu 0.6 storage panics in idempotent_message_check after a cut"]
fn broker_down_and_back_then_down_past_the_message_timeout_on_tansu() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (broker, cutter) = Tansu::start_behind_cutter(dir.path());
    let prefix = create_topics(&broker.bootstrap, "bt");
    let mut run = Outage::start(
        &broker.bootstrap,
        &prefix,
        3000,
        dir.path(),
        Box::new(|| cutter.cut()),
        Box::new(|| cutter.restore()),
        Some(broker.proc.log.clone()),
    );
    let figures = run.down_and_back();
    fault_line("broker_down_and_back", &figures);
    assert_eq!(figures.lost, 0);
    let figures = run.down_past_the_message_timeout();
    fault_line("broker_down_past_message_timeout", &figures);
    println!("  wall {:.1}s", started.elapsed().as_secs_f64());
    assert_eq!(figures.lost, 0);
}

// ---------------------------------------------------------------------------------------
// Raw events written by the test itself, for the transform and alert scenarios
// ---------------------------------------------------------------------------------------

/// One message for the raw topic: key and value exactly as given (either may be absent).
#[derive(Clone, Debug)]
struct RawEvent {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
}

fn envelope(
    org: &str,
    sync: &str,
    object: SfObject,
    record: Option<&Json>,
    end: Option<SnapshotEnd>,
) -> Vec<u8> {
    let envelope = RawEnvelope {
        org_id: org.into(),
        sync_id: sync.into(),
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

fn licence_id(n: usize) -> String {
    format!("1005g{n:010}AAA")
}

/// A `UserLicense` record as Salesforce returns it; `used` is its version in this suite.
fn licence_record(n: usize, total: i64, used: i64) -> Json {
    json!({
        "attributes": {"type": "UserLicense"},
        "Id": licence_id(n),
        "Name": format!("Pool {n}"),
        "MasterLabel": format!("Pool {n}"),
        "LicenseDefinitionKey": format!("POOL{n}"),
        "Status": "Active",
        "TotalLicenses": total,
        "UsedLicenses": used,
    })
}

fn licence_event(org: &str, sync: &str, record: &Json) -> RawEvent {
    let id = record["Id"].as_str().unwrap();
    RawEvent {
        key: Some(format!("{org}/UserLicense/{id}").into_bytes()),
        value: Some(envelope(
            org,
            sync,
            SfObject::UserLicense,
            Some(record),
            None,
        )),
    }
}

fn incremental_end(org: &str, sync: &str, records: u64) -> RawEvent {
    let end = SnapshotEnd {
        mode: SnapshotMode::Incremental,
        records,
    };
    RawEvent {
        key: Some(format!("{org}/UserLicense").into_bytes()),
        value: Some(envelope(org, sync, SfObject::UserLicense, None, Some(end))),
    }
}

/// One sync of `licences` licences of `org`: every `used` unique to (batch, licence), so
/// each raw record is one version; then the incremental end marker.
fn licence_batch(org: &str, batch: usize, licences: usize) -> Vec<RawEvent> {
    let sync = format!("sync-{batch}");
    let mut events: Vec<RawEvent> = (0..licences)
        .map(|n| {
            let used = (batch * 10_000 + n) as i64;
            licence_event(org, &sync, &licence_record(n, 10_000_000, used))
        })
        .collect();
    events.push(incremental_end(org, &sync, licences as u64));
    events
}

/// Counts the deliveries the broker refused.
#[derive(Default)]
struct Acks {
    failed: AtomicUsize,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Produces `events` to one partition of `topic`, in order, and waits for every ack.
fn produce(bootstrap: &str, topic: &str, partition: i32, events: &[RawEvent]) {
    let producer: BaseProducer<Acks> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create_with_context(Acks::default())
        .unwrap();
    for event in events {
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).partition(partition);
        if let Some(key) = &event.key {
            record = record.key(key.as_slice());
        }
        if let Some(value) = &event.value {
            record = record.payload(value.as_slice());
        }
        let mut record = record;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, back)) => {
                    assert!(
                        matches!(
                            e,
                            KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
                        ),
                        "producing to {topic}: {e}"
                    );
                    producer.poll(Duration::from_millis(50));
                    record = back;
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    assert_eq!(
        producer.context().failed.load(Ordering::SeqCst),
        0,
        "the broker refused raw events"
    );
}

/// The offset `group` committed on one partition of `topic` (0 when none yet).
fn committed(bootstrap: &str, group: &str, topic: &str, partition: i32) -> Option<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .ok()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let offsets = consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .ok()?;
    match offsets.find_partition(topic, partition)?.offset() {
        Offset::Offset(n) => Some(n),
        _ => Some(0),
    }
}

/// A transform configuration: its own group, commits every `flush_ms`, and a short session
/// so that a SIGKILLed member's partitions move within seconds.
fn transform_config(bootstrap: &str, prefix: &str, group: &str, flush_ms: u64) -> String {
    format!(
        "group_id = \"{group}\"\nflush_interval_ms = {flush_ms}\n{}\
         [kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\
         \"heartbeat.interval.ms\" = \"1000\"\n",
        kafka_section(bootstrap, prefix, "")
    )
}

/// A raw `UserLicense` record as read back: offset, output key and version (`used`).
#[derive(Clone, Debug)]
struct RawLicence {
    partition: i32,
    offset: i64,
    key: String,
    used: i64,
}

fn raw_licences(bootstrap: &str, prefix: &str) -> Vec<RawLicence> {
    read_all(bootstrap, &format!("{prefix}salesforce.usage.raw"))
        .into_iter()
        .filter_map(|m| {
            let envelope: RawEnvelope = serde_json::from_slice(m.value.as_deref()?).ok()?;
            if envelope.object != SfObject::UserLicense || envelope.kind != EnvelopeKind::Record {
                return None;
            }
            let record: Json = serde_json::from_str(envelope.record?.get()).ok()?;
            Some(RawLicence {
                partition: m.partition,
                offset: m.offset,
                key: format!("{}/user/{}", envelope.org_id, record["Id"].as_str()?),
                used: record["UsedLicenses"].as_i64()?,
            })
        })
        .collect()
}

/// Every `seats.license-state` value as (key, used, raw bytes), in offset order.
fn licence_states(bootstrap: &str, prefix: &str) -> Vec<(String, i64, Vec<u8>)> {
    read_all(bootstrap, &format!("{prefix}seats.license-state"))
        .into_iter()
        .filter_map(|m| {
            let key = m.key_str();
            let value = m.value?;
            let state = LicenseState::from_avro(&value).unwrap();
            Some((key, state.used, value))
        })
        .collect()
}

/// Compares raw licences with licence state: every raw version is in the output, the
/// latest state per key is the latest raw record's, and counts the replays.
fn compare_licences(bootstrap: &str, prefix: &str) -> (Figures, Vec<RawLicence>, Vec<i64>) {
    let raw = raw_licences(bootstrap, prefix);
    let states = licence_states(bootstrap, prefix);
    let input: BTreeSet<(String, i64)> = raw.iter().map(|r| (r.key.clone(), r.used)).collect();
    assert_eq!(
        input.len(),
        raw.len(),
        "every raw record is a version of its own"
    );
    let output: BTreeSet<(String, i64)> = states.iter().map(|(k, u, _)| (k.clone(), *u)).collect();
    let lost: Vec<_> = input.difference(&output).collect();
    let mut last_raw: BTreeMap<&str, i64> = BTreeMap::new();
    for r in &raw {
        last_raw.insert(&r.key, r.used);
    }
    let mut last_out: BTreeMap<&str, i64> = BTreeMap::new();
    for (key, used, _) in &states {
        last_out.insert(key, *used);
    }
    assert_eq!(
        last_out, last_raw,
        "the compacted value per key is not the latest raw record's"
    );
    // Versions written more than once (replays after a kill).
    let mut seen = BTreeSet::new();
    let replayed: Vec<i64> = states
        .iter()
        .filter(|(k, u, _)| !seen.insert((k.clone(), *u)))
        .map(|(_, u, _)| *u)
        .collect();
    let figures = Figures {
        input: input.len(),
        output: output.len(),
        dlq: read_all(bootstrap, &format!("{prefix}salesforce.usage.dlq")).len(),
        duplicates: replayed.len(),
        lost: lost.len(),
    };
    assert!(
        lost.is_empty(),
        "raw versions missing from license-state: {lost:?}"
    );
    (figures, raw, replayed)
}

/// Waits until `group` committed every partition of the raw topic up to its end, keeping
/// `procs` alive; returns the high watermarks.
fn wait_committed_to_end(
    bootstrap: &str,
    prefix: &str,
    group: &str,
    partitions: i32,
    procs: &mut [&mut Proc],
) -> Vec<i64> {
    let raw = format!("{prefix}salesforce.usage.raw");
    wait_for(
        &format!("{group} to commit the whole raw topic"),
        PATIENCE,
        || {
            for p in procs.iter_mut() {
                p.assert_running();
            }
            let mut ends = Vec::new();
            for partition in 0..partitions {
                let high = high_watermark(bootstrap, &raw, partition)?;
                let done = committed(bootstrap, group, &raw, partition)?;
                assert!(done <= high, "committed {done} past the end {high}");
                if done < high {
                    return None;
                }
                ends.push(high);
            }
            Some(ends)
        },
    )
}

// ---------------------------------------------------------------------------------------
// 2. transform SIGKILLed after producing, before committing; restarted
// ---------------------------------------------------------------------------------------

#[test]
fn transform_sigkill_after_producing_before_committing_resumes_from_its_commit() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let broker = Tansu::start(dir.path());
    let bootstrap = broker.bootstrap.clone();
    let prefix = create_topics(&bootstrap, "tk");
    let raw_topic = format!("{prefix}salesforce.usage.raw");
    let state_topic = format!("{prefix}seats.license-state");
    const LICENCES: usize = 300;
    const BATCHES: usize = 8;

    let group = "fault-transform-kill";
    // Commits once a second: outputs are produced well before their offsets are committed.
    let config = transform_config(&bootstrap, &prefix, group, 1000);
    let (mut transform, _) = service("transform-1", &["transform"], &config, dir.path());

    // Batch by batch until transform has written outputs past its committed offset; then
    // SIGKILL it right there. Each batch is LICENCES records and one end marker.
    let records_before = |offset: i64| offset - offset / (LICENCES as i64 + 1);
    let mut batch = 0;
    let killed_at = loop {
        assert!(
            batch < BATCHES,
            "never caught transform between output and commit"
        );
        produce(
            &bootstrap,
            &raw_topic,
            0,
            &licence_batch(ORG, batch, LICENCES),
        );
        batch += 1;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut caught = None;
        while Instant::now() < deadline {
            transform.assert_running();
            // Outputs first: a commit landing between the two reads then only hides a
            // chance, it never fakes one.
            let outputs = high_watermark(&bootstrap, &state_topic, 0).unwrap_or(0);
            let done = committed(&bootstrap, group, &raw_topic, 0).unwrap_or(0);
            // After a first commit, so that resuming from it differs from starting over.
            if done > 0 && outputs > records_before(done) {
                hard_kill(&mut transform);
                // What it committed is final now: read it again after the kill.
                caught = Some(committed(&bootstrap, group, &raw_topic, 0).unwrap());
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(offset) = caught {
            break offset;
        }
    };
    let outputs_at_kill = high_watermark(&bootstrap, &state_topic, 0).unwrap();
    assert!(
        outputs_at_kill > records_before(killed_at),
        "killed with {outputs_at_kill} outputs and a commit at {killed_at}: nothing to replay"
    );

    // The rest arrives while it is down and after its restart.
    produce(
        &bootstrap,
        &raw_topic,
        0,
        &licence_batch(ORG, batch, LICENCES),
    );
    let (mut transform, _) = service("transform-2", &["transform"], &config, dir.path());
    for later in batch + 1..BATCHES {
        produce(
            &bootstrap,
            &raw_topic,
            0,
            &licence_batch(ORG, later, LICENCES),
        );
    }
    wait_committed_to_end(&bootstrap, &prefix, group, 1, &mut [&mut transform]);
    // The restart resumed from the committed offset: the outputs after it come again.
    let (figures, raw, replayed) = compare_licences(&bootstrap, &prefix);
    assert_eq!(raw.len(), BATCHES * LICENCES);
    let offset_of: BTreeMap<i64, i64> = raw.iter().map(|r| (r.used, r.offset)).collect();
    assert!(
        !replayed.is_empty(),
        "a kill between output and commit must replay"
    );
    for used in &replayed {
        assert!(
            offset_of[used] >= killed_at,
            "offset {} was replayed though committed before the kill ({killed_at})",
            offset_of[used]
        );
    }
    // The group's offsets never jumped past an event without its output.
    let high = high_watermark(&bootstrap, &raw_topic, 0).unwrap();
    assert_eq!(committed(&bootstrap, group, &raw_topic, 0), Some(high));
    assert_eq!(figures.dlq, 0, "nothing here is malformed");
    fault_line("transform_sigkill", &figures);
    println!(
        "  killed with commit at {killed_at}, {outputs_at_kill} outputs; wall {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(figures.lost, 0);
    transform.assert_running();
}

/// The same kill, exactly placed. A first transform commits the first batch and stops
/// cleanly; a second, built with fail points and armed, aborts itself at its first commit
/// that would move the offsets: after the outputs of that flush are acknowledged, before
/// the commit. Whatever it had processed by then, a third transform must resume from the
/// first one's commit and produce again exactly the outputs the aborted one wrote.
#[cfg(feature = "failpoints")]
#[test]
fn transform_aborted_at_its_commit_fail_point_replays_exactly_what_was_uncommitted() {
    use std::os::unix::process::ExitStatusExt;

    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let broker = Tansu::start(dir.path());
    let bootstrap = broker.bootstrap.clone();
    let prefix = create_topics(&bootstrap, "tf");
    let raw_topic = format!("{prefix}salesforce.usage.raw");
    let state_topic = format!("{prefix}seats.license-state");
    const LICENCES: usize = 300;
    const BATCHES: usize = 4;
    let group = "fault-transform-fail-point";
    let config = transform_config(&bootstrap, &prefix, group, 200);

    // The first batch, transformed and committed by a transform that stops cleanly.
    let (mut first, _) = service("transform-fp-1", &["transform"], &config, dir.path());
    produce(&bootstrap, &raw_topic, 0, &licence_batch(ORG, 0, LICENCES));
    let ends = wait_committed_to_end(&bootstrap, &prefix, group, 1, &mut [&mut first]);
    assert!(first.terminate(PATIENCE).success());
    let commit = ends[0];

    // The second batch, read by an armed transform that aborts instead of committing.
    produce(&bootstrap, &raw_topic, 0, &licence_batch(ORG, 1, LICENCES));
    let config_path = dir.path().join("transform-fp.toml");
    std::fs::write(&config_path, &config).unwrap();
    let armed = [("FAILPOINTS", "transform-before-commit=return")];
    let (mut aborted, _) = spawn_service_with(
        "transform-fp-2",
        &["transform"],
        &config_path,
        dir.path(),
        &armed,
    );
    let status = wait_for("transform to abort at its fail point", PATIENCE, || {
        aborted.child.try_wait().unwrap()
    });
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
    assert!(
        aborted.log_text().contains("transform-before-commit"),
        "the abort was the fail point's"
    );
    assert_eq!(
        committed(&bootstrap, group, &raw_topic, 0),
        Some(commit),
        "nothing was committed past the first transform's commit"
    );
    let outputs_at_abort = high_watermark(&bootstrap, &state_topic, 0).unwrap();
    let uncommitted = usize::try_from(outputs_at_abort).unwrap() - LICENCES;
    assert!(
        (1..=LICENCES).contains(&uncommitted),
        "the aborted transform's outputs were acknowledged: {outputs_at_abort} in all"
    );

    // A third transform, not armed, with the rest arriving meanwhile.
    let (mut third, _) = service("transform-fp-3", &["transform"], &config, dir.path());
    for batch in 2..BATCHES {
        produce(
            &bootstrap,
            &raw_topic,
            0,
            &licence_batch(ORG, batch, LICENCES),
        );
    }
    wait_committed_to_end(&bootstrap, &prefix, group, 1, &mut [&mut third]);

    // The replay is the aborted transform's outputs, every one of them and nothing else:
    // the first `uncommitted` records of the second batch.
    let (figures, raw, replayed) = compare_licences(&bootstrap, &prefix);
    assert_eq!(raw.len(), BATCHES * LICENCES);
    let expected: BTreeSet<i64> = (0..uncommitted).map(|n| (10_000 + n) as i64).collect();
    assert_eq!(replayed.len(), expected.len(), "each replayed once");
    let replayed: BTreeSet<i64> = replayed.into_iter().collect();
    assert_eq!(replayed, expected);
    assert_eq!(figures.dlq, 0, "nothing here is malformed");
    fault_line("transform_fail_point_abort", &figures);
    println!(
        "  aborted with the commit at {commit} and {uncommitted} outputs after it; wall {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(figures.lost, 0);
    third.assert_running();
}

// ---------------------------------------------------------------------------------------
// 6. Rebalance mid-stream: a second transform joins, then is SIGKILLed
// ---------------------------------------------------------------------------------------

/// Two org ids, one on each of two partitions.
fn orgs_on_two_partitions() -> [String; 2] {
    let mut found: [Option<String>; 2] = [None, None];
    for n in 0.. {
        let org = format!("00D5g{n:010}AAA");
        let partition = seatwatch_common::kafka::partition_for(&org, 2) as usize;
        found[partition].get_or_insert(org);
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    found.map(Option::unwrap)
}

#[test]
fn rebalance_mid_stream_a_second_transform_joins_and_is_killed() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let broker = Tansu::start(dir.path());
    let bootstrap = broker.bootstrap.clone();
    let prefix = create_topics_with(&bootstrap, "rb", 2);
    let raw_topic = format!("{prefix}salesforce.usage.raw");
    const LICENCES: usize = 200;
    let orgs = orgs_on_two_partitions();
    let group = "fault-transform-rebalance";
    let config = transform_config(&bootstrap, &prefix, group, 200);
    let assigned = |url: &str| metric(url, "seatwatch_transform_assigned_partitions", "");
    let produce_batch = |batch: usize| {
        for (partition, org) in orgs.iter().enumerate() {
            let events = licence_batch(org, batch, LICENCES);
            produce(&bootstrap, &raw_topic, partition as i32, &events);
        }
    };

    let (mut first, first_url) = service("transform-a", &["transform"], &config, dir.path());
    wait_for(
        "the first transform to own both partitions",
        PATIENCE,
        || {
            first.assert_running();
            assigned(&first_url).filter(|n| *n == 2.0)
        },
    );
    produce_batch(0);

    // A second member joins mid-stream: the partitions are split. It never flushes on its
    // own (once a minute), so all it does before the SIGKILL is uncommitted.
    let lazy = transform_config(&bootstrap, &prefix, group, 60_000);
    let (mut second, second_url) = service("transform-b", &["transform"], &lazy, dir.path());
    produce_batch(1);
    wait_for("the partitions to be split", PATIENCE, || {
        first.assert_running();
        second.assert_running();
        // The lazy member updates its gauge only when it flushes: ask the first one.
        assigned(&first_url).filter(|a| *a == 1.0)
    });
    produce_batch(2);
    // The second member has work of its own when it dies, without leaving the group.
    let second_records = wait_for("the second member to process records", PATIENCE, || {
        second.assert_running();
        metric(&second_url, "seatwatch_transform_records_total", "").filter(|n| *n > 0.0)
    });
    hard_kill(&mut second);
    produce_batch(3);
    wait_for(
        "the survivor to own both partitions again",
        PATIENCE,
        || {
            first.assert_running();
            assigned(&first_url).filter(|n| *n == 2.0)
        },
    );
    produce_batch(4);
    let ends = wait_committed_to_end(&bootstrap, &prefix, group, 2, &mut [&mut first]);

    let (figures, raw, replayed) = compare_licences(&bootstrap, &prefix);
    assert_eq!(raw.len(), 5 * 2 * LICENCES);
    assert!(
        !replayed.is_empty(),
        "what the killed member did uncommitted is done again by the survivor"
    );
    for partition in 0..2 {
        assert!(
            raw.iter().any(|r| r.partition == partition),
            "partition {partition} carried no events"
        );
    }
    assert_eq!(figures.dlq, 0);
    fault_line("rebalance", &figures);
    println!(
        "  second member processed {second_records} records before SIGKILL; raw ends {ends:?}; \
         wall {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(figures.lost, 0);
    first.assert_running();
}

// ---------------------------------------------------------------------------------------
// 5. Malformed and hostile input: each offset ends in exactly one place
// ---------------------------------------------------------------------------------------

#[test]
fn malformed_and_hostile_input_each_offset_ends_in_exactly_one_place() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let broker = Tansu::start(dir.path());
    let bootstrap = broker.bootstrap.clone();
    let prefix = create_topics(&bootstrap, "mf");
    let raw_topic = format!("{prefix}salesforce.usage.raw");
    let sync = "sync-hostile";
    let key = |id: &str| Some(format!("{ORG}/UserLicense/{id}").into_bytes());
    let good = |n: usize| licence_event(ORG, sync, &licence_record(n, 100, n as i64));
    let with_record = |record: Json| {
        let id = record["Id"].as_str().unwrap_or("nobody").to_owned();
        RawEvent {
            key: key(&id),
            value: Some(envelope(
                ORG,
                sync,
                SfObject::UserLicense,
                Some(&record),
                None,
            )),
        }
    };
    let raw_value = |value: Vec<u8>| RawEvent {
        key: key(&licence_id(999)),
        value: Some(value),
    };

    let mut missing = licence_record(101, 100, 1);
    missing.as_object_mut().unwrap().remove("UsedLicenses");
    let mut wrong_type = licence_record(102, 100, 1);
    wrong_type["TotalLicenses"] = json!("lots");
    let mut array_for_number = licence_record(103, 100, 1);
    array_for_number["UsedLicenses"] = json!([1, 2]);
    let mut huge_valid = licence_record(104, 100, 104);
    huge_valid["Name"] = json!("n".repeat(200_000));
    let valid_bytes = good(105).value.unwrap();
    let mut unknown_object: Json = serde_json::from_slice(&valid_bytes).unwrap();
    unknown_object["object"] = json!("Opportunity");
    let mut no_org: Json = serde_json::from_slice(&valid_bytes).unwrap();
    no_org.as_object_mut().unwrap().remove("org_id");
    let mut invalid_utf8_in_string = br#"{"org_id":""#.to_vec();
    invalid_utf8_in_string.extend_from_slice(&[0xC3, 0x28, 0xFF]);
    invalid_utf8_in_string.extend_from_slice(br#"","sync_id":"s"}"#);
    let foreign_avro = LicenseState {
        org_id: ORG.into(),
        kind: LicenseKind::User,
        license_id: licence_id(1),
        name: "Avro".into(),
        label: "Avro".into(),
        definition_key: None,
        status: seatwatch_schemas::LicenseStatus::Active,
        total: Some(1),
        used: 1,
        available: Some(0),
        utilization: Some(1.0),
        expires_at: None,
        observed_at: 0,
        sync_id: "x".into(),
    }
    .to_avro()
    .unwrap();

    // (what, event, accepted as state?) in the order written, good records in between.
    let hostile: Vec<(&str, RawEvent)> = vec![
        ("invalid JSON", raw_value(b"{not json".to_vec())),
        ("empty value", raw_value(Vec::new())),
        (
            "null value, no key",
            RawEvent {
                key: None,
                value: None,
            },
        ),
        (
            "JSON of the wrong shape",
            raw_value(b"[42, \"x\"]".to_vec()),
        ),
        ("missing field", with_record(missing)),
        ("wrong type", with_record(wrong_type)),
        ("array for a number", with_record(array_for_number)),
        (
            "envelope without org_id",
            raw_value(serde_json::to_vec(&no_org).unwrap()),
        ),
        (
            "unknown object",
            raw_value(serde_json::to_vec(&unknown_object).unwrap()),
        ),
        (
            "key not matching the record",
            RawEvent {
                key: Some(b"someone/else".to_vec()),
                value: Some(valid_bytes.clone()),
            },
        ),
        ("invalid UTF-8", raw_value(vec![0xFF, 0xFE, 0xFD, b'{'])),
        (
            "invalid UTF-8 in a string",
            raw_value(invalid_utf8_in_string),
        ),
        (
            "truncated envelope",
            raw_value(valid_bytes[..valid_bytes.len() / 2].to_vec()),
        ),
        ("foreign Avro", raw_value(foreign_avro)),
        (
            "200,000 nested arrays",
            raw_value("[".repeat(200_000).into_bytes()),
        ),
        ("700 KB of garbage", raw_value(vec![b'x'; 700_000])),
        (
            "binary key and value",
            RawEvent {
                key: Some(vec![0, 159, 146, 150]),
                value: Some((0..=255u8).collect()),
            },
        ),
    ];
    let mut events = Vec::new();
    let mut expected_dlq: BTreeMap<i64, &str> = BTreeMap::new();
    let mut expected_out: BTreeMap<i64, i64> = BTreeMap::new(); // offset → used
    for (n, (what, event)) in hostile.iter().enumerate() {
        expected_out.insert(events.len() as i64, n as i64);
        events.push(good(n));
        expected_dlq.insert(events.len() as i64, what);
        events.push(event.clone());
    }
    expected_out.insert(events.len() as i64, 104);
    events.push(with_record(huge_valid));
    let n_records = events.len();
    events.push(incremental_end(ORG, sync, n_records as u64));
    produce(&bootstrap, &raw_topic, 0, &events);

    let group = "fault-transform-hostile";
    let config = transform_config(&bootstrap, &prefix, group, 100);
    let (mut transform, transform_url) = service("transform", &["transform"], &config, dir.path());
    let ends = wait_committed_to_end(&bootstrap, &prefix, group, 1, &mut [&mut transform]);
    assert_eq!(
        ends,
        vec![events.len() as i64],
        "no stall: the commit passed every event"
    );

    // Outputs: good records by their version.
    let states = licence_states(&bootstrap, &prefix);
    let mut places: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
    for (offset, used) in &expected_out {
        let copies = states.iter().filter(|(_, u, _)| u == used).count();
        for _ in 0..copies {
            places.entry(*offset).or_default().push("state");
        }
    }
    // Dead letters: by the source offset each names, with the original bytes.
    let letters = read_all(&bootstrap, &format!("{prefix}salesforce.usage.dlq"));
    for letter in &letters {
        let offset: i64 = letter
            .header("seatwatch.source.offset")
            .and_then(|o| o.parse().ok())
            .expect("a dead letter names its source offset");
        places.entry(offset).or_default().push("dlq");
        let what = expected_dlq
            .get(&offset)
            .copied()
            .unwrap_or("a good record");
        let original = &events[offset as usize];
        assert_eq!(letter.key, original.key, "{what}: the key is kept");
        match letter.header("seatwatch.truncated.from.bytes") {
            Some(length) => {
                let whole = original.value.as_deref().unwrap();
                assert_eq!(length, whole.len().to_string(), "{what}");
                let head = letter.value.as_deref().unwrap();
                assert!(whole.starts_with(head) && !head.is_empty(), "{what}");
            }
            None => assert_eq!(letter.value, original.value, "{what}: original bytes"),
        }
        assert_eq!(
            letter.header("seatwatch.stage").as_deref(),
            Some("transform")
        );
        assert_eq!(
            letter.header("seatwatch.source.topic"),
            Some(raw_topic.clone())
        );
        assert_eq!(
            letter.header("seatwatch.source.partition").as_deref(),
            Some("0")
        );
        let class = letter.header("seatwatch.error.class").unwrap_or_default();
        let message = letter.header("seatwatch.error.message").unwrap_or_default();
        assert!(!class.is_empty() && !message.is_empty(), "{what}: a reason");
        println!("  {offset:>3} {what:<32} → dlq {class}: {:.80}", message);
    }
    let mut wrong = Vec::new();
    for offset in expected_out.keys().chain(expected_dlq.keys()) {
        let got = places.get(offset).cloned().unwrap_or_default();
        let want = if expected_dlq.contains_key(offset) {
            "dlq"
        } else {
            "state"
        };
        if got != [want] {
            wrong.push((*offset, expected_dlq.get(offset).copied(), got));
        }
    }
    let strays: Vec<_> = places
        .keys()
        .filter(|o| !expected_out.contains_key(o) && !expected_dlq.contains_key(o))
        .collect();
    let duplicates = places.values().map(|p| p.len().saturating_sub(1)).sum();
    let figures = Figures {
        input: expected_out.len() + expected_dlq.len(),
        output: states.len(),
        dlq: letters.len(),
        duplicates,
        lost: expected_out
            .keys()
            .chain(expected_dlq.keys())
            .filter(|o| !places.contains_key(o))
            .count(),
    };
    fault_line("malformed_input", &figures);
    println!("  wall {:.1}s", started.elapsed().as_secs_f64());
    assert!(
        wrong.is_empty(),
        "offsets not in exactly their one place: {wrong:?}"
    );
    assert!(
        strays.is_empty(),
        "outputs naming offsets never written: {strays:?}"
    );
    assert_eq!(figures.lost, 0);
    let counted = metric(&transform_url, "seatwatch_transform_dlq_total", "");
    assert_eq!(
        counted,
        Some(expected_dlq.len() as f64),
        "the DLQ metric counts each"
    );
    transform.assert_running();
    assert!(!transform.log_text().contains("panicked"), "no panic");
}

// ---------------------------------------------------------------------------------------
// 3. alert SIGKILLed between a notification and its offset; receiver 500, then timing
//    out, then recovering. 4. Duplicate deliveries and replays.
// ---------------------------------------------------------------------------------------

const ACCEPT: usize = 0;
const FAIL_500: usize = 1;
const HANG: usize = 2;
/// Takes the notification, then SIGKILLs the alert process before answering: the receiver
/// has it and alert never learns, so its offset is not committed.
const KILL_ON_ACCEPT: usize = 3;

/// The webhook receiver: what it accepted, how it answers now, and whom to kill.
#[derive(Clone, Default)]
struct Receiver {
    accepted: Arc<Mutex<Vec<Json>>>,
    mode: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    hung: Arc<AtomicUsize>,
    alert_pid: Arc<AtomicI32>,
}

impl Receiver {
    fn set(&self, mode: usize) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn accepted(&self) -> Vec<Json> {
        self.accepted.lock().unwrap().clone()
    }

    fn dedup_keys(&self) -> Vec<String> {
        self.accepted()
            .iter()
            .map(|body| body["dedup_key"].as_str().unwrap().to_owned())
            .collect()
    }

    /// (pool, status) of every accepted utilisation transition, de-duplicated.
    fn transitions(&self) -> BTreeSet<(String, String)> {
        self.accepted()
            .into_iter()
            .map(|body| serde_json::from_value::<Alert>(body).unwrap())
            .filter(|alert| alert.rule == "utilization")
            .map(|alert| (alert.pool.unwrap_or_default(), alert.status.as_str().into()))
            .collect()
    }
}

async fn receive(State(receiver): State<Receiver>, body: axum::body::Bytes) -> StatusCode {
    match receiver.mode.load(Ordering::SeqCst) {
        FAIL_500 => {
            receiver.refused.fetch_add(1, Ordering::SeqCst);
            StatusCode::INTERNAL_SERVER_ERROR
        }
        HANG => {
            receiver.hung.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(3)).await;
            StatusCode::GATEWAY_TIMEOUT
        }
        mode => {
            let body: Json = serde_json::from_slice(&body).unwrap();
            receiver.accepted.lock().unwrap().push(body);
            if mode == KILL_ON_ACCEPT {
                receiver.set(ACCEPT);
                let pid = receiver.alert_pid.load(Ordering::SeqCst);
                assert!(pid > 0, "no alert process to kill");
                // SAFETY: kill(2) on the alert child the test spawned and has not reaped.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            StatusCode::OK
        }
    }
}

fn start_receiver() -> (String, Receiver) {
    let receiver = Receiver::default();
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(receiver.clone());
    let addr = serve_on_loopback(app);
    (format!("http://{addr}/hook"), receiver)
}

fn alert_config(bootstrap: &str, prefix: &str, hook: &str) -> String {
    format!(
        "evaluate_interval_secs = 1\nrepeat_interval_secs = 0\n{}\
         [kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\
         \"heartbeat.interval.ms\" = \"1000\"\n\
         [webhook]\nurl = \"{hook}\"\ntimeout_secs = 1\n",
        kafka_section(bootstrap, prefix, "")
    )
}

fn start_alert(config: &str, dir: &Path, name: &str, receiver: &Receiver) -> (Proc, String) {
    let (mut proc, url) = service(name, &["alert"], config, dir);
    receiver
        .alert_pid
        .store(proc.child.id() as i32, Ordering::SeqCst);
    wait_for("the alert service to be ready", PATIENCE, || {
        proc.assert_running();
        http_get(&format!("{url}/readyz")).filter(|(status, _)| *status == 200)
    });
    (proc, url)
}

/// Every transition in `seats.alerts`.
fn alerts_topic(bootstrap: &str, prefix: &str) -> Vec<Alert> {
    read_all(bootstrap, &format!("{prefix}seats.alerts"))
        .into_iter()
        .filter_map(|m| Alert::from_avro(m.value.as_deref()?).ok())
        .collect()
}

/// Waits until alert has evaluated twice more.
fn two_more_evaluations(ops_url: &str) {
    let name = "seatwatch_alert_evaluations_total";
    let start = metric(ops_url, name, "").unwrap_or(0.0);
    wait_for("two more evaluations", PATIENCE, || {
        metric(ops_url, name, "").filter(|count| *count >= start + 2.0)
    });
}

fn pool_state(n: usize, used: i64, at: i64) -> LicenseState {
    LicenseState {
        org_id: ORG.into(),
        kind: LicenseKind::User,
        license_id: licence_id(n),
        name: format!("Pool {n}"),
        label: format!("Pool {n}"),
        definition_key: None,
        status: seatwatch_schemas::LicenseStatus::Active,
        total: Some(100),
        used,
        available: Some(100 - used),
        utilization: Some(used as f64 / 100.0),
        expires_at: None,
        observed_at: at,
        sync_id: format!("sync-{at}"),
    }
}

fn write_states(bootstrap: &str, prefix: &str, states: &[LicenseState]) {
    let events: Vec<RawEvent> = states
        .iter()
        .map(|s| RawEvent {
            key: Some(s.key().into_bytes()),
            value: Some(s.to_avro().unwrap()),
        })
        .collect();
    produce(
        bootstrap,
        &format!("{prefix}seats.license-state"),
        0,
        &events,
    );
}

/// Checks the receiver against the alerts topic: every transition there was delivered at
/// least once, duplicates of one transition share one dedup key, and nothing else came.
/// Returns (distinct transitions delivered, duplicate deliveries, transitions lost).
fn compare_notifications(receiver: &Receiver, written: &[Alert]) -> (usize, usize, usize) {
    let sent: BTreeSet<String> = written.iter().map(dedup_key).collect();
    let keys = receiver.dedup_keys();
    let got: BTreeSet<String> = keys.iter().cloned().collect();
    let lost = sent.difference(&got).count();
    assert_eq!(
        got, sent,
        "the receiver's de-duplicated set is the alerts topic's"
    );
    // One dedup key per transition (fingerprint, status, start), however often delivered.
    let mut per_transition: BTreeMap<(String, String, i64), BTreeSet<String>> = BTreeMap::new();
    for body in receiver.accepted() {
        let alert: Alert = serde_json::from_value(body.clone()).unwrap();
        per_transition
            .entry((
                alert.fingerprint.clone(),
                alert.status.as_str().into(),
                alert.starts_at,
            ))
            .or_default()
            .insert(body["dedup_key"].as_str().unwrap().to_owned());
    }
    for (transition, keys) in &per_transition {
        assert_eq!(
            keys.len(),
            1,
            "{transition:?} came under several keys: {keys:?}"
        );
    }
    (got.len(), keys.len() - got.len(), lost)
}

fn dedup_key(alert: &Alert) -> String {
    seatwatch_alert::notify::dedup_key(alert)
}

#[test]
fn alert_sigkill_between_notification_and_commit_with_receiver_500_then_timeouts() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let broker = Tansu::start(dir.path());
    let bootstrap = broker.bootstrap.clone();
    let prefix = create_topics(&bootstrap, "ak");
    let (hook, receiver) = start_receiver();
    let config = alert_config(&bootstrap, &prefix, &hook);
    const POOLS: usize = 4;

    // Four pools above the 90 % threshold; the receiver answers 500.
    receiver.set(FAIL_500);
    let now = chrono::Utc::now().timestamp_millis();
    let hot: Vec<LicenseState> = (0..POOLS).map(|n| pool_state(n, 95, now)).collect();
    write_states(&bootstrap, &prefix, &hot);
    let (mut alert, _) = start_alert(&config, dir.path(), "alert-1", &receiver);
    wait_for("the notifier to be refused twice", PATIENCE, || {
        alert.assert_running();
        (receiver.refused.load(Ordering::SeqCst) >= 2).then_some(())
    });
    // Then it times out (the receiver hangs past timeout_secs).
    receiver.set(HANG);
    wait_for("a request to time out", PATIENCE, || {
        alert.assert_running();
        (receiver.hung.load(Ordering::SeqCst) >= 1).then_some(())
    });
    // Then it takes one, and alert dies before it hears the answer.
    receiver.set(KILL_ON_ACCEPT);
    wait_for("alert to be killed on acceptance", PATIENCE, || {
        alert.child.try_wait().unwrap()
    });
    assert_eq!(receiver.accepted().len(), 1);

    // While alert is down two pools drop below the band: they resolve after the restart.
    let later = chrono::Utc::now().timestamp_millis();
    write_states(
        &bootstrap,
        &prefix,
        &[pool_state(0, 50, later), pool_state(1, 50, later)],
    );
    let (mut alert, ops) = start_alert(&config, dir.path(), "alert-2", &receiver);
    let expected: BTreeSet<(String, String)> = (0..POOLS)
        .map(|n| (format!("Pool {n}"), "firing".to_owned()))
        .chain((0..2).map(|n| (format!("Pool {n}"), "resolved".to_owned())))
        .collect();
    wait_for("every transition at the receiver", PATIENCE, || {
        alert.assert_running();
        (receiver.transitions() == expected).then_some(())
    });
    two_more_evaluations(&ops);
    wait_for("the notifier to finish the topic", PATIENCE, || {
        let written = alerts_topic(&bootstrap, &prefix);
        let sent: BTreeSet<String> = written.iter().map(dedup_key).collect();
        let got: BTreeSet<String> = receiver.dedup_keys().into_iter().collect();
        (sent == got).then_some(())
    });

    let written = alerts_topic(&bootstrap, &prefix);
    let utilisation = written.iter().filter(|a| a.rule == "utilization").count();
    assert_eq!(
        utilisation,
        expected.len(),
        "one transition each, none again: {written:#?}"
    );
    let (distinct, duplicates, lost) = compare_notifications(&receiver, &written);
    assert!(
        duplicates >= 1,
        "the notification accepted before the kill is delivered again"
    );
    let figures = Figures {
        input: written.len(),
        output: distinct,
        dlq: 0,
        duplicates,
        lost,
    };
    fault_line("alert_sigkill_and_receiver_500", &figures);
    println!(
        "  receiver refused {} (500), timed out {}; wall {:.1}s",
        receiver.refused.load(Ordering::SeqCst),
        receiver.hung.load(Ordering::SeqCst),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(figures.lost, 0);
    assert!(alert.terminate(Duration::from_secs(30)).success());
}

#[test]
fn duplicate_deliveries_and_replays_change_no_state_and_notify_once() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let broker = Tansu::start(dir.path());
    let bootstrap = broker.bootstrap.clone();
    let prefix = create_topics(&bootstrap, "dr");
    let raw_topic = format!("{prefix}salesforce.usage.raw");
    let (hook, receiver) = start_receiver();

    // Three pools at 95 % (they fire), three at 10 %.
    let sync = "sync-replay";
    let mut events: Vec<RawEvent> = (0..6)
        .map(|n| {
            let used = if n < 3 { 95 } else { 10 };
            licence_event(ORG, sync, &licence_record(n, 100, used))
        })
        .collect();
    events.push(incremental_end(ORG, sync, 6));
    produce(&bootstrap, &raw_topic, 0, &events);

    let group = "fault-transform-replay";
    let config = transform_config(&bootstrap, &prefix, group, 100);
    let (mut transform, _) = service("transform", &["transform"], &config, dir.path());
    let (mut alert, ops) = start_alert(
        &alert_config(&bootstrap, &prefix, &hook),
        dir.path(),
        "alert",
        &receiver,
    );
    let expected: BTreeSet<(String, String)> = (0..3)
        .map(|n| (format!("Pool {n}"), "firing".to_owned()))
        .collect();
    wait_for("the three pools to fire", PATIENCE, || {
        transform.assert_running();
        alert.assert_running();
        (receiver.transitions() == expected).then_some(())
    });
    wait_committed_to_end(&bootstrap, &prefix, group, 1, &mut [&mut transform]);
    let before = latest(read_topic(
        &bootstrap,
        &format!("{prefix}seats.license-state"),
    ));
    let notified_before = receiver.dedup_keys().len();

    // The same raw events again (a producer retry, ingest re-reading a page) ...
    produce(&bootstrap, &raw_topic, 0, &events);
    wait_committed_to_end(&bootstrap, &prefix, group, 1, &mut [&mut transform]);
    // ... and a consumer seeked back to 0: a second transform in a fresh group replays all.
    let replay_group = "fault-transform-replay-from-0";
    let replay_config = transform_config(&bootstrap, &prefix, replay_group, 100);
    let (mut replay, _) = service(
        "transform-replay",
        &["transform"],
        &replay_config,
        dir.path(),
    );
    wait_committed_to_end(&bootstrap, &prefix, replay_group, 1, &mut [&mut replay]);
    two_more_evaluations(&ops);
    two_more_evaluations(&ops);

    let state_messages = read_topic(&bootstrap, &format!("{prefix}seats.license-state"));
    let outputs = state_messages.len();
    let after = latest(state_messages);
    assert_eq!(
        after, before,
        "the compacted state per key changed on replay"
    );
    let written = alerts_topic(&bootstrap, &prefix);
    let (distinct, duplicates, lost) = compare_notifications(&receiver, &written);
    assert_eq!(
        receiver.dedup_keys().len(),
        notified_before,
        "notified again"
    );
    assert_eq!(duplicates, 0, "each transition notified once");
    assert_eq!(receiver.transitions(), expected);
    // Records read: both copies by the first group, both again by the replaying one.
    let raw_records = raw_licences(&bootstrap, &prefix).len();
    assert_eq!(raw_records, 12);
    let figures = Figures {
        input: 2 * raw_records,
        output: outputs,
        dlq: read_all(&bootstrap, &format!("{prefix}salesforce.usage.dlq")).len(),
        duplicates: outputs - after.len(),
        lost: lost + before.keys().filter(|k| !after.contains_key(*k)).count(),
    };
    fault_line("duplicate_replay", &figures);
    println!(
        "  {distinct} transitions notified once each over 3 passes; wall {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(figures.lost, 0);
    transform.assert_running();
    replay.assert_running();
    alert.assert_running();
}

// ---------------------------------------------------------------------------------------
// 7. The broker process stopped and started again on persistent storage
// ---------------------------------------------------------------------------------------

/// in/out/duplicates/lost for the versions `versions` alone: how many raw events carried
/// them, and whether a (user, sync) that carried each reached `seats.user-state`.
fn figures_for(bootstrap: &str, prefix: &str, versions: &BTreeSet<(String, i64)>) -> Figures {
    let raw = raw_users(bootstrap, prefix);
    let states: BTreeSet<(String, String)> = user_states(bootstrap, prefix).into_iter().collect();
    let carried: Vec<&RawUser> = raw
        .iter()
        .filter(|r| versions.contains(&(r.id.clone(), r.modstamp)))
        .collect();
    let distinct: BTreeSet<(&str, i64)> = carried
        .iter()
        .map(|r| (r.id.as_str(), r.modstamp))
        .collect();
    let out: BTreeSet<(&str, i64)> = carried
        .iter()
        .filter(|r| states.contains(&(r.id.clone(), r.sync_id.clone())))
        .map(|r| (r.id.as_str(), r.modstamp))
        .collect();
    Figures {
        input: versions.len(),
        output: out.len(),
        dlq: read_all(bootstrap, &format!("{prefix}salesforce.usage.dlq")).len(),
        duplicates: carried.len() - distinct.len(),
        lost: versions.len() - out.len(),
    }
}

/// The first panic in `text` (its location and message), if there is one.
fn first_panic(text: &str) -> Option<String> {
    let at = text.find("panicked at")?;
    Some(text[at..].lines().take(2).collect::<Vec<_>>().join(" "))
}

/// Stops the broker with `signal` and prints how it went and where the raw topic was. A
/// panic logged before the signal fails the test (the broker was live); one logged after
/// it, by a process that is shutting down anyway, is printed as a finding.
fn stop_broker(
    broker: &std::cell::RefCell<RestartableTansu>,
    prefix: &str,
    signal: libc::c_int,
    what: &str,
) -> Option<i64> {
    assert_broker_sane();
    let bootstrap = broker.borrow().bootstrap.clone();
    let raw_end = high_watermark(&bootstrap, &format!("{prefix}salesforce.usage.raw"), 0);
    let log = broker.borrow().log();
    let before = std::fs::read_to_string(&log).unwrap_or_default().len();
    let (status, took) = broker.borrow_mut().stop(signal, Duration::from_secs(30));
    println!(
        "  {what} with the raw topic at {raw_end:?}: tansu exited ({status}) after {:.1}s",
        took.as_secs_f64()
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if let Some(at) = first_panic(&text[..before.min(text.len())]) {
        panic!("tansu panicked before the {what}: {at}");
    }
    if let Some(at) = first_panic(&text[before.min(text.len())..]) {
        println!("  FINDING: tansu panicked while shutting down after {what}: {at}");
    }
    raw_end
}

/// Starts the broker again on its port, data directory and sqlite file, and watches the
/// new run's log for panics.
fn start_broker_again(broker: &std::cell::RefCell<RestartableTansu>) {
    let starting = Instant::now();
    broker.borrow_mut().start_again();
    *BROKER_LOG.lock().unwrap_or_else(|e| e.into_inner()) = Some(broker.borrow().log());
    println!(
        "  tansu started again on the same storage, accepting after {:.1}s",
        starting.elapsed().as_secs_f64()
    );
}

/// ingest and transform as in [`Outage::start`], but with the services' default
/// `message_timeout_ms` (30 s): the broker is away for a restart, not for longer than the
/// message timeout, so that librdkafka has no reason to give up on a message.
/// The test stops and starts the broker itself, so `down` and `up` do nothing.
fn restart_outage(
    bootstrap: &str,
    prefix: &str,
    users: usize,
    dir: &Path,
    broker_log: std::path::PathBuf,
) -> Outage<'static> {
    *BROKER_LOG.lock().unwrap_or_else(|e| e.into_inner()) = Some(broker_log);
    let sim = Sim::start(users, 200);
    sim.handle
        .with_faults(|f| f.data_call_delay = Some(Duration::from_millis(100)));
    let expected = sim.user_versions();
    let kafka = kafka_section(bootstrap, prefix, "");
    let (ingest, ingest_url) = service(
        "ingest",
        &["ingest", "run"],
        &sim.ingest_config(&kafka, ""),
        dir,
    );
    let (transform, _) = service(
        "transform",
        &["transform"],
        &restart_transform_config(&kafka),
        dir,
    );
    Outage {
        bootstrap: bootstrap.into(),
        prefix: prefix.into(),
        sim,
        ingest,
        ingest_url,
        transform,
        expected,
        down: Box::new(|| {}),
        up: Box::new(|| {}),
    }
}

/// Waits until ingest's current sync had events acknowledged (the raw topic grew by a
/// page past `from`), then stops the broker with `signal`, keeps it down 2.5 s, and starts
/// it again on the same storage. Returns the raw topic's end when the signal went out.
fn restart_mid_sync(
    broker: &std::cell::RefCell<RestartableTansu>,
    run: &mut Outage,
    from: i64,
    signal: libc::c_int,
    what: &str,
) -> i64 {
    let raw = format!("{}salesforce.usage.raw", run.prefix);
    wait_for("a page of the sync to be acknowledged", PATIENCE, || {
        run.ingest.assert_running();
        high_watermark(&run.bootstrap, &raw, 0).filter(|end| *end >= from + 200)
    });
    let at = stop_broker(broker, &run.prefix, signal, what).expect("the raw topic's end");
    std::thread::sleep(Duration::from_millis(MESSAGE_TIMEOUT_MS / 2));
    start_broker_again(broker);
    at
}

/// transform's configuration for the restart scenario: a short session, so a member whose
/// heartbeats the restart interrupted is replaced within seconds.
fn restart_transform_config(kafka: &str) -> String {
    format!(
        "{kafka}[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\
         \"heartbeat.interval.ms\" = \"1000\"\n"
    )
}

/// Waits as [`wait_converged`] does, but restarts transform when it exits, as its
/// supervisor would (compose `restart: unless-stopped`, a Kubernetes Deployment): transform
/// stops by design when the broker fails an output. Returns why it stopped, per restart.
fn converge_supervised(run: &mut Outage, dir: &Path) -> Vec<String> {
    let (bootstrap, prefix) = (run.bootstrap.clone(), run.prefix.clone());
    let newest = run.expected.iter().map(|(_, s)| *s).max().unwrap();
    let mut restarts = Vec::new();
    wait_for("ingest and transform to catch up", PATIENCE, || {
        assert_broker_sane();
        run.ingest.assert_running();
        if let Some(status) = run.transform.child.try_wait().unwrap() {
            let log = run.transform.log_text();
            let why = log
                .lines()
                .rfind(|l| l.contains("\"level\":\"ERROR\""))
                .unwrap_or("no error logged")
                .to_owned();
            println!("  transform exited ({status}), restarted: {why}");
            restarts.push(why);
            let kafka = kafka_section(&bootstrap, &prefix, "");
            let name = format!("transform-{}", restarts.len() + 1);
            run.transform = service(
                &name,
                &["transform"],
                &restart_transform_config(&kafka),
                dir,
            )
            .0;
        }
        let raw = raw_users(&bootstrap, &prefix);
        let versions: BTreeSet<(String, i64)> =
            raw.iter().map(|r| (r.id.clone(), r.modstamp)).collect();
        if !run.expected.is_subset(&versions) {
            return None;
        }
        if user_cursors(&bootstrap, &prefix).last() < Some(&newest) {
            return None;
        }
        let input: BTreeSet<(String, String)> =
            raw.into_iter().map(|r| (r.id, r.sync_id)).collect();
        let out: BTreeSet<(String, String)> =
            user_states(&bootstrap, &prefix).into_iter().collect();
        input.is_subset(&out).then_some(())
    });
    restarts
}

/// The broker process is stopped with `first` during ingest's first full sync of 3,000
/// users (once a page is acknowledged), kept down 2.5 s and started again on the same
/// storage (data directory, sqlite file and port) behind a [`Cutter`] whose port the
/// clients know, so to them it is one broker restarting; then it is SIGKILLed the same
/// way during the incremental sync of all 3,000, restamped. The services keep their
/// default 30 s message timeout. After each restart the raw topic must hold every version,
/// no cursor may pass a version missing from it, and user-state must hold every (user,
/// sync) of the raw topic; prints `FAULT <first_name>` and
/// `FAULT broker_restart_sigkill_incremental`.
fn broker_restart_scenario(first: libc::c_int, first_name: &str) {
    const USERS: usize = 3000;
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let broker = std::cell::RefCell::new(RestartableTansu::start(dir.path()));
    let bootstrap = broker.borrow().bootstrap.clone();
    let log = broker.borrow().log();
    let prefix = create_topics(&bootstrap, "br");
    let mut run = restart_outage(&bootstrap, &prefix, USERS, dir.path(), log);
    let signal_name = if first == libc::SIGTERM {
        "SIGTERM"
    } else {
        "SIGKILL"
    };

    // The first signal during the first full sync.
    let at = restart_mid_sync(&broker, &mut run, 0, first, signal_name);
    assert!(
        at < USERS as i64,
        "the sync had ended before the {signal_name} ({at})"
    );
    let restarts = converge_supervised(&mut run, dir.path());
    let (figures, _) = compare_stages(&bootstrap, &prefix, &run.expected);
    fault_line(first_name, &figures);
    println!(
        "  wall {:.1}s, transform restarted {} time(s)",
        started.elapsed().as_secs_f64(),
        restarts.len()
    );
    assert_eq!(figures.lost, 0);

    // SIGKILL during an incremental sync of every user, restamped.
    let second = Instant::now();
    let raw = format!("{prefix}salesforce.usage.raw");
    let before = high_watermark(&bootstrap, &raw, 0).unwrap();
    let changed = run.sim.restamp(|_| true, Utc::now());
    let new_versions = run.sim.user_versions();
    run.expected.extend(new_versions.iter().cloned());
    let at = restart_mid_sync(&broker, &mut run, before, libc::SIGKILL, "SIGKILL");
    assert!(
        at < before + USERS as i64,
        "the sync had ended before the SIGKILL ({at})"
    );
    let restarts = converge_supervised(&mut run, dir.path());
    compare_stages(&bootstrap, &prefix, &run.expected);
    let figures = figures_for(&bootstrap, &prefix, &new_versions);
    assert_eq!(figures.input, changed);
    fault_line("broker_restart_sigkill_incremental", &figures);
    println!(
        "  wall {:.1}s, transform restarted {} time(s); {:.1}s in all",
        second.elapsed().as_secs_f64(),
        restarts.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(figures.lost, 0);
    run.ingest.assert_running();
}

/// The broker process SIGKILLed mid-stream and restarted on persistent storage, twice
/// (first full sync, then an incremental one): see [`broker_restart_scenario`].
#[test]
fn broker_restart_sigkill_mid_stream_on_persistent_storage() {
    broker_restart_scenario(libc::SIGKILL, "broker_restart_sigkill");
}

/// The same with SIGTERM first. Ignored: tansu 0.6 cannot be restarted under an
/// idempotent producer after a SIGTERM. On SIGTERM it stops its storage task at once but
/// keeps the connections open for up to 5 s, answering every request with an error: each
/// Produce gets `UNKNOWN_SERVER_ERROR` (72 in one run), so ingest's sync and transform's
/// output fail, and the group heartbeat panics (`internal error: entered unreachable code`,
/// `tansu-storage-0.6.0/src/service.rs:337`, harmless, the process is exiting). The failed
/// batches leave librdkafka's idempotent producer with a sequence gap, which it closes by
/// bumping its producer epoch itself (epoch 74 seen for producer 2, which tansu only ever
/// gave epoch 0). The restarted tansu then panics on that producer's first Produce with
/// `more or less than one row` (`tansu-storage-0.6.0/src/lite.rs:503`, in
/// `idempotent_message_check`: its sqlite has no row for an epoch it did not hand out) and
/// from then on answers every request with `Storage(UnableToSend)`: 4 of 4 runs in which
/// the SIGTERM came while events were being produced. (A SIGKILL leads to the same panic
/// when messages outlive `message.timeout.ms` while the broker is away: with 5 s instead
/// of the default 30 s, librdkafka bumped the epoch to 1 and the restarted tansu panicked.)
/// Run it with `cargo test --test fault_suite -- --ignored --nocapture broker_restart_sigterm`.
#[test]
#[ignore = "tansu 0.6 storage panics (lite.rs:503) on librdkafka's epoch bump after a SIGTERM"]
fn broker_restart_sigterm_mid_stream_on_persistent_storage() {
    broker_restart_scenario(libc::SIGTERM, "broker_restart_sigterm");
}
