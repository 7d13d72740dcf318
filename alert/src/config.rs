//! The alert service's configuration and command-line flags.
//!
//! The config is TOML (then `SEATWATCH_*` variables, then flags, see
//! [`seatwatch_common::config`]); unknown keys are errors and [`AlertConfig::validate`]
//! rejects out-of-range values at start with the key's dotted path. Each default is
//! stated on its field. The webhook's signing key is never a value here, only a
//! [`SecretRef`] saying where to read it, and never a flag.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use seatwatch_common::config::KafkaOverrides;
use seatwatch_common::kafka::KafkaConfig;
use seatwatch_common::SecretRef;
use serde::{Deserialize, Serialize};

use crate::rule_config::RulesConfig;
use crate::AlertError;

/// Everything the alert service needs to run.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// The cluster and topic prefix; see [`KafkaConfig`] for its defaults.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// Where `/metrics`, `/healthz` and `/readyz` are served. Default `127.0.0.1:9103`,
    /// loopback so that nothing is exposed until a deployment says so.
    #[serde(default = "default_listen_addr")]
    pub listen_addr: SocketAddr,
    /// Consumer group of the evaluator. It never commits offsets; the group only
    /// splits orgs between instances. Default `seatwatch-alert`.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Consumer group of the notifier, which commits an alert once every sink took it.
    /// Must differ from `group_id`. Default `seatwatch-alert-notify`.
    #[serde(default = "default_notify_group_id")]
    pub notify_group_id: String,
    /// Seconds between rule evaluations. Default 5: seat data changes at the pace of
    /// syncs (minutes), so this only bounds how late an alert can be.
    #[serde(default = "default_evaluate_interval_secs")]
    pub evaluate_interval_secs: u64,
    /// Which rules run and their thresholds.
    #[serde(default)]
    pub rules: RulesConfig,
    /// Seconds between repeat notifications of an alert that is still firing and not
    /// acknowledged. Default 14400 (4 hours, Alertmanager's default); 0 never repeats.
    #[serde(default = "default_repeat_interval_secs")]
    pub repeat_interval_secs: u64,
    /// An HTTP endpoint that receives every transition; none by default.
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    /// An Alertmanager that receives every alert through its v2 API; none by default.
    #[serde(default)]
    pub alertmanager: Option<AlertmanagerConfig>,
    /// Monthly licence prices, which turn reclaim recommendations into savings.
    #[serde(default)]
    pub prices: PriceTable,
    /// Where the bearer token lives that acknowledging and silencing through the API
    /// require; without one, anyone who reaches the ops port can. Never a value here.
    #[serde(default)]
    pub api_token: Option<SecretRef>,
}

/// `[alertmanager]`: push alerts to Alertmanager's `/api/v2/alerts`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Base URL, e.g. `http://alertmanager:9093`.
    pub url: String,
    /// Seconds between re-sends of every firing alert. Alertmanager resolves an alert
    /// that stops arriving, so firing alerts are re-sent and carry `endsAt` four
    /// intervals ahead. Default 60.
    #[serde(default = "default_resend_interval_secs")]
    pub resend_interval_secs: u64,
    /// Per-request timeout. Default 10.
    #[serde(default = "default_webhook_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_resend_interval_secs() -> u64 {
    60
}

impl AlertmanagerConfig {
    fn validate(&self) -> Result<(), AlertError> {
        validate_http_url("alertmanager.url", &self.url)?;
        if self.resend_interval_secs == 0 || self.timeout_secs == 0 {
            return Err(AlertError::config(
                "alertmanager",
                "resend_interval_secs and timeout_secs must be at least 1",
            ));
        }
        Ok(())
    }
}

/// `[prices]`: what a seat of each licence costs per month.
///
/// ```toml
/// [prices]
/// currency = "USD"
/// monthly = { "Salesforce" = 165.0, "Salesforce Platform" = 25.0 }
/// ```
/// Keys are licence API names (`LicenseState::name`). A licence without a price gets
/// recommendations without a saving.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    /// ISO 4217 code. Default `USD`.
    #[serde(default = "default_currency")]
    pub currency: String,
    /// Price of one seat per month, by licence name.
    #[serde(default)]
    pub monthly: BTreeMap<String, f64>,
}

fn default_currency() -> String {
    "USD".into()
}

impl Default for PriceTable {
    fn default() -> Self {
        Self {
            currency: default_currency(),
            monthly: BTreeMap::new(),
        }
    }
}

impl PriceTable {
    /// The monthly price of one seat of `license`, if known.
    pub fn monthly(&self, license: &str) -> Option<f64> {
        self.monthly.get(license).copied()
    }

