//! Benchmark: how fast transform turns raw envelopes into seat state.
//!
//! Prints, in one run:
//! 1. In memory, on one core: raw JSON envelope -> normalised record -> Avro bytes through
//!    transform's `Processor`, in events per second, over full syncs of generated orgs with
//!    the object mix of a real org (per user: one `User`, about one and a half
//!    permission-set licence assignments, half a package licence assignment; a few dozen
//!    licence pools per org).
//! 2. Through a broker (librdkafka's in-process mock cluster on loopback): the same events
//!    already in the raw topic; the time until transform, as its own process
//!    (`seatwatch transform`), has produced every output, against a plain consume->produce
//!    copier of the same events through the same broker with the same client settings.
//!    The times come from the outputs themselves: the producer's timestamp of the first
//!    and of the last output (read back from the topics, to the millisecond), so the
//!    rate after the consumer group join does not depend on when the watcher looked.
//!    For each, how many cores were busy on average after the join, from the CPU time in
//!    `/proc` of transform's process and of this one (the mock broker), between the
//!    watcher's first sight of an output and its sight of the last.
//! 3. The peak RSS of that transform process under that load (its `VmHWM`, read before it
//!    is stopped).
//!
//! Part 1 also runs the events through one processor per raw partition on a pool,
//! partitions side by side in bursts, with one thread and with one per core, to show how
//! processing scales with cores (the pipeline runs each partition as a lane of its own
//! instead, which the broker part measures).
//! The orgs fall unevenly on the partitions (by default one of the 6 holds 3 of the 10
//! orgs), and one partition's events run on one thread, which caps the scaling well below
//! the number of cores.
//!
//! Run: `cargo bench --bench transform_throughput` (a release build). Sizes:
//! `SEATWATCH_BENCH_ORGS` (default 10) orgs of `SEATWATCH_BENCH_USERS` (default 5,000)
//! users each, every org read in full twice. In the second read,
//! `SEATWATCH_BENCH_CHANGED_PERCENT` (default 0) per cent of each org's users have logged
//! in since the first, which changes their records; an unchanged user costs less (see the
//! processor's module documentation). The mock cluster keeps at most 5 MiB (and 100,000
//! batches) per partition and drops the oldest beyond that, so sizes well above the
//! default may not fit (20 orgs of 5,000 users do not). The raw topic is checked after
//! loading, and the run stops with a message saying so; the copier's topic holds the same
//! events, and transform's outputs are fewer and smaller.

#[path = "support/proc_status.rs"]
mod proc_status;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::Registry;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use seatwatch_common::kafka::{self, KafkaConfig, Topics};
use seatwatch_schemas::{EnvelopeKind, RawEnvelope, SfObject, SnapshotEnd, SnapshotMode};
use seatwatch_transform::{Input, Metrics, Processor, Target};
use serde_json::json;
use serde_json::value::RawValue;

/// The allocator the `seatwatch` binary uses, so the in-memory figures match it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Partitions of every topic in the broker part.
const PARTITIONS: i32 = 6;
/// How long one in-memory measurement runs at least.
const MIN_MEASURE: Duration = Duration::from_secs(2);

/// One raw event as ingest writes it, with the partition its org maps to.
struct Event {
    key: String,
    value: Vec<u8>,
    partition: i32,
}

/// Writes the events of one org's syncs.
struct OrgWriter<'a> {
    org: &'a str,
    sync: String,
    events: &'a mut Vec<Event>,
}

