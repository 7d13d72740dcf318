//! Property tests of the decoders `fuzz.rs` does not reach: Salesforce's datetimes and
//! dates, the raw event envelope, the typed Salesforce records, and the bare Avro datum
//! path (no header) of every record type.
//!
//! - Nothing panics on arbitrary strings or bytes, nor on near-valid input: valid JSON
//!   with a field of another type or missing, valid text cut short or with a byte flipped.
//! - Round trips: `format_datetime` and `format_soql_datetime` parse back to the instant
//!   (millisecond precision), `parse_date` reads back what it formats, and an envelope
//!   serialises and parses back with its record's JSON bytes untouched.
//!
//! Each property runs 64 cases by default (a second or two); set `PROPTEST_CASES=N` for
//! more, e.g. `PROPTEST_CASES=10000 cargo test -p seatwatch-schemas --test decoder_props`.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use proptest::prelude::*;
use proptest::sample::Index;
use seatwatch_schemas::avro::AvroRecord;
use seatwatch_schemas::salesforce::{
    format_datetime, format_soql_datetime, parse_date, parse_datetime, LoginHistoryRecord,
    PackageLicenseRecord, PermissionSetLicenseAssignRecord, PermissionSetLicenseRecord, RecordId,
    UserLicenseRecord, UserPackageLicenseRecord, UserRecord,
};
use seatwatch_schemas::{
    Alert, EnvelopeKind, LicenseState, RawEnvelope, Recommendation, SfObject, SnapshotEnd,
    SnapshotMode, SyncStatus, UserState,
};
use serde_json::value::RawValue;
use serde_json::{json, Value};

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// An instant in years 1000 to 9999 (four-digit years), to the millisecond.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (-30_610_224_000_000i64..253_402_300_799_999)
        .prop_map(|ms| Utc.timestamp_millis_opt(ms).unwrap())
}

/// Any JSON value, small.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,16}".prop_map(Value::String),
        "[0-9T:.+Z-]{0,28}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[A-Za-z_]{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Damages JSON text: a field retyped or removed (for objects), cut short, a byte flipped.
#[derive(Debug, Clone)]
enum Damage {
    Retype(Index, Value),
    Remove(Index),
    Cut(Index),
    Flip(Index, u8),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<Index>(), json_value()).prop_map(|(i, v)| Damage::Retype(i, v)),
        any::<Index>().prop_map(Damage::Remove),
        any::<Index>().prop_map(Damage::Cut),
        (any::<Index>(), 1..=255u8).prop_map(|(i, x)| Damage::Flip(i, x)),
    ]
}

fn damaged(valid: &Value, damage: &Damage) -> Vec<u8> {
    let text = serde_json::to_vec(valid).unwrap();
    let mut value = valid.clone();
    let key_at = |map: &serde_json::Map<String, Value>, i: &Index| {
        (!map.is_empty()).then(|| map.keys().nth(i.index(map.len())).unwrap().clone())
    };
    match (damage, value.as_object_mut()) {
        (Damage::Retype(i, new), Some(map)) => {
            if let Some(key) = key_at(map, i) {
                map.insert(key, new.clone());
            }
            serde_json::to_vec(&value).unwrap()
        }
        (Damage::Remove(i), Some(map)) => {
            if let Some(key) = key_at(map, i) {
                map.remove(&key);
            }
            serde_json::to_vec(&value).unwrap()
        }
        (Damage::Cut(i), _) => text[..i.index(text.len() + 1)].to_vec(),
        (Damage::Flip(i, x), _) => {
            let mut text = text;
            let at = i.index(text.len());
            text[at] ^= x;
            text
        }
        _ => text,
    }
}

fn envelope_json() -> impl Strategy<Value = Value> {
    (
        "00D[A-Za-z0-9]{15}",
        "[a-z0-9-]{1,36}",
        prop::sample::select(SfObject::KNOWN.to_vec()),
        instant(),
        "[0-9]{2}\\.0",
        any::<bool>(),
        json_value(),
        (any::<bool>(), any::<u64>()),
    )
        .prop_map(
            |(org, sync, object, at, version, marker, record, (full, records))| {
                let mut v = json!({
                    "org_id": org,
                    "sync_id": sync,
                    "object": object.as_str(),
                    "fetched_at": at.to_rfc3339(),
                    "api_version": version,
                });
                if marker {
                    v["kind"] = json!("snapshot_end");
                    v["snapshot"] = json!({
                        "mode": if full { "full" } else { "incremental" },
                        "records": records,
                    });
                } else {
                    v["kind"] = json!("record");
                    v["record"] = record;
                }
                v
            },
        )
}

