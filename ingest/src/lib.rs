//! seatwatch ingest: signs in to each configured Salesforce org, reads its licences,
//! seat assignments and users, and emits them as raw events to Kafka with a sync-status
//! record per sync.
//!
//! Each org runs in its own task on its own schedule; one org failing (bad credentials,
//! quota, an outage) never stops another. The work is in [`run`]; `main` only parses
//! flags. [`sync_once`] is the one-shot "initial fetch" behind `ingest sync --once`.

pub mod check;
pub mod config;
pub mod cursor;
pub mod metrics;
pub mod progress;
pub mod quota;
pub mod salesforce;
pub mod summary;
pub mod sync;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use rdkafka::producer::{FutureProducer, Producer};
use seatwatch_common::http::{self, Health};
use seatwatch_common::kafka::{ensure_topics, watch_broker, ServiceContext, Topics};
use seatwatch_common::retry;
use seatwatch_common::{shutdown::DRAIN_DEADLINE, Shutdown};
use seatwatch_schemas::{Encoder, EncodingError, SyncStatus};

pub use config::{AuthFlow, IngestConfig, IngestOverrides, OrgConfig};
use cursor::ObjectCursor;
use metrics::IngestMetrics;
use progress::{Progress, Silent};
use quota::QuotaGovernor;
use salesforce::SalesforceClient;
use seatwatch_common::config::KafkaOverrides;
use sync::{sync_org, CursorSlot, Emitter, SyncError, SyncPolicy};

/// ingest could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    LoadConfig(#[from] seatwatch_common::config::ConfigError),
    #[error(transparent)]
    Topics(#[from] seatwatch_common::kafka::TopicError),
    #[error("Kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("ops server: {0}")]
    Io(#[from] std::io::Error),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(
        "cannot use the schema registry: {0}; check kafka.schema_registry_url, or leave it \
         out to write single-object encoding"
    )]
    Registry(#[from] EncodingError),
    /// Shutdown came while starting; the callers end cleanly on it.
    #[error("stopped while starting")]
    Stopped,
}

/// Runs ingest until `shutdown`, with its own ops server on `config.listen_addr`.
pub async fn run(config: IngestConfig, shutdown: Shutdown) -> Result<(), IngestError> {
    let registry = Registry::new();
    let health = Health::new();
    let router = http::router(registry.clone(), health.clone());
    let (addr, server) = http::serve(config.listen_addr, router, shutdown.clone()).await?;
    tracing::info!(%addr, "ops server listening");

    let result = run_with(config, shutdown.clone(), &registry, health).await;
    shutdown.cancel();
    let _ = server.await;
    result
}

