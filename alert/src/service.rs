//! Starting, running and stopping the alert service.
//!
//! [`run`] is the service as deployed: it serves `/metrics`, `/healthz` and `/readyz`,
//! then runs [`run_with`]. [`run_with`] is the service without its own server, for hosts
//! that bring their own registry and health (the umbrella binary's demo): it checks the
//! topics, spawns the evaluator and the notifier, and on shutdown gives them
//! [`DRAIN_DEADLINE`] to finish in-flight work before returning.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus::Registry;
use seatwatch_common::http::{self, Health};
use seatwatch_common::kafka::{ensure_topics, watch_broker, Topics};
use seatwatch_common::shutdown::DRAIN_DEADLINE;
use seatwatch_common::Shutdown;
use seatwatch_schemas::Alert;
use tokio::sync::mpsc;
use tokio::task::{Id, JoinError, JoinSet};

use crate::alertmanager::AlertmanagerSink;
use crate::config::AlertConfig;
use crate::controls::{self, Controls};
use crate::evaluator::Evaluator;
use crate::metrics::Metrics;
use crate::notify::{ChannelSink, LogSink, Notifier, Sink};
use crate::webhook::WebhookSink;
use crate::AlertError;

/// What a host passes to [`run_with`] besides the config.
pub struct RunOptions {
    /// Where the service registers its metrics (once per registry).
    pub registry: Registry,
    /// Flipped to ready once the evaluator caught up and the notifier joined its group.
    pub health: Arc<Health>,
    /// An extra sink that receives every alert transition alongside the log and webhook
    /// sinks. The notifier waits while the channel is full.
    pub sink: Option<mpsc::Sender<Alert>>,
    /// Acknowledgements and silences, set through [`controls::router`].
    pub controls: Arc<Controls>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            registry: Registry::new(),
            health: Health::new(),
            sink: None,
            controls: Controls::new(),
        }
    }
}

/// Runs the alert service with its own operations server until `shutdown`.
pub async fn run(config: AlertConfig, shutdown: Shutdown) -> Result<(), AlertError> {
    config.validate()?;
    let options = RunOptions::default();

    // The server stops with the service, also when the service fails.
    let ops_stop = shutdown.child_token();
    let api_token = config.api_token.as_ref().map(|t| t.resolve()).transpose()?;
    if api_token.is_none() {
        tracing::warn!("no api_token configured: anyone reaching the ops port can acknowledge and silence alerts");
    }
    let router = http::router(options.registry.clone(), options.health.clone())
        .merge(controls::router(options.controls.clone(), api_token));
    let addr = config.listen_addr;
    let (bound, server) = http::serve(addr, router, ops_stop.clone())
        .await
        .map_err(|source| AlertError::Bind { addr, source })?;
    tracing::info!(%bound, "serving /metrics, /healthz, /readyz and /api/v1");

    let result = run_with(config, shutdown, options).await;
    ops_stop.cancel();
    if let Err(error) = server.await {
        tracing::warn!(%error, "ops server task failed");
    }
    result
}

