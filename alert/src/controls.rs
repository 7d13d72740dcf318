//! Acknowledgements and silences, and the small HTTP API that lists alerts and sets both.
//!
//! - `GET /api/v1/alerts`: the alerts this instance evaluates, firing first, each with
//!   whether it is acknowledged or silenced.
//! - `POST /api/v1/alerts/{fingerprint}/ack` (optional JSON `{"by": "...", "comment":
//!   "..."}`): a firing alert stops repeating until it resolves; a later firing of the
//!   same fingerprint is a new alert and repeats again.
//! - `GET /api/v1/silences`, `POST /api/v1/silences` with `{"matchers": {"label":
//!   "glob"}, "duration_secs": N, "comment": "..."}` (or `"ends_at"` in epoch ms), and
//!   `DELETE /api/v1/silences/{id}`: while a silence matches an alert's labels, the alert
//!   goes to no sink but the log and does not repeat. Its transitions are still written
//!   to `seats.alerts`.
//!
//! With `api_token` configured, the requests that change something (POST, DELETE) need
//! `Authorization: Bearer <token>`; listing stays open like `/metrics`.
//!
//! Known shortcut: acknowledgements and silences live in the memory of the instance that
//! received them. With one alert replica, the deployed default, they last until it
//! restarts; with several, send the request to the replica that owns the org (each
//! instance lists only its orgs' alerts).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use seatwatch_common::secret::{ExposeSecret, SecretString};
use seatwatch_schemas::{Alert, AlertStatus};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wildmatch::WildMatch;

/// Longest silence accepted: a silence nobody remembers is worse than noise.
const MAX_SILENCE_MS: i64 = 90 * 24 * 3600 * 1000;

/// One acknowledgement of one firing of an alert.
#[derive(Clone, Debug, Serialize)]
pub struct Ack {
    pub fingerprint: String,
    /// The `starts_at` of the firing it acknowledges.
    pub starts_at: i64,
    pub by: String,
    pub comment: String,
    pub at: i64,
}

/// Label matchers (globs) and an end.
#[derive(Clone, Debug, Serialize)]
pub struct Silence {
    pub id: String,
    pub matchers: BTreeMap<String, String>,
    pub ends_at: i64,
    pub by: String,
    pub comment: String,
    pub created_at: i64,
}

impl Silence {
    fn matches(&self, alert: &Alert) -> bool {
        self.matchers.iter().all(|(label, pattern)| {
            alert
                .labels
                .get(label)
                .is_some_and(|value| WildMatch::new(pattern).matches(value))
        })
    }
}

/// The acknowledgements, silences and the latest alerts, shared by the evaluator, the
/// notifier and the API.
#[derive(Debug, Default)]
pub struct Controls {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    acks: BTreeMap<String, Ack>,
    silences: BTreeMap<String, Silence>,
    alerts: BTreeMap<String, Alert>,
}

