//! seatwatch's data contracts.
//!
//! - [`envelope`]: the JSON envelope ingest writes to `salesforce.usage.raw`, one per
//!   Salesforce record, plus the end-of-snapshot markers that delimit a sync.
//! - [`salesforce`]: typed views of the Salesforce records inside envelopes, and
//!   Salesforce's datetime format.
//! - [`records`]: the Avro records of the seat-state, sync-status, alert and
//!   recommendation topics, with their `.avsc` schemas (in `schemas/avro/`).
//! - [`contracts`]: which record goes on which topic, and every published version of each
//!   schema (`schemas/avro/published/`).
//! - [`avro`]: encoding and decoding those records (Avro single-object encoding).
//! - [`encoding`]: framing on Kafka, single-object or the Confluent wire format with a
//!   schema registry ([`registry`] is its HTTP client).
//! - [`compat`]: the schema evolution rules the published versions are held to.
//!
//! The services depend on these types; downstream teams depend on the `.avsc` files and
//! the keys documented in `schemas/README.md`.

pub mod avro;
pub mod compat;
pub mod contracts;
mod datum;
pub mod encoding;
pub mod envelope;
pub mod records;
pub mod registry;
pub mod salesforce;

pub use avro::{AvroCodec, AvroError};
pub use encoding::{Encoder, EncodingError, Framing, Header};
pub use envelope::{EnvelopeKind, RawEnvelope, SfObject, SnapshotEnd, SnapshotMode};
pub use records::{
    recommendation_key, Alert, AlertStatus, LicenseKind, LicenseState, LicenseStatus,
    Recommendation, RecommendationAction, RecommendationEvidence, Severity, SyncOutcome,
    SyncStatus, UserState,
};
pub use registry::{RegistryClient, RegistryError, SchemaId};
