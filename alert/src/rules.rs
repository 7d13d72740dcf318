//! The alert rules: pure functions from seat state, the current time and the rules'
//! config to what each rule measures right now.
//!
//! A rule knows nothing about what already fired, about Kafka or about the clock; the
//! lifecycle in [`crate::state::AlertBook`] turns conditions into firing and resolved
//! transitions. Each condition is identified by its [`fingerprint`], a hash of rule, org
//! and pool, so the same situation always maps to the same alert.
//!
//! A condition carries a [`Level`] rather than a yes or no: `Firing` where the rule would
//! fire, `Sustain` inside a hysteresis band (a firing alert stays, a quiet one stays
//! quiet), and `Clear` where the rule measured and found nothing wrong, whose value and
//! summary then tell the resolved notification what the pool looks like now.

use std::collections::{BTreeMap, BTreeSet};

use seatwatch_schemas::{
    LicenseKind, LicenseState, LicenseStatus, Severity, SyncOutcome, UserState,
};
use sha2::{Digest, Sha256};

use crate::rule_config::RulesConfig;
use crate::state::{OrgState, SeatState};

/// Rule name of [`utilization`].
pub const UTILIZATION: &str = "utilization";
/// Rule name of [`exhausted`].
pub const EXHAUSTED: &str = "exhausted";
/// Rule name of [`expiring`].
pub const EXPIRING: &str = "expiring";
/// Rule name of [`idle_seats`].
pub const IDLE_SEATS: &str = "idle_seats";
/// Rule name of [`forecast`].
pub const FORECAST: &str = "forecast";
/// Rule names of [`sync_health`]: no recent success, sign-in failing, quota exhausted.
pub const STALE_SYNC: &str = "stale_sync";
pub const SYNC_AUTH_FAILED: &str = "sync_auth_failed";
pub const SYNC_PAUSED_FOR_QUOTA: &str = "sync_paused_for_quota";
/// Every rule this version knows, the vocabulary of the `rule` metric label.
pub const RULES: [&str; 8] = [
    UTILIZATION,
    EXHAUSTED,
    EXPIRING,
    IDLE_SEATS,
    FORECAST,
    STALE_SYNC,
    SYNC_AUTH_FAILED,
    SYNC_PAUSED_FOR_QUOTA,
];

/// Rules about the sync itself; every other rule is about seats and is held while its
/// org's data is stale.
const SYNC_RULES: [&str; 3] = [STALE_SYNC, SYNC_AUTH_FAILED, SYNC_PAUSED_FOR_QUOTA];

pub(crate) const DAY_MS: i64 = 24 * 3600 * 1000;

/// User types that hold no seat anyone could reclaim: they never log in interactively.
const NEVER_LOG_IN: [&str; 2] = ["Guest", "AutomatedProcess"];

/// Where a measurement stands against its rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// The rule fires (after its pending period).
    Firing,
    /// Between the clearing and the firing level: nothing changes.
    Sustain,
    /// Fine: a firing alert resolves.
    Clear,
}

/// What one rule measured for one pool (or org), not yet an alert.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub rule: &'static str,
    pub org_id: String,
    /// The licence's API name; empty for org-level rules.
    pub pool: String,
    pub level: Level,
    pub severity: Severity,
    /// What the rule measured, e.g. 0.967 utilisation or 12 idle seats.
    pub value: f64,
    /// What it compared `value` with.
    pub threshold: f64,
    /// How long the level must stay `Firing` before the alert fires, in milliseconds.
    pub pending_ms: i64,
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
            level: Level::Firing,
            severity,
            value: 0.0,
            threshold: 0.0,
            pending_ms: 0,
            summary: String::new(),
            labels,
        }
    }

    fn label(mut self, name: &str, value: impl ToString) -> Self {
        self.labels.insert(name.to_owned(), value.to_string());
        self
    }

    fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }

    fn measured(mut self, value: f64, threshold: f64, summary: String) -> Self {
        self.value = value;
        self.threshold = threshold;
        self.summary = summary;
        self
    }

    fn pending_secs(mut self, secs: u64) -> Self {
        self.pending_ms = i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        self
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(self.rule, &self.org_id, &self.pool)
    }

    /// Whether this rule is about seats, and so held while its org is stale.
    pub fn is_seat_rule(&self) -> bool {
        is_seat_rule(self.rule)
    }
}

