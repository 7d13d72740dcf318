//! Schema evolution: every contract's current schema equals its newest published version,
//! published versions never change, and each version is compatible, under the crate's
//! policy (full, transitive), with every version published before it: checked by the
//! resolution rules and by decoding data written with one version using the other.
//!
//! The policy itself is shown on inline schemas: adding an optional field with a default
//! passes; removing a field without a default, adding one without a default, retyping a
//! field or adding an enum symbol to an enum without a default fails.

use std::path::{Path, PathBuf};

use apache_avro::schema::{ResolvedSchema, Schema};
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::types::Value;
use seatwatch_schemas::avro::AvroRecord;
use seatwatch_schemas::compat::{self, Compatibility, POLICY};
use seatwatch_schemas::contracts::{self, Contract};
use seatwatch_schemas::*;

/// A digest of every published version (SHA-256 of its JSON, whitespace aside, so docs
/// and defaults count). A published version is frozen: if this table disagrees with a
/// file, the file was edited after release. Add a line for each new version.
const FROZEN: &[(&str, u32, &str)] = &[
    (
        "alert",
        1,
        "46ef726c297a023ff6dca30a6a70db4e5ebf7215d92bccba8e6c356c323e2c6b",
    ),
    (
        "license_state",
        1,
        "7831f99fb04a54e8efc7b4e0767b01410161822018af766843c93feb8b8a6786",
    ),
    (
        "recommendation",
        1,
        "c953af6a0c9ae42b647c941a198fd56365427f4796cf4553be26a40be21505ff",
    ),
    (
        "recommendation",
        2,
        "ec750b03be0444bd96fb461c70dde6969c48f3ec6df2af145cb863338663c59a",
    ),
    (
        "sync_status",
        1,
        "a36ace0a4ddc7de961aa73bee429bd89a0dfb89951bbe8db971e46bb371ad92d",
    ),
    (
        "user_state",
        1,
        "99e7d252fd3d3ea2e71cf50761499d61b801a8c9a8d8a9c59893d89d6261dc69",
    ),
    (
        "user_state",
        2,
        "911b5f21a2e230d8eeabb58e842482798b424cadbcb87cee1d5aff0f3a18f2ae",
    ),
];

fn avro_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("avro")
}

fn parse(text: &str) -> Schema {
    Schema::parse_str(text).unwrap()
}

