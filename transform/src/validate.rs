//! Parsing raw events, and explaining in a sentence why one does not parse.
//!
//! The typed envelope and Salesforce records live in `seatwatch_schemas`; this module only
//! calls their serde parsers and, when one fails, finds the field at fault. serde names a
//! missing field but not a field of the wrong type or an unparseable date, and an operator
//! reading a dead letter needs the field. So on the failure path (never for a good event) the
//! document is read as plain JSON and checked against a short list of the fields each shape
//! needs. The lists mirror the types in `seatwatch_schemas` and serve only to explain: when
//! they find nothing, serde's own message is used, so a drift costs message quality, never
//! correctness.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use seatwatch_schemas::salesforce::{parse_date, parse_datetime};
use seatwatch_schemas::{EnvelopeKind, SfObject, SnapshotEnd};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::dlq::{ErrorClass, Rejection};

mod one_pass;

pub use one_pass::{FromTyped, LastFetchedAt, TypedRecord};

/// What a field must hold.
#[derive(Clone, Copy, Debug)]
enum Expect {
    Text,
    Integer,
    Count,
    Boolean,
    Object,
    /// Any JSON value (the envelope's record, which its object's rules check).
    Any,
    /// A Salesforce date, `2026-12-31`.
    Date,
    /// A Salesforce datetime, `2024-05-01T12:34:56.000+0000`.
    SfDateTime,
    /// An RFC 3339 datetime, as ingest writes `fetched_at`.
    Rfc3339,
    OneOf(&'static [&'static str]),
}

/// One field of a shape; dotted names reach into nested objects.
#[derive(Clone, Copy, Debug)]
struct Field {
    name: &'static str,
    expect: Expect,
    required: bool,
}

const fn req(name: &'static str, expect: Expect) -> Field {
    Field {
        name,
        expect,
        required: true,
    }
}

const fn opt(name: &'static str, expect: Expect) -> Field {
    Field {
        name,
        expect,
        required: false,
    }
}

const ENVELOPE: &[Field] = &[
    req("org_id", Expect::Text),
    req("sync_id", Expect::Text),
    req("object", Expect::Text),
    req("fetched_at", Expect::Rfc3339),
    req("api_version", Expect::Text),
    opt("kind", Expect::OneOf(&["record", "snapshot_end"])),
    opt("record", Expect::Any),
    opt("snapshot", Expect::Object),
    opt("snapshot.mode", Expect::OneOf(&["full", "incremental"])),
    opt("snapshot.records", Expect::Count),
];

const USER_LICENSE: &[Field] = &[
    req("Id", Expect::Text),
    req("Name", Expect::Text),
    opt("MasterLabel", Expect::Text),
    opt("LicenseDefinitionKey", Expect::Text),
    opt("Status", Expect::Text),
    req("TotalLicenses", Expect::Integer),
    req("UsedLicenses", Expect::Integer),
];

const PERMISSION_SET_LICENSE: &[Field] = &[
    req("Id", Expect::Text),
    req("DeveloperName", Expect::Text),
    opt("MasterLabel", Expect::Text),
    opt("PermissionSetLicenseKey", Expect::Text),
    opt("Status", Expect::Text),
    req("TotalLicenses", Expect::Integer),
    req("UsedLicenses", Expect::Integer),
    opt("ExpirationDate", Expect::Date),
];

const PACKAGE_LICENSE: &[Field] = &[
    req("Id", Expect::Text),
    req("NamespacePrefix", Expect::Text),
    req("AllowedLicenses", Expect::Integer),
    req("UsedLicenses", Expect::Integer),
    opt("Status", Expect::Text),
    opt("ExpirationDate", Expect::SfDateTime),
];

const PERMISSION_SET_LICENSE_ASSIGN: &[Field] = &[
    req("Id", Expect::Text),
    req("AssigneeId", Expect::Text),
    req("PermissionSetLicenseId", Expect::Text),
    opt("IsRevoked", Expect::Boolean),
];

const USER_PACKAGE_LICENSE: &[Field] = &[
    req("Id", Expect::Text),
    req("UserId", Expect::Text),
    req("PackageLicenseId", Expect::Text),
    opt("IsRevoked", Expect::Boolean),
];