/// Runs ingest until `shutdown`, registering metrics on `registry` and reporting
/// readiness on `health`; the caller serves them.
pub async fn run_with(
    config: IngestConfig,
    shutdown: Shutdown,
    registry: &Registry,
    health: Arc<Health>,
) -> Result<(), IngestError> {
    config.validate().map_err(IngestError::Config)?;
    let metrics = IngestMetrics::register(registry)?;
    let clients = build_clients(&config)?;
    // Reaching the broker can take its timeouts; a shutdown meanwhile ends the start.
    let started = async {
        let emitter = connect(&config, &health, &shutdown).await?;
        let cursors = load_cursors(&config, &emitter, &health).await?;
        Ok::<_, IngestError>((Arc::new(emitter), cursors))
    };
    let (emitter, cursors) = tokio::select! {
        biased;
        _ = shutdown.cancelled() => return Ok(()),
        started = started => match started {
            Err(IngestError::Stopped) => return Ok(()),
            started => started?,
        },
    };
    warn_about_password_flow(&config);
    health.set_ready();
    let watchdog = tokio::spawn({
        let (kafka, health, shutdown) = (config.kafka.clone(), health.clone(), shutdown.clone());
        async move { watch_broker(&kafka, "ingest", health, shutdown).await }
    });

    let tasks: Vec<_> = clients
        .into_iter()
        .zip(&config.orgs)
        .map(|(client, org)| {
            // Each org has its own schedule and quota shares.
            let schedule = Schedule {
                interval: Duration::from_secs(config.poll_interval_secs_for(org)),
                quota_pause: Duration::from_secs(config.quota_pause_secs),
                policy: policy(&config, org),
            };
            let emitter = emitter.clone();
            let metrics = metrics.clone();
            let shutdown = shutdown.clone();
            let cursor = CursorSlot::new(cursors.clone());
            tokio::spawn(poll_org(
                client, emitter, metrics, schedule, cursor, shutdown,
            ))
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }

    flush(&emitter.producer).await;
    if let Ok(Err(error)) = watchdog.await {
        tracing::warn!(%error, "the broker watchdog could not start");
    }
    Ok(())
}

/// Syncs every configured org once, then returns each org's status. Fails only when
/// ingest cannot start; per-org failures are in the statuses, and one org failing does
/// not keep the next from its sync.
pub async fn sync_once(
    config: IngestConfig,
    shutdown: Shutdown,
) -> Result<Vec<SyncStatus>, IngestError> {
    sync_once_showing(config, shutdown, &Silent).await
}

/// [`sync_once`], reporting each object's progress to `progress` as it is read.
pub async fn sync_once_showing(
    config: IngestConfig,
    shutdown: Shutdown,
    progress: &dyn Progress,
) -> Result<Vec<SyncStatus>, IngestError> {
    config.validate().map_err(IngestError::Config)?;
    let health = Health::new();
    let clients = build_clients(&config)?;
    let started = async {
        let emitter = connect(&config, &health, &shutdown).await?;
        let cursors = load_cursors(&config, &emitter, &health).await?;
        Ok::<_, IngestError>((emitter, cursors))
    };
    let (emitter, cursors) = tokio::select! {
        biased;
        _ = shutdown.cancelled() => return Ok(Vec::new()),
        started = started => match started {
            Err(IngestError::Stopped) => return Ok(Vec::new()),
            started => started?,
        },
    };
    warn_about_password_flow(&config);

    let mut statuses = Vec::new();
    for (mut client, org) in clients.into_iter().zip(&config.orgs) {
        let policy = policy(&config, org);
        let mut cursor = CursorSlot::new(cursors.clone());
        let sync = sync_org(
            &mut client,
            &emitter,
            &policy,
            &mut cursor,
            None,
            progress,
            &shutdown,
        );
        let (status, result) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            done = sync => done,
        };
        if let Err(e) = &result {
            tracing::error!(org = %client.org_name(), error = %e, "sync failed");
        }
        statuses.push(status);
    }
    flush(&emitter.producer).await;
    Ok(statuses)
}

/// Checks a configuration without connecting to anything: values, login URLs, and that
/// every secret can be read from its source.
pub fn check_config(config: &IngestConfig) -> Result<(), IngestError> {
    config.validate().map_err(IngestError::Config)?;
    build_clients(config)?;
    config
        .kafka
        .client_config()
        .map_err(|e| IngestError::Config(format!("kafka.secret_properties: {e}")))?;
    Ok(())
}

/// Checks the topics, registers the sync-status schema when a registry is configured, and
/// creates the producer.
async fn connect(
    config: &IngestConfig,
    health: &Health,
    shutdown: &Shutdown,
) -> Result<Emitter, IngestError> {
    health.set_not_ready("checking topics");
    let topics = Topics::new(&config.kafka.topic_prefix);
    let partitions = ensure_topics(&config.kafka, &topics.specs()).await?;

    health.set_not_ready("registering schemas");
    let url = config.kafka.schema_registry_url.as_deref();
    let encoder = Encoder::from_url(url).map_err(EncodingError::from)?;
    let registered = retry::until_done(
        "schema registry",
        shutdown,
        EncodingError::is_retriable,
        || encoder.register::<SyncStatus>(&topics.sync_status),
    )
    .await?;
    if registered.is_none() {
        return Err(IngestError::Stopped);
    }

    let producer: FutureProducer<ServiceContext> = config
        .kafka
        .producer_config("seatwatch-ingest")
        .map_err(|e| IngestError::Config(e.to_string()))?
        .create_with_context(ServiceContext { service: "ingest" })?;
    Ok(Emitter {
        producer,
        encoder,
        raw_partitions: partitions[&topics.raw],
        status_partitions: partitions[&topics.sync_status],
        cursor_partitions: partitions[&topics.ingest_cursors],
        topics,
    })
}

