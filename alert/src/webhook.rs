//! The webhook sink: POSTs each alert transition as JSON to one URL.
//!
//! The body is the [`Alert`] record's fields plus `dedup_key`. With a signing key
//! configured, `X-Seatwatch-Signature: sha256=<hex>` carries the HMAC-SHA256 of the exact
//! body bytes, so the receiver can check origin and integrity. Any 2xx accepts; a 4xx
//! other than 408 and 429 means the receiver refuses this alert and retrying cannot
//! help; everything else (5xx, timeouts, connection errors, redirects) is retried by the
//! notifier. Redirects are not followed, so a signed body never goes to another host.
//!
//! Webhook URLs often carry a token, so only the URL's host ever appears in logs and
//! errors. Retry-After on 429 is not honoured yet; the notifier's backoff applies.

use std::time::Duration;

use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use reqwest::header::CONTENT_TYPE;
use reqwest::{StatusCode, Url};
use seatwatch_common::secret::{ExposeSecret, SecretString};
use seatwatch_schemas::Alert;
use serde::Serialize;
use sha2::Sha256;

use crate::config::WebhookConfig;
use crate::notify::{dedup_key, Sink, SinkError};
use crate::AlertError;

/// The header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "X-Seatwatch-Signature";

/// A [`Sink`] that POSTs to a webhook.
pub struct WebhookSink {
    client: reqwest::Client,
    url: Url,
    host: String,
    key: Option<SecretString>,
}

/// The JSON body: the alert's fields, flattened, and the key to deduplicate on.
#[derive(Serialize)]
struct Payload<'a> {
    #[serde(flatten)]
    alert: &'a Alert,
    dedup_key: String,
}

impl WebhookSink {
    /// Builds the sink, reading the signing key now so that a missing one fails at start.
    pub fn new(config: &WebhookConfig) -> Result<Self, AlertError> {
        let url = Url::parse(&config.url)
            .map_err(|_| AlertError::config("webhook.url", "is not a valid URL"))?;
        let key = config
            .secret
            .as_ref()
            .map(|secret| secret.resolve())
            .transpose()?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| AlertError::HttpClient(describe(error)))?;
        Ok(Self {
            client,
            host: config.host(),
            url,
            key,
        })
    }

    async fn post(&self, alert: &Alert) -> Result<(), SinkError> {
        let payload = Payload {
            alert,
            dedup_key: dedup_key(alert),
        };
        let body = serde_json::to_vec(&payload)
            .map_err(|error| SinkError::Refused(format!("cannot encode the alert: {error}")))?;

        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json");
        if let Some(key) = &self.key {
            let signature = signature(key.expose_secret().as_bytes(), &body);
            request = request.header(SIGNATURE_HEADER, signature);
        }

        let response = request.body(body).send().await.map_err(|error| {
            SinkError::Unavailable(format!("{}: {}", self.host, describe(error)))
        })?;
        verdict(response.status(), &self.host)
    }
}

impl Sink for WebhookSink {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn deliver<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.post(alert))
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What a response status means for the alert.
fn verdict(status: StatusCode, host: &str) -> Result<(), SinkError> {
    let retryable_client_error =
        status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS;
    if status.is_success() {
        Ok(())
    } else if status.is_client_error() && !retryable_client_error {
        Err(SinkError::Refused(format!("{host} answered {status}")))
    } else {
        Err(SinkError::Unavailable(format!("{host} answered {status}")))
    }
}