const USER: &[Field] = &[
    req("Id", Expect::Text),
    req("Username", Expect::Text),
    req("IsActive", Expect::Boolean),
    opt("UserType", Expect::Text),
    opt("LastLoginDate", Expect::SfDateTime),
    opt("Profile", Expect::Object),
    opt("Profile.Name", Expect::Text),
    opt("Profile.UserLicenseId", Expect::Text),
    opt("Profile.UserLicense", Expect::Object),
    opt("Profile.UserLicense.Name", Expect::Text),
    opt("Profile.UserLicense.LicenseDefinitionKey", Expect::Text),
];

const LOGIN_HISTORY: &[Field] = &[
    req("Id", Expect::Text),
    req("UserId", Expect::Text),
    req("LoginTime", Expect::SfDateTime),
    req("Status", Expect::Text),
    opt("Application", Expect::Text),
    opt("LoginType", Expect::Text),
    opt("LoginSubType", Expect::Text),
    opt("LoginUrl", Expect::Text),
    opt("SourceIp", Expect::Text),
];

fn record_fields(object: SfObject) -> &'static [Field] {
    match object {
        SfObject::UserLicense => USER_LICENSE,
        SfObject::PermissionSetLicense => PERMISSION_SET_LICENSE,
        SfObject::PackageLicense => PACKAGE_LICENSE,
        SfObject::PermissionSetLicenseAssign => PERMISSION_SET_LICENSE_ASSIGN,
        SfObject::UserPackageLicense => USER_PACKAGE_LICENSE,
        SfObject::User => USER,
        SfObject::LoginHistory => LOGIN_HISTORY,
    }
}

/// A raw envelope read in place: `seatwatch_schemas::RawEnvelope`'s fields and rules, with
/// its text borrowed from the event's bytes (unless it holds escapes) and the record as a
/// slice of them, so reading an envelope copies nothing. A test holds the two types to the
/// same verdict on the same bytes.
#[derive(Debug, Deserialize)]
pub struct Envelope<'a> {
    #[serde(borrow)]
    pub org_id: Cow<'a, str>,
    #[serde(borrow)]
    pub sync_id: Cow<'a, str>,
    pub object: SfObject,
    #[serde(deserialize_with = "seatwatch_schemas::envelope::deserialize_datetime")]
    pub fetched_at: DateTime<Utc>,
    #[serde(borrow)]
    pub api_version: Cow<'a, str>,
    #[serde(default)]
    pub kind: EnvelopeKind,
    /// The record as raw JSON, when it was read in two passes, and a `User` record always
    /// (see [`one_pass`]).
    #[serde(default, borrow)]
    pub record: Option<&'a RawValue>,
    /// The record already typed, when the envelope was read in one pass (see
    /// [`one_pass`]); then `record` is `None`. Never a `User` record.
    #[serde(skip)]
    pub typed: Option<TypedRecord>,
    #[serde(default)]
    pub snapshot: Option<SnapshotEnd>,
}

impl Envelope<'_> {
    /// The Kafka key ingest writes for this envelope: `org/object/record-id` for a record,
    /// `org/object` for an end marker.
    pub fn key(&self, record_id: Option<&str>) -> String {
        match record_id {
            Some(id) => format!("{}/{}/{}", self.org_id, self.object, id),
            None => format!("{}/{}", self.org_id, self.object),
        }
    }
}

/// Parses an event's value as a raw envelope, or says which class of failure it is.
pub fn parse_envelope(value: Option<&[u8]>) -> Result<Envelope<'_>, Rejection> {
    parse_envelope_after(value, &mut LastFetchedAt::default())
}