    fn validate(&self) -> Result<(), AlertError> {
        if self.currency.len() != 3 || !self.currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(AlertError::config(
                "prices.currency",
                "must be a three-letter ISO 4217 code such as USD",
            ));
        }
        for (license, price) in &self.monthly {
            // Written so that NaN fails too.
            if !(*price >= 0.0 && price.is_finite()) {
                return Err(AlertError::config(
                    format!("prices.monthly.{license}"),
                    "must be a price of zero or more",
                ));
            }
        }
        Ok(())
    }
}

fn default_listen_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9103))
}
fn default_group_id() -> String {
    "seatwatch-alert".into()
}
fn default_notify_group_id() -> String {
    "seatwatch-alert-notify".into()
}
fn default_evaluate_interval_secs() -> u64 {
    5
}
fn default_repeat_interval_secs() -> u64 {
    4 * 3600
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            kafka: KafkaConfig::default(),
            listen_addr: default_listen_addr(),
            group_id: default_group_id(),
            notify_group_id: default_notify_group_id(),
            evaluate_interval_secs: default_evaluate_interval_secs(),
            rules: RulesConfig::default(),
            repeat_interval_secs: default_repeat_interval_secs(),
            webhook: None,
            alertmanager: None,
            prices: PriceTable::default(),
            api_token: None,
        }
    }
}

/// `[webhook]`: POST every transition as JSON to one URL.
///
/// Its `Debug` shows only the URL's host: webhook URLs often carry a token in their path.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL of the receiver.
    pub url: String,
    /// Where the HMAC-SHA256 signing key lives; unsigned when absent.
    #[serde(default)]
    pub secret: Option<SecretRef>,
    /// Per-request timeout. Default 10, well inside the shutdown drain deadline.
    #[serde(default = "default_webhook_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_webhook_timeout_secs() -> u64 {
    10
}