/// Whether `rule` is about seats rather than about the sync.
pub fn is_seat_rule(rule: &str) -> bool {
    !SYNC_RULES.contains(&rule)
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

/// Everything one evaluation found.
#[derive(Debug, Default)]
pub struct Evaluation {
    pub conditions: Vec<Condition>,
    /// Orgs whose data is stale or whose sign-in fails: their seat alerts are held.
    pub held_orgs: BTreeSet<String>,
}

impl Evaluation {
    /// Conditions at `Firing` level.
    pub fn firing(&self) -> impl Iterator<Item = &Condition> {
        self.conditions.iter().filter(|c| c.level == Level::Firing)
    }
}

/// Runs every enabled rule on `state` as of `now_ms` (milliseconds since the epoch).
pub fn evaluate(state: &SeatState, now_ms: i64, config: &RulesConfig) -> Evaluation {
    let mut evaluation = Evaluation::default();
    for (org_id, org) in state.orgs() {
        let sync = sync_health(org_id, org, now_ms, config);
        let held = sync
            .iter()
            .any(|c| c.level == Level::Firing && matches!(c.rule, STALE_SYNC | SYNC_AUTH_FAILED));
        if held {
            evaluation.held_orgs.insert(org_id.to_owned());
        }
        evaluation.conditions.extend(sync);
        for license in org.licenses.values() {
            let rules = config.for_pool(org_id, &license.name);
            evaluation
                .conditions
                .extend(utilization(org_id, license, &rules));
            evaluation
                .conditions
                .extend(exhausted(org_id, license, &rules));
            evaluation
                .conditions
                .extend(expiring(org_id, license, now_ms, &rules));
            let history = org.history(&license.key());
            evaluation
                .conditions
                .extend(forecast(org_id, license, history, now_ms, &rules));
        }
        evaluation
            .conditions
            .extend(idle_seats(org_id, org, now_ms, config));
    }
    evaluation
}

/// A sized pool's utilisation against `[rules.utilization]`, with hysteresis.
pub fn utilization(org_id: &str, license: &LicenseState, rules: &RulesConfig) -> Option<Condition> {
    let rule = &rules.utilization;
    let total = license.total.filter(|total| *total > 0)?;
    if !rule.enabled {
        return None;
    }
    let used_fraction = license.used as f64 / total as f64;
    let level = if used_fraction >= rule.threshold {
        Level::Firing
    } else if used_fraction >= rule.clear_below() {
        Level::Sustain
    } else {
        Level::Clear
    };
    let severity = if used_fraction >= 1.0 {
        Severity::Critical
    } else {
        Severity::Warning
    };
    let summary = format!(
        "{} pool at {:.1}% ({} of {total} seats)",
        license.label,
        used_fraction * 100.0,
        license.used
    );
    Some(
        Condition::new(UTILIZATION, org_id, &license.name, severity)
            .label("kind", license.kind.key_segment())
            .label("label", &license.label)
            .level(level)
            .measured(used_fraction, rule.threshold, summary)
            .pending_secs(rule.for_secs),
    )
}

/// A sized pool with `max_available` or fewer seats left.
pub fn exhausted(org_id: &str, license: &LicenseState, rules: &RulesConfig) -> Option<Condition> {
    let rule = &rules.exhausted;
    let total = license.total.filter(|total| *total > 0)?;
    if !rule.enabled {
        return None;
    }
    let available = total - license.used;
    let level = if available <= rule.max_available {
        Level::Firing
    } else {
        Level::Clear
    };
    let summary = format!(
        "{} pool has {available} of {total} seats available",
        license.label
    );
    Some(
        Condition::new(EXHAUSTED, org_id, &license.name, Severity::Critical)
            .label("kind", license.kind.key_segment())
            .label("label", &license.label)
            .level(level)
            .measured(available as f64, rule.max_available as f64, summary)
            .pending_secs(rule.for_secs),
    )
}

/// A permission-set or package licence whose end date is within the longest lead time.
/// The shortest lead time inside which it falls sets the severity.
pub fn expiring(
    org_id: &str,
    license: &LicenseState,
    now_ms: i64,
    rules: &RulesConfig,
) -> Option<Condition> {
    let rule = &rules.expiring;
    let expires_at = license.expires_at?;
    // User licences have no end date that matters here, and a disabled licence is
    // already out of use.
    if !rule.enabled
        || license.kind == LicenseKind::User
        || license.status == LicenseStatus::Disabled
    {
        return None;
    }
    let mut leads = rule.lead_days.clone();
    leads.sort_unstable();
    let longest = i64::from(*leads.last()?);
    let days_left = (expires_at - now_ms).div_euclid(DAY_MS);
    let tier = leads.iter().position(|lead| days_left < i64::from(*lead));
    let (level, severity) = match tier {
        Some(0) => (Level::Firing, Severity::Critical),
        Some(1) => (Level::Firing, Severity::Warning),
        Some(_) => (Level::Firing, Severity::Info),
        None => (Level::Clear, Severity::Info),
    };
    let summary = if days_left < 0 {
        format!("{} licence expired {} days ago", license.label, -days_left)
    } else {
        format!("{} licence expires in {days_left} days", license.label)
    };
    Some(
        Condition::new(EXPIRING, org_id, &license.name, severity)
            .label("kind", license.kind.key_segment())
            .label("label", &license.label)
            .level(level)
            .measured(days_left as f64, longest as f64, summary),
    )
}

/// The least-squares trend of a sized pool's used seats over the recent window, and
/// when it reaches the pool's size. `history` holds `(observed_at, used)` pairs.
pub fn forecast(
    org_id: &str,
    license: &LicenseState,
    history: &[(i64, i64)],
    now_ms: i64,
    rules: &RulesConfig,
) -> Option<Condition> {
    let rule = &rules.forecast;
    let total = license.total.filter(|total| *total > 0)?;
    if !rule.enabled {
        return None;
    }
    let window_start = now_ms - i64::from(rule.window_days) * DAY_MS;
    let recent: Vec<(i64, i64)> = history
        .iter()
        .copied()
        .filter(|(at, _)| *at >= window_start)
        .collect();
    let span_ms = recent.last()?.0 - recent.first()?.0;
    let min_span_ms = i64::try_from(rule.min_span_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    if recent.len() < rule.min_samples || span_ms < min_span_ms {
        return None;
    }

    let seats_per_day = slope(&recent) * DAY_MS as f64;
    let available = (total - license.used).max(0) as f64;
    let days_to_full = if seats_per_day > 0.0 {
        available / seats_per_day
    } else {
        f64::INFINITY
    };
    let within = f64::from(rule.within_days);
    let level = if days_to_full <= within {
        Level::Firing
    } else {
        Level::Clear
    };
    let summary = if days_to_full.is_finite() {
        format!(
            "{} pool gains {seats_per_day:.1} seats a day and runs out {} ({} of {total} used)",
            license.label,
            in_days(days_to_full),
            license.used
        )
    } else {
        format!(
            "{} pool is not growing ({} of {total} used)",
            license.label, license.used
        )
    };
    // The value is a number of days that reads well in JSON and in Alertmanager's
    // annotations, so a pool that does not grow, or would take longer, shows the cap.
    let value = days_to_full.min(FORECAST_VALUE_CAP_DAYS);
    Some(
        Condition::new(FORECAST, org_id, &license.name, Severity::Warning)
            .label("kind", license.kind.key_segment())
            .label("label", &license.label)
            .level(level)
            .measured(value, within, summary),
    )
}

/// The forecast's value, days until the pool runs out, at most: ten years, which a pool that
/// is not growing shows too.
pub const FORECAST_VALUE_CAP_DAYS: f64 = 3650.0;

/// A span of milliseconds in the largest whole unit that fits: "45 seconds",
/// "12 minutes", "3 hours", "2 days".
fn duration_text(ms: i64) -> String {
    let seconds = ms.max(0) / 1000;
    let (count, unit) = match seconds {
        0..60 => (seconds, "second"),
        60..3600 => (seconds / 60, "minute"),
        3600..86_400 => (seconds / 3600, "hour"),
        _ => (seconds / 86_400, "day"),
    };
    let plural = if count == 1 { "" } else { "s" };
    format!("{count} {unit}{plural}")
}

/// "in N days", or "within a day" below one.
fn in_days(days: f64) -> String {
    if days < 1.0 {
        "within a day".into()
    } else {
        format!("in {days:.0} days")
    }
}

/// Least-squares slope of `points` in units of y per unit of x; 0 when x does not vary.
fn slope(points: &[(i64, i64)]) -> f64 {
    let n = points.len() as f64;
    // Centre x on the first point so that epoch milliseconds keep their precision.
    let x0 = points[0].0;
    let xs = points.iter().map(|(x, _)| (x - x0) as f64);
    let mean_x = xs.clone().sum::<f64>() / n;
    let mean_y = points.iter().map(|(_, y)| *y as f64).sum::<f64>() / n;
    let (mut covariance, mut variance) = (0.0, 0.0);
    for (x, (_, y)) in xs.zip(points) {
        covariance += (x - mean_x) * (*y as f64 - mean_y);
        variance += (x - mean_x) * (x - mean_x);
    }
    if variance == 0.0 {
        0.0
    } else {
        covariance / variance
    }
}

/// Per user-licence pool: active users who have not logged in for more than
/// `idle_days` days, or never have; fires at `min_idle_seats` or more.
///
/// Pools come from the users themselves (their `user_license`), so a pool whose users all
/// left or were deactivated simply stops appearing, and its alert resolves.
pub fn idle_seats(
    org_id: &str,
    org: &OrgState,
    now_ms: i64,
    config: &RulesConfig,
) -> Vec<Condition> {
    // Per pool: active seat holders, and how many of them are idle.
    let mut pools: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for user in org.users.values().filter(|user| holds_a_seat(user)) {
        let Some(pool) = user.user_license.as_deref() else {
            continue;
        };
        let counts = pools.entry(pool).or_default();
        counts.0 += 1;
        let rule = &config.for_pool(org_id, pool).idle_seats;
        if is_idle(user, now_ms, rule.idle_days) {
            counts.1 += 1;
        }
    }

    pools
        .into_iter()
        .filter_map(|(pool, (active, idle))| {
            let rules = config.for_pool(org_id, pool);
            let rule = &rules.idle_seats;
            if !rule.enabled {
                return None;
            }
            let level = if idle >= u64::from(rule.min_idle_seats) {
                Level::Firing
            } else {
                Level::Clear
            };
            let summary = format!(
                "{idle} of {active} active {pool} users have not logged in for {} days",
                rule.idle_days
            );
            Some(
                Condition::new(IDLE_SEATS, org_id, pool, Severity::Info)
                    .label("idle_days", rule.idle_days)
                    .level(level)
                    .measured(idle as f64, f64::from(rule.min_idle_seats), summary),
            )
        })
        .collect()
}

/// The org's sync health from its latest sync status: no success for too long, sign-in
/// failing, or paused for quota. Nothing before the first sync status arrives.
pub fn sync_health(
    org_id: &str,
    org: &OrgState,
    now_ms: i64,
    config: &RulesConfig,
) -> Vec<Condition> {
    let rules = config.for_org(org_id);
    let rule = &rules.stale_sync;
    let Some(sync) = org.sync.as_ref().filter(|_| rule.enabled) else {
        return Vec::new();
    };
    let mut conditions = Vec::new();

    let stale_after_ms =
        i64::try_from(rule.stale_after_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let since = sync
        .last_success_at
        .unwrap_or(org.first_sync_at.unwrap_or(sync.started_at));
    let elapsed = duration_text(now_ms - since);
    let (level, summary) = match sync.last_success_at {
        _ if now_ms - since <= stale_after_ms => (
            Level::Clear,
            format!("{}: last successful sync {elapsed} ago", sync.org_name),
        ),
        Some(_) => (
            Level::Firing,
            format!("{}: no successful sync for {elapsed}", sync.org_name),
        ),
        None => (
            Level::Firing,
            format!(
                "{}: no successful sync since seatwatch first saw it {elapsed} ago",
                sync.org_name
            ),
        ),
    };
    conditions.push(
        Condition::new(STALE_SYNC, org_id, "", Severity::Warning)
            .label("org_name", &sync.org_name)
            .level(level)
            .measured(
                (now_ms - since).max(0) as f64 / 1000.0,
                rule.stale_after_secs as f64,
                summary,
            ),
    );

    for (rule_name, enabled, outcome, severity, what) in [
        (
            SYNC_AUTH_FAILED,
            rule.auth_failure,
            SyncOutcome::AuthFailed,
            Severity::Critical,
            "cannot sign in to Salesforce; check the Connected App credentials",
        ),
        (
            SYNC_PAUSED_FOR_QUOTA,
            rule.quota_paused,
            SyncOutcome::PausedForQuota,
            Severity::Warning,
            "sync paused: the org's daily API allowance is nearly used up",
        ),
    ] {
        if !enabled {
            continue;
        }
        let level = if sync.outcome == outcome {
            Level::Firing
        } else {
            Level::Clear
        };
        let mut summary = format!("{}: {what}", sync.org_name);
        if let Some(message) = sync
            .error_message
            .as_deref()
            .filter(|_| level == Level::Firing)
        {
            summary.push_str(&format!(" ({message})"));
        }
        conditions.push(
            Condition::new(rule_name, org_id, "", severity)
                .label("org_name", &sync.org_name)
                .level(level)
                .measured(f64::from(u8::from(level == Level::Firing)), 1.0, summary),
        );
    }
    conditions
}

pub(crate) fn holds_a_seat(user: &UserState) -> bool {
    user.active && !NEVER_LOG_IN.contains(&user.user_type.as_str())
}

/// Whether `user` was last seen (the later of `LastLoginDate` and the latest successful
/// login in `LoginHistory`) more than `idle_days` before `now_ms`, or never.
pub(crate) fn is_idle(user: &UserState, now_ms: i64, idle_days: u32) -> bool {
    let idle_after_ms = i64::from(idle_days) * DAY_MS;
    user.last_seen_at()
        .is_none_or(|login| now_ms.saturating_sub(login) > idle_after_ms)
}

#[cfg(test)]
pub(crate) mod tests {
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
            last_activity_at: None,
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

    /// The conditions at firing level.
    fn firing(state: &SeatState, config: &RulesConfig) -> Vec<Condition> {
        evaluate(state, NOW, config).firing().cloned().collect()
    }

    #[test]
    fn utilization_fires_at_the_threshold_and_not_below() {
        let at = state_with(&[license("Salesforce", 90, Some(100))], &[]);
        let below = state_with(&[license("Salesforce", 89, Some(100))], &[]);
        assert_eq!(firing(&at, &rules()).len(), 1);
        assert!(firing(&below, &rules()).is_empty());
    }

    #[test]
    fn utilization_condition_carries_labels_summary_and_severity() {
        let state = state_with(&[license("Salesforce", 290, Some(300))], &[]);
        let [condition] = &firing(&state, &rules())[..] else {
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
        ] {
            assert_eq!(condition.labels.get(key).map(String::as_str), Some(value));
        }
        // Measurements change with every sync; as labels they would split one alert
        // into many in Alertmanager.
        assert_eq!(condition.labels.len(), 6, "{:?}", condition.labels);
    }

    #[test]
    fn full_or_over_assigned_pools_are_critical() {
        let state = state_with(&[license("Salesforce", 101, Some(100))], &[]);
        let conditions = firing(&state, &rules());
        assert_eq!(conditions[0].severity, Severity::Critical);
        assert_eq!(conditions[0].labels["severity"], "critical");
    }

    #[test]
    fn unlimited_and_empty_pools_never_fire() {
        let state = state_with(
            &[license("Site", 5000, None), license("Zero", 0, Some(0))],
            &[],
        );
        assert!(evaluate(&state, NOW, &rules()).conditions.is_empty());
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
        config.exhausted.enabled = false;
        config.forecast.enabled = false;
        assert!(evaluate(&state, NOW, &config).conditions.is_empty());
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
        let [condition] = &firing(&state, &rules())[..] else {
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
    fn recent_login_history_activity_keeps_an_old_last_login_from_being_idle() {
        // LastLoginDate 200 days old, but LoginHistory saw a successful login 5 days ago.
        let mut active_via_history = user("005A", "Salesforce", Some(200));
        active_via_history.last_activity_at = Some(NOW - 5 * DAY_MS);
        // Old activity does not help either.
        let mut idle_both = user("005B", "Salesforce", Some(200));
        idle_both.last_activity_at = Some(NOW - 150 * DAY_MS);
        // Activity only, no LastLoginDate: seen 10 days ago.
        let mut history_only = user("005C", "Salesforce", None);
        history_only.last_activity_at = Some(NOW - 10 * DAY_MS);

        assert!(!is_idle(&active_via_history, NOW, 90));
        assert!(is_idle(&idle_both, NOW, 90));
        assert!(!is_idle(&history_only, NOW, 90));

        let state = state_with(&[], &[active_via_history, idle_both, history_only]);
        let [condition] = &firing(&state, &rules())[..] else {
            panic!("expected one condition");
        };
        assert_eq!(condition.rule, IDLE_SEATS);
        assert_eq!(condition.value, 1.0, "only 005B is idle");
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
        assert!(evaluate(&state, NOW, &rules()).conditions.is_empty());
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
        let conditions = firing(&state, &config);
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

    fn only(conditions: Vec<Condition>, rule: &str) -> Vec<Condition> {
        conditions.into_iter().filter(|c| c.rule == rule).collect()
    }

    #[test]
    fn utilization_has_a_hysteresis_band_below_the_threshold() {
        let levels: Vec<Level> = [95, 90, 87, 85, 84]
            .into_iter()
            .map(|used| {
                let state = state_with(&[license("Salesforce", used, Some(100))], &[]);
                let found = only(evaluate(&state, NOW, &rules()).conditions, UTILIZATION);
                found[0].level
            })
            .collect();
        use Level::*;
        assert_eq!(levels, [Firing, Firing, Sustain, Sustain, Clear]);
    }

    #[test]
    fn exhausted_fires_at_max_available_or_fewer() {
        let mut config = rules();
        config.exhausted.max_available = 2;
        for (used, expected) in [
            (97, Level::Clear),
            (98, Level::Firing),
            (101, Level::Firing),
        ] {
            let state = state_with(&[license("Identity", used, Some(100))], &[]);
            let found = only(evaluate(&state, NOW, &config).conditions, EXHAUSTED);
            assert_eq!(found[0].level, expected, "used {used}");
            assert_eq!(found[0].value, (100 - used) as f64);
        }
    }

    #[test]
    fn expiring_escalates_through_the_lead_times() {
        let cases = [
            (120, Level::Clear, Severity::Info),
            (89, Level::Firing, Severity::Info),
            (29, Level::Firing, Severity::Warning),
            (6, Level::Firing, Severity::Critical),
            (-3, Level::Firing, Severity::Critical),
        ];
        for (days, level, severity) in cases {
            let mut psl = license("Sales Cloud PSL", 1, Some(10));
            psl.kind = LicenseKind::PermissionSet;
            psl.expires_at = Some(NOW + days * DAY_MS + 1000);
            let state = state_with(&[psl], &[]);
            let found = only(evaluate(&state, NOW, &rules()).conditions, EXPIRING);
            assert_eq!(
                (found[0].level, found[0].severity),
                (level, severity),
                "{days} days"
            );
        }
        // User licences carry no end date that matters here.
        let mut user_licence = license("Salesforce", 1, Some(10));
        user_licence.expires_at = Some(NOW + DAY_MS);
        let state = state_with(&[user_licence], &[]);
        assert!(only(evaluate(&state, NOW, &rules()).conditions, EXPIRING).is_empty());
    }

    #[test]
    fn durations_read_in_their_largest_whole_unit() {
        assert_eq!(duration_text(-5), "0 seconds");
        assert_eq!(duration_text(1_000), "1 second");
        assert_eq!(duration_text(59_999), "59 seconds");
        assert_eq!(duration_text(60_000), "1 minute");
        assert_eq!(duration_text(3_599_000), "59 minutes");
        assert_eq!(duration_text(7_199_000), "1 hour");
        assert_eq!(duration_text(7_200_000), "2 hours");
        assert_eq!(duration_text(3 * DAY_MS), "3 days");
    }

    #[test]
    fn forecast_fires_when_the_trend_fills_the_pool_in_time() {
        let mut state = SeatState::default();
        // Two seats a day for five days: 80 of 100 used, 10 days to full.
        for day in 0..5 {
            let mut pool = license("Salesforce", 72 + 2 * day, Some(100));
            pool.observed_at = NOW - (4 - day) * DAY_MS;
            state.put_license(&pool.key(), pool);
        }
        let found = only(evaluate(&state, NOW, &rules()).conditions, FORECAST);
        assert_eq!(found[0].level, Level::Firing);
        assert!((found[0].value - 10.0).abs() < 1e-9, "{}", found[0].value);

        let mut config = rules();
        config.forecast.within_days = 9;
        let found = only(evaluate(&state, NOW, &config).conditions, FORECAST);
        assert_eq!(found[0].level, Level::Clear);

        // Too little history: no trend yet.
        config.forecast.min_samples = 6;
        assert!(only(evaluate(&state, NOW, &config).conditions, FORECAST).is_empty());
    }

    #[test]
    fn a_flat_or_shrinking_pool_never_forecasts_exhaustion() {
        let mut state = SeatState::default();
        for (hour, used) in [(0, 90), (1, 90), (2, 85), (3, 80)] {
            let mut pool = license("Salesforce", used, Some(100));
            pool.observed_at = NOW - (3 - hour) * 3_600_000;
            state.put_license(&pool.key(), pool);
        }
        let found = only(evaluate(&state, NOW, &rules()).conditions, FORECAST);
        assert_eq!(found[0].level, Level::Clear);
        assert_eq!(
            found[0].value, FORECAST_VALUE_CAP_DAYS,
            "a readable number of days"
        );
        assert!(
            found[0].summary.contains("not growing"),
            "{}",
            found[0].summary
        );
    }

    fn sync(
        outcome: SyncOutcome,
        last_success_mins_ago: Option<i64>,
    ) -> seatwatch_schemas::SyncStatus {
        seatwatch_schemas::SyncStatus {
            org_id: ORG.into(),
            org_name: "acme".into(),
            sync_id: "s".into(),
            outcome,
            started_at: NOW - 60_000,
            finished_at: NOW - 30_000,
            last_success_at: last_success_mins_ago.map(|mins| NOW - mins * 60_000),
            records: Default::default(),
            api_calls: 1,
            api_used: None,
            api_limit: None,
            error_class: None,
            error_message: Some("invalid_grant: authentication failure".into()),
        }
    }

    #[test]
    fn stale_and_failing_syncs_fire_and_hold_the_org() {
        let fresh = {
            let mut state = state_with(&[license("Salesforce", 95, Some(100))], &[]);
            state.put_sync(ORG, sync(SyncOutcome::Success, Some(5)));
            state
        };
        let evaluation = evaluate(&fresh, NOW, &rules());
        let firing: Vec<&str> = evaluation.firing().map(|c| c.rule).collect();
        assert_eq!(firing, [UTILIZATION]);
        assert!(evaluation.held_orgs.is_empty());

        let mut stale = state_with(&[license("Salesforce", 95, Some(100))], &[]);
        stale.put_sync(ORG, sync(SyncOutcome::Failed, Some(121)));
        let evaluation = evaluate(&stale, NOW, &rules());
        let firing: Vec<&str> = evaluation.firing().map(|c| c.rule).collect();
        assert!(firing.contains(&STALE_SYNC), "{firing:?}");
        assert!(evaluation.held_orgs.contains(ORG));

        let mut auth = SeatState::default();
        auth.put_sync(ORG, sync(SyncOutcome::AuthFailed, Some(10)));
        let evaluation = evaluate(&auth, NOW, &rules());
        let [failed] = &evaluation.firing().collect::<Vec<_>>()[..] else {
            panic!("expected one firing condition");
        };
        assert_eq!(
            (failed.rule, failed.severity),
            (SYNC_AUTH_FAILED, Severity::Critical)
        );
        assert!(
            failed.summary.contains("authentication failure"),
            "{}",
            failed.summary
        );
        assert!(evaluation.held_orgs.contains(ORG));

        let mut quota = SeatState::default();
        quota.put_sync(ORG, sync(SyncOutcome::PausedForQuota, Some(10)));
        let evaluation = evaluate(&quota, NOW, &rules());
        let firing: Vec<&str> = evaluation.firing().map(|c| c.rule).collect();
        assert_eq!(firing, [SYNC_PAUSED_FOR_QUOTA]);
        // Paused for quota still has fresh data: nothing is held.
        assert!(evaluation.held_orgs.is_empty());
    }

    #[test]
    fn an_org_that_never_synced_goes_stale_from_its_first_status() {
        let mut state = SeatState::default();
        let mut status = sync(SyncOutcome::PausedForQuota, None);
        status.started_at = NOW - 3 * 3600 * 1000;
        state.put_sync(ORG, status.clone());
        // Later statuses (still no success) keep the first start.
        status.started_at = NOW - 60_000;
        state.put_sync(ORG, status);
        let stale = only(evaluate(&state, NOW, &rules()).conditions, STALE_SYNC);
        assert_eq!(stale[0].level, Level::Firing);
        assert!(
            stale[0].summary.contains("since seatwatch first saw it"),
            "{}",
            stale[0].summary
        );
    }
}
