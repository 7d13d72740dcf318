//! The Alertmanager sink: pushes alerts to Alertmanager's v2 API (`POST /api/v2/alerts`).
//!
//! Alertmanager identifies an alert by its label set, so only stable labels go there
//! (`alertname`, `org_id`, `pool`, `severity` and the rule's own, never a measurement);
//! the summary, value, threshold and seatwatch's fingerprint travel as annotations.
//!
//! Alertmanager resolves an alert that stops arriving, the way it expects Prometheus to
//! keep sending: each firing alert carries `endsAt` four re-send intervals ahead, and
//! the evaluator re-sends every firing alert once per interval ([`AlertmanagerSink::
//! refresh`]). A resolved alert carries its real `endsAt`. Transitions come through the
//! notifier like for every sink, so one that happened during an outage arrives after it.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use futures::future::BoxFuture;
use reqwest::header::CONTENT_TYPE;
use reqwest::{StatusCode, Url};
use seatwatch_schemas::{Alert, AlertStatus};
use serde::Serialize;
use std::collections::BTreeMap;

use crate::config::AlertmanagerConfig;
use crate::controls::now_ms;
use crate::notify::{Sink, SinkError};
use crate::AlertError;

/// How many re-send intervals ahead a firing alert's `endsAt` lies: Alertmanager keeps
/// it firing through three missed re-sends.
const ENDS_AT_INTERVALS: u32 = 4;

/// A [`Sink`] that posts to Alertmanager.
pub struct AlertmanagerSink {
    client: reqwest::Client,
    url: Url,
    host: String,
    resend: Duration,
}

/// One alert as Alertmanager's `postableAlert`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PostableAlert {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    starts_at: String,
    ends_at: String,
}

impl AlertmanagerSink {
    pub fn new(config: &AlertmanagerConfig) -> Result<Self, AlertError> {
        let base = Url::parse(&config.url)
            .map_err(|_| AlertError::config("alertmanager.url", "is not a valid URL"))?;
        let url = base
            .join("api/v2/alerts")
            .map_err(|_| AlertError::config("alertmanager.url", "is not a base URL"))?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| AlertError::HttpClient(error.without_url().to_string()))?;
        Ok(Self {
            client,
            host: base.host_str().unwrap_or("<no host>").to_owned(),
            url,
            resend: Duration::from_secs(config.resend_interval_secs),
        })
    }

    /// How often the evaluator should call [`Self::refresh`].
    pub fn resend_interval(&self) -> Duration {
        self.resend
    }

    /// Re-sends every firing alert in one request, so Alertmanager keeps them firing.
    pub async fn refresh(&self, firing: &[Alert]) -> Result<(), SinkError> {
        if firing.is_empty() {
            return Ok(());
        }
        self.post(firing).await
    }

    async fn post(&self, alerts: &[Alert]) -> Result<(), SinkError> {
        let now = now_ms();
        let body: Vec<PostableAlert> = alerts
            .iter()
            .map(|alert| postable(alert, now, self.resend))
            .collect();
        let response = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .json(&body)
            .send()
            .await
            .map_err(|error| {
                SinkError::Unavailable(format!("{}: {}", self.host, error.without_url()))
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // Alertmanager answers 400 with the reason for an alert it will never take.
        let reason = response.text().await.unwrap_or_default();
        let reason = reason.chars().take(300).collect::<String>();
        if status == StatusCode::BAD_REQUEST {
            Err(SinkError::Refused(format!(
                "{} answered {status}: {reason}",
                self.host
            )))
        } else {
            Err(SinkError::Unavailable(format!(
                "{} answered {status}",
                self.host
            )))
        }
    }
}

impl Sink for AlertmanagerSink {
    fn name(&self) -> &'static str {
        "alertmanager"
    }

    fn deliver<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move { self.post(std::slice::from_ref(alert)).await })
    }
}

/// `alert` as Alertmanager wants it at `now_ms`.
fn postable(alert: &Alert, now_ms: i64, resend: Duration) -> PostableAlert {
    let ahead = i64::try_from((resend * ENDS_AT_INTERVALS).as_millis()).unwrap_or(i64::MAX);
    let ends_at = match alert.status {
        AlertStatus::Resolved => alert.ends_at.unwrap_or(now_ms),
        AlertStatus::Firing => now_ms.saturating_add(ahead),
    };
    let annotations = BTreeMap::from([
        ("summary".to_owned(), alert.summary.clone()),
        ("value".to_owned(), alert.value.to_string()),
        ("threshold".to_owned(), alert.threshold.to_string()),
        ("fingerprint".to_owned(), alert.fingerprint.clone()),
    ]);
    PostableAlert {
        labels: alert.labels.clone(),
        annotations,
        starts_at: rfc3339(alert.starts_at),
        ends_at: rfc3339(ends_at),
    }
}

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::tests::sample_alert;

    #[test]
    fn firing_alerts_end_four_intervals_ahead_and_resolved_ones_when_they_ended() {
        let mut alert = sample_alert();
        let now = alert.starts_at + 5_000;
        let body = postable(&alert, now, Duration::from_secs(60));
        assert_eq!(body.starts_at, "2025-06-15T15:06:40.000Z");
        assert_eq!(body.ends_at, rfc3339(now + 240_000));
        assert_eq!(body.labels, alert.labels);
        assert_eq!(body.annotations["fingerprint"], alert.fingerprint);
        assert_eq!(body.annotations["summary"], alert.summary);

        alert.status = AlertStatus::Resolved;
        alert.ends_at = Some(alert.starts_at + 90_000);
        let body = postable(&alert, now + 999_000, Duration::from_secs(60));
        assert_eq!(body.ends_at, "2025-06-15T15:08:10.000Z");
    }
}