impl Controls {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Replaces the listed alerts with the evaluator's latest view, and forgets the
    /// acknowledgements of firings that ended.
    pub fn update_alerts<'a>(&self, alerts: impl Iterator<Item = &'a Alert>) {
        let mut inner = self.lock();
        inner.alerts = alerts
            .map(|alert| (alert.fingerprint.clone(), alert.clone()))
            .collect();
        let Inner { acks, alerts, .. } = &mut *inner;
        acks.retain(|fingerprint, ack| {
            alerts.get(fingerprint).is_some_and(|alert| {
                alert.status == AlertStatus::Firing && alert.starts_at == ack.starts_at
            })
        });
    }

    /// Whether this firing of `alert` was acknowledged.
    pub fn is_acked(&self, alert: &Alert) -> bool {
        self.lock()
            .acks
            .get(&alert.fingerprint)
            .is_some_and(|ack| ack.starts_at == alert.starts_at)
    }

    /// Whether an unexpired silence matches `alert`.
    pub fn is_silenced(&self, alert: &Alert, now_ms: i64) -> bool {
        self.lock()
            .silences
            .values()
            .any(|silence| silence.ends_at > now_ms && silence.matches(alert))
    }

    /// Acknowledged or silenced: the alert does not repeat.
    pub fn is_quiet(&self, alert: &Alert, now_ms: i64) -> bool {
        self.is_acked(alert) || self.is_silenced(alert, now_ms)
    }

    fn ack(&self, fingerprint: &str, by: String, comment: String) -> Result<Ack, ApiError> {
        let mut inner = self.lock();
        let alert = inner
            .alerts
            .get(fingerprint)
            .filter(|alert| alert.status == AlertStatus::Firing)
            .ok_or(ApiError::NotFound(
                "no firing alert has this fingerprint here",
            ))?;
        let ack = Ack {
            fingerprint: fingerprint.to_owned(),
            starts_at: alert.starts_at,
            by,
            comment,
            at: now_ms(),
        };
        inner.acks.insert(fingerprint.to_owned(), ack.clone());
        Ok(ack)
    }

    fn add_silence(&self, request: SilenceRequest) -> Result<Silence, ApiError> {
        let now = now_ms();
        if request.matchers.is_empty() {
            return Err(ApiError::BadRequest(
                "a silence needs at least one matcher, e.g. {\"alertname\": \"idle_seats\"}",
            ));
        }
        let ends_at = match (request.ends_at, request.duration_secs) {
            (Some(ends_at), None) => ends_at,
            (None, Some(secs)) => {
                now.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000))
            }
            _ => {
                return Err(ApiError::BadRequest(
                    "give exactly one of ends_at (epoch milliseconds) or duration_secs",
                ))
            }
        };
        if ends_at <= now || ends_at - now > MAX_SILENCE_MS {
            return Err(ApiError::BadRequest(
                "a silence must end in the future and within 90 days",
            ));
        }
        let silence = Silence {
            id: uuid::Uuid::now_v7().to_string(),
            matchers: request.matchers,
            ends_at,
            by: request.by.unwrap_or_default(),
            comment: request.comment.unwrap_or_default(),
            created_at: now,
        };
        let mut inner = self.lock();
        inner.silences.retain(|_, known| known.ends_at > now);
        inner.silences.insert(silence.id.clone(), silence.clone());
        Ok(silence)
    }

    fn remove_silence(&self, id: &str) -> Result<(), ApiError> {
        match self.lock().silences.remove(id) {
            Some(_) => Ok(()),
            None => Err(ApiError::NotFound("no silence has this id")),
        }
    }

    fn list(&self) -> Vec<ListedAlert> {
        let now = now_ms();
        let inner = self.lock();
        let mut listed: Vec<ListedAlert> = inner
            .alerts
            .values()
            .map(|alert| ListedAlert {
                acknowledged: inner
                    .acks
                    .get(&alert.fingerprint)
                    .is_some_and(|ack| ack.starts_at == alert.starts_at),
                silenced: inner
                    .silences
                    .values()
                    .any(|silence| silence.ends_at > now && silence.matches(alert)),
                alert: alert.clone(),
            })
            .collect();
        listed.sort_by_key(|listed| {
            (
                listed.alert.status != AlertStatus::Firing,
                listed.alert.starts_at,
            )
        });
        listed
    }

    fn silences(&self) -> Vec<Silence> {
        let now = now_ms();
        self.lock()
            .silences
            .values()
            .filter(|silence| silence.ends_at > now)
            .cloned()
            .collect()
    }
}

#[derive(Serialize)]
struct ListedAlert {
    #[serde(flatten)]
    alert: Alert,
    acknowledged: bool,
    silenced: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckRequest {
    by: Option<String>,
    comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceRequest {
    matchers: BTreeMap<String, String>,
    ends_at: Option<i64>,
    duration_secs: Option<u64>,
    by: Option<String>,
    comment: Option<String>,
}

/// A request the API cannot serve, answered as `{"error": "..."}`.
#[derive(Debug)]
enum ApiError {
    NotFound(&'static str),
    BadRequest(&'static str),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::NotFound(message) => (StatusCode::NOT_FOUND, message),
            ApiError::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}

/// The API's routes, to merge into the service's ops router. With `token`, requests that
/// change something must carry it as a bearer token.
pub fn router(controls: Arc<Controls>, token: Option<SecretString>) -> Router {
    let token = token.map(|token| Arc::new(digest(token.expose_secret().as_bytes())));
    Router::new()
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/alerts/{fingerprint}/ack", post(ack_alert))
        .route("/api/v1/silences", get(list_silences).post(add_silence))
        .route("/api/v1/silences/{id}", delete(remove_silence))
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let token = token.clone();
            async move { authorize(token.as_deref(), request, next).await }
        }))
        .with_state(controls)
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Lets reads through; a change needs the bearer token when one is configured. The
/// digests are compared, so the comparison's timing says nothing about the token.
async fn authorize(token: Option<&[u8; 32]>, request: Request, next: Next) -> Response {
    let Some(expected) = token else {
        return next.run(request).await;
    };
    if request.method() == Method::GET || request.method() == Method::HEAD {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|value| digest(value.as_bytes()));
    if presented.as_ref() == Some(expected) {
        next.run(request).await
    } else {
        let body = Json(serde_json::json!({
            "error": "this request needs Authorization: Bearer <the alert service's api_token>"
        }));
        (StatusCode::UNAUTHORIZED, body).into_response()
    }
}

async fn list_alerts(State(controls): State<Arc<Controls>>) -> impl IntoResponse {
    Json(controls.list())
}

async fn ack_alert(
    State(controls): State<Arc<Controls>>,
    Path(fingerprint): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    // The body is optional: an empty POST acknowledges anonymously.
    let request: AckRequest = if body.is_empty() {
        AckRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|_| ApiError::BadRequest("the body must be {\"by\": ..., \"comment\": ...}"))?
    };
    let ack = controls.ack(
        &fingerprint,
        request.by.unwrap_or_default(),
        request.comment.unwrap_or_default(),
    )?;
    tracing::info!(fingerprint, by = ack.by, "alert acknowledged");
    Ok(Json(ack))
}

async fn list_silences(State(controls): State<Arc<Controls>>) -> impl IntoResponse {
    Json(controls.silences())
}

async fn add_silence(
    State(controls): State<Arc<Controls>>,
    Json(request): Json<SilenceRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let silence = controls.add_silence(request)?;
    tracing::info!(id = silence.id, ends_at = silence.ends_at, "silence added");
    Ok((StatusCode::CREATED, Json(silence)))
}

async fn remove_silence(
    State(controls): State<Arc<Controls>>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    controls.remove_silence(&id)?;
    tracing::info!(id, "silence removed");
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) fn now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt;

