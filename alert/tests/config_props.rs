//! Property tests of the alert service's config parser, through
//! [`AlertArgs::load`] on a temporary TOML file (the path a deployment takes).
//!
//! - Arbitrary text, and TOML built from the real keys with values of random types and
//!   ranges, never panics the loader: it answers `Ok` or `Err`.
//! - Whatever loads is valid: `validate()` agrees, and the ranges it promises hold
//!   (evaluation interval, utilisation threshold and its clear level, idle days, prices).
//! - A config within the documented ranges loads with exactly the values written.
//! - A webhook secret written inline (any TOML type) is refused, and the error never
//!   repeats the value.
//!
//! Each property runs 64 cases by default (a few seconds: each case writes a file); set
//! `PROPTEST_CASES=N` for more, e.g.
//! `PROPTEST_CASES=2000 cargo test -p seatwatch-alert --test config_props`.

use std::io::Write;

use proptest::prelude::*;
use seatwatch_alert::{AlertArgs, AlertConfig};

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

/// Loads `text` as the config file, as `seatwatch alert --config` does.
fn load(text: &str) -> Result<AlertConfig, String> {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    AlertArgs {
        config: Some(file.path().into()),
        ..AlertArgs::default()
    }
    .load()
    .map_err(|e| e.to_string())
}

/// A TOML value of any type, as text.
fn toml_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        (0u32..3).prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| {
            if f.is_nan() {
                "nan".to_owned()
            } else if f.is_infinite() {
                if f > 0.0 { "inf" } else { "-inf" }.to_owned()
            } else {
                format!("{f:?}")
            }
        }),
        (-2.0f64..2.0).prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        "[ -~&&[^\"\\\\]]{0,16}".prop_map(|s| format!("\"{s}\"")),
        Just("\"http://127.0.0.1:9/hook\"".to_owned()),
        Just("1979-05-27T07:32:00Z".to_owned()),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(("[a-z_]{1,8}", inner), 0..3).prop_map(|pairs| {
                let fields: Vec<String> = pairs.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", fields.join(", "))
            }),
        ]
    })
}

/// The config's real keys, by table (`""` is the top level).
const KEYS: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "listen_addr",
            "group_id",
            "notify_group_id",
            "evaluate_interval_secs",
            "repeat_interval_secs",
            "bogus",
        ],
    ),
    (
        "kafka",
        &["bootstrap_servers", "topic_prefix", "create_topics"],
    ),
    ("webhook", &["url", "secret", "timeout_secs"]),
    (
        "alertmanager",
        &["url", "resend_interval_secs", "timeout_secs"],
    ),
    ("prices", &["currency", "monthly"]),
    (
        "rules.utilization",
        &["enabled", "threshold", "clear_below", "for_secs"],
    ),
    ("rules.exhausted", &["enabled", "max_available", "for_secs"]),
    ("rules.expiring", &["enabled", "lead_days"]),
    (
        "rules.idle_seats",
        &["enabled", "idle_days", "min_idle_seats"],
    ),
    (
        "rules.forecast",
        &[
            "enabled",
            "within_days",
            "window_days",
            "min_samples",
            "min_span_secs",
        ],
    ),
    (
        "rules.stale_sync",
        &[
            "enabled",
            "stale_after_secs",
            "auth_failure",
            "quota_paused",
        ],
    ),
    (
        "[rules.overrides]",
        &["orgs", "pools", "utilization", "idle_seats", "stale_sync"],
    ),
];

/// A TOML document of the real tables, each with some of its keys set to random values.
fn config_text() -> impl Strategy<Value = String> {
    let table = (0..KEYS.len()).prop_flat_map(|t| {
        let (name, keys) = KEYS[t];
        prop::collection::vec((prop::sample::select(keys.to_vec()), toml_value()), 0..4)
            .prop_map(move |pairs| (name, pairs))
    });
    prop::collection::vec(table, 0..5).prop_map(|tables| {
        let mut text = String::new();
        let mut seen = std::collections::BTreeSet::new();
        for (name, pairs) in tables {
            // TOML refuses a table twice; the loader's answer to that is not the point.
            if !name.starts_with('[') && !seen.insert(name) {
                continue;
            }
            match name {
                "" if text.is_empty() => {}
                "" => continue,
                _ if name.starts_with('[') => text.push_str(&format!("[{name}]\n")),
                _ => text.push_str(&format!("[{name}]\n")),
            }
            let mut keys = std::collections::BTreeSet::new();
            for (key, value) in pairs {
                if keys.insert(key) {
                    text.push_str(&format!("{key} = {value}\n"));
                }
            }
        }
        text
    })
}

