//! The alert rules: pure functions from seat state, the current time and the rules'
//! config to the conditions that hold right now.
//!
//! A rule knows nothing about what already fired, about Kafka or about the clock; the
//! lifecycle in [`crate::state::AlertBook`] turns conditions into firing and resolved
//! transitions. Each condition is identified by its [`fingerprint`], a hash of rule, org
//! and pool, so the same situation always maps to the same alert.

use std::collections::BTreeMap;

use seatwatch_schemas::{LicenseState, Severity, UserState};
use sha2::{Digest, Sha256};

use crate::config::{IdleSeatsRule, RulesConfig, UtilizationRule};
use crate::state::{OrgState, SeatState};

/// Rule name of [`utilization`].
pub const UTILIZATION: &str = "utilization";
/// Rule name of [`idle_seats`].
pub const IDLE_SEATS: &str = "idle_seats";
/// Every rule this version knows, the vocabulary of the `rule` metric label.
pub const RULES: [&str; 2] = [UTILIZATION, IDLE_SEATS];

const DAY_MS: i64 = 24 * 3600 * 1000;

/// User types that hold no seat anyone could reclaim: they never log in interactively.
const NEVER_LOG_IN: [&str; 2] = ["Guest", "AutomatedProcess"];

/// One situation a rule found, not yet an alert.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub rule: &'static str,
    pub org_id: String,
    pub pool: String,
    pub severity: Severity,
    /// What the rule measured, e.g. 0.967 utilisation or 12 idle seats.
    pub value: f64,
    /// What it compared `value` with.
    pub threshold: f64,
    pub summary: String,
    /// Always `alertname`, `org_id`, `pool` and `severity`, plus the rule's own.
    pub labels: BTreeMap<String, String>,
}

impl Condition {
    fn new(rule: &'static str, org_id: &str, pool: &str, severity: Severity) -> Self {
        let labels = BTreeMap::from([
            ("alertname".to_owned(), rule.to_owned()),
            ("org_id".to_owned(), org_id.to_owned()),
            ("pool".to_owned(), pool.to_owned()),
            ("severity".to_owned(), severity.as_str().to_owned()),
        ]);
        Self {
            rule,
            org_id: org_id.to_owned(),
            pool: pool.to_owned(),
            severity,
            value: 0.0,
            threshold: 0.0,
            summary: String::new(),
            labels,
        }
    }

    fn label(mut self, name: &str, value: impl ToString) -> Self {
        self.labels.insert(name.to_owned(), value.to_string());
        self
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(self.rule, &self.org_id, &self.pool)
    }
}

/// The stable identity of an alert: the first 16 hex digits of SHA-256 over
/// `rule NUL org NUL pool`. NUL cannot occur in any of the three, so distinct triples
/// never hash the same input.
pub fn fingerprint(rule: &str, org_id: &str, pool: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(rule.as_bytes());
    hasher.update([0]);
    hasher.update(org_id.as_bytes());
    hasher.update([0]);
    hasher.update(pool.as_bytes());
    hex::encode(&hasher.finalize()[..8])
}

/// Runs every enabled rule on `state` as of `now_ms` (milliseconds since the epoch).
pub fn evaluate(state: &SeatState, now_ms: i64, config: &RulesConfig) -> Vec<Condition> {
    let mut conditions = Vec::new();
    for (org_id, org) in state.orgs() {
        if config.utilization.enabled {
            conditions.extend(utilization(org_id, org, &config.utilization));
        }
        if config.idle_seats.enabled {
            conditions.extend(idle_seats(org_id, org, now_ms, &config.idle_seats));
        }
    }
    conditions
}

/// Licence pools with a known, non-zero size whose utilisation reached the threshold.
///
/// The pool is the licence's API name. Two licences of different kinds with the same name
/// in one org would share a fingerprint; Salesforce's naming makes that unlikely, and the
/// later one in key order wins.
pub fn utilization(org_id: &str, org: &OrgState, rule: &UtilizationRule) -> Vec<Condition> {
    org.licenses
        .values()
        .filter_map(|license| pool_utilization(license, rule.threshold))
        .map(|(license, used_fraction)| {
            let severity = if used_fraction >= 1.0 {
                Severity::Critical
            } else {
                Severity::Warning
            };
            let total = license.total.unwrap_or_default();
            let mut condition = Condition::new(UTILIZATION, org_id, &license.name, severity)
                .label("kind", license.kind.key_segment())
                .label("label", &license.label)
                .label("used", license.used)
                .label("total", total);
            condition.value = used_fraction;
            condition.threshold = rule.threshold;
            condition.summary = format!(
                "{} pool at {:.1}% ({} of {} seats)",
                license.label,
                used_fraction * 100.0,
                license.used,
                total
            );
            condition
        })
        .collect()
}

