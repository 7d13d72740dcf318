//! A Salesforce REST API simulator served over HTTP, for seatwatch's tests and demos.
//!
//! It answers the calls seatwatch's ingest makes, the way Salesforce does on the wire: the
//! OAuth username-password token endpoint, SOQL queries with pagination, the versions list and
//! the limits resource, with Salesforce's error bodies, headers and datetime format. The data
//! comes from a simulated [`Org`] (built in, or loaded from a JSON file) whose seat counts are
//! derived, so tests can change users and assignments through a [`SimulatorHandle`] and see
//! consistent results. `start` runs it in the background for tests; `run` serves until
//! shutdown for the `seatwatch` binary. The org, SOQL and HTTP pieces live in their modules.

mod config;
mod demo;
mod error;
mod faults;
mod http;
pub mod ids;
pub mod org;
mod schema;
pub mod sftime;
mod soql;
mod state;
mod view;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{
    Credentials, OrgSource, SimulatorArgs, SimulatorConfig, DEFAULT_API_DAILY_LIMIT,
    DEFAULT_DEMO_STEP_SECS, DEFAULT_PAGE_SIZE,
};
pub use demo::{apply_step as apply_demo_step, schedule as demo_schedule, DemoAction, IDLE_DAYS};
pub use error::SimulatorError;
pub use faults::Faults;
pub use org::Org;
pub use state::SimulatorHandle;

use state::Shared;

/// How long `stop` waits for open connections to finish before cutting them.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A simulator serving in the background.
pub struct RunningSimulator {
    addr: SocketAddr,
    base_url: String,
    handle: SimulatorHandle,
    stop: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    demo: Option<JoinHandle<()>>,
}

impl RunningSimulator {
    /// `http://127.0.0.1:PORT`: the login URL, and the instance URL tokens carry.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle to inspect and change the simulator's state.
    pub fn handle(&self) -> SimulatorHandle {
        self.handle.clone()
    }

    /// Stops serving and waits for the server and demo tasks to end.
    pub async fn stop(self) {
        if let Err(e) = self.finish().await {
            tracing::warn!(error = %e, "simulator stopped with an error");
        }
    }

    /// Stops serving; reports a server failure.
    async fn finish(self) -> Result<(), SimulatorError> {
        self.stop.cancel();
        if let Some(demo) = self.demo {
            let _ = demo.await;
        }
        let mut server = self.server;
        match tokio::time::timeout(STOP_GRACE, &mut server).await {
            Ok(Ok(result)) => result.map_err(SimulatorError::Serve),
            Ok(Err(join)) => Err(SimulatorError::Serve(std::io::Error::other(join))),
            Err(_) => {
                // Connections held open past the grace period are cut.
                server.abort();
                Ok(())
            }
        }
    }
}

/// Builds the org a configuration describes; a built-in org is generated for `now`.
pub fn load_org(
    config: &SimulatorConfig,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Org, SimulatorError> {
    let org = match &config.org {
        OrgSource::BuiltIn { users } => {
            org::builtin::built_in(*users, now, &config.credentials.username)
        }
        OrgSource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| {
                SimulatorError::OrgFileUnreadable {
                    path: path.clone(),
                    source,
                }
            })?;
            let invalid = |reason: String| SimulatorError::OrgFileInvalid {
                path: path.clone(),
                reason,
            };
            let org: Org = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
            org.validate().map_err(invalid)?;
            org
        }
    };

    // The token endpoint logs in as this user, so it must exist.
    if org.user_by_username(&config.credentials.username).is_none() {
        return Err(SimulatorError::InvalidConfig(format!(
            "the integration user {} is not in the org; add that user to the org file or set \
             SEATWATCH_SIMULATOR_USERNAME to a username the org has",
            config.credentials.username
        )));
    }
    Ok(org)
}

/// Starts serving in the background on `config.listen_addr`. Cancelling `shutdown` (or
/// calling [`RunningSimulator::stop`]) stops it.
pub async fn start(
    config: SimulatorConfig,
    shutdown: CancellationToken,
) -> Result<RunningSimulator, SimulatorError> {
    config.validate()?;
    let org = load_org(&config, sftime::now())?;

    // Bind first: the base URL needs the real port.
    let addr = config.listen_addr;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| SimulatorError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| SimulatorError::Bind { addr, source })?;
    let base_url = format!("http://{addr}");
    let shared = Arc::new(Shared::new(
        org,
        config.credentials,
        config.api_daily_limit,
        config.page_size,
        base_url.clone(),
    ));

    // The server and the demo stop together, on shutdown or on `stop`.
    let stop = shutdown.child_token();
    let app = http::router(Arc::clone(&shared)).into_make_service_with_connect_info::<SocketAddr>();
    let serve = axum::serve(listener, app).with_graceful_shutdown(stop.clone().cancelled_owned());
    let server = tokio::spawn(async move { serve.await });
    let demo = config.demo.then(|| {
        let task = demo::run(Arc::clone(&shared), config.demo_step_secs, stop.clone());
        tokio::spawn(task)
    });
    tracing::info!(%addr, demo = config.demo, "Salesforce simulator listening");

    let handle = SimulatorHandle { shared };
    Ok(RunningSimulator {
        addr,
        base_url,
        handle,
        stop,
        server,
        demo,
    })
}

/// Serves until `shutdown` is cancelled.
pub async fn run(
    config: SimulatorConfig,
    shutdown: CancellationToken,
) -> Result<(), SimulatorError> {
    let running = start(config, shutdown.clone()).await?;
    shutdown.cancelled().await;
    running.finish().await
}

/// What the command line asks for: print the org (`--dump-org`) or serve until shutdown.
pub async fn run_cli(
    args: SimulatorArgs,
    shutdown: CancellationToken,
) -> Result<(), SimulatorError> {
    let dump = args.dump_org;
    let config = args.into_config()?;
    if dump {
        let org = load_org(&config, sftime::now())?;
        // A closed pipe (`--dump-org | head`) ends the output quietly.
        use std::io::Write;
        let _ = writeln!(std::io::stdout().lock(), "{}", dump_org(&org)?);
        return Ok(());
    }
    run(config, shutdown).await
}

/// The org as the JSON data file `OrgSource::File` loads.
pub fn dump_org(org: &Org) -> Result<String, SimulatorError> {
    serde_json::to_string_pretty(org).map_err(SimulatorError::Dump)
}
