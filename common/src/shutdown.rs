//! Shutdown signalling.
//!
//! Every service's `run(config, shutdown)` receives a [`Shutdown`] token. The binary
//! cancels it on SIGTERM or SIGINT; tests cancel it themselves. A second signal while
//! draining exits the process at once, for operators who really mean it.

use std::time::Duration;

pub use tokio_util::sync::CancellationToken as Shutdown;

/// How long a service may drain in-flight work after shutdown is requested. Fits inside
/// Kubernetes' default `terminationGracePeriodSeconds` of 30 s with room to spare.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(20);

/// Returns a token that is cancelled on the first SIGTERM or SIGINT.
///
/// A second signal exits the process with status 130 without waiting for the drain.
pub fn on_signals() -> Shutdown {
    let token = Shutdown::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested, draining");
        cancel.cancel();

        wait_for_signal().await;
        tracing::warn!("second signal, exiting without draining");
        std::process::exit(130);
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};

    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing a SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