/// A Salesforce record of `object` with every field the typed view reads.
fn record_json(object: SfObject) -> Value {
    match object {
        SfObject::UserLicense => json!({"Id": "100x", "Name": "Salesforce", "MasterLabel": "S",
            "LicenseDefinitionKey": "SFDC", "Status": "Active", "TotalLicenses": 10, "UsedLicenses": 9}),
        SfObject::PermissionSetLicense => json!({"Id": "0PLx", "DeveloperName": "D",
            "MasterLabel": "M", "PermissionSetLicenseKey": "K", "Status": "Active",
            "TotalLicenses": 5, "UsedLicenses": 1, "ExpirationDate": "2026-12-31"}),
        SfObject::PackageLicense => json!({"Id": "050x", "NamespacePrefix": "ns",
            "AllowedLicenses": -1, "UsedLicenses": 3, "Status": "Active",
            "ExpirationDate": "2026-12-31T00:00:00.000+0000"}),
        SfObject::PermissionSetLicenseAssign => json!({"Id": "2LAx", "AssigneeId": "005x",
            "PermissionSetLicenseId": "0PLx", "IsRevoked": false}),
        SfObject::UserPackageLicense => json!({"Id": "051x", "UserId": "005x",
            "PackageLicenseId": "050x", "IsRevoked": null}),
        SfObject::User => json!({"Id": "005x", "Username": "u@x.example", "IsActive": true,
            "UserType": "Standard", "LastLoginDate": "2024-05-01T12:34:56.000+0000",
            "Profile": {"Name": "P", "UserLicenseId": "100x",
                        "UserLicense": {"Name": "Salesforce", "LicenseDefinitionKey": "SFDC"}}}),
        SfObject::LoginHistory => json!({"Id": "0Yax", "UserId": "005x",
            "LoginTime": "2024-05-01T12:34:56.000+0000", "Status": "Success",
            "Application": "Browser", "LoginType": "Application",
            "LoginSubType": "UsernamePasswordUiLogin", "LoginUrl": "x.my.salesforce.com",
            "SourceIp": "203.0.113.7"}),
    }
}

