//! transform's configuration and its command-line flags.
//!
//! The configuration comes from a TOML file, then `SEATWATCH_*` environment variables, then
//! flags (see `seatwatch_common::config`); every default is written next to its field.
//! Flags cover only what an operator changes per run; everything else is in the file.

use std::net::SocketAddr;
use std::path::PathBuf;

use seatwatch_common::config::{self, ConfigError, KafkaOverrides};
use seatwatch_common::kafka::KafkaConfig;
use serde::{Deserialize, Serialize};

/// Everything transform needs to run.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// The Kafka cluster and topic layout.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// Consumer group of the raw topic. Instances sharing it split the orgs between them.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Where `/metrics`, `/healthz` and `/readyz` are served. Loopback by default so that
    /// nothing is exposed by accident; containers set `0.0.0.0:9102`.
    #[serde(default = "default_listen_addr")]
    pub listen_addr: SocketAddr,
    /// How often in-flight outputs are awaited and offsets committed. Shorter means less
    /// to replay after a crash, longer means fewer commits.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// Outputs handed to the producer and not yet acknowledged before transform stops
    /// reading and waits for the broker. Each holds a few hundred bytes in librdkafka's
    /// queue plus a delivery handle, so 50 000 is some 25 MB at most; it stays below
    /// librdkafka's own queue limit (100 000 messages), so this bound, not a full queue,
    /// paces the input. It bounds the events read in one run of the processing lanes (no
    /// more than there is room for, but an event may have many outputs, such as the
    /// tombstones of a full snapshot), so it may be overshot by one run's extra outputs.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// How outputs and input offsets are committed: `at_least_once` (the default) or
    /// `transactional`, which needs a broker with Kafka transactions (tansu 0.6 has none).
    #[serde(default)]
    pub delivery: Delivery,
    /// Threads processing raw partitions side by side (each partition's events stay in
    /// order on one of them); 0, the default, means one per CPU core. More threads than
    /// the raw partitions this instance owns do not help.
    #[serde(default)]
    pub processing_threads: usize,
}

/// How transform commits what it has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Offsets are committed after every output before them is acknowledged; a crash
    /// between the two replays, so outputs may repeat (the compacted topics absorb that).
    #[default]
    AtLeastOnce,
    /// The outputs of each flush and the input offsets they make safe are committed in
    /// one Kafka transaction: `read_committed` consumers see each output once.
    Transactional,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::AtLeastOnce => "at_least_once",
            Delivery::Transactional => "transactional",
        }
    }
}

fn default_group_id() -> String {
    "seatwatch-transform".into()
}

fn default_listen_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9102))
}

fn default_flush_interval_ms() -> u64 {
    100
}

fn default_max_in_flight() -> usize {
    50_000
}

impl Default for TransformConfig {
    fn default() -> Self {
        Self {
            kafka: KafkaConfig::default(),
            group_id: default_group_id(),
            listen_addr: default_listen_addr(),
            flush_interval_ms: default_flush_interval_ms(),
            max_in_flight: default_max_in_flight(),
            delivery: Delivery::default(),
            processing_threads: 0,
        }
    }
}

/// Flags of the `transform` command.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TransformArgs {
    /// TOML configuration file.
    #[arg(long, env = "SEATWATCH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address of the metrics and health server, e.g. 0.0.0.0:9102.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Kafka bootstrap servers, `host:port[,host:port…]`.
    #[arg(long, value_name = "SERVERS")]
    pub bootstrap_servers: Option<String>,
    /// Prefix of every topic name, e.g. `prod.`.
    #[arg(long, value_name = "PREFIX")]
    pub topic_prefix: Option<String>,
    /// Consumer group of the raw topic.
    #[arg(long, value_name = "GROUP")]
    pub group_id: Option<String>,
}

/// The flags as configuration values; absent flags are left out so they override nothing.
#[derive(Serialize)]
struct Overrides<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    listen_addr: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_id: Option<&'a str>,
    #[serde(skip_serializing_if = "KafkaOverrides::is_empty")]
    kafka: KafkaOverrides<'a>,
}

impl TransformArgs {
    /// Loads the configuration: the file, then the environment, then these flags.
    pub fn load(&self) -> Result<TransformConfig, ConfigError> {
        let overrides = Overrides {
            listen_addr: self.listen,
            group_id: self.group_id.as_deref(),
            kafka: KafkaOverrides {
                bootstrap_servers: self.bootstrap_servers.as_deref(),
                topic_prefix: self.topic_prefix.as_deref(),
            },
        };
        config::load(self.config.as_deref(), &overrides)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TransformArgs,
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let file = file(
            "group_id = \"from-file\"\nflush_interval_ms = 250\n\
             [kafka]\nbootstrap_servers = \"file:9092\"\ntopic_prefix = \"file.\"\n",
        );
        let path = file.path().to_str().unwrap();
        let cli = Cli::parse_from(["t", "--config", path, "--topic-prefix", "flag."]);
        let config = cli.args.load().unwrap();
        assert_eq!(config.kafka.topic_prefix, "flag.");
        assert_eq!(config.kafka.bootstrap_servers, "file:9092");
        assert_eq!(config.group_id, "from-file");
        assert_eq!(config.flush_interval_ms, 250);
        assert_eq!(config.max_in_flight, 50_000);
        assert_eq!(config.processing_threads, 0, "one per core unless set");
        assert_eq!(config.listen_addr, "127.0.0.1:9102".parse().unwrap());
    }

    #[test]
    fn every_flag_lands_on_its_key() {
        let cli = Cli::parse_from([
            "t",
            "--listen",
            "127.0.0.1:0",
            "--bootstrap-servers",
            "b:1",
            "--group-id",
            "g",
        ]);
        let config = cli.args.load().unwrap();
        assert_eq!(config.listen_addr.port(), 0);
        assert_eq!(config.kafka.bootstrap_servers, "b:1");
        assert_eq!(config.group_id, "g");
    }

    #[test]
    fn the_schema_registry_is_optional_and_set_from_the_environment() {
        let args = TransformArgs::default();
        assert_eq!(args.load().unwrap().kafka.schema_registry_url, None);

        // No other test reads this variable, so setting it here races with nothing.
        std::env::set_var(
            "SEATWATCH_KAFKA__SCHEMA_REGISTRY_URL",
            "http://127.0.0.1:8081",
        );
        let loaded = args.load();
        std::env::remove_var("SEATWATCH_KAFKA__SCHEMA_REGISTRY_URL");
        let url = loaded.unwrap().kafka.schema_registry_url;
        assert_eq!(url.as_deref(), Some("http://127.0.0.1:8081"));
    }

    #[test]
    fn delivery_defaults_to_at_least_once_and_reads_transactional() {
        assert_eq!(TransformConfig::default().delivery, Delivery::AtLeastOnce);
        let file = file("delivery = \"transactional\"\n");
        let args = TransformArgs {
            config: Some(file.path().into()),
            ..TransformArgs::default()
        };
        assert_eq!(args.load().unwrap().delivery, Delivery::Transactional);
    }

    #[test]
    fn unknown_key_is_rejected() {
        let file = file("flush_interval_secs = 1\n");
        let args = TransformArgs {
            config: Some(file.path().into()),
            ..TransformArgs::default()
        };
        let error = args.load().unwrap_err().to_string();
        assert!(error.contains("flush_interval_secs"), "{error}");
    }
}
