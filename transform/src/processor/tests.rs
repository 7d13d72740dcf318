//! Tests of the processor's rules, fed with real-shaped Salesforce records.

use chrono::{DateTime, Utc};
use prometheus::Registry;
use seatwatch_schemas::avro::AvroRecord;
use seatwatch_schemas::{LicenseStatus, RawEnvelope, SnapshotEnd};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::*;
use crate::dlq::{
    HEADER_ERROR_CLASS, HEADER_ERROR_MESSAGE, HEADER_SOURCE_OFFSET, HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC, HEADER_STAGE, HEADER_TRUNCATED_FROM,
};

const ORG: &str = "00D5g000004XyZwEAK";
const OTHER_ORG: &str = "00D5g000007OtHeRAA";
const RAW_TOPIC: &str = "test.salesforce.usage.raw";
/// 2024-05-01T12:00:00Z, the `fetched_at` of the first test sync; each later one is an
/// hour after the one before.
const FETCHED_MS: i64 = 1_714_564_800_000;
const HOUR_MS: i64 = 3_600_000;

macro_rules! fixture {
    ($file:literal) => {
        records(include_str!(concat!(
            "../../../fixtures/salesforce/",
            $file
        )))
    };
}

fn records(text: &str) -> Vec<Value> {
    let document: Value = serde_json::from_str(text).unwrap();
    document["body"]["records"].as_array().unwrap().clone()
}

fn user_licenses() -> Vec<Value> {
    let mut all = fixture!("query_userlicense_page1.json");
    all.extend(fixture!("query_userlicense_page2.json"));
    all
}

/// One sync of one org, as ingest would write it.
#[derive(Clone, Copy)]
struct Sync {
    org: &'static str,
    id: &'static str,
    fetched_ms: i64,
}

const SYNC_1: Sync = Sync {
    org: ORG,
    id: "sync-1",
    fetched_ms: FETCHED_MS,
};
const SYNC_2: Sync = Sync {
    org: ORG,
    id: "sync-2",
    fetched_ms: FETCHED_MS + HOUR_MS,
};
const SYNC_3: Sync = Sync {
    org: ORG,
    id: "sync-3",
    fetched_ms: FETCHED_MS + 2 * HOUR_MS,
};

impl Sync {
    fn envelope(
        self,
        object: SfObject,
        record: Option<&Value>,
        end: Option<SnapshotEnd>,
    ) -> Vec<u8> {
        let record = record.map(|r| r.to_string());
        self.envelope_with_text(object, record, end)
    }

    /// An envelope whose record, if any, has the JSON text `record`.
    fn envelope_with_text(
        self,
        object: SfObject,
        record: Option<String>,
        end: Option<SnapshotEnd>,
    ) -> Vec<u8> {
        let envelope = RawEnvelope {
            org_id: self.org.into(),
            sync_id: self.id.into(),
            object,
            fetched_at: DateTime::<Utc>::from_timestamp_millis(self.fetched_ms).unwrap(),
            api_version: "62.0".into(),
            kind: if end.is_some() {
                EnvelopeKind::SnapshotEnd
            } else {
                EnvelopeKind::Record
            },
            record: record.map(|text| RawValue::from_string(text).unwrap()),
            snapshot: end,
        };
        serde_json::to_vec(&envelope).unwrap()
    }

    fn record_key(self, object: SfObject, record: &Value) -> String {
        format!("{}/{object}/{}", self.org, record["Id"].as_str().unwrap())
    }
}

/// A processor fed events of one partition at consecutive offsets.
struct Feed {
    processor: Processor,
    partition: i32,
    next_offset: i64,
}

impl Feed {
    fn new() -> Self {
        let metrics = Metrics::new(&Registry::new()).unwrap();
        Self {
            processor: Processor::new(RAW_TOPIC, metrics),
            partition: 0,
            next_offset: 0,
        }
    }

    fn send(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) -> Vec<Output> {
        let input = Input {
            partition: self.partition,
            offset: self.next_offset,
            key,
            value,
        };
        self.next_offset += 1;
        self.processor.process(input)
    }

    fn record(&mut self, sync: Sync, object: SfObject, record: &Value) -> Vec<Output> {
        let key = sync.record_key(object, record);
        let value = sync.envelope(object, Some(record), None);
        self.send(Some(key.as_bytes()), Some(&value))
    }

    fn end(&mut self, sync: Sync, object: SfObject, mode: SnapshotMode, n: u64) -> Vec<Output> {
        let key = format!("{}/{object}", sync.org);
        let end = SnapshotEnd { mode, records: n };
        let value = sync.envelope(object, None, Some(end));
        self.send(Some(key.as_bytes()), Some(&value))
    }

    /// Every record, then the end marker; the outputs of all of them.
    fn snapshot(
        &mut self,
        sync: Sync,
        object: SfObject,
        mode: SnapshotMode,
        records: &[Value],
    ) -> Vec<Output> {
        let mut outputs: Vec<Output> = records
            .iter()
            .flat_map(|r| self.record(sync, object, r))
            .collect();
        outputs.extend(self.end(sync, object, mode, records.len() as u64));
        outputs
    }

    /// A record sent with the JSON text `text` under the key `key`.
    fn record_text(&mut self, sync: Sync, object: SfObject, key: &str, text: &str) -> Vec<Output> {
        let value = sync.envelope_with_text(object, Some(text.to_owned()), None);
        self.send(Some(key.as_bytes()), Some(&value))
    }

    fn full(&mut self, sync: Sync, object: SfObject, records: &[Value]) -> Vec<Output> {
        self.snapshot(sync, object, SnapshotMode::Full, records)
    }

    fn last_offset(&self) -> i64 {
        self.next_offset - 1
    }
}

fn key(output: &Output) -> &str {
    std::str::from_utf8(output.key.as_deref().unwrap()).unwrap()
}

fn license(output: &Output) -> LicenseState {
    assert_eq!(output.target, Target::LicenseState);
    LicenseState::from_avro(output.value.as_deref().unwrap()).unwrap()
}

fn user(output: &Output) -> UserState {
    assert_eq!(output.target, Target::UserState);
    UserState::from_avro(output.value.as_deref().unwrap()).unwrap()
}

fn find<'a>(outputs: &'a [Output], wanted: &str) -> &'a Output {
    outputs
        .iter()
        .find(|o| key(o) == wanted)
        .unwrap_or_else(|| panic!("no output keyed {wanted}"))
}

fn tombstone_keys(outputs: &[Output]) -> Vec<&str> {
    outputs
        .iter()
        .filter(|o| o.is_tombstone())
        .map(key)
        .collect()
}

fn header<'a>(output: &'a Output, name: &str) -> &'a str {
    output
        .headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no header {name}"))
}

