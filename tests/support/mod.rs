//! Helpers for the end-to-end tests: a tansu broker on a free loopback port, seatwatch
//! processes, and topic readers. Everything listens on 127.0.0.1 and picks its own port.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A child process killed on drop, with its stderr in a file for post-mortems.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut command: Command, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        command
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file));
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            name: name.into(),
            child,
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with a pid this test spawned and still owns (not yet reaped).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        wait_for(
            &format!("{} to exit after SIGTERM", self.name),
            timeout,
            || self.child.try_wait().unwrap(),
        )
    }

    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "{} exited early with {status}:\n{}",
                self.name,
                self.log_text()
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tansu broker on a free port with its own storage directory.
pub struct Tansu {
    pub bootstrap: String,
    pub proc: Proc,
}

impl Tansu {
    pub fn start(dir: &Path) -> Tansu {
        let port = free_port();
        Self::start_advertising(dir, port, port)
    }

    /// A broker behind a [`Cutter`]: clients bootstrap through the cutter and the broker
    /// advertises the cutter's address, so every connection goes through it.
    pub fn start_behind_cutter(dir: &Path) -> (Tansu, Cutter) {
        let port = free_port();
        let cutter = Cutter::start(port);
        let mut broker = Self::start_advertising(dir, port, cutter.port);
        broker.bootstrap = format!("127.0.0.1:{}", cutter.port);
        (broker, cutter)
    }

    fn start_advertising(dir: &Path, port: u16, advertised: u16) -> Tansu {
        let bin = std::env::var("TANSU_BIN").unwrap_or_else(|_| "tansu".into());
        let data = dir.join("tansu-data");
        std::fs::create_dir_all(&data).unwrap();
        let mut command = Command::new(&bin);
        command
            .arg("broker")
            .arg("--listener-url")
            .arg(format!("tcp://127.0.0.1:{port}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://127.0.0.1:{advertised}"))
            // tansu resolves a sqlite path against its working directory.
            .arg("--storage-engine")
            .arg("sqlite://tansu.db")
            .current_dir(&data)
            .env("RUST_LOG", "warn");
        let mut proc = Proc::spawn("tansu", command, dir);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_for(
            "tansu to accept connections",
            Duration::from_secs(30),
            || {
                proc.assert_running();
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
            },
        );
        Tansu {
            bootstrap: addr.to_string(),
            proc,
        }
    }
}

