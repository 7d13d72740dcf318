//! The Avro records seatwatch publishes, as Rust types.
//!
//! Each type mirrors one `.avsc` file in `schemas/avro/` field for field; timestamps are
//! milliseconds since the Unix epoch (Avro `timestamp-millis`). The tests in
//! `schemas/tests/` prove every type round-trips through its schema, so the two cannot
//! drift apart silently.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::avro::AvroRecord;

/// Which kind of licence pool a [`LicenseState`] describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LicenseKind {
    User,
    PermissionSet,
    Package,
}

impl LicenseKind {
    /// The segment used in keys: `org/<kind>/license-id`.
    pub fn key_segment(self) -> &'static str {
        match self {
            LicenseKind::User => "user",
            LicenseKind::PermissionSet => "permission-set",
            LicenseKind::Package => "package",
        }
    }
}

/// Salesforce's licence `Status` picklists, merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LicenseStatus {
    Active,
    Disabled,
    Expired,
    Free,
    Trial,
    Unknown,
}

impl LicenseStatus {
    /// Maps Salesforce's picklist value; anything new becomes `Unknown`.
    pub fn from_salesforce(status: Option<&str>) -> Self {
        match status {
            Some("Active") => Self::Active,
            Some("Disabled") => Self::Disabled,
            Some("Expired") => Self::Expired,
            Some("Free") => Self::Free,
            Some("Trial") => Self::Trial,
            _ => Self::Unknown,
        }
    }
}

/// One licence pool's seats. Topic `seats.license-state`, key `org/kind/license-id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LicenseState {
    pub org_id: String,
    pub kind: LicenseKind,
    pub license_id: String,
    pub name: String,
    pub label: String,
    pub definition_key: Option<String>,
    pub status: LicenseStatus,
    pub total: Option<i64>,
    pub used: i64,
    pub available: Option<i64>,
    pub utilization: Option<f64>,
    pub expires_at: Option<i64>,
    pub observed_at: i64,
    pub sync_id: String,
}

impl LicenseState {
    /// The Kafka key: `org/kind/license-id`.
    pub fn key(&self) -> String {
        license_key(&self.org_id, self.kind, &self.license_id)
    }
}

/// The Kafka key of a licence: `org/kind/license-id`.
pub fn license_key(org_id: &str, kind: LicenseKind, license_id: &str) -> String {
    format!("{org_id}/{}/{license_id}", kind.key_segment())
}

/// One user's seats and activity. Topic `seats.user-state`, key `org/user-id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserState {
    pub org_id: String,
    pub user_id: String,
    pub username: String,
    pub active: bool,
    pub user_type: String,
    pub profile_name: Option<String>,
    pub user_license_id: Option<String>,
    pub user_license: Option<String>,
    pub license_definition_key: Option<String>,
    pub last_login_at: Option<i64>,
    /// The latest successful LoginTime in LoginHistory (schema version 2); `None` when
    /// LoginHistory is not read.
    #[serde(default)]
    pub last_activity_at: Option<i64>,
    pub permission_set_licenses: Vec<String>,
    pub package_licenses: Vec<String>,
    pub observed_at: i64,
    pub sync_id: String,
}

impl UserState {
    /// The Kafka key: `org/user-id`.
    pub fn key(&self) -> String {
        user_key(&self.org_id, &self.user_id)
    }

    /// The user's most recent known activity: the later of `last_login_at` and
    /// `last_activity_at` (milliseconds), `None` when neither is known.
    pub fn last_seen_at(&self) -> Option<i64> {
        self.last_login_at.max(self.last_activity_at)
    }
}

/// The Kafka key of a user: `org/user-id`.
pub fn user_key(org_id: &str, user_id: &str) -> String {
    format!("{org_id}/{user_id}")
}

/// How an ingest sync ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SyncOutcome {
    Success,
    Failed,
    AuthFailed,
    PausedForQuota,
    Unknown,
}

impl SyncOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncOutcome::Success => "success",
            SyncOutcome::Failed => "failed",
            SyncOutcome::AuthFailed => "auth_failed",
            SyncOutcome::PausedForQuota => "paused_for_quota",
            SyncOutcome::Unknown => "unknown",
        }
    }
}

/// One sync's outcome. Topic `salesforce.sync-status`, key `org`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    pub org_id: String,
    pub org_name: String,
    pub sync_id: String,
    pub outcome: SyncOutcome,
    pub started_at: i64,
    pub finished_at: i64,
    pub last_success_at: Option<i64>,
    pub records: BTreeMap<String, i64>,
    pub api_calls: i64,
    pub api_used: Option<i64>,
    pub api_limit: Option<i64>,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
}

/// How urgent an alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Whether an alert is firing or resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// One alert transition. Topic `seats.alerts`, key `fingerprint`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub fingerprint: String,
    pub rule: String,
    pub severity: Severity,
    pub status: AlertStatus,
    pub org_id: String,
    pub pool: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub summary: String,
    pub value: f64,
    pub threshold: f64,
    pub starts_at: i64,
    pub ends_at: Option<i64>,
    pub sent_at: i64,
}

