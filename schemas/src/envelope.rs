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

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
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
    #[serde(deserialize_with = "deserialize_datetime")]
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

/// Deserializes an RFC 3339 datetime such as `fetched_at`, as chrono's own `Deserialize`
/// does but faster: chrono's RFC 3339 parser first, several times quicker than the general
/// parser behind chrono's `FromStr` (and every raw event carries one), then that general
/// parser, so that whatever chrono accepted is still accepted, with its error message.
pub fn deserialize_datetime<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<DateTime<Utc>, D::Error> {
    struct Rfc3339;

    impl Visitor<'_> for Rfc3339 {
        type Value = DateTime<Utc>;

        fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
            formatter.write_str("an RFC 3339 date and time string")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
            parse_rfc3339(text).map_err(E::custom)
        }
    }

    deserializer.deserialize_str(Rfc3339)
}

/// Parses an RFC 3339 datetime as [`deserialize_datetime`] does.
pub fn parse_rfc3339(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    match DateTime::parse_from_rfc3339(text) {
        Ok(at) => Ok(at.with_timezone(&Utc)),
        Err(_) => text.parse(),
    }
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

    /// `fetched_at` read with [`deserialize_datetime`].
    #[derive(Debug, Deserialize)]
    struct Fast {
        #[serde(deserialize_with = "deserialize_datetime")]
        at: DateTime<Utc>,
    }

    /// `fetched_at` read with chrono's own `Deserialize`.
    #[derive(Debug, Deserialize)]
    struct Chrono {
        at: DateTime<Utc>,
    }

    /// Both readers' verdicts on one JSON value.
    fn verdicts(value: &str) -> (Result<DateTime<Utc>, String>, Result<DateTime<Utc>, String>) {
        let json = format!(r#"{{"at":{value}}}"#);
        let fast = serde_json::from_str::<Fast>(&json).map(|f| f.at);
        let chrono = serde_json::from_str::<Chrono>(&json).map(|c| c.at);
        (
            fast.map_err(|e| e.to_string()),
            chrono.map_err(|e| e.to_string()),
        )
    }

    #[test]
    fn the_fast_datetime_reader_accepts_and_refuses_what_chrono_does() {
        let cases = [
            r#""2024-05-01T12:00:00Z""#,
            r#""2024-05-01T12:00:00.123456789Z""#,
            r#""2024-05-01T14:00:00+02:00""#,
            r#""2024-05-01T09:30:00-02:30""#,
            r#""2024-05-01t12:00:00z""#,
            r#""2024-05-01 12:00:00Z""#,
            r#""2024-05-01T12:00:00+0200""#,
            r#""2024-02-30T12:00:00Z""#,
            r#""2024-05-01T12:00:00""#,
            r#""yesterday""#,
            r#""""#,
            r#""2024-05-01T12:00:00Z""#,
        ];
        for case in cases {
            let (fast, chrono) = verdicts(case);
            assert_eq!(
                fast.is_ok(),
                chrono.is_ok(),
                "{case}: {fast:?} vs {chrono:?}"
            );
            if let (Ok(fast), Ok(chrono)) = (fast, chrono) {
                assert_eq!(fast, chrono, "{case}");
            }
        }
        assert!(
            verdicts("1714564800").0.is_err(),
            "a number is not a datetime"
        );
    }

    proptest::proptest! {
        #[test]
        fn the_fast_datetime_reader_reads_what_chrono_reads(
            seconds in 0i64..4_102_444_800,
            nanos in 0u32..1_000_000_000,
            offset_minutes in -(23 * 60 + 59)..(23 * 60 + 59),
            precision in 0usize..10,
        ) {
            let offset = chrono::FixedOffset::east_opt(offset_minutes * 60).unwrap();
            let at = DateTime::from_timestamp(seconds, nanos).unwrap().with_timezone(&offset);
            let digits = match precision {
                0 => at.format("%Y-%m-%dT%H:%M:%S%:z").to_string(),
                3 => at.format("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string(),
                6 => at.format("%Y-%m-%dT%H:%M:%S%.6f%:z").to_string(),
                _ => at.to_rfc3339(),
            };
            let (fast, chrono) = verdicts(&format!("\"{digits}\""));
            proptest::prop_assert_eq!(fast, chrono);
        }
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
