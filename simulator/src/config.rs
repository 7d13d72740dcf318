//! Settings of a simulator run: where it listens, which org it serves, which credentials its
//! token endpoint accepts, and how it pages and counts.
//!
//! Defaults come from Salesforce where there is one (page size 2,000, a 115,000-call daily
//! allocation like the recorded limits response) and from the demo's needs otherwise. The
//! command-line form is [`SimulatorArgs`]; credentials never come from flags, only from
//! `SEATWATCH_SIMULATOR_*` environment variables, so they stay out of process listings.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use secrecy::SecretString;

use crate::error::SimulatorError;
use crate::org::builtin::{DEFAULT_USERS, MAX_USERS, MIN_USERS};

/// Rows per query page unless a smaller size is asked for; Salesforce's default batch size.
pub const DEFAULT_PAGE_SIZE: usize = 2000;
/// Seconds between demo changes.
pub const DEFAULT_DEMO_STEP_SECS: u64 = 5;
/// The daily API allocation reported in `Sforce-Limit-Info` and `/limits`.
pub const DEFAULT_API_DAILY_LIMIT: u64 = 115_000;

/// Everything a simulator run needs.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// Where to listen; `127.0.0.1:0` picks a free port.
    pub listen_addr: SocketAddr,
    /// The org to serve.
    pub org: OrgSource,
    /// What the token endpoint accepts.
    pub credentials: Credentials,
    /// Most rows per query page; at least 1.
    pub page_size: usize,
    /// Whether the org changes over time (see the demo module).
    pub demo: bool,
    /// Seconds between demo changes; at least 1.
    pub demo_step_secs: u64,
    /// The daily API allocation; calls beyond it get `REQUEST_LIMIT_EXCEEDED`.
    pub api_daily_limit: u64,
}

impl SimulatorConfig {
    /// Loopback on a free port, the built-in org, demo credentials, Salesforce defaults.
    pub fn for_tests() -> Self {
        Self {
            listen_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            org: OrgSource::BuiltIn {
                users: DEFAULT_USERS,
            },
            credentials: Credentials::demo(),
            page_size: DEFAULT_PAGE_SIZE,
            demo: false,
            demo_step_secs: DEFAULT_DEMO_STEP_SECS,
            api_daily_limit: DEFAULT_API_DAILY_LIMIT,
        }
    }

    /// Checks ranges that the types cannot express.
    pub fn validate(&self) -> Result<(), SimulatorError> {
        if self.page_size == 0 {
            return Err(SimulatorError::InvalidConfig(
                "page_size must be at least 1".into(),
            ));
        }
        if self.demo_step_secs == 0 {
            return Err(SimulatorError::InvalidConfig(
                "demo_step_secs must be at least 1".into(),
            ));
        }
        if let OrgSource::BuiltIn { users } = self.org {
            if !(MIN_USERS..=MAX_USERS).contains(&users) {
                return Err(SimulatorError::InvalidConfig(format!(
                    "users must be between {MIN_USERS} and {MAX_USERS}, not {users}"
                )));
            }
        }
        Ok(())
    }
}

/// Where the org comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrgSource {
    /// The generated org with this many users.
    BuiltIn {
        /// Number of users, active and inactive.
        users: usize,
    },
    /// A JSON org file in the format `--dump-org` prints.
    File(PathBuf),
}

/// The connected app and integration user the token endpoint accepts.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Connected app consumer key (`client_id`).
    pub consumer_key: String,
    /// Connected app consumer secret (`client_secret`); also keys the token signature.
    pub consumer_secret: SecretString,
    /// Username of the integration user; must exist in the org.
    pub username: String,
    /// The user's password.
    pub password: SecretString,
    /// The user's security token, appended to the password at login.
    pub security_token: SecretString,
    /// PEM public key of the certificate uploaded to the connected app: JWT bearer
    /// assertions must verify with it. `None` refuses the JWT bearer flow.
    pub jwt_public_key_pem: Option<String>,
}

impl Credentials {
    /// The simulated org's own, obviously fake credentials:
    ///
    /// | field | value |
    /// |---|---|
    /// | consumer key | `3MVG9SIMULATOR.seatwatch.demo.consumer.key` |
    /// | consumer secret | `SIMULATOR-DEMO-CONSUMER-SECRET` |
    /// | username | `integration@lakeside-freight.example` |
    /// | password | `demo-password` |
    /// | security token | `DEMOSECURITYTOKEN` |
    ///
    /// They protect nothing; they exist so clients exercise a real login.
    pub fn demo() -> Self {
        Self {
            consumer_key: "3MVG9SIMULATOR.seatwatch.demo.consumer.key".into(),
            consumer_secret: SecretString::from("SIMULATOR-DEMO-CONSUMER-SECRET"),
            username: "integration@lakeside-freight.example".into(),
            password: SecretString::from("demo-password"),
            security_token: SecretString::from("DEMOSECURITYTOKEN"),
            jwt_public_key_pem: None,
        }
    }

