//! The evaluator: reads seat state and alert history, evaluates the rules, and writes
//! alert transitions.
//!
//! One consumer group reads the licence-state, user-state, sync-status and alerts topics.
//! Every topic is partitioned by org with the same partition count, so the range assignor
//! gives an instance the same partition numbers on each: it owns whole orgs, their state
//! and their alerts. The group never commits offsets and every assignment starts at the
//! beginning (see [`crate::group`]): the compacted topics are the state, and the alerts
//! topic replays what fired, so a restart or rebalance rebuilds both.
//!
//! Nothing is evaluated until the consumer has caught up, that is its position reached
//! the high watermark of every assigned partition, checked on each tick. That includes
//! the alerts it wrote itself, so a transition is never decided on a book that lacks an
//! earlier one: a restart neither re-fires nor re-resolves what was already sent. A
//! transition enters the book when the broker acknowledges it (and is read back later,
//! which changes nothing); one the broker refuses is decided again on the next tick.
//!
//! The watermarks come from a second client that never joins the group: a broker answers
//! the requests of one connection in order, so a query sent on the consumer's connection
//! would wait behind its long-polling fetch. Known shortcut: that is one query per
//! assigned partition per tick, a handful of round trips every few seconds; a large
//! deployment would read the watermarks from the consumer's statistics instead.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::Offset;
use seatwatch_common::kafka::{delivered, enqueue, partition_for, ServiceContext, Topics};
use seatwatch_common::{retry, Shutdown};
use seatwatch_schemas::encoding::Header;
use seatwatch_schemas::{
    Alert, Encoder, EncodingError, LicenseState, Recommendation, SyncStatus, UserState,
};
use tokio::time::MissedTickBehavior;

use crate::alertmanager::AlertmanagerSink;
use crate::config::{AlertConfig, PriceTable};
use crate::controls::{now_ms, Controls};
use crate::group::{GroupContext, StartAt};
use crate::metrics::{rule_label, Metrics};
use crate::recommend::{self, Change, Published};
use crate::rule_config::RulesConfig;
use crate::rules::{self, Evaluation, IDLE_SEATS, RULES};
use crate::service::Readiness;
use crate::state::{AlertBook, Lifecycle, SeatState};
use crate::AlertError;

/// How long one watermark query may take before the tick gives up on it.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(5);

type AlertConsumer = StreamConsumer<GroupContext>;

/// The evaluator task's state.
pub(crate) struct Evaluator {
    consumer: Arc<AlertConsumer>,
    /// Asks the brokers for high watermarks; never subscribes.
    watermarks: Arc<BaseConsumer<ServiceContext>>,
    producer: FutureProducer<ServiceContext>,
    /// Decodes what it reads in either framing (with a registry configured, fetching the
    /// writer schema of each Confluent schema id the first time it is seen), and frames
    /// alerts and recommendations as configured.
    encoder: Encoder,
    topics: Topics,
    partitions: i32,
    rules: RulesConfig,
    prices: PriceTable,
    interval: Duration,
    repeat_ms: i64,
    state: SeatState,
    book: AlertBook,
    recommendations: Published,
    controls: Arc<Controls>,
    alertmanager: Option<Arc<AlertmanagerSink>>,
    last_refresh: Option<Instant>,
    /// The assignment generation the state was built under.
    generation: u64,
    caught_up: bool,
    metrics: Metrics,
    readiness: Arc<Readiness>,
}