impl OrgWriter<'_> {
    fn envelope(
        &self,
        object: SfObject,
        record: Option<String>,
        end: Option<SnapshotEnd>,
    ) -> Vec<u8> {
        let kind = match end {
            Some(_) => EnvelopeKind::SnapshotEnd,
            None => EnvelopeKind::Record,
        };
        let envelope = RawEnvelope {
            org_id: self.org.into(),
            sync_id: self.sync.clone(),
            object,
            fetched_at: "2024-05-01T12:00:00Z".parse().unwrap(),
            api_version: "62.0".into(),
            kind,
            record: record.map(|r| RawValue::from_string(r).unwrap()),
            snapshot: end,
        };
        serde_json::to_vec(&envelope).unwrap()
    }

    /// A full snapshot of `object`: its records, then its end marker.
    fn snapshot(&mut self, object: SfObject, records: Vec<serde_json::Value>) {
        let partition = kafka::partition_for(self.org, PARTITIONS);
        let count = records.len() as u64;
        for record in records {
            let id = record["Id"].as_str().unwrap().to_owned();
            let value = self.envelope(object, Some(record.to_string()), None);
            let key = format!("{}/{object}/{id}", self.org);
            self.events.push(Event {
                key,
                value,
                partition,
            });
        }
        let end = SnapshotEnd {
            mode: SnapshotMode::Full,
            records: count,
        };
        let value = self.envelope(object, None, Some(end));
        let key = format!("{}/{object}", self.org);
        self.events.push(Event {
            key,
            value,
            partition,
        });
    }
}

/// An 18-character Salesforce-like id: a 3-character prefix and a number.
fn sf_id(prefix: &str, org: usize, n: usize) -> String {
    format!("{prefix}{org:03}{n:09}AAA")
}

fn attributes(object: &str, id: &str) -> serde_json::Value {
    json!({"type": object, "url": format!("/services/data/v62.0/sobjects/{object}/{id}")})
}

/// Two full reads of `orgs` orgs of `users` users each, org after org. In the second
/// read, `changed_percent` of each org's users have logged in since the first, which
/// changes their records.
fn generate(orgs: usize, users: usize, changed_percent: usize) -> Vec<Event> {
    let mut events = Vec::new();
    for org_index in 0..orgs {
        let org = format!("00D{org_index:012}AAA");
        for (sync, changed) in [("sync-1", 0), ("sync-2", changed_percent)] {
            let mut writer = OrgWriter {
                org: &org,
                sync: format!("{sync}-{org_index}"),
                events: &mut events,
            };
            write_org_sync(&mut writer, org_index, users, changed);
        }
    }
    events
}

fn write_org_sync(writer: &mut OrgWriter<'_>, org: usize, users: usize, changed_percent: usize) {
    let user_licenses: Vec<_> = (0..12)
        .map(|n| {
            let id = sf_id("100", org, n);
            json!({
                "attributes": attributes("UserLicense", &id), "Id": id,
                "Name": format!("Licence {n}"), "MasterLabel": format!("Licence {n}"),
                "LicenseDefinitionKey": format!("KEY_{n}"), "Status": "Active",
                "TotalLicenses": users, "UsedLicenses": users / 12,
            })
        })
        .collect();
    let permission_set_licenses: Vec<_> = (0..25)
        .map(|n| {
            let id = sf_id("0PL", org, n);
            json!({
                "attributes": attributes("PermissionSetLicense", &id), "Id": id,
                "DeveloperName": format!("Psl{n}"), "MasterLabel": format!("Permission set {n}"),
                "PermissionSetLicenseKey": format!("PSL_{n}"), "Status": "Active",
                "TotalLicenses": users, "UsedLicenses": users / 25,
                "ExpirationDate": "2026-12-31",
            })
        })
        .collect();
    let package_licenses: Vec<_> = (0..10)
        .map(|n| {
            let id = sf_id("050", org, n);
            json!({
                "attributes": attributes("PackageLicense", &id), "Id": id,
                "NamespacePrefix": format!("pkg{n}"), "Status": "Active",
                "AllowedLicenses": if n == 0 { -1 } else { 500 }, "UsedLicenses": 120,
                "ExpirationDate": "2026-12-31T00:00:00.000+0000",
            })
        })
        .collect();
    let assignments: Vec<_> = (0..users * 3 / 2)
        .map(|n| {
            let id = sf_id("2LA", org, n);
            json!({
                "attributes": attributes("PermissionSetLicenseAssign", &id), "Id": id,
                "AssigneeId": sf_id("005", org, n % users),
                "PermissionSetLicenseId": sf_id("0PL", org, n % 25),
                "IsRevoked": false,
            })
        })
        .collect();
    let package_assignments: Vec<_> = (0..users / 2)
        .map(|n| {
            let id = sf_id("044", org, n);
            json!({
                "attributes": attributes("UserPackageLicense", &id), "Id": id,
                "UserId": sf_id("005", org, n * 2),
                "PackageLicenseId": sf_id("050", org, n % 10),
                "IsRevoked": false,
            })
        })
        .collect();
    let user_records: Vec<_> = (0..users)
        .map(|n| {
            let id = sf_id("005", org, n);
            let license = n % 12;
            // A user who logged in since the first read has a later `LastLoginDate`.
            let last_login = if n % 100 < changed_percent {
                "2024-04-29T10:30:00.000+0000"
            } else {
                "2024-04-28T09:15:00.000+0000"
            };
            json!({
                "attributes": attributes("User", &id), "Id": id,
                "Username": format!("user{n}@org{org}.example.com"),
                "IsActive": n % 10 != 0, "UserType": "Standard",
                "LastLoginDate": last_login,
                "Profile": {
                    "Name": "Standard User",
                    "UserLicenseId": sf_id("100", org, license),
                    "UserLicense": {
                        "Name": format!("Licence {license}"),
                        "LicenseDefinitionKey": format!("KEY_{license}"),
                    },
                },
            })
        })
        .collect();

    writer.snapshot(SfObject::UserLicense, user_licenses);
    writer.snapshot(SfObject::PermissionSetLicense, permission_set_licenses);
    writer.snapshot(SfObject::PackageLicense, package_licenses);
    writer.snapshot(SfObject::PermissionSetLicenseAssign, assignments);
    writer.snapshot(SfObject::UserPackageLicense, package_assignments);
    writer.snapshot(SfObject::User, user_records);
}

