//! transform's Prometheus metrics.
//!
//! All are registered on the registry the caller passes (the service's own, or the demo's
//! shared one) and carry only labels from fixed vocabularies: Salesforce object names,
//! outcome words, output topic names without their prefix, and dead-letter classes. The
//! series of every known label value exist from the start, at zero, so dashboards and alert
//! rules see a rate of 0 rather than no data. Log lines about the same events are written
//! next to the increments, by the methods here or their callers, never separately.
//!
//! The counters bumped for every event and every output (`records_total` with outcome
//! `ok`, `outputs_total`, `tombstones_total`) are looked up once, at creation: a label
//! lookup hashes the values and takes a lock, which on the hot path cost a measurable
//! share of transform's time per event.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use seatwatch_schemas::SfObject;

use crate::dlq::ErrorClass;
use crate::processor::Target;

/// The `object` label of an event whose object could not be read.
pub const UNKNOWN_OBJECT: &str = "unknown";

/// Output topics as metric labels: the base names, without the configured prefix.
pub const TOPIC_LICENSE_STATE: &str = "seats.license-state";
pub const TOPIC_USER_STATE: &str = "seats.user-state";
pub const TOPIC_DLQ: &str = "salesforce.usage.dlq";

/// What became of an object's snapshot when its end marker arrived (or never will).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotOutcome {
    /// A complete full snapshot: what it lacks was tombstoned.
    Full,
    /// An incremental snapshot: applied, nothing removed.
    Incremental,
    /// A full snapshot whose marker announced more records than arrived: applied as if
    /// incremental, nothing removed.
    Incomplete,
    /// An open snapshot abandoned because a newer sync of the object began.
    Discarded,
}

impl SnapshotOutcome {
    const ALL: [SnapshotOutcome; 4] = [
        SnapshotOutcome::Full,
        SnapshotOutcome::Incremental,
        SnapshotOutcome::Incomplete,
        SnapshotOutcome::Discarded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotOutcome::Full => "full",
            SnapshotOutcome::Incremental => "incremental",
            SnapshotOutcome::Incomplete => "incomplete",
            SnapshotOutcome::Discarded => "discarded",
        }
    }
}

/// Handles on transform's metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    records: IntCounterVec,
    snapshots: IntCounterVec,
    outputs: IntCounterVec,
    tombstones: IntCounterVec,
    dlq: IntCounterVec,
    commits: IntCounter,
    transactions: IntCounter,
    commit_failures: IntCounter,
    receive_errors: IntCounter,
    held: IntCounter,
    in_flight: IntGauge,
    assigned_partitions: IntGauge,
    flush_seconds: Histogram,
    hot: HotCounters,
}

/// The series of the hot path, resolved from their vectors once.
#[derive(Clone, Debug)]
struct HotCounters {
    /// `records_total{outcome="ok"}` per object, in the order of [`SfObject::KNOWN`].
    records_ok: Vec<IntCounter>,
    /// `outputs_total` of the licence-state, user-state and dead-letter topics.
    outputs: [IntCounter; 3],
    /// `tombstones_total` of the licence-state and user-state topics.
    tombstones: [IntCounter; 2],
}

impl HotCounters {
    fn resolve(
        records: &IntCounterVec,
        outputs: &IntCounterVec,
        tombstones: &IntCounterVec,
    ) -> Self {
        let records_ok = SfObject::KNOWN
            .iter()
            .map(|object| records.with_label_values(&[object.as_str(), "ok"]))
            .collect();
        let output = |topic| outputs.with_label_values(&[topic]);
        let tombstone = |topic| tombstones.with_label_values(&[topic]);
        Self {
            records_ok,
            outputs: [
                output(TOPIC_LICENSE_STATE),
                output(TOPIC_USER_STATE),
                output(TOPIC_DLQ),
            ],
            tombstones: [tombstone(TOPIC_LICENSE_STATE), tombstone(TOPIC_USER_STATE)],
        }
    }
}

