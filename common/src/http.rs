//! The operations HTTP server every service runs: `/metrics`, `/healthz`, `/readyz`.
//!
//! Liveness says the process is serving; readiness says the service can do its work (it
//! reached the broker, its topics exist, it caught up). Each service flips its own
//! [`Health`] as those facts change. Services with an API of their own (alert's
//! acknowledge and silence endpoints) merge their routes into [`router`]'s.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;

use crate::Shutdown;

/// Liveness and readiness of one service, shared between its tasks and the server.
///
/// Ready means the service said so ([`Health::set_ready`]) and no dependency it watches
/// is down ([`Health::dependency_down`], e.g. the Kafka cluster).
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    not_ready_reason: Mutex<String>,
    /// Dependencies that are down, with why.
    down: Mutex<BTreeMap<&'static str, String>>,
}

impl Health {
    pub fn new() -> Arc<Self> {
        let health = Self::default();
        *health.not_ready_reason.lock().unwrap() = "starting".into();
        Arc::new(health)
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Marks the service not ready, with a short reason shown by `/readyz`.
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        *self.not_ready_reason.lock().unwrap() = reason.into();
        self.ready.store(false, Ordering::Release);
    }

    /// Marks a dependency unreachable: the service is not ready until it is back.
    pub fn dependency_down(&self, dependency: &'static str, reason: impl Into<String>) {
        self.down.lock().unwrap().insert(dependency, reason.into());
    }

    /// Marks a dependency reachable again.
    pub fn dependency_up(&self, dependency: &'static str) {
        self.down.lock().unwrap().remove(dependency);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.down.lock().unwrap().is_empty()
    }

    /// Why the service is not ready: its dependencies that are down, else its own reason.
    pub fn not_ready_reason(&self) -> String {
        let down = self.down.lock().unwrap();
        if down.is_empty() {
            return self.not_ready_reason.lock().unwrap().clone();
        }
        let reasons: Vec<String> = down
            .iter()
            .map(|(dependency, reason)| format!("{dependency}: {reason}"))
            .collect();
        reasons.join("; ")
    }
}

#[derive(Clone)]
struct OpsState {
    registry: Registry,
    health: Arc<Health>,
}

/// The `/metrics`, `/healthz` and `/readyz` routes.
pub fn router(registry: Registry, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(OpsState { registry, health })
}

async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    let mut body = Vec::new();
    let encoder = TextEncoder::new();
    match encoder.encode(&state.registry.gather(), &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain".to_owned())],
            e.to_string().into_bytes(),
        ),
    }
}

async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    if state.health.is_ready() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        let reason = state.health.not_ready_reason();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
    }
}

/// Binds the ops server and serves `router` until `shutdown`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    shutdown: Shutdown,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "ops HTTP server failed");
        }
    });
    Ok((bound, task))
}
