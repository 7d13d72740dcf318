//! Configuration loading: a TOML file, then `SEATWATCH_*` environment variables, then
//! flags, each overriding the one before.
//!
//! Environment variables map onto the config's nesting with a double underscore:
//! `SEATWATCH_KAFKA__BOOTSTRAP_SERVERS` sets `kafka.bootstrap_servers`. Unknown keys are
//! errors everywhere, so a typo fails at start instead of being ignored. Secrets never
//! come through here as values: the config names an environment variable or a file (see
//! [`crate::secret`]), so pick secret variable names that do not start with `SEATWATCH_`.
//! `SEATWATCH_CONFIG`, `SEATWATCH_LOG`, `SEATWATCH_LOG_FORMAT` and `SEATWATCH_SIMULATOR_*`
//! are not config keys and are passed over.

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Environment variables under the `SEATWATCH_` prefix that are not config keys (after
/// the prefix, lowercased).
const RESERVED_ENV: &[&str] = &["config", "log", "log_format"];

/// Prefixes of variables that belong to other programs' settings: the simulator reads
/// `SEATWATCH_SIMULATOR_*` for its fake org's credentials.
const FOREIGN_ENV_PREFIXES: &[&str] = &["simulator_"];

/// The `[kafka]` values every service takes from flags (`--bootstrap-servers`,
/// `--topic-prefix`), as a partial config for [`load`]'s overrides.
#[derive(Debug, Default, Serialize)]
pub struct KafkaOverrides<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap_servers: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic_prefix: Option<&'a str>,
}

impl KafkaOverrides<'_> {
    /// No flag given: the overrides leave `[kafka]` out entirely.
    pub fn is_empty(&self) -> bool {
        self.bootstrap_servers.is_none() && self.topic_prefix.is_none()
    }
}

/// The configuration could not be loaded; the message says which key and source.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(#[from] Box<figment::Error>);

/// Loads a service's configuration.
///
/// `file` is the optional TOML file; `overrides` are values from flags, serialised with
/// `None`s skipped so an absent flag does not erase the file's value.
pub fn load<T, O>(file: Option<&Path>, overrides: &O) -> Result<T, ConfigError>
where
    T: DeserializeOwned,
    O: Serialize,
{
    let mut figment = Figment::new();
    if let Some(path) = file {
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment
        .merge(
            Env::prefixed("SEATWATCH_")
                .filter(|key| {
                    let key = key.as_str().to_ascii_lowercase();
                    !FOREIGN_ENV_PREFIXES
                        .iter()
                        .any(|prefix| key.starts_with(prefix))
                })
                .split("__")
                .ignore(RESERVED_ENV),
        )
        .merge(Serialized::defaults(overrides));
    figment.extract().map_err(|e| ConfigError(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        name: String,
        #[serde(default)]
        poll_interval_secs: u64,
    }

    #[derive(Serialize)]
    struct NoFlags {}

    #[test]
    fn unknown_key_in_file_is_an_error_naming_it() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "name = \"a\"\npoll_intervall_secs = 5").unwrap();
        let err = load::<Sample, _>(Some(file.path()), &NoFlags {}).unwrap_err();
        assert!(err.to_string().contains("poll_intervall_secs"), "{err}");
    }

    #[test]
    fn flags_override_the_file() {
        #[derive(Serialize)]
        struct Flags {
            poll_interval_secs: u64,
        }
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "name = \"a\"\npoll_interval_secs = 5").unwrap();
        let cfg: Sample = load(
            Some(file.path()),
            &Flags {
                poll_interval_secs: 9,
            },
        )
        .unwrap();
        assert_eq!((cfg.name.as_str(), cfg.poll_interval_secs), ("a", 9));
    }

    #[test]
    fn simulator_variables_are_not_config_keys() {
        std::env::set_var("SEATWATCH_SIMULATOR_CONFIG_TEST_ONLY", "x");
        let cfg: Result<Sample, _> = load(None, &Named { name: "a".into() });
        std::env::remove_var("SEATWATCH_SIMULATOR_CONFIG_TEST_ONLY");
        assert_eq!(cfg.unwrap().name, "a");
    }

    #[derive(Serialize)]
    struct Named {
        name: String,
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = load::<Sample, _>(Some(Path::new("/nonexistent/seatwatch.toml")), &NoFlags {});
        assert!(err.is_err());
    }
}
