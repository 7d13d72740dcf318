//! ingest's configuration: the broker, the polling schedule and the orgs to poll.
//!
//! Each org names its Connected App and user, and says where its secrets live
//! (`{ env = "…" }` or `{ file = "…" }`); the values themselves are never in the file.
//!
//! ```toml
//! poll_interval_secs = 300
//! [kafka]
//! bootstrap_servers = "localhost:9092"
//! [[orgs]]
//! name = "acme-prod"
//! login_url = "https://login.salesforce.com"
//! consumer_key = "3MVG9…"
//! username = "integration@acme.example"
//! consumer_secret = { env = "ACME_SF_CONSUMER_SECRET" }
//! password = { file = "/var/run/secrets/acme-sf/password" }
//! security_token = { env = "ACME_SF_SECURITY_TOKEN" }
//! # Optional, per org: override the global schedule and quota shares.
//! poll_interval_secs = 900
//! max_run_share = 0.10
//! login_history = true
//! ```

use std::net::SocketAddr;

use seatwatch_common::config::KafkaOverrides;
use seatwatch_common::kafka::KafkaConfig;
use seatwatch_common::SecretRef;
use serde::{Deserialize, Serialize};

/// The whole ingest configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// Address of the `/metrics`, `/healthz`, `/readyz` server.
    #[serde(default = "default_listen_addr")]
    pub listen_addr: SocketAddr,
    /// Time between the start of one sync of an org and the next.
    #[serde(default = "default_poll_interval_secs")]
    pub poll_interval_secs: u64,
    /// Salesforce REST API version, e.g. `62.0`.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// Records per query page asked of Salesforce (`Sforce-Query-Options: batchSize`,
    /// 200 to 2000; Salesforce may return fewer).
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// Timeout of one HTTP request to Salesforce.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// Attempts of one request on transient failures (5xx, 420, timeouts) before the sync
    /// fails.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: usize,
    /// First backoff between attempts; doubles with jitter up to 60 s.
    #[serde(default = "default_retry_base_ms")]
    pub retry_base_ms: u64,
    /// A sync stops once it has used more than this share of the org's daily API
    /// allowance (Singer's `quota_percent_per_run`, as a fraction).
    #[serde(default = "default_max_run_share")]
    pub max_run_share: f64,
    /// No sync starts or goes on while the org as a whole has used more than this share
    /// of its daily allowance, so seatwatch never starves the org's other integrations.
    #[serde(default = "default_max_total_share")]
    pub max_total_share: f64,
    /// How far before its cursor an incremental `User` read starts, for changes that
    /// become visible late; 0 reads strictly after the cursor, tie-breaking on `Id`.
    #[serde(default = "default_user_lookback_secs")]
    pub user_lookback_secs: u64,
    /// How often `User` is read in full (which also picks up `LastLoginDate`, a field
    /// that does not move `SystemModstamp`); 0 reads it in full at every sync.
    #[serde(default = "default_full_sync_interval_secs")]
    pub full_sync_interval_secs: u64,
    /// How long an org waits after a sync stopped for quota before it tries again.
    #[serde(default = "default_quota_pause_secs")]
    pub quota_pause_secs: u64,
    /// Whether `LoginHistory` is read (incrementally on `LoginTime`), for activity that
    /// `LastLoginDate` misses. Needs "Manage Users" or "Monitor Login History" for the
    /// integration user. Off by default; an org may override it.
    #[serde(default)]
    pub login_history: bool,
    /// How many days back the first `LoginHistory` read of an org starts (Salesforce
    /// keeps about six months; later reads continue from the cursor).
    #[serde(default = "default_login_history_initial_days")]
    pub login_history_initial_days: u64,
    /// The Salesforce orgs to poll.
    #[serde(default)]
    pub orgs: Vec<OrgConfig>,
}

