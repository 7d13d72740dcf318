//! The notifier: delivers every alert transition to every sink, at least once.
//!
//! It reads the alerts topic in its own consumer group (`notify_group_id`), separate from
//! the evaluator's, and works as an outbox: an alert's offset is committed only after
//! every sink accepted it (or refused it for good), so nothing is lost to a crash or a
//! sink outage. The price is that a crash between delivery and commit delivers again;
//! receivers deduplicate on [`dedup_key`] (fingerprint, status, start and send time), which is the
//! same on every delivery of one transition. A new group starts at the earliest offset,
//! so its first start delivers the topic's retained history.
//!
//! A sink that fails is retried with exponential backoff and jitter until it succeeds or
//! the service shuts down; meanwhile the notifier reads nothing new. Waiting on a sink is
//! the notifier's normal work, so its `max.poll.interval.ms` is librdkafka's maximum (24
//! hours) rather than 5 minutes: a receiver that is down for an hour does not cost the
//! group membership, and a dead process is still noticed by the session timeout.
//!
//! A silenced alert ([`crate::controls`]) goes to the log sink only.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::future::{join_all, BoxFuture};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use seatwatch_common::kafka::Topics;
use seatwatch_common::Shutdown;
use seatwatch_schemas::{Alert, Encoder};
use tokio::sync::mpsc;

use crate::config::AlertConfig;
use crate::controls::{now_ms, Controls};
use crate::evaluator::load_writer_schema;
use crate::group::{GroupContext, StartAt};
use crate::metrics::{Metrics, DELIVERED, REFUSED};
use crate::service::Readiness;
use crate::AlertError;

/// Somewhere alert transitions go. Implementations return promptly or time out; the
/// notifier does the retrying.
pub trait Sink: Send + Sync {
    /// A short fixed name, used as the `sink` metric label.
    fn name(&self) -> &'static str;

    /// Hands one transition over.
    fn deliver<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), SinkError>>;
}

/// Why a sink did not take an alert. Messages never contain a URL or a secret.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The receiver refuses this alert; sending it again cannot help. It is dropped with
    /// an ERROR and a counter, and the receiver's operator must act.
    #[error("refused: {0}")]
    Refused(String),
    /// The receiver cannot take it right now; the notifier retries.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// The key a receiver deduplicates on: one notification of one alert (a transition or a
/// repeat of a firing one), however often it is delivered.
pub fn dedup_key(alert: &Alert) -> String {
    format!(
        "{}:{}:{}:{}",
        alert.fingerprint,
        alert.status.as_str(),
        alert.starts_at,
        alert.sent_at
    )
}

/// Writes each transition as one INFO event with its fields.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogSink;

impl Sink for LogSink {
    fn name(&self) -> &'static str {
        "log"
    }

    fn deliver<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), SinkError>> {
        tracing::info!(
            fingerprint = alert.fingerprint,
            dedup_key = dedup_key(alert),
            rule = alert.rule,
            status = alert.status.as_str(),
            severity = alert.severity.as_str(),
            org_id = alert.org_id,
            pool = alert.pool,
            value = alert.value,
            threshold = alert.threshold,
            starts_at = alert.starts_at,
            ends_at = alert.ends_at,
            summary = alert.summary,
            "alert transition"
        );
        Box::pin(async { Ok(()) })
    }
}

/// Sends each transition into a channel the caller reads, e.g. the demo's printer. A full
/// channel holds the notifier back; a closed one refuses.
#[derive(Clone, Debug)]
pub struct ChannelSink {
    sender: mpsc::Sender<Alert>,
}

impl ChannelSink {
    pub fn new(sender: mpsc::Sender<Alert>) -> Self {
        Self { sender }
    }
}

impl Sink for ChannelSink {
    fn name(&self) -> &'static str {
        "channel"
    }

    fn deliver<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            self.sender
                .send(alert.clone())
                .await
                .map_err(|_| SinkError::Refused("the receiving channel is closed".into()))
        })
    }
}

