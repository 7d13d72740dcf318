//! The Kafka side of transform: read the raw topic, run the processors, produce their
//! outputs, commit.
//!
//! Offsets: an input offset is committed only after every output of it and of everything
//! before it in its partition has been acknowledged by the broker, and never past the first
//! event of a snapshot that is still open (see
//! [`crate::processor::Processor::committable_offset`]), so a restart replays every
//! snapshot it has not seen to the end. Outputs are awaited and offsets committed together
//! at each flush: every `flush_interval_ms`, when `max_in_flight` outputs are pending, and
//! on shutdown. A flush awaits and commits on a task of its own while the next events are
//! processed, and the next flush waits for it (see [`Pipeline::flush`]). A failed delivery
//! stops the pipeline without committing; the restart replays from the last commit (at
//! least once: outputs may repeat, and the compacted state topics absorb that).
//!
//! Built with the `failpoints` feature (the test command's build), `FAILPOINTS` can make
//! transform abort at `transform-before-commit`: outputs acknowledged, offsets not yet
//! committed, the moment a crash costs most.
//!
//! With `delivery = "transactional"` each flush is one Kafka transaction instead: the outputs
//! produced since the last flush and the input offsets they make safe are committed together
//! (`send_offsets_to_transaction` with the consumer's group metadata, so a member fenced by a
//! rebalance cannot commit), and `read_committed` consumers see each output once. Any
//! failure in a transaction stops the pipeline: the transaction is aborted, and a restart
//! replays from the last committed one. A transaction is awaited and committed in place.
//! The broker must support transactions; tansu 0.6 does not (it lacks `EndTxn`),
//! librdkafka's mock cluster and Kafka do.
//!
//! Processing: each raw partition is a lane with its own [`crate::processor::Processor`]
//! (see [`crate::partitions`]). Its events run in order on a pool of `processing_threads`
//! threads, a batch at a time, and a lane that finishes takes the events read for it
//! meanwhile without waiting for the other lanes (see [`Pipeline::run_lanes`]). Reading,
//! producing, offsets and transactions stay on this task; an at-least-once flush's
//! waiting and commit run on a task of its own.
//!
//! Rebalances: librdkafka runs rebalance callbacks inside `recv`, on this task. A revoked
//! partition's state is dropped and its offsets are no longer committed here (a flush
//! under way may still commit what it took before the revocation, which only means less
//! to replay); what was processed since the last flush is replayed by its next owner.
//! The cooperative-sticky assignor (unless configured otherwise) keeps the other
//! partitions, and their state, in place during a rebalance.
//!
//! Restoring: before it subscribes to the raw topic, transform reads `seats.license-state`
//! and `seats.user-state` (every partition, from the low to the high watermark of that
//! moment, outside any consumer group) and seeds the processors with every licence and user
//! they hold, so the first full snapshot after a restart tombstones what it lacks (see the
//! processor's module). A value that does not decode, or a key that is not a state key, is
//! logged and skipped; readiness says "restoring state" meanwhile, and shutdown stops the
//! read. The restored state is kept for the partitions of this instance's first
//! assignment and dropped for the others (at that first assignment, and for any partition
//! assigned later, before its first event: by then another instance may have published for
//! it, and stale memory would be worse than none).
//!
//! Known limitations: state is restored for every org, not only those of the raw
//! partitions this instance will own (which it cannot know before joining the group), so
//! until the first assignment memory holds all orgs' licences and users. A partition that
//! moves to an instance already running, by a rebalance, is not restored: its orgs begin
//! there without memory, so a licence or user that vanishes in their first full snapshot on
//! that instance gets no tombstone (as before restoring existed), and that gap stays until
//! the instance owning the partition restarts and restores it.
//!
//! Framing: seat state is Avro single-object encoded, or, with `kafka.schema_registry_url`,
//! in the Confluent wire format with both state schemas registered (subject
//! `<topic>-value`) before the first event is read; the ids are kept, so encoding does no
//! I/O.
//!
//! Readiness: `/readyz` turns ready once the topics are checked, the schemas registered and
//! the clients created, and follows the Kafka cluster from then on (a watchdog asks it for
//! metadata every few seconds), so a transform cut off from its broker reports why.
//!
//! Output partitions are chosen by org with `partition_for`, from the partition counts read
//! at start; a topic grown while transform runs is picked up at the next start.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::panic::{resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use prometheus::Registry;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, MessageStream, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use seatwatch_common::http::{self, Health};
use seatwatch_common::kafka::{self, ServiceContext, Topics};
use seatwatch_common::retry;
use seatwatch_common::secret::SecretError;
use seatwatch_common::shutdown::DRAIN_DEADLINE;
use seatwatch_common::Shutdown;
use seatwatch_schemas::avro::AvroRecord;
use seatwatch_schemas::{Encoder, EncodingError, LicenseState, UserState};
use tokio::time::{self, Instant};

use crate::batch::{OutputRef, Packed};
use crate::config::{Delivery, TransformConfig};
use crate::metrics::{self, Metrics};
use crate::partitions::PartitionProcessors;
use crate::processor::{self, Input, Output, Processor, StateEncoder, Target};

/// The name transform's Kafka clients and log lines go by.
const SERVICE: &str = "seatwatch-transform";

/// Why transform stopped, sorted by who must act.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    // The operator's configuration or environment; a retry does not help until it changes.
    #[error("cannot serve metrics and health on {addr}: {source}; pick a free listen_addr")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Secret(#[from] SecretError),
    #[error("{0}")]
    Topics(#[from] kafka::TopicError),
    #[error(
        "cannot use the schema registry: {0}; check kafka.schema_registry_url, or leave it out \
         to write single-object encoding"
    )]
    Registry(#[from] EncodingError),

    // The broker; restarting retries, and replays from the last commit.
    #[error("cannot create the Kafka {client}: {source}; check the kafka settings")]
    Client {
        client: &'static str,
        source: KafkaError,
    },
    #[error("cannot subscribe to {topic}: {source}")]
    Subscribe { topic: String, source: KafkaError },
    #[error(
        "cannot restore seat state from {topic}: {source}; a restart tries again (check that \
         transform may read the state topics)"
    )]
    Restore { topic: String, source: KafkaError },
    #[error("consuming failed fatally: {0}; restart to rejoin the group")]
    Consume(KafkaError),
    #[error(
        "the broker did not acknowledge an output to {topic}: {source}; nothing was committed \
         past it, so a restart replays it"
    )]
    Delivery {
        topic: &'static str,
        source: KafkaError,
    },
    #[error(
        "transactional delivery failed to {step}: {source}; the open transaction is aborted \
         and a restart replays from the last committed one (does the broker support \
         transactions? otherwise set delivery = \"at_least_once\")"
    )]
    Transaction {
        step: &'static str,
        source: KafkaError,
    },
    #[error("the consumer has no group metadata to commit offsets in a transaction with")]
    NoGroupMetadata,

    // This program.
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot start the processing threads: {0}; lower processing_threads")]
    Threads(#[from] rayon::ThreadPoolBuildError),
}

