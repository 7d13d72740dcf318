//! Secrets audit: the whole pipeline runs with distinctive secret values at debug log
//! level, with failures injected so that error paths run, and no secret comes out anywhere
//! an operator or a downstream team can read.
//!
//! Set-up, all on 127.0.0.1: a tansu broker; two simulators (one serves the password flow
//! with the audit's consumer secret, password and security token, the other a second org
//! that accepts the JWT bearer flow with `fixtures/jwt/test_only_public_key.pem`); ingest
//! with four orgs (password flow, JWT bearer flow with the fixture private key from a
//! file, a wrong password, a wrong consumer secret); transform; alert with a signed
//! webhook whose receiver (in this test) answers 500 three times before it accepts; and a
//! malformed and a non-UTF-8 raw event produced straight into the raw topic so that they
//! dead-letter. Every service runs with `SEATWATCH_LOG=debug` and JSON logs.
//!
//! Then the test asserts that no secret value, nor its form-encoded, percent-encoded,
//! base64 or hex form (nor any 24-character run of the private key's PEM body), appears in:
//! any process's log (stdout and stderr), the output of `ingest check` and of each
//! service's `--check-config`, every service's `/metrics`, `/healthz`, `/readyz`, alert's
//! `/api/v1/alerts` and `/api/v1/silences`, any key, value or header of any topic of the
//! run (DLQ and alerts included), or any request the webhook receiver got (except the
//! signature header, which is an HMAC and not the key). No log may contain `panicked`.
//!
//! So that it can fail, it also asserts that the audit saw what it audits: debug lines,
//! both sign-in refusals, the webhook retries, the dead letters, seat state and alerts.
//!
//! Needs the `tansu` binary (`TANSU_BIN`); runs in nextest's `broker` group. About 40 s.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use support::*;

const PATIENCE: Duration = Duration::from_secs(120);

/// The audit's secrets. Each has characters that form- and percent-encoding change (space,
/// `+`, `/`, `=`, `&`, `%`) and none that JSON escapes, so every encoding differs from
/// the value and a JSON log line holds the value verbatim if it leaks.
const CONSUMER_SECRET: &str = "CSaudit+Qz7/Vk=Lm3";
const PASSWORD: &str = "PwAudit&Mu7 tau%Rx";
const SECURITY_TOKEN: &str = "TkAuditR8vN3qLxW2";
const WRONG_PASSWORD: &str = "PwWrong&Om1 cron%Yq";
const WRONG_CONSUMER_SECRET: &str = "CSwrong+Sg3/Ma=Pd8";
const WEBHOOK_KEY: &str = "WhAudit key+Ph4/Zt=";

/// The consumer key and integration user of the simulated orgs (not secrets).
const CONSUMER_KEY: &str = "3MVG9AUDIT.seatwatch.consumer.key";

const PRIVATE_KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/jwt/test_only_private_key.pem"
);
const PUBLIC_KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/jwt/test_only_public_key.pem"
);

/// One request the receiver got: headers other than the signature, as text, and body.
type Request = (String, Vec<u8>);

/// What the webhook receiver got, and how many requests it still refuses.
#[derive(Clone, Default)]
struct Receiver {
    requests: Arc<Mutex<Vec<Request>>>,
    refused: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
}

const REFUSALS: usize = 3;

async fn receive(
    State(receiver): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let shown: String = headers
        .iter()
        .filter(|(name, _)| !name.as_str().eq_ignore_ascii_case("x-seatwatch-signature"))
        .map(|(name, value)| format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())))
        .collect();
    receiver
        .requests
        .lock()
        .unwrap()
        .push((shown, body.to_vec()));
    if receiver.refused.load(Ordering::SeqCst) < REFUSALS {
        receiver.refused.fetch_add(1, Ordering::SeqCst);
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    receiver.accepted.fetch_add(1, Ordering::SeqCst);
    StatusCode::OK
}

fn start_receiver() -> (String, Receiver) {
    let receiver = Receiver::default();
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(receiver.clone());
    let addr = serve_on_loopback(app);
    (format!("http://{addr}/hook"), receiver)
}

/// One secret's searchable forms, with a label for each that names no value.
struct Needle {
    label: String,
    text: String,
}

