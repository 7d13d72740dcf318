//! The `[rules]` section: one table per rule kind, and scoped overrides.
//!
//! Each rule kind has a table of defaults (`[rules.utilization]`, ...). Overrides narrow
//! any of them to some orgs and licence pools:
//!
//! ```toml
//! [[rules.overrides]]
//! orgs = ["00D5g000004XXXXEAA"]   # optional: every org when absent
//! pools = ["Salesforce*"]         # optional: glob on the licence's API name
//! utilization = { threshold = 0.95, clear_below = 0.90 }
//! idle_seats = { enabled = false }
//! ```
//!
//! The first override whose `orgs` and `pools` both match wins, and only the keys it sets
//! replace the defaults. Org-level rules (`stale_sync`) see only overrides without
//! `pools`. Every override is resolved once at start, so a misspelt key or a bad value
//! fails there, named by its dotted path.

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use wildmatch::WildMatch;

use crate::AlertError;

/// `[rules]`: every rule kind's defaults and the scoped overrides.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    #[serde(default)]
    pub utilization: UtilizationRule,
    #[serde(default)]
    pub exhausted: ExhaustedRule,
    #[serde(default)]
    pub expiring: ExpiringRule,
    #[serde(default)]
    pub idle_seats: IdleSeatsRule,
    #[serde(default)]
    pub forecast: ForecastRule,
    #[serde(default)]
    pub stale_sync: StaleSyncRule,
    /// `[[rules.overrides]]`, first match wins.
    #[serde(default, skip_serializing)]
    pub overrides: Vec<RuleOverride>,
}

/// One `[[rules.overrides]]` entry: where it applies and the rule keys it replaces.
/// (serde cannot deny unknown keys next to a flattened map; [`RulesConfig::validate`]
/// rejects unknown rule kinds instead.)
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RuleOverride {
    /// Org ids (15 or 18 characters as the records carry them); every org when empty.
    #[serde(default)]
    pub orgs: Vec<String>,
    /// Globs (`*`, `?`) on the licence's API name; every pool when empty.
    #[serde(default)]
    pub pools: Vec<String>,
    /// Partial rule tables by rule kind, e.g. `utilization = { threshold = 0.95 }`.
    #[serde(flatten)]
    pub rules: Map<String, Value>,
}

impl RuleOverride {
    fn matches_org(&self, org_id: &str) -> bool {
        self.orgs.is_empty() || self.orgs.iter().any(|org| org == org_id)
    }

    fn matches_pool(&self, pool: &str) -> bool {
        self.pools.is_empty()
            || self
                .pools
                .iter()
                .any(|pattern| WildMatch::new(pattern).matches(pool))
    }
}