/// Runs transform with its own metrics registry and ops server on `listen_addr`, until
/// `shutdown` is cancelled (then `Ok` after draining) or a fatal error.
pub async fn run(config: TransformConfig, shutdown: Shutdown) -> Result<(), TransformError> {
    let registry = Registry::new();
    let health = Health::new();
    let stop_server = shutdown.child_token();
    let router = http::router(registry.clone(), health.clone());
    let addr = config.listen_addr;
    let (bound, server) = http::serve(addr, router, stop_server.clone())
        .await
        .map_err(|source| TransformError::Listen { addr, source })?;
    tracing::info!(addr = %bound, "ops server listening");

    let result = run_with(config, shutdown, &registry, health).await;
    stop_server.cancel();
    let _ = server.await;
    result
}

/// Runs transform with the caller's registry and health, serving nothing itself; for
/// binaries that host several services behind one ops server.
pub async fn run_with(
    config: TransformConfig,
    shutdown: Shutdown,
    registry: &Registry,
    health: Arc<Health>,
) -> Result<(), TransformError> {
    let metrics = Metrics::new(registry)?;
    let topics = Topics::new(&config.kafka.topic_prefix);

    // Topics first: without them there is nothing to do, and readiness says so.
    health.set_not_ready("checking topics");
    let specs = topics.specs();
    let partitions = tokio::select! {
        () = shutdown.cancelled() => return Ok(()),
        checked = kafka::ensure_topics(&config.kafka, &specs) => checked?,
    };
    let outputs = OutputTopics::new(&topics, &partitions);

    // With a registry, the state schemas are registered before anything is encoded.
    health.set_not_ready("registering schemas");
    let Some(encoder) = state_encoder(&config, &topics, &shutdown).await? else {
        return Ok(());
    };

    // What was published before this start, so that the first full snapshots can remove
    // what they lack.
    health.set_not_ready("restoring state");
    let raw_partitions = partitions.get(&topics.raw).copied().unwrap_or(1);
    let processors = PartitionProcessors::new(
        topics.raw.clone(),
        metrics.clone(),
        encoder.clone(),
        config.processing_threads,
    )?;
    let restore = Restore {
        config: &config,
        topics: &topics,
        raw_partitions,
        encoder,
        metrics: metrics.clone(),
    };
    let Some(processors) = restore.run(processors, &shutdown).await? else {
        return Ok(());
    };

    let consumer = create_consumer(&config)?;
    consumer
        .subscribe(&[&topics.raw])
        .map_err(|source| TransformError::Subscribe {
            topic: topics.raw.clone(),
            source,
        })?;
    let producer = create_producer(&config)?;
    if config.delivery == Delivery::Transactional {
        start_transactions(&producer).await?;
    }
    health.set_ready();
    let stop_watchdog = shutdown.child_token();
    let watchdog = tokio::spawn({
        let (kafka, health, stop) = (config.kafka.clone(), health.clone(), stop_watchdog.clone());
        async move { kafka::watch_broker(&kafka, "transform", health, stop).await }
    });
    tracing::info!(
        topic = %topics.raw,
        group = %config.group_id,
        delivery = config.delivery.as_str(),
        processing_threads = processors.threads(),
        "transform started"
    );

    let mut pipeline = Pipeline {
        processors,
        restored: (0..raw_partitions).collect(),
        consumer: Arc::new(consumer),
        producer,
        outputs,
        metrics,
        raw_topic: topics.raw,
        in_flight: Vec::new(),
        held: VecDeque::new(),
        processed: BTreeMap::new(),
        committed: BTreeMap::new(),
        flush_interval: Duration::from_millis(config.flush_interval_ms.max(1)),
        max_in_flight: config.max_in_flight.max(1),
        delivery: config.delivery,
        transaction_has_outputs: false,
        flushing: None,
    };
    let result = pipeline.run(&shutdown).await;
    pipeline.close().await;
    stop_watchdog.cancel();
    if let Ok(Err(error)) = watchdog.await {
        tracing::warn!(%error, "the broker watchdog could not start");
    }
    match &result {
        Ok(()) => health.set_not_ready("stopped"),
        Err(error) => health.set_not_ready(format!("stopped: {error}")),
    }
    result
}

/// The seat-state encoder the configuration asks for: single-object encoding, or with
/// `kafka.schema_registry_url` the Confluent wire format, after registering both state
/// schemas under the topic-name strategy (`<topic>-value`). An unreachable or busy registry
/// is retried with backoff until shutdown (`None`); a refusal (an incompatible schema, a
/// bad URL) is fatal.
async fn state_encoder(
    config: &TransformConfig,
    topics: &Topics,
    shutdown: &Shutdown,
) -> Result<Option<StateEncoder>, TransformError> {
    let url = config.kafka.schema_registry_url.as_deref();
    let encoder = Encoder::from_url(url).map_err(EncodingError::from)?;
    let registered = retry::until_done(
        "schema registry",
        shutdown,
        EncodingError::is_retriable,
        || async {
            encoder
                .register::<LicenseState>(&topics.license_state)
                .await?;
            encoder.register::<UserState>(&topics.user_state).await
        },
    )
    .await?;
    if registered.is_none() {
        return Ok(None);
    }
    if let Some(url) = url {
        tracing::info!(registry = url, "seat state in the Confluent wire format");
    }
    let (licenses, users) = (topics.license_state.clone(), topics.user_state.clone());
    Ok(Some(StateEncoder::new(encoder, licenses, users)))
}

