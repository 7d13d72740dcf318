//! One sync of one org: read every object, emit each record to the raw topic, and report.
//!
//! Licences are small: a full snapshot every sync. `User` and the seat assignments are
//! read incrementally between full reads (see the cursor module), so a sync that finds no
//! change costs one call per object. `LoginHistory`, when enabled, is read last and only
//! from its cursor; an integration user who may not read it ("Manage Users" or "Monitor
//! Login History" missing) costs the org its login activity, not its sync: the other
//! objects are emitted and the sync status says what to grant.
//!
//! Delivery: records are handed to the producer as each page arrives, with at most
//! [`MAX_IN_FLIGHT`] unacknowledged at a time (so memory does not grow with the org), then
//! the sync awaits every acknowledgement before it counts as a success.
//! Only then is the sync-status record written with `last_success_at` moved on, so a
//! sync whose events the broker did not take is never reported as done. A sync cut short
//! (Salesforce error, shutdown) leaves an object's snapshot without its end marker;
//! transform discards such a snapshot when the next sync of that object begins.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::try_join_all;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use seatwatch_common::kafka::{delivered, enqueue, partition_for, ServiceContext, Topics};
use seatwatch_common::Shutdown;
use seatwatch_schemas::salesforce::{parse_datetime, RecordId};
use seatwatch_schemas::{
    Encoder, EnvelopeKind, RawEnvelope, SfObject, SnapshotEnd, SnapshotMode, SyncOutcome,
    SyncStatus,
};

use crate::cursor::{self, ObjectCursor};
use crate::progress::Progress;
use crate::quota::{QuotaGovernor, QuotaStop};
use crate::salesforce::{ErrorClass, Query, SalesforceClient, SalesforceError};

/// Records handed to the producer and not yet acknowledged, at most: about two pages,
/// enough to keep the broker busy while the next page is read, and small enough that a
/// large org's sync stays within a few tens of MiB.
pub const MAX_IN_FLIGHT: usize = 4_000;

/// The `SELECT … FROM <object>` of each object, without filter or order.
pub fn select(object: SfObject) -> &'static str {
    match object {
        SfObject::UserLicense => {
            "SELECT Id, LicenseDefinitionKey, Name, MasterLabel, Status, TotalLicenses, \
             UsedLicenses, UsedLicensesLastUpdated, SystemModstamp FROM UserLicense"
        }
        SfObject::PermissionSetLicense => {
            "SELECT Id, DeveloperName, MasterLabel, PermissionSetLicenseKey, Status, \
             TotalLicenses, UsedLicenses, ExpirationDate, SystemModstamp \
             FROM PermissionSetLicense"
        }
        SfObject::PackageLicense => {
            "SELECT Id, NamespacePrefix, AllowedLicenses, UsedLicenses, Status, ExpirationDate, \
             IsProvisioned, SystemModstamp FROM PackageLicense"
        }
        SfObject::PermissionSetLicenseAssign => {
            "SELECT Id, AssigneeId, PermissionSetLicenseId, SystemModstamp \
             FROM PermissionSetLicenseAssign"
        }
        SfObject::UserPackageLicense => {
            "SELECT Id, UserId, PackageLicenseId, SystemModstamp FROM UserPackageLicense"
        }
        SfObject::User => {
            "SELECT Id, Username, IsActive, UserType, LastLoginDate, ProfileId, Profile.Name, \
             Profile.UserLicenseId, Profile.UserLicense.Name, \
             Profile.UserLicense.LicenseDefinitionKey, SystemModstamp FROM User"
        }
        // No filter on Status: Salesforce refuses it; failed logins come too.
        SfObject::LoginHistory => {
            "SELECT Id, UserId, LoginTime, Status, Application, LoginType, LoginSubType, \
             LoginUrl, SourceIp FROM LoginHistory"
        }
    }
}

/// What the integration user needs to read `LoginHistory`.
pub const LOGIN_HISTORY_PERMISSION: &str = "'Manage Users' or 'Monitor Login History'";

/// Whether `error` says the integration user may not read the object queried.
pub fn is_permission_refusal(error: &SalesforceError) -> bool {
    matches!(error, SalesforceError::Refused { code, .. }
        if code == "INVALID_TYPE" || code == "INSUFFICIENT_ACCESS")
}

