//! Property tests of the decoders and encoders.
//!
//! - No input makes a decoder panic or abort: arbitrary bytes, arbitrary payloads behind a
//!   valid header of either framing, and valid values with bytes flipped or cut, fed to
//!   every record type through every decoding path (the codec, a registry-less encoder,
//!   a registry encoder from its cache and through the registry double).
//! - Every valid record round-trips through both framings; the direct (serde) writer's
//!   datum decodes to the value, and for records without maps (whose entry order the
//!   generic path leaves to a `HashMap`) it is byte for byte the generic `Value` path's.

mod support;

use std::collections::BTreeMap;
use std::sync::OnceLock;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::Index;
use seatwatch_schemas::avro::AvroRecord;
use seatwatch_schemas::*;
use support::RegistryDouble;

/// One registry double and the encoders shared by every case.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    _double: RegistryDouble,
    registry: Encoder,
    plain: Encoder,
}

const LICENSES: &str = "fuzz.seats.license-state";
const USERS: &str = "fuzz.seats.user-state";
const SYNCS: &str = "fuzz.salesforce.sync-status";
const ALERTS: &str = "fuzz.seats.alerts";
const RECOMMENDATIONS: &str = "fuzz.seats.recommendations";

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (double, registry) = runtime.block_on(async {
            let double = RegistryDouble::start().await;
            let registry = Encoder::confluent(RegistryClient::new(&double.url).unwrap());
            registry.register::<LicenseState>(LICENSES).await.unwrap();
            registry.register::<UserState>(USERS).await.unwrap();
            registry.register::<SyncStatus>(SYNCS).await.unwrap();
            registry.register::<Alert>(ALERTS).await.unwrap();
            registry
                .register::<Recommendation>(RECOMMENDATIONS)
                .await
                .unwrap();
            (double, registry)
        });
        Fixture {
            runtime,
            _double: double,
            registry,
            plain: Encoder::single_object(),
        }
    })
}

/// Feeds `bytes` to every decoding path as `T`. Results are ignored: only a panic (a
/// failed case) or an abort (a dead test binary) would be a finding.
fn decode_everywhere<T: AvroRecord>(bytes: &[u8]) {
    let f = fixture();
    let _ = T::from_avro(bytes);
    let _ = Header::parse(bytes);
    let _ = f.plain.decode_cached::<T>(bytes);
    let _ = f.registry.decode_cached::<T>(bytes);
    let _ = f.runtime.block_on(f.registry.decode::<T>(bytes));
    let _ = f.runtime.block_on(f.plain.decode::<T>(bytes));
}

fn decode_as_every_record(bytes: &[u8]) {
    decode_everywhere::<LicenseState>(bytes);
    decode_everywhere::<UserState>(bytes);
    decode_everywhere::<SyncStatus>(bytes);
    decode_everywhere::<Alert>(bytes);
    decode_everywhere::<Recommendation>(bytes);
}

/// `value` in both framings.
fn both_framings<T: AvroRecord>(topic: &str, value: &T) -> [Vec<u8>; 2] {
    let f = fixture();
    [
        f.plain.encode(topic, value).unwrap(),
        f.registry.encode(topic, value).unwrap(),
    ]
}

fn round_trips<T: AvroRecord + PartialEq + std::fmt::Debug>(topic: &str, value: T) {
    let f = fixture();
    let direct = T::codec().encode_datum(&value).unwrap();
    assert_eq!(T::codec().decode_datum::<T>(&direct).unwrap(), value);
    let [single, confluent] = both_framings(topic, &value);
    assert_eq!(Framing::of(&single), Some(Framing::SingleObject));
    assert_eq!(Framing::of(&confluent), Some(Framing::Confluent));
    assert_eq!(T::from_avro(&single).unwrap(), value);
    assert_eq!(f.plain.decode_cached::<T>(&single).unwrap(), value);
    assert_eq!(f.registry.decode_cached::<T>(&single).unwrap(), value);
    assert_eq!(f.registry.decode_cached::<T>(&confluent).unwrap(), value);
}

/// The codec writes exactly what apache-avro's generic path writes. Only for records
/// without maps: the generic path writes a map's entries in hash order.
fn same_bytes_as_generic<T: AvroRecord + std::fmt::Debug>(value: &T) {
    let codec = T::codec();
    assert_eq!(
        codec.encode_datum(value).unwrap(),
        codec.encode_datum_generic(value).unwrap(),
        "the codec and apache-avro's generic path disagree on {value:?}"
    );
}

