//! The Rust types and the published `.avsc` schemas agree, every contract documents every
//! field and carries the org id, and the single-object framing is checked before any
//! payload byte is trusted.

use std::collections::BTreeMap;

use seatwatch_schemas::avro::{AvroRecord, HEADER_LEN};
use seatwatch_schemas::*;

fn license() -> LicenseState {
    LicenseState {
        org_id: "00D5g000004XyZwEAK".into(),
        kind: LicenseKind::Package,
        license_id: "0505g0000000002AAA".into(),
        name: "northdocs".into(),
        label: "northdocs".into(),
        definition_key: None,
        status: LicenseStatus::Active,
        total: None,
        used: 312,
        available: None,
        utilization: None,
        expires_at: Some(1_767_139_200_000),
        observed_at: 1_714_566_896_000,
        sync_id: "0190f0a0-0000-7000-8000-000000000001".into(),
    }
}

fn user() -> UserState {
    UserState {
        org_id: "00D5g000004XyZwEAK".into(),
        user_id: "0055g00000AbCdEAAV".into(),
        username: "integration.user@northwind-demo.example".into(),
        active: true,
        user_type: "Standard".into(),
        profile_name: Some("System Administrator".into()),
        user_license_id: Some("1005g0000000001AAA".into()),
        user_license: Some("Salesforce".into()),
        license_definition_key: Some("SFDC".into()),
        last_login_at: None,
        last_activity_at: None,
        permission_set_licenses: vec!["0PL5g0000000001GAA".into()],
        package_licenses: vec![],
        observed_at: 1_714_566_896_000,
        sync_id: "s".into(),
    }
}

fn sync_status() -> SyncStatus {
    SyncStatus {
        org_id: "00D5g000004XyZwEAK".into(),
        org_name: "northwind".into(),
        sync_id: "s".into(),
        outcome: SyncOutcome::PausedForQuota,
        started_at: 1,
        finished_at: 2,
        last_success_at: None,
        records: BTreeMap::from([("User".into(), 1200), ("UserLicense".into(), 7)]),
        api_calls: 9,
        api_used: Some(10_229),
        api_limit: Some(115_000),
        error_class: Some("quota".into()),
        error_message: Some("this run used more than 25% of the daily allowance".into()),
    }
}

fn alert() -> Alert {
    Alert {
        fingerprint: "3f2a".into(),
        rule: "utilization".into(),
        severity: Severity::Critical,
        status: AlertStatus::Resolved,
        org_id: "00D5g000004XyZwEAK".into(),
        pool: Some("Salesforce".into()),
        labels: BTreeMap::from([("pool".into(), "Salesforce".into())]),
        summary: "Salesforce pool at 96.7% (290 of 300)".into(),
        value: 0.967,
        threshold: 0.9,
        starts_at: 10,
        ends_at: Some(20),
        sent_at: 20,
    }
}

fn recommendation() -> Recommendation {
    Recommendation {
        org_id: "00D5g000004XyZwEAK".into(),
        user_id: Some("0055g00000AbCdEAAV".into()),
        username: Some("j.doe@northwind-demo.example".into()),
        license_kind: LicenseKind::User,
        license_id: "1005g0000000001AAA".into(),
        license_name: "Salesforce".into(),
        action: RecommendationAction::Reclaim,
        evidence: RecommendationEvidence {
            last_login_at: Some(1_702_000_000_000),
            days_idle: Some(142),
            active: true,
            assignments: vec!["0PL5g0000000001GAA".into(), "1005g0000000001AAA".into()],
            reason: "has not logged in for 142 days".into(),
        },
        estimated_monthly_saving: Some(165.0),
        currency: "USD".into(),
        confidence: 0.9,
        observed_at: 1_714_566_896_000,
    }
}

fn round_trip<T: AvroRecord + PartialEq + std::fmt::Debug>(value: T) {
    let bytes = value.to_avro().expect("encodes");
    assert_eq!(&bytes[..2], &[0xC3, 0x01]);
    assert_eq!(T::from_avro(&bytes).expect("decodes"), value);
}