impl Evaluator {
    /// Creates the consumer (subscribed) and the producer.
    pub fn new(
        config: &AlertConfig,
        partitions: i32,
        metrics: Metrics,
        readiness: Arc<Readiness>,
        controls: Arc<Controls>,
        alertmanager: Option<Arc<AlertmanagerSink>>,
    ) -> Result<Self, AlertError> {
        let topics = Topics::new(&config.kafka.topic_prefix);
        let mut consumer_config = config
            .kafka
            .consumer_config("seatwatch-alert-evaluator", &config.group_id)?;
        // Range gives the same partition numbers on every topic; see the module docs.
        consumer_config.set("partition.assignment.strategy", "range");
        let consumer: AlertConsumer = consumer_config
            .create_with_context(GroupContext::new("evaluator", StartAt::Beginning))?;
        consumer.subscribe(&[
            &topics.license_state,
            &topics.user_state,
            &topics.sync_status,
            &topics.alerts,
            &topics.recommendations,
        ])?;

        let watermarks = config
            .kafka
            .consumer_config("seatwatch-alert-watermarks", &config.group_id)?
            .create_with_context(ServiceContext { service: "alert" })?;

        let producer = config
            .kafka
            .producer_config("seatwatch-alert")?
            .create_with_context(ServiceContext { service: "alert" })?;

        let encoder = Encoder::from_url(config.kafka.schema_registry_url.as_deref())?;

        Ok(Self {
            consumer: Arc::new(consumer),
            watermarks: Arc::new(watermarks),
            producer,
            encoder,
            topics,
            partitions,
            rules: config.rules.clone(),
            prices: config.prices.clone(),
            interval: Duration::from_secs(config.evaluate_interval_secs),
            repeat_ms: i64::try_from(config.repeat_interval_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            state: SeatState::default(),
            book: AlertBook::default(),
            recommendations: Published::default(),
            controls,
            alertmanager,
            last_refresh: None,
            generation: 0,
            caught_up: false,
            metrics,
            readiness,
        })
    }

    /// With a registry configured, registers the schemas of what this task writes (subject
    /// `<topic>-value`), waiting for a registry that cannot be reached; false on shutdown.
    /// Call it before [`Evaluator::run`], which encodes with the ids it keeps.
    pub(crate) async fn register_schemas(&self, shutdown: &Shutdown) -> Result<bool, AlertError> {
        let registered = retry::until_done(
            "schema registry",
            shutdown,
            EncodingError::is_retriable,
            || async {
                self.encoder.register::<Alert>(&self.topics.alerts).await?;
                let topic = &self.topics.recommendations;
                self.encoder.register::<Recommendation>(topic).await
            },
        )
        .await
        .map_err(AlertError::Schemas)?;
        Ok(registered.is_some())
    }

    /// Consumes and evaluates until `shutdown`; a tick under way finishes first, so every
    /// transition it sent is acknowledged (or known to have failed) before returning.
    pub async fn run(mut self, shutdown: Shutdown) -> Result<(), AlertError> {
        let consumer = self.consumer.clone();
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                received = consumer.recv() => self.on_received(received, &shutdown).await,
                _ = ticker.tick() => self.tick().await,
            }
        }
        tracing::info!("evaluator stopped");
        Ok(())
    }

    /// Applies one consumed record to the state or the book.
    async fn on_received(
        &mut self,
        received: Result<BorrowedMessage<'_>, KafkaError>,
        shutdown: &Shutdown,
    ) {
        self.follow_assignment();
        match received {
            Ok(message) => {
                load_writer_schema(&self.encoder, message.payload(), shutdown).await;
                self.apply(&message);
            }
            // librdkafka retries by itself; the consumer keeps going.
            Err(error) => tracing::warn!(%error, "evaluator consumer error"),
        }
    }

    /// Drops everything after a rebalance: the new assignment replays from the start.
    fn follow_assignment(&mut self) {
        let generation = self.consumer.context().generation();
        if generation != self.generation {
            self.generation = generation;
            self.state.clear();
            self.book.clear();
            self.recommendations.clear();
            self.set_caught_up(false);
        }
    }

    fn apply(&mut self, message: &BorrowedMessage<'_>) {
        let topic = message.topic();
        let Some(key) = message.key().and_then(|key| std::str::from_utf8(key).ok()) else {
            return self.invalid(message, "missing or non-UTF-8 key".into());
        };
        let payload = message.payload();

        let applied = if topic == self.topics.license_state {
            self.apply_license(key, payload)
        } else if topic == self.topics.user_state {
            self.apply_user(key, payload)
        } else if topic == self.topics.sync_status {
            self.apply_sync(key, payload)
        } else if topic == self.topics.alerts {
            self.apply_alert(payload, message.offset())
        } else if topic == self.topics.recommendations {
            self.apply_recommendation(key, payload)
        } else {
            Ok(())
        };
        if let Err(error) = applied {
            self.invalid(message, error.to_string());
        }
    }

    fn apply_license(&mut self, key: &str, payload: Option<&[u8]>) -> Result<(), EncodingError> {
        match payload {
            None => self.state.remove_license(key),
            Some(bytes) => {
                let license: LicenseState = self.encoder.decode_cached(bytes)?;
                self.state.put_license(key, license);
            }
        }
        Ok(())
    }

    fn apply_user(&mut self, key: &str, payload: Option<&[u8]>) -> Result<(), EncodingError> {
        match payload {
            None => self.state.remove_user(key),
            Some(bytes) => {
                let user: UserState = self.encoder.decode_cached(bytes)?;
                self.state.put_user(key, user);
            }
        }
        Ok(())
    }

    fn apply_sync(&mut self, key: &str, payload: Option<&[u8]>) -> Result<(), EncodingError> {
        match payload {
            None => self.state.remove_sync(key),
            Some(bytes) => {
                let status: SyncStatus = self.encoder.decode_cached(bytes)?;
                self.state.put_sync(key, status);
            }
        }
        Ok(())
    }

    fn apply_alert(&mut self, payload: Option<&[u8]>, offset: i64) -> Result<(), EncodingError> {
        if let Some(bytes) = payload {
            let alert: Alert = self.encoder.decode_cached(bytes)?;
            self.book.record(alert, offset);
        }
        Ok(())
    }

    fn apply_recommendation(
        &mut self,
        key: &str,
        payload: Option<&[u8]>,
    ) -> Result<(), EncodingError> {
        let value = payload
            .map(|bytes| self.encoder.decode_cached::<Recommendation>(bytes))
            .transpose()?;
        self.recommendations.apply(key, value);
        Ok(())
    }

    /// Skips a record that cannot be read. The producer of that record must act; the
    /// partition goes on.
    fn invalid(&self, message: &BorrowedMessage<'_>, error: String) {
        self.metrics.invalid_records.inc();
        tracing::error!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            error,
            "skipping a record that cannot be decoded"
        );
    }

    /// Evaluates the rules once, if caught up, and sends the resulting transitions.
    async fn tick(&mut self) {
        self.follow_assignment();
        match self.is_caught_up().await {
            Ok(true) => self.set_caught_up(true),
            Ok(false) => return,
            Err(error) => {
                tracing::warn!(%error, "cannot tell whether the evaluator caught up");
                return;
            }
        }

        let now = now_ms();
        let mut evaluation = rules::evaluate(&self.state, now, &self.rules);
        let held = evaluation.held_orgs.clone();
        let evaluated = move |org_id: &str| !held.contains(org_id);

        // Recommendations first: their savings go into the idle-seat alerts' text.
        let desired = recommend::desired(&self.state, now, &self.rules, &self.prices);
        let savings = recommend::savings_by_pool(&desired);
        self.describe_savings(&mut evaluation, &savings);

        let controls = self.controls.clone();
        let quiet = move |alert: &Alert| controls.is_quiet(alert, now);
        let transitions = self.book.transitions(
            &evaluation,
            now,
            &Lifecycle {
                repeat_ms: self.repeat_ms,
                quiet: &quiet,
            },
        );
        self.metrics.evaluations.inc();
        self.publish(transitions).await;

        let changes = self.recommendations.changes(&desired, evaluated);
        self.publish_recommendations(changes).await;

        self.controls.update_alerts(self.book.all());
        self.update_firing_gauge();
        self.metrics.seats.update(&self.state, &evaluation, now);
        self.metrics
            .recommendations
            .update(self.recommendations.all(), &self.prices);
        self.refresh_alertmanager(now);
    }

    /// Appends the monthly saving of reclaiming each pool's idle seats to its idle-seat
    /// alert's summary, when the pool's price is known.
    fn describe_savings(
        &self,
        evaluation: &mut Evaluation,
        savings: &BTreeMap<(String, String), f64>,
    ) {
        for condition in &mut evaluation.conditions {
            if condition.rule != IDLE_SEATS {
                continue;
            }
            let pool = (condition.org_id.clone(), condition.pool.clone());
            if let Some(saving) = savings.get(&pool) {
                condition.summary.push_str(&format!(
                    "; reclaiming them saves about {} {saving:.0} a month",
                    self.prices.currency
                ));
            }
        }
    }

    /// Re-sends every firing alert to Alertmanager once per its re-send interval, in the
    /// background so that a slow Alertmanager never delays an evaluation. Silenced alerts
    /// are left out, so Alertmanager lets them expire.
    fn refresh_alertmanager(&mut self, now: i64) {
        let Some(alertmanager) = self.alertmanager.clone() else {
            return;
        };
        let due = self
            .last_refresh
            .is_none_or(|last| last.elapsed() >= alertmanager.resend_interval());
        if !due {
            return;
        }
        self.last_refresh = Some(Instant::now());
        let firing: Vec<Alert> = self
            .book
            .firing()
            .filter(|alert| !self.controls.is_silenced(alert, now))
            .cloned()
            .collect();
        tokio::spawn(async move {
            if let Err(error) = alertmanager.refresh(&firing).await {
                tracing::warn!(%error, alerts = firing.len(), "re-sending firing alerts to Alertmanager failed; next interval tries again");
            }
        });
    }

    fn set_caught_up(&mut self, caught_up: bool) {
        if caught_up && !self.caught_up {
            tracing::info!("evaluator caught up with its partitions; evaluating");
            self.readiness.evaluator_caught_up();
        }
        self.caught_up = caught_up;
        self.metrics.caught_up.set(i64::from(caught_up));
    }

    /// Whether the consumer holds an assignment and has read every assigned partition up
    /// to its high watermark.
    async fn is_caught_up(&self) -> Result<bool, KafkaError> {
        if !self.consumer.context().is_assigned() {
            return Ok(false);
        }
        let positions = self.consumer.position()?;
        let watermarks = self.watermarks.clone();
        let check = tokio::task::spawn_blocking(move || {
            for partition in positions.elements() {
                let (low, high) = watermarks.fetch_watermarks(
                    partition.topic(),
                    partition.partition(),
                    WATERMARK_TIMEOUT,
                )?;
                if !reached_end(partition.offset(), low, high) {
                    return Ok(false);
                }
            }
            Ok(true)
        });
        check.await.unwrap_or(Ok(false))
    }

    /// Writes `transitions` to the alerts topic and records each one acknowledged.
    async fn publish(&mut self, transitions: Vec<Alert>) {
        let mut pending: Vec<(Alert, DeliveryFuture)> = Vec::with_capacity(transitions.len());
        for alert in transitions {
            match self.send(&alert).await {
                Ok(delivery) => pending.push((alert, delivery)),
                Err(error) => self.publish_failed(&alert, &error.to_string()),
            }
        }

        for (alert, delivery) in pending {
            match delivered(delivery).await {
                Ok((_partition, offset)) => self.published(alert, offset),
                Err(error) => self.publish_failed(&alert, &error.to_string()),
            }
        }
    }

    async fn send(&self, alert: &Alert) -> Result<DeliveryFuture, PublishError> {
        let payload = self.encoder.encode(&self.topics.alerts, alert)?;
        let record = FutureRecord::to(&self.topics.alerts)
            .key(&alert.fingerprint)
            .payload(&payload)
            .partition(partition_for(&alert.org_id, self.partitions));
        Ok(enqueue(&self.producer, record).await?)
    }

    fn published(&mut self, alert: Alert, offset: i64) {
        self.metrics.transition(&alert.rule, alert.status);
        tracing::info!(
            fingerprint = alert.fingerprint,
            rule = alert.rule,
            status = alert.status.as_str(),
            severity = alert.severity.as_str(),
            org_id = alert.org_id,
            pool = alert.pool,
            summary = alert.summary,
            "alert transition sent"
        );
        self.book.record(alert, offset);
    }

    /// Writes recommendation changes and records each one acknowledged; one the broker
    /// refuses is found again on the next tick.
    async fn publish_recommendations(&mut self, changes: Vec<Change>) {
        let mut pending = Vec::with_capacity(changes.len());
        for change in changes {
            match self.send_recommendation(&change).await {
                Ok(delivery) => pending.push((change, delivery)),
                Err(error) => self.recommendation_failed(&error.to_string()),
            }
        }
        for (change, delivery) in pending {
            match delivered(delivery).await {
                Ok(_) => match change {
                    Change::Put(rec) => self.recommendations.apply(&rec.key(), Some(*rec)),
                    Change::Withdraw { key, .. } => self.recommendations.apply(&key, None),
                },
                Err(error) => self.recommendation_failed(&error.to_string()),
            }
        }
    }

    async fn send_recommendation(&self, change: &Change) -> Result<DeliveryFuture, PublishError> {
        let (key, org_id, payload) = match change {
            Change::Put(rec) => {
                let payload = self.encoder.encode(&self.topics.recommendations, &**rec)?;
                (rec.key(), rec.org_id.as_str(), Some(payload))
            }
            Change::Withdraw { key, org_id } => (key.clone(), org_id.as_str(), None),
        };
        let mut record = FutureRecord::to(&self.topics.recommendations)
            .key(&key)
            .partition(partition_for(org_id, self.partitions));
        if let Some(payload) = &payload {
            record = record.payload(payload);
        }
        Ok(enqueue(&self.producer, record).await?)
    }

    fn recommendation_failed(&self, error: &str) {
        self.metrics.publish_failures.inc();
        tracing::warn!(
            error,
            "recommendation not written; the next evaluation tries again"
        );
    }

    fn publish_failed(&self, alert: &Alert, error: &str) {
        self.metrics.publish_failures.inc();
        tracing::warn!(
            fingerprint = alert.fingerprint,
            rule = alert.rule,
            status = alert.status.as_str(),
            error,
            "alert transition not sent; the next evaluation decides it again"
        );
    }

    fn update_firing_gauge(&self) {
        for rule in RULES.into_iter().chain(["other"]) {
            let firing = self
                .book
                .firing()
                .filter(|alert| rule_label(&alert.rule) == rule)
                .count();
            self.metrics
                .firing
                .with_label_values(&[rule])
                .set(firing as i64);
        }
    }
}

