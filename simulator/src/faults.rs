//! Faults a test can inject into data calls (query, query pages, limits).
//!
//! Each fault is a plain field so tests set exactly what they need through
//! `SimulatorHandle::with_faults`. Counters count down as data calls consume them. Faults are
//! checked before authentication, as an overloaded or unroutable Salesforce answers before it
//! looks at the session. More kinds (per-endpoint bursts, concurrent-request limits) belong
//! here as further fields, consumed in [`Faults::take`].

use std::collections::BTreeSet;
use std::time::Duration;

/// The faults in force; the default injects nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Fail this many upcoming data calls with 420 and the Salesforce Edge HTML page.
    pub edge_html_next_data_calls: u32,
    /// Fail this many upcoming data calls with 503 `SERVER_UNAVAILABLE`.
    pub fail_next_data_calls: u32,
    /// Invalidate a session once it has made this many data calls; later calls get 401.
    pub expire_session_after_data_calls: Option<u64>,
    /// Hold every data call this long before answering.
    pub data_call_delay: Option<Duration>,
    /// Objects the integration user may not see: queries get `INVALID_TYPE`, as Salesforce
    /// answers for an object without permission (for example LoginHistory without Manage
    /// Users).
    pub objects_without_access: BTreeSet<String>,
}

/// A fault that replaces the answer to one data call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectedFault {
    /// 420 with the Edge HTML page.
    EdgeHtml,
    /// 503 `SERVER_UNAVAILABLE`.
    ServerUnavailable,
}

impl Faults {
    /// Consumes the next fault that replaces a data call's answer, if any.
    pub fn take(&mut self) -> Option<InjectedFault> {
        if self.edge_html_next_data_calls > 0 {
            self.edge_html_next_data_calls -= 1;
            return Some(InjectedFault::EdgeHtml);
        }
        if self.fail_next_data_calls > 0 {
            self.fail_next_data_calls -= 1;
            return Some(InjectedFault::ServerUnavailable);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_count_down_in_order() {
        let mut faults = Faults {
            edge_html_next_data_calls: 1,
            fail_next_data_calls: 2,
            ..Faults::default()
        };
        assert_eq!(faults.take(), Some(InjectedFault::EdgeHtml));
        assert_eq!(faults.take(), Some(InjectedFault::ServerUnavailable));
        assert_eq!(faults.take(), Some(InjectedFault::ServerUnavailable));
        assert_eq!(faults.take(), None);
    }
}