/// The codec writes exactly what apache-avro's own serde writer writes, maps included
/// (both take a `BTreeMap`'s entries in order).
fn same_bytes_as_apache_avro_serde<T: AvroRecord + std::fmt::Debug>(value: &T) {
    let codec = T::codec();
    let mut theirs = Vec::new();
    apache_avro::write_avro_datum_ref(codec.schema(), value, &mut theirs).unwrap();
    assert_eq!(
        codec.encode_datum(value).unwrap(),
        theirs,
        "the codec and apache-avro's serde writer disagree on {value:?}"
    );
}

/// How to damage a valid value: bytes to flip, a number to splice in (a huge count or
/// length where a small one stood is the classic attack on a decoder), where to cut.
#[derive(Debug, Clone)]
struct Damage {
    flips: Vec<(Index, u8)>,
    number: i64,
    cut: Index,
}

fn damage() -> impl Strategy<Value = Damage> {
    (
        vec((any::<Index>(), 1..=255u8), 0..4),
        number(),
        any::<Index>(),
    )
        .prop_map(|(flips, number, cut)| Damage { flips, number, cut })
}

/// Damages both framings of `value` and decodes the results: with bytes flipped, cut
/// short, and with `damage.number` spliced in at every position in turn.
fn mutate_and_decode<T: AvroRecord>(topic: &str, value: &T, damage: &Damage) {
    for valid in both_framings(topic, value) {
        for at in 0..=valid.len() {
            let mut spliced = valid.clone();
            spliced.splice(at..at, varint(damage.number));
            decode_everywhere::<T>(&spliced);
        }

        let mut bytes = valid;
        for (at, byte) in &damage.flips {
            let i = at.index(bytes.len());
            bytes[i] ^= byte;
        }
        decode_as_every_record(&bytes);
        bytes.truncate(damage.cut.index(bytes.len() + 1));
        decode_as_every_record(&bytes);
    }
}

// Strategies for valid records.

fn text() -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..12).prop_map(|chars| chars.into_iter().collect())
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text())
}

/// Any double but NaN, which never equals itself and so cannot be compared.
fn double() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("NaN", |x| !x.is_nan())
}

fn license_kind() -> impl Strategy<Value = LicenseKind> {
    prop_oneof![
        Just(LicenseKind::User),
        Just(LicenseKind::PermissionSet),
        Just(LicenseKind::Package),
    ]
}

fn license_state() -> impl Strategy<Value = LicenseState> {
    let status = prop_oneof![
        Just(LicenseStatus::Active),
        Just(LicenseStatus::Disabled),
        Just(LicenseStatus::Expired),
        Just(LicenseStatus::Free),
        Just(LicenseStatus::Trial),
        Just(LicenseStatus::Unknown),
    ];
    (
        (
            text(),
            license_kind(),
            text(),
            text(),
            text(),
            opt_text(),
            status,
        ),
        (
            any::<Option<i64>>(),
            any::<i64>(),
            any::<Option<i64>>(),
            proptest::option::of(double()),
            any::<Option<i64>>(),
            any::<i64>(),
            text(),
        ),
    )
        .prop_map(
            |(
                (org_id, kind, license_id, name, label, definition_key, status),
                (total, used, available, utilization, expires_at, observed_at, sync_id),
            )| LicenseState {
                org_id,
                kind,
                license_id,
                name,
                label,
                definition_key,
                status,
                total,
                used,
                available,
                utilization,
                expires_at,
                observed_at,
                sync_id,
            },
        )
}

fn user_state() -> impl Strategy<Value = UserState> {
    (
        (
            text(),
            text(),
            text(),
            any::<bool>(),
            text(),
            opt_text(),
            opt_text(),
        ),
        (
            opt_text(),
            opt_text(),
            (any::<Option<i64>>(), any::<Option<i64>>()),
            vec(text(), 0..4),
            vec(text(), 0..4),
            any::<i64>(),
            text(),
        ),
    )
        .prop_map(
            |(
                (org_id, user_id, username, active, user_type, profile_name, user_license_id),
                (
                    user_license,
                    license_definition_key,
                    (last_login_at, last_activity_at),
                    permission_set_licenses,
                    package_licenses,
                    observed_at,
                    sync_id,
                ),
            )| UserState {
                org_id,
                user_id,
                username,
                active,
                user_type,
                profile_name,
                user_license_id,
                user_license,
                license_definition_key,
                last_login_at,
                last_activity_at,
                permission_set_licenses,
                package_licenses,
                observed_at,
                sync_id,
            },
        )
}

