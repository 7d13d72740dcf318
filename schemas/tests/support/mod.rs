//! A schema registry double for tests: the two endpoints seatwatch calls, on 127.0.0.1
//! with a port the OS picks, speaking the Confluent API's media type.
//!
//! - `POST /subjects/{subject}/versions` with `{"schema": "..."}` registers a schema and
//!   answers `{"id": n}`; the same schema (by Avro canonical form) always gets the same id,
//!   whatever the subject.
//! - `GET /schemas/ids/{id}` answers `{"schema": "..."}`, or 404 with error code 40403.
//!
//! Requests without `Content-Type: application/vnd.schemaregistry.v1+json` (on POST) or
//! whose `Accept` leaves that type out are refused (415, 406), so the client's headers are
//! checked on every call. The double records each request, can be told to fail the next
//! ones with 503, to call a subject incompatible (409), and to hold schemas that were
//! "registered by someone else" ([`RegistryDouble::insert_raw`]).

#![allow(dead_code)] // each test binary uses part of the double

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;

pub const MEDIA_TYPE: &str = "application/vnd.schemaregistry.v1+json";

#[derive(Default)]
struct Registry {
    /// Schema texts; the id of `schemas[i]` is `i + 1`.
    schemas: Vec<String>,
    by_canonical_form: HashMap<String, u32>,
    subjects: HashMap<String, Vec<u32>>,
    incompatible: HashSet<String>,
    fail_next: usize,
    /// `METHOD path`, in order.
    requests: Vec<String>,
    /// The `Authorization` header of the last request, if any.
    last_authorization: Option<String>,
}

type Shared = Arc<Mutex<Registry>>;

pub struct RegistryDouble {
    pub url: String,
    state: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl RegistryDouble {
    pub async fn start() -> Self {
        let state = Shared::default();
        let app = Router::new()
            .route("/subjects/{subject}/versions", post(register))
            .route("/schemas/ids/{id}", get(schema_by_id))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, state, server }
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// How many times the schema of `id` was fetched.
    pub fn fetches_of(&self, id: u32) -> usize {
        let wanted = format!("GET /schemas/ids/{id}");
        self.requests().iter().filter(|r| **r == wanted).count()
    }

    /// Stores a schema text as if another producer had registered it; returns its id.
    /// The text is kept as given, valid Avro or not.
    pub fn insert_raw(&self, schema: &str) -> u32 {
        let mut registry = self.state.lock().unwrap();
        registry.schemas.push(schema.to_string());
        registry.schemas.len() as u32
    }

    /// Answers the next `n` requests with 503.
    pub fn fail_next(&self, n: usize) {
        self.state.lock().unwrap().fail_next = n;
    }

    /// Refuses registrations under `subject` as incompatible (409).
    pub fn make_incompatible(&self, subject: &str) {
        self.state
            .lock()
            .unwrap()
            .incompatible
            .insert(subject.to_string());
    }

    pub fn last_authorization(&self) -> Option<String> {
        self.state.lock().unwrap().last_authorization.clone()
    }
}

impl Drop for RegistryDouble {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, MEDIA_TYPE)],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    reply(status, json!({"error_code": code, "message": message}))
}

/// Records the request and applies the checks every endpoint shares.
fn admit(
    registry: &mut Registry,
    request: String,
    headers: &HeaderMap,
    has_body: bool,
) -> Option<Response> {
    registry.requests.push(request);
    registry.last_authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or_default().to_string());
    if registry.fail_next > 0 {
        registry.fail_next -= 1;
        return Some(error(StatusCode::SERVICE_UNAVAILABLE, 50003, "try later"));
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !accept.contains(MEDIA_TYPE) {
        return Some(error(
            StatusCode::NOT_ACCEPTABLE,
            406,
            "Accept must list the registry type",
        ));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if has_body && content_type != MEDIA_TYPE {
        return Some(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            415,
            "Content-Type must be application/vnd.schemaregistry.v1+json",
        ));
    }
    None
}

async fn register(
    State(state): State<Shared>,
    Path(subject): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut registry = state.lock().unwrap();
    let request = format!("POST /subjects/{subject}/versions");
    if let Some(refusal) = admit(&mut registry, request, &headers, true) {
        return refusal;
    }
    if registry.incompatible.contains(&subject) {
        return error(
            StatusCode::CONFLICT,
            409,
            "Schema being registered is incompatible with an earlier schema",
        );
    }
    let text = match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(request) => match request["schema"].as_str() {
            Some(text) => text.to_string(),
            None => return error(StatusCode::UNPROCESSABLE_ENTITY, 42201, "no schema"),
        },
        Err(_) => return error(StatusCode::BAD_REQUEST, 400, "body is not JSON"),
    };
    let canonical = match apache_avro::Schema::parse_str(&text) {
        Ok(schema) => schema.canonical_form(),
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, 42201, &e.to_string()),
    };

    let id = match registry.by_canonical_form.get(&canonical) {
        Some(id) => *id,
        None => {
            registry.schemas.push(text);
            let id = registry.schemas.len() as u32;
            registry.by_canonical_form.insert(canonical, id);
            id
        }
    };
    let versions = registry.subjects.entry(subject).or_default();
    if !versions.contains(&id) {
        versions.push(id);
    }
    reply(StatusCode::OK, json!({ "id": id }))
}

async fn schema_by_id(
    State(state): State<Shared>,
    Path(id): Path<u32>,
    headers: HeaderMap,
) -> Response {
    let mut registry = state.lock().unwrap();
    let request = format!("GET /schemas/ids/{id}");
    if let Some(refusal) = admit(&mut registry, request, &headers, false) {
        return refusal;
    }
    let found = (id as usize)
        .checked_sub(1)
        .and_then(|i| registry.schemas.get(i));
    match found {
        Some(text) => reply(StatusCode::OK, json!({ "schema": text })),
        None => error(StatusCode::NOT_FOUND, 40403, "Schema not found"),
    }
}