/// Outputs per target of one pass of the processor over `events`.
type Counts = BTreeMap<&'static str, usize>;

fn target_name(target: Target) -> &'static str {
    match target {
        Target::LicenseState => "license-state",
        Target::UserState => "user-state",
        Target::Dlq => "dlq",
    }
}

/// One pass of a fresh processor over every event; returns the outputs per target and the
/// processor, so that dropping its state is not timed.
fn process_all(raw_topic: &str, events: &[Event]) -> (Counts, Processor) {
    let metrics = Metrics::new(&Registry::new()).unwrap();
    let mut processor = Processor::new(raw_topic, metrics);
    let mut counts = Counts::new();
    let mut offsets: BTreeMap<i32, i64> = BTreeMap::new();
    for event in events {
        let offset = offsets.entry(event.partition).or_default();
        let input = Input {
            partition: event.partition,
            offset: *offset,
            key: Some(event.key.as_bytes()),
            value: Some(&event.value),
        };
        *offset += 1;
        for output in processor.process(input) {
            *counts.entry(target_name(output.target)).or_default() += 1;
        }
    }
    (counts, processor)
}

/// Part 1: events per second through the processor alone, on this thread.
fn in_memory(raw_topic: &str, events: &[Event]) -> Counts {
    let mut best = f64::MAX;
    let mut passes = 0;
    let started = Instant::now();
    let mut counts = Counts::new();
    let mut state_growth_kib = 0;
    while started.elapsed() < MIN_MEASURE || passes < 3 {
        let rss_before = rss_kib();
        let pass = Instant::now();
        let (pass_counts, processor) = process_all(raw_topic, events);
        best = best.min(pass.elapsed().as_secs_f64());
        state_growth_kib = state_growth_kib.max(rss_kib() - rss_before);
        drop(processor);
        counts = pass_counts;
        passes += 1;
    }
    let bytes: usize = events.iter().map(|e| e.value.len()).sum();
    println!(
        "in memory: {} events ({} MB of JSON) -> {counts:?}",
        events.len(),
        bytes / 1_000_000
    );
    println!(
        "in memory: best of {passes} passes {:.3} s = {:.0} events/s ({:.2} us/event) on one core",
        best,
        events.len() as f64 / best,
        best * 1e6 / events.len() as f64
    );
    println!(
        "in memory: the processor's state for these orgs grows the resident set by {} MiB",
        state_growth_kib / 1024
    );
    counts
}

