//! One sync of one org: read every object, emit each record to the raw topic, and report.
//!
//! Delivery: records are handed to the producer as pages arrive (waiting when its queue
//! is full), then the sync awaits every acknowledgement before it counts as a success.
//! Only then is the sync-status record written with `last_success_at` moved on, so a
//! sync whose events the broker did not take is never reported as done. A sync cut short
//! (Salesforce error, shutdown) leaves an object's snapshot without its end marker;
//! transform discards such a snapshot when the next sync of that object begins.

use std::collections::BTreeMap;
use std::time::Instant;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::try_join_all;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use seatwatch_common::kafka::{delivered, enqueue, partition_for, ServiceContext, Topics};
use seatwatch_common::Shutdown;
use seatwatch_schemas::avro::AvroRecord;
use seatwatch_schemas::salesforce::{parse_datetime, RecordId};
use seatwatch_schemas::{
    EnvelopeKind, RawEnvelope, SfObject, SnapshotEnd, SnapshotMode, SyncOutcome, SyncStatus,
};

use crate::cursor::{self, UserCursor};
use crate::quota::{QuotaGovernor, QuotaStop};
use crate::salesforce::{ErrorClass, Query, SalesforceClient, SalesforceError};

/// Un-acknowledged records a sync may hold before it waits for the broker: bounds the
/// memory of a large org (each record is about 1 KiB in the producer's queue).
const MAX_PENDING: usize = 50_000;

/// The `SELECT … FROM User` that both full and incremental reads start with.
pub const USER_SELECT: &str = "SELECT Id, Username, IsActive, UserType, LastLoginDate, \
    ProfileId, Profile.Name, Profile.UserLicenseId, Profile.UserLicense.Name, \
    Profile.UserLicense.LicenseDefinitionKey, SystemModstamp FROM User";

const USER_FULL: &str = "SELECT Id, Username, IsActive, UserType, LastLoginDate, ProfileId, \
    Profile.Name, Profile.UserLicenseId, Profile.UserLicense.Name, \
    Profile.UserLicense.LicenseDefinitionKey, SystemModstamp FROM User ORDER BY Id";

/// The SOQL that reads each object. Licences and assignments are small: full snapshots.
/// `User` here is the full read; incremental reads are built by [`UserCursor`].
pub fn soql(object: SfObject) -> &'static str {
    match object {
        SfObject::UserLicense => {
            "SELECT Id, LicenseDefinitionKey, Name, MasterLabel, Status, TotalLicenses, \
             UsedLicenses, UsedLicensesLastUpdated, SystemModstamp FROM UserLicense ORDER BY Id"
        }
        SfObject::PermissionSetLicense => {
            "SELECT Id, DeveloperName, MasterLabel, PermissionSetLicenseKey, Status, \
             TotalLicenses, UsedLicenses, ExpirationDate, SystemModstamp \
             FROM PermissionSetLicense ORDER BY Id"
        }
        SfObject::PackageLicense => {
            "SELECT Id, NamespacePrefix, AllowedLicenses, UsedLicenses, Status, ExpirationDate, \
             IsProvisioned, SystemModstamp FROM PackageLicense ORDER BY Id"
        }
        SfObject::PermissionSetLicenseAssign => {
            "SELECT Id, AssigneeId, PermissionSetLicenseId, SystemModstamp \
             FROM PermissionSetLicenseAssign ORDER BY Id"
        }
        SfObject::UserPackageLicense => {
            "SELECT Id, UserId, PackageLicenseId, SystemModstamp FROM UserPackageLicense \
             ORDER BY Id"
        }
        SfObject::User => USER_FULL,
    }
}