#[test]
fn every_record_round_trips_through_its_schema() {
    round_trip(license());
    round_trip(LicenseState {
        total: Some(300),
        available: Some(10),
        utilization: Some(0.9667),
        ..license()
    });
    round_trip(user());
    round_trip(UserState {
        last_login_at: Some(5),
        last_activity_at: Some(7),
        active: false,
        ..user()
    });
    round_trip(sync_status());
    round_trip(alert());
    round_trip(Alert {
        ends_at: None,
        pool: None,
        status: AlertStatus::Firing,
        ..alert()
    });
    round_trip(recommendation());
    round_trip(Recommendation {
        user_id: None,
        username: None,
        action: RecommendationAction::ResizePool,
        evidence: RecommendationEvidence {
            last_login_at: None,
            days_idle: None,
            active: false,
            assignments: vec![],
            reason: "40 of 300 seats unassigned for 90 days".into(),
        },
        estimated_monthly_saving: None,
        ..recommendation()
    });
}

#[test]
fn recommendation_keys_follow_the_documented_format() {
    assert_eq!(
        recommendation().key(),
        "00D5g000004XyZwEAK/0055g00000AbCdEAAV/1005g0000000001AAA"
    );
    assert_eq!(
        recommendation_key("00Dx", None, "100x"),
        "00Dx/-/100x",
        "a pool-level recommendation has no user"
    );
}

#[test]
fn an_action_added_later_reads_as_unknown() {
    // What a reader holding today's schema does with a value from a future version that
    // knows one more action: Avro resolution picks the enum's default.
    let codec = Recommendation::codec();
    let future = Recommendation::SCHEMA.replace(
        r#""RESIZE_POOL", "UNKNOWN"]"#,
        r#""RESIZE_POOL", "UNKNOWN", "TRANSFER"]"#,
    );
    assert_ne!(future, Recommendation::SCHEMA);
    let future = apache_avro::Schema::parse_str(&future).unwrap();
    let mut value = apache_avro::to_value(recommendation())
        .unwrap()
        .resolve(&future)
        .unwrap();
    if let apache_avro::types::Value::Record(fields) = &mut value {
        let action = fields
            .iter_mut()
            .find(|(name, _)| name == "action")
            .unwrap();
        action.1 = apache_avro::types::Value::Enum(4, "TRANSFER".into());
    }
    let datum = apache_avro::to_avro_datum(&future, value).unwrap();
    let read =
        apache_avro::from_avro_datum(&future, &mut &datum[..], Some(codec.schema())).unwrap();
    let read: Recommendation = apache_avro::from_value(&read).unwrap();
    assert_eq!(read.action, RecommendationAction::Unknown);
}

#[test]
fn fingerprints_are_the_ones_stock_avro_libraries_compute() {
    // The single-object header as fastavro 1.13 computes it from each .avsc
    // (`fingerprint(to_parsing_canonical_form(parse_schema(avsc)), "CRC-64-AVRO")`, which
    // prints the bytes in header order); Java's `BinaryMessageDecoder` agrees with it.
    let hex = |print: [u8; 8]| -> String { print.iter().map(|b| format!("{b:02x}")).collect() };
    assert_eq!(hex(SyncStatus::codec().fingerprint()), "41c67cb94dd1e572");
    assert_eq!(hex(LicenseState::codec().fingerprint()), "1538b1e2f65617d1");
    // UserState v2 (`last_activity_at`); v1 was be6349eae8737c52, still decoded.
    assert_eq!(hex(UserState::codec().fingerprint()), "d2d3fc6ecfccee42");
    assert_eq!(hex(Alert::codec().fingerprint()), "d83ca65fdc70941c");
    assert_eq!(
        hex(Recommendation::codec().fingerprint()),
        "7c2dfdfd2c46ec79"
    );
}

#[test]
fn the_datum_is_what_apache_avros_single_object_writer_writes() {
    // apache-avro's writer is the reference for the datum; its header differs because it
    // fingerprints a canonical form that departs from the specification.
    let codec = LicenseState::codec();
    let mut reference = Vec::new();
    let mut writer =
        apache_avro::GenericSingleObjectWriter::new_with_capacity(codec.schema(), 64).unwrap();
    let value = apache_avro::to_value(license())
        .unwrap()
        .resolve(codec.schema())
        .unwrap();
    writer.write_value(value, &mut reference).unwrap();
    let ours = license().to_avro().unwrap();
    assert_eq!(&ours[..2], &reference[..2]);
    assert_eq!(&ours[HEADER_LEN..], &reference[HEADER_LEN..]);

    // Values written by earlier seatwatch builds carry apache-avro's header and still read.
    assert_eq!(
        &reference[2..HEADER_LEN],
        &seatwatch_schemas::avro::legacy_fingerprint(codec.schema())
    );
    assert_eq!(LicenseState::from_avro(&reference).unwrap(), license());
}

