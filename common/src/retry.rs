//! Retrying a step that waits on another service (a schema registry, say) until it answers.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::Shutdown;

/// The first pause after a retriable failure; each later one doubles.
const FIRST_PAUSE: Duration = Duration::from_millis(200);

/// The longest pause: a service back from an outage is noticed within half a minute.
const LONGEST_PAUSE: Duration = Duration::from_secs(30);

/// Runs `attempt` until it succeeds (`Ok(Some)`), fails in a way `retriable` refuses
/// (`Err`), or `shutdown` is cancelled (`Ok(None)`). A retriable failure is logged with
/// `what` and tried again after a pause that doubles from 200 ms up to 30 s, with jitter,
/// as often as it takes: what waits on the other service cannot go on without it.
pub async fn until_done<T, E, F, Fut>(
    what: &str,
    shutdown: &Shutdown,
    retriable: impl Fn(&E) -> bool,
    mut attempt: F,
) -> Result<Option<T>, E>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut pauses = ExponentialBuilder::default()
        .with_min_delay(FIRST_PAUSE)
        .with_max_delay(LONGEST_PAUSE)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build();
    loop {
        let result = tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            result = attempt() => result,
        };
        let error = match result {
            Ok(value) => return Ok(Some(value)),
            Err(error) if retriable(&error) => error,
            Err(error) => return Err(error),
        };
        // The jitter is added after backon's own cap, so the cap is applied again.
        let pause = pauses.next().unwrap_or(LONGEST_PAUSE).min(LONGEST_PAUSE);
        tracing::warn!(%error, retry_in_ms = pause.as_millis(), "{what}");
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(pause) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retriable_failures_are_retried_until_success() {
        let attempts = Cell::new(0);
        let done = until_done(
            "test",
            &Shutdown::new(),
            |error: &String| error == "busy",
            || {
                attempts.set(attempts.get() + 1);
                let result = if attempts.get() < 4 {
                    Err("busy".to_owned())
                } else {
                    Ok(7)
                };
                async move { result }
            },
        )
        .await;
        assert_eq!(done, Ok(Some(7)));
        assert_eq!(attempts.get(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_ends_at_once_and_shutdown_ends_the_wait() {
        let refused = until_done(
            "test",
            &Shutdown::new(),
            |error: &String| error == "busy",
            || async { Err::<(), _>("incompatible".to_owned()) },
        )
        .await;
        assert_eq!(refused, Err("incompatible".to_owned()));

        let shutdown = Shutdown::new();
        shutdown.cancel();
        let stopped = until_done(
            "test",
            &shutdown,
            |_: &String| true,
            || async { Err::<(), _>("busy".to_owned()) },
        )
        .await;
        assert_eq!(stopped, Ok(None));
    }
}
