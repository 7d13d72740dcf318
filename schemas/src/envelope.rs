//! The raw event envelope on `salesforce.usage.raw`.
//!
//! Ingest wraps every record exactly as Salesforce returned it (the JSON bytes are kept
//! untouched) with where and when it was fetched. After the last record of an object in a
//! sync, ingest writes a `snapshot_end` marker for that object; transform uses it to know
//! that the snapshot is complete, so that anything missing from it is gone (tombstones).
//!
//! Keys: `org/object/record-id` for records, `org/object` for markers. All of an org's
//! events share one partition (see `seatwatch_common::kafka::partition_for`), so they
//! arrive in order.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The Salesforce objects seatwatch reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SfObject {
    UserLicense,
    PermissionSetLicense,
    PackageLicense,
    PermissionSetLicenseAssign,
    UserPackageLicense,
    User,
    /// Read only when enabled (ingest's `login_history`); never part of [`SfObject::ALL`].
    LoginHistory,
}

impl SfObject {
    /// In the order ingest polls them: licences, then assignments, then users, so that a
    /// user's assignments are known when the user's record arrives.
    pub const ALL: [SfObject; 6] = [
        SfObject::UserLicense,
        SfObject::PermissionSetLicense,
        SfObject::PackageLicense,
        SfObject::PermissionSetLicenseAssign,
        SfObject::UserPackageLicense,
        SfObject::User,
    ];

    /// Every object seatwatch knows: [`SfObject::ALL`] and the optional ones.
    pub const KNOWN: [SfObject; 7] = [
        SfObject::UserLicense,
        SfObject::PermissionSetLicense,
        SfObject::PackageLicense,
        SfObject::PermissionSetLicenseAssign,
        SfObject::UserPackageLicense,
        SfObject::User,
        SfObject::LoginHistory,
    ];

    /// The object's API name.
    pub fn as_str(self) -> &'static str {
        match self {
            SfObject::UserLicense => "UserLicense",
            SfObject::PermissionSetLicense => "PermissionSetLicense",
            SfObject::PackageLicense => "PackageLicense",
            SfObject::PermissionSetLicenseAssign => "PermissionSetLicenseAssign",
            SfObject::UserPackageLicense => "UserPackageLicense",
            SfObject::User => "User",
            SfObject::LoginHistory => "LoginHistory",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::KNOWN.into_iter().find(|o| o.as_str() == name)
    }
}

impl std::fmt::Display for SfObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an envelope carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvelopeKind {
    /// One Salesforce record.
    #[default]
    Record,
    /// The end of one object's snapshot in one sync.
    SnapshotEnd,
}

/// Whether a snapshot holds every record of the object or only changed ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Every record: what is absent no longer exists.
    #[default]
    Full,
    /// Only records changed since a cursor: absence means nothing.
    Incremental,
}

/// The body of a `snapshot_end` marker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotEnd {
    pub mode: SnapshotMode,
    /// How many records of this object this sync emitted before the marker.
    pub records: u64,
}

/// One event on `salesforce.usage.raw`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RawEnvelope {
    /// 18-character org id.
    pub org_id: String,
    /// The sync that fetched the record.
    pub sync_id: String,
    /// The Salesforce object.
    pub object: SfObject,
    /// When ingest received the record.
    pub fetched_at: DateTime<Utc>,
    /// The REST API version used, e.g. `62.0`.
    pub api_version: String,
    #[serde(default)]
    pub kind: EnvelopeKind,
    /// The record exactly as Salesforce returned it (present when `kind` is `record`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Box<RawValue>>,
    /// Present when `kind` is `snapshot_end`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotEnd>,
}

impl RawEnvelope {
    /// The Kafka key of this event: `org/object/record-id`, or `org/object` for a marker.
    pub fn key(&self, record_id: Option<&str>) -> String {
        match record_id {
            Some(id) => format!("{}/{}/{}", self.org_id, self.object, id),
            None => format!("{}/{}", self.org_id, self.object),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_bytes_survive_the_envelope_untouched() {
        let record = r#"{"attributes":{"type":"User"},"Id":"005x","Name":"A  B","N":1.50}"#;
        let envelope = RawEnvelope {
            org_id: "00Dx".into(),
            sync_id: "s1".into(),
            object: SfObject::User,
            fetched_at: "2024-05-01T12:00:00Z".parse().unwrap(),
            api_version: "62.0".into(),
            kind: EnvelopeKind::Record,
            record: Some(RawValue::from_string(record.into()).unwrap()),
            snapshot: None,
        };
        let json = serde_json::to_string(&envelope).unwrap();
        assert!(json.contains(record), "{json}");
        let back: RawEnvelope = serde_json::from_str(&json).unwrap();
        assert_eq!(back.record.unwrap().get(), record);
        assert_eq!(envelope.key(Some("005x")), "00Dx/User/005x");
        assert_eq!(envelope.key(None), "00Dx/User");
    }

    #[test]
    fn object_names_round_trip() {
        for object in SfObject::KNOWN {
            assert_eq!(SfObject::parse(object.as_str()), Some(object));
        }
        assert!(!SfObject::ALL.contains(&SfObject::LoginHistory));
        assert_eq!(
            SfObject::parse("LoginHistory"),
            Some(SfObject::LoginHistory)
        );
        assert_eq!(SfObject::parse("Account"), None);
    }
}