/// How long one transactional call (init, send offsets, commit, abort) may block.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The producer; with transactional delivery it has a transactional id unique to this
/// process (fencing of stale members comes from the consumer group metadata sent with the
/// offsets, not from the id).
fn create_producer(
    config: &TransformConfig,
) -> Result<FutureProducer<ServiceContext>, TransformError> {
    let mut client_config = config.kafka.producer_config(SERVICE)?;
    if config.delivery == Delivery::Transactional {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let id = format!("{}-{}-{started}", config.group_id, std::process::id());
        client_config.set("transactional.id", id);
    }
    client_config
        .create_with_context(ServiceContext { service: SERVICE })
        .map_err(|source| TransformError::Client {
            client: "producer",
            source,
        })
}

/// Registers the producer's transactional id with the broker and opens the first
/// transaction. Both block, so they run on the blocking pool.
async fn start_transactions(
    producer: &FutureProducer<ServiceContext>,
) -> Result<(), TransformError> {
    let producer = producer.clone();
    let started = tokio::task::spawn_blocking(move || {
        producer
            .init_transactions(TRANSACTION_TIMEOUT)
            .map_err(|source| ("initialise transactions", source))?;
        producer
            .begin_transaction()
            .map_err(|source| ("begin a transaction", source))
    })
    .await
    .unwrap_or(Err(("start transactions", KafkaError::Canceled)));
    started.map_err(|(step, source)| TransformError::Transaction { step, source })
}

/// A consumer of the raw topic. The cooperative-sticky assignor is the default (unless the
/// config's Kafka properties name another) so a rebalance moves only the partitions that
/// change owner, and the others keep their snapshot state.
fn create_consumer(
    config: &TransformConfig,
) -> Result<StreamConsumer<TransformContext>, TransformError> {
    let mut client_config = config.kafka.consumer_config(SERVICE, &config.group_id)?;
    if client_config.get("partition.assignment.strategy").is_none() {
        client_config.set("partition.assignment.strategy", "cooperative-sticky");
    }
    let context = TransformContext::new();
    client_config
        .create_with_context(context)
        .map_err(|source| TransformError::Client {
            client: "consumer",
            source,
        })
}

/// The consumer's context: [`ServiceContext`]'s logging, plus a note of every revoked and
/// assigned partition for the pipeline to act on after `recv` returns.
struct TransformContext {
    inner: ServiceContext,
    revoked: Mutex<Vec<i32>>,
    /// Partitions assigned since the pipeline last looked; `Some` once any assignment
    /// (even an empty one) arrived.
    assigned: Mutex<Option<Vec<i32>>>,
    /// Whether `assigned` or `revoked` holds something: asked after every event read, so
    /// it is a flag rather than two locks. It is written only while the lock of what
    /// changed is held (both locks when something is taken), so it never goes stale.
    waiting: AtomicBool,
}

impl TransformContext {
    fn new() -> Self {
        Self {
            inner: ServiceContext { service: SERVICE },
            revoked: Mutex::new(Vec::new()),
            assigned: Mutex::new(None),
            waiting: AtomicBool::new(false),
        }
    }

    fn take_revoked(&self) -> Vec<i32> {
        let assigned = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
        let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        self.waiting.store(assigned.is_some(), Ordering::Release);
        std::mem::take(&mut *revoked)
    }

    /// Whether an assignment or a revocation waits for the pipeline.
    fn rebalanced(&self) -> bool {
        self.waiting.load(Ordering::Acquire)
    }

    fn take_assigned(&self) -> Option<Vec<i32>> {
        let mut assigned = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
        let revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        self.waiting.store(!revoked.is_empty(), Ordering::Release);
        assigned.take()
    }
}

impl ClientContext for TransformContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.inner.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.inner.error(error, reason);
    }
}

impl ConsumerContext for TransformContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                tracing::info!(service = SERVICE, partitions = list.count(), "assigned");
                let partitions: Vec<i32> = list.elements().iter().map(|e| e.partition()).collect();
                let mut assigned = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
                assigned.get_or_insert_with(Vec::new).extend(partitions);
                self.waiting.store(true, Ordering::Release);
            }
            Rebalance::Revoke(list) => {
                tracing::info!(service = SERVICE, partitions = list.count(), "revoked");
                let partitions = list.elements().iter().map(|e| e.partition()).collect();
                let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
                revoked.extend::<Vec<i32>>(partitions);
                self.waiting.store(true, Ordering::Release);
            }
            Rebalance::Error(error) => {
                tracing::warn!(service = SERVICE, %error, "rebalance error");
            }
        }
    }
}

/// The output topics' names and partition counts.
struct OutputTopics {
    license_state: (String, i32),
    user_state: (String, i32),
    dlq: (String, i32),
}

impl OutputTopics {
    fn new(topics: &Topics, partitions: &BTreeMap<String, i32>) -> Self {
        let with_count = |name: &String| (name.clone(), partitions.get(name).copied().unwrap_or(1));
        Self {
            license_state: with_count(&topics.license_state),
            user_state: with_count(&topics.user_state),
            dlq: with_count(&topics.dlq),
        }
    }

    /// The topic's full name, its partition count and its metric label.
    fn of(&self, target: Target) -> (&str, i32, &'static str) {
        let ((name, count), label) = match target {
            Target::LicenseState => (&self.license_state, metrics::TOPIC_LICENSE_STATE),
            Target::UserState => (&self.user_state, metrics::TOPIC_USER_STATE),
            Target::Dlq => (&self.dlq, metrics::TOPIC_DLQ),
        };
        (name, *count, label)
    }
}

/// The most events read at a time before idle lanes are started: enough to give every
/// lane a batch worth a thread's while, few enough that the first lanes start at once.
const READ_AHEAD: usize = 4096;

/// How many events are read between two looks at the clock (which is also looked at once
/// a finished batch): at a few hundred thousand events a second, about a millisecond,
/// while a look per event cost a tenth of the time of the thread that reads.
const CLOCK_EVERY: usize = 256;

/// One raw partition's share of a run of [`Pipeline::run_lanes`].
#[derive(Default)]
struct Lane<'a> {
    /// Events read and not yet started.
    waiting: Vec<BorrowedMessage<'a>>,
    /// Whether a batch of the partition is being processed.
    running: bool,
}

/// A lane's processed batch: its partition, and the processor given back with each event's
/// offset and outputs, in order, or the panic that stopped it.
type Batch = (i32, std::thread::Result<(Processor, Packed)>);

/// What waits for room in the producer's queue, in order: an output (with the raw
/// partition of its event), or the mark that an event's outputs are all handed over.
enum Held {
    Output(Output, i32),
    Processed(i32, i64),
}