/// Part 1b: the same events through one processor per partition on a pool of `threads`
/// threads, in bursts of 16,384 events made of 2,048-event chunks of each partition in
/// turn (a stand-in for the consumer's fetches), outputs collected.
/// Returns the best rate of three passes, in events per second.
fn in_memory_partitioned(raw_topic: &str, events: &[Event], threads: usize) -> f64 {
    let mut by_partition: BTreeMap<i32, Vec<Input<'_>>> = BTreeMap::new();
    for event in events {
        let inputs = by_partition.entry(event.partition).or_default();
        inputs.push(Input {
            partition: event.partition,
            offset: inputs.len() as i64,
            key: Some(event.key.as_bytes()),
            value: Some(&event.value),
        });
    }
    let mut order = Vec::with_capacity(events.len());
    let mut cursors: Vec<std::slice::Chunks<'_, Input<'_>>> = by_partition
        .values()
        .map(|inputs| inputs.chunks(2048))
        .collect();
    loop {
        let before = order.len();
        for cursor in &mut cursors {
            if let Some(chunk) = cursor.next() {
                order.extend_from_slice(chunk);
            }
        }
        if order.len() == before {
            break;
        }
    }
    let mut best = f64::MAX;
    for _ in 0..3 {
        let metrics = Metrics::new(&Registry::new()).unwrap();
        let mut processors = seatwatch_transform::PartitionProcessors::new(
            raw_topic,
            metrics,
            seatwatch_transform::StateEncoder::single_object(),
            threads,
        )
        .unwrap();
        let pass = Instant::now();
        for burst in order.chunks(16384) {
            std::hint::black_box(processors.process(burst));
        }
        best = best.min(pass.elapsed().as_secs_f64());
    }
    let rate = events.len() as f64 / best;
    println!("in memory, one processor per partition on {threads} thread(s): {rate:.0} events/s");
    rate
}

/// This process's resident set now, in KiB.
fn rss_kib() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: i64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .unwrap_or(0);
    pages * 4
}

fn main() {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let orgs = env("SEATWATCH_BENCH_ORGS", 10);
    let users = env("SEATWATCH_BENCH_USERS", 5_000);
    let changed_percent = env("SEATWATCH_BENCH_CHANGED_PERCENT", 0).min(100);
    let events = generate(orgs, users, changed_percent);
    let prefix = "bench.";
    let topics = Topics::new(prefix);

    let counts = in_memory(&topics.raw, &events);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let one = in_memory_partitioned(&topics.raw, &events, 1);
    if cores > 1 {
        let all = in_memory_partitioned(&topics.raw, &events, cores);
        println!(
            "in memory, one processor per partition: {cores} threads run {:.2}x as fast as one",
            all / one
        );
    }
    if std::env::var_os("SEATWATCH_BENCH_MEMORY_ONLY").is_some() {
        return;
    }
    through_broker(&topics, &events, &counts);
}