fn build_clients(config: &IngestConfig) -> Result<Vec<SalesforceClient>, IngestError> {
    config
        .orgs
        .iter()
        .map(|org| {
            SalesforceClient::new(config, org).map_err(|e| IngestError::Config(e.to_string()))
        })
        .collect()
}

/// The username-password flow is on its way out; say so once, at start, when in use.
fn warn_about_password_flow(config: &IngestConfig) {
    let orgs: Vec<&str> = config
        .orgs
        .iter()
        .filter(|o| o.flow == AuthFlow::Password)
        .map(|o| o.name.as_str())
        .collect();
    if orgs.is_empty() {
        return;
    }
    tracing::warn!(
        orgs = orgs.join(","),
        "signing in with the OAuth username-password flow: Salesforce blocks it by default \
         in orgs created since Summer '23 and has announced its retirement for February \
         2027; plan a move to the client-credentials or JWT bearer flow"
    );
}

/// Reads the incremental cursors of every org from the cursor topic.
async fn load_cursors(
    config: &IngestConfig,
    emitter: &Emitter,
    health: &Health,
) -> Result<Arc<HashMap<String, ObjectCursor>>, IngestError> {
    health.set_not_ready("loading cursors");
    let cursors = cursor::load(&config.kafka, &emitter.topics.ingest_cursors).await?;
    tracing::info!(cursors = cursors.len(), "incremental cursors loaded");
    Ok(Arc::new(cursors))
}

/// How `org` is synced: its own quota shares (or the global ones) and the global reads.
fn policy(config: &IngestConfig, org: &OrgConfig) -> SyncPolicy {
    let (max_run_share, max_total_share) = config.quota_shares_for(org);
    SyncPolicy {
        governor: QuotaGovernor {
            max_run_share,
            max_total_share,
        },
        user_lookback: Duration::from_secs(config.user_lookback_secs),
        full_sync_interval: Duration::from_secs(config.full_sync_interval_secs),
        login_history: config
            .login_history_for(org)
            .then(|| config.login_history_window()),
    }
}

/// When an org is synced.
#[derive(Clone, Copy)]
struct Schedule {
    interval: Duration,
    quota_pause: Duration,
    policy: SyncPolicy,
}

/// Syncs one org every `interval` until shutdown; after a sync paused for quota, waits
/// `quota_pause` first.
async fn poll_org(
    mut client: SalesforceClient,
    emitter: Arc<Emitter>,
    metrics: IngestMetrics,
    schedule: Schedule,
    mut cursor: CursorSlot,
    shutdown: Shutdown,
) {
    let org = client.org_name().to_owned();
    let mut last_success_at = None;
    let mut ticker = tokio::time::interval(schedule.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut counted = Counted::default();

    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let started = std::time::Instant::now();
        // A shutdown abandons the sync where it is (HTTP calls, retries, backoff): its
        // events lack their end markers and its cursor did not move, so nothing is lost.
        let sync = sync_org(
            &mut client,
            &emitter,
            &schedule.policy,
            &mut cursor,
            last_success_at,
            &Silent,
            &shutdown,
        );
        let (status, result) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                tracing::info!(org = %org, "sync abandoned for shutdown");
                break;
            }
            done = sync => done,
        };
        last_success_at = status.last_success_at;
        counted.record(&metrics, &org, &client, &status, started.elapsed());

        match result {
            Ok(()) => tracing::info!(org = %org, sync_id = %status.sync_id,
                api_calls = status.api_calls, records = ?status.records, "sync succeeded"),
            Err(SyncError::Cancelled) => break,
            Err(e) if status.outcome == seatwatch_schemas::SyncOutcome::PausedForQuota => {
                tracing::warn!(org = %org, error = %e,
                    pause_secs = schedule.quota_pause.as_secs(), "sync paused for quota");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(schedule.quota_pause) => {}
                }
            }
            Err(e) => {
                let (outcome, class) = e.outcome();
                tracing::error!(org = %org, outcome = outcome.as_str(), class, error = %e,
                    "sync failed");
            }
        }
    }
}