/// Why a sync did not complete.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Salesforce(#[from] SalesforceError),
    #[error(
        "the broker did not acknowledge the sync's events: {0}; the next sync sends them \
             again"
    )]
    Broker(#[from] KafkaError),
    #[error(transparent)]
    Quota(#[from] QuotaStop),
    #[error("Salesforce returned a record without an Id: {0}")]
    Record(String),
    #[error("shutdown requested before the sync finished")]
    Cancelled,
}

impl SyncError {
    /// The sync-status outcome and error class for this failure.
    pub fn outcome(&self) -> (SyncOutcome, &'static str) {
        match self {
            SyncError::Salesforce(e) => match e.class() {
                ErrorClass::Auth => (SyncOutcome::AuthFailed, "auth"),
                ErrorClass::Quota => (SyncOutcome::PausedForQuota, "quota"),
                ErrorClass::Config => (SyncOutcome::Failed, "config"),
                ErrorClass::Transient => (SyncOutcome::Failed, "salesforce"),
            },
            SyncError::Quota(_) => (SyncOutcome::PausedForQuota, "quota"),
            SyncError::Broker(_) => (SyncOutcome::Failed, "broker"),
            SyncError::Record(_) => (SyncOutcome::Failed, "salesforce"),
            SyncError::Cancelled => (SyncOutcome::Failed, "shutdown"),
        }
    }
}

/// Writes ingest's events to Kafka.
pub struct Emitter {
    pub producer: FutureProducer<ServiceContext>,
    pub topics: Topics,
    pub raw_partitions: i32,
    pub status_partitions: i32,
    pub cursor_partitions: i32,
}

/// How syncs behave: quota limits and how users are read.
#[derive(Clone, Copy, Debug)]
pub struct SyncPolicy {
    pub governor: QuotaGovernor,
    pub user_lookback: Duration,
    pub full_sync_interval: Duration,
}

/// An org's user cursor: the one loaded from Kafka at start until the org's first sync
/// signs in and picks its own, then the one of its latest acknowledged sync.
#[derive(Debug)]
pub struct CursorSlot {
    loaded: Arc<HashMap<String, UserCursor>>,
    current: Option<UserCursor>,
}

impl CursorSlot {
    pub fn new(loaded: Arc<HashMap<String, UserCursor>>) -> Self {
        Self {
            loaded,
            current: None,
        }
    }

    fn get(&mut self, org_id: &str) -> &mut UserCursor {
        let loaded = &self.loaded;
        self.current
            .get_or_insert_with(|| loaded.get(org_id).cloned().unwrap_or_default())
    }
}

/// What one sync fetched.
#[derive(Debug, Default)]
struct Fetched {
    records: BTreeMap<String, i64>,
}

/// Runs one sync of the client's org and returns its status record, already written to
/// `salesforce.sync-status` when the broker allowed it.
pub async fn sync_org(
    client: &mut SalesforceClient,
    emitter: &Emitter,
    policy: &SyncPolicy,
    cursor: &mut CursorSlot,
    last_success_at: Option<i64>,
    shutdown: &Shutdown,
) -> (SyncStatus, Result<(), SyncError>) {
    let started_at = Utc::now();
    let sync_id = uuid::Uuid::now_v7().to_string();
    let calls_before = client.api_calls;
    let clock = Instant::now();

    let mut fetched = Fetched::default();
    let run = Run {
        sync_id: &sync_id,
        policy,
        calls_before,
        started_at,
    };
    let result = fetch_and_emit(client, emitter, &run, cursor, &mut fetched, shutdown).await;

    let finished_at = Utc::now();
    let (outcome, error_class, error_message) = match &result {
        Ok(()) => (SyncOutcome::Success, None, None),
        Err(e) => {
            let (outcome, class) = e.outcome();
            (outcome, Some(class.to_owned()), Some(e.to_string()))
        }
    };
    let limits = client.limit_info;
    let status = SyncStatus {
        org_id: client.org_id().unwrap_or(client.org_name()).to_owned(),
        org_name: client.org_name().to_owned(),
        sync_id,
        outcome,
        started_at: started_at.timestamp_millis(),
        finished_at: finished_at.timestamp_millis(),
        last_success_at: match outcome {
            SyncOutcome::Success => Some(finished_at.timestamp_millis()),
            _ => last_success_at,
        },
        records: fetched.records,
        api_calls: (client.api_calls - calls_before) as i64,
        api_used: limits.map(|l| l.used as i64),
        api_limit: limits.map(|l| l.limit as i64),
        error_class,
        error_message,
    };
    tracing::debug!(org = %status.org_name, elapsed_ms = clock.elapsed().as_millis() as u64,
        "sync finished");

    let written = write_status(emitter, &status).await;
    let result = match (result, written) {
        (Ok(()), Err(e)) => Err(SyncError::Broker(e)),
        (result, _) => result,
    };
    (status, result)
}

/// What one sync needs to know about itself.
struct Run<'a> {
    sync_id: &'a str,
    policy: &'a SyncPolicy,
    /// The client's call count when the sync began.
    calls_before: u64,
    started_at: DateTime<Utc>,
}

impl Run<'_> {
    /// Stops the sync when it, or the org, has used too much of the daily allowance.
    fn check_quota(&self, client: &SalesforceClient) -> Result<(), QuotaStop> {
        let calls = client.api_calls - self.calls_before;
        self.policy.governor.check(calls, client.limit_info)
    }

    /// How this sync reads users: the query, the snapshot mode, and the cursor it
    /// starts the next one from.
    fn user_plan(&self, cursor: &UserCursor) -> (String, SnapshotMode, UserCursor) {
        let policy = self.policy;
        if !cursor.needs_full(self.started_at, policy.full_sync_interval) {
            if let Some(soql) = cursor.incremental_soql(USER_SELECT, policy.user_lookback) {
                return (soql, SnapshotMode::Incremental, cursor.clone());
            }
        }
        let fresh = UserCursor {
            last_full_at: Some(self.started_at),
            ..UserCursor::default()
        };
        (USER_FULL.to_owned(), SnapshotMode::Full, fresh)
    }
}

/// The two fields an incremental read needs of every user.
#[derive(serde::Deserialize)]
struct Modstamp<'a> {
    #[serde(rename = "Id", borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(rename = "SystemModstamp", borrow)]
    system_modstamp: std::borrow::Cow<'a, str>,
}