fn sorted(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[test]
fn user_licenses_normalise() {
    let mut feed = Feed::new();
    let outputs = feed.full(SYNC_1, SfObject::UserLicense, &user_licenses());
    assert_eq!(outputs.len(), 6);
    assert!(outputs.iter().all(|o| o.org_hash == Some(org_hash(ORG))));

    let salesforce = license(find(&outputs, &format!("{ORG}/user/1005g0000000001AAA")));
    assert_eq!(
        salesforce,
        LicenseState {
            org_id: ORG.into(),
            kind: LicenseKind::User,
            license_id: "1005g0000000001AAA".into(),
            name: "Salesforce".into(),
            label: "Salesforce".into(),
            definition_key: Some("SFDC".into()),
            status: LicenseStatus::Active,
            total: Some(150),
            used: 142,
            available: Some(8),
            utilization: Some(142.0 / 150.0),
            expires_at: None,
            observed_at: FETCHED_MS,
            sync_id: "sync-1".into(),
        }
    );

    let empty_pool = license(find(&outputs, &format!("{ORG}/user/1005g0000000006AAA")));
    assert_eq!(
        (
            empty_pool.total,
            empty_pool.available,
            empty_pool.utilization
        ),
        (Some(0), Some(0), None)
    );
    let disabled = license(find(&outputs, &format!("{ORG}/user/1005g0000000005AAA")));
    assert_eq!(disabled.status, LicenseStatus::Disabled);
}

#[test]
fn user_licence_label_falls_back_to_name() {
    let mut feed = Feed::new();
    let mut record = user_licenses().remove(0);
    record["MasterLabel"] = Value::Null;
    let outputs = feed.record(SYNC_1, SfObject::UserLicense, &record);
    assert_eq!(license(&outputs[0]).label, "Salesforce");
}

#[test]
fn package_site_licence_has_no_total_and_expiry_is_kept() {
    let mut feed = Feed::new();
    let outputs = feed.full(
        SYNC_1,
        SfObject::PackageLicense,
        &fixture!("query_packagelicense.json"),
    );
    assert_eq!(outputs.len(), 5);

    let site = license(find(&outputs, &format!("{ORG}/package/0505g0000000002AAA")));
    assert_eq!(site.kind, LicenseKind::Package);
    assert_eq!(
        (site.name.as_str(), site.label.as_str()),
        ("northdocs", "northdocs")
    );
    assert_eq!((site.total, site.used), (None, 312));
    assert_eq!((site.available, site.utilization), (None, None));
    assert_eq!((site.definition_key, site.expires_at), (None, None));

    let seats = license(find(&outputs, &format!("{ORG}/package/0505g0000000001AAA")));
    assert_eq!((seats.total, seats.available), (Some(50), Some(2)));
    assert_eq!(seats.utilization, Some(0.96));
    assert_eq!(seats.expires_at, Some(1_751_241_600_000));
    let trial = license(find(&outputs, &format!("{ORG}/package/0505g0000000003AAA")));
    assert_eq!(trial.status, LicenseStatus::Trial);
}

#[test]
fn permission_set_licence_dates_are_midnight_utc_and_over_assignment_is_negative() {
    let mut feed = Feed::new();
    let mut psls = fixture!("query_permissionsetlicense.json");
    psls[1]["UsedLicenses"] = json!(12);
    let outputs = feed.full(SYNC_1, SfObject::PermissionSetLicense, &psls);

    let identity = license(find(
        &outputs,
        &format!("{ORG}/permission-set/0PL5g0000000002GAA"),
    ));
    assert_eq!(identity.kind, LicenseKind::PermissionSet);
    assert_eq!(identity.name, "IdentityConnect");
    assert_eq!(identity.label, "Identity Connect");
    assert_eq!(identity.definition_key.as_deref(), Some("IdentityConnect"));
    assert_eq!(identity.expires_at, Some(1_738_281_600_000));
    assert_eq!((identity.total, identity.used), (Some(10), 12));
    assert_eq!(
        (identity.available, identity.utilization),
        (Some(-2), Some(1.2))
    );

    let cpq = license(find(
        &outputs,
        &format!("{ORG}/permission-set/0PL5g0000000001GAA"),
    ));
    assert_eq!(cpq.expires_at, None);
}

#[test]
fn full_snapshot_tombstones_a_missing_licence() {
    let mut feed = Feed::new();
    let all = user_licenses();
    assert!(tombstone_keys(&feed.full(SYNC_1, SfObject::UserLicense, &all)).is_empty());

    let outputs = feed.full(SYNC_2, SfObject::UserLicense, &all[..4]);
    assert_eq!(outputs.len(), 6);
    assert_eq!(
        tombstone_keys(&outputs),
        vec![
            format!("{ORG}/user/1005g0000000005AAA"),
            format!("{ORG}/user/1005g0000000006AAA"),
        ]
    );
    let tombstone = outputs.last().unwrap();
    assert_eq!(
        (tombstone.target, &tombstone.value),
        (Target::LicenseState, &None)
    );

    // Once removed, a licence is not removed again.
    let outputs = feed.full(SYNC_3, SfObject::UserLicense, &all[..4]);
    assert!(tombstone_keys(&outputs).is_empty());
}

#[test]
fn tombstones_stay_within_their_object_kind() {
    let mut feed = Feed::new();
    feed.full(SYNC_1, SfObject::UserLicense, &user_licenses());
    let packages = fixture!("query_packagelicense.json");
    feed.full(SYNC_1, SfObject::PackageLicense, &packages);

    let outputs = feed.full(SYNC_2, SfObject::PackageLicense, &packages[1..]);
    assert_eq!(
        tombstone_keys(&outputs),
        vec![format!("{ORG}/package/0505g0000000001AAA")]
    );
}

#[test]
fn incremental_snapshots_never_tombstone() {
    let mut feed = Feed::new();
    let all = user_licenses();
    feed.full(SYNC_1, SfObject::UserLicense, &all);

    let outputs = feed.snapshot(
        SYNC_2,
        SfObject::UserLicense,
        SnapshotMode::Incremental,
        &all[..1],
    );
    assert_eq!(outputs.len(), 1);
    assert!(tombstone_keys(&outputs).is_empty());

    // The next full snapshot still compares with everything published.
    let outputs = feed.full(SYNC_3, SfObject::UserLicense, &all[..5]);
    assert_eq!(
        tombstone_keys(&outputs),
        vec![format!("{ORG}/user/1005g0000000006AAA")]
    );
}

#[test]
fn licence_added_incrementally_is_removed_by_the_next_full_snapshot() {
    let mut feed = Feed::new();
    let all = user_licenses();
    feed.full(SYNC_1, SfObject::UserLicense, &all[..5]);
    let incremental = SnapshotMode::Incremental;
    feed.snapshot(SYNC_2, SfObject::UserLicense, incremental, &all[5..]);

    let outputs = feed.full(SYNC_3, SfObject::UserLicense, &all[..5]);
    assert_eq!(
        tombstone_keys(&outputs),
        vec![format!("{ORG}/user/1005g0000000006AAA")]
    );
}

#[test]
fn user_missing_from_full_snapshot_is_tombstoned() {
    let mut feed = Feed::new();
    let users = fixture!("query_user_with_profile_license.json");
    feed.full(SYNC_1, SfObject::User, &users);

    let outputs = feed.full(SYNC_2, SfObject::User, &users[..5]);
    assert_eq!(
        tombstone_keys(&outputs),
        vec![format!("{ORG}/0055g00000GuEsTAAV")]
    );
    assert_eq!(outputs.last().unwrap().target, Target::UserState);

    let incremental = SnapshotMode::Incremental;
    let outputs = feed.snapshot(SYNC_3, SfObject::User, incremental, &users[..1]);
    assert!(tombstone_keys(&outputs).is_empty());
}

#[test]
fn users_carry_sorted_assignments_and_profile_licence() {
    let mut feed = Feed::new();
    let mut assigns = fixture!("query_permissionsetlicenseassign.json");
    assigns.reverse();
    feed.full(SYNC_1, SfObject::PermissionSetLicenseAssign, &assigns);
    let packages = fixture!("query_userpackagelicense.json");
    feed.full(SYNC_1, SfObject::UserPackageLicense, &packages);
    let outputs = feed.full(
        SYNC_1,
        SfObject::User,
        &fixture!("query_user_with_profile_license.json"),
    );
    assert_eq!(outputs.len(), 6);

    let avery = user(find(&outputs, &format!("{ORG}/0055g00000QrStUAAV")));
    assert_eq!(
        avery,
        UserState {
            org_id: ORG.into(),
            user_id: "0055g00000QrStUAAV".into(),
            username: "avery.example@northwind-demo.example".into(),
            active: true,
            user_type: "Standard".into(),
            profile_name: Some("Standard User".into()),
            user_license_id: None,
            user_license: Some("Salesforce".into()),
            license_definition_key: None,
            last_login_at: Some(1_714_464_723_000),
            last_activity_at: None,
            permission_set_licenses: sorted(&["0PL5g0000000001GAA", "0PL5g0000000002GAA"]),
            package_licenses: sorted(&["0505g0000000001AAA"]),
            observed_at: FETCHED_MS,
            sync_id: "sync-1".into(),
        }
    );
    let casey = user(find(&outputs, &format!("{ORG}/0055g00000NeVeRAAV")));
    assert_eq!(casey.last_login_at, None);
    assert!(casey.permission_set_licenses.is_empty() && casey.package_licenses.is_empty());
    let guest = user(find(&outputs, &format!("{ORG}/0055g00000GuEsTAAV")));
    assert_eq!(guest.user_type, "Guest");
}

#[test]
fn user_type_defaults_to_standard() {
    let mut feed = Feed::new();
    let mut record = fixture!("query_user_with_profile_license.json").remove(0);
    record["UserType"] = Value::Null;
    record["Profile"] = Value::Null;
    let state = user(&feed.record(SYNC_1, SfObject::User, &record)[0]);
    assert_eq!(state.user_type, "Standard");
    assert_eq!((state.profile_name, state.user_license), (None, None));
}

fn assign(id: &str, user_id: &str, license_id: &str, revoked: Option<bool>) -> Value {
    json!({
        "attributes": {"type": "PermissionSetLicenseAssign"},
        "Id": id,
        "AssigneeId": user_id,
        "PermissionSetLicenseId": license_id,
        "IsRevoked": revoked,
    })
}

/// A feed after a first full sync of the fixtures' permission-set licence assignments, no
/// package licence assignments, and the fixtures' users; with the assignment and user
/// records, and what the users' snapshot published.
fn synced_with_assignments() -> (Feed, Vec<Value>, Vec<Value>, Vec<Output>) {
    let mut feed = Feed::new();
    let assigns = fixture!("query_permissionsetlicenseassign.json");
    feed.full(SYNC_1, SfObject::PermissionSetLicenseAssign, &assigns);
    feed.full(SYNC_1, SfObject::UserPackageLicense, &[]);
    let users = fixture!("query_user_with_profile_license.json");
    let published = feed.full(SYNC_1, SfObject::User, &users);
    (feed, assigns, users, published)
}

#[test]
fn assignment_change_reemits_the_user_sorted_and_without_revoked() {
    let (mut feed, assigns, _, _) = synced_with_assignments();

    // Avery gains a third licence, listed first; the integration user's only one is
    // revoked; Blake (no assignments either time) must not be re-emitted.
    let avery = "0055g00000QrStUAAV";
    let integration = "0055g00000AbCdEAAV";
    let next = vec![
        assign(
            "2LA5g0000000009GAA",
            avery,
            "0PL5g0000000003GAA",
            Some(false),
        ),
        assign(
            "2LA5g0000000001GAA",
            integration,
            "0PL5g0000000001GAA",
            Some(true),
        ),
        assigns[1].clone(),
        assigns[2].clone(),
    ];
    let outputs = feed.full(SYNC_2, SfObject::PermissionSetLicenseAssign, &next);

    let keys: Vec<&str> = outputs.iter().map(key).collect();
    assert_eq!(
        keys,
        vec![format!("{ORG}/{integration}"), format!("{ORG}/{avery}")]
    );
    let integration_state = user(&outputs[0]);
    assert!(integration_state.permission_set_licenses.is_empty());
    let avery_state = user(&outputs[1]);
    assert_eq!(
        avery_state.permission_set_licenses,
        sorted(&[
            "0PL5g0000000001GAA",
            "0PL5g0000000002GAA",
            "0PL5g0000000003GAA"
        ])
    );
    // The re-emitted state is still the user record's observation.
    assert_eq!(avery_state.sync_id, "sync-1");

    // The same assignments again change nothing.
    let outputs = feed.full(SYNC_3, SfObject::PermissionSetLicenseAssign, &next);
    assert!(outputs.is_empty());
}

#[test]
fn a_user_whose_new_state_cannot_be_encoded_is_dead_lettered_and_keeps_the_published_one() {
    // The second sync's records are sent in their first text (republished unparsed) and
    // in another text of the same records (parsed).
    for texts in [user_texts(false), user_texts(true)] {
        let (mut feed, _, users, first) = synced_with_assignments();
        let avery = "0055g00000QrStUAAV";
        let published = first
            .iter()
            .map(user)
            .find(|state| state.user_id == avery)
            .expect("Avery is published");
        assert!(!published.permission_set_licenses.is_empty());

        // An encoder told of no schema refuses every state (and never does I/O).
        let refusing = Encoder::from_url(Some("http://127.0.0.1:9")).unwrap();
        feed.processor.encoder = StateEncoder::new(refusing, "l".into(), "u".into());
        let second = full_users(&mut feed, SYNC_2, &texts);
        assert_eq!(second.len(), users.len(), "{second:?}");
        for letter in &second {
            assert_eq!(letter.target, Target::Dlq);
            assert_eq!(header(letter, HEADER_ERROR_CLASS), "encode_failed");
            assert!(header(letter, HEADER_ERROR_MESSAGE).contains("does not encode"));
        }

        // Nothing was tombstoned (every record counted), and Avery's state is what was
        // published, not the state that failed.
        let kept = &feed.processor.orgs[ORG].users[avery];
        assert_eq!(kept.state, published);
    }
}

#[test]
fn assignment_change_for_an_unknown_user_emits_nothing() {
    let mut feed = Feed::new();
    let assigns = fixture!("query_permissionsetlicenseassign.json");
    let outputs = feed.full(SYNC_1, SfObject::PermissionSetLicenseAssign, &assigns);
    assert!(outputs.is_empty());
}

#[test]
fn package_assignment_removed_by_full_snapshot_reemits_the_user() {
    let mut feed = Feed::new();
    let packages = fixture!("query_userpackagelicense.json");
    feed.full(SYNC_1, SfObject::UserPackageLicense, &packages);
    let users = fixture!("query_user_with_profile_license.json");
    feed.full(SYNC_1, SfObject::User, &users);

    let outputs = feed.full(SYNC_2, SfObject::UserPackageLicense, &packages[1..]);
    assert_eq!(outputs.len(), 1);
    let avery = user(&outputs[0]);
    assert_eq!(avery.user_id, "0055g00000QrStUAAV");
    assert!(avery.package_licenses.is_empty());
}

#[test]
fn stale_open_snapshot_is_discarded() {
    let mut feed = Feed::new();
    let all = user_licenses();
    feed.full(SYNC_1, SfObject::UserLicense, &all[..3]);
    let after_first = feed.last_offset();

    // Sync 2 publishes two licences, one of them new, then ingest restarts.
    feed.record(SYNC_2, SfObject::UserLicense, &all[0]);
    feed.record(SYNC_2, SfObject::UserLicense, &all[3]);
    assert_eq!(
        feed.processor.committable_offset(0, feed.last_offset()),
        after_first + 1
    );

    // Sync 3 starts over and finds only the first licence.
    let outputs = feed.full(SYNC_3, SfObject::UserLicense, &all[..1]);
    assert_eq!(
        tombstone_keys(&outputs),
        vec![
            format!("{ORG}/user/1005g0000000002AAA"),
            format!("{ORG}/user/1005g0000000003AAA"),
            format!("{ORG}/user/1005g0000000004AAA"),
        ]
    );
    let last = feed.last_offset();
    assert_eq!(feed.processor.committable_offset(0, last), last + 1);
}

#[test]
fn marker_of_a_new_sync_discards_the_stale_snapshot() {
    let mut feed = Feed::new();
    let all = user_licenses();
    feed.full(SYNC_1, SfObject::UserLicense, &all[..2]);
    feed.record(SYNC_2, SfObject::UserLicense, &all[0]);

    // Sync 3 finds no user licences at all: a complete, empty full snapshot.
    let outputs = feed.end(SYNC_3, SfObject::UserLicense, SnapshotMode::Full, 0);
    assert_eq!(outputs.len(), 2);
    assert_eq!(outputs.iter().filter(|o| o.is_tombstone()).count(), 2);
    let last = feed.last_offset();
    assert_eq!(feed.processor.committable_offset(0, last), last + 1);
}

#[test]
fn committable_offset_waits_for_every_open_snapshot_of_the_partition() {
    let mut feed = Feed::new();
    let other = Sync {
        org: OTHER_ORG,
        id: "other-1",
        fetched_ms: FETCHED_MS,
    };
    let licence = &user_licenses()[0];

    feed.record(SYNC_1, SfObject::UserLicense, licence); // 0: opens ORG
    feed.record(other, SfObject::UserLicense, licence); // 1: opens OTHER_ORG
    assert_eq!(feed.processor.committable_offset(0, 1), 0);
    feed.end(SYNC_1, SfObject::UserLicense, SnapshotMode::Full, 1); // 2
    assert_eq!(feed.processor.committable_offset(0, 2), 1);
    feed.record(
        SYNC_1,
        SfObject::User,
        &fixture!("query_user_with_profile_license.json")[0],
    ); // 3
    assert_eq!(feed.processor.committable_offset(0, 3), 1);
    feed.end(other, SfObject::UserLicense, SnapshotMode::Full, 1); // 4
    assert_eq!(feed.processor.committable_offset(0, 4), 3);
    feed.end(SYNC_1, SfObject::User, SnapshotMode::Incremental, 1); // 5
    assert_eq!(feed.processor.committable_offset(0, 5), 6);

    // Another partition is not held back by this one's open snapshots.
    feed.record(SYNC_2, SfObject::UserLicense, licence); // 6
    assert_eq!(feed.processor.committable_offset(0, 6), 6);
    assert_eq!(feed.processor.committable_offset(1, 41), 42);
}

/// One whole sync of the fixture org, as (key, value) events in ingest's order.
fn whole_sync(sync: Sync) -> Vec<(String, Vec<u8>)> {
    let by_object = [
        (SfObject::UserLicense, user_licenses()),
        (
            SfObject::PermissionSetLicense,
            fixture!("query_permissionsetlicense.json"),
        ),
        (
            SfObject::PackageLicense,
            fixture!("query_packagelicense.json"),
        ),
        (
            SfObject::PermissionSetLicenseAssign,
            fixture!("query_permissionsetlicenseassign.json"),
        ),
        (
            SfObject::UserPackageLicense,
            fixture!("query_userpackagelicense.json"),
        ),
        (
            SfObject::User,
            fixture!("query_user_with_profile_license.json"),
        ),
    ];
    let mut events = Vec::new();
    for (object, records) in by_object {
        for record in &records {
            let value = sync.envelope(object, Some(record), None);
            events.push((sync.record_key(object, record), value));
        }
        let end = SnapshotEnd {
            mode: SnapshotMode::Full,
            records: records.len() as u64,
        };
        let value = sync.envelope(object, None, Some(end));
        events.push((format!("{}/{object}", sync.org), value));
    }
    events
}

fn feed_all(feed: &mut Feed, events: &[(String, Vec<u8>)]) -> Vec<Output> {
    events
        .iter()
        .flat_map(|(k, v)| feed.send(Some(k.as_bytes()), Some(v)))
        .collect()
}

#[test]
fn same_input_gives_identical_outputs() {
    let events = whole_sync(SYNC_1);
    let first = feed_all(&mut Feed::new(), &events);
    let second = feed_all(&mut Feed::new(), &events);
    assert_eq!(first.len(), 6 + 3 + 5 + 6);
    assert_eq!(first, second);

    // Replayed into the same processor (a redelivery), the sync yields the same bytes
    // again and removes nothing.
    let mut feed = Feed::new();
    let once = feed_all(&mut feed, &events);
    let twice = feed_all(&mut feed, &events);
    assert_eq!(once, twice);
}

struct BadEvent {
    name: &'static str,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    class: &'static str,
    message_names: &'static str,
}

fn bad_events() -> Vec<BadEvent> {
    let licence = user_licenses().remove(0);
    let good_key = SYNC_1.record_key(SfObject::UserLicense, &licence);
    let record_event = |record: &Value| {
        let value = SYNC_1.envelope(SfObject::UserLicense, Some(record), None);
        (Some(good_key.clone().into_bytes()), Some(value))
    };
    let mut missing_total = licence.clone();
    missing_total
        .as_object_mut()
        .unwrap()
        .remove("TotalLicenses");
    let mut wrong_type = licence.clone();
    wrong_type["UsedLicenses"] = json!("142");
    let mut bad_login = fixture!("query_user_with_profile_license.json").remove(0);
    bad_login["LastLoginDate"] = json!("2024-05-01 12:34");
    let unknown = json!({
        "org_id": ORG, "sync_id": "s", "object": "Account",
        "fetched_at": "2024-05-01T12:00:00Z", "api_version": "62.0", "record": {"Id": "001"}
    });
    let no_org = json!({
        "sync_id": "s", "object": "User", "fetched_at": "2024-05-01T12:00:00Z",
        "api_version": "62.0"
    });

    let mut cases = Vec::new();
    let mut case = |name, (key, value): (Option<Vec<u8>>, Option<Vec<u8>>), class, names| {
        cases.push(BadEvent {
            name,
            key,
            value,
            class,
            message_names: names,
        })
    };
    case(
        "not json",
        (Some(b"x/y/z".to_vec()), Some(b"{oops".to_vec())),
        "invalid_json",
        "JSON",
    );
    case(
        "null value",
        (Some(b"x/y/z".to_vec()), None),
        "invalid_json",
        "null",
    );
    case(
        "no org",
        (None, Some(no_org.to_string().into_bytes())),
        "invalid_envelope",
        "org_id",
    );
    case(
        "unknown object",
        (Some(b"k".to_vec()), Some(unknown.to_string().into_bytes())),
        "unknown_object",
        "Account",
    );
    case(
        "missing field",
        record_event(&missing_total),
        "invalid_record",
        "TotalLicenses",
    );
    case(
        "wrong type",
        record_event(&wrong_type),
        "invalid_record",
        "UsedLicenses",
    );
    let user_key = SYNC_1.record_key(SfObject::User, &bad_login);
    let user_value = SYNC_1.envelope(SfObject::User, Some(&bad_login), None);
    case(
        "bad datetime",
        (Some(user_key.into_bytes()), Some(user_value)),
        "invalid_record",
        "LastLoginDate",
    );
    let (_, value) = record_event(&licence);
    case(
        "key mismatch",
        (Some(format!("{ORG}/UserLicense/other").into_bytes()), value),
        "key_mismatch",
        "1005g0000000001AAA",
    );
    cases
}

#[test]
fn dead_letters_keep_the_original_bytes_and_say_why() {
    for bad in bad_events() {
        let mut feed = Feed::new();
        feed.partition = 2;
        feed.next_offset = 77;
        let outputs = feed.send(bad.key.as_deref(), bad.value.as_deref());
        let name = bad.name;

        assert_eq!(outputs.len(), 1, "{name}");
        let letter = &outputs[0];
        assert_eq!(letter.target, Target::Dlq, "{name}");
        assert_eq!(letter.key, bad.key, "{name}");
        assert_eq!(letter.value, bad.value, "{name}");
        assert!(!letter.is_tombstone(), "{name}");
        let names: Vec<&str> = letter.headers.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            vec![
                HEADER_STAGE,
                HEADER_ERROR_CLASS,
                HEADER_ERROR_MESSAGE,
                HEADER_SOURCE_TOPIC,
                HEADER_SOURCE_PARTITION,
                HEADER_SOURCE_OFFSET
            ],
            "{name}"
        );
        assert_eq!(header(letter, HEADER_STAGE), "transform");
        assert_eq!(header(letter, HEADER_ERROR_CLASS), bad.class, "{name}");
        let message = header(letter, HEADER_ERROR_MESSAGE);
        assert!(message.contains(bad.message_names), "{name}: {message}");
        assert_eq!(header(letter, HEADER_SOURCE_TOPIC), RAW_TOPIC);
        assert_eq!(header(letter, HEADER_SOURCE_PARTITION), "2");
        assert_eq!(header(letter, HEADER_SOURCE_OFFSET), "77");
    }
}