/// The SOQL of a full read of `object`; incremental reads are built by [`ObjectCursor`].
pub fn full_soql(object: SfObject) -> String {
    format!("{} ORDER BY Id", select(object))
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
    /// Frames sync status: single-object encoding, or with a registry the Confluent wire
    /// format under the id registered at start.
    pub encoder: Encoder,
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
    /// `Some(window)` when `LoginHistory` is read: how far back its first read starts.
    pub login_history: Option<Duration>,
}

/// An org's cursors, one per incremental object: those loaded from Kafka at start until
/// the org's first sync signs in and picks its own, then those of its latest acknowledged
/// sync.
#[derive(Debug)]
pub struct CursorSlot {
    loaded: Arc<HashMap<String, ObjectCursor>>,
    current: HashMap<SfObject, ObjectCursor>,
}

impl CursorSlot {
    pub fn new(loaded: Arc<HashMap<String, ObjectCursor>>) -> Self {
        Self {
            loaded,
            current: HashMap::new(),
        }
    }

    fn get(&mut self, org_id: &str, object: SfObject) -> &mut ObjectCursor {
        let loaded = &self.loaded;
        self.current.entry(object).or_insert_with(|| {
            let key = cursor::key(org_id, object);
            loaded.get(&key).cloned().unwrap_or_default()
        })
    }
}

/// What one sync fetched.
#[derive(Debug, Default)]
struct Fetched {
    records: BTreeMap<String, i64>,
    /// What a successful sync could not read, for the status's `error_message`.
    warning: Option<String>,
}

/// Runs one sync of the client's org and returns its status record, already written to
/// `salesforce.sync-status` when the broker allowed it.
pub async fn sync_org(
    client: &mut SalesforceClient,
    emitter: &Emitter,
    policy: &SyncPolicy,
    cursor: &mut CursorSlot,
    last_success_at: Option<i64>,
    progress: &dyn Progress,
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
        progress,
    };
    let result = fetch_and_emit(client, emitter, &run, cursor, &mut fetched, shutdown).await;

    let finished_at = Utc::now();
    let (outcome, error_class, error_message) = match &result {
        Ok(()) => (SyncOutcome::Success, None, fetched.warning.take()),
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
    progress: &'a dyn Progress,
}

impl Run<'_> {
    /// Stops the sync when it, or the org, has used too much of the daily allowance.
    fn check_quota(&self, client: &SalesforceClient) -> Result<(), QuotaStop> {
        let calls = client.api_calls - self.calls_before;
        self.policy.governor.check(calls, client.limit_info)
    }

    /// How this sync reads an incremental object: the query, the snapshot mode, and the
    /// cursor it starts the next one from.
    fn read_plan(
        &self,
        object: SfObject,
        cursor: &ObjectCursor,
    ) -> (String, SnapshotMode, ObjectCursor) {
        let policy = self.policy;
        let field = cursor::cursor_field(object);
        if object == SfObject::LoginHistory {
            // A log: never read in full. Without a cursor, start a window back.
            let lookback = policy.user_lookback;
            let soql = cursor
                .incremental_soql(select(object), field, lookback)
                .unwrap_or_else(|| {
                    let window = policy.login_history.unwrap_or_default();
                    let window =
                        chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
                    let from = self
                        .started_at
                        .checked_sub_signed(window)
                        .unwrap_or(DateTime::<Utc>::MIN_UTC);
                    cursor::since_soql(select(object), field, from)
                });
            return (soql, SnapshotMode::Incremental, cursor.clone());
        }
        if !cursor.needs_full(self.started_at, policy.full_sync_interval) {
            let lookback = policy.user_lookback;
            if let Some(soql) = cursor.incremental_soql(select(object), field, lookback) {
                return (soql, SnapshotMode::Incremental, cursor.clone());
            }
        }
        let fresh = ObjectCursor {
            last_full_at: Some(self.started_at),
            ..ObjectCursor::default()
        };
        (full_soql(object), SnapshotMode::Full, fresh)
    }
}

/// The two fields an incremental read needs of every record: the id and the cursor field
/// (`SystemModstamp`, or `LoginTime` for `LoginHistory`).
#[derive(serde::Deserialize)]
struct Modstamp<'a> {
    #[serde(rename = "Id", borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(rename = "SystemModstamp", borrow, default)]
    system_modstamp: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "LoginTime", borrow, default)]
    login_time: Option<std::borrow::Cow<'a, str>>,
}

