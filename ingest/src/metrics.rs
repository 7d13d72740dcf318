//! ingest's Prometheus metrics. The `org` label is the configured org name, so its values
//! are bounded by the config.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Every metric ingest exports.
#[derive(Clone)]
pub struct IngestMetrics {
    pub syncs: IntCounterVec,
    pub records: IntCounterVec,
    pub api_calls: IntCounterVec,
    pub retries: IntCounterVec,
    pub logins: IntCounterVec,
    pub api_used: IntGaugeVec,
    pub api_limit: IntGaugeVec,
    pub last_success: IntGaugeVec,
    pub sync_duration: HistogramVec,
}

impl IngestMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["org"])?;
            registry.register(Box::new(g.clone()))?;
            Ok::<_, prometheus::Error>(g)
        };
        let sync_duration = HistogramVec::new(
            HistogramOpts::new(
                "seatwatch_ingest_sync_duration_seconds",
                "Wall time of one sync of one org, from sign-in to the last acknowledgement.",
            )
            .buckets(vec![0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0, 600.0]),
            &["org"],
        )?;
        registry.register(Box::new(sync_duration.clone()))?;

        Ok(Self {
            syncs: counter(
                "seatwatch_ingest_syncs_total",
                "Syncs finished, by outcome (success, failed, auth_failed, paused_for_quota).",
                &["org", "outcome"],
            )?,
            records: counter(
                "seatwatch_ingest_records_total",
                "Salesforce records emitted to the raw topic and acknowledged, by object.",
                &["org", "object"],
            )?,
            api_calls: counter(
                "seatwatch_ingest_api_calls_total",
                "Salesforce data API calls made (sign-ins excluded).",
                &["org"],
            )?,
            retries: counter(
                "seatwatch_ingest_retries_total",
                "Salesforce calls retried after a transient failure.",
                &["org"],
            )?,
            logins: counter(
                "seatwatch_ingest_logins_total",
                "Sign-ins to Salesforce (Salesforce allows 3,600 per user per hour).",
                &["org"],
            )?,
            api_used: gauge(
                "seatwatch_ingest_api_usage_requests",
                "The org's API requests used in the rolling 24 hours (Sforce-Limit-Info).",
            )?,
            api_limit: gauge(
                "seatwatch_ingest_api_limit_requests",
                "The org's API request allowance for 24 hours (Sforce-Limit-Info).",
            )?,
            last_success: gauge(
                "seatwatch_ingest_last_success_timestamp_seconds",
                "Unix time of the end of the org's latest successful sync.",
            )?,
            sync_duration,
        })
    }
}