/// Runs the alert service on a caller's registry and health, without a server.
pub async fn run_with(
    config: AlertConfig,
    shutdown: Shutdown,
    options: RunOptions,
) -> Result<(), AlertError> {
    config.validate()?;
    let metrics = Metrics::register(&options.registry)?;
    let alertmanager = config
        .alertmanager
        .as_ref()
        .map(AlertmanagerSink::new)
        .transpose()?
        .map(Arc::new);
    let sinks = sinks(&config, options.sink, alertmanager.clone())?;
    for sink in &sinks {
        metrics.touch_sink(sink.name());
    }
    let readiness = Readiness::new(options.health.clone());

    // Topics first: without them there is nothing to consume.
    options.health.set_not_ready("checking topics");
    let topics = Topics::new(&config.kafka.topic_prefix);
    let specs = topics.specs();
    let counts = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        counts = ensure_topics(&config.kafka, &specs) => counts?,
    };
    let partitions = common_partition_count(&topics, &counts)?;

    let stop = shutdown.child_token();
    let watchdog = {
        let (kafka, health, stop) = (config.kafka.clone(), options.health.clone(), stop.clone());
        tokio::spawn(async move { watch_broker(&kafka, "alert", health, stop).await })
    };
    let evaluator = Evaluator::new(
        &config,
        partitions,
        metrics.clone(),
        readiness.clone(),
        options.controls.clone(),
        alertmanager,
    )?;
    let notifier = Notifier::new(&config, sinks, metrics, readiness, options.controls)?;

    // With a registry, what the evaluator writes is registered before anything is read.
    options.health.set_not_ready("registering schemas");
    if !evaluator.register_schemas(&shutdown).await? {
        stop.cancel();
        return Ok(());
    }
    options.health.set_not_ready("catching up");
    let mut tasks = Tasks::default();
    tasks.spawn("evaluator", evaluator.run(stop.clone()));
    tasks.spawn("notifier", notifier.run(stop.clone()));
    tracing::info!(partitions, "alert service started");

    // The tasks end only on shutdown; one ending before is a failure of the service.
    // Biased: the tasks stop on a child of `shutdown`, so once it is cancelled both
    // branches may be ready, and a task that ended because of it is no failure.
    let early = tokio::select! {
        biased;
        _ = shutdown.cancelled() => None,
        ended = tasks.next() => ended,
    };
    stop.cancel();
    options.health.set_not_ready("shutting down");
    let first = match early {
        None => Ok(()),
        Some((name, Ok(Ok(())))) => Err(AlertError::Task {
            task: name,
            reason: "stopped before shutdown".into(),
        }),
        Some((name, joined)) => task_result(name, joined),
    };
    let drained = tasks.drain().await;
    if let Ok(Err(error)) = watchdog.await {
        tracing::warn!(%error, "the broker watchdog could not start");
    }
    tracing::info!("alert service stopped");
    first.and(drained)
}

/// The sinks every alert goes to: the log, the webhook and Alertmanager if configured,
/// the caller's channel if given.
fn sinks(
    config: &AlertConfig,
    channel: Option<mpsc::Sender<Alert>>,
    alertmanager: Option<Arc<AlertmanagerSink>>,
) -> Result<Vec<Arc<dyn Sink>>, AlertError> {
    let mut sinks: Vec<Arc<dyn Sink>> = vec![Arc::new(LogSink)];
    if let Some(alertmanager) = alertmanager {
        tracing::info!("Alertmanager sink configured");
        sinks.push(alertmanager);
    }
    if let Some(webhook) = &config.webhook {
        sinks.push(Arc::new(WebhookSink::new(webhook)?));
        tracing::info!(host = webhook.host(), "webhook sink configured");
    }
    if let Some(sender) = channel {
        sinks.push(Arc::new(ChannelSink::new(sender)));
    }
    Ok(sinks)
}

/// The partition count shared by every topic the service reads and writes.
fn common_partition_count(
    topics: &Topics,
    counts: &BTreeMap<String, i32>,
) -> Result<i32, AlertError> {
    let used = [
        &topics.license_state,
        &topics.user_state,
        &topics.sync_status,
        &topics.alerts,
        &topics.recommendations,
    ];
    let found: Vec<(&String, i32)> = used
        .iter()
        .map(|topic| (*topic, counts.get(*topic).copied().unwrap_or(0)))
        .collect();
    let first = found[0].1;
    if found.iter().all(|(_, count)| *count == first) && first > 0 {
        return Ok(first);
    }
    let counts = found
        .iter()
        .map(|(topic, count)| format!("{topic}: {count}"))
        .collect::<Vec<_>>()
        .join(", ");
    Err(AlertError::PartitionMismatch { counts })
}

/// The service's tasks, by name.
#[derive(Default)]
struct Tasks {
    set: JoinSet<Result<(), AlertError>>,
    names: BTreeMap<Id, &'static str>,
}