/// Where a sync's events go, and the deliveries still awaited.
struct Sink<'a> {
    emitter: &'a Emitter,
    org_id: String,
    sync_id: &'a str,
    api_version: String,
    partition: i32,
    in_flight: VecDeque<DeliveryFuture>,
}

impl Sink<'_> {
    fn envelope(&self, object: SfObject, kind: EnvelopeKind) -> RawEnvelope {
        RawEnvelope {
            org_id: self.org_id.clone(),
            sync_id: self.sync_id.to_owned(),
            object,
            fetched_at: Utc::now(),
            api_version: self.api_version.clone(),
            kind,
            record: None,
            snapshot: None,
        }
    }

    /// Hands an envelope to the producer; waits for the oldest deliveries while more
    /// than [`MAX_IN_FLIGHT`] are outstanding.
    async fn send(&mut self, envelope: &RawEnvelope, id: Option<&str>) -> Result<(), SyncError> {
        let delivery = send_envelope(self.emitter, envelope, id, self.partition).await?;
        self.in_flight.push_back(delivery);
        while self.in_flight.len() > MAX_IN_FLIGHT {
            if let Some(oldest) = self.in_flight.pop_front() {
                delivered(oldest).await?;
            }
        }
        Ok(())
    }

    /// Waits until the broker acknowledged everything sent.
    async fn drain(&mut self) -> Result<(), SyncError> {
        try_join_all(self.in_flight.drain(..).map(delivered)).await?;
        Ok(())
    }
}

async fn fetch_and_emit(
    client: &mut SalesforceClient,
    emitter: &Emitter,
    run: &Run<'_>,
    cursor: &mut CursorSlot,
    fetched: &mut Fetched,
    shutdown: &Shutdown,
) -> Result<(), SyncError> {
    client.sign_in().await?;
    // Usage before the first query, so an org already over its share is not touched;
    // later syncs know it from the last response.
    if client.limit_info.is_none() {
        client.fetch_limits().await?;
    }
    run.check_quota(client)?;
    let org_id = client.org_id().expect("signed in").to_owned();
    let mut sink = Sink {
        emitter,
        partition: partition_for(&org_id, emitter.raw_partitions),
        org_id: org_id.clone(),
        sync_id: run.sync_id,
        api_version: client.api_version().to_owned(),
        in_flight: VecDeque::new(),
    };

    let mut next_cursors = Vec::new();
    for object in SfObject::ALL {
        let count = if cursor::INCREMENTAL.contains(&object) {
            let previous = cursor.get(&org_id, object).clone();
            let (soql, mode, mut next) = run.read_plan(object, &previous);
            let read = Read {
                object,
                soql,
                mode,
                previous: Some(&previous),
            };
            let count =
                read_object(client, &mut sink, run, read, Some(&mut next), shutdown).await?;
            next_cursors.push((object, next));
            count
        } else {
            let read = Read {
                object,
                soql: full_soql(object),
                mode: SnapshotMode::Full,
                previous: None,
            };
            read_object(client, &mut sink, run, read, None, shutdown).await?
        };
        fetched.records.insert(object.to_string(), count as i64);
    }
    if run.policy.login_history.is_some() {
        let object = SfObject::LoginHistory;
        let previous = cursor.get(&org_id, object).clone();
        let (soql, mode, mut next) = run.read_plan(object, &previous);
        let read = Read {
            object,
            soql,
            mode,
            previous: Some(&previous),
        };
        match read_object(client, &mut sink, run, read, Some(&mut next), shutdown).await {
            Ok(count) => {
                fetched.records.insert(object.to_string(), count as i64);
                next_cursors.push((object, next));
            }
            // Refused on its first page, so nothing of it was emitted; the cursor stays.
            Err(SyncError::Salesforce(e)) if is_permission_refusal(&e) => {
                let org = client.org_name().to_owned();
                run.progress.object_finished(&org, object, 0);
                // Salesforce's own words, without the generic hint for INVALID_TYPE
                // (which names the licence objects' permission, not this one's).
                let said = match &e {
                    SalesforceError::Refused { code, message, .. } => format!("{code}: {message}"),
                    other => other.to_string(),
                };
                let said = said.split_whitespace().collect::<Vec<_>>().join(" ");
                tracing::warn!(org = %org, error = %said,
                    "LoginHistory is not readable: grant the integration user {} \
                     (login activity is not tracked until then; everything else synced)",
                    LOGIN_HISTORY_PERMISSION);
                fetched.warning = Some(format!(
                    "LoginHistory not read: the integration user lacks \
                     {LOGIN_HISTORY_PERMISSION}; grant it, or set login_history = false \
                     for this org (Salesforce said {said})"
                ));
            }
            Err(e) => return Err(e),
        }
    }
    sink.drain().await?;

    // Every event is acknowledged: the cursors may move.
    for (object, mut next) in next_cursors {
        next.prune(run.policy.user_lookback);
        cursor::save(emitter, &org_id, object, &next).await?;
        *cursor.get(&org_id, object) = next;
    }
    Ok(())
}