/// What a [`Recommendation`] advises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RecommendationAction {
    /// Take the seat back from the user; the pool keeps it for someone else.
    Reclaim,
    /// Move the user to a cheaper licence that covers what they use.
    Downgrade,
    /// Buy fewer seats of the licence at the next renewal.
    ResizePool,
    /// Never written: what a reader with an older schema sees for an action added later
    /// (the enum's default). Skip such a recommendation.
    Unknown,
}

impl RecommendationAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RecommendationAction::Reclaim => "reclaim",
            RecommendationAction::Downgrade => "downgrade",
            RecommendationAction::ResizePool => "resize_pool",
            RecommendationAction::Unknown => "unknown",
        }
    }
}

/// What a [`Recommendation`] rests on (Avro record `Evidence`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecommendationEvidence {
    /// User.LastLoginDate in epoch milliseconds; `None` when the user never logged in or
    /// no user is concerned.
    pub last_login_at: Option<i64>,
    /// Whole days from `last_login_at` to the recommendation's `observed_at`.
    pub days_idle: Option<i32>,
    /// User.IsActive of the seat holder; `false` when no user is concerned.
    pub active: bool,
    /// Ids of every licence the user holds, sorted.
    pub assignments: Vec<String>,
    /// One sentence a licence manager can read.
    pub reason: String,
}

/// One piece of advice on a seat or a pool. Topic `seats.recommendations`, key
/// `org/user-id/license-id` ([`recommendation_key`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// 18-character Salesforce org id.
    pub org_id: String,
    /// The seat holder; `None` for a pool-level recommendation.
    pub user_id: Option<String>,
    /// The seat holder's username; `None` exactly when `user_id` is.
    pub username: Option<String>,
    /// The kind of licence pool the seat belongs to.
    pub license_kind: LicenseKind,
    /// Salesforce id of the licence record.
    pub license_id: String,
    /// Stable API name of the licence, as [`LicenseState::name`].
    pub license_name: String,
    /// What to do.
    pub action: RecommendationAction,
    /// Why.
    pub evidence: RecommendationEvidence,
    /// Monthly saving in `currency`; `None` when the licence's price is not known.
    pub estimated_monthly_saving: Option<f64>,
    /// ISO 4217 code, e.g. `USD`.
    pub currency: String,
    /// From 0 (a guess) to 1 (certain).
    pub confidence: f64,
    /// `observed_at` of the newest seat state the recommendation was derived from.
    pub observed_at: i64,
}

impl Recommendation {
    /// The Kafka key: `org/user-id/license-id`, or `org/-/license-id` without a user.
    pub fn key(&self) -> String {
        recommendation_key(&self.org_id, self.user_id.as_deref(), &self.license_id)
    }
}

/// The user segment of a pool-level recommendation's key (no Salesforce id is `-`).
pub const NO_USER_KEY_SEGMENT: &str = "-";

/// The Kafka key of a recommendation: `org/user-id/license-id`, with `-` in place of the
/// user id when the recommendation concerns a whole pool.
pub fn recommendation_key(org_id: &str, user_id: Option<&str>, license_id: &str) -> String {
    let user = user_id.unwrap_or(NO_USER_KEY_SEGMENT);
    format!("{org_id}/{user}/{license_id}")
}

impl AvroRecord for LicenseState {
    const SCHEMA: &'static str = include_str!("../avro/license_state.avsc");
    const PUBLISHED: &'static [&'static str] =
        &[include_str!("../avro/published/license_state/v1.avsc")];
    crate::codec_once!();
}

impl AvroRecord for UserState {
    const SCHEMA: &'static str = include_str!("../avro/user_state.avsc");
    const PUBLISHED: &'static [&'static str] = &[
        include_str!("../avro/published/user_state/v1.avsc"),
        include_str!("../avro/published/user_state/v2.avsc"),
    ];
    crate::codec_once!();
}

impl AvroRecord for SyncStatus {
    const SCHEMA: &'static str = include_str!("../avro/sync_status.avsc");
    const PUBLISHED: &'static [&'static str] =
        &[include_str!("../avro/published/sync_status/v1.avsc")];
    crate::codec_once!();
}

impl AvroRecord for Alert {
    const SCHEMA: &'static str = include_str!("../avro/alert.avsc");
    const PUBLISHED: &'static [&'static str] = &[include_str!("../avro/published/alert/v1.avsc")];
    crate::codec_once!();
}

impl AvroRecord for Recommendation {
    const SCHEMA: &'static str = include_str!("../avro/recommendation.avsc");
    const PUBLISHED: &'static [&'static str] = &[
        include_str!("../avro/published/recommendation/v1.avsc"),
        include_str!("../avro/published/recommendation/v2.avsc"),
    ];
    crate::codec_once!();
}