fn sync_status() -> impl Strategy<Value = SyncStatus> {
    let outcome = prop_oneof![
        Just(SyncOutcome::Success),
        Just(SyncOutcome::Failed),
        Just(SyncOutcome::AuthFailed),
        Just(SyncOutcome::PausedForQuota),
        Just(SyncOutcome::Unknown),
    ];
    (
        (text(), text(), text(), outcome, any::<i64>(), any::<i64>()),
        (
            any::<Option<i64>>(),
            btree_map(text(), any::<i64>(), 0..4),
            any::<i64>(),
            any::<Option<i64>>(),
            any::<Option<i64>>(),
            opt_text(),
            opt_text(),
        ),
    )
        .prop_map(
            |(
                (org_id, org_name, sync_id, outcome, started_at, finished_at),
                (
                    last_success_at,
                    records,
                    api_calls,
                    api_used,
                    api_limit,
                    error_class,
                    error_message,
                ),
            )| SyncStatus {
                org_id,
                org_name,
                sync_id,
                outcome,
                started_at,
                finished_at,
                last_success_at,
                records,
                api_calls,
                api_used,
                api_limit,
                error_class,
                error_message,
            },
        )
}

fn alert() -> impl Strategy<Value = Alert> {
    let severity = prop_oneof![
        Just(Severity::Info),
        Just(Severity::Warning),
        Just(Severity::Critical),
    ];
    let status = prop_oneof![Just(AlertStatus::Firing), Just(AlertStatus::Resolved)];
    (
        (text(), text(), severity, status, text(), opt_text()),
        (
            btree_map(text(), text(), 0..4),
            text(),
            double(),
            double(),
            any::<i64>(),
            any::<Option<i64>>(),
            any::<i64>(),
        ),
    )
        .prop_map(
            |(
                (fingerprint, rule, severity, status, org_id, pool),
                (labels, summary, value, threshold, starts_at, ends_at, sent_at),
            )| Alert {
                fingerprint,
                rule,
                severity,
                status,
                org_id,
                pool,
                labels: labels.into_iter().collect::<BTreeMap<_, _>>(),
                summary,
                value,
                threshold,
                starts_at,
                ends_at,
                sent_at,
            },
        )
}

fn recommendation() -> impl Strategy<Value = Recommendation> {
    let action = prop_oneof![
        Just(RecommendationAction::Reclaim),
        Just(RecommendationAction::Downgrade),
        Just(RecommendationAction::ResizePool),
        Just(RecommendationAction::Unknown),
    ];
    let evidence = (
        any::<Option<i64>>(),
        any::<Option<i32>>(),
        any::<bool>(),
        vec(text(), 0..4),
        text(),
    )
        .prop_map(|(last_login_at, days_idle, active, assignments, reason)| {
            RecommendationEvidence {
                last_login_at,
                days_idle,
                active,
                assignments,
                reason,
            }
        });
    (
        (
            text(),
            opt_text(),
            opt_text(),
            license_kind(),
            text(),
            text(),
        ),
        (
            action,
            evidence,
            proptest::option::of(double()),
            text(),
            0.0..=1.0f64,
            any::<i64>(),
        ),
    )
        .prop_map(
            |(
                (org_id, user_id, username, license_kind, license_id, license_name),
                (action, evidence, estimated_monthly_saving, currency, confidence, observed_at),
            )| Recommendation {
                org_id,
                user_id,
                username,
                license_kind,
                license_id,
                license_name,
                action,
                evidence,
                estimated_monthly_saving,
                currency,
                confidence,
                observed_at,
            },
        )
}

