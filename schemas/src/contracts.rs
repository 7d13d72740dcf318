//! The list of seatwatch's Avro contracts: which record goes on which topic, under which
//! key, and every version of its schema that was ever published.
//!
//! A published version is frozen: `schemas/avro/published/<name>/v<n>.avsc` never changes
//! once released, and the working copy `schemas/avro/<name>.avsc` always equals the newest
//! one. To change a contract, edit the working copy, copy it to the next `v<n>.avsc`, add
//! that file to [`Contract::published`] (through the record's `AvroRecord::PUBLISHED`), and
//! let the compatibility tests check it against every earlier version (see
//! `schemas/README.md`).

use crate::avro::AvroRecord;
use crate::records::{Alert, LicenseState, Recommendation, SyncStatus, UserState};

/// One topic's value contract.
#[derive(Clone, Copy, Debug)]
pub struct Contract {
    /// The file stem: `schemas/avro/<name>.avsc`, `schemas/avro/published/<name>/`.
    pub name: &'static str,
    /// The topic without the configured prefix.
    pub topic: &'static str,
    /// The key format.
    pub key: &'static str,
    /// Whether the topic is compacted (a null value deletes the key) or deletes by age.
    pub compacted: bool,
    /// The current schema.
    pub schema: &'static str,
    /// Every published version, oldest first; the last equals `schema`.
    pub published: &'static [&'static str],
}

impl Contract {
    fn of<T: AvroRecord>(
        name: &'static str,
        topic: &'static str,
        key: &'static str,
        compacted: bool,
    ) -> Self {
        Self {
            name,
            topic,
            key,
            compacted,
            schema: T::SCHEMA,
            published: T::PUBLISHED,
        }
    }
}

/// Every Avro contract seatwatch publishes.
pub fn all() -> [Contract; 5] {
    let compact = true;
    [
        Contract::of::<SyncStatus>("sync_status", "salesforce.sync-status", "org", compact),
        Contract::of::<LicenseState>(
            "license_state",
            "seats.license-state",
            "org/kind/license-id",
            compact,
        ),
        Contract::of::<UserState>("user_state", "seats.user-state", "org/user-id", compact),
        Contract::of::<Alert>("alert", "seats.alerts", "fingerprint", !compact),
        Contract::of::<Recommendation>(
            "recommendation",
            "seats.recommendations",
            "org/user-id/license-id",
            compact,
        ),
    ]
}
