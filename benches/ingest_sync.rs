//! Benchmark: the initial fetch of a large org, then a sync with nothing changed.
//!
//! The simulator serves an org of `SEATWATCH_BENCH_USERS` users (default 100,000) on
//! loopback; librdkafka's in-process mock cluster is the broker; ingest runs as its own
//! process (`seatwatch ingest sync --once`), so its peak RSS is its own. Prints API calls
//! against the minimum, wall time and peak RSS, for the first sync (minimum: one sign-in,
//! plus one call per 2,000 records per object) and for a second one that finds no change
//! (minimum: one call per object, as `User` and the assignments are read incrementally).
//!
//! Each run is a new process, and a new process reads `GET /limits` once before its first
//! query, so that an org already above its share is not touched; that call counts against
//! the org's allowance like any other and is shown as the "+1". A long-running ingest
//! makes it at its first sync only, and later reads usage from `Sforce-Limit-Info`.
//!
//! Run: `cargo bench --bench ingest_sync` (a release build).

#[path = "support/proc_status.rs"]
mod proc_status;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use rdkafka::mocking::MockCluster;
use seatwatch_common::kafka::Topics;
use seatwatch_common::Shutdown;
use seatwatch_simulator::{Credentials, OrgSource, SimulatorConfig};
use secrecy::ExposeSecret;

/// `seatwatch`, or `seatwatch` under the profiler that `SEATWATCH_BENCH_PROFILER` names
/// (for example `heaptrack -o /tmp/ingest`); RSS figures then include the profiler.
fn ingest_command() -> Command {
    let seatwatch = env!("CARGO_BIN_EXE_seatwatch");
    let profiler = std::env::var("SEATWATCH_BENCH_PROFILER").unwrap_or_default();
    let mut words = profiler.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut command = Command::new(program);
            command.args(words).arg(seatwatch);
            command
        }
        None => Command::new(seatwatch),
    };
    // The services pass over SEATWATCH_BENCH_*; ingest need not see the bench's knobs.
    command
        .env_remove("SEATWATCH_BENCH_USERS")
        .env_remove("SEATWATCH_BENCH_PROFILER");
    command
}

/// How one ingest process ended.
struct Finished {
    success: bool,
    stdout: String,
    stderr: String,
    /// Its own peak resident set, in KiB.
    peak_rss_kib: u64,
}

/// Runs `command` to its end and measures its own peak RSS (see [`proc_status`]); `VmHWM`
/// only grows, so the last sample before exit is the peak (sampled every 5 ms).
fn run_measured(command: &mut Command) -> Finished {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        while let Some(now) = proc_status::peak_rss_kib(pid) {
            peak = peak.max(now);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        peak
    });

    let mut stdout_pipe = child.stdout.take().unwrap();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    let mut stdout = String::new();
    let _ = stdout_pipe.read_to_string(&mut stdout);
    let stderr = stderr_reader.join().unwrap();
    let status = child.wait().unwrap();

    Finished {
        success: status.success(),
        stdout,
        stderr,
        peak_rss_kib: sampler.join().unwrap(),
    }
}

fn main() {
    let users: usize = std::env::var("SEATWATCH_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Runtime::new().unwrap();

    let cluster = MockCluster::new(1).unwrap();
    let prefix = "bench.";
    for spec in Topics::new(prefix).specs() {
        cluster.create_topic(&spec.name, 3, 1).unwrap();
    }
    let sim = runtime.block_on(async {
        let config = SimulatorConfig {
            org: OrgSource::BuiltIn { users },
            ..SimulatorConfig::for_tests()
        };
        seatwatch_simulator::start(config, Shutdown::new())
            .await
            .unwrap()
    });
    let handle = sim.handle();
    let counts = handle.with_org(|org| {
        [
            org.user_licenses.len(),
            org.permission_set_licenses.len(),
            org.package_licenses.len(),
            org.permission_set_license_assignments.len(),
            org.user_package_licenses.len(),
            org.users.len(),
        ]
    });
    let minimum_pages: u64 = counts
        .iter()
        .map(|n| (*n as u64).div_ceil(2000).max(1))
        .sum();
    let objects = counts.len() as u64;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ingest.toml");
    let credentials = Credentials::demo();
    write!(
        std::fs::File::create(&config).unwrap(),
        "[kafka]\nbootstrap_servers = \"{}\"\ntopic_prefix = \"{prefix}\"\ncreate_topics = false\n\
         [[orgs]]\nname = \"bench\"\nlogin_url = \"{}\"\nconsumer_key = \"{}\"\n\
         username = \"{}\"\nconsumer_secret = {{ env = \"BENCH_SF_SECRET\" }}\n\
         password = {{ env = \"BENCH_SF_PASSWORD\" }}\n\
         security_token = {{ env = \"BENCH_SF_TOKEN\" }}\n",
        cluster.bootstrap_servers(),
        sim.base_url(),
        credentials.consumer_key,
        credentials.username,
    )
    .unwrap();

    println!("org: {users} users; rows per object {counts:?}");
    println!("goals: calls = minimum (+1 /limits per new process), under 10 s, under 64 MiB");
    let runs = [
        (
            "first sync (full)",
            minimum_pages,
            "one per 2,000 records per object",
        ),
        ("second sync (nothing changed)", objects, "one per object"),
    ];
    for (run, minimum, rule) in runs {
        let (calls_before, logins_before) = (handle.api_calls(), handle.logins());
        let started = Instant::now();
        let mut command = ingest_command();
        command
            .args(["ingest", "sync", "--once", "--config"])
            .arg(&config)
            .env("SEATWATCH_LOG", "warn")
            .env(
                "BENCH_SF_SECRET",
                credentials.consumer_secret.expose_secret(),
            )
            .env("BENCH_SF_PASSWORD", credentials.password.expose_secret())
            .env("BENCH_SF_TOKEN", credentials.security_token.expose_secret());
        let finished = run_measured(&mut command);
        let elapsed = started.elapsed();
        assert!(finished.success, "{}", finished.stderr);

        let calls = handle.api_calls() - calls_before;
        let logins = handle.logins() - logins_before;
        let verdict = if calls <= minimum + 1 {
            "at the minimum"
        } else {
            "ABOVE the minimum"
        };
        println!("{run}:");
        println!(
            "  API calls: {calls} = {} queries + 1 /limits; minimum {minimum} ({rule}) + 1 \
             /limits: {verdict}",
            calls.saturating_sub(1)
        );
        println!("  sign-ins: {logins} (minimum 1)");
        println!("  wall time: {:.2} s", elapsed.as_secs_f64());
        println!(
            "  peak RSS of the ingest process: {:.1} MiB",
            finished.peak_rss_kib as f64 / 1024.0
        );
        for line in finished.stdout.lines() {
            println!("  | {line}");
        }
    }
    drop(cluster);
}