/// [`parse_envelope`] for one event of a stream, with the `fetched_at` of the last.
pub fn parse_envelope_after<'a>(
    value: Option<&'a [u8]>,
    last_fetched_at: &mut LastFetchedAt,
) -> Result<Envelope<'a>, Rejection> {
    let Some(bytes) = value else {
        return Err(Rejection::new(
            ErrorClass::InvalidJson,
            "the value is null; expected a JSON envelope",
        ));
    };
    // The whole value is checked as UTF-8 at once, which is cheaper than string by string
    // as `from_slice` would. A good event is then read in one pass, record included; any
    // other is read in two, the record kept raw for its own parser to judge. Bytes that
    // are not UTF-8 cannot be JSON, and the failure path below says where.
    let parsed = match std::str::from_utf8(bytes) {
        Ok(text) => match one_pass::parse(text, last_fetched_at) {
            Some(envelope) => Ok(envelope),
            None => serde_json::from_str::<Envelope<'_>>(text),
        },
        Err(_) => serde_json::from_slice::<Envelope<'_>>(bytes),
    };
    let error = match parsed {
        Ok(envelope) => return check_envelope(envelope),
        Err(error) => error,
    };

    // A syntax error means the bytes are not JSON at all; anything else is JSON of the
    // wrong shape, which the checks below locate.
    let document = match serde_json::from_slice::<Value>(bytes) {
        Ok(document) => document,
        Err(syntax) => {
            let message = format!("the value is not JSON: {syntax}");
            return Err(Rejection::new(ErrorClass::InvalidJson, message));
        }
    };
    let Value::Object(fields) = document else {
        let message = format!(
            "the value is a JSON {}, not an envelope object",
            type_name(&document)
        );
        return Err(Rejection::new(ErrorClass::InvalidEnvelope, message));
    };
    if let Some(Value::String(name)) = fields.get("object") {
        if SfObject::parse(name).is_none() {
            return Err(unknown_object(name));
        }
    }
    let message = explain(ENVELOPE, &fields)
        .unwrap_or_else(|| format!("the value is not a raw envelope: {error}"));
    Err(Rejection::new(ErrorClass::InvalidEnvelope, message))
}

/// Checks what the envelope's types cannot: the org id is the first segment of every key,
/// and the sync id tells snapshots apart.
fn check_envelope(envelope: Envelope<'_>) -> Result<Envelope<'_>, Rejection> {
    let message = if envelope.org_id.is_empty() || envelope.org_id.contains('/') {
        "field org_id is empty or contains '/', so no key can be built from it"
    } else if envelope.sync_id.is_empty() {
        "field sync_id is empty, so the event belongs to no sync"
    } else {
        return Ok(envelope);
    };
    Err(Rejection::new(ErrorClass::InvalidEnvelope, message))
}

fn unknown_object(name: &str) -> Rejection {
    let shown: String = name.chars().take(64).collect();
    let known: Vec<&str> = SfObject::KNOWN.iter().map(|o| o.as_str()).collect();
    let message = format!(
        "field object is {shown:?}, which seatwatch does not read; expected one of {}",
        known.join(", ")
    );
    Rejection::new(ErrorClass::UnknownObject, message)
}

/// Parses a Salesforce record of `object`, or explains which field is at fault.
pub fn parse_record<T: DeserializeOwned>(object: SfObject, raw: &str) -> Result<T, Rejection> {
    serde_json::from_str(raw).map_err(|error| {
        let message = match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(fields)) => explain(record_fields(object), &fields)
                .map(|problem| format!("{object} record: {problem}"))
                .unwrap_or_else(|| format!("{object} record does not parse: {error}")),
            Ok(other) => format!(
                "{object} record is a JSON {}, not an object",
                type_name(&other)
            ),
            Err(syntax) => format!("{object} record is not JSON: {syntax}"),
        };
        Rejection::new(ErrorClass::InvalidRecord, message)
    })
}

/// The first field of `shape` that `fields` gets wrong, as a sentence.
fn explain(shape: &[Field], fields: &Map<String, Value>) -> Option<String> {
    shape.iter().find_map(|field| check(field, fields))
}

fn check(field: &Field, fields: &Map<String, Value>) -> Option<String> {
    let name = field.name;
    let value = match lookup(fields, name) {
        Lookup::Found(Value::Null) | Lookup::Missing if field.required => {
            return Some(format!("required field {name} is missing or null"));
        }
        Lookup::Found(value) => value,
        Lookup::Missing | Lookup::ParentAbsent => return None,
    };
    if value.is_null() {
        return None;
    }

    let fits = match field.expect {
        Expect::Text => value.is_string(),
        Expect::Integer => value.is_i64(),
        Expect::Count => value.is_u64(),
        Expect::Boolean => value.is_boolean(),
        Expect::Object => value.is_object(),
        Expect::Any => true,
        Expect::Date => return check_text(name, value, "a date like 2026-12-31", is_date),
        Expect::SfDateTime => {
            let wanted = "a datetime like 2024-05-01T12:34:56.000+0000";
            return check_text(name, value, wanted, is_sf_datetime);
        }
        Expect::Rfc3339 => {
            let wanted = "an RFC 3339 datetime like 2024-05-01T12:34:56Z";
            return check_text(name, value, wanted, is_rfc3339);
        }
        Expect::OneOf(choices) => {
            let wanted = format!("one of {}", choices.join(", "));
            return check_text(name, value, &wanted, |text| choices.contains(&text));
        }
    };
    (!fits).then(|| {
        format!(
            "field {name} is a JSON {}, expected {}",
            type_name(value),
            expected_name(field.expect)
        )
    })
}