async fn fetch_and_emit(
    client: &mut SalesforceClient,
    emitter: &Emitter,
    run: &Run<'_>,
    cursor: &mut CursorSlot,
    fetched: &mut Fetched,
    shutdown: &Shutdown,
) -> Result<(), SyncError> {
    let sync_id = run.sync_id;
    client.sign_in().await?;
    // Usage before the first query, so an org already over its share is not touched;
    // later syncs know it from the last response.
    if client.limit_info.is_none() {
        client.fetch_limits().await?;
    }
    run.check_quota(client)?;
    let org_id = client.org_id().expect("signed in").to_owned();
    let api_version = client.api_version().to_owned();
    let partition = partition_for(&org_id, emitter.raw_partitions);
    let mut pending: Vec<DeliveryFuture> = Vec::new();

    let org_cursor = cursor.get(&org_id);
    let (user_soql, user_mode, mut next_cursor) = run.user_plan(org_cursor);
    for object in SfObject::ALL {
        let (text, mode) = match object {
            SfObject::User => (user_soql.as_str(), user_mode),
            other => (soql(other), SnapshotMode::Full),
        };
        let mut query = Query::new(text);
        let mut count: u64 = 0;
        while let Some(page) = client.next_page(&mut query).await? {
            if shutdown.is_cancelled() {
                return Err(SyncError::Cancelled);
            }
            run.check_quota(client)?;
            if page.restarted {
                // Earlier pages come again on the new session; the marker counts one pass.
                count = 0;
            }
            let fetched_at = Utc::now();
            for record in page.records {
                let id = serde_json::from_str::<RecordId>(record.get())
                    .map_err(|e| SyncError::Record(format!("{object}: {e}")))?
                    .id
                    .into_owned();
                if object == SfObject::User {
                    let stamp = user_modstamp(record.get())?;
                    if mode == SnapshotMode::Incremental && !org_cursor.is_new(&id, stamp) {
                        continue;
                    }
                    next_cursor.observe(&id, stamp);
                }
                let envelope = RawEnvelope {
                    org_id: org_id.clone(),
                    sync_id: sync_id.to_owned(),
                    object,
                    fetched_at,
                    api_version: api_version.clone(),
                    kind: EnvelopeKind::Record,
                    record: Some(record),
                    snapshot: None,
                };
                pending.push(send_envelope(emitter, &envelope, Some(&id), partition).await?);
                count += 1;
            }
            if pending.len() >= MAX_PENDING {
                await_all(&mut pending).await?;
            }
        }

        let marker = RawEnvelope {
            org_id: org_id.clone(),
            sync_id: sync_id.to_owned(),
            object,
            fetched_at: Utc::now(),
            api_version: api_version.clone(),
            kind: EnvelopeKind::SnapshotEnd,
            record: None,
            snapshot: Some(SnapshotEnd {
                mode: SnapshotMode::Full,
                records: count,
            }),
        };
        pending.push(send_envelope(emitter, &marker, None, partition).await?);
        fetched.records.insert(object.to_string(), count as i64);
    }
    await_all(&mut pending).await?;

    // Every event is acknowledged: the cursor may move.
    next_cursor.prune(run.policy.user_lookback);
    cursor::save(emitter, &org_id, &next_cursor).await?;
    *cursor.get(&org_id) = next_cursor;
    Ok(())
}

fn user_modstamp(record: &str) -> Result<DateTime<Utc>, SyncError> {
    let fields: Modstamp<'_> = serde_json::from_str(record)
        .map_err(|e| SyncError::Record(format!("User without Id or SystemModstamp: {e}")))?;
    parse_datetime(&fields.system_modstamp).map_err(|e| {
        SyncError::Record(format!(
            "User {} has SystemModstamp {:?}: {e}",
            fields.id, fields.system_modstamp
        ))
    })
}

async fn send_envelope(
    emitter: &Emitter,
    envelope: &RawEnvelope,
    record_id: Option<&str>,
    partition: i32,
) -> Result<DeliveryFuture, KafkaError> {
    let key = envelope.key(record_id);
    let payload = serde_json::to_vec(envelope).expect("an envelope always serialises");
    let record = FutureRecord::to(&emitter.topics.raw)
        .key(&key)
        .payload(&payload)
        .partition(partition);
    enqueue(&emitter.producer, record).await
}

async fn await_all(pending: &mut Vec<DeliveryFuture>) -> Result<(), SyncError> {
    try_join_all(pending.drain(..).map(delivered)).await?;
    Ok(())
}

async fn write_status(emitter: &Emitter, status: &SyncStatus) -> Result<(), KafkaError> {
    let payload = status
        .to_avro()
        .expect("a sync status always fits its schema");
    let partition = partition_for(&status.org_id, emitter.status_partitions);
    let record = FutureRecord::to(&emitter.topics.sync_status)
        .key(&status.org_id)
        .payload(&payload)
        .partition(partition);
    delivered(enqueue(&emitter.producer, record).await?)
        .await
        .map(|_| ())
}