/// How ingest signs in to an org.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthFlow {
    /// OAuth username-password flow: consumer key and secret, username, password and
    /// security token. Blocked by default in new orgs; retirement announced for 2027.
    #[default]
    Password,
    /// OAuth client-credentials flow: consumer key and secret; the Connected App runs as
    /// its configured user. Needs the org's My Domain login URL.
    ClientCredentials,
    /// OAuth JWT bearer flow: an assertion signed with the Connected App's private key,
    /// for `username`, with the login host as audience.
    JwtBearer,
}

/// One Salesforce org and its Connected App.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgConfig {
    /// seatwatch's name for the org, used in logs, metrics and sync status.
    pub name: String,
    /// The login host: `https://login.salesforce.com`, `https://test.salesforce.com`
    /// for sandboxes, or the org's My Domain. Plain `http` only on loopback.
    #[serde(default = "default_login_url")]
    pub login_url: String,
    /// How to sign in; each flow needs the secrets its doc names.
    #[serde(default)]
    pub flow: AuthFlow,
    /// The Connected App's consumer key (not a secret: it identifies the app).
    pub consumer_key: String,
    /// The integration user's username (password and JWT bearer flows).
    #[serde(default)]
    pub username: String,
    /// The Connected App's consumer secret (password and client-credentials flows).
    #[serde(default)]
    pub consumer_secret: Option<SecretRef>,
    /// The user's password (password flow).
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// The user's security token, appended to the password; omit it when the org
    /// trusts ingest's IP range.
    #[serde(default)]
    pub security_token: Option<SecretRef>,
    /// The PEM RSA private key whose certificate the Connected App holds (JWT bearer).
    #[serde(default)]
    pub private_key: Option<SecretRef>,
    /// This org's time between syncs; the global `poll_interval_secs` when absent.
    #[serde(default)]
    pub poll_interval_secs: Option<u64>,
    /// This org's `max_run_share`; the global one when absent.
    #[serde(default)]
    pub max_run_share: Option<f64>,
    /// This org's `max_total_share`; the global one when absent.
    #[serde(default)]
    pub max_total_share: Option<f64>,
    /// Whether this org's `LoginHistory` is read; the global `login_history` when absent.
    #[serde(default)]
    pub login_history: Option<bool>,
}

impl OrgConfig {
    /// Checks that the org names what its flow needs, and nothing it would ignore.
    pub fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        let needs = |field: &str, present: bool| {
            if present {
                Ok(())
            } else {
                Err(format!("org {name}: flow {:?} needs `{field}`", self.flow))
            }
        };
        let unused = |field: &str, present: bool| {
            if present {
                Err(format!(
                    "org {name}: `{field}` is not used by flow {:?}; remove it",
                    self.flow
                ))
            } else {
                Ok(())
            }
        };
        match self.flow {
            AuthFlow::Password => {
                needs("username", !self.username.is_empty())?;
                needs("consumer_secret", self.consumer_secret.is_some())?;
                needs("password", self.password.is_some())?;
                unused("private_key", self.private_key.is_some())
            }
            AuthFlow::ClientCredentials => {
                needs("consumer_secret", self.consumer_secret.is_some())?;
                unused("password", self.password.is_some())?;
                unused("security_token", self.security_token.is_some())?;
                unused("private_key", self.private_key.is_some())
            }
            AuthFlow::JwtBearer => {
                needs("username", !self.username.is_empty())?;
                needs("private_key", self.private_key.is_some())?;
                unused("password", self.password.is_some())?;
                unused("security_token", self.security_token.is_some())
            }
        }
    }
}

fn default_listen_addr() -> SocketAddr {
    ([127, 0, 0, 1], 9101).into()
}
fn default_poll_interval_secs() -> u64 {
    300
}
fn default_api_version() -> String {
    "62.0".into()
}
fn default_batch_size() -> u32 {
    2000
}
fn default_request_timeout_secs() -> u64 {
    120
}
fn default_max_attempts() -> usize {
    5
}
fn default_retry_base_ms() -> u64 {
    1000
}
fn default_max_run_share() -> f64 {
    0.25
}
fn default_max_total_share() -> f64 {
    0.80
}
fn default_user_lookback_secs() -> u64 {
    600
}
fn default_full_sync_interval_secs() -> u64 {
    86_400
}
fn default_quota_pause_secs() -> u64 {
    3600
}
fn default_login_history_initial_days() -> u64 {
    30
}
fn default_login_url() -> String {
    "https://login.salesforce.com".into()
}