/// SHA-256 of the schema's JSON with whitespace dropped and object keys sorted.
fn digest(text: &str) -> String {
    use sha2::Digest;
    fn compact(value: &serde_json::Value, out: &mut String) {
        match value {
            serde_json::Value::Object(object) => {
                let mut keys: Vec<&String> = object.keys().collect();
                keys.sort();
                out.push('{');
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::from(key.as_str()).to_string());
                    out.push(':');
                    compact(&object[key], out);
                }
                out.push('}');
            }
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    compact(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    compact(&serde_json::from_str(text).unwrap(), &mut out);
    hex::encode(sha2::Sha256::digest(out.as_bytes()))
}

/// The published versions of a contract on disk, as (version, text), in version order.
fn published_on_disk(name: &str) -> Vec<(u32, String)> {
    let dir = avro_dir().join("published").join(name);
    let mut versions: Vec<(u32, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let version = file
                .strip_prefix('v')
                .and_then(|rest| rest.strip_suffix(".avsc"))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{}: expected only v<n>.avsc files", path.display()));
            (version, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    versions.sort_by_key(|(version, _)| *version);
    versions
}

/// The rule that keeps the working copy and the published versions in step: the current
/// schema must equal the newest published version. An edit to the working copy alone is
/// refused with what to do about it.
fn check_current_is_published(
    name: &str,
    current: &str,
    published: &[(u32, String)],
) -> Result<(), String> {
    let Some((latest, latest_text)) = published.last() else {
        return Err(format!(
            "{name} has no published version; copy avro/{name}.avsc to \
             avro/published/{name}/v1.avsc"
        ));
    };
    let as_json = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
    if as_json(current) == as_json(latest_text) {
        return Ok(());
    }
    let next = latest + 1;
    Err(format!(
        "avro/{name}.avsc differs from its newest published version, \
         avro/published/{name}/v{latest}.avsc. Published versions never change: to release \
         this edit, copy avro/{name}.avsc to avro/published/{name}/v{next}.avsc, add it to \
         the record's AvroRecord::PUBLISHED and to FROZEN in tests/evolution.rs, and let \
         these tests check it against every earlier version; otherwise revert the edit"
    ))
}

#[test]
fn every_contract_has_its_published_versions_in_step() {
    for contract in contracts::all() {
        let on_disk = published_on_disk(contract.name);
        let versions: Vec<u32> = on_disk.iter().map(|(v, _)| *v).collect();
        let expected: Vec<u32> = (1..=on_disk.len() as u32).collect();
        assert_eq!(
            versions, expected,
            "{}: versions must be v1..vN",
            contract.name
        );

        let current_on_disk =
            std::fs::read_to_string(avro_dir().join(format!("{}.avsc", contract.name))).unwrap();
        assert_eq!(current_on_disk, contract.schema, "{}", contract.name);
        if let Err(message) = check_current_is_published(contract.name, contract.schema, &on_disk) {
            panic!("{message}");
        }

        // The codec must know every published version, or values written with one that
        // it left out would not decode.
        let embedded: Vec<&str> = contract.published.to_vec();
        let disk: Vec<&str> = on_disk.iter().map(|(_, text)| text.as_str()).collect();
        assert_eq!(
            embedded, disk,
            "{}: AvroRecord::PUBLISHED must list every file in avro/published/{}/, in order",
            contract.name, contract.name
        );
    }
}

#[test]
fn published_versions_are_frozen() {
    let mut seen = Vec::new();
    for contract in contracts::all() {
        for (version, text) in published_on_disk(contract.name) {
            let found = digest(&text);
            let frozen = FROZEN
                .iter()
                .find(|(name, v, _)| *name == contract.name && *v == version)
                .unwrap_or_else(|| {
                    panic!(
                        "avro/published/{}/v{version}.avsc is new: add (\"{}\", {version}, \
                         \"{found}\") to FROZEN",
                        contract.name, contract.name
                    )
                });
            assert_eq!(
                frozen.2, found,
                "avro/published/{}/v{version}.avsc was changed after it was published; \
                 restore it and publish the change as a new version",
                contract.name
            );
            seen.push((contract.name, version));
        }
    }
    assert_eq!(
        seen.len(),
        FROZEN.len(),
        "FROZEN lists a version that is gone"
    );
}

/// Checks `newer` against `older` under the policy, by the rules and by apache-avro's
/// checker for the backward direction (its forward verdict differs only on enum
/// defaults, which no published change relies on yet).
fn assert_compatible(name: &str, older: &str, newer: &str, label: &str) {
    let (older, newer) = (parse(older), parse(newer));
    if let Err(incompatible) = compat::check(POLICY, &older, &newer) {
        panic!("{name} {label}: {incompatible}");
    }
    SchemaCompatibility::can_read(&older, &newer)
        .unwrap_or_else(|e| panic!("{name} {label}: apache-avro disagrees: {e}"));
}

#[test]
fn every_version_is_compatible_with_every_earlier_one() {
    for contract in contracts::all() {
        let published = published_on_disk(contract.name);
        for (version, older) in &published {
            assert_compatible(
                contract.name,
                older,
                contract.schema,
                &format!("current against v{version}"),
            );
            for (later, newer) in published.iter().filter(|(v, _)| v > version) {
                assert_compatible(
                    contract.name,
                    older,
                    newer,
                    &format!("v{later} against v{version}"),
                );
            }
        }
    }
}

/// A value of `schema` for tests: `variant` picks union branches, enum symbols and
/// whether collections are empty, so a few variants reach every branch.
fn sample(schema: &Schema, resolved: &ResolvedSchema, variant: usize) -> Value {
    match schema {
        Schema::Null => Value::Null,
        Schema::Boolean => Value::Boolean(variant % 2 == 0),
        Schema::Int => Value::Int(7 + variant as i32),
        Schema::Long => Value::Long(-3 - variant as i64),
        Schema::Float => Value::Float(1.5),
        Schema::Double => Value::Double(0.25 * variant as f64),
        Schema::Bytes => Value::Bytes(vec![1, 2, 3]),
        Schema::String => Value::String(format!("text {variant}")),
        Schema::TimestampMillis => Value::TimestampMillis(1_714_566_896_000 + variant as i64),
        Schema::Array(array) => {
            let len = if variant % 3 == 0 { 0 } else { 2 };
            Value::Array(vec![sample(&array.items, resolved, variant); len])
        }
        Schema::Map(map) => Value::Map(
            [("k".to_string(), sample(&map.types, resolved, variant))]
                .into_iter()
                .take(variant % 2)
                .collect(),
        ),
        Schema::Union(union) => {
            let index = variant % union.variants().len();
            let branch = &union.variants()[index];
            Value::Union(index as u32, Box::new(sample(branch, resolved, variant)))
        }
        Schema::Record(record) => Value::Record(
            record
                .fields
                .iter()
                .map(|f| (f.name.clone(), sample(&f.schema, resolved, variant)))
                .collect(),
        ),
        Schema::Enum(e) => {
            let index = variant % e.symbols.len();
            Value::Enum(index as u32, e.symbols[index].clone())
        }
        Schema::Ref { name } => sample(resolved.get_names()[name], resolved, variant),
        other => panic!("no sample for {other:?}; extend sample() in tests/evolution.rs"),
    }
}

/// Writes sample values with `writer` and reads them with `reader`, both as bare datums
/// and, when `T` is the reader's type, through the codec's single-object path.
fn assert_reads(writer_text: &str, reader_text: &str, label: &str) {
    let writer = parse(writer_text);
    let reader = parse(reader_text);
    let resolved = ResolvedSchema::try_from(&writer).unwrap();
    for variant in 0..6 {
        let value = sample(&writer, &resolved, variant);
        let datum = apache_avro::to_avro_datum(&writer, value).unwrap();
        apache_avro::from_avro_datum(&writer, &mut &datum[..], Some(&reader))
            .unwrap_or_else(|e| panic!("{label}, sample {variant}: {e}"));
    }
}

/// Values written with `published` decode through `T`'s codec, single-object framed.
fn assert_codec_reads<T: AvroRecord>(published: &str) {
    let writer = parse(published);
    let resolved = ResolvedSchema::try_from(&writer).unwrap();
    for variant in 0..6 {
        let datum =
            apache_avro::to_avro_datum(&writer, sample(&writer, &resolved, variant)).unwrap();
        let header = seatwatch_schemas::avro::fingerprint(&writer);
        let bytes = [&[0xC3, 0x01][..], &header, &datum].concat();
        if let Err(e) = T::from_avro(&bytes) {
            panic!("{}: sample {variant}: {e}", T::codec().name());
        }
    }
}

#[test]
fn current_schemas_read_data_written_with_every_published_version() {
    for contract in contracts::all() {
        for (version, published) in published_on_disk(contract.name) {
            let label = format!("{} v{version} written, current read", contract.name);
            assert_reads(&published, contract.schema, &label);
        }
    }
    for published in LicenseState::PUBLISHED {
        assert_codec_reads::<LicenseState>(published);
    }
    for published in UserState::PUBLISHED {
        assert_codec_reads::<UserState>(published);
    }
    for published in SyncStatus::PUBLISHED {
        assert_codec_reads::<SyncStatus>(published);
    }
    for published in Alert::PUBLISHED {
        assert_codec_reads::<Alert>(published);
    }
    for published in Recommendation::PUBLISHED {
        assert_codec_reads::<Recommendation>(published);
    }
}

#[test]
fn published_versions_read_data_written_with_the_current_schema() {
    // Forward: a consumer that has not upgraded yet reads what today's seatwatch writes.
    assert_eq!(POLICY, Compatibility::Full);
    for contract in contracts::all() {
        for (version, published) in published_on_disk(contract.name) {
            let label = format!("{} current written, v{version} read", contract.name);
            assert_reads(contract.schema, &published, &label);
        }
    }
}

// The policy, on inline schemas.

const BASE: &str = r#"{"type": "record", "name": "Seat", "fields": [
    {"name": "org_id", "type": "string"},
    {"name": "used", "type": "long"},
    {"name": "status", "type": {"type": "enum", "name": "Status",
        "symbols": ["ACTIVE", "UNKNOWN"], "default": "UNKNOWN"}},
    {"name": "plan", "type": {"type": "enum", "name": "Plan", "symbols": ["FREE", "PAID"]}}
]}"#;

/// BASE with `edit` applied to its text.
fn edited(find: &str, replace: &str) -> String {
    assert!(BASE.contains(find), "{find}");
    BASE.replace(find, replace)
}

fn policy(old: &str, new: &str) -> Result<(), compat::Incompatible> {
    compat::check(POLICY, &parse(old), &parse(new))
}

#[test]
fn adding_an_optional_field_with_a_default_passes() {
    let new = edited(
        r#"{"name": "used", "type": "long"},"#,
        r#"{"name": "used", "type": "long"},
           {"name": "label", "type": ["null", "string"], "default": null},"#,
    );
    policy(BASE, &new).unwrap();
    SchemaCompatibility::mutual_read(&parse(BASE), &parse(&new)).unwrap();
    assert_reads(BASE, &new, "old written, new read");
    assert_reads(&new, BASE, "new written, old read");
}

#[test]
fn removing_a_field_without_a_default_fails() {
    let new = edited(r#"{"name": "used", "type": "long"},"#, "");
    let err = policy(BASE, &new).unwrap_err();
    assert!(
        err.backward.is_empty(),
        "new readers ignore the extra field"
    );
    assert_eq!(err.forward.len(), 1, "{err}");
    assert_eq!(err.forward[0].path, "Seat.used");
    assert!(err.to_string().contains("not forward compatible"), "{err}");
    // apache-avro's checker agrees: old readers cannot read new values.
    assert!(SchemaCompatibility::can_read(&parse(&new), &parse(BASE)).is_err());
}

#[test]
fn removing_a_field_that_had_a_default_passes() {
    let with_default = edited(
        r#"{"name": "used", "type": "long"}"#,
        r#"{"name": "used", "type": "long", "default": 0}"#,
    );
    let removed = edited(r#"{"name": "used", "type": "long"},"#, "");
    policy(&with_default, &removed).unwrap();
}

#[test]
fn adding_a_field_without_a_default_fails() {
    let new = edited(
        r#"{"name": "used", "type": "long"},"#,
        r#"{"name": "used", "type": "long"}, {"name": "total", "type": "long"},"#,
    );
    let err = policy(BASE, &new).unwrap_err();
    assert_eq!(err.backward[0].path, "Seat.total", "{err}");
    assert!(err.forward.is_empty());
    assert!(SchemaCompatibility::can_read(&parse(BASE), &parse(&new)).is_err());
}

#[test]
fn retyping_a_field_fails() {
    let new = edited(
        r#"{"name": "used", "type": "long"}"#,
        r#"{"name": "used", "type": "string"}"#,
    );
    let err = policy(BASE, &new).unwrap_err();
    assert_eq!(err.backward[0].path, "Seat.used");
    assert!(err.backward[0].message.contains("long"), "{err}");
    assert_eq!(err.forward[0].path, "Seat.used");
    assert!(SchemaCompatibility::can_read(&parse(BASE), &parse(&new)).is_err());
    assert!(SchemaCompatibility::can_read(&parse(&new), &parse(BASE)).is_err());

    // Making a field nullable is a retype too: old readers cannot take a null.
    let nullable = edited(
        r#"{"name": "used", "type": "long"}"#,
        r#"{"name": "used", "type": ["null", "long"], "default": null}"#,
    );
    let err = policy(BASE, &nullable).unwrap_err();
    assert!(err.backward.is_empty());
    assert!(err.forward[0].path.starts_with("Seat.used"), "{err}");
}

#[test]
fn widening_by_promotion_is_only_backward_compatible() {
    let int = edited(
        r#"{"name": "used", "type": "long"}"#,
        r#"{"name": "used", "type": "int"}"#,
    );
    compat::check(Compatibility::Backward, &parse(&int), &parse(BASE)).unwrap();
    let err = policy(&int, BASE).unwrap_err();
    assert!(err.backward.is_empty() && !err.forward.is_empty(), "{err}");
}

#[test]
fn an_enum_symbol_may_be_added_only_to_an_enum_with_a_default() {
    // `Status` has a default: a reader that does not know the new symbol reads UNKNOWN.
    let new = edited(
        r#"["ACTIVE", "UNKNOWN"]"#,
        r#"["ACTIVE", "UNKNOWN", "SUSPENDED"]"#,
    );
    policy(BASE, &new).unwrap();

    // apache-avro 0.21's checker disagrees, although its decoder reads such values: the
    // reason this crate has its own checker.
    assert!(SchemaCompatibility::can_read(&parse(&new), &parse(BASE)).is_err());
    let new_schema = parse(&new);
    let value = Value::Record(vec![
        ("org_id".into(), Value::String("00D".into())),
        ("used".into(), Value::Long(1)),
        ("status".into(), Value::Enum(2, "SUSPENDED".into())),
        ("plan".into(), Value::Enum(0, "FREE".into())),
    ]);
    let datum = apache_avro::to_avro_datum(&new_schema, value).unwrap();
    let read =
        apache_avro::from_avro_datum(&new_schema, &mut &datum[..], Some(&parse(BASE))).unwrap();
    let Value::Record(fields) = read else {
        panic!("not a record")
    };
    assert_eq!(fields[2].1, Value::Enum(1, "UNKNOWN".into()));

    // `Plan` has no default: a new symbol would be unreadable by old consumers.
    let new = edited(r#"["FREE", "PAID"]"#, r#"["FREE", "PAID", "TRIAL"]"#);
    let err = policy(BASE, &new).unwrap_err();
    assert_eq!(err.forward[0].path, "Seat.plan", "{err}");
    assert!(err.forward[0].message.contains("TRIAL"), "{err}");
}

#[test]
fn renaming_a_record_fails_unless_the_old_name_is_an_alias() {
    let renamed = edited(r#""name": "Seat""#, r#""name": "Pool""#);
    assert!(policy(BASE, &renamed).is_err());
    let aliased = edited(
        r#""name": "Seat""#,
        r#""name": "Pool", "aliases": ["Seat"]"#,
    );
    compat::check(Compatibility::Backward, &parse(BASE), &parse(&aliased)).unwrap();
}

#[test]
fn an_edit_without_a_new_published_version_is_refused_with_instructions() {
    let published = vec![(1, BASE.to_string())];
    check_current_is_published("seat", BASE, &published).unwrap();

    // Whitespace is not an edit.
    let reformatted = BASE.replace('\n', " ");
    check_current_is_published("seat", &reformatted, &published).unwrap();

    let edited = edited(
        r#""type": "long""#,
        r#""type": "long", "doc": "Seats in use.""#,
    );
    let message = check_current_is_published("seat", &edited, &published).unwrap_err();
    assert!(
        message.contains("copy avro/seat.avsc to avro/published/seat/v2.avsc"),
        "{message}"
    );

    // Once the edit is published as v2, the working copy is in step again.
    let published = vec![(1, BASE.to_string()), (2, edited.clone())];
    check_current_is_published("seat", &edited, &published).unwrap();
}

#[test]
fn contracts_list_each_topic_once() {
    let all: Vec<Contract> = contracts::all().to_vec();
    for (i, contract) in all.iter().enumerate() {
        assert!(all[i + 1..]
            .iter()
            .all(|other| other.topic != contract.topic));
        assert!(all[i + 1..].iter().all(|other| other.name != contract.name));
    }
}

#[test]
fn a_user_state_written_with_version_1_reads_with_no_last_activity() {
    let v1_text = UserState::PUBLISHED[0];
    assert!(!v1_text.contains("last_activity_at"));
    let v1 = AvroCodec::new(v1_text).unwrap();
    let user = UserState {
        org_id: "00D5g000004XyZwEAK".into(),
        user_id: "0055g00000AbCdEAAV".into(),
        username: "a@example.com".into(),
        active: true,
        user_type: "Standard".into(),
        profile_name: None,
        user_license_id: Some("100x".into()),
        user_license: Some("Salesforce".into()),
        license_definition_key: None,
        last_login_at: Some(1_700_000_000_000),
        last_activity_at: None,
        permission_set_licenses: vec!["0PLx".into()],
        package_licenses: vec![],
        observed_at: 1_714_566_896_000,
        sync_id: "s1".into(),
    };
    // The value as a version-1 writer has it: every field but last_activity_at.
    let mut value = apache_avro::to_value(&user).unwrap();
    if let Value::Record(fields) = &mut value {
        fields.retain(|(name, _)| name != "last_activity_at");
    }
    let value = value.resolve(v1.schema()).unwrap();
    let mut bytes = vec![0xC3, 0x01];
    bytes.extend_from_slice(&v1.fingerprint());
    bytes.extend(apache_avro::to_avro_datum(v1.schema(), value).unwrap());

    let read = UserState::from_avro(&bytes).unwrap();
    assert_eq!(read, user);

    // And a version-2 value with the field set keeps it.
    let active = UserState {
        last_activity_at: Some(1_714_000_000_000),
        ..user
    };
    let read = UserState::from_avro(&active.to_avro().unwrap()).unwrap();
    assert_eq!(read.last_activity_at, Some(1_714_000_000_000));
}