impl WebhookConfig {
    /// The URL's host, the only part of it that may appear in logs.
    pub fn host(&self) -> String {
        reqwest::Url::parse(&self.url)
            .ok()
            .and_then(|url| url.host_str().map(str::to_owned))
            .unwrap_or_else(|| "<unparsable>".into())
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("host", &self.host())
            .field("secret", &self.secret.as_ref().map(SecretRef::describe))
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

impl AlertConfig {
    /// Checks the values serde cannot: ranges, URL shape, distinct groups.
    pub fn validate(&self) -> Result<(), AlertError> {
        if self.evaluate_interval_secs == 0 {
            return Err(AlertError::config(
                "evaluate_interval_secs",
                "must be at least 1",
            ));
        }
        if self.group_id.is_empty() {
            return Err(AlertError::config("group_id", "must not be empty"));
        }
        if self.notify_group_id.is_empty() || self.notify_group_id == self.group_id {
            return Err(AlertError::config(
                "notify_group_id",
                "must be non-empty and differ from group_id (the notifier commits offsets, \
                 the evaluator must not)",
            ));
        }
        self.rules.validate()?;
        self.prices.validate()?;
        if let Some(alertmanager) = &self.alertmanager {
            alertmanager.validate()?;
        }
        match &self.webhook {
            Some(webhook) => webhook.validate(),
            None => Ok(()),
        }
    }
}

impl WebhookConfig {
    fn validate(&self) -> Result<(), AlertError> {
        validate_http_url("webhook.url", &self.url)?;
        if self.timeout_secs == 0 {
            return Err(AlertError::config(
                "webhook.timeout_secs",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Checks that `url` is an `http://` or `https://` URL with a host.
fn validate_http_url(key: &str, url: &str) -> Result<(), AlertError> {
    // The parser's message could quote the URL, so it is not passed on.
    let parsed =
        reqwest::Url::parse(url).map_err(|_| AlertError::config(key, "is not a valid URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(AlertError::config(
            key,
            "must be an http:// or https:// URL with a host",
        ));
    }
    Ok(())
}

/// The alert service's flags; each overrides the file and environment.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct AlertArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE", env = "SEATWATCH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Kafka bootstrap servers, comma-separated host:port.
    #[arg(long, value_name = "HOSTS")]
    pub bootstrap_servers: Option<String>,
    /// Prefix of every topic name, e.g. `prod.`.
    #[arg(long, value_name = "PREFIX")]
    pub topic_prefix: Option<String>,
    /// URL that receives every alert transition as JSON. Its signing key can only come
    /// from the config file's `webhook.secret`.
    #[arg(long, value_name = "URL")]
    pub webhook_url: Option<String>,
}

/// The flags as a partial config, absent flags left out so they erase nothing.
#[derive(Serialize)]
struct Overrides<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    listen_addr: Option<String>,
    #[serde(skip_serializing_if = "KafkaOverrides::is_empty")]
    kafka: KafkaOverrides<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook: Option<WebhookOverrides<'a>>,
}

#[derive(Serialize)]
struct WebhookOverrides<'a> {
    url: &'a str,
}

impl AlertArgs {
    /// Loads the file, environment and these flags into a validated config.
    pub fn load(&self) -> Result<AlertConfig, AlertError> {
        let overrides = Overrides {
            listen_addr: self.listen.map(|addr| addr.to_string()),
            kafka: KafkaOverrides {
                bootstrap_servers: self.bootstrap_servers.as_deref(),
                topic_prefix: self.topic_prefix.as_deref(),
            },
            webhook: self
                .webhook_url
                .as_deref()
                .map(|url| WebhookOverrides { url }),
        };
        let config: AlertConfig =
            seatwatch_common::config::load(self.config.as_deref(), &overrides)?;
        config.validate().map_err(|error| self.with_line(error))?;
        Ok(config)
    }

    /// Adds the config file's line to an invalid value's error, when the file sets it.
    fn with_line(&self, error: AlertError) -> AlertError {
        let (AlertError::Config { key, reason }, Some(path)) = (&error, &self.config) else {
            return error;
        };
        let line = std::fs::read_to_string(path)
            .ok()
            .and_then(|toml| seatwatch_common::config::line_of_key(&toml, key));
        match line {
            Some(line) => AlertError::Config {
                key: key.clone(),
                reason: format!("{reason} ({} line {line})", path.display()),
            },
            None => error,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn parse(toml_text: &str) -> Result<AlertConfig, AlertError> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(toml_text.as_bytes()).unwrap();
        AlertArgs {
            config: Some(file.path().into()),
            ..AlertArgs::default()
        }
        .load()
    }

    fn key_of(err: AlertError) -> String {
        match err {
            AlertError::Config { key, .. } => key,
            other => panic!("expected a config error, got {other}"),
        }
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let config = parse("").unwrap();
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:9103");
        assert_eq!(config.group_id, "seatwatch-alert");
        assert_eq!(config.notify_group_id, "seatwatch-alert-notify");
        assert_eq!(config.evaluate_interval_secs, 5);
        assert_eq!(config.rules.utilization.threshold, 0.90);
        assert_eq!(config.rules.idle_seats.idle_days, 90);
        assert_eq!(config.rules.idle_seats.min_idle_seats, 1);
        assert!(config.webhook.is_none());
        AlertConfig::default().validate().unwrap();
    }

    #[test]
    fn rule_sections_parse() {
        let config = parse(
            "[rules.utilization]\nenabled = false\nthreshold = 0.8\n\
             [rules.idle_seats]\nidle_days = 30\nmin_idle_seats = 5\n",
        )
        .unwrap();
        assert!(!config.rules.utilization.enabled);
        assert_eq!(config.rules.utilization.threshold, 0.8);
        assert!(config.rules.idle_seats.enabled);
        assert_eq!(config.rules.idle_seats.idle_days, 30);
        assert_eq!(config.rules.idle_seats.min_idle_seats, 5);
    }

    #[test]
    fn validation_errors_name_the_key() {
        let cases = [
            (
                "[rules.utilization]\nthreshold = 0.0",
                "rules.utilization.threshold",
            ),
            (
                "[rules.utilization]\nthreshold = 1.6",
                "rules.utilization.threshold",
            ),
            (
                "[rules.utilization]\nthreshold = 0.8\nclear_below = 0.85",
                "rules.utilization.clear_below",
            ),
            (
                "[rules.expiring]\nlead_days = []",
                "rules.expiring.lead_days",
            ),
            (
                "[[rules.overrides]]\npools = [\"S*\"]\nutilization = { threshold = 2.0 }",
                "rules.overrides[0].utilization.threshold",
            ),
            (
                "[[rules.overrides]]\nbogus_rule = { enabled = false }",
                "rules.overrides[0]",
            ),
            (
                "[[rules.overrides]]\nidle_seats = { idle_dayz = 3 }",
                "rules.overrides[0]",
            ),
            ("[prices]\ncurrency = \"dollars\"", "prices.currency"),
            (
                "[prices]\nmonthly = { Salesforce = -1.0 }",
                "prices.monthly.Salesforce",
            ),
            ("[alertmanager]\nurl = \"nope\"", "alertmanager.url"),
            (
                "[rules.idle_seats]\nidle_days = 0",
                "rules.idle_seats.idle_days",
            ),
            (
                "[rules.idle_seats]\nmin_idle_seats = 0",
                "rules.idle_seats.min_idle_seats",
            ),
            ("evaluate_interval_secs = 0", "evaluate_interval_secs"),
            ("notify_group_id = \"seatwatch-alert\"", "notify_group_id"),
            (
                "[webhook]\nurl = \"ftp://example.invalid/x\"",
                "webhook.url",
            ),
            ("[webhook]\nurl = \"not a url\"", "webhook.url"),
        ];
        for (text, key) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.to_string().contains(key), "{text}: {err}");
            assert_eq!(key_of(err), key, "{text}");
        }
        // The upper bound is inclusive.
        parse("[rules.utilization]\nthreshold = 1.5").unwrap();
    }

    #[test]
    fn errors_name_the_line_of_the_file() {
        let err = parse("evaluate_interval_secs = 1\n[rules.utilization]\nthreshold = 0.8\nclear_below = 0.85\n")
            .unwrap_err();
        assert!(err.to_string().contains("line 4"), "{err}");
        let err =
            parse("[rules.utilization]\nthreshold = 0.8\n[rules.expiring]\nlead_dayz = [1]\n")
                .unwrap_err();
        assert!(err.to_string().contains("lead_dayz"), "{err}");
        assert!(err.to_string().contains("line 4"), "{err}");
    }

    #[test]
    fn overrides_apply_per_org_and_pool_pattern_first_match_wins() {
        let config = parse(
            "[rules.utilization]\nthreshold = 0.9\n\
             [[rules.overrides]]\norgs = [\"00DA\"]\npools = [\"Sales*\"]\n\
             utilization = { threshold = 0.8 }\n\
             [[rules.overrides]]\norgs = [\"00DA\"]\n\
             utilization = { threshold = 0.7 }\nstale_sync = { stale_after_secs = 5 }\n",
        )
        .unwrap();
        let rules = &config.rules;
        assert_eq!(
            rules.for_pool("00DA", "Salesforce").utilization.threshold,
            0.8
        );
        assert_eq!(
            rules.for_pool("00DA", "Platform").utilization.threshold,
            0.7
        );
        assert_eq!(
            rules.for_pool("00DB", "Salesforce").utilization.threshold,
            0.9
        );
        // Keys the override leaves out keep the defaults.
        assert!(rules.for_pool("00DA", "Salesforce").idle_seats.enabled);
        // Org-level rules skip overrides that name pools.
        assert_eq!(rules.for_org("00DA").stale_sync.stale_after_secs, 5);
        assert_eq!(rules.for_org("00DB").stale_sync.stale_after_secs, 7200);
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = parse("[rules.utilization]\nthreshhold = 0.8").unwrap_err();
        assert!(err.to_string().contains("threshhold"), "{err}");
        let err = parse("[rules.unknown_rule]\nenabled = true").unwrap_err();
        assert!(err.to_string().contains("unknown_rule"), "{err}");
    }

    #[test]
    fn flags_override_the_file() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "listen_addr = \"127.0.0.1:1\"\n[kafka]\nbootstrap_servers = \"a:1\"\n\
             topic_prefix = \"x.\"\n[webhook]\nurl = \"http://127.0.0.1:9/a\"\n\
             secret = {{ env = \"ALERT_TEST_WEBHOOK_KEY\" }}"
        )
        .unwrap();
        let config = AlertArgs {
            config: Some(file.path().into()),
            listen: Some("127.0.0.1:2".parse().unwrap()),
            bootstrap_servers: None,
            topic_prefix: Some("y.".into()),
            webhook_url: Some("http://127.0.0.1:9/b".into()),
        }
        .load()
        .unwrap();
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:2");
        assert_eq!(config.kafka.bootstrap_servers, "a:1");
        assert_eq!(config.kafka.topic_prefix, "y.");
        let webhook = config.webhook.unwrap();
        assert_eq!(webhook.url, "http://127.0.0.1:9/b");
        assert_eq!(
            webhook.secret.map(|s| s.describe()).as_deref(),
            Some("env ALERT_TEST_WEBHOOK_KEY")
        );
    }

    #[test]
    fn webhook_debug_shows_only_the_host() {
        let webhook = WebhookConfig {
            url: "https://hooks.example.invalid/services/T0K3N-distinctive".into(),
            secret: None,
            timeout_secs: 10,
        };
        let shown = format!("{webhook:?}");
        assert!(shown.contains("hooks.example.invalid"), "{shown}");
        assert!(!shown.contains("T0K3N"), "{shown}");
    }
}
