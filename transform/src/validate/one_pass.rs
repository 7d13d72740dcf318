//! Reading an envelope and its record in one pass.
//!
//! Ingest writes `object` before `record`, so by the time the record is reached its type
//! is known and it can be parsed where it lies, instead of being skipped as raw JSON and
//! read a second time. This path reads only what is well formed: at any failure (a record
//! that does not parse, a missing or repeated field, a record before its object, a key
//! with escapes) it gives up, and the two-pass path of the parent module reads the event
//! again and explains what is wrong. It therefore never changes a verdict, only what a
//! good event costs; a test holds both paths to the same results.
//!
//! A `User` record is the exception: it is left raw, as the two passes leave it. The
//! processor first compares its text with the text the user's published state was built
//! from, and parses it only when the two differ (see the processor's module
//! documentation for when they do).
//!
//! Ingest stamps every record of a page with one `fetched_at`, so consecutive events
//! nearly always carry the same text: [`LastFetchedAt`] keeps the last one parsed and
//! parses only a text that differs.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use seatwatch_schemas::envelope::parse_rfc3339;
use seatwatch_schemas::salesforce::{
    LoginHistoryRecord, PackageLicenseRecord, PermissionSetLicenseAssignRecord,
    PermissionSetLicenseRecord, UserLicenseRecord, UserPackageLicenseRecord, UserRecord,
};
use seatwatch_schemas::{EnvelopeKind, SfObject, SnapshotEnd};
use serde::de::{self, DeserializeSeed, Deserializer as _, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::Envelope;

/// The record types a [`TypedRecord`] holds, taken back out of it.
pub trait FromTyped: Sized {
    /// The record, if `record` holds this type.
    fn from_typed(record: TypedRecord) -> Option<Self>;
}

/// Declares [`TypedRecord`] with a variant per Salesforce object, named as in
/// [`SfObject`], then [`FromTyped`] for each record type and how [`RecordOf`] reads each:
/// one list, so that an object cannot be left out of one of them.
macro_rules! typed_records {
    ($($object:ident($record:ty)),* $(,)?) => {
        /// A Salesforce record, typed by the object its envelope names.
        #[derive(Debug)]
        pub enum TypedRecord {
            $($object($record),)*
        }

        $(
            impl FromTyped for $record {
                fn from_typed(record: TypedRecord) -> Option<Self> {
                    match record {
                        TypedRecord::$object(record) => Some(record),
                        _ => None,
                    }
                }
            }
        )*

        impl<'de> DeserializeSeed<'de> for RecordOf {
            type Value = Option<TypedRecord>;

            fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                Ok(match self.0 {
                    $(SfObject::$object => Option::deserialize(d)?.map(TypedRecord::$object),)*
                })
            }
        }
    };
}

typed_records!(
    UserLicense(UserLicenseRecord),
    PermissionSetLicense(PermissionSetLicenseRecord),
    PackageLicense(PackageLicenseRecord),
    PermissionSetLicenseAssign(PermissionSetLicenseAssignRecord),
    UserPackageLicense(UserPackageLicenseRecord),
    User(UserRecord),
    LoginHistory(LoginHistoryRecord),
);

/// Reads `text` as an envelope whose record, if any, is typed (and left out of
/// [`Envelope::record`]); `None` when the two-pass path must read it instead.
pub fn parse<'a>(text: &'a str, last_fetched_at: &mut LastFetchedAt) -> Option<Envelope<'a>> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let envelope = deserializer
        .deserialize_map(OnePass { last_fetched_at })
        .ok()?;
    deserializer.end().ok()?;
    Some(envelope)
}

/// The last `fetched_at` text parsed, with its instant.
#[derive(Debug, Default)]
pub struct LastFetchedAt {
    text: String,
    at: Option<DateTime<Utc>>,
}

impl LastFetchedAt {
    /// The instant `text` names, parsed only when it differs from the last text.
    fn parse(&mut self, text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
        if let Some(at) = self.at.filter(|_| self.text == text) {
            return Ok(at);
        }
        let at = parse_rfc3339(text)?;
        self.text.clear();
        self.text.push_str(text);
        self.at = Some(at);
        Ok(at)
    }
}

