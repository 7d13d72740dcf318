//! The optional `LoginHistory` read end to end: against the simulator, with librdkafka's
//! mock cluster as the broker. Each `sync_once` is a fresh ingest that resumes from the
//! cursor the previous one stored in Kafka.

mod support;

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use seatwatch_common::kafka::Topics;
use seatwatch_ingest::cursor;
use seatwatch_schemas::salesforce::LoginHistoryRecord;
use seatwatch_schemas::{EnvelopeKind, RawEnvelope, SfObject, SnapshotMode, SyncStatus};
use seatwatch_simulator::org::LoginSource;
use seatwatch_simulator::{sftime, Credentials};

type Setup = support::SimulatedOrg;

async fn setup(login_history: bool, user_lookback_secs: u64) -> Setup {
    Setup::start(|config| {
        config.user_lookback_secs = user_lookback_secs;
        config.login_history = login_history;
        // The simulated org holds a month of logins: a week back leaves some out.
        config.login_history_initial_days = 7;
    })
    .await
}

async fn sync(setup: &Setup) -> SyncStatus {
    setup.sync().await
}

/// The LoginHistory records one sync emitted, as typed records.
fn logins_of(envelopes: &[RawEnvelope], sync_id: &str) -> Vec<LoginHistoryRecord> {
    envelopes
        .iter()
        .filter(|e| e.sync_id == sync_id && e.object == SfObject::LoginHistory)
        .filter(|e| e.kind == EnvelopeKind::Record)
        .map(|e| serde_json::from_str(e.record.as_ref().unwrap().get()).unwrap())
        .collect()
}

/// The LoginHistory cursor stored in Kafka for the simulated org.
async fn stored_cursor(setup: &Setup) -> Option<cursor::ObjectCursor> {
    let topic = Topics::new(&setup.config.kafka.topic_prefix).ingest_cursors;
    let cursors = cursor::load(&setup.config.kafka, &topic).await.unwrap();
    let org_id = setup.sim.handle().org_id();
    cursors
        .get(&cursor::key(&org_id, SfObject::LoginHistory))
        .cloned()
}

/// The integration user ingest signs in as: each sign-in is a LoginHistory row of theirs.
fn integration_user(setup: &Setup) -> String {
    let integration = Credentials::demo().username.to_lowercase();
    setup.sim.handle().with_org(|org| {
        org.users
            .iter()
            .find(|u| u.username.to_lowercase() == integration)
            .map(|u| u.id.clone())
            .unwrap()
    })
}

/// A user other than the integration user ingest signs in as.
fn some_user(setup: &Setup) -> String {
    let integration = Credentials::demo().username.to_lowercase();
    setup.sim.handle().with_org(|org| {
        org.users
            .iter()
            .find(|u| u.is_active && u.username.to_lowercase() != integration)
            .map(|u| u.id.clone())
            .unwrap()
    })
}

fn browser() -> LoginSource {
    LoginSource::browser("203.0.113.5", "Chrome", "Linux", "DE")
}

#[tokio::test(flavor = "multi_thread")]
async fn login_history_reaches_the_raw_topic_and_its_cursor_advances() {
    let setup = setup(true, 600).await;

    // First sync: the rows of the last 7 days, failed ones included, oldest first.
    let first = sync(&setup).await;
    let window_start = first.started_at - 7 * 86_400_000;
    let expected: BTreeSet<String> = setup.sim.handle().with_org(|org| {
        org.login_history
            .iter()
            .filter(|r| r.login_time.timestamp_millis() >= window_start)
            .map(|r| r.id.clone())
            .collect()
    });
    let older = setup.sim.handle().with_org(|org| {
        org.login_history
            .iter()
            .filter(|r| r.login_time.timestamp_millis() < window_start)
            .count()
    });
    assert!(!expected.is_empty(), "the simulated org has recent logins");
    assert!(older > 0, "the simulated org has logins before the window");

    let envelopes = support::raw_envelopes(&setup.config.kafka);
    let read = logins_of(&envelopes, &first.sync_id);
    let read_ids: BTreeSet<String> = read.iter().map(|r| r.id.clone()).collect();
    assert_eq!(read_ids, expected, "exactly the window, nothing older");
    assert_eq!(read.len(), expected.len(), "no row twice");
    assert_eq!(first.records["LoginHistory"], expected.len() as i64);
    assert!(read.iter().any(|r| r.succeeded()));
    assert!(
        read.iter().any(|r| !r.succeeded()),
        "failed logins come too"
    );
    let times: Vec<DateTime<Utc>> = read.iter().map(|r| r.login_time).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "ordered by LoginTime"
    );
    let marker = envelopes
        .iter()
        .find(|e| {
            e.sync_id == first.sync_id
                && e.object == SfObject::LoginHistory
                && e.kind == EnvelopeKind::SnapshotEnd
        })
        .expect("an end marker");
    assert_eq!(
        marker.snapshot.as_ref().unwrap().mode,
        SnapshotMode::Incremental,
        "a log is never a full snapshot"
    );
    let newest = read.iter().map(|r| r.login_time).max().unwrap();
    let stored = stored_cursor(&setup).await.expect("a LoginHistory cursor");
    assert_eq!(stored.modstamp, Some(newest));

    // Nothing new but the sign-in of the sync itself (a fresh process signs in once).
    let integration = integration_user(&setup);
    let quiet = sync(&setup).await;
    assert_eq!(quiet.records["LoginHistory"], 1);
    let envelopes = support::raw_envelopes(&setup.config.kafka);
    let own = logins_of(&envelopes, &quiet.sync_id);
    assert_eq!(own[0].user_id, integration);
    assert!(own[0].succeeded());
    assert!(
        !read_ids.contains(&own[0].id),
        "not one of the first sync's rows"
    );
    let stored = stored_cursor(&setup).await.unwrap().modstamp.unwrap();
    assert!(stored >= newest, "the cursor never moves back");
    assert_eq!(stored, own[0].login_time);

    // A failed and a successful login after the cursor: both read, and only they (with
    // the sync's own sign-in). A minute ahead, so that no sign-in comes later.
    let user = some_user(&setup);
    let later = sftime::now() + Duration::seconds(60);
    setup.sim.handle().with_org(|org| {
        org.record_login(&user, later, "Invalid Password", browser())
            .unwrap();
        org.record_login(&user, later + Duration::seconds(1), "Success", browser())
            .unwrap();
    });
    let next = sync(&setup).await;
    assert_eq!(next.records["LoginHistory"], 3);
    let envelopes = support::raw_envelopes(&setup.config.kafka);
    let read = logins_of(&envelopes, &next.sync_id);
    assert_eq!(
        read[0].user_id, integration,
        "the sign-in comes first: {read:?}"
    );
    let statuses: Vec<&str> = read[1..]
        .iter()
        .map(|r| {
            assert_eq!(r.user_id, user);
            r.status.as_str()
        })
        .collect();
    assert_eq!(statuses, ["Invalid Password", "Success"]);
    let moved = stored_cursor(&setup).await.unwrap();
    assert_eq!(
        moved.modstamp.map(|t| t.timestamp_millis()),
        Some((later + Duration::seconds(1)).timestamp_millis()),
        "the cursor advanced to the newest login"
    );

    let again = sync(&setup).await;
    assert_eq!(again.records["LoginHistory"], 1, "only the new sign-in");
    let envelopes = support::raw_envelopes(&setup.config.kafka);
    let read = logins_of(&envelopes, &again.sync_id);
    assert_eq!(read[0].user_id, integration, "not the two logins again");
}

