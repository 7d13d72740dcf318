//! seatwatch's data contracts.
//!
//! - [`envelope`]: the JSON envelope ingest writes to `salesforce.usage.raw`, one per
//!   Salesforce record, plus the end-of-snapshot markers that delimit a sync.
//! - [`salesforce`]: typed views of the Salesforce records inside envelopes, and
//!   Salesforce's datetime format.
//! - [`records`]: the Avro records of the seat-state, sync-status and alert topics, with
//!   their `.avsc` schemas (in `schemas/avro/`).
//! - [`avro`]: encoding and decoding those records (Avro single-object encoding).
//!
//! The services depend on these types; downstream teams depend on the `.avsc` files and
//! the keys documented in `schemas/README.md`.

pub mod avro;
pub mod envelope;
pub mod records;
pub mod salesforce;

pub use avro::{AvroCodec, AvroError};
pub use envelope::{EnvelopeKind, RawEnvelope, SfObject, SnapshotEnd, SnapshotMode};
pub use records::{
    Alert, AlertStatus, LicenseKind, LicenseState, LicenseStatus, Severity, SyncOutcome,
    SyncStatus, UserState,
};