/// A reqwest error and its causes, without the URL.
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::HeaderMap;
    use axum::routing::post;
    use axum::Router;
    use prometheus::Registry;
    use seatwatch_common::{SecretRef, Shutdown};
    use tokio::net::TcpListener;

    use super::*;
    use crate::metrics::{Metrics, DELIVERED, REFUSED};
    use crate::notify::tests::sample_alert;
    use crate::notify::{deliver_with_retry, RetryPolicy};

    const KEY: &str = "shared-webhook-key";

    /// A receiver that answers with `statuses` in turn (the last one repeating) and keeps
    /// every request.
    #[derive(Clone)]
    struct Receiver {
        statuses: Arc<Vec<u16>>,
        requests: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    }

    async fn receive(
        State(receiver): State<Receiver>,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        let mut requests = receiver.requests.lock().unwrap();
        let index = requests.len().min(receiver.statuses.len() - 1);
        requests.push((headers, body));
        StatusCode::from_u16(receiver.statuses[index]).unwrap()
    }

    async fn start_receiver(statuses: &[u16]) -> (String, Receiver) {
        let receiver = Receiver {
            statuses: Arc::new(statuses.to_vec()),
            requests: Arc::default(),
        };
        let app = Router::new()
            .route("/hooks/T0K3N", post(receive))
            .with_state(receiver.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/hooks/T0K3N"), receiver)
    }

    fn sink(url: &str, key_file: Option<&tempfile::NamedTempFile>) -> WebhookSink {
        WebhookSink::new(&WebhookConfig {
            url: url.into(),
            secret: key_file.map(|file| SecretRef::File(file.path().into())),
            timeout_secs: 5,
        })
        .unwrap()
    }

    fn key_file() -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "{KEY}").unwrap();
        file
    }

    fn fast_retries() -> RetryPolicy {
        RetryPolicy {
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        }
    }

    #[tokio::test]
    async fn retries_server_errors_then_delivers_once_with_a_valid_signature() {
        let (url, receiver) = start_receiver(&[500, 500, 200]).await;
        let key = key_file();
        let sink = sink(&url, Some(&key));
        let metrics = Metrics::register(&Registry::new()).unwrap();
        let alert = sample_alert();

        let done =
            deliver_with_retry(&sink, &alert, &fast_retries(), &metrics, &Shutdown::new()).await;
        assert!(done);

        let requests = receiver.requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 3, "two failures, then exactly one success");
        assert_eq!(metrics.retries.with_label_values(&["webhook"]).get(), 2);
        let delivered = metrics
            .notifications
            .with_label_values(&["webhook", DELIVERED]);
        assert_eq!(delivered.get(), 1);

        let (headers, body) = &requests[2];
        let expected = signature(KEY.as_bytes(), body);
        let sent = headers[SIGNATURE_HEADER].to_str().unwrap();
        assert_eq!(sent, expected);
        // Verify as a receiver would, with the shared key and a constant-time compare.
        let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
        mac.update(body);
        let digest = hex::decode(sent.strip_prefix("sha256=").unwrap()).unwrap();
        mac.verify_slice(&digest).unwrap();

        let json: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(json["fingerprint"], alert.fingerprint);
        assert_eq!(json["status"], "FIRING");
        assert_eq!(json["pool"], "Salesforce");
        assert_eq!(json["dedup_key"], dedup_key(&alert));
        assert_eq!(headers[CONTENT_TYPE], "application/json");
    }

    #[tokio::test]
    async fn a_client_error_is_refused_without_retry() {
        let (url, receiver) = start_receiver(&[400]).await;
        let sink = sink(&url, None);
        let metrics = Metrics::register(&Registry::new()).unwrap();

        let done = deliver_with_retry(
            &sink,
            &sample_alert(),
            &fast_retries(),
            &metrics,
            &Shutdown::new(),
        )
        .await;
        assert!(done);
        let requests = receiver.requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 1);
        assert!(requests[0].0.get(SIGNATURE_HEADER).is_none());
        let refused = metrics
            .notifications
            .with_label_values(&["webhook", REFUSED]);
        assert_eq!(refused.get(), 1);
        assert_eq!(metrics.retries.with_label_values(&["webhook"]).get(), 0);
    }

    #[test]
    fn status_classes() {
        let verdict = |code: u16| verdict(StatusCode::from_u16(code).unwrap(), "h");
        assert!(verdict(200).is_ok());
        assert!(verdict(204).is_ok());
        for refused in [400, 401, 404, 410, 422] {
            assert!(
                matches!(verdict(refused), Err(SinkError::Refused(_))),
                "{refused}"
            );
        }
        for retried in [301, 408, 429, 500, 502, 503] {
            assert!(
                matches!(verdict(retried), Err(SinkError::Unavailable(_))),
                "{retried}"
            );
        }
    }

    #[tokio::test]
    async fn connection_errors_name_the_host_but_not_the_path() {
        // A port that was just free: nothing listens there.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let sink = sink(&format!("http://{addr}/hooks/T0K3N"), None);
        let err = sink.deliver(&sample_alert()).await.unwrap_err();
        let SinkError::Unavailable(reason) = err else {
            panic!("expected a retryable error, got {err}");
        };
        assert!(reason.contains("127.0.0.1"), "{reason}");
        assert!(!reason.contains("T0K3N"), "{reason}");
    }

    #[test]
    fn a_missing_signing_key_fails_at_construction() {
        let err = WebhookSink::new(&WebhookConfig {
            url: "http://127.0.0.1:9/x".into(),
            secret: Some(SecretRef::Env("ALERT_TEST_SURELY_UNSET_KEY".into())),
            timeout_secs: 1,
        })
        .err()
        .unwrap();
        assert!(
            err.to_string().contains("ALERT_TEST_SURELY_UNSET_KEY"),
            "{err}"
        );
    }
}
