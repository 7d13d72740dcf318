//! Dead letters: why an event could not be processed, in a fixed vocabulary.
//!
//! An event transform cannot turn into seat state goes to `salesforce.usage.dlq` with its
//! original key and value bytes untouched, and headers saying which stage rejected it, the
//! error class (a short fixed word, safe as a metric label), a sentence naming the field at
//! fault, and where the event came from, so an operator can find, fix and replay it. This
//! module owns the vocabulary and the header names; the processor decides what is rejected.

/// Header naming the stage that rejected the event (always `transform` here).
pub const HEADER_STAGE: &str = "seatwatch.stage";
/// Header holding the [`ErrorClass`].
pub const HEADER_ERROR_CLASS: &str = "seatwatch.error.class";
/// Header holding a human sentence that names the field at fault.
pub const HEADER_ERROR_MESSAGE: &str = "seatwatch.error.message";
/// Header holding the topic the event was read from.
pub const HEADER_SOURCE_TOPIC: &str = "seatwatch.source.topic";
/// Header holding the partition the event was read from, in decimal.
pub const HEADER_SOURCE_PARTITION: &str = "seatwatch.source.partition";
/// Header holding the offset the event was read from, in decimal.
pub const HEADER_SOURCE_OFFSET: &str = "seatwatch.source.offset";
/// Present when the value was cut to its head: the original length in bytes.
pub const HEADER_TRUNCATED_FROM: &str = "seatwatch.truncated.from.bytes";

/// The value of [`HEADER_STAGE`] for events this service rejects.
pub const STAGE: &str = "transform";

/// Why an event was dead-lettered. The words are a published contract: dashboards and
/// replay tools match on them, so add new ones rather than renaming.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The value is absent or not JSON at all.
    InvalidJson,
    /// The value is JSON but not a raw envelope (a field missing or malformed).
    InvalidEnvelope,
    /// The envelope names a Salesforce object seatwatch does not read.
    UnknownObject,
    /// The Salesforce record lacks a required field, or a field has the wrong type or an
    /// unparseable date.
    InvalidRecord,
    /// The Kafka key is not the one the envelope implies (`org/object/record-id`).
    KeyMismatch,
    /// The seat state built from a valid record does not fit its Avro schema; a bug here.
    EncodeFailed,
}

impl ErrorClass {
    /// Every class, for pre-registering metric series.
    pub const ALL: [ErrorClass; 6] = [
        ErrorClass::InvalidJson,
        ErrorClass::InvalidEnvelope,
        ErrorClass::UnknownObject,
        ErrorClass::InvalidRecord,
        ErrorClass::KeyMismatch,
        ErrorClass::EncodeFailed,
    ];

    /// The word written to the header and used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::InvalidJson => "invalid_json",
            ErrorClass::InvalidEnvelope => "invalid_envelope",
            ErrorClass::UnknownObject => "unknown_object",
            ErrorClass::InvalidRecord => "invalid_record",
            ErrorClass::KeyMismatch => "key_mismatch",
            ErrorClass::EncodeFailed => "encode_failed",
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event's rejection: its class and a sentence for the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub class: ErrorClass,
    pub message: String,
}

impl Rejection {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
        }
    }
}

/// Where a rejected event was read from.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// The headers of a dead letter, in a stable order.
pub fn headers(rejection: &Rejection, source: Source<'_>) -> Vec<(&'static str, String)> {
    vec![
        (HEADER_STAGE, STAGE.to_owned()),
        (HEADER_ERROR_CLASS, rejection.class.as_str().to_owned()),
        (HEADER_ERROR_MESSAGE, rejection.message.clone()),
        (HEADER_SOURCE_TOPIC, source.topic.to_owned()),
        (HEADER_SOURCE_PARTITION, source.partition.to_string()),
        (HEADER_SOURCE_OFFSET, source.offset.to_string()),
    ]
}