/// A flush of at-least-once delivery under way beside processing: it awaits the outputs
/// that were in flight when it started, then commits the offsets they make safe.
struct Flushing {
    /// How many outputs it awaits; they still count against `max_in_flight`.
    outputs: usize,
    /// The offsets it commits, per partition, to remember once committed.
    moved: Vec<(i32, i64)>,
    /// Awaits the outputs, then commits: whether the commit went through (a refused one
    /// is not fatal), or the failed acknowledgement (which is).
    task: tokio::task::JoinHandle<Result<bool, TransformError>>,
}

/// An output handed to the producer, awaiting the broker's acknowledgement.
struct Pending {
    delivery: DeliveryFuture,
    target: Target,
    topic: &'static str,
    tombstone: bool,
}

struct Pipeline {
    processors: PartitionProcessors,
    /// Raw partitions whose state restored at start is still current: all of them until
    /// the first assignment, none after it.
    restored: BTreeSet<i32>,
    consumer: Arc<StreamConsumer<TransformContext>>,
    producer: FutureProducer<ServiceContext>,
    outputs: OutputTopics,
    metrics: Metrics,
    raw_topic: String,
    in_flight: Vec<Pending>,
    /// Outputs waiting for room in the producer's queue (see [`Pipeline::run_lanes`]).
    held: VecDeque<Held>,
    /// Last processed offset per owned partition.
    processed: BTreeMap<i32, i64>,
    /// Last committed offset per owned partition.
    committed: BTreeMap<i32, i64>,
    flush_interval: Duration,
    max_in_flight: usize,
    delivery: Delivery,
    /// Whether outputs were produced in the open transaction (transactional delivery).
    transaction_has_outputs: bool,
    /// The at-least-once flush under way, if any (see [`Pipeline::flush`]).
    flushing: Option<Flushing>,
}