/// Part 2 and 3: transform as its own process against a copier, through one broker.
fn through_broker(topics: &Topics, events: &[Event], counts: &Counts) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cluster = MockCluster::new(1).unwrap();
    let copy_topic = format!("{}.copy", topics.raw);
    for spec in topics.specs() {
        cluster.create_topic(&spec.name, PARTITIONS, 1).unwrap();
    }
    cluster.create_topic(&copy_topic, PARTITIONS, 1).unwrap();
    let kafka_config = KafkaConfig {
        bootstrap_servers: cluster.bootstrap_servers(),
        topic_prefix: "bench.".into(),
        create_topics: false,
        ..KafkaConfig::default()
    };

    let loaded = Instant::now();
    runtime.block_on(load_raw_topic(&kafka_config, &topics.raw, events));
    println!(
        "broker: librdkafka mock cluster on loopback, {PARTITIONS} partitions per topic; \
         {} events loaded into the raw topic in {:.2} s",
        events.len(),
        loaded.elapsed().as_secs_f64()
    );
    let mut per_partition: BTreeMap<i32, usize> = BTreeMap::new();
    for event in events {
        *per_partition.entry(event.partition).or_default() += 1;
    }
    let per_partition: Vec<String> = per_partition
        .iter()
        .map(|(partition, count)| format!("p{partition} {count}"))
        .collect();
    println!(
        "broker: raw events per partition (by org): {}",
        per_partition.join(", ")
    );
    let watcher = Watcher::new(&kafka_config);
    let kept = watcher.count(&[topics.raw.as_str()]);
    assert_eq!(
        kept,
        events.len(),
        "the mock cluster kept {kept} of {} events: it holds at most 5 MiB of batches per \
         partition and drops the oldest beyond that; lower SEATWATCH_BENCH_ORGS or \
         SEATWATCH_BENCH_USERS",
        events.len()
    );

    // The copier: the same events, the same client settings, no processing.
    let copier = runtime.spawn(copy(
        kafka_config.clone(),
        topics.raw.clone(),
        copy_topic.clone(),
    ));
    let copied = watcher.until(
        &[(copy_topic.as_str(), events.len())],
        || assert!(!copier.is_finished(), "the copier stopped early"),
        || Cpu::now(None),
    );
    runtime.block_on(async { copier.abort() });
    report("copier   ", events.len(), events.len(), &copied);

    // transform, as the `seatwatch transform` process.
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("transform.toml");
    write!(
        std::fs::File::create(&config_path).unwrap(),
        "group_id = \"bench-transform\"\nlisten_addr = \"127.0.0.1:0\"\n\
         [kafka]\nbootstrap_servers = \"{}\"\ntopic_prefix = \"bench.\"\n\
         create_topics = false\n",
        kafka_config.bootstrap_servers
    )
    .unwrap();
    let expected: usize = counts.values().sum();
    let of = |target| counts.get(target_name(target)).copied().unwrap_or(0);
    let outputs = [
        (topics.user_state.as_str(), of(Target::UserState)),
        (topics.license_state.as_str(), of(Target::LicenseState)),
        (topics.dlq.as_str(), of(Target::Dlq)),
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_seatwatch"))
        .arg("transform")
        .arg("--config")
        .arg(&config_path)
        .env("SEATWATCH_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let transformed = watcher.until(
        &outputs,
        || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("transform exited early with {status}");
            }
        },
        || Cpu::now(Some(pid)),
    );
    // Its own peak under the load (see `proc_status`), read while it still runs.
    if let Some(status) = child.try_wait().unwrap() {
        panic!("transform exited before its peak RSS was read, with {status}");
    }
    let peak_rss_kib = proc_status::peak_rss_kib(child.id())
        .expect("transform's /proc status has its peak RSS while it runs");
    // SAFETY: kill(2) on the child this function spawned and has not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().unwrap();
    // A topic is no longer watched once it holds its count (the dead letters at once, as
    // none are expected), so every output topic is counted again at the end.
    let written = watcher.count(&outputs.map(|(topic, _)| topic));
    assert_eq!(
        written, expected,
        "transform wrote other outputs than expected"
    );
    report("transform", events.len(), expected, &transformed);
    println!(
        "transform / copier: {:.2}x the copier's rate (goal >= 0.9x); transform exited {status}",
        copied.total.as_secs_f64() / transformed.total.as_secs_f64()
    );
    let steady = |timing: &Timing| timing.total.saturating_sub(timing.first).as_secs_f64();
    println!(
        "transform / copier after the first output: {:.2}x the copier's rate",
        steady(&copied) / steady(&transformed).max(1e-9)
    );
    println!("transform peak RSS: {} MiB", peak_rss_kib / 1024);
}

/// Writes every event to its org's partition of the raw topic, without awaiting each send.
async fn load_raw_topic(kafka_config: &KafkaConfig, raw_topic: &str, events: &[Event]) {
    let producer: FutureProducer = kafka_config
        .producer_config("bench-loader")
        .unwrap()
        .create()
        .unwrap();
    let mut pending = Vec::with_capacity(events.len());
    for event in events {
        let record = FutureRecord::to(raw_topic)
            .partition(event.partition)
            .key(&event.key)
            .payload(&event.value);
        pending.push(kafka::enqueue(&producer, record).await.unwrap());
    }
    for delivery in pending {
        kafka::delivered(delivery).await.unwrap();
    }
}

