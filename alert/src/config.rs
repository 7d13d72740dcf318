//! The alert service's configuration and command-line flags.
//!
//! The config is TOML (then `SEATWATCH_*` variables, then flags, see
//! [`seatwatch_common::config`]); unknown keys are errors and [`AlertConfig::validate`]
//! rejects out-of-range values at start with the key's dotted path. Each default is
//! stated on its field. The webhook's signing key is never a value here, only a
//! [`SecretRef`] saying where to read it, and never a flag.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use seatwatch_common::config::KafkaOverrides;
use seatwatch_common::kafka::KafkaConfig;
use seatwatch_common::SecretRef;
use serde::{Deserialize, Serialize};

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
    /// An HTTP endpoint that receives every transition; none by default.
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
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

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            kafka: KafkaConfig::default(),
            listen_addr: default_listen_addr(),
            group_id: default_group_id(),
            notify_group_id: default_notify_group_id(),
            evaluate_interval_secs: default_evaluate_interval_secs(),
            rules: RulesConfig::default(),
            webhook: None,
        }
    }
}

/// The rules, each under `[rules.<name>]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    #[serde(default)]
    pub utilization: UtilizationRule,
    #[serde(default)]
    pub idle_seats: IdleSeatsRule,
}

/// `[rules.utilization]`: a licence pool is nearly or fully used.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UtilizationRule {
    /// Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Fires at `used / total >= threshold`, as a fraction in (0, 1.5]. Default 0.90,
    /// which leaves room to buy seats before users are turned away. Above 1 watches for
    /// over-assignment only.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
}

fn default_true() -> bool {
    true
}
fn default_threshold() -> f64 {
    0.90
}

impl Default for UtilizationRule {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: default_threshold(),
        }
    }
}

/// `[rules.idle_seats]`: active users of a user licence who have not logged in lately.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdleSeatsRule {
    /// Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A user is idle after this many days without a login (or never logged in).
    /// Default 90, a common licence-review cycle.
    #[serde(default = "default_idle_days")]
    pub idle_days: u32,
    /// Fires when at least this many seats of one pool are idle. Default 1.
    #[serde(default = "default_min_idle_seats")]
    pub min_idle_seats: u32,
}

fn default_idle_days() -> u32 {
    90
}
fn default_min_idle_seats() -> u32 {
    1
}

impl Default for IdleSeatsRule {
    fn default() -> Self {
        Self {
            enabled: true,
            idle_days: default_idle_days(),
            min_idle_seats: default_min_idle_seats(),
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
        match &self.webhook {
            Some(webhook) => webhook.validate(),
            None => Ok(()),
        }
    }
}

impl RulesConfig {
    fn validate(&self) -> Result<(), AlertError> {
        let threshold = self.utilization.threshold;
        // Written so that NaN fails too.
        if !(threshold > 0.0 && threshold <= 1.5) {
            return Err(AlertError::config(
                "rules.utilization.threshold",
                format!("must be in (0, 1.5], got {threshold}"),
            ));
        }
        if self.idle_seats.idle_days < 1 {
            return Err(AlertError::config(
                "rules.idle_seats.idle_days",
                "must be at least 1",
            ));
        }
        if self.idle_seats.min_idle_seats < 1 {
            return Err(AlertError::config(
                "rules.idle_seats.min_idle_seats",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl WebhookConfig {
    fn validate(&self) -> Result<(), AlertError> {
        // The parser's message could quote the URL, so it is not passed on.
        let url = reqwest::Url::parse(&self.url)
            .map_err(|_| AlertError::config("webhook.url", "is not a valid URL"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(AlertError::config(
                "webhook.url",
                "must be an http:// or https:// URL with a host",
            ));
        }
        if self.timeout_secs == 0 {
            return Err(AlertError::config(
                "webhook.timeout_secs",
                "must be at least 1",
            ));
        }
        Ok(())
    }
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
        config.validate()?;
        Ok(config)
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

    fn key_of(err: AlertError) -> &'static str {
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