impl Pipeline {
    /// Receives, processes and produces until shutdown, flushing on the way; then drains.
    ///
    /// The loop waits (for input, the next flush or shutdown) only when the consumer holds
    /// nothing: once an event arrives, it and the ones the consumer holds behind it run in
    /// lanes ([`run_lanes`](Self::run_lanes)), which read until the consumer runs dry, the
    /// next flush is due, `max_in_flight` events were read or a rebalance waits, and
    /// finish what they read (so a flush may come that much late); a timer and a
    /// shutdown check are set up once per such run. A rebalance is applied after the
    /// events read before it are processed and produced, and before the flush; the first
    /// event polled after it is handled once it is applied. A flush runs beside the next
    /// runs (see [`flush`](Self::flush)); one that finished is settled at each turn.
    async fn run(&mut self, shutdown: &Shutdown) -> Result<(), TransformError> {
        let consumer = Arc::clone(&self.consumer);
        let context = consumer.context();
        let mut messages = consumer.stream();
        let mut next_flush = Instant::now() + self.flush_interval;
        loop {
            // Waiting for input ends at the next flush, so quiet topics still commit.
            let received = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                received = time::timeout_at(next_flush, messages.next()) => received,
            };
            match received {
                Ok(Some(first)) => {
                    let apart = self.run_lanes(first, &mut messages, context, next_flush)?;
                    self.send_held().await?;
                    if let Some(received) = apart {
                        self.receive(received).await?;
                    }
                    // A poll that ran a rebalance ended the run without an event; the
                    // events were read before it, and it is applied before the flush.
                    self.settle_assigned();
                    self.forget_revoked();
                }
                // Rebalances are served inside the poll too, with or without an event.
                Ok(None) | Err(_) => {
                    self.settle_assigned();
                    self.forget_revoked();
                }
            }

            if self.flushing.as_ref().is_some_and(|f| f.task.is_finished()) {
                self.settle_flush().await?;
            }
            if self.unacknowledged() >= self.max_in_flight || Instant::now() >= next_flush {
                self.flush().await?;
                next_flush = Instant::now() + self.flush_interval;
            }
        }
        self.drain().await
    }

    /// Processes what the consumer holds, starting with `first`. Reading stops when the
    /// consumer holds nothing more while every lane is idle, when a rebalance waits,
    /// `max_in_flight` events were read, `until` (the next flush) passes (the clock is read
    /// every [`CLOCK_EVERY`] events and after each batch), the producer's queue is full or
    /// producing failed; the run ends once the lanes have processed what was read (after a
    /// failure, only the batches already running).
    ///
    /// Each raw partition is a lane: its events run in order on the processors' pool, one
    /// batch at a time, and a lane that finishes takes the events read for it meanwhile,
    /// without waiting for the other lanes. This task reads, starts lanes and hands each
    /// finished batch's outputs to the producer, in order within the partition. Outputs
    /// the full queue refuses wait in `held`, in order, and are offered again after each
    /// batch and then by [`send_held`](Self::send_held), which awaits room: the producer
    /// never puts this thread to sleep. Processing does: this task's thread waits for the
    /// lanes, as it waited for the pool before.
    ///
    /// Returns what was polled apart from the events: the first event polled once a
    /// rebalance waits, or an error, for [`receive`](Self::receive) once the lanes are
    /// done.
    fn run_lanes<'a>(
        &mut self,
        first: KafkaResult<BorrowedMessage<'a>>,
        messages: &mut MessageStream<'a, TransformContext>,
        context: &TransformContext,
        until: Instant,
    ) -> Result<Option<KafkaResult<BorrowedMessage<'a>>>, TransformError> {
        let pool = self.processors.pool();
        let room = self
            .max_in_flight
            .saturating_sub(self.unacknowledged())
            .max(1);
        let (finished, done) = std::sync::mpsc::channel::<Batch>();
        let mut lanes: BTreeMap<i32, Lane<'a>> = BTreeMap::new();
        let mut apart = None;
        let mut next = Some(first);
        let mut read = 0;
        let mut reading = true;
        let mut running = 0;
        let mut failure = None;

        pool.in_place_scope(|scope| loop {
            // Read what the consumer holds, without waiting.
            let mut read_now = 0;
            while reading && read_now < READ_AHEAD {
                let Some(received) = next
                    .take()
                    .or_else(|| messages.next().now_or_never().flatten())
                else {
                    break;
                };
                match received {
                    Ok(message) if !context.rebalanced() => {
                        let lane = lanes.entry(message.partition()).or_default();
                        lane.waiting.push(message);
                        read += 1;
                        read_now += 1;
                    }
                    other => {
                        apart = Some(other);
                        reading = false;
                    }
                }
                let late = read % CLOCK_EVERY == 0 && Instant::now() >= until;
                if read >= room || context.rebalanced() || late {
                    reading = false;
                }
            }
            // And once a batch, for a run that reads a few events at a time.
            if reading && Instant::now() >= until {
                reading = false;
            }

            // Start every idle lane that has events waiting; after a failure, none.
            for (&partition, lane) in &mut lanes {
                if failure.is_some() {
                    lane.waiting.clear();
                }
                if lane.running || lane.waiting.is_empty() {
                    continue;
                }
                let events = std::mem::take(&mut lane.waiting);
                let mut processor = self.processors.take(partition);
                let finished = finished.clone();
                lane.running = true;
                running += 1;
                scope.spawn(move |_| {
                    // A panic is carried back, so that this task does not wait for a batch
                    // that never comes; it is raised again there.
                    let processed = std::panic::catch_unwind(AssertUnwindSafe(move || {
                        let mut packed = Packed::default();
                        for message in &events {
                            packed.push(message.offset(), processor.process(input_of(message)));
                        }
                        (processor, packed)
                    }));
                    let _ = finished.send((partition, processed));
                });
            }
            if running == 0 {
                break;
            }

            // Take the next finished batch and hand its outputs on, unless producing failed.
            let (partition, processed) = done.recv().expect("every started lane reports back");
            let (processor, outputs) = processed.unwrap_or_else(|panic| resume_unwind(panic));
            running -= 1;
            if let Some(lane) = lanes.get_mut(&partition) {
                lane.running = false;
            }
            self.processors.put_back(partition, processor);
            if let Err(error) = self.try_send_held() {
                failure.get_or_insert(error);
            }
            for (offset, outputs) in outputs.events() {
                if failure.is_some() {
                    break;
                }
                if let Err(error) = self.send_or_hold(partition, offset, outputs) {
                    failure = Some(error);
                }
            }
            if failure.is_some() || !self.held.is_empty() {
                reading = false;
            }
        });

        self.metrics.set_in_flight(self.unacknowledged());
        match failure {
            Some(error) => Err(error),
            None => Ok(apart),
        }
    }

    /// Hands an event's outputs to the producer without waiting, then notes the event as
    /// processed; what the full queue does not take waits in `held`, in order, and so does
    /// everything after it.
    fn send_or_hold<'o>(
        &mut self,
        partition: i32,
        offset: i64,
        outputs: impl Iterator<Item = OutputRef<'o>>,
    ) -> Result<(), TransformError> {
        for output in outputs {
            if !self.held.is_empty() || !self.try_produce(output, partition)? {
                self.metrics.output_held();
                self.held
                    .push_back(Held::Output(output.to_output(), partition));
            }
        }
        if self.held.is_empty() {
            self.processed.insert(partition, offset);
        } else {
            self.held.push_back(Held::Processed(partition, offset));
        }
        Ok(())
    }

    /// Hands what waits in `held` to the producer while its queue has room, without
    /// waiting.
    fn try_send_held(&mut self) -> Result<(), TransformError> {
        while let Some(held) = self.held.pop_front() {
            match held {
                Held::Output(output, source) => {
                    if !self.try_produce((&output).into(), source)? {
                        self.held.push_front(Held::Output(output, source));
                        break;
                    }
                }
                Held::Processed(partition, offset) => {
                    self.processed.insert(partition, offset);
                }
            }
        }
        Ok(())
    }

    /// Hands what waits in `held` to the producer, waiting while its queue is full.
    async fn send_held(&mut self) -> Result<(), TransformError> {
        while let Some(held) = self.held.pop_front() {
            match held {
                Held::Output(output, source) => self.produce(output, source).await?,
                Held::Processed(partition, offset) => {
                    self.processed.insert(partition, offset);
                }
            }
        }
        self.metrics.set_in_flight(self.unacknowledged());
        Ok(())
    }

    /// Acts on what one poll of the consumer returned, and on the partitions assigned and
    /// revoked while it ran.
    async fn receive(
        &mut self,
        received: KafkaResult<BorrowedMessage<'_>>,
    ) -> Result<(), TransformError> {
        // Before any event of a newly assigned partition is processed.
        self.settle_assigned();
        match received {
            Ok(message) => self.handle_one(&message).await?,
            Err(error) => self.receive_failed(error)?,
        }
        self.forget_revoked();
        Ok(())
    }

    /// Processes one event polled apart from a run, then hands its outputs to the producer
    /// in order. A full producer queue holds this up, and with it the reading of input.
    async fn handle_one(&mut self, message: &BorrowedMessage<'_>) -> Result<(), TransformError> {
        let input = input_of(message);
        for (_, outputs) in self.processors.process(&[input]) {
            for output in outputs {
                self.produce(output, input.partition).await?;
            }
        }
        self.processed.insert(input.partition, input.offset);
        self.metrics.set_in_flight(self.unacknowledged());
        Ok(())
    }

    /// Hands one output to the producer, waiting while its queue is full; `source` is the
    /// raw partition of its event, which places a dead letter whose org is unknown.
    async fn produce(&mut self, output: Output, source: i32) -> Result<(), TransformError> {
        while !self.try_produce((&output).into(), source)? {
            time::sleep(kafka::QUEUE_FULL_PAUSE).await;
        }
        Ok(())
    }

    /// Hands one output to the producer if its queue has room; whether it did.
    fn try_produce(&mut self, output: OutputRef<'_>, source: i32) -> Result<bool, TransformError> {
        let (topic, partitions, label) = self.outputs.of(output.target);
        let partition = match output.org_hash {
            Some(hash) => kafka::partition_of_hash(hash, partitions),
            None => source.rem_euclid(partitions.max(1)),
        };
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).partition(partition);
        if let Some(key) = output.key {
            record = record.key(key);
        }
        if let Some(value) = output.value {
            record = record.payload(value);
        }
        if !output.headers.is_empty() {
            record = record.headers(headers(output.headers));
        }

        let delivery = match self.producer.send_result(record) {
            Ok(delivery) => delivery,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                return Ok(false);
            }
            Err((source, _)) => {
                return Err(TransformError::Delivery {
                    topic: label,
                    source,
                })
            }
        };
        self.transaction_has_outputs = true;
        self.in_flight.push(Pending {
            delivery,
            target: output.target,
            topic: label,
            tombstone: output.is_tombstone(),
        });
        Ok(true)
    }

    /// A consumer error: fatal ones stop transform, the rest librdkafka recovers from.
    fn receive_failed(&self, error: KafkaError) -> Result<(), TransformError> {
        if matches!(error, KafkaError::MessageConsumptionFatal(_)) {
            return Err(TransformError::Consume(error));
        }
        self.metrics.receive_failed();
        tracing::warn!(%error, "consumer error; librdkafka retries");
        Ok(())
    }

    /// Acts on partitions assigned during the last `recv`. The state restored at start is
    /// kept for the partitions of the first assignment and dropped for all others: it would
    /// be stale for a partition that arrives later, after another instance has published
    /// for it, and is only memory for a partition this instance does not own.
    fn settle_assigned(&mut self) {
        let Some(assigned) = self.consumer.context().take_assigned() else {
            return;
        };
        self.count_assignment();
        let first = std::mem::take(&mut self.restored);
        for partition in &assigned {
            if !first.contains(partition) {
                self.processors.revoke(*partition);
            }
        }
        let unowned: Vec<i32> = first
            .into_iter()
            .filter(|partition| !assigned.contains(partition))
            .collect();
        for partition in &unowned {
            self.processors.revoke(*partition);
        }
        if !unowned.is_empty() {
            let (licenses, users) = self.processors.remembered();
            tracing::info!(
                dropped_partitions = unowned.len(),
                licenses,
                users,
                "restored state of partitions not assigned here dropped"
            );
        }
    }

    /// Drops the state and offsets of partitions revoked during the last `recv`.
    fn forget_revoked(&mut self) {
        let revoked = self.consumer.context().take_revoked();
        for &partition in &revoked {
            self.processors.revoke(partition);
            self.processed.remove(&partition);
            self.committed.remove(&partition);
        }
        if !revoked.is_empty() {
            self.count_assignment();
        }
    }

    /// Sets the assigned-partitions gauge from the consumer's assignment, after a change.
    fn count_assignment(&self) {
        if let Ok(assignment) = self.consumer.assignment() {
            self.metrics.set_assigned_partitions(assignment.count());
        }
    }

    /// Outputs handed to the producer and not yet known to be acknowledged: those in
    /// flight and those a flush under way awaits.
    fn unacknowledged(&self) -> usize {
        self.in_flight.len() + self.flushing.as_ref().map_or(0, |f| f.outputs)
    }

    /// Commits what the outputs in flight make safe, once they are acknowledged.
    ///
    /// With at-least-once delivery the flush runs beside processing: it takes the outputs
    /// in flight and the offsets processed so far, and a task awaits those outputs and
    /// then commits those offsets, while new events are read, processed and produced. A
    /// flush first waits for the one before it, so commits keep their order and at most
    /// two flushes' outputs are unacknowledged. Awaiting in place instead stopped reading
    /// and processing for each flush (1-7 ms a flush every 100 ms on loopback in the
    /// throughput benchmark, more with a broker a network away). A transaction cannot
    /// overlap the next one's outputs, so transactional delivery awaits and commits in
    /// place.
    async fn flush(&mut self) -> Result<(), TransformError> {
        self.settle_flush().await?;
        match self.delivery {
            Delivery::AtLeastOnce => {
                self.start_flush();
                Ok(())
            }
            Delivery::Transactional => {
                let timer = self.metrics.flush_seconds().start_timer();
                let in_flight = std::mem::take(&mut self.in_flight);
                acknowledge(in_flight, &self.metrics).await?;
                self.metrics.set_in_flight(0);
                self.commit_transaction().await?;
                timer.observe_duration();
                Ok(())
            }
        }
    }

    /// Starts an at-least-once flush of what is in flight and processed now.
    fn start_flush(&mut self) {
        let (list, moved) = self.moved_offsets();
        if self.in_flight.is_empty() && moved.is_empty() {
            return;
        }
        let in_flight = std::mem::take(&mut self.in_flight);
        let outputs = in_flight.len();
        let metrics = self.metrics.clone();
        let consumer = Arc::clone(&self.consumer);
        let task = tokio::spawn(async move {
            let timer = metrics.flush_seconds().start_timer();
            acknowledge(in_flight, &metrics).await?;
            let committed = list.count() == 0 || commit(consumer, list, &metrics).await;
            timer.observe_duration();
            Ok(committed)
        });
        self.flushing = Some(Flushing {
            outputs,
            moved,
            task,
        });
    }

    /// Waits for the flush under way, if any, and remembers what it committed for the
    /// partitions still owned. A failed acknowledgement is fatal, as when awaited in place.
    async fn settle_flush(&mut self) -> Result<(), TransformError> {
        let Some(flushing) = self.flushing.take() else {
            return Ok(());
        };
        let committed = match flushing.task.await {
            Ok(result) => result?,
            Err(error) if error.is_panic() => resume_unwind(error.into_panic()),
            // Cancelled only as the runtime shuts down: nothing is known to be committed.
            Err(_) => false,
        };
        if committed {
            let owned = flushing
                .moved
                .into_iter()
                .filter(|(partition, _)| self.processed.contains_key(partition));
            self.committed.extend(owned);
        }
        self.metrics.set_in_flight(self.unacknowledged());
        Ok(())
    }

    /// The offset a restart must resume each owned partition from, where it moved since
    /// the last commit: as a list to commit, and as pairs to remember once committed.
    fn moved_offsets(&self) -> (TopicPartitionList, Vec<(i32, i64)>) {
        let mut list = TopicPartitionList::new();
        let mut moved = Vec::new();
        for (&partition, &last) in &self.processed {
            let offset = self.processors.committable_offset(partition, last);
            if self.committed.get(&partition) != Some(&offset) {
                let added =
                    list.add_partition_offset(&self.raw_topic, partition, Offset::Offset(offset));
                if added.is_ok() {
                    moved.push((partition, offset));
                }
            }
        }
        (list, moved)
    }

    /// Commits the open transaction with the offsets its outputs make safe, then opens the
    /// next one. Nothing to commit leaves the transaction open; any failure is fatal.
    async fn commit_transaction(&mut self) -> Result<(), TransformError> {
        let (list, moved) = self.moved_offsets();
        if moved.is_empty() && !self.transaction_has_outputs {
            return Ok(());
        }
        let group = if moved.is_empty() {
            None
        } else {
            let metadata = self.consumer.group_metadata();
            Some(metadata.ok_or(TransformError::NoGroupMetadata)?)
        };

        // Each call blocks until the transaction coordinator answers.
        let producer = self.producer.clone();
        let committed = tokio::task::spawn_blocking(move || {
            if let Some(group) = group {
                producer
                    .send_offsets_to_transaction(&list, &group, TRANSACTION_TIMEOUT)
                    .map_err(|source| ("send the offsets", source))?;
            }
            producer
                .commit_transaction(TRANSACTION_TIMEOUT)
                .map_err(|source| ("commit", source))?;
            producer
                .begin_transaction()
                .map_err(|source| ("begin the next transaction", source))
        })
        .await
        .unwrap_or(Err(("run the commit", KafkaError::Canceled)));

        match committed {
            Ok(()) => {
                self.metrics.transaction_committed();
                if !moved.is_empty() {
                    self.metrics.committed();
                }
                self.committed.extend(moved);
                self.transaction_has_outputs = false;
                Ok(())
            }
            Err((step, source)) => {
                self.metrics.commit_failed();
                Err(TransformError::Transaction { step, source })
            }
        }
    }

    /// Flushes what is in flight within the drain deadline. Past it, the remainder is left
    /// uncommitted for the next start to replay; nothing is lost, so this is not an error.
    async fn drain(&mut self) -> Result<(), TransformError> {
        tracing::info!(in_flight = self.unacknowledged(), "draining");
        let flushed = async {
            self.flush().await?;
            self.settle_flush().await
        };
        match time::timeout(DRAIN_DEADLINE, flushed).await {
            Ok(flushed) => flushed?,
            Err(_elapsed) => {
                tracing::warn!(
                    deadline_secs = DRAIN_DEADLINE.as_secs(),
                    "drain deadline passed; the next start replays what is unacknowledged"
                );
            }
        }
        tracing::info!("transform stopped");
        Ok(())
    }

    /// Aborts an open transaction, leaves the consumer group and stops the producer. Each
    /// blocks while librdkafka talks to the broker (the producer drops what it still holds:
    /// never anything committed), so they run on the blocking pool.
    async fn close(self) {
        let Pipeline {
            consumer,
            producer,
            delivery,
            ..
        } = self;
        let closed = tokio::task::spawn_blocking(move || {
            // A transaction left open by a failure is aborted now rather than holding back
            // read_committed consumers until the broker times it out.
            if delivery == Delivery::Transactional {
                let _ = producer.abort_transaction(TRANSACTION_TIMEOUT);
            }
            drop((consumer, producer))
        })
        .await;
        if let Err(error) = closed {
            tracing::warn!(%error, "closing the Kafka clients failed");
        }
    }
}

