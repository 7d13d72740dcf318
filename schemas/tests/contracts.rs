//! The Rust types and the published `.avsc` schemas agree, and the single-object framing
//! is checked before any payload byte is trusted.

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
}

#[test]
fn fingerprint_matches_apache_avros_single_object_writer() {
    // apache-avro's own single-object writer is the reference for the header.
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
    assert_eq!(&ours[..HEADER_LEN], &reference[..HEADER_LEN]);
    assert_eq!(ours, reference);
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

#[test]
fn every_field_of_every_schema_has_a_doc() {
    for schema in [
        LicenseState::SCHEMA,
        UserState::SCHEMA,
        SyncStatus::SCHEMA,
        Alert::SCHEMA,
    ] {
        let json: serde_json::Value = serde_json::from_str(schema).unwrap();
        assert!(json["doc"].is_string());
        for field in json["fields"].as_array().unwrap() {
            assert!(
                field["doc"].is_string(),
                "field {} has no doc",
                field["name"]
            );
        }
    }
}