/// A TCP forwarder on a loopback port that can cut every connection to its upstream and
/// refuse new ones until restored: a broker that goes away and comes back, without
/// restarting the broker.
pub struct Cutter {
    pub port: u16,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Cutter {
    pub fn start(upstream: u16) -> Cutter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (accept_up, accept_open) = (up.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !accept_up.load(Ordering::SeqCst) {
                    continue; // dropped: the connection closes at once
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let mut open = accept_open.lock().unwrap();
                for stream in [&client, &server] {
                    open.push(stream.try_clone().unwrap());
                }
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Cutter { port, up, open }
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` into `to` on a thread until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}

/// The `seatwatch` binary built for these tests.
pub fn seatwatch() -> Command {
    Command::new(env!("CARGO_BIN_EXE_seatwatch"))
}

/// Reads every message of `topic` currently in the broker: key → last value (None for
/// tombstones), in offset order per partition.
pub fn read_topic(bootstrap: &str, topic: &str) -> Vec<(String, Option<Vec<u8>>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("test-reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = metadata.topics()[0].partitions().len() as i32;

    let mut out = Vec::new();
    for partition in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .unwrap();
        if high <= low {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(low))
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let mut next = low;
        let deadline = Instant::now() + Duration::from_secs(30);
        while next < high {
            assert!(
                Instant::now() < deadline,
                "reading {topic}/{partition} timed out"
            );
            if let Some(message) = consumer.poll(Duration::from_millis(500)) {
                let message = message.unwrap();
                next = message.offset() + 1;
                let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
                out.push((key, message.payload().map(<[u8]>::to_vec)));
            }
        }
    }
    out
}

/// The latest value per key (compaction's view).
pub fn latest(messages: Vec<(String, Option<Vec<u8>>)>) -> BTreeMap<String, Option<Vec<u8>>> {
    messages.into_iter().collect()
}

/// Fetches a URL on loopback and returns (status, body).
pub fn http_get(url: &str) -> Option<(u16, String)> {
    let response = reqwest::blocking::get(url).ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().ok()?))
}

/// A tansu broker that can be stopped (SIGTERM or SIGKILL) and started again on the same
/// storage: the same data directory, sqlite file and listener port, behind a [`Cutter`]
/// whose port the broker advertises and the clients bootstrap from. To the clients it is
/// one broker whose process goes away and comes back. Run N logs to `tansu-run<N>.log`.
pub struct RestartableTansu {
    /// The cutter's address: what the clients know.
    pub bootstrap: String,
    pub cutter: Cutter,
    pub proc: Proc,
    dir: PathBuf,
    port: u16,
    runs: usize,
}

impl RestartableTansu {
    pub fn start(dir: &Path) -> RestartableTansu {
        let port = free_port();
        let cutter = Cutter::start(port);
        let proc = Self::run(dir, port, cutter.port, 1);
        RestartableTansu {
            bootstrap: format!("127.0.0.1:{}", cutter.port),
            cutter,
            proc,
            dir: dir.to_owned(),
            port,
            runs: 1,
        }
    }

    /// The log of the current (or last) run of the broker.
    pub fn log(&self) -> PathBuf {
        self.proc.log.clone()
    }

    /// Sends `signal` to the broker process and waits until it exited; returns its status
    /// and how long it took to exit.
    pub fn stop(
        &mut self,
        signal: libc::c_int,
        timeout: Duration,
    ) -> (std::process::ExitStatus, Duration) {
        let sent = Instant::now();
        let pid = self.proc.child.id() as libc::pid_t;
        // SAFETY: kill(2) with the pid of a child this helper spawned and has not reaped.
        unsafe { libc::kill(pid, signal) };
        let status = wait_for("tansu to exit", timeout, || {
            self.proc.child.try_wait().unwrap()
        });
        (status, sent.elapsed())
    }

    /// Starts the broker again on the same port and storage, once the last run exited.
    pub fn start_again(&mut self) {
        assert!(
            self.proc.child.try_wait().unwrap().is_some(),
            "tansu is still running"
        );
        self.runs += 1;
        self.proc = Self::run(&self.dir, self.port, self.cutter.port, self.runs);
    }

    fn run(dir: &Path, port: u16, advertised: u16, run: usize) -> Proc {
        use std::io::Write;
        let bin = std::env::var("TANSU_BIN").unwrap_or_else(|_| "tansu".into());
        let data = dir.join("tansu-data");
        std::fs::create_dir_all(&data).unwrap();
        let log = dir.join(format!("tansu-run{run}.log"));
        let mut file = std::fs::File::create(&log).unwrap();
        writeln!(file, "=== test: tansu run {run} on 127.0.0.1:{port} ===").unwrap();
        let mut command = Command::new(&bin);
        command
            .arg("broker")
            .arg("--listener-url")
            .arg(format!("tcp://127.0.0.1:{port}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://127.0.0.1:{advertised}"))
            // tansu resolves a sqlite path against its working directory.
            .arg("--storage-engine")
            .arg("sqlite://tansu.db")
            .current_dir(&data)
            // FAULT_TANSU_LOG (e.g. `warn,tansu_storage=debug`) for post-mortems.
            .env(
                "RUST_LOG",
                std::env::var("FAULT_TANSU_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file));
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting tansu (run {run}): {e}"));
        let mut proc = Proc {
            name: format!("tansu (run {run})"),
            child,
            log,
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_for(
            "tansu to accept connections",
            Duration::from_secs(30),
            || {
                proc.assert_running();
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
            },
        );
        proc
    }
}

/// Serves `app` on a free loopback port from a thread (and runtime) of its own, for the
/// tests' webhook receivers; returns where it listens.
pub fn serve_on_loopback(app: axum::Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    addr
}

/// The environment variables the tests' ingest configs read the simulator's demo secrets
/// from (`{ env = "..." }`); [`spawn_service`] sets them.
pub const SF_CONSUMER_SECRET_ENV: &str = "TEST_SF_CONSUMER_SECRET";
pub const SF_PASSWORD_ENV: &str = "TEST_SF_PASSWORD";
pub const SF_SECURITY_TOKEN_ENV: &str = "TEST_SF_SECURITY_TOKEN";

/// Starts `seatwatch <args> --config <config>` on a free ops port, logging JSON at info,
/// with the simulator's demo secrets in the environment; returns it and its ops URL.
pub fn spawn_service(name: &str, args: &[&str], config: &Path, dir: &Path) -> (Proc, String) {
    spawn_service_with(name, args, config, dir, &[])
}

/// [`spawn_service`] with more environment variables.
pub fn spawn_service_with(
    name: &str,
    args: &[&str],
    config: &Path,
    dir: &Path,
    env: &[(&str, &str)],
) -> (Proc, String) {
    use secrecy::ExposeSecret;
    let port = free_port();
    let credentials = seatwatch_simulator::Credentials::demo();
    let mut command = seatwatch();
    command
        .args(args)
        .arg("--config")
        .arg(config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .env("SEATWATCH_LOG", "info,librdkafka=warn")
        .env("SEATWATCH_LOG_FORMAT", "json")
        .env(
            SF_CONSUMER_SECRET_ENV,
            credentials.consumer_secret.expose_secret(),
        )
        .env(SF_PASSWORD_ENV, credentials.password.expose_secret())
        .env(
            SF_SECURITY_TOKEN_ENV,
            credentials.security_token.expose_secret(),
        )
        .envs(env.iter().copied());
    (
        Proc::spawn(name, command, dir),
        format!("http://127.0.0.1:{port}"),
    )
}
