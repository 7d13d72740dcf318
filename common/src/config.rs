//! Configuration loading: a TOML file, then `SEATWATCH_*` environment variables, then
//! flags, each overriding the one before.
//!
//! Environment variables map onto the config's nesting with a double underscore:
//! `SEATWATCH_KAFKA__BOOTSTRAP_SERVERS` sets `kafka.bootstrap_servers`. Unknown keys are
//! errors everywhere, so a typo fails at start instead of being ignored. Secrets never
//! come through here as values: the config names an environment variable or a file (see
//! [`crate::secret`]), so pick secret variable names that do not start with `SEATWATCH_`.
//! `SEATWATCH_CONFIG`, `SEATWATCH_LOG`, `SEATWATCH_LOG_FORMAT`, `SEATWATCH_SIMULATOR_*` and
//! `SEATWATCH_BENCH_*` are not config keys and are passed over.

use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Environment variables under the `SEATWATCH_` prefix that are not config keys (after
/// the prefix, lowercased).
const RESERVED_ENV: &[&str] = &["config", "log", "log_format"];

/// Prefixes of variables that belong to other programs' settings: the simulator reads
/// `SEATWATCH_SIMULATOR_*` for its fake org's credentials, and the benchmarks read
/// `SEATWATCH_BENCH_*` for their sizes (and start services that inherit them).
const FOREIGN_ENV_PREFIXES: &[&str] = &["simulator_", "bench_"];

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

/// The configuration could not be loaded; the message says what is wrong, with which key,
/// from which source, and the file's line when the key is in the file.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {message}")]
pub struct ConfigError {
    message: String,
}

impl ConfigError {
    fn from_figment(error: figment::Error) -> Self {
        let messages: Vec<String> = error.into_iter().map(describe).collect();
        Self {
            message: messages.join("; "),
        }
    }
}

/// One figment error as `what for key K in SOURCE line N`.
fn describe(error: figment::Error) -> String {
    let key = error.path.join(".");
    let mut text = match &error.kind {
        figment::error::Kind::UnknownField(found, expected) => unknown_key(found, expected),
        kind => kind.to_string(),
    };
    if !key.is_empty() {
        text.push_str(&format!(" for key `{key}`"));
    }
    match error.metadata.as_ref().and_then(|m| m.source.as_ref()) {
        Some(figment::Source::File(path)) => {
            text.push_str(&format!(" in {}", path.display()));
            let line = std::fs::read_to_string(path)
                .ok()
                .and_then(|toml| line_of_key(&toml, &toml_path(&error.path)));
            if let Some(line) = line {
                text.push_str(&format!(" line {line}"));
            }
        }
        Some(source) => text.push_str(&format!(" in {source}")),
        None => {
            if let Some(metadata) = &error.metadata {
                text.push_str(&format!(" in {}", metadata.name));
            }
        }
    }
    text
}

/// "unknown key `found`", the closest known key when one is close, and the known keys.
fn unknown_key(found: &str, expected: &[&str]) -> String {
    let mut text = format!("unknown key `{found}`");
    let closest = expected
        .iter()
        .map(|known| (strsim::jaro_winkler(found, known), known))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((_, known)) = closest {
        text.push_str(&format!(" (did you mean `{known}`?)"));
    }
    if !expected.is_empty() {
        let known: Vec<String> = expected.iter().map(|key| format!("`{key}`")).collect();
        text.push_str(&format!("; known keys: {}", known.join(", ")));
    }
    text
}

/// A figment path as [`line_of_key`] reads it: array indexes (`orgs.0.name`) become
/// `orgs[0].name`.
fn toml_path(path: &[String]) -> String {
    let mut text = String::new();
    for segment in path {
        if !text.is_empty() && segment.parse::<usize>().is_ok() {
            text.push_str(&format!("[{segment}]"));
        } else {
            if !text.is_empty() {
                text.push('.');
            }
            text.push_str(segment);
        }
    }
    text
}

/// The 1-based line of a TOML file that sets the dotted `key` (array indexes such as
/// `orgs[1]` pick that table of the array), found by reading the file as text: the key's
/// table header, then the key or an inline table holding the rest of the path. `None`
/// when the key is not written in the file (a default, or another source).
pub fn line_of_key(toml: &str, key: &str) -> Option<usize> {
    let segments: Vec<(&str, Option<usize>)> = key
        .split('.')
        .filter(|segment| !segment.is_empty())
        .map(|segment| match segment.split_once('[') {
            Some((name, index)) => (name, index.trim_end_matches(']').parse().ok()),
            None => (segment, None),
        })
        .collect();
    let lines: Vec<&str> = toml.lines().collect();

    // The longest prefix of the path that is a table header, and where its body starts.
    let mut body = (0, 0);
    for depth in (1..segments.len()).rev() {
        let header: Vec<&str> = segments[..depth].iter().map(|(name, _)| *name).collect();
        let header = header.join(".");
        let wanted = segments[depth - 1].1.unwrap_or(0);
        let found = lines
            .iter()
            .enumerate()
            .filter(|(_, line)| {
                let line = line.trim();
                line == format!("[{header}]") || line == format!("[[{header}]]")
            })
            .nth(wanted);
        if let Some((at, _)) = found {
            body = (at + 1, depth);
            break;
        }
    }

    // In that table, the first line assigning the next segment.
    let (start, depth) = body;
    let (name, _) = segments.get(depth)?;
    let rest: Vec<&str> = segments[depth + 1..]
        .iter()
        .map(|(name, _)| *name)
        .collect();
    for (at, line) in lines.iter().enumerate().skip(start) {
        let line = line.trim();
        if line.starts_with('[') {
            break;
        }
        let Some((assigned, value)) = line.split_once('=') else {
            continue;
        };
        let assigned = assigned.trim().trim_matches('"');
        if assigned == *name && rest.iter().all(|inner| value.contains(inner)) {
            return Some(at + 1);
        }
    }
    None
}

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
    figment.extract().map_err(ConfigError::from_figment)
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
        let text = err.to_string();
        assert!(text.contains("poll_intervall_secs"), "{text}");
        assert!(text.contains(" line 2"), "{text}");
        assert!(!text.contains("default."), "no profile prefix: {text}");
        assert!(
            text.contains("did you mean `poll_interval_secs`?"),
            "{text}"
        );
        assert!(
            text.contains("known keys: `name`, `poll_interval_secs`"),
            "{text}"
        );
    }

    #[test]
    fn a_far_off_key_gets_no_suggestion_and_array_keys_get_their_line() {
        assert!(!unknown_key("zzz", &["name"]).contains("did you mean"));
        let path: Vec<String> = ["orgs", "1", "user_name"].map(String::from).into();
        assert_eq!(toml_path(&path), "orgs[1].user_name");
        let toml = "[[orgs]]\nname = \"a\"\n\n[[orgs]]\nname = \"b\"\nuser_name = \"x\"\n";
        assert_eq!(line_of_key(toml, &toml_path(&path)), Some(6));
    }

    #[test]
    fn keys_are_found_in_tables_arrays_and_inline_tables() {
        let toml = "listen_addr = \"x\"\n\n[rules.utilization]\nthreshold = 0.9\n\
                    clear_below = 0.95\n\n[[rules.overrides]]\npools = [\"A\"]\n\n\
                    [[rules.overrides]]\nutilization = { threshold = 2.0 }\n";
        assert_eq!(line_of_key(toml, "listen_addr"), Some(1));
        assert_eq!(line_of_key(toml, "rules.utilization.clear_below"), Some(5));
        assert_eq!(line_of_key(toml, "rules.overrides[0].pools"), Some(8));
        assert_eq!(
            line_of_key(toml, "rules.overrides[1].utilization.threshold"),
            Some(11)
        );
        assert_eq!(line_of_key(toml, "rules.idle_seats.idle_days"), None);
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
    fn simulator_and_benchmark_variables_are_not_config_keys() {
        std::env::set_var("SEATWATCH_SIMULATOR_CONFIG_TEST_ONLY", "x");
        std::env::set_var("SEATWATCH_BENCH_CONFIG_TEST_ONLY", "10");
        let cfg: Result<Sample, _> = load(None, &Named { name: "a".into() });
        std::env::remove_var("SEATWATCH_SIMULATOR_CONFIG_TEST_ONLY");
        std::env::remove_var("SEATWATCH_BENCH_CONFIG_TEST_ONLY");
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
