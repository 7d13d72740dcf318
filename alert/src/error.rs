//! The errors that stop the alert service, sorted by who must act.
//!
//! Only start-up problems and broken invariants end [`crate::run`]. Trouble with single
//! records, deliveries or sinks is logged, counted and retried where a retry can help; it
//! never surfaces here.

use rdkafka::error::KafkaError;
use seatwatch_common::config::ConfigError;
use seatwatch_common::kafka::TopicError;
use seatwatch_common::secret::SecretError;

/// Why the alert service could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    // The operator must fix the configuration; retrying as is cannot help.
    /// A value is out of range or malformed; `key` is its dotted path in the config.
    #[error("invalid configuration: {key} {reason}")]
    Config { key: String, reason: String },
    /// The file, environment or flags could not be read into the config.
    #[error(transparent)]
    Load(#[from] ConfigError),
    /// A secret the config points at could not be read.
    #[error("{0}")]
    Secret(#[from] SecretError),
    /// `kafka.schema_registry_url` is not a usable URL.
    #[error(
        "cannot use the schema registry: {0}; check kafka.schema_registry_url, or leave it \
         out when every producer writes single-object encoding"
    )]
    Registry(#[from] seatwatch_schemas::RegistryError),
    /// The schema registry refused to register a schema alert writes.
    #[error(
        "cannot register the alert or recommendation schema: {0}; check \
         kafka.schema_registry_url and the registry's credentials and compatibility \
         settings, or leave the URL out to write single-object encoding"
    )]
    Schemas(seatwatch_schemas::EncodingError),

    // The Kafka cluster or its operator must act; a restart retries.
    /// The topics could not be created or are missing.
    #[error("{0}")]
    Topics(#[from] TopicError),
    /// The topics disagree on partition counts, so an org's records and alerts would not
    /// land on the same partition number.
    #[error(
        "topics have unequal partition counts ({counts}); every seatwatch topic must have \
         the same number of partitions, since records are placed by org"
    )]
    PartitionMismatch { counts: String },
    /// A Kafka client could not be created or subscribed.
    #[error("Kafka client failed: {0}")]
    Kafka(#[from] KafkaError),

    // The host must act: something else holds the port, or permissions are missing.
    /// The operations server could not bind its address.
    #[error("cannot serve /metrics and health on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },

    /// The webhook's HTTP client could not be built (TLS setup of this host).
    #[error("cannot build the webhook HTTP client: {0}")]
    HttpClient(String),

    // A bug in seatwatch: report it.
    /// The metrics could not be registered, e.g. twice on one registry.
    #[error("registering metrics failed: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A service task panicked or was lost.
    #[error("the {task} task failed: {reason}")]
    Task { task: &'static str, reason: String },
}

impl AlertError {
    /// Shorthand for a configuration error naming its key.
    pub(crate) fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        AlertError::Config {
            key: key.into(),
            reason: reason.into(),
        }
    }
}