#[test]
fn dead_letters_are_placed_by_org_when_it_can_be_read() {
    let cases = bad_events();
    let org_of = |name: &str| {
        let bad = cases.iter().find(|c| c.name == name).unwrap();
        let outputs = Feed::new().send(bad.key.as_deref(), bad.value.as_deref());
        outputs[0].org_hash
    };
    assert_eq!(org_of("missing field"), Some(org_hash(ORG)));
    assert_eq!(org_of("not json"), Some(org_hash("x")));
    assert_eq!(org_of("no org"), None);
}

#[test]
fn partition_keeps_flowing_after_a_bad_record() {
    let mut feed = Feed::new();
    let all = user_licenses();
    feed.full(SYNC_1, SfObject::UserLicense, &all[..3]);

    // In the next full snapshot the first licence is malformed: it is dead-lettered, the
    // others are published, and the malformed one is not mistaken for a removed one.
    let mut broken = all[0].clone();
    broken["TotalLicenses"] = json!("lots");
    let mut outputs = feed.record(SYNC_2, SfObject::UserLicense, &broken);
    outputs.extend(feed.record(SYNC_2, SfObject::UserLicense, &all[1]));
    outputs.extend(feed.record(SYNC_2, SfObject::UserLicense, &all[2]));
    outputs.extend(feed.end(SYNC_2, SfObject::UserLicense, SnapshotMode::Full, 3));

    let targets: Vec<Target> = outputs.iter().map(|o| o.target).collect();
    assert_eq!(
        targets,
        vec![Target::Dlq, Target::LicenseState, Target::LicenseState]
    );
    let next = feed.full(
        SYNC_2,
        SfObject::User,
        &fixture!("query_user_with_profile_license.json"),
    );
    assert_eq!(next.len(), 6);
    let last = feed.last_offset();
    assert_eq!(feed.processor.committable_offset(0, last), last + 1);
}