/// A plain consume->produce copier with transform's client settings: reads the raw topic
/// in a consumer group and writes each event unchanged to the same partition of `to`,
/// awaiting acknowledgements in batches as transform does.
async fn copy(kafka_config: KafkaConfig, from: String, to: String) {
    let consumer: StreamConsumer = kafka_config
        .consumer_config("bench-copier", "bench-copier")
        .unwrap()
        .create()
        .unwrap();
    consumer.subscribe(&[&from]).unwrap();
    let producer: FutureProducer = kafka_config
        .producer_config("bench-copier")
        .unwrap()
        .create()
        .unwrap();
    let mut in_flight = Vec::new();
    loop {
        let message = consumer.recv().await.unwrap();
        let mut record = FutureRecord::<[u8], [u8]>::to(&to).partition(message.partition());
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(value) = message.payload() {
            record = record.payload(value);
        }
        in_flight.push(kafka::enqueue(&producer, record).await.unwrap());
        if in_flight.len() >= 50_000 {
            for delivery in in_flight.drain(..) {
                kafka::delivered(delivery).await.unwrap();
            }
        }
    }
}

/// When the outputs of one run were produced, and the CPU time used meanwhile.
struct Timing {
    /// From the start of the run to the first output.
    first: Duration,
    /// From the start of the run to the last output.
    total: Duration,
    /// From the first output to the last output of each partition.
    last_by_partition: BTreeMap<i32, Duration>,
    /// CPU time used by the time the watcher saw the first output, and when it looked.
    cpu_at_first: (Cpu, Instant),
    /// CPU time used by the time the watcher saw the last output, and when it looked.
    cpu_at_end: (Cpu, Instant),
}

/// CPU seconds (user and system) used so far by the measured service's own process (none
/// for the copier, which runs in this one), and by this process: the mock broker, the
/// watcher, and the copier when it runs.
#[derive(Clone, Copy, Default)]
struct Cpu {
    service: f64,
    bench: f64,
}

impl Cpu {
    /// What this process and, if given, the service's process have used so far.
    fn now(service: Option<u32>) -> Self {
        Self {
            service: service.and_then(cpu_seconds).unwrap_or(0.0),
            bench: cpu_seconds(std::process::id()).unwrap_or(0.0),
        }
    }
}

/// The CPU seconds a running process has used, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces:
    // utime and stime are the 14th and 15th fields of the line, in clock ticks.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| ticks as f64 / per_second as f64)
}

fn report(who: &str, inputs: usize, outputs: usize, timing: &Timing) {
    let steady = timing.total.saturating_sub(timing.first).as_secs_f64();
    println!(
        "{who}: {inputs} events -> {outputs} outputs in {:.2} s = {:.0} events/s \
         (first output after {:.2} s, consumer group join included; {:.0} events/s after it)",
        timing.total.as_secs_f64(),
        inputs as f64 / timing.total.as_secs_f64(),
        timing.first.as_secs_f64(),
        inputs as f64 / steady.max(1e-9),
    );
    let finished: Vec<String> = timing
        .last_by_partition
        .iter()
        .map(|(partition, after)| format!("p{partition} {} ms", after.as_millis()))
        .collect();
    println!(
        "{who}: each partition's last output, after the first output: {}",
        finished.join(", ")
    );
    let ((cpu_at_first, seen_first), (cpu_at_end, seen_end)) =
        (timing.cpu_at_first, timing.cpu_at_end);
    let watched = seen_end.duration_since(seen_first).as_secs_f64().max(1e-9);
    let service = (cpu_at_end.service - cpu_at_first.service) / watched;
    let bench = (cpu_at_end.bench - cpu_at_first.bench) / watched;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let busy = service + bench;
    if service > 0.0 {
        println!(
            "{who}: after the join {busy:.2} of {cores} cores busy on average: {service:.2} in \
             its process, {bench:.2} in the benchmark's (mock broker, watcher)"
        );
    } else {
        println!(
            "{who}: after the join {busy:.2} of {cores} cores busy on average, all in the \
             benchmark's process (mock broker, watcher, copier)"
        );
    }
}

/// Watches the high watermarks of topics, and reads when their messages were produced.
struct Watcher {
    consumer: Arc<BaseConsumer>,
    /// Reads single messages by offset, outside any consumer group.
    reader: BaseConsumer,
}

impl Watcher {
    fn new(kafka_config: &KafkaConfig) -> Self {
        let consumer = kafka_config.client_config().unwrap().create().unwrap();
        let reader = kafka_config
            .client_config()
            .unwrap()
            .set("group.id", "bench-watcher")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .unwrap();
        Self {
            consumer: Arc::new(consumer),
            reader,
        }
    }