/// Awaits the broker's acknowledgement of every output in `in_flight`, in order.
async fn acknowledge(in_flight: Vec<Pending>, metrics: &Metrics) -> Result<(), TransformError> {
    for pending in in_flight {
        kafka::delivered(pending.delivery)
            .await
            .map_err(|source| TransformError::Delivery {
                topic: pending.topic,
                source,
            })?;
        metrics.acknowledged(pending.target, pending.tombstone);
    }
    Ok(())
}

/// Commits `list`, the offsets a restart must resume the owned partitions from; whether
/// the broker took it.
///
/// A refused commit is not fatal: nothing is lost, the next flush commits again, and
/// until then a restart would only replay more.
async fn commit(
    consumer: Arc<StreamConsumer<TransformContext>>,
    list: TopicPartitionList,
    metrics: &Metrics,
) -> bool {
    // The fault suite's kill point: every output acknowledged, the offsets not yet
    // committed. Compiled in only with the `failpoints` feature.
    fail::fail_point!("transform-before-commit", |_| {
        tracing::error!("fail point transform-before-commit: aborting before the commit");
        std::process::abort()
    });

    // A synchronous commit blocks its thread until the broker answers, so it runs on the
    // blocking pool.
    let committed =
        tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync)).await;
    match committed {
        Ok(Ok(())) => {
            metrics.committed();
            true
        }
        Ok(Err(error)) => {
            metrics.commit_failed();
            tracing::warn!(%error, "offset commit refused; retrying at the next flush");
            false
        }
        Err(panicked) => {
            metrics.commit_failed();
            tracing::warn!(error = %panicked, "offset commit task failed; retrying");
            false
        }
    }
}

