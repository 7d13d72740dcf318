//! The alert service's Prometheus metrics.
//!
//! The service's own metrics take labels from fixed vocabularies only: rule names
//! ([`crate::rules::RULES`], anything else is `other`), alert status, sink names and
//! delivery outcomes. The seat metrics ([`SeatMetrics`]) are what the dashboards show, per
//! org and licence pool: a deployment watches a handful of orgs with tens of pools each,
//! so those labels stay bounded. Users never become labels.

use std::collections::BTreeMap;

use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use seatwatch_schemas::{AlertStatus, Recommendation};

use crate::config::PriceTable;
use crate::rules::{Evaluation, IDLE_SEATS, RULES};
use crate::state::SeatState;

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
    /// Seats per org and pool, refreshed on every evaluation.
    pub seats: SeatMetrics,
    /// Recommendations in the topic and their savings.
    pub recommendations: RecommendationMetrics,
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
            seats: SeatMetrics::register(registry)?,
            recommendations: RecommendationMetrics::register(registry)?,
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

    /// Creates a sink's series at zero, so dashboards see them before the first failure.
    pub fn touch_sink(&self, sink: &str) {
        self.retries.with_label_values(&[sink]);
        for outcome in [DELIVERED, REFUSED] {
            self.notifications.with_label_values(&[sink, outcome]);
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

/// `seatwatch_seats_*`: the seat state of the orgs this instance evaluates.
#[derive(Clone)]
pub(crate) struct SeatMetrics {
    total: GaugeVec,
    used: GaugeVec,
    available: GaugeVec,
    utilization: GaugeVec,
    expires: GaugeVec,
    idle: GaugeVec,
    data_age: GaugeVec,
}

const POOL_LABELS: [&str; 3] = ["org_id", "kind", "pool"];

fn gauge_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<GaugeVec, prometheus::Error> {
    let gauge = GaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(gauge.clone()))?;
    Ok(gauge)
}

impl SeatMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            total: gauge_vec(registry, "seatwatch_seats_purchased", "Seats the org pays for in a licence pool (sized pools only).", &POOL_LABELS)?,
            used: gauge_vec(registry, "seatwatch_seats_used", "Seats assigned in a licence pool.", &POOL_LABELS)?,
            available: gauge_vec(registry, "seatwatch_seats_available", "Seats left to assign in a licence pool.", &POOL_LABELS)?,
            utilization: gauge_vec(registry, "seatwatch_seats_utilization_ratio", "Used seats over total seats, 0 to 1 (above 1 when over-assigned).", &POOL_LABELS)?,
            expires: gauge_vec(registry, "seatwatch_license_expiry_timestamp_seconds", "When a permission-set or package licence expires.", &POOL_LABELS)?,
            idle: gauge_vec(registry, "seatwatch_seats_idle", "Active users of a user licence with no login within the rule's idle days.", &["org_id", "pool"])?,
            data_age: gauge_vec(registry, "seatwatch_seats_data_age_seconds", "Time since the org's newest licence record was read from Salesforce: the pipeline's end-to-end lag.", &["org_id"])?,
        })
    }

    /// Replaces every series with the current state, so pools and orgs that disappear
    /// stop being reported.
    pub fn update(&self, state: &SeatState, evaluation: &Evaluation, now_ms: i64) {
        for gauge in [
            &self.total,
            &self.used,
            &self.available,
            &self.utilization,
            &self.expires,
            &self.idle,
            &self.data_age,
        ] {
            gauge.reset();
        }
        for (org_id, org) in state.orgs() {
            let mut newest = None;
            for license in org.licenses.values() {
                let labels = [org_id, license.kind.key_segment(), license.name.as_str()];
                self.used
                    .with_label_values(&labels)
                    .set(license.used as f64);
                if let Some(total) = license.total {
                    self.total.with_label_values(&labels).set(total as f64);
                    self.available
                        .with_label_values(&labels)
                        .set((total - license.used) as f64);
                }
                if let Some(utilization) = license.utilization {
                    self.utilization.with_label_values(&labels).set(utilization);
                }
                if let Some(expires_at) = license.expires_at {
                    self.expires
                        .with_label_values(&labels)
                        .set(expires_at as f64 / 1000.0);
                }
                newest = newest.max(Some(license.observed_at));
            }
            if let Some(newest) = newest {
                let age = (now_ms - newest).max(0) as f64 / 1000.0;
                self.data_age.with_label_values(&[org_id]).set(age);
            }
        }
        for condition in evaluation
            .conditions
            .iter()
            .filter(|c| c.rule == IDLE_SEATS)
        {
            self.idle
                .with_label_values(&[condition.org_id.as_str(), condition.pool.as_str()])
                .set(condition.value);
        }
    }
}

/// `seatwatch_recommendations` and `seatwatch_reclaimable_monthly_saving`.
#[derive(Clone)]
pub(crate) struct RecommendationMetrics {
    count: GaugeVec,
    saving: GaugeVec,
}

impl RecommendationMetrics {
    fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            count: gauge_vec(
                registry,
                "seatwatch_recommendations",
                "Reclaim recommendations in the recommendations topic.",
                &["org_id", "pool"],
            )?,
            saving: gauge_vec(
                registry,
                "seatwatch_reclaimable_monthly_saving",
                "Estimated monthly saving of the recommendations, in the configured currency.",
                &["org_id", "pool", "currency"],
            )?,
        })
    }

    pub fn update(&self, recommendations: &BTreeMap<String, Recommendation>, prices: &PriceTable) {
        self.count.reset();
        self.saving.reset();
        for rec in recommendations.values() {
            let pool = [rec.org_id.as_str(), rec.license_name.as_str()];
            self.count.with_label_values(&pool).inc();
            let saving = rec.estimated_monthly_saving.unwrap_or(0.0);
            self.saving
                .with_label_values(&[pool[0], pool[1], prices.currency.as_str()])
                .add(saving);
        }
    }
}