    use super::*;
    use crate::state::tests::alert;

    async fn call(router: &Router, method: &str, uri: &str, body: &str) -> (StatusCode, String) {
        call_as(router, method, uri, body, None).await
    }

    async fn call_as(
        router: &Router,
        method: &str,
        uri: &str,
        body: &str,
        bearer: Option<&str>,
    ) -> (StatusCode, String) {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json");
        if let Some(token) = bearer {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request.body(Body::from(body.to_owned())).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn an_ack_quiets_one_firing_and_ends_with_it() {
        let controls = Controls::new();
        let firing = alert("fp1", AlertStatus::Firing, 1_000);
        controls.update_alerts([&firing].into_iter());
        let router = router(controls.clone(), None);

        let (status, _) = call(&router, "POST", "/api/v1/alerts/unknown/ack", "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(!controls.is_acked(&firing));

        let (status, body) =
            call(&router, "POST", "/api/v1/alerts/fp1/ack", r#"{"by":"ops"}"#).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(controls.is_acked(&firing));
        let (_, listed) = call(&router, "GET", "/api/v1/alerts", "").await;
        let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
        assert_eq!(listed[0]["fingerprint"], "fp1");
        assert_eq!(listed[0]["acknowledged"], true);

        // It resolves, then fires again: a new firing is not acknowledged.
        controls.update_alerts([&alert("fp1", AlertStatus::Resolved, 1_000)].into_iter());
        let again = alert("fp1", AlertStatus::Firing, 9_000);
        controls.update_alerts([&again].into_iter());
        assert!(!controls.is_acked(&again));
    }

    #[tokio::test]
    async fn silences_match_labels_by_glob_until_they_end_or_are_removed() {
        let controls = Controls::new();
        let router = router(controls.clone(), None);
        let firing = alert("fp1", AlertStatus::Firing, 1_000);
        assert!(!controls.is_silenced(&firing, now_ms()));

        for bad in [
            r#"{"matchers": {}, "duration_secs": 60}"#,
            r#"{"matchers": {"pool": "*"}}"#,
            r#"{"matchers": {"pool": "*"}, "duration_secs": 0}"#,
            r#"{"matchers": {"pool": "*"}, "duration_secs": 99999999}"#,
        ] {
            let (status, body) = call(&router, "POST", "/api/v1/silences", bad).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        }

        let other = r#"{"matchers": {"pool": "Platform*"}, "duration_secs": 600}"#;
        assert_eq!(
            call(&router, "POST", "/api/v1/silences", other).await.0,
            StatusCode::CREATED
        );
        assert!(!controls.is_silenced(&firing, now_ms()));

        let matching = r#"{"matchers": {"pool": "Sales*", "alertname": "utilization"},
                          "duration_secs": 600, "comment": "renewal under way"}"#;
        let (status, body) = call(&router, "POST", "/api/v1/silences", matching).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert!(controls.is_silenced(&firing, now_ms()));
        assert!(controls.is_quiet(&firing, now_ms()));
        // It ends: past its end it no longer matches.
        assert!(!controls.is_silenced(&firing, now_ms() + 601_000));

        let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let uri = format!("/api/v1/silences/{id}");
        assert_eq!(
            call(&router, "DELETE", &uri, "").await.0,
            StatusCode::NO_CONTENT
        );
        assert!(!controls.is_silenced(&firing, now_ms()));
        assert_eq!(
            call(&router, "DELETE", &uri, "").await.0,
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn with_a_token_changes_need_it_and_reads_do_not() {
        let controls = Controls::new();
        let firing = alert("fp1", AlertStatus::Firing, 1_000);
        controls.update_alerts([&firing].into_iter());
        let router = router(
            controls.clone(),
            Some(SecretString::from("s3cret-api-token")),
        );

        let uri = "/api/v1/alerts/fp1/ack";
        assert_eq!(
            call(&router, "POST", uri, "").await.0,
            StatusCode::UNAUTHORIZED
        );
        let wrong = call_as(&router, "POST", uri, "", Some("guess")).await;
        assert_eq!(wrong.0, StatusCode::UNAUTHORIZED);
        assert!(!wrong.1.contains("s3cret"), "{}", wrong.1);
        assert!(!controls.is_acked(&firing));

        let right = call_as(&router, "POST", uri, "", Some("s3cret-api-token")).await;
        assert_eq!(right.0, StatusCode::OK, "{}", right.1);
        assert!(controls.is_acked(&firing));
        assert_eq!(
            call(&router, "GET", "/api/v1/alerts", "").await.0,
            StatusCode::OK
        );
    }
}