/// Bytes shaped like Avro data: small numbers, huge varints (lengths and counts that the
/// rest cannot hold), zeros ending blocks and nulls, and any byte. Purely random bytes
/// rarely put a huge count where an array's count is read; these often do.
fn avro_shaped() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        any::<u8>().prop_map(|b| vec![b]),
        (0..8i64).prop_map(varint),
        number().prop_map(varint),
        Just(vec![0]),
    ];
    vec(token, 0..40).prop_map(|tokens| tokens.concat())
}

/// A number of any magnitude, equally likely to have 1 or 60 significant bits, so that
/// counts just under apache-avro's own 512 MiB limit come up (uniform `i64`s are almost
/// all far above it, where apache-avro refuses them by itself).
fn number() -> impl Strategy<Value = i64> {
    (1u32..63, any::<i64>(), any::<bool>()).prop_map(|(bits, random, negative)| {
        let magnitude = random & ((1i64 << bits) - 1);
        if negative {
            -magnitude
        } else {
            magnitude
        }
    })
}

/// An Avro zig-zag varint.
fn varint(n: i64) -> Vec<u8> {
    let mut raw = ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        let byte = (raw & 0x7f) as u8;
        raw >>= 7;
        if raw == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in vec(any::<u8>(), 0..300)) {
        decode_as_every_record(&bytes);
    }

    #[test]
    fn arbitrary_payloads_behind_valid_headers_never_panic_a_decoder(
        record in 0..5usize,
        confluent in any::<bool>(),
        payload in prop_oneof![vec(any::<u8>(), 0..300), avro_shaped()],
    ) {
        let f = fixture();
        let (topic, codec) = match record {
            0 => (LICENSES, LicenseState::codec()),
            1 => (USERS, UserState::codec()),
            2 => (SYNCS, SyncStatus::codec()),
            3 => (ALERTS, Alert::codec()),
            _ => (RECOMMENDATIONS, Recommendation::codec()),
        };
        let header = if confluent {
            let id = f.registry.schema_id(topic).unwrap();
            [&[0u8][..], &id.0.to_be_bytes()].concat()
        } else {
            [&[0xC3u8, 0x01][..], &codec.fingerprint()].concat()
        };
        decode_as_every_record(&[header, payload].concat());
    }

    #[test]
    fn license_states_round_trip_in_both_framings(value in license_state()) {
        same_bytes_as_generic(&value);
        same_bytes_as_apache_avro_serde(&value);
        round_trips(LICENSES, value);
    }

    #[test]
    fn user_states_round_trip_in_both_framings(value in user_state()) {
        same_bytes_as_generic(&value);
        same_bytes_as_apache_avro_serde(&value);
        round_trips(USERS, value);
    }

    #[test]
    fn sync_statuses_round_trip_in_both_framings(value in sync_status()) {
        same_bytes_as_apache_avro_serde(&value);
        round_trips(SYNCS, value);
    }

    #[test]
    fn alerts_round_trip_in_both_framings(value in alert()) {
        same_bytes_as_apache_avro_serde(&value);
        round_trips(ALERTS, value);
    }

    #[test]
    fn recommendations_round_trip_in_both_framings(value in recommendation()) {
        same_bytes_as_generic(&value);
        same_bytes_as_apache_avro_serde(&value);
        round_trips(RECOMMENDATIONS, value);
    }
}

proptest! {
    // Each case decodes a few hundred damaged values (one per splice position), so fewer
    // cases cover as much as the default 256 do elsewhere.
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn mutated_license_states_never_panic_a_decoder(
        value in license_state(), damage in damage(),
    ) {
        mutate_and_decode(LICENSES, &value, &damage);
    }

    #[test]
    fn mutated_user_states_never_panic_a_decoder(
        value in user_state(), damage in damage(),
    ) {
        mutate_and_decode(USERS, &value, &damage);
    }

    #[test]
    fn mutated_sync_statuses_never_panic_a_decoder(
        value in sync_status(), damage in damage(),
    ) {
        mutate_and_decode(SYNCS, &value, &damage);
    }

    #[test]
    fn mutated_alerts_never_panic_a_decoder(
        value in alert(), damage in damage(),
    ) {
        mutate_and_decode(ALERTS, &value, &damage);
    }

    #[test]
    fn mutated_recommendations_never_panic_a_decoder(
        value in recommendation(), damage in damage(),
    ) {
        mutate_and_decode(RECOMMENDATIONS, &value, &damage);
    }
}