impl RulesConfig {
    /// The rules for one licence pool of one org, with the first matching override
    /// applied. Borrowed when no override matches.
    pub fn for_pool(&self, org_id: &str, pool: &str) -> Cow<'_, RulesConfig> {
        self.scoped(|o| o.matches_org(org_id) && o.matches_pool(pool))
    }

    /// The rules for an org as a whole: overrides that name pools do not apply.
    pub fn for_org(&self, org_id: &str) -> Cow<'_, RulesConfig> {
        self.scoped(|o| o.pools.is_empty() && o.matches_org(org_id))
    }

    fn scoped(&self, applies: impl Fn(&RuleOverride) -> bool) -> Cow<'_, RulesConfig> {
        match self.overrides.iter().find(|o| applies(o)) {
            // Validation resolved every override once, so this cannot fail; the defaults
            // are the safe answer if it ever did.
            Some(found) => Cow::Owned(self.apply(found).unwrap_or_else(|_| self.clone())),
            None => Cow::Borrowed(self),
        }
    }

    /// The defaults with `found`'s keys replacing theirs, overrides dropped.
    fn apply(&self, found: &RuleOverride) -> Result<RulesConfig, String> {
        let mut merged = RulesConfig {
            overrides: Vec::new(),
            ..self.clone()
        };
        for (kind, partial) in &found.rules {
            match kind.as_str() {
                "utilization" => merged.utilization = overlay(&self.utilization, partial)?,
                "exhausted" => merged.exhausted = overlay(&self.exhausted, partial)?,
                "expiring" => merged.expiring = overlay(&self.expiring, partial)?,
                "idle_seats" => merged.idle_seats = overlay(&self.idle_seats, partial)?,
                "forecast" => merged.forecast = overlay(&self.forecast, partial)?,
                "stale_sync" => merged.stale_sync = overlay(&self.stale_sync, partial)?,
                other => return Err(format!("unknown rule `{other}`")),
            }
        }
        Ok(merged)
    }

    /// Checks every rule's values, then every override resolved onto the defaults.
    pub(crate) fn validate(&self) -> Result<(), AlertError> {
        self.validate_values("rules")?;
        for (index, found) in self.overrides.iter().enumerate() {
            let path = format!("rules.overrides[{index}]");
            for pattern in &found.pools {
                if pattern.is_empty() {
                    return Err(AlertError::config(path, "has an empty pool pattern"));
                }
            }
            let merged = self
                .apply(found)
                .map_err(|reason| AlertError::config(path.clone(), reason))?;
            merged.validate_values(&path)?;
        }
        Ok(())
    }

    fn validate_values(&self, path: &str) -> Result<(), AlertError> {
        let fail =
            |key: &str, reason: String| Err(AlertError::config(format!("{path}.{key}"), reason));

        let utilization = &self.utilization;
        // Written so that NaN fails too.
        if !(utilization.threshold > 0.0 && utilization.threshold <= 1.5) {
            let got = utilization.threshold;
            return fail(
                "utilization.threshold",
                format!("must be in (0, 1.5], got {got}"),
            );
        }
        let clear_below = utilization.clear_below();
        if !(clear_below > 0.0 && clear_below <= utilization.threshold) {
            return fail(
                "utilization.clear_below",
                format!(
                    "must be above 0 and at most the threshold ({}), got {clear_below}: an \
                     alert clears below it, so it cannot sit above the level that fires",
                    utilization.threshold
                ),
            );
        }
        if self.expiring.lead_days.is_empty() || self.expiring.lead_days.contains(&0) {
            return fail(
                "expiring.lead_days",
                "must list at least one day count above 0".into(),
            );
        }
        if self.idle_seats.idle_days < 1 {
            return fail("idle_seats.idle_days", "must be at least 1".into());
        }
        if self.idle_seats.min_idle_seats < 1 {
            return fail("idle_seats.min_idle_seats", "must be at least 1".into());
        }
        if self.forecast.within_days < 1 || self.forecast.window_days < 1 {
            return fail(
                "forecast",
                "within_days and window_days must be at least 1".into(),
            );
        }
        if self.forecast.min_samples < 2 {
            return fail(
                "forecast.min_samples",
                "must be at least 2 to make a trend".into(),
            );
        }
        if self.stale_sync.stale_after_secs < 1 {
            return fail("stale_sync.stale_after_secs", "must be at least 1".into());
        }
        Ok(())
    }
}

/// `base` with the keys of `partial` replacing its own; unknown keys are errors.
fn overlay<T: Serialize + DeserializeOwned>(base: &T, partial: &Value) -> Result<T, String> {
    let Value::Object(partial) = partial else {
        return Err("a rule override must be a table".into());
    };
    let mut merged = serde_json::to_value(base).map_err(|e| e.to_string())?;
    if let Value::Object(fields) = &mut merged {
        fields.extend(partial.clone());
    }
    serde_json::from_value(merged).map_err(|e| e.to_string())
}

fn default_true() -> bool {
    true
}

/// `[rules.utilization]`: a licence pool is nearly or fully used.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UtilizationRule {
    /// Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Fires at `used / total >= threshold`, as a fraction in (0, 1.5]. Default 0.90,
    /// which leaves room to buy seats before users are turned away. Above 1 watches for
    /// over-assignment only.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// A firing alert clears only below this (hysteresis), so a pool hovering around the
    /// threshold does not flap. Default `threshold - 0.05`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_below: Option<f64>,
    /// The pool must stay at or above the threshold this long before the alert fires
    /// (pending). Default 0: fire on the first evaluation that sees it.
    #[serde(default)]
    pub for_secs: u64,
}

fn default_threshold() -> f64 {
    0.90
}

impl UtilizationRule {
    pub fn clear_below(&self) -> f64 {
        self.clear_below.unwrap_or(self.threshold - 0.05)
    }
}

impl Default for UtilizationRule {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: default_threshold(),
            clear_below: None,
            for_secs: 0,
        }
    }
}