/// Checks a field that must be a string of a given form; the value is shown because it is a
/// date or a fixed word, never personal data.
fn check_text(
    name: &str,
    value: &Value,
    wanted: &str,
    valid: impl Fn(&str) -> bool,
) -> Option<String> {
    match value.as_str() {
        Some(text) if valid(text) => None,
        Some(text) => {
            let shown: String = text.chars().take(64).collect();
            Some(format!("field {name} is {shown:?}, expected {wanted}"))
        }
        None => Some(format!(
            "field {name} is a JSON {}, expected {wanted}",
            type_name(value)
        )),
    }
}

fn is_date(text: &str) -> bool {
    parse_date(text).is_ok()
}

fn is_sf_datetime(text: &str) -> bool {
    parse_datetime(text).is_ok()
}

fn is_rfc3339(text: &str) -> bool {
    text.parse::<DateTime<Utc>>().is_ok()
}

enum Lookup<'a> {
    Found(&'a Value),
    Missing,
    /// A parent object along the path is absent or null, so the field cannot be there.
    ParentAbsent,
}

fn lookup<'a>(fields: &'a Map<String, Value>, path: &str) -> Lookup<'a> {
    let mut current = fields;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let value = current.get(part);
        if parts.peek().is_none() {
            return value.map_or(Lookup::Missing, Lookup::Found);
        }
        match value {
            Some(Value::Object(inner)) => current = inner,
            _ => return Lookup::ParentAbsent,
        }
    }
    Lookup::Missing
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "decimal number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn expected_name(expect: Expect) -> &'static str {
    match expect {
        Expect::Text => "a string",
        Expect::Integer => "an integer",
        Expect::Count => "a non-negative integer",
        Expect::Boolean => "true or false",
        Expect::Object => "an object",
        _ => "something else",
    }
}

#[cfg(test)]
mod tests {
    use seatwatch_schemas::salesforce::{UserLicenseRecord, UserRecord};
    use seatwatch_schemas::RawEnvelope;

    use super::*;

    fn record_error<T: DeserializeOwned + std::fmt::Debug>(object: SfObject, raw: &str) -> String {
        let rejection = parse_record::<T>(object, raw).unwrap_err();
        assert_eq!(rejection.class, ErrorClass::InvalidRecord);
        rejection.message
    }

    #[test]
    fn wrong_type_names_the_field() {
        let message = record_error::<UserLicenseRecord>(
            SfObject::UserLicense,
            r#"{"Id":"100","Name":"S","TotalLicenses":"ten","UsedLicenses":1}"#,
        );
        assert_eq!(
            message,
            "UserLicense record: field TotalLicenses is a JSON string, expected an integer"
        );
    }

    #[test]
    fn nested_bad_type_and_bad_datetime_are_named() {
        let message = record_error::<UserRecord>(
            SfObject::User,
            r#"{"Id":"005","Username":"u","IsActive":true,"Profile":{"UserLicense":{"Name":7}}}"#,
        );
        assert!(message.contains("Profile.UserLicense.Name"), "{message}");
        let message = record_error::<UserRecord>(
            SfObject::User,
            r#"{"Id":"005","Username":"u","IsActive":true,"LastLoginDate":"yesterday"}"#,
        );
        assert!(
            message.contains("LastLoginDate is \"yesterday\""),
            "{message}"
        );
    }