/// Text borrowed from the event unless it holds escapes.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

struct OnePass<'c> {
    last_fetched_at: &'c mut LastFetchedAt,
}

impl<'de> Visitor<'de> for OnePass<'_> {
    type Value = Envelope<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a raw envelope")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut org_id: Option<Text<'de>> = None;
        let mut sync_id: Option<Text<'de>> = None;
        let mut object: Option<SfObject> = None;
        let mut fetched_at: Option<Text<'de>> = None;
        let mut api_version: Option<Text<'de>> = None;
        let mut kind: Option<EnvelopeKind> = None;
        let mut snapshot: Option<Option<SnapshotEnd>> = None;
        let mut record: Option<Option<TypedRecord>> = None;
        let mut raw_user: Option<&'de RawValue> = None;
        while let Some(key) = map.next_key::<&'de str>()? {
            match key {
                "org_id" => read_once(&mut map, &mut org_id, "org_id")?,
                "sync_id" => read_once(&mut map, &mut sync_id, "sync_id")?,
                "object" => read_once(&mut map, &mut object, "object")?,
                "fetched_at" => read_once(&mut map, &mut fetched_at, "fetched_at")?,
                "api_version" => read_once(&mut map, &mut api_version, "api_version")?,
                "kind" => read_once(&mut map, &mut kind, "kind")?,
                "snapshot" => read_once(&mut map, &mut snapshot, "snapshot")?,
                "record" => {
                    let Some(object) = object else {
                        return Err(de::Error::custom("the record comes before its object"));
                    };
                    if record.is_some() || raw_user.is_some() {
                        return Err(de::Error::duplicate_field("record"));
                    }
                    if object == SfObject::User {
                        match map.next_value::<Option<&'de RawValue>>()? {
                            Some(raw) => raw_user = Some(raw),
                            None => record = Some(None),
                        }
                    } else {
                        record = Some(map.next_value_seed(RecordOf(object))?);
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }

        let required = |name| de::Error::missing_field(name);
        let fetched_at = fetched_at.ok_or_else(|| required("fetched_at"))?;
        let fetched_at = self
            .last_fetched_at
            .parse(&fetched_at.0)
            .map_err(de::Error::custom)?;
        Ok(Envelope {
            org_id: org_id.ok_or_else(|| required("org_id"))?.0,
            sync_id: sync_id.ok_or_else(|| required("sync_id"))?.0,
            object: object.ok_or_else(|| required("object"))?,
            fetched_at,
            api_version: api_version.ok_or_else(|| required("api_version"))?.0,
            kind: kind.unwrap_or_default(),
            record: raw_user,
            typed: record.flatten(),
            snapshot: snapshot.flatten(),
        })
    }
}