#[test]
fn full_snapshot_with_an_unattributable_record_removes_nothing() {
    let mut feed = Feed::new();
    let all = user_licenses();
    feed.full(SYNC_1, SfObject::UserLicense, &all[..3]);

    // A record without an id cannot protect anything, so the snapshot is incomplete.
    let mut outputs = feed.send(Some(b"org/UserLicense/?"), Some(b"not json"));
    outputs.extend(feed.record(SYNC_2, SfObject::UserLicense, &all[0]));
    outputs.extend(feed.end(SYNC_2, SfObject::UserLicense, SnapshotMode::Full, 2));
    assert_eq!(outputs.len(), 2);
    assert!(tombstone_keys(&outputs).is_empty());

    // The next complete one does.
    let outputs = feed.full(SYNC_3, SfObject::UserLicense, &all[..1]);
    assert_eq!(tombstone_keys(&outputs).len(), 2);
}

#[test]
fn dead_lettered_assignment_keeps_its_previous_row() {
    let mut feed = Feed::new();
    let assigns = fixture!("query_permissionsetlicenseassign.json");
    feed.full(SYNC_1, SfObject::PermissionSetLicenseAssign, &assigns);
    feed.full(
        SYNC_1,
        SfObject::User,
        &fixture!("query_user_with_profile_license.json"),
    );

    let mut broken = assigns.clone();
    broken[2]["PermissionSetLicenseId"] = json!(17);
    let outputs = feed.full(SYNC_2, SfObject::PermissionSetLicenseAssign, &broken);
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0].target, Target::Dlq);
}