#[test]
fn foreign_truncated_and_mismatched_bytes_are_errors_not_panics() {
    let bytes = user().to_avro().unwrap();

    assert!(matches!(
        UserState::from_avro(&bytes[..5]),
        Err(AvroError::Truncated { len: 5 })
    ));
    assert!(matches!(
        UserState::from_avro(b"{\"json\":1}"),
        Err(AvroError::NotSingleObject)
    ));
    assert!(matches!(
        LicenseState::from_avro(&bytes),
        Err(AvroError::UnknownFingerprint { .. })
    ));
    for cut in HEADER_LEN..bytes.len() {
        assert!(
            UserState::from_avro(&bytes[..cut]).is_err(),
            "cut at {cut} decoded"
        );
    }
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(UserState::from_avro(&trailing).is_err());
}

/// Every record and every field of `schema`, nested ones included, has a doc.
fn assert_documented(schema: &serde_json::Value, path: &str) {
    match schema {
        serde_json::Value::Array(branches) => {
            for branch in branches {
                assert_documented(branch, path);
            }
        }
        serde_json::Value::Object(object) => {
            let kind = object
                .get("type")
                .and_then(|t| t.as_str())
                .unwrap_or_default();
            if kind == "record" {
                let doc = object.get("doc").and_then(|d| d.as_str());
                assert!(doc.is_some(), "record {path} has no doc");
            }
            for field in object
                .get("fields")
                .and_then(|f| f.as_array())
                .into_iter()
                .flatten()
            {
                let field_path = format!("{path}.{}", field["name"].as_str().unwrap());
                assert!(field["doc"].is_string(), "field {field_path} has no doc");
                assert_documented(&field["type"], &field_path);
            }
            for inner in ["items", "values"] {
                if let Some(inner) = object.get(inner) {
                    assert_documented(inner, path);
                }
            }
            if let Some(inner @ serde_json::Value::Object(_)) = object.get("type") {
                assert_documented(inner, path);
            }
        }
        _ => {}
    }
}

#[test]
fn every_field_of_every_schema_has_a_doc() {
    for contract in contracts::all() {
        let json: serde_json::Value = serde_json::from_str(contract.schema).unwrap();
        assert_documented(&json, contract.name);
    }
}

#[test]
fn every_record_carries_its_org_id() {
    for contract in contracts::all() {
        let json: serde_json::Value = serde_json::from_str(contract.schema).unwrap();
        let org_id = json["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "org_id")
            .unwrap_or_else(|| panic!("{} has no org_id field", contract.name));
        assert_eq!(org_id["type"], "string", "{}", contract.name);
    }
}

#[test]
fn a_payload_announcing_more_than_it_holds_is_refused_before_decoding() {
    // A valid header, then a UserState whose first string claims ~500 MB and an array
    // claiming 500 million items: apache-avro alone would try to reserve memory for them.
    let header = &user().to_avro().unwrap()[..HEADER_LEN];
    let huge = [0x80, 0xd0, 0xac, 0xf3, 0x03]; // 500,000,000 as an Avro long
    let huge_string = [&huge[..], b"A"].concat();
    let huge_array = [
        &[0x02, b'A', 0x02, b'A', 0x02, b'A'][..], // org_id, user_id, username
        &[0x01],                                   // active
        &[0x02, b'A'],                             // user_type
        &[0x00; 5],                                // five nullable fields, null
        &huge,                                     // permission_set_licenses: 500M items
        &[0x02, b'A'],
    ]
    .concat();
    for payload in [huge_string, huge_array] {
        let bytes = [header, &payload[..]].concat();
        assert!(matches!(
            UserState::from_avro(&bytes),
            Err(AvroError::Decode(_))
        ));
    }
}