/// Percent-encoding of every byte but unreserved ones; `form` writes a space as `+`
/// (application/x-www-form-urlencoded), otherwise as `%20`.
fn percent_encode(value: &str, form: bool) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            b' ' if form => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Base64 without padding, standard or URL-safe alphabet.
fn base64(bytes: &[u8], url_safe: bool) -> String {
    let alphabet: &[u8; 64] = if url_safe {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The base64 text a secret produces wherever it sits in a longer encoded value: for each
/// of the three alignments, the characters that depend on the secret's bytes alone.
fn base64_cores(value: &str, url_safe: bool) -> Vec<String> {
    (0..3)
        .map(|shift: usize| {
            let mut bytes = vec![b'#'; shift];
            bytes.extend_from_slice(value.as_bytes());
            let encoded = base64(&bytes, url_safe);
            let start = [0, 2, 3][shift];
            let end = bytes.len() / 3 * 4;
            encoded[start..end].to_owned()
        })
        .collect()
}

/// Every form of every secret the audit looks for.
fn needles() -> Vec<Needle> {
    let mut needles = Vec::new();
    let password_and_token = format!("{PASSWORD}{SECURITY_TOKEN}");
    let secrets = [
        ("consumer secret", CONSUMER_SECRET),
        ("password", PASSWORD),
        ("security token", SECURITY_TOKEN),
        ("password+token", password_and_token.as_str()),
        ("wrong password", WRONG_PASSWORD),
        ("wrong consumer secret", WRONG_CONSUMER_SECRET),
        ("webhook key", WEBHOOK_KEY),
    ];
    for (name, value) in secrets {
        let mut forms = vec![
            ("value".to_owned(), value.to_owned()),
            ("form-encoded".to_owned(), percent_encode(value, true)),
            ("percent-encoded".to_owned(), percent_encode(value, false)),
            ("hex".to_owned(), hex(value.as_bytes())),
        ];
        for url_safe in [false, true] {
            for (shift, core) in base64_cores(value, url_safe).into_iter().enumerate() {
                forms.push((format!("base64 (url-safe {url_safe}, shift {shift})"), core));
            }
        }
        for (form, text) in forms {
            needles.push(Needle {
                label: format!("{name} ({form})"),
                text,
            });
        }
    }

    // The private key: its armour, and every 24-character run of its body starting at a
    // multiple of 8, so that any leak of 32 or more contiguous body characters, however
    // wrapped, contains one.
    let pem = std::fs::read_to_string(PRIVATE_KEY).unwrap();
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    assert!(body.len() > 1000, "the fixture private key is a real key");
    for start in (0..body.len() - 24).step_by(8) {
        needles.push(Needle {
            label: format!("private key (body at {start})"),
            text: body[start..start + 24].to_owned(),
        });
    }
    needles.push(Needle {
        label: "private key (armour)".into(),
        text: "PRIVATE KEY-----".into(),
    });
    needles
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Everything the audit reads, by where it came from.
#[derive(Default)]
struct Haystacks(Vec<(String, Vec<u8>)>);

impl Haystacks {
    fn add(&mut self, source: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.0.push((source.into(), bytes.into()));
    }

    fn text_of(&self, source: &str) -> String {
        self.0
            .iter()
            .filter(|(name, _)| name == source)
            .map(|(_, bytes)| String::from_utf8_lossy(bytes).into_owned())
            .collect()
    }

    /// Every (source, needle label) where a needle occurs, compared case-insensitively
    /// (percent escapes may be written in lower case).
    fn leaks(&self, needles: &[Needle]) -> Vec<String> {
        let mut found = Vec::new();
        for (source, bytes) in &self.0 {
            let text = String::from_utf8_lossy(bytes).to_lowercase();
            for needle in needles {
                if text.contains(&needle.text.to_lowercase()) {
                    found.push(format!("{source}: {}", needle.label));
                }
            }
        }
        found
    }
}

/// Every message of every topic whose name starts with `prefix`, as text: the key, each
/// header's name and value, and the value.
fn read_topics(bootstrap: &str, prefix: &str) -> BTreeMap<String, Vec<Vec<u8>>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("audit-reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    let mut out = BTreeMap::new();
    for topic in metadata.topics() {
        if !topic.name().starts_with(prefix) {
            continue;
        }
        let mut messages = Vec::new();
        for partition in topic.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic.name(), partition.id(), Duration::from_secs(10))
                .unwrap();
            if high <= low {
                continue;
            }
            let mut assignment = TopicPartitionList::new();
            assignment
                .add_partition_offset(topic.name(), partition.id(), Offset::Offset(low))
                .unwrap();
            consumer.assign(&assignment).unwrap();
            let mut next = low;
            let deadline = Instant::now() + Duration::from_secs(30);
            while next < high {
                assert!(
                    Instant::now() < deadline,
                    "reading {} timed out",
                    topic.name()
                );
                let Some(message) = consumer.poll(Duration::from_millis(500)) else {
                    continue;
                };
                let message = message.unwrap();
                next = message.offset() + 1;
                let mut bytes = message.key().unwrap_or_default().to_vec();
                bytes.push(b'\n');
                if let Some(headers) = message.headers() {
                    for header in headers.iter() {
                        bytes.extend_from_slice(header.key.as_bytes());
                        bytes.extend_from_slice(b": ");
                        bytes.extend_from_slice(header.value.unwrap_or_default());
                        bytes.push(b'\n');
                    }
                }
                bytes.extend_from_slice(message.payload().unwrap_or_default());
                messages.push(bytes);
            }
        }
        out.insert(topic.name().to_owned(), messages);
    }
    out
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn text(output: &Output) -> Vec<u8> {
    let mut bytes = output.stdout.clone();
    bytes.extend_from_slice(&output.stderr);
    bytes
}

/// The environment every seatwatch process of the audit gets: debug logs in JSON, and the
/// secrets ingest and alert read (`{ env = … }` in their configs).
fn audit_env(command: &mut Command) -> &mut Command {
    command
        .env("SEATWATCH_LOG", "debug")
        .env("SEATWATCH_LOG_FORMAT", "json")
        .env("AUDIT_CONSUMER_SECRET", CONSUMER_SECRET)
        .env("AUDIT_SECURITY_TOKEN", SECURITY_TOKEN)
        .env("AUDIT_WRONG_PASSWORD", WRONG_PASSWORD)
        .env("AUDIT_WRONG_CONSUMER_SECRET", WRONG_CONSUMER_SECRET)
        .env("AUDIT_WEBHOOK_KEY", WEBHOOK_KEY)
}

/// A simulator process with the audit's credentials; `org_file` serves another org.
fn start_simulator(dir: &Path, name: &str, org_file: Option<&Path>) -> (Proc, String) {
    let port = free_port();
    let mut command = seatwatch();
    command
        .args(["simulator", "--users", "100", "--listen"])
        .arg(format!("127.0.0.1:{port}"));
    if let Some(org_file) = org_file {
        command.arg("--org-file").arg(org_file);
    }
    audit_env(&mut command)
        .env("SEATWATCH_SIMULATOR_CONSUMER_KEY", CONSUMER_KEY)
        .env("SEATWATCH_SIMULATOR_CONSUMER_SECRET", CONSUMER_SECRET)
        .env("SEATWATCH_SIMULATOR_PASSWORD", PASSWORD)
        .env("SEATWATCH_SIMULATOR_SECURITY_TOKEN", SECURITY_TOKEN)
        .env("SEATWATCH_SIMULATOR_JWT_PUBLIC_KEY_FILE", PUBLIC_KEY);
    let mut proc = Proc::spawn(name, command, dir);
    let url = format!("http://127.0.0.1:{port}");
    wait_for(&format!("{name} to serve"), PATIENCE, || {
        proc.assert_running();
        http_get(&format!("{url}/healthz")).filter(|(status, _)| *status == 200)
    });
    (proc, url)
}

/// A service process; returns it and its ops URL.
fn start_service(dir: &Path, name: &str, args: &[&str], config: &Path) -> (Proc, String) {
    let port = free_port();
    let mut command = seatwatch();
    command
        .args(args)
        .arg("--config")
        .arg(config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"));
    audit_env(&mut command);
    (
        Proc::spawn(name, command, dir),
        format!("http://127.0.0.1:{port}"),
    )
}

#[test]
fn no_secret_leaks_into_logs_metrics_endpoints_or_topics() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Tansu::start(dir.path());
    let prefix = format!("audit-{}.", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let created = seatwatch()
        .args(["topics", "create", "--bootstrap-servers", &broker.bootstrap])
        .args(["--topic-prefix", &prefix, "--partitions", "3"])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "topics create: {}",
        String::from_utf8_lossy(&created.stderr)
    );

    // Two simulated orgs: the built-in one, and a copy under another org id for the JWT
    // bearer flow, so that the two orgs' syncs do not interleave in one org's snapshots.
    let dumped = seatwatch()
        .args(["simulator", "--users", "100", "--dump-org"])
        .output()
        .unwrap();
    assert!(
        dumped.status.success(),
        "{}",
        String::from_utf8_lossy(&dumped.stderr)
    );
    let org_id =
        seatwatch_simulator::ids::make_id(seatwatch_simulator::ids::ORG_PREFIX, 77_000_123);
    let other_id =
        seatwatch_simulator::ids::make_id(seatwatch_simulator::ids::ORG_PREFIX, 77_000_456);
    let dumped = String::from_utf8(dumped.stdout).unwrap();
    assert!(dumped.contains(&org_id), "the built-in org's id changed");
    let jwt_org = write(
        dir.path(),
        "jwt-org.json",
        &dumped.replace(&org_id, &other_id),
    );

    let (mut simulator, login_url) = start_simulator(dir.path(), "simulator", None);
    let (mut jwt_simulator, jwt_login_url) =
        start_simulator(dir.path(), "simulator-jwt", Some(&jwt_org));

    // ingest: two orgs that sign in, two that cannot. The password comes from a file,
    // the other secrets from the environment, the private key from the fixture file.
    let password_file = write(dir.path(), "password", &format!("{PASSWORD}\n"));
    let username = seatwatch_simulator::Credentials::demo().username;
    let kafka = format!(
        "[kafka]\nbootstrap_servers = \"{}\"\ntopic_prefix = \"{prefix}\"\ncreate_topics = false\n",
        broker.bootstrap
    );
    let password_org = |name: &str, secret_env: &str, password: &str| {
        format!(
            "[[orgs]]\nname = \"{name}\"\nlogin_url = \"{login_url}\"\n\
             consumer_key = \"{CONSUMER_KEY}\"\nusername = \"{username}\"\n\
             consumer_secret = {{ env = \"{secret_env}\" }}\npassword = {password}\n\
             security_token = {{ env = \"AUDIT_SECURITY_TOKEN\" }}\n"
        )
    };
    let password_ref = format!("{{ file = \"{}\" }}", password_file.display());
    let ingest_config = write(
        dir.path(),
        "ingest.toml",
        &format!(
            "poll_interval_secs = 5\nretry_base_ms = 50\n{kafka}\n{}\n{}\n{}\n\
             [[orgs]]\nname = \"jwt-org\"\nlogin_url = \"{jwt_login_url}\"\n\
             flow = \"jwt_bearer\"\nconsumer_key = \"{CONSUMER_KEY}\"\n\
             username = \"{username}\"\nprivate_key = {{ file = \"{PRIVATE_KEY}\" }}\n",
            password_org("good-org", "AUDIT_CONSUMER_SECRET", &password_ref),
            password_org(
                "wrong-password-org",
                "AUDIT_CONSUMER_SECRET",
                "{ env = \"AUDIT_WRONG_PASSWORD\" }"
            ),
            password_org(
                "wrong-secret-org",
                "AUDIT_WRONG_CONSUMER_SECRET",
                &password_ref
            ),
        ),
    );
    let transform_config = write(dir.path(), "transform.toml", &kafka);
    let (hook_url, receiver) = start_receiver();
    // A utilisation threshold every non-empty pool crosses, so that alerts surely fire.
    let alert_config = write(
        dir.path(),
        "alert.toml",
        &format!(
            "evaluate_interval_secs = 1\n{kafka}\n\
             [webhook]\nurl = \"{hook_url}\"\nsecret = {{ env = \"AUDIT_WEBHOOK_KEY\" }}\n\
             [rules.utilization]\nthreshold = 0.01\nclear_below = 0.005\n"
        ),
    );

    let (mut ingest, ingest_url) =
        start_service(dir.path(), "ingest", &["ingest", "run"], &ingest_config);
    let (mut transform, transform_url) =
        start_service(dir.path(), "transform", &["transform"], &transform_config);
    let (mut alert, alert_url) = start_service(dir.path(), "alert", &["alert"], &alert_config);

    // Hostile raw events, straight into the raw topic: malformed JSON and invalid UTF-8.
    let malformed: &[u8] = b"{\"org_id\": \"00Daudit\", \"object\": \"User\", \"record\": {";
    let not_utf8: &[u8] = b"{\"org_id\": \"\xff\xfe\", \"sync_id\": 1}";
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()
        .unwrap();
    let raw_topic = format!("{prefix}salesforce.usage.raw");
    for (key, value) in [("audit/malformed", malformed), ("audit/not-utf8", not_utf8)] {
        producer
            .send(
                BaseRecord::to(&raw_topic)
                    .key(key)
                    .payload(value)
                    .partition(0),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    // Wait until every path the audit covers has run.
    let dlq_topic = format!("{prefix}salesforce.usage.dlq");
    let license_topic = format!("{prefix}seats.license-state");
    wait_for(
        "seat state, dead letters and webhook retries",
        PATIENCE,
        || {
            for proc in [
                &mut simulator,
                &mut jwt_simulator,
                &mut ingest,
                &mut transform,
                &mut alert,
            ] {
                proc.assert_running();
            }
            let dead: Vec<Vec<u8>> = read_topic(&broker.bootstrap, &dlq_topic)
                .into_iter()
                .filter_map(|(_, value)| value)
                .collect();
            let state = read_topic(&broker.bootstrap, &license_topic);
            let log = ingest.log_text();
            (dead.iter().any(|v| v == malformed)
                && dead.iter().any(|v| v == not_utf8)
                && !state.is_empty()
                && log.contains("invalid_client")
                && log.contains("authentication failure")
                && receiver.refused.load(Ordering::SeqCst) >= REFUSALS
                && receiver.accepted.load(Ordering::SeqCst) >= 1)
                .then_some(())
        },
    );
    let signed_in = |org: &str| {
        ingest
            .log_text()
            .lines()
            .any(|line| line.contains("signed in to Salesforce") && line.contains(org))
    };
    wait_for("both good orgs to sign in", PATIENCE, || {
        (signed_in("good-org") && signed_in("jwt-org")).then_some(())
    });

    let mut haystacks = Haystacks::default();

    // The ops endpoints, while everything runs.
    for (name, url) in [
        ("ingest", &ingest_url),
        ("transform", &transform_url),
        ("alert", &alert_url),
    ] {
        for path in ["/metrics", "/healthz", "/readyz"] {
            let (status, body) = http_get(&format!("{url}{path}")).unwrap();
            assert_eq!(status, 200, "{name} {path}");
            haystacks.add(format!("{name} {path}"), body);
        }
    }
    for path in ["/api/v1/alerts", "/api/v1/silences"] {
        let (status, body) = http_get(&format!("{alert_url}{path}")).unwrap();
        assert_eq!(status, 200, "alert {path}");
        haystacks.add(format!("alert {path}"), body);
    }
    assert!(
        haystacks
            .text_of("alert /api/v1/alerts")
            .contains("utilization"),
        "alert lists its alerts"
    );
    assert!(haystacks
        .text_of("ingest /metrics")
        .contains("seatwatch_ingest_"));

    // One-shot commands that print configs and sign-in diagnoses.
    let mut run = |name: &str, args: &[&str], config: &Path| {
        let mut command = seatwatch();
        command.args(args).arg("--config").arg(config);
        let output = audit_env(&mut command).output().unwrap();
        haystacks.add(name, text(&output));
        output
    };
    let check = run("ingest check", &["ingest", "check"], &ingest_config);
    assert!(!check.status.success(), "two orgs cannot sign in");
    for (name, args, config) in [
        (
            "ingest --check-config",
            &["ingest", "run", "--check-config"][..],
            &ingest_config,
        ),
        (
            "transform --check-config",
            &["transform", "--check-config"][..],
            &transform_config,
        ),
        (
            "alert --check-config",
            &["alert", "--check-config"][..],
            &alert_config,
        ),
    ] {
        let output = run(name, args, config);
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&text(&output))
        );
    }
    let check_text = haystacks.text_of("ingest check");
    assert!(
        check_text.contains("wrong-password-org") && check_text.contains("wrong-secret-org"),
        "ingest check names the failing orgs:\n{check_text}"
    );

    // Shut down (the drain paths log too), then read every topic of the run.
    for proc in [
        &mut ingest,
        &mut transform,
        &mut alert,
        &mut simulator,
        &mut jwt_simulator,
    ] {
        let status = proc.terminate(Duration::from_secs(30));
        assert!(status.success(), "{} exited with {status}", proc.name);
    }
    let topics = read_topics(&broker.bootstrap, &prefix);
    assert!(topics.len() >= 7, "topics of the run: {:?}", topics.keys());
    for (topic, messages) in &topics {
        for (i, message) in messages.iter().enumerate() {
            haystacks.add(format!("topic {topic} message {i}"), message.clone());
        }
    }
    let dead_letters: String = topics[&dlq_topic]
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .collect();
    assert!(
        dead_letters.contains("error"),
        "dead letters carry their reason headers"
    );
    assert!(
        !topics[&format!("{prefix}seats.alerts")].is_empty(),
        "alerts were produced"
    );

    for (i, (headers, body)) in receiver.requests.lock().unwrap().iter().enumerate() {
        haystacks.add(format!("webhook request {i} headers"), headers.clone());
        haystacks.add(format!("webhook request {i} body"), body.clone());
    }

    let procs = [&ingest, &transform, &alert, &simulator, &jwt_simulator];
    for proc in procs {
        haystacks.add(format!("{} log", proc.name), proc.log_text());
    }

    // The audit saw what it audits.
    let log = |name: &str| haystacks.text_of(&format!("{name} log"));
    for name in ["ingest", "transform", "alert", "simulator"] {
        assert!(
            log(name).contains("\"level\":\"DEBUG\""),
            "{name} logged at debug level"
        );
    }
    let ingest_log = log("ingest");
    for (org, refusal) in [
        ("wrong-password-org", "authentication failure"),
        ("wrong-secret-org", "invalid_client"),
    ] {
        assert!(
            ingest_log
                .lines()
                .any(|line| line.contains(org) && line.contains(refusal)),
            "ingest logs {org}'s refusal ({refusal})"
        );
    }
    assert!(
        log("alert").contains("alert delivery failed; retrying"),
        "alert logs the webhook retries"
    );
    assert!(
        log("simulator").contains("token request refused"),
        "the simulator logs the refusals"
    );

    // No panic anywhere, and no secret in any form.
    for (source, bytes) in &haystacks.0 {
        assert!(
            !String::from_utf8_lossy(bytes).contains("panicked"),
            "{source} has a panic:\n{}",
            String::from_utf8_lossy(bytes)
        );
    }
    let needles = needles();
    let leaks = haystacks.leaks(&needles);
    assert!(
        leaks.is_empty(),
        "secrets leaked ({} sources audited):\n{}",
        haystacks.0.len(),
        leaks.join("\n")
    );
}

/// The audit's own machinery finds what it looks for.
#[test]
fn the_needles_find_every_encoding_of_a_secret() {
    let needles = needles();
    let mut haystacks = Haystacks::default();
    let form = format!(
        "grant_type=password&client_secret={}",
        percent_encode(CONSUMER_SECRET, true)
    );
    haystacks.add("form", form);
    haystacks.add(
        "basic",
        base64(format!("user:{WEBHOOK_KEY}").as_bytes(), false),
    );
    haystacks.add(
        "hex",
        format!("key={}", hex(SECURITY_TOKEN.as_bytes())).to_uppercase(),
    );
    let pem = std::fs::read_to_string(PRIVATE_KEY).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    haystacks.add("key", format!("{{\"key\":\"{}\"}}", &body[101..141]));
    haystacks.add("clean", "client_secret=[redacted]");
    let leaks = haystacks.leaks(&needles);
    for source in ["form", "basic", "hex", "key"] {
        assert!(
            leaks.iter().any(|l| l.starts_with(&format!("{source}:"))),
            "{source} not found: {leaks:?}"
        );
    }
    assert!(!leaks.iter().any(|l| l.starts_with("clean:")), "{leaks:?}");
    assert_eq!(base64(b"Man", false), "TWFu");
    assert_eq!(base64(b"Ma", false), "TWE");
    assert_eq!(percent_encode("a b+c", true), "a+b%2Bc");
}