#[test]
fn revoke_forgets_the_partition() {
    let mut feed = Feed::new();
    let all = user_licenses();
    feed.full(SYNC_1, SfObject::UserLicense, &all);
    feed.record(SYNC_2, SfObject::UserLicense, &all[0]);
    let last = feed.last_offset();
    assert_eq!(feed.processor.committable_offset(0, last), last);

    feed.processor.revoke(1);
    assert_eq!(feed.processor.committable_offset(0, last), last);
    feed.processor.revoke(0);
    assert_eq!(feed.processor.committable_offset(0, last), last + 1);

    // What was published before is unknown now: nothing to remove.
    let outputs = feed.full(SYNC_3, SfObject::UserLicense, &all[..1]);
    assert!(tombstone_keys(&outputs).is_empty());
}

#[test]
fn markers_are_checked_too() {
    let mut feed = Feed::new();
    let end = SnapshotEnd {
        mode: SnapshotMode::Full,
        records: 0,
    };
    let value = SYNC_1.envelope(SfObject::User, None, Some(end));
    let outputs = feed.send(Some(b"wrong"), Some(&value));
    assert_eq!(header(&outputs[0], HEADER_ERROR_CLASS), "key_mismatch");

    let mut envelope: Value = serde_json::from_slice(&value).unwrap();
    envelope.as_object_mut().unwrap().remove("snapshot");
    let value = serde_json::to_vec(&envelope).unwrap();
    let outputs = feed.send(Some(format!("{ORG}/User").as_bytes()), Some(&value));
    assert_eq!(header(&outputs[0], HEADER_ERROR_CLASS), "invalid_envelope");
    assert!(header(&outputs[0], HEADER_ERROR_MESSAGE).contains("snapshot"));
}

#[test]
fn a_dead_letter_too_large_for_the_broker_keeps_its_head_and_says_so() {
    let mut huge = b"{\"not\": \"an envelope\", \"pad\": \"".to_vec();
    huge.resize(MAX_DEAD_LETTER_BYTES + 10_000, b'x');
    let outputs = Feed::new().send(Some(b"x/y/z"), Some(&huge));

    let letter = &outputs[0];
    assert_eq!(letter.target, Target::Dlq);
    assert_eq!(
        letter.value.as_deref(),
        Some(&huge[..MAX_DEAD_LETTER_BYTES])
    );
    assert_eq!(
        header(letter, HEADER_TRUNCATED_FROM),
        huge.len().to_string()
    );
}

#[test]
fn keys_are_compared_segment_by_segment() {
    let bytes = SYNC_1.envelope(SfObject::UserLicense, Some(&json!({"Id": "100"})), None);
    let envelope: Envelope<'_> = serde_json::from_slice(&bytes).unwrap();
    let matches = |key: &str, id| key_matches(key.as_bytes(), &envelope, id);
    assert!(matches(&format!("{ORG}/UserLicense/100"), Some("100")));
    assert!(matches(&format!("{ORG}/UserLicense"), None));
    assert!(!matches(&format!("{ORG}/UserLicense/1000"), Some("100")));
    assert!(!matches(&format!("{ORG}/UserLicense/100/x"), Some("100")));
    assert!(!matches(&format!("{ORG}/UserLicenseX/100"), Some("100")));
    assert!(!matches(&format!("{ORG}UserLicense/100"), Some("100")));
    assert!(!matches(&format!("{ORG}/UserLicense/"), None));
    assert!(!matches("", None));
}

/// A new processor seeded, as the pipeline does at start, with what `published` wrote to
/// the state topics, tombstones included, in order.
fn restarted(published: &[Output]) -> Feed {
    let mut feed = Feed::new();
    for output in published {
        match (output.target, &output.value) {
            (Target::LicenseState, Some(_)) => {
                let state = license(output);
                let processor = &mut feed.processor;
                processor.restore_license(0, &state.org_id, state.kind, &state.license_id);
            }
            (Target::LicenseState, None) => {
                let (org, kind, id) = parse_license_key(key(output)).unwrap();
                feed.processor.forget_license(org, kind, id);
            }
            (Target::UserState, Some(_)) => feed.processor.restore_user(0, user(output)),
            (Target::UserState, None) => {
                let (org, id) = parse_user_key(key(output)).unwrap();
                feed.processor.forget_user(org, id);
            }
            (Target::Dlq, _) => {}
        }
    }
    feed
}

#[test]
fn restored_licences_and_users_missing_from_the_first_full_snapshot_are_tombstoned() {
    let published = feed_all(&mut Feed::new(), &whole_sync(SYNC_1));
    let all = user_licenses();
    let packages = fixture!("query_packagelicense.json");
    let users = fixture!("query_user_with_profile_license.json");

    // Without restoring, a restart forgets what was published: nothing is removed.
    let mut forgetful = Feed::new();
    let outputs = forgetful.full(SYNC_2, SfObject::UserLicense, &all[..4]);
    assert!(tombstone_keys(&outputs).is_empty());

    let mut feed = restarted(&published);
    let outputs = feed.full(SYNC_2, SfObject::UserLicense, &all[..4]);
    assert_eq!(outputs.len(), 4 + 2);
    assert_eq!(
        tombstone_keys(&outputs),
        vec![
            format!("{ORG}/user/1005g0000000005AAA"),
            format!("{ORG}/user/1005g0000000006AAA"),
        ]
    );
    assert!(outputs.iter().all(|o| o.target == Target::LicenseState));

    // Each kind is compared with its own restored licences.
    let outputs = feed.full(SYNC_2, SfObject::PackageLicense, &packages[1..]);
    assert_eq!(
        tombstone_keys(&outputs),
        vec![format!("{ORG}/package/0505g0000000001AAA")]
    );

    let outputs = feed.full(SYNC_2, SfObject::User, &users[..5]);
    assert_eq!(
        tombstone_keys(&outputs),
        vec![format!("{ORG}/0055g00000GuEsTAAV")]
    );
    assert_eq!(outputs.last().unwrap().target, Target::UserState);

    // Once removed, they are not removed again.
    let outputs = feed.full(SYNC_3, SfObject::UserLicense, &all[..4]);
    assert!(tombstone_keys(&outputs).is_empty());
    let outputs = feed.full(SYNC_3, SfObject::User, &users[..5]);
    assert!(tombstone_keys(&outputs).is_empty());
}

