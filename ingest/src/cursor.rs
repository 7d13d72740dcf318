//! Where ingest has read each incremental object up to, kept in a compacted Kafka topic.
//!
//! `User` and the seat assignments (`PermissionSetLicenseAssign`, `UserPackageLicense`)
//! are read incrementally on `SystemModstamp`, ordered by `SystemModstamp, Id`.
//! Salesforce can make a change visible with a `SystemModstamp` earlier than one already
//! read (commit lag), so each incremental read looks back `user_lookback_secs` before the
//! cursor; the records already emitted inside that window are remembered with their
//! `SystemModstamp`, so the look-back finds late arrivals without repeating anyone. With no
//! look-back, the query tie-breaks on `Id` instead: `(SystemModstamp = t AND Id > i) OR
//! SystemModstamp > t`. Either way records that share one timestamp are neither skipped
//! nor read again and again.
//!
//! A full read every `full_sync_interval_secs` (daily by default) catches what a cursor
//! cannot see: `LastLoginDate` changes do not move `SystemModstamp`, and a deleted
//! assignment simply stops appearing (Salesforce reports no deletions to a query), so
//! deletions show only at the full read. Each cursor is written (key `org/Object`) only
//! after every event of the sync is acknowledged, so a restarted ingest resumes from the
//! last sync that fully reached the broker.
//!
//! `LoginHistory` (read only when `login_history` is enabled) has no `SystemModstamp`: its
//! cursor is on `LoginTime`, with the same look-back and tie-break on `Id`. It is a log,
//! never read in full: the first read starts `login_history_initial_days` back (Salesforce
//! keeps about six months of it), and every later one continues from the cursor.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};
use seatwatch_common::kafka::{delivered, enqueue, partition_for, KafkaConfig};
use seatwatch_schemas::salesforce::format_soql_datetime;
use seatwatch_schemas::SfObject;
use serde::{Deserialize, Serialize};

use crate::sync::Emitter;

/// Records remembered inside the look-back window at most; past that, a mass update's
/// window is re-read and its records emitted again (duplicates, never gaps).
const MAX_RECENT: usize = 20_000;

/// The incremental read position of one object of one org.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectCursor {
    /// The cursor field (`SystemModstamp`; `LoginTime` for `LoginHistory`) of the newest
    /// record emitted.
    pub modstamp: Option<DateTime<Utc>>,
    /// The largest `Id` among records emitted with that `SystemModstamp`.
    pub id: Option<String>,
    /// Records emitted whose `SystemModstamp` lies within the look-back window, with that
    /// `SystemModstamp` in ms.
    #[serde(default)]
    pub recent: BTreeMap<String, i64>,
    /// When the latest full read of the object began.
    pub last_full_at: Option<DateTime<Utc>>,
}

impl ObjectCursor {
    /// Whether this sync must read every record: no cursor yet, or the last full read is
    /// older than `full_interval` (zero: every sync is full).
    pub fn needs_full(&self, now: DateTime<Utc>, full_interval: Duration) -> bool {
        match (self.modstamp, self.last_full_at) {
            (Some(_), Some(last)) if !full_interval.is_zero() => {
                now.signed_duration_since(last).to_std().unwrap_or_default() >= full_interval
            }
            _ => true,
        }
    }

    /// The `WHERE … ORDER BY` of an incremental read on `field` (see [`cursor_field`]),
    /// after the `select`.
    pub fn incremental_soql(
        &self,
        select: &str,
        field: &str,
        lookback: Duration,
    ) -> Option<String> {
        let modstamp = self.modstamp?;
        if lookback.is_zero() {
            let id = self.id.as_deref()?;
            let at = format_soql_datetime(modstamp);
            return Some(format!(
                "{select} WHERE ({field} = {at} AND Id > '{id}') OR {field} > {at} \
                 ORDER BY {field}, Id"
            ));
        }
        let from = modstamp - chrono::Duration::from_std(lookback).ok()?;
        Some(since_soql(select, field, from))
    }

    /// Whether a record read in an incremental sync is new, i.e. not already emitted with
    /// this very `SystemModstamp`.
    pub fn is_new(&self, id: &str, modstamp: DateTime<Utc>) -> bool {
        self.recent.get(id) != Some(&modstamp.timestamp_millis())
    }

    /// Notes that a record was emitted.
    pub fn observe(&mut self, id: &str, modstamp: DateTime<Utc>) {
        let newer = match (self.modstamp, self.id.as_deref()) {
            (Some(m), Some(i)) => (modstamp, id) > (m, i),
            _ => true,
        };
        if newer {
            self.modstamp = Some(modstamp);
            self.id = Some(id.to_owned());
        }
        self.recent
            .insert(id.to_owned(), modstamp.timestamp_millis());
    }