/// Values from command-line flags, merged over the file and the environment.
#[derive(Debug, Default, Serialize)]
pub struct IngestOverrides<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_addr: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poll_interval_secs: Option<u64>,
    #[serde(skip_serializing_if = "KafkaOverrides::is_empty")]
    pub kafka: KafkaOverrides<'a>,
}

impl IngestConfig {
    /// A config with defaults and no orgs, for programs that build it in code.
    pub fn with_defaults(kafka: KafkaConfig) -> Self {
        Self {
            kafka,
            listen_addr: default_listen_addr(),
            poll_interval_secs: default_poll_interval_secs(),
            api_version: default_api_version(),
            batch_size: default_batch_size(),
            request_timeout_secs: default_request_timeout_secs(),
            max_attempts: default_max_attempts(),
            retry_base_ms: default_retry_base_ms(),
            max_run_share: default_max_run_share(),
            max_total_share: default_max_total_share(),
            quota_pause_secs: default_quota_pause_secs(),
            user_lookback_secs: default_user_lookback_secs(),
            full_sync_interval_secs: default_full_sync_interval_secs(),
            login_history: false,
            login_history_initial_days: default_login_history_initial_days(),
            orgs: Vec::new(),
        }
    }

    /// The time between syncs of `org`: its own, else the global one.
    pub fn poll_interval_secs_for(&self, org: &OrgConfig) -> u64 {
        org.poll_interval_secs.unwrap_or(self.poll_interval_secs)
    }

    /// The quota shares of `org` as `(max_run_share, max_total_share)`: its own, else the
    /// global ones.
    pub fn quota_shares_for(&self, org: &OrgConfig) -> (f64, f64) {
        (
            org.max_run_share.unwrap_or(self.max_run_share),
            org.max_total_share.unwrap_or(self.max_total_share),
        )
    }

    /// Whether `org`'s `LoginHistory` is read: its own setting, else the global one.
    pub fn login_history_for(&self, org: &OrgConfig) -> bool {
        org.login_history.unwrap_or(self.login_history)
    }

    /// How far back an org's first `LoginHistory` read starts.
    pub fn login_history_window(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.login_history_initial_days.saturating_mul(86_400))
    }

    /// Checks what serde cannot: at least one org, unique names, sane numbers.
    pub fn validate(&self) -> Result<(), String> {
        if self.orgs.is_empty() {
            return Err("no orgs configured: add an [[orgs]] table".into());
        }
        let mut names: Vec<&str> = self.orgs.iter().map(|o| o.name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!(
                "org name {:?} is used twice; names must be unique",
                pair[0]
            ));
        }
        for org in &self.orgs {
            org.validate()?;
        }
        if !(200..=2000).contains(&self.batch_size) {
            return Err(format!(
                "batch_size = {} is outside 200..=2000",
                self.batch_size
            ));
        }
        if self.poll_interval_secs == 0 {
            return Err("poll_interval_secs must be at least 1".into());
        }
        check_shares("", self.max_run_share, self.max_total_share)?;
        for org in &self.orgs {
            if self.poll_interval_secs_for(org) == 0 {
                return Err(format!(
                    "org {}: poll_interval_secs must be at least 1",
                    org.name
                ));
            }
            let (run, total) = self.quota_shares_for(org);
            check_shares(&format!("org {}: ", org.name), run, total)?;
        }
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        if self.login_history_initial_days == 0 {
            return Err("login_history_initial_days must be at least 1".into());
        }
        Ok(())
    }
}