impl Metrics {
    /// Creates the metrics and registers them on `registry`. Fails if they are registered
    /// there already (two transform pipelines sharing one registry).
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let records = IntCounterVec::new(
            Opts::new(
                "seatwatch_transform_records_total",
                "Events read from the raw topic (records and snapshot markers), by \
                 Salesforce object and outcome (ok or dlq).",
            ),
            &["object", "outcome"],
        )?;
        let outputs = IntCounterVec::new(
            Opts::new(
                "seatwatch_transform_outputs_total",
                "Messages acknowledged by the broker, tombstones and dead letters \
                 included, by topic.",
            ),
            &["topic"],
        )?;
        let tombstones = IntCounterVec::new(
            Opts::new(
                "seatwatch_transform_tombstones_total",
                "Tombstones acknowledged by the broker, by topic.",
            ),
            &["topic"],
        )?;
        let metrics = Self {
            hot: HotCounters::resolve(&records, &outputs, &tombstones),
            records,
            snapshots: IntCounterVec::new(
                Opts::new(
                    "seatwatch_transform_snapshots_total",
                    "Object snapshots closed or abandoned, by Salesforce object and outcome.",
                ),
                &["object", "outcome"],
            )?,
            outputs,
            tombstones,
            dlq: IntCounterVec::new(
                Opts::new(
                    "seatwatch_transform_dlq_total",
                    "Events sent to the dead-letter topic, by error class.",
                ),
                &["error_class"],
            )?,
            commits: IntCounter::new(
                "seatwatch_transform_commits_total",
                "Successful consumer offset commits.",
            )?,
            transactions: IntCounter::new(
                "seatwatch_transform_transactions_total",
                "Kafka transactions committed (transactional delivery only).",
            )?,
            commit_failures: IntCounter::new(
                "seatwatch_transform_commit_failures_total",
                "Offset commits the broker refused; retried at the next flush.",
            )?,
            receive_errors: IntCounter::new(
                "seatwatch_transform_receive_errors_total",
                "Non-fatal errors reported by the consumer while receiving.",
            )?,
            held: IntCounter::new(
                "seatwatch_transform_outputs_held_total",
                "Outputs the producer's full queue refused at first; they waited, in order, \
                 and were produced once it had room (backpressure).",
            )?,
            in_flight: IntGauge::new(
                "seatwatch_transform_in_flight",
                "Outputs handed to the producer and not yet acknowledged.",
            )?,
            assigned_partitions: IntGauge::new(
                "seatwatch_transform_assigned_partitions",
                "Partitions of the raw topic this instance owns, as of its last rebalance.",
            )?,
            flush_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "seatwatch_transform_flush_seconds",
                    "Time to await every in-flight output and commit offsets.",
                )
                .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0]),
            )?,
        };
        metrics.register(registry)?;
        metrics.touch_known_series();
        Ok(metrics)
    }

    fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.records.clone()))?;
        registry.register(Box::new(self.snapshots.clone()))?;
        registry.register(Box::new(self.outputs.clone()))?;
        registry.register(Box::new(self.tombstones.clone()))?;
        registry.register(Box::new(self.dlq.clone()))?;
        registry.register(Box::new(self.commits.clone()))?;
        registry.register(Box::new(self.transactions.clone()))?;
        registry.register(Box::new(self.commit_failures.clone()))?;
        registry.register(Box::new(self.receive_errors.clone()))?;
        registry.register(Box::new(self.held.clone()))?;
        registry.register(Box::new(self.in_flight.clone()))?;
        registry.register(Box::new(self.assigned_partitions.clone()))?;
        registry.register(Box::new(self.flush_seconds.clone()))?;
        Ok(())
    }

    fn touch_known_series(&self) {
        let objects = SfObject::KNOWN.iter().map(|o| o.as_str());
        for object in objects.chain([UNKNOWN_OBJECT]) {
            for outcome in ["ok", "dlq"] {
                self.records.with_label_values(&[object, outcome]);
            }
        }
        for object in SfObject::KNOWN {
            for outcome in SnapshotOutcome::ALL {
                self.snapshots
                    .with_label_values(&[object.as_str(), outcome.as_str()]);
            }
        }
        for topic in [TOPIC_LICENSE_STATE, TOPIC_USER_STATE, TOPIC_DLQ] {
            self.outputs.with_label_values(&[topic]);
        }
        for topic in [TOPIC_LICENSE_STATE, TOPIC_USER_STATE] {
            self.tombstones.with_label_values(&[topic]);
        }
        for class in ErrorClass::ALL {
            self.dlq.with_label_values(&[class.as_str()]);
        }
    }

    /// Counts one event that became seat state (or moved a snapshot along).
    pub fn record_ok(&self, object: SfObject) {
        match SfObject::KNOWN.iter().position(|known| *known == object) {
            Some(index) => self.hot.records_ok[index].inc(),
            None => self
                .records
                .with_label_values(&[object.as_str(), "ok"])
                .inc(),
        }
    }

    /// Counts one event sent to the dead-letter topic. The caller logs it.
    pub fn record_dlq(&self, object: Option<SfObject>, class: ErrorClass) {
        let object = object.map_or(UNKNOWN_OBJECT, SfObject::as_str);
        self.records.with_label_values(&[object, "dlq"]).inc();
        self.dlq.with_label_values(&[class.as_str()]).inc();
    }

    /// Counts one snapshot closed or abandoned. The caller logs the unusual outcomes.
    pub fn snapshot(&self, object: SfObject, outcome: SnapshotOutcome) {
        self.snapshots
            .with_label_values(&[object.as_str(), outcome.as_str()])
            .inc();
    }

    /// Counts one output the broker acknowledged.
    pub fn acknowledged(&self, target: Target, tombstone: bool) {
        let index = match target {
            Target::LicenseState => 0,
            Target::UserState => 1,
            Target::Dlq => 2,
        };
        self.hot.outputs[index].inc();
        if let (true, Some(tombstones)) = (tombstone, self.hot.tombstones.get(index)) {
            tombstones.inc();
        }
    }

    pub fn committed(&self) {
        self.commits.inc();
    }

    pub fn transaction_committed(&self) {
        self.transactions.inc();
    }

    pub fn commit_failed(&self) {
        self.commit_failures.inc();
    }

    pub fn receive_failed(&self) {
        self.receive_errors.inc();
    }

    pub fn output_held(&self) {
        self.held.inc();
    }

    pub fn set_in_flight(&self, count: usize) {
        self.in_flight.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn set_assigned_partitions(&self, count: usize) {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        self.assigned_partitions.set(count);
    }

    pub fn flush_seconds(&self) -> &Histogram {
        &self.flush_seconds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of one series of `family`, whose labels include every pair of `labels`.
    fn value(registry: &Registry, family: &str, labels: &[(&str, &str)]) -> f64 {
        let families = registry.gather();
        let family = families.iter().find(|f| f.name() == family).unwrap();
        let metric = family.get_metric().iter().find(|metric| {
            labels.iter().all(|(name, value)| {
                metric
                    .get_label()
                    .iter()
                    .any(|label| label.name() == *name && label.value() == *value)
            })
        });
        metric.unwrap().get_counter().get_value()
    }

    #[test]
    fn hot_counters_count_the_series_they_name() {
        let registry = Registry::new();
        let metrics = Metrics::new(&registry).unwrap();
        metrics.record_ok(SfObject::User);
        metrics.record_ok(SfObject::User);
        metrics.record_ok(SfObject::LoginHistory);
        metrics.acknowledged(Target::UserState, true);
        metrics.acknowledged(Target::LicenseState, false);
        metrics.acknowledged(Target::Dlq, false);

        let records = "seatwatch_transform_records_total";
        let ok = |object| value(&registry, records, &[("object", object), ("outcome", "ok")]);
        assert_eq!(ok("User"), 2.0);
        assert_eq!(ok("LoginHistory"), 1.0);
        assert_eq!(ok("UserLicense"), 0.0);

        let outputs = |topic| {
            value(
                &registry,
                "seatwatch_transform_outputs_total",
                &[("topic", topic)],
            )
        };
        assert_eq!(outputs(TOPIC_USER_STATE), 1.0);
        assert_eq!(outputs(TOPIC_LICENSE_STATE), 1.0);
        assert_eq!(outputs(TOPIC_DLQ), 1.0);
        let tombstones = |topic| {
            value(
                &registry,
                "seatwatch_transform_tombstones_total",
                &[("topic", topic)],
            )
        };
        assert_eq!(tombstones(TOPIC_USER_STATE), 1.0);
        assert_eq!(tombstones(TOPIC_LICENSE_STATE), 0.0);
    }

    #[test]
    fn names_follow_conventions_and_known_series_exist() {
        let registry = Registry::new();
        Metrics::new(&registry).unwrap();
        let families = registry.gather();
        for family in &families {
            let name = family.name();
            assert!(name.starts_with("seatwatch_transform_"), "{name}");
        }
        let dlq = families
            .iter()
            .find(|f| f.name() == "seatwatch_transform_dlq_total")
            .unwrap();
        assert_eq!(dlq.get_metric().len(), ErrorClass::ALL.len());
    }

    #[test]
    fn exposition_passes_promtool_when_it_is_installed() {
        use std::io::Write;
        use std::process::{Command, Stdio};

        let registry = Registry::new();
        let metrics = Metrics::new(&registry).unwrap();
        metrics.record_dlq(None, ErrorClass::InvalidJson);
        metrics.flush_seconds().observe(0.02);
        let mut text = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &registry.gather(),
            &mut text,
        )
        .unwrap();

        let Ok(mut promtool) = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        else {
            eprintln!("promtool is not installed; exposition not linted");
            return;
        };
        promtool.stdin.take().unwrap().write_all(&text).unwrap();
        let checked = promtool.wait_with_output().unwrap();
        let findings = String::from_utf8_lossy(&checked.stdout).into_owned()
            + &String::from_utf8_lossy(&checked.stderr);
        assert!(
            checked.status.success() && findings.trim().is_empty(),
            "{findings}"
        );
    }

    #[test]
    fn registering_twice_on_one_registry_fails() {
        let registry = Registry::new();
        Metrics::new(&registry).unwrap();
        assert!(Metrics::new(&registry).is_err());
    }
}