    /// Forgets records that fell out of the look-back window (and caps the rest).
    pub fn prune(&mut self, lookback: Duration) {
        let Some(modstamp) = self.modstamp else {
            return;
        };
        let floor = modstamp.timestamp_millis() - lookback.as_millis() as i64;
        self.recent.retain(|_, at| *at >= floor);
        if self.recent.len() > MAX_RECENT {
            self.recent.clear();
        }
    }
}

/// The objects read incrementally between full reads.
pub const INCREMENTAL: [SfObject; 3] = [
    SfObject::PermissionSetLicenseAssign,
    SfObject::UserPackageLicense,
    SfObject::User,
];

/// Every object with a cursor: the incremental ones and `LoginHistory`, which is only
/// ever read from a cursor (or, the first time, from a window back).
pub const CURSORED: [SfObject; 4] = [
    SfObject::PermissionSetLicenseAssign,
    SfObject::UserPackageLicense,
    SfObject::User,
    SfObject::LoginHistory,
];

/// The field an object's cursor is on.
pub fn cursor_field(object: SfObject) -> &'static str {
    match object {
        SfObject::LoginHistory => "LoginTime",
        _ => "SystemModstamp",
    }
}

/// The read of every record whose `field` is at or after `from`, oldest first.
pub fn since_soql(select: &str, field: &str, from: DateTime<Utc>) -> String {
    format!(
        "{select} WHERE {field} >= {} ORDER BY {field}, Id",
        format_soql_datetime(from)
    )
}

/// The cursor topic's key for one object of an org, and the key of the map [`load`]
/// returns.
pub fn key(org_id: &str, object: SfObject) -> String {
    format!("{org_id}/{object}")
}

/// Reads every cursor in the topic, keyed by [`key`]. Unreadable values are skipped with
/// a warning (that object of the org then starts with a full read).
pub async fn load(
    kafka: &KafkaConfig,
    topic: &str,
) -> Result<HashMap<String, ObjectCursor>, KafkaError> {
    let config = kafka.consumer_config("seatwatch-ingest-cursors", "seatwatch-ingest-cursors");
    let config = config.map_err(|e| KafkaError::ClientCreation(e.to_string()))?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = config.create()?;
        let timeout = Duration::from_secs(30);
        let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
        let partitions = metadata
            .topics()
            .first()
            .map(|t| t.partitions().len())
            .unwrap_or(0);

        let mut cursors = HashMap::new();
        for partition in 0..partitions as i32 {
            let (low, high) = consumer.fetch_watermarks(&topic, partition, timeout)?;
            if high <= low {
                continue;
            }
            let mut assignment = TopicPartitionList::new();
            assignment.add_partition_offset(&topic, partition, Offset::Offset(low))?;
            consumer.assign(&assignment)?;
            let mut next = low;
            while next < high {
                let Some(message) = consumer.poll(timeout) else {
                    return Err(KafkaError::NoMessageReceived);
                };
                let message = message?;
                next = message.offset() + 1;
                let Some(key) = message.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                    continue;
                };
                let known = key
                    .rsplit_once('/')
                    .is_some_and(|(_, object)| CURSORED.iter().any(|o| o.as_str() == object));
                if !known {
                    continue;
                }
                match message
                    .payload()
                    .map(serde_json::from_slice::<ObjectCursor>)
                {
                    None => {
                        cursors.remove(key);
                    }
                    Some(Ok(cursor)) => {
                        cursors.insert(key.to_owned(), cursor);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(cursor = key, error = %e,
                            "unreadable cursor; the object starts over with a full read");
                    }
                }
            }
        }
        Ok(cursors)
    })
    .await
    .expect("cursor loading task panicked")
}