/// How long one metadata or watermark request of the restore may block.
const RESTORE_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one poll of the restore waits, and so how late it notices shutdown.
const RESTORE_POLL: Duration = Duration::from_millis(100);

/// Reads the compacted state topics into a processor before it sees any live event.
struct Restore<'a> {
    config: &'a TransformConfig,
    topics: &'a Topics,
    raw_partitions: i32,
    encoder: StateEncoder,
    metrics: Metrics,
}

/// What a restore read, for its log line.
#[derive(Debug, Default)]
struct RestoreCounts {
    messages: u64,
    skipped: u64,
}

impl Restore<'_> {
    /// Seeds `processor` with both state topics as they are now; `None` on shutdown. The
    /// reads block, so they run on the blocking pool, polling briefly so that shutdown
    /// stops them at once (the caller does not wait for them).
    async fn run(
        self,
        mut processors: PartitionProcessors,
        shutdown: &Shutdown,
    ) -> Result<Option<PartitionProcessors>, TransformError> {
        let started = Instant::now();
        let group = format!("{}-restore-unused", self.config.group_id);
        let consumer: BaseConsumer<ServiceContext> = self
            .config
            .kafka
            .consumer_config(SERVICE, &group)?
            .create_with_context(ServiceContext { service: SERVICE })
            .map_err(|source| TransformError::Client {
                client: "state reader",
                source,
            })?;
        let reader = Reader {
            consumer,
            license_topic: self.topics.license_state.clone(),
            user_topic: self.topics.user_state.clone(),
            raw_partitions: self.raw_partitions,
            encoder: self.encoder,
            runtime: tokio::runtime::Handle::current(),
            metrics: self.metrics,
            stop: shutdown.child_token(),
        };
        let stop = reader.stop.clone();
        let task = tokio::task::spawn_blocking(move || {
            let counts = reader.read(&mut processors);
            kafka::close_in_background(reader);
            Ok::<_, TransformError>(counts?.map(|counts| (processors, counts)))
        });
        let read = tokio::select! {
            () = shutdown.cancelled() => {
                stop.cancel();
                return Ok(None);
            }
            read = task => read,
        };
        let read = match read {
            Ok(read) => read?,
            Err(panicked) => {
                tracing::error!(error = %panicked, "the state reader failed");
                return Err(TransformError::Restore {
                    topic: "the state topics".into(),
                    source: KafkaError::Canceled,
                });
            }
        };
        let Some((processors, counts)) = read else {
            return Ok(None);
        };
        let (licenses, users) = processors.remembered();
        tracing::info!(
            licenses,
            users,
            messages = counts.messages,
            skipped = counts.skipped,
            elapsed_ms = started.elapsed().as_millis(),
            "seat state restored from the state topics"
        );
        Ok(Some(processors))
    }
}

