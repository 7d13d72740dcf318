//! The summary `ingest sync --once` prints: per org, what was fetched and what it cost.

use std::fmt::Write;

use seatwatch_schemas::{SfObject, SyncOutcome, SyncStatus};

/// Renders one block per org: outcome, records per object, API calls and quota.
pub fn render(statuses: &[SyncStatus]) -> String {
    let mut out = String::new();
    for status in statuses {
        let seconds = (status.finished_at - status.started_at) as f64 / 1000.0;
        let _ = writeln!(
            out,
            "org {} ({}): {} in {seconds:.1}s",
            status.org_name,
            status.org_id,
            status.outcome.as_str()
        );
        for object in SfObject::KNOWN {
            if let Some(count) = status.records.get(object.as_str()) {
                let _ = writeln!(out, "  {:<28} {count:>8} records", object.as_str());
            }
        }
        let _ = write!(out, "  API calls: {}", status.api_calls);
        if let (Some(used), Some(limit)) = (status.api_used, status.api_limit) {
            let share = used as f64 * 100.0 / limit.max(1) as f64;
            let _ = write!(out, " (org usage {used} of {limit} in 24 h, {share:.1}%)");
        }
        out.push('\n');
        if let Some(message) = &status.error_message {
            match status.outcome {
                SyncOutcome::Success => writeln!(out, "  warning: {message}"),
                _ => writeln!(out, "  error: {message}"),
            }
            .ok();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn summary_lists_objects_calls_and_errors() {
        let status = SyncStatus {
            org_id: "00Dx".into(),
            org_name: "acme".into(),
            sync_id: "s".into(),
            outcome: SyncOutcome::AuthFailed,
            started_at: 0,
            finished_at: 1500,
            last_success_at: None,
            records: BTreeMap::from([("User".into(), 1200), ("UserLicense".into(), 7)]),
            api_calls: 9,
            api_used: Some(500),
            api_limit: Some(1000),
            error_class: Some("auth".into()),
            error_message: Some("sign-in refused".into()),
        };
        let text = render(&[status]);
        assert!(
            text.contains("org acme (00Dx): auth_failed in 1.5s"),
            "{text}"
        );
        assert!(
            text.contains("User ") && text.contains("1200 records"),
            "{text}"
        );
        assert!(
            text.contains("API calls: 9 (org usage 500 of 1000 in 24 h, 50.0%)"),
            "{text}"
        );
        assert!(text.contains("error: sign-in refused"), "{text}");
    }

    #[test]
    fn a_successful_sync_shows_login_history_and_its_warning() {
        let status = SyncStatus {
            org_id: "00Dx".into(),
            org_name: "acme".into(),
            sync_id: "s".into(),
            outcome: SyncOutcome::Success,
            started_at: 0,
            finished_at: 1000,
            last_success_at: Some(1000),
            records: BTreeMap::from([("User".into(), 3), ("LoginHistory".into(), 42)]),
            api_calls: 8,
            api_used: None,
            api_limit: None,
            error_class: None,
            error_message: Some("LoginHistory not read: grant it".into()),
        };
        let text = render(&[status]);
        assert!(
            text.contains("LoginHistory") && text.contains("42 records"),
            "{text}"
        );
        assert!(text.contains("warning: LoginHistory not read"), "{text}");
        assert!(!text.contains("error:"), "{text}");
    }
}