/// How failed deliveries are spaced: exponential from `min_delay`, doubling up to
/// `max_delay`, with jitter so that many instances do not retry in step.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RetryPolicy {
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// One second first, then at most a minute: a receiver back from an outage hears
    /// from us within a minute, and a dead one costs one request a minute.
    fn default() -> Self {
        Self {
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    fn delays(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
    }
}

/// Delivers `alert` to every sink at once, each retried on its own. Returns true when all
/// are done with it (accepted or refused), false when shutdown came first.
pub(crate) async fn deliver_to_all(
    sinks: &[Arc<dyn Sink>],
    alert: &Alert,
    policy: &RetryPolicy,
    metrics: &Metrics,
    shutdown: &Shutdown,
) -> bool {
    let deliveries = sinks
        .iter()
        .map(|sink| deliver_with_retry(sink.as_ref(), alert, policy, metrics, shutdown));
    join_all(deliveries).await.into_iter().all(|done| done)
}

/// Delivers `alert` to one sink, retrying while it is unavailable. Returns false only if
/// shutdown interrupted it; the alert is then left uncommitted for the next run.
pub(crate) async fn deliver_with_retry(
    sink: &dyn Sink,
    alert: &Alert,
    policy: &RetryPolicy,
    metrics: &Metrics,
    shutdown: &Shutdown,
) -> bool {
    let mut delays = policy.delays();
    loop {
        // A finished delivery wins over a shutdown that arrived at the same moment.
        let attempt = tokio::select! {
            biased;
            attempt = sink.deliver(alert) => attempt,
            _ = shutdown.cancelled() => return false,
        };
        let reason = match attempt {
            Ok(()) => {
                metrics
                    .notifications
                    .with_label_values(&[sink.name(), DELIVERED])
                    .inc();
                return true;
            }
            Err(SinkError::Refused(reason)) => {
                refused(sink, alert, &reason, metrics);
                return true;
            }
            Err(SinkError::Unavailable(reason)) => reason,
        };

        let delay = delays.next().unwrap_or(policy.max_delay);
        metrics.retries.with_label_values(&[sink.name()]).inc();
        tracing::warn!(
            sink = sink.name(),
            fingerprint = alert.fingerprint,
            reason,
            retry_in_ms = delay.as_millis() as u64,
            "alert delivery failed; retrying"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return false,
        }
    }
}

/// Drops an alert the sink refuses, loudly: the receiver's operator must act.
fn refused(sink: &dyn Sink, alert: &Alert, reason: &str, metrics: &Metrics) {
    metrics
        .notifications
        .with_label_values(&[sink.name(), REFUSED])
        .inc();
    tracing::error!(
        sink = sink.name(),
        fingerprint = alert.fingerprint,
        dedup_key = dedup_key(alert),
        reason,
        "sink refused the alert; it is dropped for this sink"
    );
}

type NotifyConsumer = StreamConsumer<GroupContext>;

/// The notifier task's state.
pub(crate) struct Notifier {
    consumer: Arc<NotifyConsumer>,
    /// Decodes alerts in either framing, fetching a Confluent writer schema once.
    decoder: Encoder,
    sinks: Vec<Arc<dyn Sink>>,
    policy: RetryPolicy,
    metrics: Metrics,
    controls: Arc<Controls>,
    /// Next offset to commit per partition, for the final synchronous commit.
    done: BTreeMap<(String, i32), i64>,
    generation: u64,
}

impl Notifier {
    /// Creates the consumer and subscribes it to the alerts topic.
    pub fn new(
        config: &AlertConfig,
        sinks: Vec<Arc<dyn Sink>>,
        metrics: Metrics,
        readiness: Arc<Readiness>,
        controls: Arc<Controls>,
    ) -> Result<Self, AlertError> {
        let topics = Topics::new(&config.kafka.topic_prefix);
        let mut consumer_config = config
            .kafka
            .consumer_config("seatwatch-alert-notifier", &config.notify_group_id)?;
        // The context assumes eager rebalancing; see crate::group.
        consumer_config.set("partition.assignment.strategy", "range");
        // A sink outage stalls reading by design; see the module docs.
        consumer_config.set("max.poll.interval.ms", "86400000");
        let context = GroupContext::new("notifier", StartAt::Committed)
            .on_assign(move || readiness.notifier_assigned());
        let consumer: NotifyConsumer = consumer_config.create_with_context(context)?;
        consumer.subscribe(&[&topics.alerts])?;
        Ok(Self {
            consumer: Arc::new(consumer),
            decoder: Encoder::from_url(config.kafka.schema_registry_url.as_deref())?,
            sinks,
            policy: RetryPolicy::default(),
            metrics,
            controls,
            done: BTreeMap::new(),
            generation: 0,
        })
    }

    /// Delivers alerts until `shutdown`, then commits what was finished.
    pub async fn run(mut self, shutdown: Shutdown) -> Result<(), AlertError> {
        let consumer = self.consumer.clone();
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => break,
                received = consumer.recv() => received.map(|message| message.detach()),
            };
            match received {
                Ok(message) => {
                    if !self.handle(message, &shutdown).await {
                        break;
                    }
                }
                Err(error) => tracing::warn!(%error, "notifier consumer error"),
            }
        }
        self.final_commit().await;
        tracing::info!("notifier stopped");
        Ok(())
    }

    /// Delivers one record's alert and commits it. Returns false if shutdown interrupted
    /// the delivery.
    async fn handle(&mut self, message: OwnedMessage, shutdown: &Shutdown) -> bool {
        let generation = self.consumer.context().generation();
        if generation != self.generation {
            // Offsets finished under an older assignment may now belong to another member.
            self.generation = generation;
            self.done.clear();
        }

        let payload = message.payload();
        load_writer_schema(&self.decoder, payload, shutdown).await;
        let finished = match payload.map(|bytes| self.decoder.decode_cached::<Alert>(bytes)) {
            Some(Ok(alert)) => {
                let sinks = self.sinks_for(&alert);
                deliver_to_all(&sinks, &alert, &self.policy, &self.metrics, shutdown).await
            }
            Some(Err(error)) => {
                self.metrics.invalid_records.inc();
                tracing::error!(
                    topic = message.topic(),
                    partition = message.partition(),
                    offset = message.offset(),
                    %error,
                    "skipping an alert record that cannot be decoded"
                );
                true
            }
            // A tombstone carries no transition.
            None => true,
        };
        if !finished {
            return false;
        }
        self.commit(message.topic(), message.partition(), message.offset() + 1);
        true
    }

    /// Every sink, or only the log while a silence matches the alert.
    fn sinks_for(&self, alert: &Alert) -> Vec<Arc<dyn Sink>> {
        if !self.controls.is_silenced(alert, now_ms()) {
            return self.sinks.clone();
        }
        tracing::info!(
            fingerprint = alert.fingerprint,
            status = alert.status.as_str(),
            "alert silenced; only the log gets it"
        );
        self.sinks
            .iter()
            .filter(|sink| sink.name() == LogSink.name())
            .cloned()
            .collect()
    }

    /// Commits `next` as the partition's position, asynchronously: a lost commit only
    /// means a repeated delivery.
    fn commit(&mut self, topic: &str, partition: i32, next: i64) {
        self.done.insert((topic.to_owned(), partition), next);
        let mut offsets = TopicPartitionList::new();
        let committed = offsets
            .add_partition_offset(topic, partition, Offset::Offset(next))
            .and_then(|()| self.consumer.commit(&offsets, CommitMode::Async));
        if let Err(error) = committed {
            tracing::warn!(%error, partition, "committing a delivered alert failed");
        }
    }

    /// Commits every finished offset synchronously, so that a clean stop never repeats a
    /// delivery.
    async fn final_commit(&self) {
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), next) in &self.done {
            if let Err(error) =
                offsets.add_partition_offset(topic, *partition, Offset::Offset(*next))
            {
                tracing::warn!(%error, "cannot list a finished offset");
            }
        }
        if offsets.count() == 0 {
            return;
        }
        let consumer = self.consumer.clone();
        let committed =
            tokio::task::spawn_blocking(move || consumer.commit(&offsets, CommitMode::Sync)).await;
        match committed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "final commit failed; some alerts may repeat"),
            Err(error) => tracing::warn!(%error, "final commit task failed"),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use prometheus::Registry;
    use seatwatch_schemas::{AlertStatus, Severity};
    use tokio::time::Instant;

    use super::*;

    pub(crate) fn sample_alert() -> Alert {
        Alert {
            fingerprint: "0123456789abcdef".into(),
            rule: "utilization".into(),
            severity: Severity::Warning,
            status: AlertStatus::Firing,
            org_id: "00D000000000001EAA".into(),
            pool: Some("Salesforce".into()),
            labels: BTreeMap::from([("alertname".into(), "utilization".into())]),
            summary: "Salesforce pool at 96.7% (290 of 300 seats)".into(),
            value: 0.967,
            threshold: 0.9,
            starts_at: 1_750_000_000_000,
            ends_at: None,
            sent_at: 1_750_000_000_000,
        }
    }

    /// Fails `failures` times with the given error kind, then accepts.
    struct FlakySink {
        failures: usize,
        refuse: bool,
        attempts: AtomicUsize,
    }

    impl FlakySink {
        fn new(failures: usize, refuse: bool) -> Self {
            Self {
                failures,
                refuse,
                attempts: AtomicUsize::new(0),
            }
        }
    }

    impl Sink for FlakySink {
        fn name(&self) -> &'static str {
            "flaky"
        }

        fn deliver<'a>(&'a self, _alert: &'a Alert) -> BoxFuture<'a, Result<(), SinkError>> {
            let attempt = self.attempts.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                match (attempt < self.failures, self.refuse) {
                    (false, _) => Ok(()),
                    (true, true) => Err(SinkError::Refused("no".into())),
                    (true, false) => Err(SinkError::Unavailable("down".into())),
                }
            })
        }
    }

    fn metrics() -> Metrics {
        Metrics::register(&Registry::new()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn unavailable_sinks_are_retried_with_growing_delays() {
        let sink = FlakySink::new(3, false);
        let metrics = metrics();
        let started = Instant::now();
        let done = deliver_with_retry(
            &sink,
            &sample_alert(),
            &RetryPolicy::default(),
            &metrics,
            &Shutdown::new(),
        )
        .await;
        assert!(done);
        assert_eq!(sink.attempts.load(Ordering::SeqCst), 4);
        assert_eq!(metrics.retries.with_label_values(&["flaky"]).get(), 3);
        let delivered = metrics
            .notifications
            .with_label_values(&["flaky", DELIVERED]);
        assert_eq!(delivered.get(), 1);
        // At least 1 s + 2 s + 4 s of backoff, on the paused clock.
        assert!(
            started.elapsed() >= Duration::from_secs(7),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refused_alerts_are_dropped_without_retry() {
        let sink = FlakySink::new(1, true);
        let metrics = metrics();
        let done = deliver_with_retry(
            &sink,
            &sample_alert(),
            &RetryPolicy::default(),
            &metrics,
            &Shutdown::new(),
        )
        .await;
        assert!(done);
        assert_eq!(sink.attempts.load(Ordering::SeqCst), 1);
        let refused = metrics.notifications.with_label_values(&["flaky", REFUSED]);
        assert_eq!(refused.get(), 1);
        assert_eq!(metrics.retries.with_label_values(&["flaky"]).get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_interrupts_retrying_and_reports_not_done() {
        let sink = FlakySink::new(usize::MAX, false);
        let metrics = metrics();
        let shutdown = Shutdown::new();
        let cancel = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            cancel.cancel();
        });
        let done = deliver_with_retry(
            &sink,
            &sample_alert(),
            &RetryPolicy::default(),
            &metrics,
            &shutdown,
        )
        .await;
        assert!(!done);
        assert!(sink.attempts.load(Ordering::SeqCst) > 1);
    }

    #[tokio::test(start_paused = true)]
    async fn every_sink_gets_the_alert_and_a_healthy_one_only_once() {
        let healthy = Arc::new(FlakySink::new(0, false));
        let flaky = Arc::new(FlakySink::new(2, false));
        let sinks: Vec<Arc<dyn Sink>> = vec![healthy.clone(), flaky.clone()];
        let done = deliver_to_all(
            &sinks,
            &sample_alert(),
            &RetryPolicy::default(),
            &metrics(),
            &Shutdown::new(),
        )
        .await;
        assert!(done);
        assert_eq!(healthy.attempts.load(Ordering::SeqCst), 1);
        assert_eq!(flaky.attempts.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn channel_sink_forwards_and_refuses_once_closed() {
        let (sender, mut receiver) = mpsc::channel(1);
        let sink = ChannelSink::new(sender);
        sink.deliver(&sample_alert()).await.unwrap();
        assert_eq!(receiver.recv().await.unwrap(), sample_alert());
        drop(receiver);
        let err = sink.deliver(&sample_alert()).await.unwrap_err();
        assert!(matches!(err, SinkError::Refused(_)));
    }

    /// An alert in the Confluent framing is decoded with its writer schema, fetched from
    /// the registry once; one in single-object encoding needs no registry.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn alerts_in_either_framing_are_delivered() {
        let registry = crate::registry_double::RegistryDouble::start().await;
        let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
        let mut config = AlertConfig::default();
        config.kafka.bootstrap_servers = cluster.bootstrap_servers();
        config.kafka.schema_registry_url = Some(registry.url.clone());
        let topics = Topics::new(&config.kafka.topic_prefix);
        let (sender, mut receiver) = mpsc::channel(4);
        let sinks: Vec<Arc<dyn Sink>> = vec![Arc::new(ChannelSink::new(sender))];
        let readiness = Readiness::new(seatwatch_common::http::Health::new());
        let mut notifier =
            Notifier::new(&config, sinks, metrics(), readiness, Controls::new()).unwrap();

        let writer = Encoder::from_url(Some(&registry.url)).unwrap();
        let id = writer
            .register::<Alert>(&topics.alerts)
            .await
            .unwrap()
            .unwrap();
        let confluent = writer.encode(&topics.alerts, &sample_alert()).unwrap();
        let single_object = Encoder::single_object()
            .encode(&topics.alerts, &sample_alert())
            .unwrap();
        for (offset, payload) in [confluent, single_object].into_iter().enumerate() {
            let message = OwnedMessage::new(
                Some(payload),
                Some(b"key".to_vec()),
                topics.alerts.clone(),
                rdkafka::Timestamp::NotAvailable,
                0,
                offset as i64,
                None,
            );
            assert!(notifier.handle(message, &Shutdown::new()).await);
            let delivered = receiver.try_recv().expect("the alert reached the sink");
            assert_eq!(delivered, sample_alert());
        }
        assert_eq!(
            registry.fetches_of(id.0),
            1,
            "the writer schema is fetched once"
        );
    }

    #[test]
    fn dedup_key_names_fingerprint_status_start_and_send_time() {
        let mut alert = sample_alert();
        let first = "0123456789abcdef:firing:1750000000000:1750000000000";
        assert_eq!(dedup_key(&alert), first);
        // A repeat is a notification of its own.
        alert.sent_at += 5;
        assert_eq!(
            dedup_key(&alert),
            "0123456789abcdef:firing:1750000000000:1750000000005"
        );
        alert.status = AlertStatus::Resolved;
        assert_eq!(
            dedup_key(&alert),
            "0123456789abcdef:resolved:1750000000000:1750000000005"
        );
    }
}