    /// The demo credentials, each replaced by its `SEATWATCH_SIMULATOR_*` variable when set.
    pub fn from_env() -> Result<Self, SimulatorError> {
        let demo = Self::demo();
        let var = |name: &str| -> Result<Option<String>, SimulatorError> {
            match std::env::var(name) {
                Ok(value) => Ok(Some(value)),
                Err(std::env::VarError::NotPresent) => Ok(None),
                Err(std::env::VarError::NotUnicode(_)) => Err(SimulatorError::InvalidConfig(
                    format!("{name} is not valid UTF-8"),
                )),
            }
        };
        let secret = |name: &str, default: SecretString| -> Result<SecretString, SimulatorError> {
            Ok(var(name)?.map(SecretString::from).unwrap_or(default))
        };
        Ok(Self {
            consumer_key: var("SEATWATCH_SIMULATOR_CONSUMER_KEY")?.unwrap_or(demo.consumer_key),
            consumer_secret: secret("SEATWATCH_SIMULATOR_CONSUMER_SECRET", demo.consumer_secret)?,
            username: var("SEATWATCH_SIMULATOR_USERNAME")?.unwrap_or(demo.username),
            password: secret("SEATWATCH_SIMULATOR_PASSWORD", demo.password)?,
            security_token: secret("SEATWATCH_SIMULATOR_SECURITY_TOKEN", demo.security_token)?,
            jwt_public_key_pem: match var("SEATWATCH_SIMULATOR_JWT_PUBLIC_KEY_FILE")? {
                Some(path) => {
                    Some(std::fs::read_to_string(&path).map_err(|e| {
                        SimulatorError::InvalidConfig(format!("reading {path}: {e}"))
                    })?)
                }
                None => None,
            },
        })
    }
}

/// Command-line flags of the simulator.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulatorArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8085")]
    pub listen: SocketAddr,
    /// Serve the org in this JSON file instead of the built-in one.
    #[arg(long)]
    pub org_file: Option<PathBuf>,
    /// Users in the built-in org.
    #[arg(long, default_value_t = DEFAULT_USERS)]
    pub users: usize,
    /// Most rows per query page.
    #[arg(long, default_value_t = DEFAULT_PAGE_SIZE)]
    pub page_size: usize,
    /// Change the org over time so alerts fire and resolve.
    #[arg(long)]
    pub demo: bool,
    /// Seconds between demo changes.
    #[arg(long, default_value_t = DEFAULT_DEMO_STEP_SECS)]
    pub demo_step_secs: u64,
    /// Daily API allocation reported and enforced.
    #[arg(long, default_value_t = DEFAULT_API_DAILY_LIMIT)]
    pub api_daily_limit: u64,
    /// Print the org as a JSON data file (loadable with --org-file) and exit.
    #[arg(long)]
    pub dump_org: bool,
}

impl SimulatorArgs {
    /// The run settings these flags and the environment describe.
    pub fn into_config(self) -> Result<SimulatorConfig, SimulatorError> {
        let org = match self.org_file {
            Some(path) => OrgSource::File(path),
            None => OrgSource::BuiltIn { users: self.users },
        };
        let config = SimulatorConfig {
            listen_addr: self.listen,
            org,
            credentials: Credentials::from_env()?,
            page_size: self.page_size,
            demo: self.demo,
            demo_step_secs: self.demo_step_secs,
            api_daily_limit: self.api_daily_limit,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimulatorArgs,
    }

    #[test]
    fn flags_have_documented_defaults() {
        let cli = Cli::try_parse_from(["sim"]).unwrap();
        assert_eq!(cli.args.listen, "127.0.0.1:8085".parse().unwrap());
        let config = cli.args.into_config().unwrap();
        assert_eq!(config.page_size, 2000);
        assert_eq!(config.api_daily_limit, 115_000);
        assert_eq!(config.org, OrgSource::BuiltIn { users: 1200 });
    }

    #[test]
    fn bad_values_are_refused() {
        let cli = Cli::try_parse_from(["sim", "--page-size", "0"]).unwrap();
        assert!(matches!(
            cli.args.into_config(),
            Err(SimulatorError::InvalidConfig(_))
        ));
        let cli = Cli::try_parse_from(["sim", "--users", "3"]).unwrap();
        assert!(matches!(
            cli.args.into_config(),
            Err(SimulatorError::InvalidConfig(_))
        ));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let shown = format!("{:?}", Credentials::demo());
        assert!(!shown.contains("demo-password") && !shown.contains("DEMOSECURITYTOKEN"));
        assert!(!shown.contains("SIMULATOR-DEMO-CONSUMER-SECRET"));
    }
}