/// Where each partition being restored ends, by topic and partition.
type Ends = BTreeMap<(String, i32), i64>;

/// The blocking side of a [`Restore`].
struct Reader {
    consumer: BaseConsumer<ServiceContext>,
    license_topic: String,
    user_topic: String,
    raw_partitions: i32,
    encoder: StateEncoder,
    runtime: tokio::runtime::Handle,
    metrics: Metrics,
    stop: Shutdown,
}

impl Reader {
    /// Reads every partition of both topics from its low to its high watermark of now,
    /// seeding `processor`; `None` if stopped.
    fn read(
        &self,
        processors: &mut PartitionProcessors,
    ) -> Result<Option<RestoreCounts>, TransformError> {
        let Some(mut ends) = self.assign()? else {
            return Ok(None);
        };
        let mut counts = RestoreCounts::default();
        while !ends.is_empty() {
            if self.stop.is_cancelled() {
                return Ok(None);
            }
            let Some(message) = self.consumer.poll(RESTORE_POLL) else {
                // Nothing came: partitions whose last offsets are transaction markers, which
                // are never delivered, are done once the position has passed them.
                self.drop_passed(&mut ends);
                continue;
            };
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    self.metrics.receive_failed();
                    tracing::warn!(%error, "reading the state topics; librdkafka retries");
                    continue;
                }
            };
            let at = (message.topic().to_owned(), message.partition());
            if ends
                .get(&at)
                .is_some_and(|end| message.offset() + 1 >= *end)
            {
                ends.remove(&at);
            }
            counts.messages += 1;
            if let Err(reason) = self.apply(processors, &message) {
                counts.skipped += 1;
                tracing::warn!(
                    topic = message.topic(),
                    partition = message.partition(),
                    offset = message.offset(),
                    reason,
                    "state record skipped while restoring"
                );
            }
        }
        Ok(Some(counts))
    }

    /// Assigns every non-empty partition of both topics from its low watermark, returning
    /// where each ends now; `None` if stopped.
    fn assign(&self) -> Result<Option<Ends>, TransformError> {
        let mut assignment = TopicPartitionList::new();
        let mut ends = BTreeMap::new();
        for topic in [&self.license_topic, &self.user_topic] {
            let failed = |source| TransformError::Restore {
                topic: topic.clone(),
                source,
            };
            let metadata = self
                .consumer
                .fetch_metadata(Some(topic), RESTORE_REQUEST_TIMEOUT)
                .map_err(failed)?;
            for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
                if self.stop.is_cancelled() {
                    return Ok(None);
                }
                let (low, high) = self
                    .consumer
                    .fetch_watermarks(topic, partition.id(), RESTORE_REQUEST_TIMEOUT)
                    .map_err(failed)?;
                if high > low {
                    assignment
                        .add_partition_offset(topic, partition.id(), Offset::Offset(low))
                        .map_err(failed)?;
                    ends.insert((topic.clone(), partition.id()), high);
                }
            }
        }
        self.consumer
            .assign(&assignment)
            .map_err(|source| TransformError::Restore {
                topic: self.license_topic.clone(),
                source,
            })?;
        Ok(Some(ends))
    }

    /// Drops from `ends` the partitions whose position reached their end.
    fn drop_passed(&self, ends: &mut Ends) {
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        for element in positions.elements() {
            let at = (element.topic().to_owned(), element.partition());
            if let (Offset::Offset(position), Some(end)) = (element.offset(), ends.get(&at)) {
                if position >= *end {
                    ends.remove(&at);
                }
            }
        }
    }

    /// Seeds the processor with one state record, or says why it cannot.
    fn apply(
        &self,
        processors: &mut PartitionProcessors,
        message: &BorrowedMessage<'_>,
    ) -> Result<(), String> {
        let key = message
            .key()
            .map(std::str::from_utf8)
            .ok_or("the key is null")?
            .map_err(|_| "the key is not UTF-8")?;
        let partition_of = |org: &str| kafka::partition_for(org, self.raw_partitions);
        if message.topic() == self.license_topic {
            let (org, kind, id) =
                processor::parse_license_key(key).ok_or("the key is not org/kind/license-id")?;
            match message.payload() {
                None => processors.forget_license(partition_of(org), org, kind, id),
                Some(bytes) => {
                    let state: LicenseState = self.decode(bytes)?;
                    if state.key() != key {
                        return Err(format!("the value is keyed {}", state.key()));
                    }
                    processors.restore_license(partition_of(org), org, kind, id);
                }
            }
        } else {
            let (org, id) = processor::parse_user_key(key).ok_or("the key is not org/user-id")?;
            match message.payload() {
                None => processors.forget_user(partition_of(org), org, id),
                Some(bytes) => {
                    let state: UserState = self.decode(bytes)?;
                    if state.key() != key {
                        return Err(format!("the value is keyed {}", state.key()));
                    }
                    processors.restore_user(partition_of(org), state);
                }
            }
        }
        Ok(())
    }

    /// Decodes a value in either framing, fetching a Confluent writer schema from the
    /// registry (on the runtime) the first time its id is seen.
    fn decode<T: AvroRecord>(&self, bytes: &[u8]) -> Result<T, String> {
        let encoder = self.encoder.encoder();
        let decoded = match encoder.decode_cached(bytes) {
            Err(EncodingError::SchemaNotCached { id }) => self
                .runtime
                .block_on(encoder.load_schema(id))
                .and_then(|()| encoder.decode_cached(bytes)),
            decoded => decoded,
        };
        decoded.map_err(|error| format!("the value does not decode: {error}"))
    }
}

/// The processor's view of a message.
fn input_of<'a>(message: &'a BorrowedMessage<'_>) -> Input<'a> {
    Input {
        partition: message.partition(),
        offset: message.offset(),
        key: message.key(),
        value: message.payload(),
    }
}

fn headers(pairs: &[(&'static str, String)]) -> OwnedHeaders {
    pairs.iter().fold(
        OwnedHeaders::new_with_capacity(pairs.len()),
        |headers, (key, value)| {
            headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        },
    )
}