#[test]
fn restored_licences_and_users_present_in_the_first_full_snapshot_are_kept() {
    let published = feed_all(&mut Feed::new(), &whole_sync(SYNC_1));
    let mut feed = restarted(&published);
    let outputs = feed_all(&mut feed, &whole_sync(SYNC_2));
    assert!(tombstone_keys(&outputs).is_empty(), "{outputs:?}");
    // Everything is published again, as after any full sync.
    assert_eq!(outputs.len(), 6 + 3 + 5 + 6);
}

#[test]
fn an_incomplete_first_snapshot_after_restoring_tombstones_nothing() {
    let published = feed_all(&mut Feed::new(), &whole_sync(SYNC_1));
    let all = user_licenses();
    let users = fixture!("query_user_with_profile_license.json");
    let mut feed = restarted(&published);

    // The markers announce every record, but two licences and a user never arrived.
    for licence in &all[..4] {
        feed.record(SYNC_2, SfObject::UserLicense, licence);
    }
    let outputs = feed.end(SYNC_2, SfObject::UserLicense, SnapshotMode::Full, 6);
    assert!(outputs.is_empty());
    for record in &users[..5] {
        feed.record(SYNC_2, SfObject::User, record);
    }
    let outputs = feed.end(SYNC_2, SfObject::User, SnapshotMode::Full, 6);
    assert!(outputs.is_empty());

    // The restored ones are still remembered for the next complete snapshot.
    let outputs = feed.full(SYNC_3, SfObject::UserLicense, &all[..4]);
    assert_eq!(
        tombstone_keys(&outputs),
        vec![
            format!("{ORG}/user/1005g0000000005AAA"),
            format!("{ORG}/user/1005g0000000006AAA"),
        ]
    );
    let outputs = feed.full(SYNC_3, SfObject::User, &users[..5]);
    assert_eq!(
        tombstone_keys(&outputs),
        vec![format!("{ORG}/0055g00000GuEsTAAV")]
    );
}

#[test]
fn a_tombstone_read_back_forgets_what_was_restored() {
    let all = user_licenses();
    let users = fixture!("query_user_with_profile_license.json");
    let mut first = Feed::new();
    let mut published = feed_all(&mut first, &whole_sync(SYNC_1));
    published.extend(first.full(SYNC_2, SfObject::UserLicense, &all[..4]));
    published.extend(first.full(SYNC_2, SfObject::User, &users[..5]));
    assert_eq!(tombstone_keys(&published).len(), 3);

    let mut feed = restarted(&published);
    let outputs = feed.full(SYNC_3, SfObject::UserLicense, &all[..4]);
    assert!(tombstone_keys(&outputs).is_empty());
    let outputs = feed.full(SYNC_3, SfObject::User, &users[..5]);
    assert!(tombstone_keys(&outputs).is_empty());
}

#[test]
fn restored_users_are_republished_only_when_complete_rows_change_their_licences() {
    let published = feed_all(&mut Feed::new(), &whole_sync(SYNC_1));
    let mut feed = restarted(&published);
    let assigns = fixture!("query_permissionsetlicenseassign.json");
    let avery = "0055g00000QrStUAAV";
    let integration = "0055g00000AbCdEAAV";
    let third = assign("2LA5g0000000009GAA", avery, "0PL5g0000000003GAA", None);

    // An incremental snapshot's rows are not all of Avery's: publishing them would drop
    // the two licences restored for Avery.
    let incremental = SnapshotMode::Incremental;
    let outputs = feed.snapshot(
        SYNC_2,
        SfObject::PermissionSetLicenseAssign,
        incremental,
        std::slice::from_ref(&third),
    );
    assert!(outputs.is_empty(), "{outputs:?}");

    // The first complete full snapshot is compared with what was restored: Avery gained a
    // licence, the integration user lost their only one, Blake and the package
    // assignments did not change.
    let next = vec![assigns[1].clone(), assigns[2].clone(), third];
    let outputs = feed.full(SYNC_2, SfObject::PermissionSetLicenseAssign, &next);
    let keys: Vec<&str> = outputs.iter().map(key).collect();
    assert_eq!(
        keys,
        vec![format!("{ORG}/{integration}"), format!("{ORG}/{avery}")]
    );
    assert!(user(&outputs[0]).permission_set_licenses.is_empty());
    let avery_state = user(&outputs[1]);
    assert_eq!(
        avery_state.permission_set_licenses,
        sorted(&[
            "0PL5g0000000001GAA",
            "0PL5g0000000002GAA",
            "0PL5g0000000003GAA"
        ])
    );
    // The rest is the restored state, untouched.
    assert_eq!(
        avery_state.package_licenses,
        sorted(&["0505g0000000001AAA"])
    );
    assert_eq!(avery_state.sync_id, "sync-1");

    let packages = fixture!("query_userpackagelicense.json");
    let outputs = feed.full(SYNC_2, SfObject::UserPackageLicense, &packages);
    assert!(outputs.is_empty(), "{outputs:?}");

    // From then on, changes are found as for any user.
    let outputs = feed.full(SYNC_3, SfObject::PermissionSetLicenseAssign, &next);
    assert!(outputs.is_empty());
    let incremental_row = assign(
        "2LA5g0000000002GAA",
        avery,
        "0PL5g0000000001GAA",
        Some(true),
    );
    let outputs = feed.snapshot(
        SYNC_3,
        SfObject::PermissionSetLicenseAssign,
        incremental,
        &[incremental_row],
    );
    assert_eq!(outputs.len(), 1);
    assert_eq!(
        user(&outputs[0]).permission_set_licenses,
        sorted(&["0PL5g0000000002GAA", "0PL5g0000000003GAA"])
    );
}

#[test]
fn revoke_forgets_restored_orgs_of_the_partition() {
    let all = user_licenses();
    let mut feed = Feed::new();
    feed.processor
        .restore_license(0, ORG, LicenseKind::User, "1005g0000000009AAA");
    feed.processor
        .restore_license(1, OTHER_ORG, LicenseKind::User, "1005g0000000009AAA");
    feed.processor.revoke(1);
    let outputs = feed.full(SYNC_1, SfObject::UserLicense, &all);
    assert_eq!(
        tombstone_keys(&outputs),
        vec![format!("{ORG}/user/1005g0000000009AAA")]
    );

    let mut feed = Feed::new();
    feed.processor
        .restore_license(0, ORG, LicenseKind::User, "1005g0000000009AAA");
    feed.processor.revoke(0);
    let outputs = feed.full(SYNC_1, SfObject::UserLicense, &all);
    assert!(tombstone_keys(&outputs).is_empty());
}

#[test]
fn state_keys_are_parsed_segment_by_segment() {
    assert_eq!(
        parse_license_key("00Dx/permission-set/0PLy"),
        Some(("00Dx", LicenseKind::PermissionSet, "0PLy"))
    );
    assert_eq!(
        parse_license_key("00Dx/package/050y"),
        Some(("00Dx", LicenseKind::Package, "050y"))
    );
    for bad in [
        "00Dx/PermissionSet/0PLy",
        "00Dx/user",
        "00Dx/user/",
        "/user/100y",
        "00Dx/user/100y/z",
        "",
    ] {
        assert_eq!(parse_license_key(bad), None, "{bad}");
    }
    assert_eq!(parse_user_key("00Dx/005y"), Some(("00Dx", "005y")));
    for bad in ["00Dx", "00Dx/", "/005y", "00Dx/005y/z"] {
        assert_eq!(parse_user_key(bad), None, "{bad}");
    }
}