    /// Messages in `topics` right now.
    fn count(&self, topics: &[&str]) -> usize {
        let mut total = 0;
        for topic in topics {
            for partition in 0..PARTITIONS {
                let (low, high) = self.watermarks(topic, partition);
                total += (high - low) as usize;
            }
        }
        total
    }

    fn watermarks(&self, topic: &str, partition: i32) -> (i64, i64) {
        self.consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .unwrap()
    }

    /// The producer's timestamps (`CreateTime`, in milliseconds since the epoch) of the
    /// earliest message in `topics`, and of the latest per partition (over the topics).
    /// A producer stamps a message when it is handed over, and hands a partition's
    /// messages over in offset order, so only the first and the last message of each
    /// partition are read.
    fn produced_between(&self, topics: &[&str]) -> (i64, BTreeMap<i32, i64>) {
        let mut earliest = i64::MAX;
        let mut latest = BTreeMap::new();
        for topic in topics {
            for partition in 0..PARTITIONS {
                let (low, high) = self.watermarks(topic, partition);
                if high > low {
                    earliest = earliest.min(self.produced_at(topic, partition, low));
                    let last = self.produced_at(topic, partition, high - 1);
                    let latest = latest.entry(partition).or_insert(last);
                    *latest = last.max(*latest);
                }
            }
        }
        assert!(!latest.is_empty(), "no messages in {topics:?}");
        (earliest, latest)
    }

    fn produced_at(&self, topic: &str, partition: i32, offset: i64) -> i64 {
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, partition, Offset::Offset(offset))
            .unwrap();
        self.reader.assign(&assignment).unwrap();
        let message = self
            .reader
            .poll(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no message at {topic}/{partition}@{offset}"))
            .unwrap();
        assert_eq!(
            message.offset(),
            offset,
            "read {topic}/{partition} at its offset"
        );
        message
            .timestamp()
            .to_millis()
            .unwrap_or_else(|| panic!("{topic}/{partition}@{offset} has no timestamp"))
    }

    /// Polls until every topic holds the messages expected of it, calling `check_running`
    /// (which panics when the writer died) between polls, and panics after ten minutes;
    /// then reads when the first and the last output were produced. Only the first topic
    /// still short of its count is polled (the others are counted once it is full), so
    /// transform's outputs cost the broker as many polls as the copier's (the largest
    /// topic comes first), and the times come from the messages, not from the polls.
    fn until(
        &self,
        expected: &[(&str, usize)],
        mut check_running: impl FnMut(),
        cpu: impl Fn() -> Cpu,
    ) -> Timing {
        let started = Instant::now();
        let started_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let mut cpu_at_first = None;
        let mut waiting = expected.to_vec();
        let all: Vec<&str> = expected.iter().map(|(topic, _)| *topic).collect();
        loop {
            if cpu_at_first.is_none() && self.count(&all) > 0 {
                cpu_at_first = Some((cpu(), Instant::now()));
            }
            while let Some(&(topic, wanted)) = waiting.first() {
                if self.count(&[topic]) < wanted {
                    break;
                }
                waiting.remove(0);
            }
            if waiting.is_empty() {
                let cpu_at_end = (cpu(), Instant::now());
                let topics: Vec<&str> = expected
                    .iter()
                    .filter(|(_, wanted)| *wanted > 0)
                    .map(|(topic, _)| *topic)
                    .collect();
                let (first_ms, last_ms) = self.produced_between(&topics);
                let since = |from: i64, ms: i64| Duration::from_millis((ms - from).max(0) as u64);
                let total = last_ms.values().max().copied().unwrap_or(first_ms);
                return Timing {
                    first: since(started_ms, first_ms),
                    total: since(started_ms, total),
                    last_by_partition: last_ms
                        .into_iter()
                        .map(|(partition, ms)| (partition, since(first_ms, ms)))
                        .collect(),
                    cpu_at_first: cpu_at_first.unwrap_or(cpu_at_end),
                    cpu_at_end,
                };
            }
            let (topic, wanted) = waiting[0];
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "after ten minutes: {} of {wanted} in {topic}",
                self.count(&[topic])
            );
            check_running();
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
