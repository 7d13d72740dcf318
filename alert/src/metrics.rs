//! The alert service's Prometheus metrics.
//!
//! Labels come from fixed vocabularies only: rule names ([`crate::rules::RULES`], anything
//! else is `other`), alert status, sink names and delivery outcomes. Orgs, pools and users
//! never become labels; they are in the alerts themselves.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use seatwatch_schemas::AlertStatus;

use crate::rules::RULES;

/// Delivery outcomes: the sink took the alert, or refused it for good.
pub(crate) const DELIVERED: &str = "delivered";
pub(crate) const REFUSED: &str = "refused";

/// Handles to every metric, cheap to clone.
#[derive(Clone)]
pub(crate) struct Metrics {
    /// `seatwatch_alert_transitions_total{rule,status}`: transitions acknowledged by the
    /// broker.
    pub transitions: IntCounterVec,
    /// `seatwatch_alert_firing{rule}`: alerts currently firing on this instance's orgs.
    pub firing: IntGaugeVec,
    /// `seatwatch_alert_notifications_total{sink,outcome}`.
    pub notifications: IntCounterVec,
    /// `seatwatch_alert_notification_retries_total{sink}`: failed attempts to retry.
    pub retries: IntCounterVec,
    /// `seatwatch_alert_evaluations_total`: rule evaluations run.
    pub evaluations: IntCounter,
    /// `seatwatch_alert_invalid_records_total`: input records skipped as undecodable.
    pub invalid_records: IntCounter,
    /// `seatwatch_alert_publish_failures_total`: transitions the broker did not take;
    /// the next evaluation sends them again.
    pub publish_failures: IntCounter,
    /// `seatwatch_alert_caught_up`: 1 once the evaluator has read all its partitions.
    pub caught_up: IntGauge,
}

impl Metrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self {
            transitions: IntCounterVec::new(
                Opts::new(
                    "seatwatch_alert_transitions_total",
                    "Alert transitions written to the alerts topic.",
                ),
                &["rule", "status"],
            )?,
            firing: IntGaugeVec::new(
                Opts::new("seatwatch_alert_firing", "Alerts currently firing."),
                &["rule"],
            )?,
            notifications: IntCounterVec::new(
                Opts::new(
                    "seatwatch_alert_notifications_total",
                    "Alert transitions handed to a sink, by outcome.",
                ),
                &["sink", "outcome"],
            )?,
            retries: IntCounterVec::new(
                Opts::new(
                    "seatwatch_alert_notification_retries_total",
                    "Failed sink deliveries that were retried.",
                ),
                &["sink"],
            )?,
            evaluations: IntCounter::new(
                "seatwatch_alert_evaluations_total",
                "Rule evaluations run.",
            )?,
            invalid_records: IntCounter::new(
                "seatwatch_alert_invalid_records_total",
                "Records skipped because they could not be decoded.",
            )?,
            publish_failures: IntCounter::new(
                "seatwatch_alert_publish_failures_total",
                "Alert transitions the broker did not acknowledge.",
            )?,
            caught_up: IntGauge::new(
                "seatwatch_alert_caught_up",
                "1 when the evaluator has read all its input up to the end.",
            )?,
        };
        registry.register(Box::new(metrics.transitions.clone()))?;
        registry.register(Box::new(metrics.firing.clone()))?;
        registry.register(Box::new(metrics.notifications.clone()))?;
        registry.register(Box::new(metrics.retries.clone()))?;
        registry.register(Box::new(metrics.evaluations.clone()))?;
        registry.register(Box::new(metrics.invalid_records.clone()))?;
        registry.register(Box::new(metrics.publish_failures.clone()))?;
        registry.register(Box::new(metrics.caught_up.clone()))?;
        metrics.touch_rule_series();
        Ok(metrics)
    }

    /// Creates each rule's series at zero, so dashboards see them before the first alert.
    fn touch_rule_series(&self) {
        for rule in RULES {
            self.firing.with_label_values(&[rule]).set(0);
            for status in [AlertStatus::Firing, AlertStatus::Resolved] {
                self.transitions.with_label_values(&[rule, status.as_str()]);
            }
        }
    }

    /// Counts one transition the broker acknowledged.
    pub fn transition(&self, rule: &str, status: AlertStatus) {
        self.transitions
            .with_label_values(&[rule_label(rule), status.as_str()])
            .inc();
    }
}

/// The label value for a rule name: known rules as themselves, anything else `other`
/// (a newer version's rule replayed from the topic, or a corrupt record).
pub(crate) fn rule_label(rule: &str) -> &'static str {
    RULES
        .iter()
        .find(|known| **known == rule)
        .copied()
        .unwrap_or("other")
}