/// Reads the value of field `name` into `slot`; a second value of the same field is an
/// error, as for the two-pass path.
fn read_once<'de, A, T>(
    map: &mut A,
    slot: &mut Option<T>,
    name: &'static str,
) -> Result<(), A::Error>
where
    A: MapAccess<'de>,
    T: Deserialize<'de>,
{
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

/// A record of a known object; `null` is no record, as for the two-pass path.
struct RecordOf(SfObject);

#[cfg(test)]
mod tests {
    use seatwatch_schemas::RawEnvelope;
    use serde_json::value::RawValue;
    use serde_json::{json, Value};

    use super::*;
    use crate::validate::parse_record;

    /// Every record of the Salesforce fixtures, with its object.
    fn fixture_records() -> Vec<(SfObject, Value)> {
        let files = [
            (
                SfObject::UserLicense,
                include_str!("../../../fixtures/salesforce/query_userlicense_page1.json"),
            ),
            (
                SfObject::PermissionSetLicense,
                include_str!("../../../fixtures/salesforce/query_permissionsetlicense.json"),
            ),
            (
                SfObject::PackageLicense,
                include_str!("../../../fixtures/salesforce/query_packagelicense.json"),
            ),
            (
                SfObject::PermissionSetLicenseAssign,
                include_str!("../../../fixtures/salesforce/query_permissionsetlicenseassign.json"),
            ),
            (
                SfObject::UserPackageLicense,
                include_str!("../../../fixtures/salesforce/query_userpackagelicense.json"),
            ),
            (
                SfObject::User,
                include_str!("../../../fixtures/salesforce/query_user_with_profile_license.json"),
            ),
            (
                SfObject::LoginHistory,
                include_str!("../../../fixtures/salesforce/query_loginhistory.json"),
            ),
        ];
        let mut records = Vec::new();
        for (object, text) in files {
            let document: Value = serde_json::from_str(text).unwrap();
            for record in document["body"]["records"].as_array().unwrap() {
                records.push((object, record.clone()));
            }
        }
        records
    }

    fn envelope_text(object: SfObject, record: &Value) -> String {
        let envelope = RawEnvelope {
            org_id: "00D5g000004XyZwEAK".into(),
            sync_id: "sync-1".into(),
            object,
            fetched_at: "2024-05-01T12:00:00Z".parse().unwrap(),
            api_version: "62.0".into(),
            kind: EnvelopeKind::Record,
            record: Some(RawValue::from_string(record.to_string()).unwrap()),
            snapshot: None,
        };
        serde_json::to_string(&envelope).unwrap()
    }

    /// The record as the two-pass path types it, shown with `Debug`.
    fn typed_in_two_passes(object: SfObject, raw: &str) -> String {
        fn shown<T: serde::de::DeserializeOwned + fmt::Debug>(
            object: SfObject,
            raw: &str,
        ) -> String {
            format!("{:?}", parse_record::<T>(object, raw).unwrap())
        }
        match object {
            SfObject::UserLicense => shown::<UserLicenseRecord>(object, raw),
            SfObject::PermissionSetLicense => shown::<PermissionSetLicenseRecord>(object, raw),
            SfObject::PackageLicense => shown::<PackageLicenseRecord>(object, raw),
            SfObject::PermissionSetLicenseAssign => {
                shown::<PermissionSetLicenseAssignRecord>(object, raw)
            }
            SfObject::UserPackageLicense => shown::<UserPackageLicenseRecord>(object, raw),
            SfObject::User => shown::<UserRecord>(object, raw),
            SfObject::LoginHistory => shown::<LoginHistoryRecord>(object, raw),
        }
    }

    fn typed_variant_of(record: &TypedRecord) -> String {
        match record {
            TypedRecord::UserLicense(r) => format!("{r:?}"),
            TypedRecord::PermissionSetLicense(r) => format!("{r:?}"),
            TypedRecord::PackageLicense(r) => format!("{r:?}"),
            TypedRecord::PermissionSetLicenseAssign(r) => format!("{r:?}"),
            TypedRecord::UserPackageLicense(r) => format!("{r:?}"),
            TypedRecord::User(r) => format!("{r:?}"),
            TypedRecord::LoginHistory(r) => format!("{r:?}"),
        }
    }

    #[test]
    fn one_pass_reads_every_fixture_as_the_two_passes_do() {
        let records = fixture_records();
        assert!(records.len() > 20, "{} fixture records", records.len());
        for (object, record) in records {
            let text = envelope_text(object, &record);
            let fast = parse(&text, &mut LastFetchedAt::default())
                .unwrap_or_else(|| panic!("one pass gave up on {text}"));
            let slow: Envelope<'_> = serde_json::from_str(&text).unwrap();

            assert_eq!(fast.org_id, slow.org_id);
            assert_eq!(fast.sync_id, slow.sync_id);
            assert_eq!(fast.object, slow.object);
            assert_eq!(fast.fetched_at, slow.fetched_at);
            assert_eq!(fast.api_version, slow.api_version);
            assert_eq!(fast.kind, slow.kind);
            assert!(fast.snapshot.is_none());
            let raw = slow.record.unwrap().get();
            if object == SfObject::User {
                // Left raw, as the two passes leave it, for the processor to fingerprint.
                assert!(fast.typed.is_none());
                assert_eq!(fast.record.map(RawValue::get), Some(raw));
                continue;
            }
            assert!(fast.record.is_none());
            let typed = fast.typed.as_ref().expect("a typed record");
            assert_eq!(typed_variant_of(typed), typed_in_two_passes(object, raw));
        }
    }

    #[test]
    fn one_pass_gives_up_on_what_the_two_passes_must_judge() {
        let good = json!({
            "org_id": "00D5g000004XyZwEAK", "sync_id": "sync-1",
            "object": "PermissionSetLicenseAssign", "fetched_at": "2024-05-01T12:00:00Z",
            "api_version": "62.0", "kind": "record",
            "record": {"Id": "2LA1", "AssigneeId": "005A", "PermissionSetLicenseId": "0PL1"},
        });
        assert!(
            parse(&good.to_string(), &mut LastFetchedAt::default()).is_some(),
            "the good envelope is read"
        );

        let with = |field: &str, value: Value| {
            let mut changed = good.clone();
            changed[field] = value;
            changed.to_string()
        };
        let record_first = r#"{"record":{"Id":"005A","Username":"a","IsActive":true},
            "org_id":"o","sync_id":"s","object":"User","fetched_at":"2024-05-01T12:00:00Z",
            "api_version":"62.0"}"#;
        let repeated = r#"{"org_id":"o","org_id":"p","sync_id":"s","object":"User",
            "fetched_at":"2024-05-01T12:00:00Z","api_version":"62.0","record":null}"#;
        let escaped_key = r#"{"org\u005fid":"o","sync_id":"s","object":"User",
            "fetched_at":"2024-05-01T12:00:00Z","api_version":"62.0","record":null}"#;
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove("api_version");
        let cases = [
            (
                "a record of the wrong shape",
                with("record", json!({"Id": "2LA1"})),
            ),
            (
                "a wrong field type",
                with(
                    "record",
                    json!({"Id": 5, "AssigneeId": "005A", "PermissionSetLicenseId": "0PL1"}),
                ),
            ),
            ("an unknown object", with("object", json!("Account"))),
            ("the record before its object", record_first.to_owned()),
            ("a repeated field", repeated.to_owned()),
            ("an escaped key", escaped_key.to_owned()),
            ("a missing field", missing.to_string()),
            ("trailing bytes", format!("{good} x")),
        ];
        for (case, text) in cases {
            let given_up = parse(&text, &mut LastFetchedAt::default()).is_none();
            assert!(given_up, "one pass must give up on {case}");
        }

        // Given up on, a well-formed envelope is still read, with its record raw.
        let two_passes = crate::validate::parse_envelope(Some(record_first.as_bytes())).unwrap();
        assert!(two_passes.typed.is_none());
        assert!(two_passes.record.is_some());
    }

    #[test]
    fn a_null_record_is_no_record_in_both_paths() {
        let text = r#"{"org_id":"o","sync_id":"s","object":"User",
            "fetched_at":"2024-05-01T12:00:00Z","api_version":"62.0","record":null}"#;
        let fast = parse(text, &mut LastFetchedAt::default()).unwrap();
        let slow: Envelope<'_> = serde_json::from_str(text).unwrap();
        assert!(fast.typed.is_none() && fast.record.is_none());
        assert!(slow.record.is_none());
    }

    #[test]
    fn each_fetched_at_is_read_whether_or_not_it_repeats_the_last() {
        let envelope = |fetched_at: &str| {
            json!({
                "org_id": "o", "sync_id": "s", "object": "User", "fetched_at": fetched_at,
                "api_version": "62.0", "record": null,
            })
            .to_string()
        };
        let times = [
            "2024-05-01T12:00:00Z",
            "2024-05-01T12:00:00Z",
            "2024-05-01T12:00:01.5+02:00",
            "2024-05-01T12:00:00Z",
            "not a time",
            "2024-05-01T12:00:00Z",
        ];
        let mut last = LastFetchedAt::default();
        for time in times {
            let text = envelope(time);
            let fast = parse(&text, &mut last).map(|e| e.fetched_at);
            let slow = serde_json::from_str::<Envelope<'_>>(&text).map(|e| e.fetched_at);
            assert_eq!(fast, slow.ok(), "fetched_at {time:?}");
        }
    }
}
