//! The Kafka client context of the alert service's two consumer groups.
//!
//! It routes librdkafka's logs into `tracing` like [`ServiceContext`], and takes over the
//! eager (range) rebalance so that the service can see assignments: it counts them, so the
//! evaluator knows when to rebuild its state, and for the evaluator it starts every
//! assigned partition at its beginning, whatever offsets the group may hold.
//!
//! Rebalance callbacks run inside the consumer's `recv`, on the task that consumes, so a
//! change is always visible before the first message of the new assignment.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use seatwatch_common::kafka::ServiceContext;

/// Where a group starts reading an assigned partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StartAt {
    /// The partition's first offset, always: the topics are the state.
    Beginning,
    /// The group's committed offset, or the earliest when none.
    Committed,
}

/// A consumer context that logs like [`ServiceContext`] and tracks the assignment.
pub(crate) struct GroupContext {
    logs: ServiceContext,
    role: &'static str,
    start_at: StartAt,
    assigned: AtomicBool,
    generation: AtomicU64,
    on_assign: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl GroupContext {
    pub fn new(role: &'static str, start_at: StartAt) -> Self {
        Self {
            logs: ServiceContext { service: "alert" },
            role,
            start_at,
            assigned: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            on_assign: None,
        }
    }

    /// Calls `hook` after every assignment, e.g. to report readiness.
    pub fn on_assign(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_assign = Some(Arc::new(hook));
        self
    }

    /// Whether the consumer holds an assignment (possibly empty) from the group.
    pub fn is_assigned(&self) -> bool {
        self.assigned.load(Ordering::Acquire)
    }

    /// Grows by one at every assignment and revocation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn assign(&self, consumer: &BaseConsumer<Self>, partitions: &mut TopicPartitionList) {
        if self.start_at == StartAt::Beginning {
            if let Err(error) = partitions.set_all_offsets(Offset::Beginning) {
                tracing::error!(role = self.role, %error, "cannot start partitions at 0");
            }
        }
        if let Err(error) = consumer.assign(partitions) {
            tracing::error!(role = self.role, %error, "applying the assignment failed");
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.assigned.store(true, Ordering::Release);
        tracing::info!(
            role = self.role,
            partitions = partitions.count(),
            "partitions assigned"
        );
        if let Some(hook) = &self.on_assign {
            hook();
        }
    }

    fn revoke(&self, consumer: &BaseConsumer<Self>, partitions: &TopicPartitionList) {
        self.assigned.store(false, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Err(error) = consumer.unassign() {
            tracing::error!(role = self.role, %error, "revoking the assignment failed");
        }
        tracing::info!(
            role = self.role,
            partitions = partitions.count(),
            "partitions revoked"
        );
    }
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.logs.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.logs.error(error, reason);
    }
}

impl ConsumerContext for GroupContext {
    // The group uses the eager range assignor (set in the consumer config), so an
    // assignment replaces the whole previous one and a revocation drops it all.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.assign(consumer, partitions)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.revoke(consumer, partitions)
            }
            other => {
                tracing::warn!(role = self.role, error = ?other, "rebalance error");
                self.revoke(consumer, partitions);
            }
        }
    }
}