/// Both quota shares must be fractions in (0, 1]; `context` prefixes the message.
fn check_shares(context: &str, max_run_share: f64, max_total_share: f64) -> Result<(), String> {
    for (key, share) in [
        ("max_run_share", max_run_share),
        ("max_total_share", max_total_share),
    ] {
        if !(share > 0.0 && share <= 1.0) {
            return Err(format!(
                "{context}{key} = {share} must be a fraction in (0, 1]"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(org: OrgConfig) -> IngestConfig {
        let mut config = IngestConfig::with_defaults(KafkaConfig::default());
        config.orgs.push(org);
        config
    }

    fn org(name: &str) -> OrgConfig {
        OrgConfig {
            name: name.into(),
            consumer_key: "key".into(),
            username: "u@x.example".into(),
            consumer_secret: Some(SecretRef::Env("S".into())),
            password: Some(SecretRef::Env("P".into())),
            ..OrgConfig::default()
        }
    }

    #[test]
    fn an_org_overrides_schedule_and_shares_and_falls_back_to_the_global_ones() {
        let tuned = OrgConfig {
            poll_interval_secs: Some(900),
            max_run_share: Some(0.1),
            ..org("tuned")
        };
        let mut config = config_with(tuned.clone());
        config.orgs.push(org("plain"));
        config.validate().unwrap();

        assert_eq!(config.poll_interval_secs_for(&tuned), 900);
        assert_eq!(config.quota_shares_for(&tuned), (0.1, 0.8));
        let plain = &config.orgs[1];
        assert_eq!(config.poll_interval_secs_for(plain), 300);
        assert_eq!(config.quota_shares_for(plain), (0.25, 0.8));
    }

    #[test]
    fn a_bad_override_names_its_org() {
        let greedy = OrgConfig {
            max_total_share: Some(1.5),
            ..org("greedy")
        };
        let err = config_with(greedy).validate().unwrap_err();
        assert!(err.contains("org greedy: max_total_share = 1.5"), "{err}");

        let never = OrgConfig {
            poll_interval_secs: Some(0),
            ..org("never")
        };
        let err = config_with(never).validate().unwrap_err();
        assert!(err.contains("org never: poll_interval_secs"), "{err}");
    }

    #[test]
    fn login_history_is_off_by_default_and_an_org_may_turn_it_on_or_off() {
        let text = r#"
            [[orgs]]
            name = "plain"
            consumer_key = "k"
            username = "u@x.example"
            consumer_secret = { env = "S" }
            password = { env = "P" }
            [[orgs]]
            name = "watched"
            consumer_key = "k"
            username = "u@x.example"
            consumer_secret = { env = "S" }
            password = { env = "P" }
            login_history = true
        "#;
        let mut config: IngestConfig = toml::from_str(text).unwrap();
        config.validate().unwrap();
        assert!(!config.login_history);
        assert!(!config.login_history_for(&config.orgs[0]));
        assert!(config.login_history_for(&config.orgs[1]));
        assert_eq!(
            config.login_history_window(),
            std::time::Duration::from_secs(30 * 86_400)
        );

        config.login_history = true;
        config.orgs[1].login_history = Some(false);
        assert!(config.login_history_for(&config.orgs[0]));
        assert!(!config.login_history_for(&config.orgs[1]));

        config.login_history_initial_days = 0;
        let err = config.validate().unwrap_err();
        assert!(err.contains("login_history_initial_days"), "{err}");
    }

    #[test]
    fn overrides_are_read_from_toml() {
        let text = r#"
            [[orgs]]
            name = "acme"
            consumer_key = "k"
            username = "u@x.example"
            consumer_secret = { env = "S" }
            password = { env = "P" }
            poll_interval_secs = 60
            max_total_share = 0.5
        "#;
        let config: IngestConfig = toml::from_str(text).unwrap();
        let acme = &config.orgs[0];
        assert_eq!(config.poll_interval_secs_for(acme), 60);
        assert_eq!(config.quota_shares_for(acme), (0.25, 0.5));
    }
}