/// Makes sure the writer schema of a Confluent-framed value is cached, so that
/// `decode_cached` can read it without I/O. A registry that cannot be reached is asked
/// again with backoff (skipping the record would lose it) until it answers or shutdown; an
/// id it does not know is left for the decoding to report.
pub(crate) async fn load_writer_schema(
    encoder: &Encoder,
    payload: Option<&[u8]>,
    shutdown: &Shutdown,
) {
    let Some(Ok((Header::Confluent { schema_id }, _))) = payload.map(Header::parse) else {
        return;
    };
    let _loaded_or_left = retry::until_done(
        "schema registry",
        shutdown,
        EncodingError::is_retriable,
        || encoder.load_schema(schema_id),
    )
    .await;
}

/// Why a transition could not be handed to the producer.
#[derive(Debug, thiserror::Error)]
enum PublishError {
    #[error("encoding failed: {0}")]
    Encode(#[from] EncodingError),
    #[error("{0}")]
    Kafka(#[from] KafkaError),
}

/// Whether a consumer at `position` has read a partition whose offsets run from `low`
/// to `high` (exclusive). Before the first record the position is not a number yet; then
/// only an empty partition counts as read.
fn reached_end(position: Offset, low: i64, high: i64) -> bool {
    match position {
        Offset::Offset(next) => next >= high,
        _ => high <= low,
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::mocking::MockCluster;
    use seatwatch_common::http::Health;
    use seatwatch_common::kafka::KafkaConfig;

    use seatwatch_schemas::avro::AvroRecord;
    use seatwatch_schemas::encoding::{CONFLUENT_HEADER_LEN, CONFLUENT_MAGIC};

    use super::*;
    use crate::registry_double;
    use crate::rules::tests::{license, user, ORG};

    #[test]
    fn reached_end_compares_the_position_with_the_high_watermark() {
        assert!(reached_end(Offset::Offset(10), 0, 10));
        assert!(!reached_end(Offset::Offset(9), 0, 10));
        // Nothing read yet: only an empty (or fully deleted) partition is done.
        assert!(reached_end(Offset::Invalid, 0, 0));
        assert!(reached_end(Offset::Invalid, 7, 7));
        assert!(!reached_end(Offset::Invalid, 0, 1));
        assert!(!reached_end(Offset::Beginning, 3, 5));
    }

    async fn next(consumer: &AlertConsumer) -> Result<BorrowedMessage<'_>, KafkaError> {
        tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("a record within 30 s")
    }

    /// Also: seat state in either framing is read, the Confluent one with its writer schema
    /// fetched from the registry (transform writes it when a registry is configured), and
    /// alerts are written in the Confluent framing under the id registered at start.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn evaluates_only_once_every_assigned_partition_is_read() {
        let registry = registry_double::RegistryDouble::start().await;
        let cluster = MockCluster::new(1).unwrap();
        let prefix = format!("t{}.", uuid::Uuid::new_v4().simple());
        let topics = Topics::new(&prefix);
        for spec in topics.specs() {
            cluster.create_topic(&spec.name, 3, 1).unwrap();
        }
        let mut config = AlertConfig {
            kafka: KafkaConfig {
                bootstrap_servers: cluster.bootstrap_servers(),
                topic_prefix: prefix,
                schema_registry_url: Some(registry.url.clone()),
                ..KafkaConfig::default()
            },
            group_id: format!("g{}", uuid::Uuid::new_v4()),
            ..AlertConfig::default()
        };
        // The fixtures' login dates are relative to a fixed day, not the wall clock.
        config.rules.idle_seats.enabled = false;

        // One hot pool, in the Confluent framing, and three users, single-object encoded:
        // four records to read before evaluating.
        let producer: FutureProducer = config.kafka.producer_config("t").unwrap().create().unwrap();
        let pool = license("Salesforce", 96, Some(100));
        let writer = Encoder::from_url(Some(&registry.url)).unwrap();
        let id = writer
            .register::<LicenseState>(&topics.license_state)
            .await
            .unwrap()
            .expect("an id from the registry");
        let mut records = vec![(
            topics.license_state.clone(),
            pool.key(),
            writer.encode(&topics.license_state, &pool).unwrap(),
        )];
        for id in ["005A", "005B", "005C"] {
            let user = user(id, "Salesforce", Some(1));
            records.push((
                topics.user_state.clone(),
                user.key(),
                user.to_avro().unwrap(),
            ));
        }
        for (topic, key, payload) in &records {
            let record = FutureRecord::to(topic)
                .key(key)
                .payload(payload)
                .partition(partition_for(ORG, 3));
            producer
                .send(record, Duration::from_secs(10))
                .await
                .unwrap();
        }

        let health = Health::new();
        let metrics = Metrics::register(&prometheus::Registry::new()).unwrap();
        let mut evaluator = Evaluator::new(
            &config,
            3,
            metrics.clone(),
            Readiness::new(health.clone()),
            Controls::new(),
            None,
        )
        .unwrap();
        let consumer = evaluator.consumer.clone();
        let shutdown = Shutdown::new();
        assert!(evaluator.register_schemas(&shutdown).await.unwrap());

        // The first record arrives after the group join; three are still unread.
        evaluator
            .on_received(next(&consumer).await, &shutdown)
            .await;
        assert!(!evaluator.is_caught_up().await.unwrap());
        evaluator.tick().await;
        assert_eq!(metrics.evaluations.get(), 0, "no evaluation while behind");
        assert_eq!(evaluator.book.firing().count(), 0);

        for _ in 1..records.len() {
            evaluator
                .on_received(next(&consumer).await, &shutdown)
                .await;
        }
        assert_eq!(
            registry.fetches_of(id.0),
            1,
            "the writer schema is fetched once"
        );
        assert_eq!(metrics.invalid_records.get(), 0);
        assert!(evaluator.is_caught_up().await.unwrap());
        evaluator.tick().await;
        assert_eq!(metrics.evaluations.get(), 1);
        let firing: Vec<&str> = evaluator.book.firing().map(|a| a.rule.as_str()).collect();
        assert_eq!(firing, [rules::UTILIZATION]);
        assert_eq!(metrics.caught_up.get(), 1);

        // What the evaluator writes is registered under the topic-name strategy and framed
        // with the registered id.
        let posted = |topic: &str| format!("POST /subjects/{topic}-value/versions");
        let requests = registry.requests();
        for topic in [&topics.alerts, &topics.recommendations] {
            assert!(requests.contains(&posted(topic)), "{topic}: {requests:?}");
        }
        let alert_id = evaluator.encoder.schema_id(&topics.alerts).unwrap();
        let reader: StreamConsumer = config
            .kafka
            .consumer_config("t", "reader")
            .unwrap()
            .create()
            .unwrap();
        let mut partitions = rdkafka::TopicPartitionList::new();
        partitions
            .add_partition_offset(&topics.alerts, partition_for(ORG, 3), Offset::Beginning)
            .unwrap();
        reader.assign(&partitions).unwrap();
        let message = tokio::time::timeout(Duration::from_secs(30), reader.recv())
            .await
            .expect("the alert within 30 s")
            .unwrap();
        let value = message.payload().unwrap();
        assert_eq!(value[0], CONFLUENT_MAGIC);
        assert_eq!(value[1..CONFLUENT_HEADER_LEN], alert_id.0.to_be_bytes());
        let alert: Alert = Encoder::from_url(Some(&registry.url))
            .unwrap()
            .decode(value)
            .await
            .unwrap();
        assert_eq!(alert.rule, rules::UTILIZATION);
    }
}
