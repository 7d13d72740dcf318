//! The transform state machine: raw events in, seat-state and dead-letter outputs out.
//!
//! [`Processor`] is synchronous and does no I/O, so every rule of the transform is tested
//! here without Kafka; the pipeline only feeds it events and ships what it returns.
//!
//! Per org it remembers which licences and users it has published (to tombstone the ones a
//! full snapshot no longer contains), the assignment rows of the last assignment snapshots
//! (to know which licences each user holds), the last state of each user (to re-publish it
//! when only their assignments change), and the snapshots still open: per object, the sync
//! being read, the offset of its first event, the ids seen so far and the assignment rows
//! buffered until the snapshot's end marker says they are complete (a valid row's id is
//! kept with the row rather than among the ids seen, and the rows a full snapshot lacks
//! are found by marking each row with the last snapshot that put it).
//!
//! Rules worth knowing:
//! - Tombstones are written only at the end marker of a *complete* full snapshot: one whose
//!   marker announces as many records as arrived. A record that was dead-lettered still
//!   counts when its id can be read, and its id protects the thing from a tombstone; when
//!   records are missing altogether the snapshot is applied like an incremental one, because
//!   deleting seat state on partial evidence would be worse than keeping it one sync longer.
//! - What a full snapshot is compared with is everything published since the previous full
//!   snapshot, incremental additions included (a slight widening of "the previous full
//!   snapshot", so that a licence first seen in an incremental sync is also removed when it
//!   goes).
//! - Incremental assignment snapshots can add or revoke an assignment but cannot delete one;
//!   Salesforce does not report deleted rows, so only the next full snapshot removes them.
//! - A record of a new sync for an object whose snapshot is still open means ingest started
//!   over; the stale snapshot is discarded (what it published stays published, and is
//!   remembered so that a later full snapshot can remove it).
//! - Nothing here reads the clock: times come from the events, and the outputs of one
//!   event that name many ids (tombstones, re-published users) come in id order, so the
//!   same input always gives the same output bytes. State keyed by id is hashed, not
//!   ordered, because lookups are most of the work; what is iterated into outputs is
//!   sorted first.
//!
//! Restoring: a new processor knows nothing, so before the first live event the pipeline
//! seeds it with what the compacted state topics hold ([`Processor::restore_license`],
//! [`Processor::restore_user`], and the `forget_*` pair for tombstones read back). Seeding
//! emits nothing; afterwards a restored licence or user is treated as published, so the
//! first complete full snapshot after a restart tombstones the ones it lacks.
//!
//! Assignment rows are not restored: the user state carries licence ids, not assignment
//! ids. A restored user's licence lists are therefore what was last published, and are
//! corrected in two ways. The first complete full snapshot of an assignment object
//! re-publishes every restored user whose list of that object's licences differs from the
//! restored one (losing every licence included). The user's next record re-publishes them
//! with the licences of the rows seen since the start, as for any user. Incremental (or
//! incomplete) assignment snapshots before that first full one do not re-publish restored
//! users: their rows alone would drop the licences held through older rows.
//!
//! Login activity: a successful `LoginHistory` row moves its user's `last_activity_at` to
//! its `LoginTime` when that is later than what is known (never backwards), and the user,
//! if published, is published again with it; a user not yet known gets it when their
//! record arrives. Failed logins change nothing. `LoginHistory` snapshots are never full,
//! tombstone nothing and re-processing a row changes nothing, so no output repeats.
//!
//! Unchanged users: a user's state keeps a fingerprint of the JSON text of the record it
//! was built from (XXH3's 128-bit hash). A later record of that user with the same text
//! is not parsed: the published state is encoded again with the new sync and time
//! observed, and the activity and licences known now, which is what parsing the record
//! would give. Such records come in ingest's full reads, for every user neither edited
//! nor logged in since the last one; incremental reads carry changed records only. A
//! restored user has no fingerprint, so their first record is always parsed. A `User`
//! record that is parsed costs a little more than it would without this: rather than
//! being read in place with its envelope, it is skipped over, fingerprinted and then
//! parsed. So a read in which most users changed is slightly slower, and so is the first
//! read of each user, after a restart too.
//!
//! Known shortcut: XXH3 is not built to resist collisions made on purpose. Someone who can
//! set a user's fields in Salesforce could in principle craft a second text with the
//! fingerprint of that user's published one; that record would then be taken for the
//! published one until the user's record changes again. A chance collision of 128-bit
//! fingerprints between two texts of one user is not a practical concern.
//!
//! Known shortcut: an open snapshot that never ends (an org dropped from ingest mid-sync)
//! holds back its partition's committed offset until ingest syncs that object of that org
//! again; a bound on how far an open snapshot may trail would be the fix.
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use foldhash::fast::RandomState;

use seatwatch_common::kafka::org_hash;
use seatwatch_schemas::records::{license_key, user_key};
use seatwatch_schemas::salesforce::{
    LoginHistoryRecord, PackageLicenseRecord, PermissionSetLicenseAssignRecord,
    PermissionSetLicenseRecord, RecordId, UserLicenseRecord, UserPackageLicenseRecord, UserRecord,
};
use seatwatch_schemas::{
    Encoder, EncodingError, EnvelopeKind, LicenseKind, LicenseState, SfObject, SnapshotEnd,
    SnapshotMode, UserState,
};
use serde::de::DeserializeOwned;

use crate::dlq::{self, ErrorClass, Rejection, Source};
use crate::metrics::{Metrics, SnapshotOutcome};
use crate::normalize::{self, Observed};
use crate::validate::{self, Envelope, FromTyped, LastFetchedAt, TypedRecord};

/// One event read from the raw topic.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// Which output topic a message goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    LicenseState,
    UserState,
    Dlq,
}