/// Writes the cursor of one object of an org and waits for the broker to acknowledge it.
pub async fn save(
    emitter: &Emitter,
    org_id: &str,
    object: SfObject,
    cursor: &ObjectCursor,
) -> Result<(), KafkaError> {
    let payload = serde_json::to_vec(cursor).expect("a cursor always serialises");
    let key = key(org_id, object);
    let record = FutureRecord::to(&emitter.topics.ingest_cursors)
        .key(&key)
        .payload(&payload)
        .partition(partition_for(org_id, emitter.cursor_partitions));
    delivered(enqueue(&emitter.producer, record).await?)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn no_cursor_or_an_old_full_read_means_a_full_read() {
        let now = at("2026-01-02T00:00:00Z");
        let day = Duration::from_secs(86_400);
        assert!(ObjectCursor::default().needs_full(now, day));
        let mut cursor = ObjectCursor::default();
        cursor.observe("005A", at("2026-01-01T10:00:00Z"));
        cursor.last_full_at = Some(at("2026-01-01T12:00:00Z"));
        assert!(!cursor.needs_full(now, day));
        assert!(cursor.needs_full(at("2026-01-02T12:00:00Z"), day));
        assert!(cursor.needs_full(now, Duration::ZERO), "zero: always full");
    }

    #[test]
    fn incremental_queries_look_back_or_tie_break_on_id() {
        let mut cursor = ObjectCursor::default();
        cursor.observe("005B", at("2026-01-01T10:00:00Z"));
        cursor.observe("005A", at("2026-01-01T10:00:00Z"));
        assert_eq!(
            cursor.id.as_deref(),
            Some("005B"),
            "largest id at the newest instant"
        );

        let look_back = cursor.incremental_soql(
            "SELECT Id FROM User",
            "SystemModstamp",
            Duration::from_secs(600),
        );
        assert_eq!(
            look_back.unwrap(),
            "SELECT Id FROM User WHERE SystemModstamp >= 2026-01-01T09:50:00.000Z \
             ORDER BY SystemModstamp, Id"
        );
        let tie_break = cursor
            .incremental_soql("SELECT Id FROM User", "SystemModstamp", Duration::ZERO)
            .unwrap();
        assert_eq!(
            tie_break,
            "SELECT Id FROM User WHERE (SystemModstamp = 2026-01-01T10:00:00.000Z AND \
             Id > '005B') OR SystemModstamp > 2026-01-01T10:00:00.000Z ORDER BY SystemModstamp, Id"
        );
    }

    #[test]
    fn login_history_is_read_on_login_time() {
        assert_eq!(cursor_field(SfObject::LoginHistory), "LoginTime");
        assert_eq!(cursor_field(SfObject::User), "SystemModstamp");
        assert!(CURSORED.contains(&SfObject::LoginHistory));
        assert!(!INCREMENTAL.contains(&SfObject::LoginHistory));

        let select = "SELECT Id FROM LoginHistory";
        let first = since_soql(select, "LoginTime", at("2025-12-02T00:00:00Z"));
        assert_eq!(
            first,
            "SELECT Id FROM LoginHistory WHERE LoginTime >= 2025-12-02T00:00:00.000Z \
             ORDER BY LoginTime, Id"
        );
        let mut cursor = ObjectCursor::default();
        cursor.observe("0Ya2", at("2026-01-01T10:00:00Z"));
        cursor.observe("0Ya1", at("2026-01-01T10:00:00Z"));
        let look_back = cursor
            .incremental_soql(select, "LoginTime", Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            look_back,
            "SELECT Id FROM LoginHistory WHERE LoginTime >= 2026-01-01T09:59:00.000Z \
             ORDER BY LoginTime, Id"
        );
        let tie_break = cursor
            .incremental_soql(select, "LoginTime", Duration::ZERO)
            .unwrap();
        assert_eq!(
            tie_break,
            "SELECT Id FROM LoginHistory WHERE (LoginTime = 2026-01-01T10:00:00.000Z AND \
             Id > '0Ya2') OR LoginTime > 2026-01-01T10:00:00.000Z ORDER BY LoginTime, Id"
        );
        assert!(!look_back.contains("Status"), "Status is not filterable");
    }

    #[test]
    fn users_already_emitted_with_the_same_modstamp_are_not_new() {
        let mut cursor = ObjectCursor::default();
        cursor.observe("005A", at("2026-01-01T10:00:00Z"));
        assert!(!cursor.is_new("005A", at("2026-01-01T10:00:00Z")));
        assert!(
            cursor.is_new("005A", at("2026-01-01T10:00:01Z")),
            "changed again"
        );
        assert!(
            cursor.is_new("005C", at("2026-01-01T09:59:00Z")),
            "a late arrival"
        );
    }

    #[test]
    fn prune_keeps_only_the_window() {
        let mut cursor = ObjectCursor::default();
        cursor.observe("005A", at("2026-01-01T09:00:00Z"));
        cursor.observe("005B", at("2026-01-01T09:55:00Z"));
        cursor.observe("005C", at("2026-01-01T10:00:00Z"));
        cursor.prune(Duration::from_secs(600));
        let kept: Vec<&str> = cursor.recent.keys().map(String::as_str).collect();
        assert_eq!(kept, ["005B", "005C"]);
    }
}
