//! transform: raw Salesforce events in, seat state and dead letters out.
//!
//! transform reads the JSON envelopes ingest writes to `salesforce.usage.raw`, validates and
//! normalises each Salesforce record, and publishes Avro seat state: one value per licence
//! pool on `seats.license-state` and one per user on `seats.user-state`, with tombstones
//! for what a full snapshot no longer contains. What cannot be processed goes, untouched
//! and with its reason, to `salesforce.usage.dlq`.
//!
//! - [`processor`]: the state machine holding every rule, synchronous and free of I/O.
//! - [`partitions`]: one processor per raw partition, run side by side.
//! - [`normalize`] and [`validate`]: record-level mapping and error explanations.
//! - [`pipeline`]: the Kafka loop around it: delivery, offsets, rebalances, shutdown;
//!   [`batch`] packs a lane's outputs for the thread that produces them.
//! - [`metrics`], [`dlq`], [`config`]: metrics, the dead-letter vocabulary, configuration.
//!
//! Ingest owns fetching from Salesforce; alert owns what the seat state means.

pub mod batch;
pub mod config;
pub mod dlq;
pub mod metrics;
pub mod normalize;
pub mod partitions;
pub mod pipeline;
pub mod processor;
pub mod validate;

pub use config::{Delivery, TransformArgs, TransformConfig};
pub use metrics::Metrics;
pub use partitions::PartitionProcessors;
pub use pipeline::{run, run_with, TransformError};
pub use processor::{Input, Output, Processor, StateEncoder, Target};