/// One message to produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub target: Target,
    /// The [`org_hash`] of the org whose partition the message belongs in, taken here
    /// rather than on the thread that produces; `None` only for a dead letter whose org
    /// cannot be read at all, which keeps its source partition number instead.
    pub org_hash: Option<u32>,
    /// The key. Optional because a dead letter keeps its original key, which may be null.
    pub key: Option<Vec<u8>>,
    /// The Avro value, the original bytes of a dead letter, or `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// Headers; only dead letters have any.
    pub headers: Vec<(&'static str, String)>,
}

impl Output {
    fn state(target: Target, org_id: &str, key: String, value: Vec<u8>) -> Self {
        Self {
            target,
            org_hash: Some(org_hash(org_id)),
            key: Some(key.into_bytes()),
            value: Some(value),
            headers: Vec::new(),
        }
    }

    fn tombstone(target: Target, org_id: &str, key: String) -> Self {
        Self {
            target,
            org_hash: Some(org_hash(org_id)),
            key: Some(key.into_bytes()),
            value: None,
            headers: Vec::new(),
        }
    }

    /// Whether this is a tombstone on a state topic (a dead letter of a null value is not).
    pub fn is_tombstone(&self) -> bool {
        Self::is_tombstone_of(self.target, self.value.as_deref())
    }

    /// Whether a message to `target` with `value` is a tombstone; the one place that says.
    pub(crate) fn is_tombstone_of(target: Target, value: Option<&[u8]>) -> bool {
        target != Target::Dlq && value.is_none()
    }
}

/// A map keyed by an org, user, licence or assignment id.
type IdMap<V> = HashMap<String, V, RandomState>;

/// A set of org, user, licence or assignment ids.
type IdSet = HashSet<String, RandomState>;

/// The transform state machine. See the module documentation for its rules.
#[derive(Debug)]
pub struct Processor {
    /// The raw topic's name, for dead-letter headers.
    source_topic: String,
    metrics: Metrics,
    encoder: StateEncoder,
    orgs: IdMap<OrgState>,
    /// Whether a live event has been processed; state is restored only before that.
    live: bool,
    /// The `fetched_at` of the last event read, which the next usually repeats.
    last_fetched_at: LastFetchedAt,
}

/// What the processor knows about one org.
#[derive(Debug, Default)]
struct OrgState {
    /// The partition the org's events arrive on.
    partition: i32,
    /// Ids of the licences published since the last full snapshot, per licence object.
    licenses: BTreeMap<SfObject, BTreeSet<String>>,
    /// The last published state of each user, by user id; boxed, so that growing the map
    /// moves pointers rather than whole states.
    users: IdMap<Box<KnownUser>>,
    /// Users whose state was restored from the topic and has not been replaced by one of
    /// their records since: their licence lists may be older than the assignment rows.
    restored_users: IdSet,
    /// Assignment rows per assignment object.
    assignments: BTreeMap<SfObject, Assignments>,
    /// The latest successful `LoginTime` (ms) seen in `LoginHistory` per user id, users
    /// not yet published included.
    activity: IdMap<i64>,
    /// Snapshots whose end marker has not arrived yet, per object.
    open: BTreeMap<SfObject, OpenSnapshot>,
}

/// A published user, and what their state was built from.
#[derive(Debug)]
struct KnownUser {
    state: UserState,
    /// The fingerprint of the record text the state was built from (see
    /// [`record_fingerprint`]); `None` for a user restored from the topic.
    record: Option<u128>,
}

/// The assignment rows of one assignment object, and who holds what.
///
/// The index of holdings is kept up to date row by row as rows come and go, rather than
/// rebuilt from every row at each snapshot's end: a sync that changes a handful of rows
/// then costs a lookup per row, not a copy of every user and licence id.
#[derive(Debug, Default)]
struct Assignments {
    /// Rows by assignment id, each with the number of the last snapshot that held it.
    rows: IdMap<(Assignment, u64)>,
    /// How many snapshots were applied: the number of the one being applied.
    applied: u64,
    /// Per user, the licence ids their rows grant (revoked rows excluded); derived from
    /// `rows`.
    by_user: IdMap<Holdings>,
    /// Whether a complete full snapshot was applied, so that `rows` holds every row.
    complete: bool,
}

/// The users whose holdings a snapshot touched, with what they held before it.
type Touched = IdMap<Vec<String>>;

/// The licence ids one user's rows grant, in order, each with the number of rows granting
/// it. A sorted vector rather than an ordered map: a user holds a handful of licences, so
/// a search in a few contiguous entries beats walking tree nodes, and an empty holding
/// allocates nothing.
type Holdings = Vec<(String, u32)>;

/// Where `license_id` is in `holdings`, or where it would go.
fn find_holding(holdings: &Holdings, license_id: &str) -> Result<usize, usize> {
    holdings.binary_search_by(|(held, _)| held.as_str().cmp(license_id))
}

impl Assignments {
    /// The licence ids `user_id` holds, in order.
    fn held(&self, user_id: &str) -> Vec<String> {
        self.by_user
            .get(user_id)
            .map(|held| held.iter().map(|(id, _)| id.clone()).collect())
            .unwrap_or_default()
    }

    /// Whether `user_id` holds exactly the licence ids `ids`, in order.
    fn holds_exactly(&self, user_id: &str, ids: &[String]) -> bool {
        match self.by_user.get(user_id) {
            Some(held) => held.iter().map(|(id, _)| id).eq(ids),
            None => ids.is_empty(),
        }
    }

    /// Starts applying a snapshot: the rows it puts are marked as held by it.
    fn begin_snapshot(&mut self) {
        self.applied += 1;
    }

    /// Puts a row of the snapshot being applied in place of the one with its id, if
    /// different.
    fn put(&mut self, id: String, row: Assignment, touched: &mut Touched) {
        let applied = self.applied;
        match self.rows.get_mut(&id) {
            Some((old, held_by)) if *old == row => *held_by = applied,
            Some((old, held_by)) => {
                let old = std::mem::replace(old, row.clone());
                *held_by = applied;
                self.release(&old, touched);
                self.grant(&row, touched);
            }
            None => {
                self.grant(&row, touched);
                self.rows.insert(id, (row, applied));
            }
        }
    }

