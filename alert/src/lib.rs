//! seatwatch's alert service: seat state in, rule evaluation, alert lifecycle, and
//! notification sinks.
//!
//! Two halves share the process and talk only through Kafka:
//!
//! - the evaluator reads `seats.license-state`, `seats.user-state`,
//!   `salesforce.sync-status` and the alert history in `seats.alerts`, evaluates the
//!   [`rules`] every few seconds and writes FIRING and RESOLVED transitions to
//!   `seats.alerts`, keyed by fingerprint and partitioned by org;
//! - the [`notify`] half reads `seats.alerts` in its own consumer group and hands each
//!   transition to every sink (log, [`webhook`], a caller's channel), committing only what
//!   every sink took.
//!
//! Alert state lives in Kafka, so a restart neither forgets a firing alert nor sends one
//! twice. [`run`] is the deployed service; [`run_with`] lets a host bring its own metrics
//! registry, health and sink. Recommendations are not part of this version.

mod alertmanager;
pub mod config;
pub mod controls;
mod error;
mod evaluator;
mod group;
mod metrics;
pub mod notify;
pub mod recommend;
pub mod report;
pub mod rule_config;
pub mod rules;
mod service;
pub mod state;
pub mod webhook;

/// The schema registry double of the `schemas` crate's tests, for the evaluator's.
#[cfg(test)]
#[path = "../../schemas/tests/support/mod.rs"]
mod registry_double;

pub use alertmanager::AlertmanagerSink;
pub use config::{AlertArgs, AlertConfig, AlertmanagerConfig, PriceTable, WebhookConfig};
pub use controls::Controls;
pub use error::AlertError;
pub use notify::{dedup_key, ChannelSink, LogSink, Sink, SinkError};
pub use rule_config::{
    ExhaustedRule, ExpiringRule, ForecastRule, IdleSeatsRule, RuleOverride, RulesConfig,
    StaleSyncRule, UtilizationRule,
};
pub use service::{run, run_with, RunOptions};
pub use webhook::WebhookSink;