/// The client's cumulative counters as last exported, so metrics grow by deltas.
#[derive(Default)]
struct Counted {
    api_calls: u64,
    retries: u64,
    logins: u64,
}

impl Counted {
    fn record(
        &mut self,
        metrics: &IngestMetrics,
        org: &str,
        client: &SalesforceClient,
        status: &SyncStatus,
        elapsed: Duration,
    ) {
        metrics
            .syncs
            .with_label_values(&[org, status.outcome.as_str()])
            .inc();
        metrics
            .sync_duration
            .with_label_values(&[org])
            .observe(elapsed.as_secs_f64());
        metrics
            .api_calls
            .with_label_values(&[org])
            .inc_by(client.api_calls - self.api_calls);
        metrics
            .retries
            .with_label_values(&[org])
            .inc_by(client.retries - self.retries);
        metrics
            .logins
            .with_label_values(&[org])
            .inc_by(client.logins - self.logins);
        self.api_calls = client.api_calls;
        self.retries = client.retries;
        self.logins = client.logins;

        if status.outcome == seatwatch_schemas::SyncOutcome::Success {
            for (object, count) in &status.records {
                metrics
                    .records
                    .with_label_values(&[org, object])
                    .inc_by(*count as u64);
            }
            if let Some(at) = status.last_success_at {
                metrics
                    .last_success
                    .with_label_values(&[org])
                    .set(at / 1000);
            }
        }
        if let (Some(used), Some(limit)) = (status.api_used, status.api_limit) {
            metrics.api_used.with_label_values(&[org]).set(used);
            metrics.api_limit.with_label_values(&[org]).set(limit);
        }
    }
}

/// Waits for the producer's queue to drain, within the shutdown deadline.
async fn flush(producer: &FutureProducer<ServiceContext>) {
    let producer = producer.clone();
    let flushed = tokio::task::spawn_blocking(move || producer.flush(DRAIN_DEADLINE)).await;
    if let Ok(Err(e)) = flushed {
        tracing::error!(error = %e, "events still queued at shutdown were not delivered");
    }
}

/// `seatwatch ingest` flags. Secrets are never flags: the config names their sources.
#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// TOML config file (see the README's config reference).
    #[arg(long, env = "SEATWATCH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Kafka bootstrap servers, host:port[,host:port…].
    #[arg(long)]
    pub bootstrap_servers: Option<String>,
    /// Prefix of every topic name, e.g. `prod.`.
    #[arg(long)]
    pub topic_prefix: Option<String>,
    /// Seconds between syncs of an org.
    #[arg(long)]
    pub poll_interval_secs: Option<u64>,
}

impl IngestArgs {
    /// Loads the config: file, then `SEATWATCH_*` environment, then these flags.
    pub fn load(&self) -> Result<IngestConfig, IngestError> {
        let overrides = IngestOverrides {
            listen_addr: self.listen,
            poll_interval_secs: self.poll_interval_secs,
            kafka: KafkaOverrides {
                bootstrap_servers: self.bootstrap_servers.as_deref(),
                topic_prefix: self.topic_prefix.as_deref(),
            },
        };
        Ok(seatwatch_common::config::load(
            self.config.as_deref(),
            &overrides,
        )?)
    }
}
