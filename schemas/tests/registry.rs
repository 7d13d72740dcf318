//! The registry path of [`Encoder`] against a registry double on loopback: registration
//! under the topic-name strategy, the Confluent frame, ids fetched once and cached,
//! unknown ids and registry failures as typed errors.

mod support;

use std::collections::BTreeMap;

use seatwatch_schemas::avro::AvroRecord;
use seatwatch_schemas::encoding::{CONFLUENT_HEADER_LEN, CONFLUENT_MAGIC};
use seatwatch_schemas::registry::REGISTRY_CONTENT_TYPE;
use seatwatch_schemas::*;
use secrecy::SecretString;
use support::RegistryDouble;

const LICENSES: &str = "test.seats.license-state";
const USERS: &str = "test.seats.user-state";

fn license() -> LicenseState {
    LicenseState {
        org_id: "00D5g000004XyZwEAK".into(),
        kind: LicenseKind::User,
        license_id: "1005g0000000001AAA".into(),
        name: "Salesforce".into(),
        label: "Salesforce".into(),
        definition_key: Some("SFDC".into()),
        status: LicenseStatus::Active,
        total: Some(300),
        used: 290,
        available: Some(10),
        utilization: Some(290.0 / 300.0),
        expires_at: None,
        observed_at: 1_714_566_896_000,
        sync_id: "s1".into(),
    }
}

fn user() -> UserState {
    UserState {
        org_id: "00D5g000004XyZwEAK".into(),
        user_id: "0055g00000AbCdEAAV".into(),
        username: "a@example.com".into(),
        active: true,
        user_type: "Standard".into(),
        profile_name: None,
        user_license_id: None,
        user_license: None,
        license_definition_key: None,
        last_login_at: Some(1),
        last_activity_at: None,
        permission_set_licenses: vec![],
        package_licenses: vec![],
        observed_at: 2,
        sync_id: "s1".into(),
    }
}

fn confluent(double: &RegistryDouble) -> Encoder {
    Encoder::confluent(RegistryClient::new(&double.url).unwrap())
}

fn confluent_bytes(id: u32, datum: &[u8]) -> Vec<u8> {
    [&[CONFLUENT_MAGIC][..], &id.to_be_bytes(), datum].concat()
}

#[tokio::test]
async fn registration_uses_the_topic_name_strategy_and_values_carry_the_id() {
    let double = RegistryDouble::start().await;
    let encoder = confluent(&double);
    assert_eq!(encoder.framing(), Framing::Confluent);

    let license_id = encoder.register::<LicenseState>(LICENSES).await.unwrap();
    let user_id = encoder.register::<UserState>(USERS).await.unwrap();
    assert_eq!(license_id, Some(SchemaId(1)));
    assert_eq!(user_id, Some(SchemaId(2)));
    assert_eq!(encoder.schema_id(LICENSES), Some(SchemaId(1)));

    // The same schema under another subject (another prefix) is the same id.
    let again = encoder
        .register::<LicenseState>("prod.seats.license-state")
        .await
        .unwrap();
    assert_eq!(again, Some(SchemaId(1)));
    assert_eq!(
        double.requests(),
        [
            "POST /subjects/test.seats.license-state-value/versions",
            "POST /subjects/test.seats.user-state-value/versions",
            "POST /subjects/prod.seats.license-state-value/versions",
        ]
    );

    let bytes = encoder.encode(LICENSES, &license()).unwrap();
    assert_eq!(bytes[0], CONFLUENT_MAGIC);
    assert_eq!(&bytes[1..CONFLUENT_HEADER_LEN], &1u32.to_be_bytes());
    assert_eq!(
        &bytes[CONFLUENT_HEADER_LEN..],
        LicenseState::codec().encode_datum(&license()).unwrap()
    );
    assert_eq!(
        encoder.decode::<LicenseState>(&bytes).await.unwrap(),
        license()
    );
    let bytes = encoder.encode(USERS, &user()).unwrap();
    assert_eq!(encoder.decode_cached::<UserState>(&bytes).unwrap(), user());

    // The encoder learnt both ids at registration: decoding fetched nothing.
    assert_eq!(double.fetches_of(1) + double.fetches_of(2), 0);
}

#[tokio::test]
async fn a_reader_fetches_an_unknown_id_once_and_caches_it() {
    let double = RegistryDouble::start().await;
    let writer = confluent(&double);
    writer.register::<LicenseState>(LICENSES).await.unwrap();
    let bytes = writer.encode(LICENSES, &license()).unwrap();

    let reader = confluent(&double);
    assert!(matches!(
        reader.decode_cached::<LicenseState>(&bytes),
        Err(EncodingError::SchemaNotCached { id: SchemaId(1) })
    ));
    let decodes = (0..16).map(|_| reader.decode::<LicenseState>(&bytes));
    for decoded in futures::future::join_all(decodes).await {
        assert_eq!(decoded.unwrap(), license());
    }
    assert_eq!(
        reader.decode_cached::<LicenseState>(&bytes).unwrap(),
        license()
    );
    assert_eq!(double.fetches_of(1), 1, "{:?}", double.requests());

    // Clones share the cache.
    let clone = reader.clone();
    clone.decode::<LicenseState>(&bytes).await.unwrap();
    assert_eq!(double.fetches_of(1), 1);
}

