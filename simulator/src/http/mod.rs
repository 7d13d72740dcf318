//! The HTTP surface: routes, and the response shapes every endpoint shares.
//!
//! JSON answers carry `Content-Type: application/json;charset=UTF-8` as Salesforce's do; data
//! answers also carry `Sforce-Limit-Info`. Data API errors are JSON arrays of
//! `{message, errorCode}`, OAuth errors `{error, error_description}` objects. What each
//! endpoint does lives in [`token`] and [`data`].

mod data;
mod token;

use std::sync::Arc;

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, HOST};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;

use crate::state::Shared;

/// The Content-Type of every JSON answer.
pub(crate) const JSON_CONTENT_TYPE: &str = "application/json;charset=UTF-8";

/// API versions served, oldest first, with their release names.
pub(crate) const VERSIONS: &[(&str, &str)] = &[
    ("Summer '23", "58.0"),
    ("Winter '24", "59.0"),
    ("Spring '24", "60.0"),
    ("Summer '24", "61.0"),
    ("Winter '25", "62.0"),
    ("Spring '25", "63.0"),
    ("Summer '25", "64.0"),
    ("Winter '26", "65.0"),
    ("Spring '26", "66.0"),
];

/// All routes, bound to the shared state.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/services/oauth2/token", post(token::token))
        .route("/services/data", get(data::versions))
        .route("/services/data/", get(data::versions))
        .route("/services/data/{version}/query", get(data::query))
        .route("/services/data/{version}/query/", get(data::query))
        .route(
            "/services/data/{version}/query/{locator}",
            get(data::query_more),
        )
        .route("/services/data/{version}/limits", get(data::limits))
        .route("/services/data/{version}/limits/", get(data::limits))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .with_state(shared)
}

/// API usage for the `Sforce-Limit-Info` header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Usage {
    pub used: u64,
    pub limit: u64,
}

/// A JSON answer, with `Sforce-Limit-Info` when usage is given.
pub(crate) fn json(status: StatusCode, body: &impl Serialize, usage: Option<Usage>) -> Response {
    // Our bodies are plain data; serialising them cannot fail.
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = (status, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE));
    if let Some(usage) = usage {
        let value = format!("api-usage={}/{}", usage.used, usage.limit);
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert("Sforce-Limit-Info", value);
        }
    }
    response
}

/// One entry of a data API error body.
#[derive(Serialize)]
struct ApiError<'a> {
    message: &'a str,
    #[serde(rename = "errorCode")]
    error_code: &'a str,
}

/// A data API error: a one-element JSON array.
pub(crate) fn api_error(
    status: StatusCode,
    code: &str,
    message: &str,
    usage: Option<Usage>,
) -> Response {
    json(
        status,
        &[ApiError {
            message,
            error_code: code,
        }],
        usage,
    )
}

/// An OAuth token endpoint error; always HTTP 400, never cached.
pub(crate) fn oauth_error(error: &str, description: &str) -> Response {
    #[derive(Serialize)]
    struct Body<'a> {
        error: &'a str,
        error_description: &'a str,
    }
    let mut response = json(
        StatusCode::BAD_REQUEST,
        &Body {
            error,
            error_description: description,
        },
        None,
    );
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache,no-store"));
    response
}

/// The base URL clients reached us under: the Host header when it is a plain host[:port],
/// else the bound address. Clients in other containers thus get an instance URL they can use.
pub(crate) fn public_base_url(headers: &HeaderMap, shared: &Shared) -> String {
    let host = headers.get(HOST).and_then(|h| h.to_str().ok()).filter(|h| {
        !h.is_empty()
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]_".contains(c))
    });
    match host {
        Some(host) => format!("http://{host}"),
        None => shared.base_url.clone(),
    }
}

/// `v62.0` → `62.0` when that version is served.
pub(crate) fn served_version(segment: &str) -> Option<&'static str> {
    let number = segment.strip_prefix('v')?;
    VERSIONS.iter().map(|(_, v)| *v).find(|v| *v == number)
}

/// The answer for any unknown resource.
pub(crate) async fn not_found() -> Response {
    not_found_response()
}

pub(crate) fn not_found_response() -> Response {
    let message = "The requested resource does not exist";
    api_error(StatusCode::NOT_FOUND, "NOT_FOUND", message, None)
}

/// Liveness for container health checks.
async fn healthz() -> &'static str {
    "ok"
}