/// One object's read: its query, whether it is full, and for an incremental object the
/// cursor it started from.
struct Read<'a> {
    object: SfObject,
    soql: String,
    mode: SnapshotMode,
    previous: Option<&'a ObjectCursor>,
}

/// Reads one object page by page, emits what is new, ends it with a snapshot marker and
/// returns how many records were emitted. `next` (incremental objects) notes each one.
async fn read_object(
    client: &mut SalesforceClient,
    sink: &mut Sink<'_>,
    run: &Run<'_>,
    read: Read<'_>,
    mut next: Option<&mut ObjectCursor>,
    shutdown: &Shutdown,
) -> Result<u64, SyncError> {
    let Read {
        object,
        soql,
        mode,
        previous,
    } = read;
    let org = client.org_name().to_owned();
    run.progress.object_started(&org, object, mode);
    let mut query = Query::new(soql);
    let mut count: u64 = 0;
    let mut read_so_far: u64 = 0;

    while let Some(page) = client.next_page(&mut query).await? {
        if shutdown.is_cancelled() {
            return Err(SyncError::Cancelled);
        }
        run.check_quota(client)?;
        if page.restarted {
            // Earlier pages come again on the new session; the marker counts one pass.
            count = 0;
            read_so_far = 0;
        }
        read_so_far += page.records.len() as u64;
        let fetched_at = Utc::now();

        for record in page.records {
            let id = serde_json::from_str::<RecordId>(record.get())
                .map_err(|e| SyncError::Record(format!("{object}: {e}")))?
                .id
                .into_owned();
            if let Some(next) = next.as_deref_mut() {
                let stamp = modstamp(object, record.get())?;
                let seen = previous.is_some_and(|p| !p.is_new(&id, stamp));
                if mode == SnapshotMode::Incremental && seen {
                    continue;
                }
                next.observe(&id, stamp);
            }
            let mut envelope = sink.envelope(object, EnvelopeKind::Record);
            envelope.fetched_at = fetched_at;
            envelope.record = Some(record);
            sink.send(&envelope, Some(&id)).await?;
            count += 1;
        }

        // The window memory stays bounded even while a full read walks the whole object.
        if let Some(next) = next.as_deref_mut() {
            next.prune(run.policy.user_lookback);
        }
        run.progress
            .page_read(&org, object, read_so_far, page.total_size);
    }

    let mut marker = sink.envelope(object, EnvelopeKind::SnapshotEnd);
    marker.snapshot = Some(SnapshotEnd {
        mode,
        records: count,
    });
    sink.send(&marker, None).await?;
    run.progress.object_finished(&org, object, count);
    Ok(count)
}

fn modstamp(object: SfObject, record: &str) -> Result<DateTime<Utc>, SyncError> {
    let field = cursor::cursor_field(object);
    let fields: Modstamp<'_> = serde_json::from_str(record)
        .map_err(|e| SyncError::Record(format!("{object} without Id or {field}: {e}")))?;
    let value = match object {
        SfObject::LoginHistory => fields.login_time,
        _ => fields.system_modstamp,
    };
    let value =
        value.ok_or_else(|| SyncError::Record(format!("{object} {} has no {field}", fields.id)))?;
    parse_datetime(&value).map_err(|e| {
        SyncError::Record(format!(
            "{object} {} has {field} {:?}: {e}",
            fields.id, value
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

async fn write_status(emitter: &Emitter, status: &SyncStatus) -> Result<(), KafkaError> {
    let payload = emitter
        .encoder
        .encode(&emitter.topics.sync_status, status)
        .expect("a sync status fits its schema, registered at start if a registry is used");
    let partition = partition_for(&status.org_id, emitter.status_partitions);
    let record = FutureRecord::to(&emitter.topics.sync_status)
        .key(&status.org_id)
        .payload(&payload)
        .partition(partition);
    delivered(enqueue(&emitter.producer, record).await?)
        .await
        .map(|_| ())
}