type Joined = (&'static str, Result<Result<(), AlertError>, JoinError>);

impl Tasks {
    fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = Result<(), AlertError>> + Send + 'static,
    {
        let handle = self.set.spawn(task);
        self.names.insert(handle.id(), name);
    }

    /// The next task to end, pending forever when none is left.
    async fn next(&mut self) -> Option<Joined> {
        let (id, joined) = match self.set.join_next_with_id().await? {
            Ok((id, result)) => (id, Ok(result)),
            Err(error) => (error.id(), Err(error)),
        };
        Some((self.names.get(&id).copied().unwrap_or("unknown"), joined))
    }

    /// Waits up to the drain deadline for every task, then abandons the rest. Returns the
    /// first failure.
    async fn drain(&mut self) -> Result<(), AlertError> {
        let all = async {
            let mut first = Ok(());
            while let Some((name, joined)) = self.next().await {
                first = first.and(task_result(name, joined));
            }
            first
        };
        match tokio::time::timeout(DRAIN_DEADLINE, all).await {
            Ok(first) => first,
            Err(_elapsed) => {
                // Nothing is lost: unfinished notifications stay uncommitted and unsent
                // transitions are decided again by the next run.
                tracing::warn!(
                    deadline_secs = DRAIN_DEADLINE.as_secs(),
                    "tasks did not stop within the drain deadline; abandoning them"
                );
                self.set.abort_all();
                Ok(())
            }
        }
    }
}

fn task_result(
    name: &'static str,
    joined: Result<Result<(), AlertError>, JoinError>,
) -> Result<(), AlertError> {
    match joined {
        Ok(result) => result,
        Err(error) => Err(AlertError::Task {
            task: name,
            reason: error.to_string(),
        }),
    }
}

/// Readiness of the whole service: the evaluator caught up with its partitions and the
/// notifier holds an assignment from its group.
pub(crate) struct Readiness {
    health: Arc<Health>,
    evaluator: AtomicBool,
    notifier: AtomicBool,
}

impl Readiness {
    pub fn new(health: Arc<Health>) -> Arc<Self> {
        Arc::new(Self {
            health,
            evaluator: AtomicBool::new(false),
            notifier: AtomicBool::new(false),
        })
    }

    pub fn evaluator_caught_up(&self) {
        self.evaluator.store(true, Ordering::Release);
        self.update();
    }

    pub fn notifier_assigned(&self) {
        self.notifier.store(true, Ordering::Release);
        self.update();
    }

    fn update(&self) {
        let evaluator = self.evaluator.load(Ordering::Acquire);
        let notifier = self.notifier.load(Ordering::Acquire);
        match (evaluator, notifier) {
            (true, true) => self.health.set_ready(),
            (false, _) => self.health.set_not_ready("evaluator catching up"),
            (true, false) => self.health.set_not_ready("notifier joining its group"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unequal_partition_counts_are_refused_with_the_counts() {
        let topics = Topics::new("t.");
        let mut counts: BTreeMap<String, i32> =
            topics.specs().into_iter().map(|s| (s.name, 3)).collect();
        assert_eq!(common_partition_count(&topics, &counts).unwrap(), 3);
        counts.insert(topics.alerts.clone(), 6);
        let err = common_partition_count(&topics, &counts).unwrap_err();
        assert!(err.to_string().contains("t.seats.alerts: 6"), "{err}");
    }

    #[test]
    fn ready_only_when_both_halves_are() {
        let health = Health::new();
        let readiness = Readiness::new(health.clone());
        readiness.notifier_assigned();
        assert!(!health.is_ready());
        readiness.evaluator_caught_up();
        assert!(health.is_ready());
    }

    #[tokio::test]
    async fn a_missing_webhook_key_stops_the_start() {
        let mut config = AlertConfig::default();
        config.webhook = Some(crate::config::WebhookConfig {
            url: "http://127.0.0.1:9/x".into(),
            secret: Some(seatwatch_common::SecretRef::Env(
                "ALERT_TEST_SURELY_UNSET_KEY".into(),
            )),
            timeout_secs: 1,
        });
        let err = run_with(config, Shutdown::new(), RunOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, AlertError::Secret(_)), "{err}");
    }
}
