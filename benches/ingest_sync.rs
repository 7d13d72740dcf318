//! Benchmark: the initial fetch of a large org, then a sync with nothing changed.
//!
//! The simulator serves an org of `SEATWATCH_BENCH_USERS` users (default 100,000) on
//! loopback; librdkafka's in-process mock cluster is the broker; ingest runs as its own
//! process (`seatwatch ingest sync --once`), so its peak RSS is its own. Prints API calls
//! against the minimum (one sign-in, plus one call per 2,000 records per object), wall
//! time and peak RSS, for the first sync and for a second one that finds no change.
//!
//! Run: `cargo bench --bench ingest_sync` (a release build).

use std::io::Write;
use std::process::Command;
use std::time::Instant;

use rdkafka::mocking::MockCluster;
use seatwatch_common::kafka::Topics;
use seatwatch_common::Shutdown;
use seatwatch_simulator::{Credentials, OrgSource, SimulatorConfig};
use secrecy::ExposeSecret;

/// Peak resident set of the children waited for so far, in KiB.
fn children_peak_rss_kib() -> i64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    usage.ru_maxrss
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
    println!("minimum: 1 sign-in + {minimum_pages} query pages (one per 2,000 records per object)");
    for run in ["first sync (full)", "second sync (nothing changed)"] {
        let (calls_before, logins_before) = (handle.api_calls(), handle.logins());
        let started = Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_seatwatch"))
            .args(["ingest", "sync", "--once", "--config"])
            .arg(&config)
            .env("SEATWATCH_LOG", "warn")
            .env(
                "BENCH_SF_SECRET",
                credentials.consumer_secret.expose_secret(),
            )
            .env("BENCH_SF_PASSWORD", credentials.password.expose_secret())
            .env("BENCH_SF_TOKEN", credentials.security_token.expose_secret())
            .output()
            .unwrap();
        let elapsed = started.elapsed();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let calls = handle.api_calls() - calls_before;
        let logins = handle.logins() - logins_before;
        println!(
            "{run}: {logins} sign-in, {calls} API calls (of which 1 is /limits at start), \
             {:.2} s wall, peak RSS so far {:.1} MiB",
            elapsed.as_secs_f64(),
            children_peak_rss_kib() as f64 / 1024.0
        );
        print!("{}", String::from_utf8_lossy(&output.stdout));
    }
    drop(cluster);
}