fn login(id: &str, user_id: &str, at: &str, status: &str) -> Value {
    json!({
        "attributes": {"type": "LoginHistory"},
        "Id": id,
        "UserId": user_id,
        "LoginTime": at,
        "Status": status,
        "Application": "Browser",
        "LoginType": "Application",
        "LoginSubType": "UsernamePasswordUiLogin",
        "LoginUrl": "northwind-demo.my.salesforce.com",
        "SourceIp": "203.0.113.7",
    })
}

const AVERY: &str = "0055g00000QrStUAAV";
const CASEY: &str = "0055g00000NeVeRAAV";
/// Avery's LastLoginDate in the user fixture, 2024-04-30T08:12:03Z.
const AVERY_LAST_LOGIN_MS: i64 = 1_714_464_723_000;

#[test]
fn a_successful_login_after_last_login_date_moves_last_activity_and_a_failed_one_does_not() {
    let mut feed = Feed::new();
    feed.full(
        SYNC_1,
        SfObject::User,
        &fixture!("query_user_with_profile_license.json"),
    );

    // A failed login of a known user: nothing to publish.
    let failed = login(
        "0Ya1",
        CASEY,
        "2024-05-01T09:00:00.000+0000",
        "Invalid Password",
    );
    assert!(feed
        .record(SYNC_2, SfObject::LoginHistory, &failed)
        .is_empty());

    // A successful login a day after Avery's LastLoginDate: Avery again, with it.
    let success = login("0Ya2", AVERY, "2024-05-01T09:00:00.000+0000", "Success");
    let outputs = feed.record(SYNC_2, SfObject::LoginHistory, &success);
    let [output] = &outputs[..] else {
        panic!("expected Avery's state, got {outputs:?}");
    };
    assert_eq!(key(output), format!("{ORG}/{AVERY}"));
    let avery = user(output);
    assert_eq!(avery.last_activity_at, Some(1_714_554_000_000));
    assert_eq!(avery.last_login_at, Some(AVERY_LAST_LOGIN_MS), "untouched");
    assert_eq!(avery.last_seen_at(), Some(1_714_554_000_000));
    assert_eq!(
        avery.sync_id, "sync-1",
        "the user record's sync, not the login's"
    );

    // An older success, the same row again, and a failure after it: nothing moves.
    let older = login("0Ya3", AVERY, "2024-04-30T10:00:00.000+0000", "Success");
    assert!(feed
        .record(SYNC_2, SfObject::LoginHistory, &older)
        .is_empty());
    assert!(feed
        .record(SYNC_2, SfObject::LoginHistory, &success)
        .is_empty());
    let later_failure = login(
        "0Ya4",
        AVERY,
        "2024-05-01T11:00:00.000+0000",
        "Invalid Password",
    );
    assert!(feed
        .record(SYNC_2, SfObject::LoginHistory, &later_failure)
        .is_empty());

    // The end of the log's read deletes nothing.
    let end = feed.end(SYNC_2, SfObject::LoginHistory, SnapshotMode::Incremental, 5);
    assert!(end.is_empty(), "{end:?}");

    // Avery's next user record keeps the activity; Casey's failure left Casey without any.
    let outputs = feed.full(
        SYNC_3,
        SfObject::User,
        &fixture!("query_user_with_profile_license.json"),
    );
    let avery = user(find(&outputs, &format!("{ORG}/{AVERY}")));
    assert_eq!(avery.last_activity_at, Some(1_714_554_000_000));
    let casey = user(find(&outputs, &format!("{ORG}/{CASEY}")));
    assert_eq!(casey.last_activity_at, None);
    assert!(tombstone_keys(&outputs).is_empty());
}

#[test]
fn login_history_before_the_user_arrives_is_applied_when_the_user_does() {
    let mut feed = Feed::new();
    // The fixture: two successes (0055g00000AbCdEAAV at 12:34:55 on 1 May, Avery at her
    // LastLoginDate), a failure for Casey and an older failure for AbCdE.
    let logins = fixture!("query_loginhistory.json");
    let outputs = feed.snapshot(
        SYNC_1,
        SfObject::LoginHistory,
        SnapshotMode::Incremental,
        &logins,
    );
    assert!(outputs.is_empty(), "no user is known yet: {outputs:?}");

    let outputs = feed.full(
        SYNC_2,
        SfObject::User,
        &fixture!("query_user_with_profile_license.json"),
    );
    let integration = user(find(&outputs, &format!("{ORG}/0055g00000AbCdEAAV")));
    assert_eq!(integration.last_activity_at, Some(1_714_566_895_000));
    let avery = user(find(&outputs, &format!("{ORG}/{AVERY}")));
    assert_eq!(avery.last_activity_at, Some(AVERY_LAST_LOGIN_MS));
    let casey = user(find(&outputs, &format!("{ORG}/{CASEY}")));
    assert_eq!(
        casey.last_activity_at, None,
        "a failed login is no activity"
    );
    let guest = user(find(&outputs, &format!("{ORG}/0055g00000GuEsTAAV")));
    assert_eq!(guest.last_activity_at, None);
}

#[test]
fn login_history_is_idempotent() {
    // The same events twice into fresh processors, and once more into the first: the
    // same bytes, and the replay publishes nothing new.
    let mut events = whole_sync(SYNC_1);
    for row in &fixture!("query_loginhistory.json") {
        let key = SYNC_2.record_key(SfObject::LoginHistory, row);
        events.push((
            key,
            SYNC_2.envelope(SfObject::LoginHistory, Some(row), None),
        ));
    }
    let extra = login("0Ya9", AVERY, "2024-05-02T00:00:00.000+0000", "Success");
    events.push((
        SYNC_2.record_key(SfObject::LoginHistory, &extra),
        SYNC_2.envelope(SfObject::LoginHistory, Some(&extra), None),
    ));
    let end = SnapshotEnd {
        mode: SnapshotMode::Incremental,
        records: 5,
    };
    events.push((
        format!("{ORG}/LoginHistory"),
        SYNC_2.envelope(SfObject::LoginHistory, None, Some(end)),
    ));

    let mut first = Feed::new();
    let a = feed_all(&mut first, &events);
    let b = feed_all(&mut Feed::new(), &events);
    let bytes = |outputs: &[Output]| -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        outputs
            .iter()
            .map(|o| (o.key.clone().unwrap(), o.value.clone()))
            .collect()
    };
    assert_eq!(bytes(&a), bytes(&b));
    let moved: Vec<UserState> = a
        .iter()
        .filter(|o| key(o).ends_with(AVERY) && o.target == Target::UserState)
        .map(user)
        .collect();
    assert_eq!(
        moved.last().unwrap().last_activity_at,
        Some(1_714_608_000_000),
        "the latest success wins"
    );

    let login_events = &events[events.len() - 6..];
    let again = feed_all(&mut first, login_events);
    assert!(
        again.is_empty(),
        "re-processed logins publish nothing: {again:?}"
    );
}

/// Who holds what according to `rows` alone, built from scratch: what the index kept row by
/// row must always equal.
fn holdings_of<'a>(
    rows: impl IntoIterator<Item = &'a Assignment>,
) -> BTreeMap<String, Vec<String>> {
    let mut by_user: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for row in rows.into_iter().filter(|row| !row.revoked) {
        by_user
            .entry(row.user_id.clone())
            .or_default()
            .insert(row.license_id.clone());
    }
    by_user
        .into_iter()
        .map(|(user, ids)| (user, ids.into_iter().collect()))
        .collect()
}