    #[test]
    fn the_borrowed_envelope_reads_what_the_published_one_reads() {
        let documents: [&[u8]; 9] = [
            br#"{"org_id":"o","sync_id":"s","object":"User","fetched_at":"2024-05-01T12:00:00Z",
                 "api_version":"62.0","kind":"record","record":{"Id":"005"}}"#,
            br#"{"org_id":"o\u0041","sync_id":"s\n","object":"User",
                 "fetched_at":"2024-05-01T12:00:00Z","api_version":"62.0","record":null}"#,
            br#"{"org_id":"o","sync_id":"s","object":"User","fetched_at":"2024-05-01T12:00:00Z",
                 "api_version":"62.0","kind":"snapshot_end",
                 "snapshot":{"mode":"full","records":3},"extra":1}"#,
            br#"{"org_id":"o","sync_id":"s","object":"User","fetched_at":"2024-05-01T12:00:00Z"}"#,
            br#"{"org_id":"o","sync_id":"s","object":"Account",
                 "fetched_at":"2024-05-01T12:00:00Z","api_version":"62.0"}"#,
            br#"{"org_id":"o","sync_id":"s","object":"User","fetched_at":"noon",
                 "api_version":"62.0"}"#,
            br#"{"org_id":"o","sync_id":"s","object":"User","fetched_at":"2024-05-01T12:00:00Z",
                 "api_version":"62.0","snapshot":{"mode":"full","records":-1}}"#,
            br#"{"org_id":7,"sync_id":"s","object":"User","fetched_at":"2024-05-01T12:00:00Z",
                 "api_version":"62.0"}"#,
            br#"[1, 2]"#,
        ];
        for bytes in documents {
            let published = serde_json::from_slice::<RawEnvelope>(bytes);
            let borrowed = serde_json::from_slice::<Envelope<'_>>(bytes);
            let text = String::from_utf8_lossy(bytes);
            assert_eq!(published.is_ok(), borrowed.is_ok(), "{text}");
            let (Ok(published), Ok(borrowed)) = (published, borrowed) else {
                continue;
            };
            assert_eq!(published.org_id, borrowed.org_id, "{text}");
            assert_eq!(published.sync_id, borrowed.sync_id, "{text}");
            assert_eq!(published.object, borrowed.object, "{text}");
            assert_eq!(published.fetched_at, borrowed.fetched_at, "{text}");
            assert_eq!(published.api_version, borrowed.api_version, "{text}");
            assert_eq!(published.kind, borrowed.kind, "{text}");
            assert_eq!(
                published.record.as_deref().map(RawValue::get),
                borrowed.record.map(RawValue::get),
                "{text}"
            );
            assert_eq!(published.snapshot, borrowed.snapshot, "{text}");
            assert_eq!(published.key(Some("x")), borrowed.key(Some("x")), "{text}");
        }
    }

    #[test]
    fn envelope_failures_are_classified() {
        let class = |bytes: &[u8]| parse_envelope(Some(bytes)).unwrap_err().class;
        assert_eq!(class(b"not json"), ErrorClass::InvalidJson);
        assert_eq!(class(b"[1,2]"), ErrorClass::InvalidEnvelope);
        assert_eq!(
            class(br#"{"org_id":"o","sync_id":"s","object":"Account"}"#),
            ErrorClass::UnknownObject
        );
        let bad_time = parse_envelope(Some(
            br#"{"org_id":"o","sync_id":"s","object":"User","fetched_at":"noon",
                 "api_version":"62.0"}"#,
        ))
        .unwrap_err();
        assert_eq!(bad_time.class, ErrorClass::InvalidEnvelope);
        assert!(
            bad_time.message.contains("fetched_at"),
            "{}",
            bad_time.message
        );
        let slashed = parse_envelope(Some(
            br#"{"org_id":"a/b","sync_id":"s","object":"User",
                 "fetched_at":"2024-05-01T12:00:00Z","api_version":"62.0"}"#,
        ))
        .unwrap_err();
        assert!(slashed.message.contains("org_id"), "{}", slashed.message);

        // A Latin-1 byte in an otherwise good envelope: not UTF-8, so not JSON.
        let mut latin1 = br#"{"org_id":"o","sync_id":"s","object":"User",
                 "fetched_at":"2024-05-01T12:00:00Z","api_version":"62.0",
                 "record":{"Id":"005","Username":"J"#
            .to_vec();
        latin1.extend(b"\xe9r\xf4me\"}}");
        let not_utf8 = parse_envelope(Some(&latin1)).unwrap_err();
        assert_eq!(not_utf8.class, ErrorClass::InvalidJson);
        assert!(not_utf8.message.contains("unicode"), "{}", not_utf8.message);
    }
}
