//! Logging setup: structured `tracing` events on stderr.
//!
//! Logs are JSON when stderr is not a terminal (containers, CI) and human-readable when
//! it is. The level comes from `SEATWATCH_LOG` (or `RUST_LOG`), default `info`. stdout is
//! left to commands whose output is their product (`demo --json`, `report`).

use std::io::IsTerminal;

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber. Calling it twice is harmless (the second does nothing).
pub fn init() {
    let filter = std::env::var("SEATWATCH_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    // What cannot be used is said once logging is up, rather than silently replaced.
    let mut problems = Vec::new();
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|error| {
        problems.push(format!(
            "SEATWATCH_LOG={filter:?} is not a log filter ({error}); logging at info \
             (examples: debug, warn, info,seatwatch_ingest=debug)"
        ));
        EnvFilter::new("info")
    });

    let json = match std::env::var("SEATWATCH_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        Ok(other) => {
            problems.push(format!(
                "SEATWATCH_LOG_FORMAT={other:?} is neither json nor text; choosing by \
                 whether stderr is a terminal"
            ));
            !std::io::stderr().is_terminal()
        }
        Err(_) => !std::io::stderr().is_terminal(),
    };
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.compact().try_init()
    };
    for problem in problems {
        tracing::warn!("{problem}");
    }
}