/// The promises `validate()` makes about a config it accepts.
fn check_ranges(config: &AlertConfig) -> Result<(), TestCaseError> {
    prop_assert!(config.validate().is_ok());
    prop_assert!(config.evaluate_interval_secs >= 1);
    prop_assert!(!config.group_id.is_empty() && config.notify_group_id != config.group_id);
    let utilization = &config.rules.utilization;
    prop_assert!(utilization.threshold > 0.0 && utilization.threshold <= 1.5);
    if let Some(clear) = utilization.clear_below {
        prop_assert!(
            clear < utilization.threshold,
            "{clear} >= {}",
            utilization.threshold
        );
    }
    prop_assert!(config.rules.idle_seats.idle_days >= 1);
    prop_assert!(config.rules.idle_seats.min_idle_seats >= 1);
    prop_assert!(!config.rules.expiring.lead_days.is_empty());
    prop_assert_eq!(config.prices.currency.len(), 3);
    for price in config.prices.monthly.values() {
        prop_assert!(price.is_finite() && *price >= 0.0);
    }
    if let Some(webhook) = &config.webhook {
        prop_assert!(webhook.timeout_secs >= 1);
        prop_assert!(webhook.url.starts_with("http://") || webhook.url.starts_with("https://"));
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_never_panics_the_loader(text in "(.|\n){0,200}") {
        if let Ok(config) = load(&text) {
            check_ranges(&config)?;
        }
    }

    #[test]
    fn real_keys_with_random_values_load_valid_or_fail(text in config_text()) {
        if let Ok(config) = load(&text) {
            check_ranges(&config)?;
        }
    }

    #[test]
    fn documented_ranges_load_as_written(
        interval in 1u64..100_000,
        threshold in 0.01f64..=1.5,
        clear_fraction in 0.0f64..0.99,
        idle_days in 1u32..10_000,
        min_idle in 1u32..1000,
        lead_days in prop::collection::vec(1u32..400, 1..5),
        price in 0.0f64..1.0e6,
    ) {
        let clear = threshold * clear_fraction;
        let lead: Vec<String> = lead_days.iter().map(u32::to_string).collect();
        let text = format!(
            "evaluate_interval_secs = {interval}\n\
             [rules.utilization]\nthreshold = {threshold:?}\nclear_below = {clear:?}\n\
             [rules.idle_seats]\nidle_days = {idle_days}\nmin_idle_seats = {min_idle}\n\
             [rules.expiring]\nlead_days = [{}]\n\
             [prices]\ncurrency = \"EUR\"\nmonthly = {{ \"Salesforce\" = {price:?} }}\n",
            lead.join(", ")
        );
        let config = load(&text).map_err(TestCaseError::fail)?;
        prop_assert_eq!(config.evaluate_interval_secs, interval);
        prop_assert_eq!(config.rules.utilization.threshold, threshold);
        prop_assert_eq!(config.rules.utilization.clear_below, Some(clear));
        prop_assert_eq!(config.rules.idle_seats.idle_days, idle_days);
        prop_assert_eq!(config.rules.idle_seats.min_idle_seats, min_idle);
        prop_assert_eq!(config.prices.monthly("Salesforce"), Some(price));
        prop_assert_eq!(&config.prices.currency, "EUR");
        check_ranges(&config)?;
    }

    #[test]
    fn an_inline_webhook_secret_is_refused_without_repeating_it(
        secret in "[A-Za-z][A-Za-z0-9+/=_-]{11,30}",
        shape in 0..5usize,
    ) {
        let value = match shape {
            0 => format!("\"{secret}\""),
            1 => format!("[\"{secret}\"]"),
            2 => format!("{{ value = \"{secret}\" }}"),
            3 => format!("{{ env = \"A\", file = \"{secret}\" }}"),
            _ => format!("'''{secret}'''"),
        };
        let text = format!("[webhook]\nurl = \"http://127.0.0.1:9/hook\"\nsecret = {value}\n");
        let error = load(&text).expect_err("an inline secret loads");
        prop_assert!(!error.contains(&secret), "the error repeats the secret: {error}");
    }
}