    /// Removes the rows that the snapshot being applied did not put, but for those whose
    /// id `keep` accepts.
    fn retain_put(&mut self, keep: impl Fn(&str) -> bool, touched: &mut Touched) {
        let applied = self.applied;
        let gone: Vec<String> = self
            .rows
            .iter()
            .filter(|(id, (_, held_by))| *held_by != applied && !keep(id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some((row, _)) = self.rows.remove(&id) {
                self.release(&row, touched);
            }
        }
    }

    fn grant(&mut self, row: &Assignment, touched: &mut Touched) {
        if row.revoked {
            return;
        }
        self.touch(&row.user_id, touched);
        // Ids are copied only when new to the index, which a repeated sync never is.
        if !self.by_user.contains_key(&row.user_id) {
            self.by_user.insert(row.user_id.clone(), Holdings::new());
        }
        let Some(held) = self.by_user.get_mut(&row.user_id) else {
            unreachable!("the user was inserted above");
        };
        match find_holding(held, &row.license_id) {
            Ok(index) => held[index].1 += 1,
            Err(index) => held.insert(index, (row.license_id.clone(), 1)),
        }
    }

    fn release(&mut self, row: &Assignment, touched: &mut Touched) {
        if row.revoked {
            return;
        }
        self.touch(&row.user_id, touched);
        let Some(held) = self.by_user.get_mut(&row.user_id) else {
            return;
        };
        if let Ok(index) = find_holding(held, &row.license_id) {
            held[index].1 -= 1;
            if held[index].1 == 0 {
                held.remove(index);
            }
        }
        if held.is_empty() {
            self.by_user.remove(&row.user_id);
        }
    }

    /// Notes what `user_id` held before the first change of this snapshot.
    fn touch(&self, user_id: &str, touched: &mut Touched) {
        if !touched.contains_key(user_id) {
            touched.insert(user_id.to_owned(), self.held(user_id));
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Assignment {
    user_id: String,
    license_id: String,
    revoked: bool,
}

impl Assignment {
    /// A row; Salesforce leaves `IsRevoked` null on rows that were never revoked.
    fn new(user_id: String, license_id: String, revoked: Option<bool>) -> Self {
        Self {
            user_id,
            license_id,
            revoked: revoked.unwrap_or(false),
        }
    }
}

/// A record event whose envelope is valid, on its way to a typed record.
struct RecordEvent<'a> {
    input: &'a Input<'a>,
    envelope: &'a Envelope<'a>,
    metrics: &'a Metrics,
}

/// A record as the envelope's reading left it.
enum Body<'a> {
    /// Typed already, the envelope having been read in one pass.
    Typed(TypedRecord),
    /// The record's JSON as Salesforce returned it, still to be parsed.
    Raw(&'a str),
}

/// One object's snapshot of one sync, from its first record to its end marker.
#[derive(Debug)]
struct OpenSnapshot {
    sync_id: String,
    partition: i32,
    /// Offset of the snapshot's first event: a restart must replay from here to see it whole.
    first_offset: i64,
    /// Records with a readable id, dead-lettered ones included.
    records: u64,
    /// Ids of those records, but for the valid rows of an assignment object, whose ids
    /// are kept with them in `buffered`, and for logins, whose snapshots remove nothing
    /// (copying every row's id into a set was some 6% of processing in memory).
    seen: IdSet,
    /// Valid assignment rows, applied at the end marker.
    buffered: Vec<(String, Assignment)>,
}

impl OpenSnapshot {
    fn new(sync_id: &str, partition: i32, first_offset: i64) -> Self {
        Self {
            sync_id: sync_id.to_owned(),
            partition,
            first_offset,
            records: 0,
            seen: IdSet::default(),
            buffered: Vec::new(),
        }
    }
}

impl Processor {
    /// A processor with no state writing Avro single-object encoding. `source_topic` is
    /// the raw topic's full name.
    pub fn new(source_topic: impl Into<String>, metrics: Metrics) -> Self {
        Self::with_encoder(source_topic, metrics, StateEncoder::single_object())
    }

    /// A processor with no state writing seat state with `encoder`.
    pub fn with_encoder(
        source_topic: impl Into<String>,
        metrics: Metrics,
        encoder: StateEncoder,
    ) -> Self {
        Self {
            source_topic: source_topic.into(),
            metrics,
            encoder,
            orgs: IdMap::default(),
            live: false,
            last_fetched_at: LastFetchedAt::default(),
        }
    }

    /// Remembers a licence read back from the licence-state topic as published, without
    /// emitting anything. `partition` is the raw-topic partition of the org's events, so
    /// that [`Processor::revoke`] forgets it with the org. Only before the first live event.
    pub fn restore_license(
        &mut self,
        partition: i32,
        org_id: &str,
        kind: LicenseKind,
        license_id: &str,
    ) {
        if let Some(org) = self.restored_org(partition, org_id) {
            let object = license_object(kind);
            org.licenses
                .entry(object)
                .or_default()
                .insert(license_id.to_owned());
        }
    }

    /// Forgets a licence restored earlier: the topic holds a tombstone for it after all.
    pub fn forget_license(&mut self, org_id: &str, kind: LicenseKind, license_id: &str) {
        if self.live {
            return;
        }
        if let Some(org) = self.orgs.get_mut(org_id) {
            if let Some(ids) = org.licenses.get_mut(&license_object(kind)) {
                ids.remove(license_id);
            }
        }
    }

    /// Remembers a user read back from the user-state topic as published, without emitting
    /// anything; a later value of the same user replaces it. Only before the first live
    /// event.
    pub fn restore_user(&mut self, partition: i32, state: UserState) {
        if let Some(org) = self.restored_org(partition, &state.org_id) {
            org.restored_users.insert(state.user_id.clone());
            let known = KnownUser {
                state,
                record: None,
            };
            org.users
                .insert(known.state.user_id.clone(), Box::new(known));
        }
    }

    /// Forgets a user restored earlier: the topic holds a tombstone for them after all.
    pub fn forget_user(&mut self, org_id: &str, user_id: &str) {
        if self.live {
            return;
        }
        if let Some(org) = self.orgs.get_mut(org_id) {
            org.users.remove(user_id);
            org.restored_users.remove(user_id);
        }
    }

    /// The org to restore into, created on `partition` if new; `None` once live events
    /// have been processed, when restoring would mix old state into newer.
    fn restored_org(&mut self, partition: i32, org_id: &str) -> Option<&mut OrgState> {
        debug_assert!(
            !self.live,
            "state is restored only before the first live event"
        );
        if self.live {
            tracing::error!(org_id, "state restored after live events is ignored");
            return None;
        }
        let org = self.orgs.entry(org_id.to_owned()).or_default();
        org.partition = partition;
        Some(org)
    }

    /// Processes one event, returning what to produce, in order. Never fails: what cannot
    /// be processed comes back as a dead letter.
    pub fn process(&mut self, input: Input<'_>) -> Vec<Output> {
        self.live = true;
        let parsed = validate::parse_envelope_after(input.value, &mut self.last_fetched_at);
        let mut envelope = match parsed {
            Ok(envelope) => envelope,
            Err(rejection) => return vec![self.dead_letter(&input, None, None, rejection)],
        };
        let typed = envelope.typed.take();

        // The org id is copied only the first time the org is seen.
        if !self.orgs.contains_key(&*envelope.org_id) {
            self.orgs
                .insert(envelope.org_id.to_string(), OrgState::default());
        }
        let Some(org) = self.orgs.get_mut(&*envelope.org_id) else {
            unreachable!("the org was inserted above");
        };
        org.partition = input.partition;
        let processed = match envelope.kind {
            EnvelopeKind::Record => {
                org.on_record(&input, &envelope, typed, &self.metrics, &self.encoder)
            }
            EnvelopeKind::SnapshotEnd => {
                org.on_snapshot_end(&input, &envelope, &self.metrics, &self.encoder)
            }
        };

        match processed {
            Ok(outputs) => {
                self.metrics.record_ok(envelope.object);
                outputs
            }
            Err(rejection) => {
                let org = Some(&*envelope.org_id);
                vec![self.dead_letter(&input, org, Some(envelope.object), rejection)]
            }
        }
    }

    /// The offset a restart must resume `partition` from, having processed it up to
    /// `last_processed`: the first event of its oldest open snapshot, else the next event.
    pub fn committable_offset(&self, partition: i32, last_processed: i64) -> i64 {
        self.orgs
            .values()
            .flat_map(|org| org.open.values())
            .filter(|snapshot| snapshot.partition == partition)
            .map(|snapshot| snapshot.first_offset)
            .fold(last_processed + 1, i64::min)
    }

    /// How many licences and users are remembered as published, over every org.
    pub fn remembered(&self) -> (usize, usize) {
        self.orgs.values().fold((0, 0), |(licenses, users), org| {
            let org_licenses: usize = org.licenses.values().map(BTreeSet::len).sum();
            (licenses + org_licenses, users + org.users.len())
        })
    }

    /// Forgets every org of `partition`, which another instance now owns.
    pub fn revoke(&mut self, partition: i32) {
        self.orgs.retain(|_, org| org.partition != partition);
    }

    fn dead_letter(
        &self,
        input: &Input<'_>,
        org_id: Option<&str>,
        object: Option<SfObject>,
        rejection: Rejection,
    ) -> Output {
        self.metrics.record_dlq(object, rejection.class);
        tracing::warn!(
            partition = input.partition,
            offset = input.offset,
            error_class = rejection.class.as_str(),
            reason = %rejection.message,
            "event sent to the dead-letter topic"
        );

        let source = Source {
            topic: &self.source_topic,
            partition: input.partition,
            offset: input.offset,
        };
        // A value near the broker's size limit would not fit again with the headers added,
        // and a dead letter that cannot be written would stop the partition for good. Its
        // head is kept; the whole value stays in the source topic at the offset the
        // headers name, for the source topic's retention.
        let mut headers = dlq::headers(&rejection, source);
        let value = input.value.map(|value| {
            if value.len() <= MAX_DEAD_LETTER_BYTES {
                return value.to_vec();
            }
            headers.push((dlq::HEADER_TRUNCATED_FROM, value.len().to_string()));
            value[..MAX_DEAD_LETTER_BYTES].to_vec()
        });
        Output {
            target: Target::Dlq,
            org_hash: org_id.or_else(|| org_of_key(input.key)).map(org_hash),
            key: input.key.map(<[u8]>::to_vec),
            value,
            headers,
        }
    }
}

/// The largest value copied whole into the dead-letter topic: well under Kafka's default
/// 1 MB message limit once headers and the key are added.
pub const MAX_DEAD_LETTER_BYTES: usize = 512 * 1024;

impl OrgState {
    /// A record: counted in its object's open snapshot, then published or buffered.
    fn on_record(
        &mut self,
        input: &Input<'_>,
        envelope: &Envelope<'_>,
        typed: Option<TypedRecord>,
        metrics: &Metrics,
        encoder: &StateEncoder,
    ) -> Result<Vec<Output>, Rejection> {
        let body = match (typed, envelope.record) {
            (Some(record), _) => Body::Typed(record),
            (None, Some(raw)) => Body::Raw(raw.get()),
            (None, None) => {
                return Err(invalid_envelope(
                    "field record is missing, and kind is record",
                ))
            }
        };

        let event = RecordEvent {
            input,
            envelope,
            metrics,
        };
        let observed = Observed {
            org_id: &envelope.org_id,
            sync_id: &envelope.sync_id,
            at_ms: envelope.fetched_at.timestamp_millis(),
        };
        match envelope.object {
            SfObject::UserLicense => {
                let record = self.parse(&event, body, |r: &UserLicenseRecord| &r.id)?;
                encoder.license_output(normalize::user_license(observed, &record))
            }
            SfObject::PermissionSetLicense => {
                let record = self.parse(&event, body, |r: &PermissionSetLicenseRecord| &r.id)?;
                encoder.license_output(normalize::permission_set_license(observed, &record))
            }
            SfObject::PackageLicense => {
                let record = self.parse(&event, body, |r: &PackageLicenseRecord| &r.id)?;
                encoder.license_output(normalize::package_license(observed, &record)?)
            }
            SfObject::PermissionSetLicenseAssign => {
                let r = self.parse(&event, body, |r: &PermissionSetLicenseAssignRecord| &r.id)?;
                let row = Assignment::new(r.assignee_id, r.permission_set_license_id, r.is_revoked);
                self.buffer(envelope.object, r.id, row);
                Ok(Vec::new())
            }
            SfObject::UserPackageLicense => {
                let r = self.parse(&event, body, |r: &UserPackageLicenseRecord| &r.id)?;
                let row = Assignment::new(r.user_id, r.package_license_id, r.is_revoked);
                self.buffer(envelope.object, r.id, row);
                Ok(Vec::new())
            }
            SfObject::User => {
                let fingerprint = match body {
                    Body::Raw(raw) => Some(record_fingerprint(raw)),
                    Body::Typed(_) => None,
                };
                if let Some(fingerprint) = fingerprint {
                    if let Some(outputs) =
                        self.on_unchanged_user(&event, observed, fingerprint, encoder)
                    {
                        return outputs;
                    }
                }
                let record = self.parse(&event, body, |r: &UserRecord| &r.id)?;
                self.on_user(observed, record, fingerprint, encoder)
            }
            SfObject::LoginHistory => {
                let record = self.parse(&event, body, |r: &LoginHistoryRecord| &r.id)?;
                self.on_login(&record, encoder)
            }
        }
    }

    /// A login: a successful one later than the user's known activity moves it, and
    /// re-publishes the user if they are known.
    fn on_login(
        &mut self,
        record: &LoginHistoryRecord,
        encoder: &StateEncoder,
    ) -> Result<Vec<Output>, Rejection> {
        if !record.succeeded() {
            return Ok(Vec::new());
        }
        let at = record.login_time.timestamp_millis();
        let latest = self.activity.entry(record.user_id.clone()).or_insert(at);
        *latest = (*latest).max(at);
        let latest = *latest;
        let Some(state) = self.users.get_mut(&record.user_id).map(|u| &mut u.state) else {
            return Ok(Vec::new());
        };
        if state.last_activity_at.is_some_and(|known| known >= latest) {
            return Ok(Vec::new());
        }
        state.last_activity_at = Some(latest);
        Ok(vec![encoder.user_output(state)?])
    }

    /// The event's typed record, if it parses and the event's key names its id.
    ///
    /// The record is counted in its object's open snapshot before it is judged, so a bad
    /// record still protects its id from a tombstone and the snapshot's completeness can be
    /// checked at its end. The id comes from the typed record; only when that does not parse
    /// is the JSON read a second time for the id alone.
    fn parse<T: DeserializeOwned + FromTyped>(
        &mut self,
        event: &RecordEvent<'_>,
        body: Body<'_>,
        id: impl Fn(&T) -> &str,
    ) -> Result<T, Rejection> {
        let object = event.envelope.object;
        let (parsed, raw) = match body {
            Body::Typed(record) => {
                let record = T::from_typed(record).ok_or_else(|| {
                    let message = format!("the record was read as another object than {object}");
                    Rejection::new(ErrorClass::InvalidRecord, message)
                });
                (record, None)
            }
            Body::Raw(raw) => (validate::parse_record::<T>(object, raw), Some(raw)),
        };
        let readable_id = match &parsed {
            Ok(record) => Some(Cow::Borrowed(id(record))),
            Err(_) => raw
                .and_then(|raw| serde_json::from_str::<RecordId<'_>>(raw).ok())
                .map(|r| r.id),
        };
        let key_checked = match &parsed {
            Ok(record) => check_key(event.input.key, event.envelope, Some(id(record))),
            Err(_) => Ok(()),
        };
        let valid = parsed.is_ok() && key_checked.is_ok();
        let snapshot = self.open_snapshot(event.input, event.envelope, event.metrics);
        if let Some(readable_id) = readable_id {
            snapshot.records += 1;
            if !(valid && ids_kept_elsewhere(object)) {
                snapshot.seen.insert(readable_id.into_owned());
            }
        }

        let record = parsed?;
        key_checked?;
        Ok(record)
    }

    /// Publishes a user with the licences their assignments give them right now.
    fn on_user(
        &mut self,
        observed: Observed<'_>,
        record: UserRecord,
        fingerprint: Option<u128>,
        encoder: &StateEncoder,
    ) -> Result<Vec<Output>, Rejection> {
        let permission_sets = self.holdings(SfObject::PermissionSetLicenseAssign, &record.id);
        let packages = self.holdings(SfObject::UserPackageLicense, &record.id);
        let mut state = normalize::user_state(observed, record, permission_sets, packages);
        let user_id = &state.user_id;
        // Activity never moves backwards: what LoginHistory said, or what was published.
        let published = self
            .users
            .get(user_id)
            .and_then(|u| u.state.last_activity_at);
        state.last_activity_at = self.activity.get(user_id).copied().max(published);
        let output = encoder.user_output(&state)?;
        self.restored_users.remove(&state.user_id);
        let known = KnownUser {
            state,
            record: fingerprint,
        };
        match self.users.get_mut(&known.state.user_id) {
            Some(slot) => **slot = known,
            None => {
                self.users
                    .insert(known.state.user_id.clone(), Box::new(known));
            }
        }
        Ok(vec![output])
    }

    /// Publishes a known user again without parsing their record, when its text is the
    /// one their state was built from: only the sync, the time observed, the activity and
    /// the licences held can differ. `None` when the record must be parsed instead.
    ///
    /// The user id comes from the event's key. A key that names a user whose published
    /// state was built from a record of this very text is the key that record's id
    /// implies, so the verdict is the one parsing would give.
    fn on_unchanged_user(
        &mut self,
        event: &RecordEvent<'_>,
        observed: Observed<'_>,
        fingerprint: u128,
        encoder: &StateEncoder,
    ) -> Option<Result<Vec<Output>, Rejection>> {
        let user_id = record_id_in_key(event.input.key?, event.envelope)?;
        if self.users.get(user_id)?.record != Some(fingerprint) {
            return None;
        }
        // Counted as `parse` counts a valid record.
        let snapshot = self.open_snapshot(event.input, event.envelope, event.metrics);
        snapshot.records += 1;
        snapshot.seen.insert(user_id.to_owned());

        let activity = self.activity.get(user_id).copied();
        let permission_sets = self.assignments.get(&SfObject::PermissionSetLicenseAssign);
        let packages = self.assignments.get(&SfObject::UserPackageLicense);
        let state = &mut self.users.get_mut(user_id)?.state;

        // What changes is kept, so that a state that fails to encode stays as published.
        let before = (state.observed_at, state.last_activity_at);
        let sync_before = (state.sync_id != observed.sync_id)
            .then(|| std::mem::replace(&mut state.sync_id, observed.sync_id.to_owned()));
        let sets_before =
            refresh_holdings(&mut state.permission_set_licenses, permission_sets, user_id);
        let packages_before = refresh_holdings(&mut state.package_licenses, packages, user_id);
        state.observed_at = observed.at_ms;
        // Activity never moves backwards, as in `on_user`.
        state.last_activity_at = activity.max(state.last_activity_at);

        match encoder.user_output(state) {
            Ok(output) => Some(Ok(vec![output])),
            Err(rejection) => {
                (state.observed_at, state.last_activity_at) = before;
                if let Some(sync_id) = sync_before {
                    state.sync_id = sync_id;
                }
                if let Some(held) = sets_before {
                    state.permission_set_licenses = held;
                }
                if let Some(held) = packages_before {
                    state.package_licenses = held;
                }
                Some(Err(rejection))
            }
        }
    }

    /// The open snapshot of the record's object and sync, opening it if needed and
    /// discarding one of an older sync.
    fn open_snapshot(
        &mut self,
        input: &Input<'_>,
        envelope: &Envelope<'_>,
        metrics: &Metrics,
    ) -> &mut OpenSnapshot {
        let object = envelope.object;
        let current = self.open.get(&object).map(|s| s.sync_id.as_str());
        if current.is_some_and(|sync| sync != envelope.sync_id) {
            self.discard(object, &envelope.sync_id, metrics);
        }
        self.open
            .entry(object)
            .or_insert_with(|| OpenSnapshot::new(&envelope.sync_id, input.partition, input.offset))
    }

    /// Drops the open snapshot of `object`, which a newer sync has overtaken. The licences
    /// it published are remembered so that a later full snapshot can remove them.
    fn discard(&mut self, object: SfObject, newer_sync: &str, metrics: &Metrics) {
        let Some(stale) = self.open.remove(&object) else {
            return;
        };
        metrics.snapshot(object, SnapshotOutcome::Discarded);
        tracing::warn!(
            object = object.as_str(),
            stale_sync = %stale.sync_id,
            sync = newer_sync,
            records = stale.records,
            "a newer sync began before this snapshot ended; discarding the unfinished snapshot"
        );
        if license_kind(object).is_some() {
            self.licenses.entry(object).or_default().extend(stale.seen);
        }
    }

    fn buffer(&mut self, object: SfObject, id: String, row: Assignment) {
        if let Some(snapshot) = self.open.get_mut(&object) {
            snapshot.buffered.push((id, row));
        }
    }

    fn holdings(&self, object: SfObject, user_id: &str) -> Vec<String> {
        self.assignments
            .get(&object)
            .map(|assignments| assignments.held(user_id))
            .unwrap_or_default()
    }

    /// An end marker: the snapshot is applied, with tombstones if it is a complete full one.
    fn on_snapshot_end(
        &mut self,
        input: &Input<'_>,
        envelope: &Envelope<'_>,
        metrics: &Metrics,
        encoder: &StateEncoder,
    ) -> Result<Vec<Output>, Rejection> {
        let Some(end) = envelope.snapshot.as_ref() else {
            return Err(invalid_envelope(
                "field snapshot is missing, and kind is snapshot_end",
            ));
        };
        check_key(input.key, envelope, None)?;

        let object = envelope.object;
        let current = self.open.get(&object).map(|s| s.sync_id.as_str());
        if current.is_some_and(|sync| sync != envelope.sync_id) {
            self.discard(object, &envelope.sync_id, metrics);
        }
        let snapshot = self
            .open
            .remove(&object)
            .unwrap_or_else(|| OpenSnapshot::new(&envelope.sync_id, input.partition, input.offset));
        let full = snapshot_outcome(object, envelope, end, &snapshot, metrics);

        let org_id = &*envelope.org_id;
        match (object, license_kind(object)) {
            (_, Some(kind)) => Ok(self.close_licenses(org_id, object, kind, snapshot, full)),
            (SfObject::User, None) => Ok(self.close_users(org_id, snapshot, full)),
            // A log, never a snapshot of what exists: nothing to apply or tombstone.
            (SfObject::LoginHistory, None) => Ok(Vec::new()),
            (_, None) => self.close_assignments(object, snapshot, full, encoder),
        }
    }

    /// Tombstones, for a full snapshot, the licences it lacks; remembers the ones it has.
    fn close_licenses(
        &mut self,
        org_id: &str,
        object: SfObject,
        kind: LicenseKind,
        snapshot: OpenSnapshot,
        full: bool,
    ) -> Vec<Output> {
        let known = self.licenses.entry(object).or_default();
        if !full {
            known.extend(snapshot.seen);
            return Vec::new();
        }
        let gone = std::mem::replace(known, snapshot.seen.into_iter().collect());
        gone.into_iter()
            .filter(|id| !known.contains(id))
            .map(|id| {
                let key = license_key(org_id, kind, &id);
                Output::tombstone(Target::LicenseState, org_id, key)
            })
            .collect()
    }

    /// Tombstones, for a full snapshot, the users it lacks.
    fn close_users(&mut self, org_id: &str, snapshot: OpenSnapshot, full: bool) -> Vec<Output> {
        if !full {
            return Vec::new();
        }
        let mut gone: Vec<String> = self
            .users
            .keys()
            .filter(|id| !snapshot.seen.contains(*id))
            .cloned()
            .collect();
        gone.sort_unstable();
        gone.into_iter()
            .map(|id| {
                self.users.remove(&id);
                self.restored_users.remove(&id);
                self.activity.remove(&id);
                Output::tombstone(Target::UserState, org_id, user_key(org_id, &id))
            })
            .collect()
    }

    /// Applies the buffered assignment rows (replacing all rows for a full snapshot) and
    /// re-publishes every known user whose licences changed. Restored users are compared
    /// with their restored licences at the first complete full snapshot, and left alone by
    /// the partial snapshots before it (see the module documentation).
    fn close_assignments(
        &mut self,
        object: SfObject,
        snapshot: OpenSnapshot,
        full: bool,
        encoder: &StateEncoder,
    ) -> Result<Vec<Output>, Rejection> {
        let assignments = self.assignments.entry(object).or_default();
        let first_full = full && !assignments.complete;
        let mut touched = Touched::default();
        assignments.begin_snapshot();
        for (id, row) in snapshot.buffered {
            assignments.put(id, row, &mut touched);
        }
        if full {
            // Rows the snapshot lacks go; rows that arrived but were dead-lettered (their
            // ids are in `seen`) keep their previous value.
            let seen = &snapshot.seen;
            assignments.retain_put(|id| seen.contains(id), &mut touched);
            assignments.complete = true;
        }
        let complete = assignments.complete;

        // Only published users can be re-published; in a first sync none are yet.
        let users = &self.users;
        let mut changed: Vec<&String> = touched
            .iter()
            .filter(|(user, before)| {
                users.contains_key(*user) && !assignments.holds_exactly(user, before)
            })
            .map(|(user, _)| user)
            .collect();
        if first_full {
            changed.extend(&self.restored_users);
        }
        changed.sort_unstable();
        changed.dedup();
        let mut outputs = Vec::new();
        for user_id in changed {
            let restored = self.restored_users.contains(user_id);
            if restored && !complete {
                continue;
            }
            let Some(state) = self.users.get_mut(user_id).map(|u| &mut u.state) else {
                continue;
            };
            let held = assignments.held(user_id);
            let published = match object {
                SfObject::UserPackageLicense => &mut state.package_licenses,
                _ => &mut state.permission_set_licenses,
            };
            if restored && first_full && *published == held {
                continue;
            }
            *published = held;
            outputs.push(encoder.user_output(state)?);
        }
        Ok(outputs)
    }
}

/// Decides whether a snapshot is a complete full one, counting and logging the outcome.
fn snapshot_outcome(
    object: SfObject,
    envelope: &Envelope<'_>,
    end: &SnapshotEnd,
    snapshot: &OpenSnapshot,
    metrics: &Metrics,
) -> bool {
    let outcome = match end.mode {
        SnapshotMode::Incremental => SnapshotOutcome::Incremental,
        SnapshotMode::Full if snapshot.records == end.records => SnapshotOutcome::Full,
        SnapshotMode::Full => SnapshotOutcome::Incomplete,
    };
    metrics.snapshot(object, outcome);
    if outcome == SnapshotOutcome::Incomplete {
        tracing::warn!(
            org_id = %envelope.org_id,
            object = object.as_str(),
            sync = %envelope.sync_id,
            announced = end.records,
            arrived = snapshot.records,
            "full snapshot is missing records; applied without tombstones"
        );
    }
    outcome == SnapshotOutcome::Full
}

/// Whether a valid record of `object` leaves its id out of its snapshot's `seen`: an
/// assignment row's id is kept with the row, and a login's is never asked for.
fn ids_kept_elsewhere(object: SfObject) -> bool {
    matches!(
        object,
        SfObject::PermissionSetLicenseAssign
            | SfObject::UserPackageLicense
            | SfObject::LoginHistory
    )
}

/// The licence kind an object describes, if it is a licence object.
fn license_kind(object: SfObject) -> Option<LicenseKind> {
    match object {
        SfObject::UserLicense => Some(LicenseKind::User),
        SfObject::PermissionSetLicense => Some(LicenseKind::PermissionSet),
        SfObject::PackageLicense => Some(LicenseKind::Package),
        _ => None,
    }
}

/// The licence object a licence kind comes from; the inverse of [`license_kind`].
fn license_object(kind: LicenseKind) -> SfObject {
    match kind {
        LicenseKind::User => SfObject::UserLicense,
        LicenseKind::PermissionSet => SfObject::PermissionSetLicense,
        LicenseKind::Package => SfObject::PackageLicense,
    }
}

/// The org, kind and licence id of a licence-state key (`org/kind/license-id`), if it is
/// one.
pub fn parse_license_key(key: &str) -> Option<(&str, LicenseKind, &str)> {
    let mut segments = key.splitn(3, '/');
    let (org_id, kind, license_id) = (segments.next()?, segments.next()?, segments.next()?);
    let kind = [
        LicenseKind::User,
        LicenseKind::PermissionSet,
        LicenseKind::Package,
    ]
    .into_iter()
    .find(|k| k.key_segment() == kind)?;
    let valid = |s: &str| !s.is_empty() && !s.contains('/');
    (valid(org_id) && valid(license_id)).then_some((org_id, kind, license_id))
}

/// The org and user id of a user-state key (`org/user-id`), if it is one.
pub fn parse_user_key(key: &str) -> Option<(&str, &str)> {
    let (org_id, user_id) = key.split_once('/')?;
    let valid = |s: &str| !s.is_empty() && !s.contains('/');
    (valid(org_id) && valid(user_id)).then_some((org_id, user_id))
}

/// How seat state is framed: Avro single-object encoding, or the Confluent wire format
/// with the schema ids registered for the two state topics. Cheap to clone.
#[derive(Clone, Debug)]
pub struct StateEncoder {
    encoder: Encoder,
    license_topic: String,
    user_topic: String,
}

impl StateEncoder {
    /// Single-object encoding, needing no registry and no topic names.
    pub fn single_object() -> Self {
        Self::new(Encoder::single_object(), String::new(), String::new())
    }

    /// Encodes with `encoder`; with a registry, `LicenseState` must be registered for
    /// `license_topic` and `UserState` for `user_topic` (full names) before the first event.
    pub fn new(encoder: Encoder, license_topic: String, user_topic: String) -> Self {
        Self {
            encoder,
            license_topic,
            user_topic,
        }
    }

    /// The encoder, for decoding seat state read back from the topics.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    fn license_output(&self, state: LicenseState) -> Result<Vec<Output>, Rejection> {
        let value = encode(self.encoder.encode(&self.license_topic, &state))?;
        let output = Output::state(Target::LicenseState, &state.org_id, state.key(), value);
        Ok(vec![output])
    }

    fn user_output(&self, state: &UserState) -> Result<Output, Rejection> {
        let value = encode(self.encoder.encode(&self.user_topic, state))?;
        Ok(Output::state(
            Target::UserState,
            &state.org_id,
            state.key(),
            value,
        ))
    }
}

/// An encoding failure as a dead letter: the state does not fit its schema, or (a
/// configuration bug) its schema was not registered for the topic.
fn encode(encoded: Result<Vec<u8>, EncodingError>) -> Result<Vec<u8>, Rejection> {
    encoded.map_err(|error| {
        tracing::error!(%error, "seat state cannot be encoded");
        let message = format!("the seat state built from this record does not encode: {error}");
        Rejection::new(ErrorClass::EncodeFailed, message)
    })
}

fn invalid_envelope(message: &str) -> Rejection {
    Rejection::new(ErrorClass::InvalidEnvelope, message)
}

/// Checks the event's key against the one its envelope implies (`org/object/record-id`,
/// or `org/object` for an end marker), building that key only to explain a mismatch.
fn check_key(
    key: Option<&[u8]>,
    envelope: &Envelope<'_>,
    record_id: Option<&str>,
) -> Result<(), Rejection> {
    if key.is_some_and(|key| key_matches(key, envelope, record_id)) {
        return Ok(());
    }
    let expected = envelope.key(record_id);
    match key {
        Some(key) => {
            let shown: String = String::from_utf8_lossy(key).chars().take(200).collect();
            let message = format!("the key is {shown:?}, but the envelope implies {expected:?}");
            Err(Rejection::new(ErrorClass::KeyMismatch, message))
        }
        None => {
            let message = format!("the key is null, but the envelope implies {expected:?}");
            Err(Rejection::new(ErrorClass::KeyMismatch, message))
        }
    }
}

/// The record id in `key`, when the key is the envelope's org and object followed by one.
fn record_id_in_key<'k>(key: &'k [u8], envelope: &Envelope<'_>) -> Option<&'k str> {
    let rest = key.strip_prefix(envelope.org_id.as_bytes())?;
    let rest = rest.strip_prefix(b"/")?;
    let rest = rest.strip_prefix(envelope.object.as_str().as_bytes())?;
    let id = rest.strip_prefix(b"/")?;
    std::str::from_utf8(id).ok().filter(|id| !id.is_empty())
}

/// A fingerprint of a record's JSON text: XXH3's 128-bit hash, wide enough that two
/// different texts of one user do not share one by chance (see the module documentation
/// for texts made to).
fn record_fingerprint(text: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(text.as_bytes())
}

/// Sets `published` to the licences `assignments` gives `user_id` if it differs,
/// returning what it held before.
fn refresh_holdings(
    published: &mut Vec<String>,
    assignments: Option<&Assignments>,
    user_id: &str,
) -> Option<Vec<String>> {
    let current = match assignments {
        Some(assignments) => assignments.holds_exactly(user_id, published),
        None => published.is_empty(),
    };
    if current {
        return None;
    }
    let held = assignments.map(|a| a.held(user_id)).unwrap_or_default();
    Some(std::mem::replace(published, held))
}

/// Whether `key` is the envelope's segments joined with `/`, compared in place.
fn key_matches(key: &[u8], envelope: &Envelope<'_>, record_id: Option<&str>) -> bool {
    let segments = [&*envelope.org_id, envelope.object.as_str()]
        .into_iter()
        .chain(record_id);
    let mut rest = key;
    for (index, segment) in segments.enumerate() {
        if index > 0 {
            match rest.split_first() {
                Some((b'/', tail)) => rest = tail,
                _ => return false,
            }
        }
        match rest.strip_prefix(segment.as_bytes()) {
            Some(tail) => rest = tail,
            None => return false,
        }
    }
    rest.is_empty()
}

/// The org segment of a raw key (`org/object/id`), for placing a dead letter whose
/// envelope cannot be read.
fn org_of_key(key: Option<&[u8]>) -> Option<&str> {
    let text = std::str::from_utf8(key?).ok()?;
    let org = text.split('/').next()?;
    (!org.is_empty()).then_some(org)
}

#[cfg(test)]
mod tests;