/// Parses `bytes` as every typed Salesforce record; only a panic would be a finding.
fn parse_as_every_record(bytes: &[u8]) {
    let _ = serde_json::from_slice::<UserLicenseRecord>(bytes);
    let _ = serde_json::from_slice::<PermissionSetLicenseRecord>(bytes);
    let _ = serde_json::from_slice::<PackageLicenseRecord>(bytes);
    let _ = serde_json::from_slice::<PermissionSetLicenseAssignRecord>(bytes);
    let _ = serde_json::from_slice::<UserPackageLicenseRecord>(bytes);
    let _ = serde_json::from_slice::<UserRecord>(bytes);
    let _ = serde_json::from_slice::<LoginHistoryRecord>(bytes);
    let _ = serde_json::from_slice::<RecordId>(bytes);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn datetimes_and_dates_never_panic(text in ".{0,40}", valid in instant(), cut in any::<Index>()) {
        let _ = parse_datetime(&text);
        let _ = parse_date(&text);
        for formatted in [format_datetime(valid), format_soql_datetime(valid), valid.to_rfc3339()] {
            let short = &formatted[..cut.index(formatted.len() + 1)];
            if let Ok(at) = parse_datetime(short) {
                // A prefix that still parses keeps the date and time it names.
                prop_assert!(short.len() >= "2024-05-01T12:34:56Z".len() - 1, "{short:?} -> {at}");
            }
            let _ = parse_date(short);
        }
    }

    #[test]
    fn salesforce_datetimes_round_trip(at in instant(), offset_minutes in -(14 * 60)..=(14 * 60i32)) {
        prop_assert_eq!(parse_datetime(&format_datetime(at)).unwrap(), at);
        prop_assert_eq!(parse_datetime(&format_soql_datetime(at)).unwrap(), at);
        // The same instant at another offset, written Salesforce's way (no colon).
        let zone = chrono::FixedOffset::east_opt(offset_minutes * 60).unwrap();
        let local = at.with_timezone(&zone).format("%Y-%m-%dT%H:%M:%S%.3f%z").to_string();
        prop_assert_eq!(parse_datetime(&local).unwrap(), at, "{}", local);
        let date: NaiveDate = at.date_naive();
        prop_assert_eq!(parse_date(&date.format("%Y-%m-%d").to_string()).unwrap(), date);
    }

    #[test]
    fn envelopes_never_panic_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = serde_json::from_slice::<RawEnvelope>(&bytes);
        parse_as_every_record(&bytes);
    }

    #[test]
    fn near_valid_envelopes_never_panic(valid in envelope_json(), damage in damage()) {
        let bytes = damaged(&valid, &damage);
        if let Ok(envelope) = serde_json::from_slice::<RawEnvelope>(&bytes) {
            // Whatever parses serialises again and parses to the same thing.
            let again = serde_json::to_vec(&envelope).unwrap();
            let back: RawEnvelope = serde_json::from_slice(&again).unwrap();
            prop_assert_eq!(back.org_id, envelope.org_id);
            prop_assert_eq!(back.fetched_at, envelope.fetched_at);
            prop_assert_eq!(
                back.record.map(|r| r.get().to_owned()),
                envelope.record.map(|r| r.get().to_owned())
            );
        }
    }

    #[test]
    fn envelopes_round_trip_with_record_bytes_untouched(
        valid in envelope_json(),
        spacing in prop::sample::select(vec!["", " ", "\n  "]),
    ) {
        let mut envelope: RawEnvelope = serde_json::from_value(valid.clone()).unwrap();
        if envelope.kind == EnvelopeKind::Record {
            // Salesforce's own spacing and number text are kept byte for byte.
            let text = format!("{{{spacing}\"Id\":{spacing}\"005x\",\"N\":1.50{spacing}}}");
            envelope.record = Some(RawValue::from_string(text).unwrap());
        }
        let json = serde_json::to_string(&envelope).unwrap();
        let back: RawEnvelope = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back.org_id, &envelope.org_id);
        prop_assert_eq!(&back.sync_id, &envelope.sync_id);
        prop_assert_eq!(back.object, envelope.object);
        prop_assert_eq!(back.fetched_at, envelope.fetched_at);
        prop_assert_eq!(back.kind, envelope.kind);
        prop_assert_eq!(back.snapshot, envelope.snapshot.clone());
        prop_assert_eq!(
            back.record.as_ref().map(|r| r.get()),
            envelope.record.as_ref().map(|r| r.get())
        );
        if let Some(SnapshotEnd { mode, .. }) = &envelope.snapshot {
            prop_assert!(matches!(mode, SnapshotMode::Full | SnapshotMode::Incremental));
        }
    }

    #[test]
    fn near_valid_salesforce_records_never_panic(
        object in prop::sample::select(SfObject::KNOWN.to_vec()),
        damage in damage(),
    ) {
        let bytes = damaged(&record_json(object), &damage);
        parse_as_every_record(&bytes);
    }

    #[test]
    fn bare_avro_datums_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = LicenseState::codec().decode_datum::<LicenseState>(&bytes);
        let _ = UserState::codec().decode_datum::<UserState>(&bytes);
        let _ = SyncStatus::codec().decode_datum::<SyncStatus>(&bytes);
        let _ = Alert::codec().decode_datum::<Alert>(&bytes);
        let _ = Recommendation::codec().decode_datum::<Recommendation>(&bytes);
    }
}

#[test]
fn every_record_fixture_parses_as_its_type() {
    // The generators' valid inputs are valid: otherwise the damage properties prove little.
    for object in SfObject::KNOWN {
        let bytes = serde_json::to_vec(&record_json(object)).unwrap();
        let ok = match object {
            SfObject::UserLicense => serde_json::from_slice::<UserLicenseRecord>(&bytes).is_ok(),
            SfObject::PermissionSetLicense => {
                serde_json::from_slice::<PermissionSetLicenseRecord>(&bytes).is_ok()
            }
            SfObject::PackageLicense => {
                serde_json::from_slice::<PackageLicenseRecord>(&bytes).is_ok()
            }
            SfObject::PermissionSetLicenseAssign => {
                serde_json::from_slice::<PermissionSetLicenseAssignRecord>(&bytes).is_ok()
            }
            SfObject::UserPackageLicense => {
                serde_json::from_slice::<UserPackageLicenseRecord>(&bytes).is_ok()
            }
            SfObject::User => serde_json::from_slice::<UserRecord>(&bytes).is_ok(),
            SfObject::LoginHistory => serde_json::from_slice::<LoginHistoryRecord>(&bytes).is_ok(),
        };
        assert!(ok, "{object}");
    }
}
