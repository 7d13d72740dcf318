//! `seatwatch ingest sync --once`, the initial fetch, as an operator runs it: a summary
//! and exit 0 when the org synced; the reason and a non-zero exit when it did not, with
//! no secret in the output. The broker is librdkafka's mock cluster (reachable on
//! loopback by the child process), the org the simulator.

mod support;

use std::io::Write;
use std::process::Output;

use rdkafka::mocking::MockCluster;
use seatwatch_common::kafka::Topics;
use seatwatch_common::Shutdown;
use seatwatch_simulator::{Credentials, SimulatorConfig};
use secrecy::ExposeSecret;

const WRONG_PASSWORD: &str = "definitely-Wrong-pa55";

async fn sync_once(password: &str) -> (Output, seatwatch_simulator::SimulatorHandle) {
    let cluster = MockCluster::new(1).unwrap();
    let prefix = format!("cli-{}.", uuid::Uuid::new_v4().simple());
    for spec in Topics::new(&prefix).specs() {
        cluster.create_topic(&spec.name, 2, 1).unwrap();
    }
    let sim = seatwatch_simulator::start(SimulatorConfig::for_tests(), Shutdown::new())
        .await
        .unwrap();
    let credentials = Credentials::demo();

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ingest.toml");
    write!(
        std::fs::File::create(&config).unwrap(),
        "[kafka]\nbootstrap_servers = \"{}\"\ntopic_prefix = \"{prefix}\"\ncreate_topics = false\n\
         [[orgs]]\nname = \"simulated\"\nlogin_url = \"{}\"\nconsumer_key = \"{}\"\n\
         username = \"{}\"\nconsumer_secret = {{ env = \"CLI_SF_SECRET\" }}\n\
         password = {{ env = \"CLI_SF_PASSWORD\" }}\nsecurity_token = {{ env = \"CLI_SF_TOKEN\" }}\n",
        cluster.bootstrap_servers(),
        sim.base_url(),
        credentials.consumer_key,
        credentials.username,
    )
    .unwrap();

    let mut command = support::seatwatch();
    command
        .args(["ingest", "sync", "--once", "--config"])
        .arg(&config)
        .env("SEATWATCH_LOG_FORMAT", "json")
        .env("CLI_SF_SECRET", credentials.consumer_secret.expose_secret())
        .env("CLI_SF_PASSWORD", password)
        .env("CLI_SF_TOKEN", credentials.security_token.expose_secret());
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let handle = sim.handle();
    drop(cluster);
    (output, handle)
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_once_prints_a_summary_and_exits_zero() {
    let password = Credentials::demo().password.expose_secret().to_owned();
    let (output, sim) = sync_once(&password).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert!(
        output.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains(&format!("org simulated ({}): success", sim.org_id())),
        "{stdout}"
    );
    let users = sim.with_org(|org| org.users.len());
    assert!(stdout.contains(&format!("{users} records")), "{stdout}");
    // Not a terminal: a plain progress line per object on stderr.
    let progress = format!("org simulated: User full, {users} records");
    assert!(stderr.contains(&progress), "{stderr}");
    assert!(
        stdout.contains(&format!("API calls: {}", sim.api_calls())),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_once_with_a_wrong_password_says_why_and_fails() {
    let (output, _sim) = sync_once(WRONG_PASSWORD).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("auth_failed"), "{stdout}");
    assert!(stdout.contains("authentication failure"), "{stdout}");
    assert!(stderr.contains("sync failed for simulated"), "{stderr}");
    assert!(!stdout.contains(WRONG_PASSWORD) && !stderr.contains(WRONG_PASSWORD));
}

#[tokio::test(flavor = "multi_thread")]
async fn check_explains_an_ip_restriction_and_exits_non_zero() {
    let sim = seatwatch_simulator::start(SimulatorConfig::for_tests(), Shutdown::new())
        .await
        .unwrap();
    sim.handle().with_faults(|f| f.ip_restricted = true);
    let credentials = Credentials::demo();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ingest.toml");
    write!(
        std::fs::File::create(&config).unwrap(),
        "[[orgs]]\nname = \"restricted\"\nlogin_url = \"{}\"\nconsumer_key = \"{}\"\n\
         username = \"{}\"\nconsumer_secret = {{ env = \"CLI_SF_SECRET\" }}\n\
         password = {{ env = \"CLI_SF_PASSWORD\" }}\n\
         security_token = {{ env = \"CLI_SF_TOKEN\" }}\n",
        sim.base_url(),
        credentials.consumer_key,
        credentials.username,
    )
    .unwrap();

    let mut command = support::seatwatch();
    command
        .args(["ingest", "check", "--config"])
        .arg(&config)
        .env("CLI_SF_SECRET", credentials.consumer_secret.expose_secret())
        .env("CLI_SF_PASSWORD", credentials.password.expose_secret())
        .env("CLI_SF_TOKEN", credentials.security_token.expose_secret());
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert_ne!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("org restricted: sign-in FAILED: invalid_grant (ip restricted)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("likely cause: ingest's IP address is outside"),
        "{stdout}"
    );
    assert!(stdout.contains("fix: relax IP restrictions"), "{stdout}");
    assert!(stderr.contains("check failed for restricted"), "{stderr}");
    let password = credentials.password.expose_secret();
    assert!(!stdout.contains(password) && !stderr.contains(password));
}