#[tokio::test(flavor = "multi_thread")]
async fn logins_sharing_one_login_time_across_pages_are_read_once_with_the_id_tie_break() {
    let setup = setup(true, 0).await;
    sync(&setup).await;

    // 450 logins (pages of 200) at one instant, a minute ahead of any sign-in.
    let user = some_user(&setup);
    let at = sftime::now() + Duration::seconds(60);
    setup.sim.handle().with_org(|org| {
        for _ in 0..450 {
            org.record_login(&user, at, "Success", browser()).unwrap();
        }
    });
    let shared = sync(&setup).await;
    let envelopes = support::raw_envelopes(&setup.config.kafka);
    let read = logins_of(&envelopes, &shared.sync_id);
    let theirs: BTreeSet<&str> = read
        .iter()
        .filter(|r| r.user_id == user)
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(theirs.len(), 450);
    assert_eq!(
        shared.records["LoginHistory"], 451,
        "and the sync's own sign-in"
    );
    let stored = stored_cursor(&setup).await.unwrap();
    assert_eq!(stored.modstamp, Some(at));
    assert_eq!(
        stored.id.as_deref(),
        theirs.last().copied(),
        "largest id at that time"
    );

    // The cursor sits on the shared instant; the next sign-in is earlier, so nothing.
    assert_eq!(
        sync(&setup).await.records["LoginHistory"],
        0,
        "no endless repeat of the shared LoginTime"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn login_history_is_not_read_unless_enabled() {
    let setup = setup(false, 600).await;
    let status = sync(&setup).await;
    assert!(!status.records.contains_key("LoginHistory"), "{status:?}");
    let envelopes = support::raw_envelopes(&setup.config.kafka);
    assert!(envelopes.iter().all(|e| e.object != SfObject::LoginHistory));
    assert!(stored_cursor(&setup).await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_permission_the_other_objects_still_sync_and_the_status_names_it() {
    let mut setup = setup(true, 600).await;
    setup.sim.handle().with_faults(|f| {
        f.objects_without_access.insert("LoginHistory".into());
    });

    let status = sync(&setup).await;
    let message = status
        .error_message
        .clone()
        .expect("a warning in the status");
    assert!(message.contains("Monitor Login History"), "{message}");
    assert!(message.contains("Manage Users"), "{message}");
    assert!(message.contains("INVALID_TYPE"), "{message}");
    assert!(
        !message.contains("View Setup and Configuration"),
        "not the licence objects' permission: {message}"
    );
    assert!(!status.records.contains_key("LoginHistory"));
    let users = setup.sim.handle().with_org(|org| org.users.len()) as i64;
    assert_eq!(status.records["User"], users, "users synced regardless");
    assert!(
        stored_cursor(&setup).await.is_none(),
        "no LoginHistory cursor"
    );
    let envelopes = support::raw_envelopes(&setup.config.kafka);
    assert!(envelopes
        .iter()
        .any(|e| e.sync_id == status.sync_id && e.object == SfObject::User));

    // `ingest check` reports it when enabled, and not when disabled.
    let checks = seatwatch_ingest::check::check(&setup.config).await.unwrap();
    let report = seatwatch_ingest::check::render(&checks);
    assert!(!checks[0].passed(), "{report}");
    assert!(
        report.contains("LoginHistory                 NOT readable (INVALID_TYPE)"),
        "{report}"
    );
    assert!(report.contains("'Monitor Login History'"), "{report}");

    setup.config.login_history = false;
    let checks = seatwatch_ingest::check::check(&setup.config).await.unwrap();
    let report = seatwatch_ingest::check::render(&checks);
    assert!(checks[0].passed(), "{report}");
    assert!(!report.contains("LoginHistory"), "{report}");
}
