//! Faults a test can inject into sign-ins and data calls (query, query pages, limits).
//!
//! Each fault is a plain field so tests set exactly what they need through
//! `SimulatorHandle::with_faults`. Counters count down as calls consume them. Data-call
//! faults are checked before authentication, as an overloaded or unroutable Salesforce
//! answers before it looks at the session. Sign-in faults model an org's setup rather than
//! an outage: the token endpoint answers with Salesforce's own error body for that setup
//! even when the credentials are right. More kinds (concurrent-request limits) belong here
//! as further fields, consumed in [`Faults::take`] or [`Faults::take_slow_call`].

use std::collections::BTreeSet;
use std::time::Duration;

/// The faults in force; the default injects nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Let this many data calls through untouched before the `*_next_data_calls` faults
    /// start, so that a fault can land on page k of a query rather than on its first.
    pub faults_after_data_calls: u32,
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
    /// Hold this many upcoming data calls `slow_call_delay` before answering, longer than
    /// a client's request timeout when a test wants one to give up.
    pub slow_next_data_calls: u32,
    /// How long a slow data call is held.
    pub slow_call_delay: Duration,
    /// The org blocks the OAuth username-password flow (the default in orgs created since
    /// Summer '23): password sign-ins get `invalid_grant` / `authentication failure` with
    /// the right credentials, as Salesforce gives no distinct error for it.
    pub password_flow_blocked: bool,
    /// The caller is outside the integration user's Login IP Ranges: sign-ins that pass
    /// every other check get `invalid_grant` / `ip restricted`.
    pub ip_restricted: bool,
    /// The Connected App is new or was just edited and has not reached every server yet:
    /// this many upcoming sign-ins get `invalid_client_id` whatever the key.
    pub unpropagated_consumer_key_sign_ins: u32,
    /// The Connected App's Permitted Users need pre-authorization and the user is not
    /// approved: sign-ins get `invalid_grant` / `user hasn't approved this consumer`.
    pub user_not_approved: bool,
    /// The Connected App is admin-approved only and the user's profile is not on it:
    /// sign-ins get `invalid_app_access`.
    pub app_not_admin_approved: bool,
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
    /// Counts one data call against `faults_after_data_calls`: true while calls are still
    /// to be let through untouched (the call then takes no fault at all).
    pub fn pass_untouched(&mut self) -> bool {
        if self.faults_after_data_calls == 0 {
            return false;
        }
        self.faults_after_data_calls -= 1;
        true
    }

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

    /// Consumes one slow data call, if any: how long to hold it.
    pub fn take_slow_call(&mut self) -> Option<Duration> {
        if self.slow_next_data_calls == 0 {
            return None;
        }
        self.slow_next_data_calls -= 1;
        Some(self.slow_call_delay)
    }

    /// Consumes one sign-in while the consumer key is still propagating: true when this
    /// sign-in must not find the key.
    pub fn take_unpropagated_sign_in(&mut self) -> bool {
        if self.unpropagated_consumer_key_sign_ins == 0 {
            return false;
        }
        self.unpropagated_consumer_key_sign_ins -= 1;
        true
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

    #[test]
    fn calls_let_through_come_before_the_faults() {
        let mut faults = Faults {
            faults_after_data_calls: 2,
            fail_next_data_calls: 1,
            ..Faults::default()
        };
        assert!(faults.pass_untouched());
        assert!(faults.pass_untouched());
        assert!(!faults.pass_untouched());
        assert_eq!(faults.take(), Some(InjectedFault::ServerUnavailable));
    }

    #[test]
    fn slow_calls_and_unpropagated_sign_ins_run_out() {
        let mut faults = Faults {
            slow_next_data_calls: 1,
            slow_call_delay: Duration::from_secs(3),
            unpropagated_consumer_key_sign_ins: 1,
            ..Faults::default()
        };
        assert_eq!(faults.take_slow_call(), Some(Duration::from_secs(3)));
        assert_eq!(faults.take_slow_call(), None);
        assert!(faults.take_unpropagated_sign_in());
        assert!(!faults.take_unpropagated_sign_in());
    }
}