/// `[rules.exhausted]`: a pool has no seat left to assign.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExhaustedRule {
    /// Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Fires when available seats are at or below this. Default 0: the pool is full.
    #[serde(default)]
    pub max_available: i64,
    /// Pending period, as for utilisation. Default 0.
    #[serde(default)]
    pub for_secs: u64,
}

impl Default for ExhaustedRule {
    fn default() -> Self {
        Self {
            enabled: true,
            max_available: 0,
            for_secs: 0,
        }
    }
}

/// `[rules.expiring]`: a permission-set or package licence ends soon.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExpiringRule {
    /// Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Lead times in days. The alert fires inside the longest; inside the shortest it is
    /// critical, inside the second shortest a warning, otherwise info. Default
    /// `[90, 30, 7]`: a quarter to plan the renewal, a month to sign it, a week to panic.
    #[serde(default = "default_lead_days")]
    pub lead_days: Vec<u32>,
}

fn default_lead_days() -> Vec<u32> {
    vec![90, 30, 7]
}

impl Default for ExpiringRule {
    fn default() -> Self {
        Self {
            enabled: true,
            lead_days: default_lead_days(),
        }
    }
}

/// `[rules.idle_seats]`: active users of a user licence who have not logged in lately.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdleSeatsRule {
    /// Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A user is idle after this many days without a login (or never logged in).
    /// Default 90, a common licence-review cycle.
    #[serde(default = "default_idle_days")]
    pub idle_days: u32,
    /// Fires when at least this many seats of one pool are idle. Default 1.
    #[serde(default = "default_min_idle_seats")]
    pub min_idle_seats: u32,
}

fn default_idle_days() -> u32 {
    90
}
fn default_min_idle_seats() -> u32 {
    1
}

impl Default for IdleSeatsRule {
    fn default() -> Self {
        Self {
            enabled: true,
            idle_days: default_idle_days(),
            min_idle_seats: default_min_idle_seats(),
        }
    }
}

/// `[rules.forecast]`: at the recent assignment trend, a pool runs out soon.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ForecastRule {
    /// Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Fires when the trend reaches the pool's size within this many days. Default 30.
    #[serde(default = "default_within_days")]
    pub within_days: u32,
    /// The trend is a least-squares line through the used-seat counts seen in this many
    /// recent days. Default 14.
    #[serde(default = "default_window_days")]
    pub window_days: u32,
    /// Fewest distinct observations a trend needs. Default 3.
    #[serde(default = "default_min_samples")]
    pub min_samples: usize,
    /// Shortest time the observations must span, so that one busy hour is not a trend.
    /// Default 3600.
    #[serde(default = "default_min_span_secs")]
    pub min_span_secs: u64,
}

fn default_within_days() -> u32 {
    30
}
fn default_window_days() -> u32 {
    14
}
fn default_min_samples() -> usize {
    3
}
fn default_min_span_secs() -> u64 {
    3600
}

impl Default for ForecastRule {
    fn default() -> Self {
        Self {
            enabled: true,
            within_days: default_within_days(),
            window_days: default_window_days(),
            min_samples: default_min_samples(),
            min_span_secs: default_min_span_secs(),
        }
    }
}

/// `[rules.stale_sync]`: an org's seat data is old, or its syncs fail in ways an operator
/// must fix. While an org is stale its seat alerts are held: none fires or resolves on
/// data that may no longer be true.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaleSyncRule {
    /// Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Fires when the org's last successful sync is older than this many seconds (or,
    /// for an org that never synced successfully, its first sync status is). Default
    /// 7200: a few missed polls at ingest's default interval, not one slow one.
    #[serde(default = "default_stale_after_secs")]
    pub stale_after_secs: u64,
    /// Also fire `sync_auth_failed` while the last sync failed to sign in. Default true.
    #[serde(default = "default_true")]
    pub auth_failure: bool,
    /// Also fire `sync_paused_for_quota` while the org's API allowance is exhausted.
    /// Default true.
    #[serde(default = "default_true")]
    pub quota_paused: bool,
}

fn default_stale_after_secs() -> u64 {
    2 * 3600
}

impl Default for StaleSyncRule {
    fn default() -> Self {
        Self {
            enabled: true,
            stale_after_secs: default_stale_after_secs(),
            auth_failure: true,
            quota_paused: true,
        }
    }
}