#[tokio::test]
async fn an_unknown_id_is_a_typed_error_and_is_asked_for_once() {
    let double = RegistryDouble::start().await;
    let reader = confluent(&double);
    let bytes = confluent_bytes(99, &[0x02, b'x']);
    for _ in 0..3 {
        match reader.decode::<LicenseState>(&bytes).await {
            Err(EncodingError::UnknownSchemaId { id, reason }) => {
                assert_eq!(id, SchemaId(99));
                assert!(reason.contains("registry does not know"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(double.fetches_of(99), 1);

    // A 404 that is not the registry's "schema not found" (here: a wrong path prefix)
    // is a configuration error, not an unknown id, and is not remembered.
    let misconfigured =
        Encoder::confluent(RegistryClient::new(&format!("{}/wrong", double.url)).unwrap());
    for _ in 0..2 {
        let err = misconfigured
            .decode::<LicenseState>(&bytes)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                EncodingError::Registry(RegistryError::Status { status: 404, .. })
            ),
            "{err}"
        );
        assert!(!err.is_retriable());
    }
}

#[tokio::test]
async fn without_a_registry_a_confluent_value_is_an_unknown_id() {
    let encoder = Encoder::from_url(None).unwrap();
    assert_eq!(encoder.framing(), Framing::SingleObject);
    let err = encoder
        .decode::<LicenseState>(&confluent_bytes(1, &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            EncodingError::UnknownSchemaId {
                id: SchemaId(1),
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("no schema registry"), "{err}");

    // Registration is a no-op and encoding writes single-object values.
    assert_eq!(
        encoder.register::<LicenseState>(LICENSES).await.unwrap(),
        None
    );
    let bytes = encoder.encode(LICENSES, &license()).unwrap();
    assert_eq!(bytes, license().to_avro().unwrap());
    assert_eq!(
        encoder.decode::<LicenseState>(&bytes).await.unwrap(),
        license()
    );
}

#[tokio::test]
async fn a_registry_encoder_still_reads_single_object_values() {
    // A topic that moves to the registry holds both framings for a while.
    let double = RegistryDouble::start().await;
    let encoder = confluent(&double);
    let old = license().to_avro().unwrap();
    assert_eq!(
        encoder.decode::<LicenseState>(&old).await.unwrap(),
        license()
    );
    assert!(double.requests().is_empty());
}

#[tokio::test]
async fn encoding_needs_the_topic_registered_for_that_record() {
    let double = RegistryDouble::start().await;
    let encoder = confluent(&double);
    let err = encoder.encode(LICENSES, &license()).unwrap_err();
    assert!(
        matches!(&err, EncodingError::NotRegistered { topic, record }
            if topic == LICENSES && record == "LicenseState"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("Encoder::register::<LicenseState>"),
        "{err}"
    );

    encoder.register::<LicenseState>(LICENSES).await.unwrap();
    assert!(matches!(
        encoder.encode(LICENSES, &user()),
        Err(EncodingError::NotRegistered { .. })
    ));
}

#[tokio::test]
async fn an_older_writer_schema_from_the_registry_is_resolved() {
    let double = RegistryDouble::start().await;

    // LicenseState as an older producer might have registered it: no definition_key,
    // which the current schema gives a default.
    let mut older: serde_json::Value = serde_json::from_str(LicenseState::SCHEMA).unwrap();
    older["fields"]
        .as_array_mut()
        .unwrap()
        .retain(|f| f["name"] != "definition_key");
    let older_text = older.to_string();
    let older_schema = apache_avro::Schema::parse_str(&older_text).unwrap();
    let id = double.insert_raw(&older_text);

    let mut record = apache_avro::to_value(license()).unwrap();
    if let apache_avro::types::Value::Record(fields) = &mut record {
        fields.retain(|(name, _)| name != "definition_key");
    }
    let record = record.resolve(&older_schema).unwrap();
    let datum = apache_avro::to_avro_datum(&older_schema, record).unwrap();

    let reader = confluent(&double);
    let read = reader
        .decode::<LicenseState>(&confluent_bytes(id, &datum))
        .await
        .unwrap();
    assert_eq!(
        read,
        LicenseState {
            definition_key: None,
            ..license()
        }
    );

    // The same bytes read as another record are refused by name, not misread.
    let err = reader
        .decode::<UserState>(&confluent_bytes(id, &datum))
        .await
        .unwrap_err();
    assert!(matches!(err, EncodingError::WrongRecord { .. }), "{err}");
}

#[tokio::test]
async fn a_broken_schema_from_the_registry_is_an_error_not_a_panic() {
    let double = RegistryDouble::start().await;
    // apache-avro's parser panics on this one (a nested record with an invalid name).
    let id = double.insert_raw(
        r#"{"type":"record","name":"R","fields":[
            {"name":"f","type":{"type":"record","name":"1x","fields":[]}}]}"#,
    );
    let not_json = double.insert_raw("not json");
    let reader = confluent(&double);
    for id in [id, not_json] {
        let err = reader
            .decode::<LicenseState>(&confluent_bytes(id, &[0]))
            .await
            .unwrap_err();
        assert!(
            matches!(err, EncodingError::UnknownSchemaId { .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("not a usable Avro schema"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn an_unavailable_registry_is_retriable_and_nothing_is_cached() {
    let double = RegistryDouble::start().await;
    let writer = confluent(&double);
    double.fail_next(1);
    let err = writer.register::<LicenseState>(LICENSES).await.unwrap_err();
    assert!(err.is_retriable(), "{err}");
    writer.register::<LicenseState>(LICENSES).await.unwrap();
    let bytes = writer.encode(LICENSES, &license()).unwrap();

    let reader = confluent(&double);
    double.fail_next(1);
    let err = reader.decode::<LicenseState>(&bytes).await.unwrap_err();
    assert!(err.is_retriable(), "{err}");
    assert_eq!(
        reader.decode::<LicenseState>(&bytes).await.unwrap(),
        license()
    );

    // A registry that is not there at all.
    let gone = Encoder::confluent(RegistryClient::new("http://127.0.0.1:9").unwrap());
    let err = gone.register::<LicenseState>(LICENSES).await.unwrap_err();
    assert!(err.is_retriable(), "{err}");
}

#[tokio::test]
async fn an_incompatible_schema_is_refused_with_what_to_do() {
    let double = RegistryDouble::start().await;
    double.make_incompatible("test.seats.license-state-value");
    let err = confluent(&double)
        .register::<LicenseState>(LICENSES)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            EncodingError::Registry(RegistryError::Incompatible { .. })
        ),
        "{err}"
    );
    assert!(!err.is_retriable());
    assert!(
        err.to_string().contains("publish a compatible version"),
        "{err}"
    );
}

#[tokio::test]
async fn the_client_speaks_the_registry_media_type_and_the_double_checks_it() {
    let double = RegistryDouble::start().await;
    // Our client passes the double's checks (every test above relies on it) ...
    let client = RegistryClient::new(&double.url).unwrap();
    client
        .register("t-value", LicenseState::SCHEMA)
        .await
        .unwrap();

    // ... and a request with plain JSON is refused, so the check is real.
    let response = reqwest::Client::new()
        .post(format!("{}/subjects/t-value/versions", double.url))
        .header("content-type", "application/json")
        .header("accept", REGISTRY_CONTENT_TYPE)
        .body(serde_json::json!({"schema": LicenseState::SCHEMA}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    assert_eq!(
        response.headers()["content-type"],
        REGISTRY_CONTENT_TYPE,
        "errors carry the media type too"
    );
}

#[tokio::test]
async fn basic_auth_is_sent_and_the_password_never_printed() {
    let double = RegistryDouble::start().await;
    let client = RegistryClient::new(&double.url)
        .unwrap()
        .with_basic_auth("seatwatch", SecretString::from("s3cret"));
    assert!(!format!("{client:?}").contains("s3cret"));
    let encoder = Encoder::confluent(client);
    encoder.register::<UserState>(USERS).await.unwrap();
    assert_eq!(
        double.last_authorization().as_deref(),
        Some("Basic c2VhdHdhdGNoOnMzY3JldA==")
    );
    assert!(!format!("{encoder:?}").contains("s3cret"));
}

#[tokio::test]
async fn every_contract_registers_under_its_own_subject_with_its_own_id() {
    let double = RegistryDouble::start().await;
    let encoder = confluent(&double);
    let mut ids = BTreeMap::new();
    for contract in contracts::all() {
        let topic = format!("it.{}", contract.topic);
        let client = encoder.registry().unwrap();
        let id = client
            .register(&registry::value_subject(&topic), contract.schema)
            .await
            .unwrap();
        ids.insert(contract.name, id);
    }
    assert_eq!(ids.len(), 5);
    let distinct: std::collections::BTreeSet<_> = ids.values().collect();
    assert_eq!(distinct.len(), 5, "{ids:?}");
}