/// The licence's `used / total` if it is sized and at or over `threshold`.
fn pool_utilization(license: &LicenseState, threshold: f64) -> Option<(&LicenseState, f64)> {
    let total = license.total.filter(|total| *total > 0)?;
    let used_fraction = license.used as f64 / total as f64;
    (used_fraction >= threshold).then_some((license, used_fraction))
}

/// User licence pools with at least `min_idle_seats` active users who have not logged in
/// for more than `idle_days` days, or never have.
///
/// Pools come from the users themselves (their `user_license`), so a pool whose users all
/// left or were deactivated simply stops appearing, and its alert resolves.
pub fn idle_seats(
    org_id: &str,
    org: &OrgState,
    now_ms: i64,
    rule: &IdleSeatsRule,
) -> Vec<Condition> {
    let idle_after_ms = i64::from(rule.idle_days) * DAY_MS;

    // Per pool: active seat holders, and how many of them are idle.
    let mut pools: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for user in org.users.values().filter(|user| holds_a_seat(user)) {
        let Some(pool) = user.user_license.as_deref() else {
            continue;
        };
        let counts = pools.entry(pool).or_default();
        counts.0 += 1;
        if is_idle(user, now_ms, idle_after_ms) {
            counts.1 += 1;
        }
    }

    pools
        .into_iter()
        .filter(|(_, (_, idle))| *idle >= u64::from(rule.min_idle_seats))
        .map(|(pool, (active, idle))| {
            let mut condition = Condition::new(IDLE_SEATS, org_id, pool, Severity::Info)
                .label("idle_days", rule.idle_days);
            condition.value = idle as f64;
            condition.threshold = f64::from(rule.min_idle_seats);
            condition.summary = format!(
                "{idle} of {active} active {pool} users have not logged in for {} days",
                rule.idle_days
            );
            condition
        })
        .collect()
}

fn holds_a_seat(user: &UserState) -> bool {
    user.active && !NEVER_LOG_IN.contains(&user.user_type.as_str())
}

fn is_idle(user: &UserState, now_ms: i64, idle_after_ms: i64) -> bool {
    user.last_login_at
        .is_none_or(|login| now_ms.saturating_sub(login) > idle_after_ms)
}

#[cfg(test)]
pub(crate) mod tests {
    use seatwatch_schemas::{LicenseKind, LicenseStatus};

    use super::*;

    pub const ORG: &str = "00D000000000001EAA";
    pub const NOW: i64 = 1_750_000_000_000;

    pub fn license(name: &str, used: i64, total: Option<i64>) -> LicenseState {
        LicenseState {
            org_id: ORG.into(),
            kind: LicenseKind::User,
            license_id: format!("100{name}"),
            name: name.into(),
            label: name.into(),
            definition_key: None,
            status: LicenseStatus::Active,
            total,
            used,
            available: total.map(|t| t - used),
            utilization: total.filter(|t| *t > 0).map(|t| used as f64 / t as f64),
            expires_at: None,
            observed_at: NOW,
            sync_id: "sync-1".into(),
        }
    }

    pub fn user(id: &str, pool: &str, last_login_days_ago: Option<i64>) -> UserState {
        UserState {
            org_id: ORG.into(),
            user_id: id.into(),
            username: format!("{id}@example.invalid"),
            active: true,
            user_type: "Standard".into(),
            profile_name: None,
            user_license_id: None,
            user_license: Some(pool.into()),
            license_definition_key: None,
            last_login_at: last_login_days_ago.map(|days| NOW - days * DAY_MS),
            permission_set_licenses: vec![],
            package_licenses: vec![],
            observed_at: NOW,
            sync_id: "sync-1".into(),
        }
    }

    pub fn state_with(licenses: &[LicenseState], users: &[UserState]) -> SeatState {
        let mut state = SeatState::default();
        for license in licenses {
            state.put_license(&license.key(), license.clone());
        }
        for user in users {
            state.put_user(&user.key(), user.clone());
        }
        state
    }

    fn rules() -> RulesConfig {
        RulesConfig::default()
    }

    #[test]
    fn utilization_fires_at_the_threshold_and_not_below() {
        let at = state_with(&[license("Salesforce", 90, Some(100))], &[]);
        let below = state_with(&[license("Salesforce", 89, Some(100))], &[]);
        assert_eq!(evaluate(&at, NOW, &rules()).len(), 1);
        assert!(evaluate(&below, NOW, &rules()).is_empty());
    }