proptest::proptest! {
    /// Snapshots of a few users and licences, full or incremental, with rows that move
    /// between users, are revoked, repeat a grant, vanish or arrive dead-lettered: after
    /// each, the rows are what the snapshot says (a full one keeps only its rows and, with
    /// their previous value, the dead-lettered ones), the index equals one rebuilt from the
    /// rows, and every user whose holdings changed was noted with what they held before.
    #[test]
    fn the_holdings_index_follows_the_rows(
        snapshots in proptest::collection::vec(
            (
                proptest::bool::ANY,
                proptest::collection::vec(
                    (
                        0..12u8,
                        0..5u8,
                        0..4u8,
                        proptest::option::of(proptest::bool::ANY),
                        proptest::bool::weighted(0.2),
                    ),
                    0..12,
                ),
            ),
            1..8,
        )
    ) {
        let mut assignments = Assignments::default();
        for (full, rows) in snapshots {
            let before = holdings_of(assignments.rows.values().map(|(row, _)| row));
            let mut dead_lettered = IdSet::default();
            let mut valid: BTreeMap<String, Assignment> = BTreeMap::new();
            for (id, user, license, revoked, dead) in rows {
                let id = format!("a{id}");
                if dead {
                    valid.remove(&id);
                    dead_lettered.insert(id);
                } else {
                    dead_lettered.remove(&id);
                    let row = Assignment::new(format!("u{user}"), format!("l{license}"), revoked);
                    valid.insert(id, row);
                }
            }
            let mut expected: BTreeMap<String, Assignment> = assignments
                .rows
                .iter()
                .filter(|(id, _)| !full || dead_lettered.contains(*id))
                .map(|(id, (row, _))| (id.clone(), row.clone()))
                .collect();
            expected.extend(valid.clone());

            let mut touched = Touched::default();
            assignments.begin_snapshot();
            for (id, row) in valid {
                assignments.put(id, row, &mut touched);
            }
            if full {
                assignments.retain_put(|id| dead_lettered.contains(id), &mut touched);
            }

            let rows: BTreeMap<String, Assignment> = assignments
                .rows
                .iter()
                .map(|(id, (row, _))| (id.clone(), row.clone()))
                .collect();
            proptest::prop_assert_eq!(&rows, &expected);
            let after = holdings_of(rows.values());
            let index: BTreeMap<String, Vec<String>> = assignments
                .by_user
                .keys()
                .map(|user| (user.clone(), assignments.held(user)))
                .collect();
            proptest::prop_assert_eq!(&index, &after);
            for (user, held) in &after {
                proptest::prop_assert!(assignments.holds_exactly(user, held), "{}", user);
            }
            for user in before.keys().chain(after.keys()) {
                if before.get(user) != after.get(user) {
                    let held_before = before.get(user).cloned().unwrap_or_default();
                    proptest::prop_assert_eq!(touched.get(user), Some(&held_before), "{}", user);
                }
            }
        }
    }
}

// An unchanged `User` record is republished from the state it built, without parsing.

/// The fixtures' users, with the JSON text each is sent with.
fn user_texts(pretty: bool) -> Vec<(Value, String)> {
    fixture!("query_user_with_profile_license.json")
        .into_iter()
        .map(|user| {
            let text = if pretty {
                serde_json::to_string_pretty(&user).unwrap()
            } else {
                user.to_string()
            };
            (user, text)
        })
        .collect()
}

/// A full user snapshot of `users`, each sent with its text.
fn full_users(feed: &mut Feed, sync: Sync, users: &[(Value, String)]) -> Vec<Output> {
    let mut outputs: Vec<Output> = users
        .iter()
        .flat_map(|(user, text)| {
            let key = sync.record_key(SfObject::User, user);
            feed.record_text(sync, SfObject::User, &key, text)
        })
        .collect();
    let n = users.len() as u64;
    outputs.extend(feed.end(sync, SfObject::User, SnapshotMode::Full, n));
    outputs
}

#[test]
fn an_unchanged_user_record_is_republished_from_the_published_state_unparsed() {
    let mut feed = Feed::new();
    let mut users = user_texts(false);
    full_users(&mut feed, SYNC_1, &users);

    // A mark on Avery's state that no record carries shows the state was reused; the
    // next user's record changes, so theirs is parsed.
    let known = feed.processor.orgs.get_mut(ORG).unwrap();
    known.users.get_mut(AVERY).unwrap().state.username = "reused@example.com".into();
    let (changed, text) = &mut users[0];
    assert_ne!(changed["Id"], AVERY);
    changed["Username"] = json!("renamed@example.com");
    *text = changed.to_string();
    let changed_id = changed["Id"].as_str().unwrap().to_owned();

    let outputs = full_users(&mut feed, SYNC_2, &users);
    assert_eq!(
        outputs.len(),
        users.len(),
        "one state per user, no tombstone"
    );
    let avery = user(find(&outputs, &format!("{ORG}/{AVERY}")));
    assert_eq!(avery.username, "reused@example.com");
    assert_eq!(avery.sync_id, "sync-2");
    assert_eq!(avery.observed_at, SYNC_2.fetched_ms);
    let renamed = user(find(&outputs, &format!("{ORG}/{changed_id}")));
    assert_eq!(renamed.username, "renamed@example.com");
    assert_eq!(renamed.sync_id, "sync-2");
}

#[test]
fn republishing_an_unchanged_user_gives_the_bytes_parsing_gives() {
    // One feed sees the same text twice; the other sees the first sync in another text
    // of the same records, so it parses the second.
    let same = user_texts(false);
    let other = user_texts(true);
    let success = login("0Ya2", AVERY, "2024-05-01T09:00:00.000+0000", "Success");
    let mut second_syncs = Vec::new();
    for first in [&same, &other] {
        let mut feed = Feed::new();
        let assigns = fixture!("query_permissionsetlicenseassign.json");
        feed.full(SYNC_1, SfObject::PermissionSetLicenseAssign, &assigns);
        full_users(&mut feed, SYNC_1, first);
        feed.record(SYNC_1, SfObject::LoginHistory, &success);
        second_syncs.push(full_users(&mut feed, SYNC_2, &same));
    }

    let [reused, parsed] = &second_syncs[..] else {
        unreachable!("two feeds")
    };
    assert_eq!(reused, parsed);
    let avery = user(find(reused, &format!("{ORG}/{AVERY}")));
    assert_eq!(avery.sync_id, "sync-2");
    assert!(avery.last_activity_at > Some(AVERY_LAST_LOGIN_MS));
    assert!(!avery.permission_set_licenses.is_empty());
}

#[test]
fn an_unchanged_user_is_republished_with_the_activity_and_licences_known_now() {
    let mut feed = Feed::new();
    let assigns = fixture!("query_permissionsetlicenseassign.json");
    feed.full(SYNC_1, SfObject::PermissionSetLicenseAssign, &assigns);
    let users = user_texts(false);
    full_users(&mut feed, SYNC_1, &users);

    // Other rules keep a published state's activity and licences current, so a lag is
    // made by hand: the stored state forgets its licences, and a later login is known
    // but not yet in it. Republishing must still say what parsing would.
    let later_login_ms = FETCHED_MS + HOUR_MS / 2;
    let org = feed.processor.orgs.get_mut(ORG).unwrap();
    let stored = &mut org.users.get_mut(AVERY).unwrap().state;
    let licences = std::mem::take(&mut stored.permission_set_licenses);
    assert!(!licences.is_empty());
    org.activity.insert(AVERY.to_owned(), later_login_ms);

    let outputs = full_users(&mut feed, SYNC_2, &users);
    let avery = user(find(&outputs, &format!("{ORG}/{AVERY}")));
    assert_eq!(avery.permission_set_licenses, licences);
    assert_eq!(avery.last_activity_at, Some(later_login_ms));
}

#[test]
fn an_unchanged_record_under_another_users_key_is_still_refused() {
    let mut feed = Feed::new();
    let users = user_texts(false);
    full_users(&mut feed, SYNC_1, &users);

    // The first user's record, unchanged, keyed as the second user.
    let (_, text) = &users[0];
    let (second, _) = &users[1];
    let key = SYNC_2.record_key(SfObject::User, second);
    let outputs = feed.record_text(SYNC_2, SfObject::User, &key, text);

    assert_eq!(outputs.len(), 1, "{outputs:?}");
    assert_eq!(outputs[0].target, Target::Dlq);
    assert_eq!(header(&outputs[0], HEADER_ERROR_CLASS), "key_mismatch");
}