    #[test]
    fn utilization_condition_carries_labels_summary_and_severity() {
        let state = state_with(&[license("Salesforce", 290, Some(300))], &[]);
        let [condition] = &evaluate(&state, NOW, &rules())[..] else {
            panic!("expected one condition");
        };
        assert_eq!(condition.rule, UTILIZATION);
        assert_eq!(condition.pool, "Salesforce");
        assert_eq!(condition.severity, Severity::Warning);
        assert!((condition.value - 290.0 / 300.0).abs() < 1e-12);
        assert_eq!(condition.threshold, 0.90);
        assert_eq!(
            condition.summary,
            "Salesforce pool at 96.7% (290 of 300 seats)"
        );
        for (key, value) in [
            ("alertname", "utilization"),
            ("org_id", ORG),
            ("pool", "Salesforce"),
            ("severity", "warning"),
            ("kind", "user"),
            ("label", "Salesforce"),
            ("used", "290"),
            ("total", "300"),
        ] {
            assert_eq!(condition.labels.get(key).map(String::as_str), Some(value));
        }
    }

    #[test]
    fn full_or_over_assigned_pools_are_critical() {
        let state = state_with(&[license("Salesforce", 101, Some(100))], &[]);
        let conditions = evaluate(&state, NOW, &rules());
        assert_eq!(conditions[0].severity, Severity::Critical);
        assert_eq!(conditions[0].labels["severity"], "critical");
    }

    #[test]
    fn unlimited_and_empty_pools_never_fire() {
        let state = state_with(
            &[license("Site", 5000, None), license("Zero", 0, Some(0))],
            &[],
        );
        assert!(utilization(
            ORG,
            state.orgs().next().unwrap().1,
            &UtilizationRule::default()
        )
        .is_empty());
    }

    #[test]
    fn disabled_rules_find_nothing() {
        let state = state_with(
            &[license("Salesforce", 100, Some(100))],
            &[user("005A", "Salesforce", None)],
        );
        let mut config = rules();
        config.utilization.enabled = false;
        config.idle_seats.enabled = false;
        assert!(evaluate(&state, NOW, &config).is_empty());
    }

    #[test]
    fn idle_counts_never_logged_in_and_over_idle_days_only() {
        let users = [
            user("005A", "Salesforce", None),
            user("005B", "Salesforce", Some(91)),
            user("005C", "Salesforce", Some(89)),
            user("005D", "Salesforce", Some(1)),
        ];
        let state = state_with(&[], &users);
        let [condition] = &evaluate(&state, NOW, &rules())[..] else {
            panic!("expected one condition");
        };
        assert_eq!(condition.rule, IDLE_SEATS);
        assert_eq!(condition.value, 2.0);
        assert_eq!(condition.threshold, 1.0);
        assert_eq!(condition.severity, Severity::Info);
        assert_eq!(condition.pool, "Salesforce");
        assert_eq!(
            condition.summary,
            "2 of 4 active Salesforce users have not logged in for 90 days"
        );
    }

    #[test]
    fn inactive_guest_and_automated_users_do_not_count() {
        let mut inactive = user("005A", "Salesforce", None);
        inactive.active = false;
        let mut guest = user("005B", "Guest User License", None);
        guest.user_type = "Guest".into();
        let mut automated = user("005C", "Salesforce", None);
        automated.user_type = "AutomatedProcess".into();
        let state = state_with(&[], &[inactive, guest, automated]);
        assert!(evaluate(&state, NOW, &rules()).is_empty());
    }

    #[test]
    fn idle_rule_needs_min_idle_seats_per_pool() {
        let users = [
            user("005A", "Salesforce", None),
            user("005B", "Salesforce", None),
            user("005C", "Salesforce Platform", None),
        ];
        let state = state_with(&[], &users);
        let mut config = rules();
        config.idle_seats.min_idle_seats = 2;
        let conditions = evaluate(&state, NOW, &config);
        let pools: Vec<&str> = conditions.iter().map(|c| c.pool.as_str()).collect();
        assert_eq!(pools, ["Salesforce"]);
    }

    #[test]
    fn fingerprint_is_stable_and_distinct_per_rule_org_and_pool() {
        let base = fingerprint(UTILIZATION, ORG, "Salesforce");
        // Pinned (computed independently with sha256sum): a changed fingerprint would
        // orphan every alert already in the topic.
        assert_eq!(base, "bb51272cfe2f17a3");
        assert_eq!(base, fingerprint("utilization", ORG, "Salesforce"));
        let others = [
            fingerprint(IDLE_SEATS, ORG, "Salesforce"),
            fingerprint(UTILIZATION, "00D000000000002EAA", "Salesforce"),
            fingerprint(UTILIZATION, ORG, "Salesforce Platform"),
            // The separator keeps shifted boundaries apart.
            fingerprint("utilizatio", &format!("n{ORG}"), "Salesforce"),
        ];
        for other in others {
            assert_ne!(base, other);
        }
    }
}
