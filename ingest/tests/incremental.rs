//! Incremental `User` reads end to end: against the simulator, with librdkafka's mock
//! cluster as the broker, each `sync_once` is a fresh ingest that resumes from the cursor
//! the previous one stored in Kafka.

mod support;

use chrono::{Duration, Utc};
use seatwatch_schemas::{EnvelopeKind, SfObject, SnapshotMode, SyncStatus};
use seatwatch_simulator::Credentials;

type Setup = support::SimulatedOrg;

async fn setup(user_lookback_secs: u64) -> Setup {
    Setup::start(|config| config.user_lookback_secs = user_lookback_secs).await
}

async fn sync(setup: &Setup) -> SyncStatus {
    setup.sync().await
}

fn users(status: &SyncStatus) -> i64 {
    status.records["User"]
}

/// Active users other than the integration user ingest signs in as.
fn active_user_ids(setup: &Setup, n: usize) -> Vec<String> {
    let integration = Credentials::demo().username.to_lowercase();
    setup.sim.handle().with_org(|org| {
        org.users
            .iter()
            .filter(|u| u.is_active && u.username.to_lowercase() != integration)
            .take(n)
            .map(|u| u.id.clone())
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_ingest_reads_only_what_changed() {
    let setup = setup(600).await;
    let total = setup.sim.handle().with_org(|org| org.users.len()) as i64;
    assert_eq!(users(&sync(&setup).await), total, "the first read is full");

    // Nothing changed: one call per object (plus /limits for a new process), no user.
    let calls_before = setup.sim.handle().api_calls();
    let quiet = sync(&setup).await;
    assert_eq!(users(&quiet), 0);
    assert_eq!(setup.sim.handle().api_calls() - calls_before, 7);

    // Three deactivations are read, and only they.
    let now = Utc::now();
    let ids = active_user_ids(&setup, 3);
    setup.sim.handle().with_org(|org| {
        for id in &ids {
            org.set_user_active(id, false, now).unwrap();
        }
    });
    assert_eq!(users(&sync(&setup).await), 3);
    assert_eq!(users(&sync(&setup).await), 0, "and not again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_that_shows_up_late_is_caught_by_the_look_back() {
    let setup = setup(600).await;
    sync(&setup).await;
    let newest = setup
        .sim
        .handle()
        .with_org(|org| org.users.iter().map(|u| u.system_modstamp).max().unwrap());

    // A change committed with a SystemModstamp five minutes before the newest one read.
    let id = active_user_ids(&setup, 1).remove(0);
    setup.sim.handle().with_org(|org| {
        let user = org.users.iter_mut().find(|u| u.id == id).unwrap();
        user.is_active = false;
        user.system_modstamp = newest - Duration::minutes(5);
    });

    assert_eq!(users(&sync(&setup).await), 1);
    assert_eq!(users(&sync(&setup).await), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn users_sharing_one_timestamp_are_read_once_with_the_id_tie_break() {
    let setup = setup(0).await;
    sync(&setup).await;

    // 450 users, more than two pages, all changed at the same millisecond.
    let at = Utc::now() + Duration::seconds(1);
    let ids = active_user_ids(&setup, 450);
    setup.sim.handle().with_org(|org| {
        for user in org.users.iter_mut().filter(|u| ids.contains(&u.id)) {
            user.system_modstamp = at;
        }
    });

    assert_eq!(users(&sync(&setup).await), 450);
    assert_eq!(
        users(&sync(&setup).await),
        0,
        "no endless repeat of the shared timestamp"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn users_sharing_one_timestamp_across_pages_are_read_once_with_the_look_back() {
    let setup = setup(600).await;
    sync(&setup).await;

    // 450 users (pages of 200) changed at one instant, read through the look-back window.
    let at = Utc::now() + Duration::seconds(1);
    let ids = active_user_ids(&setup, 450);
    setup.sim.handle().with_org(|org| {
        for user in org.users.iter_mut().filter(|u| ids.contains(&u.id)) {
            user.system_modstamp = at;
        }
    });

    assert_eq!(users(&sync(&setup).await), 450);
    assert_eq!(users(&sync(&setup).await), 0, "none of them again");
}

#[tokio::test(flavor = "multi_thread")]
async fn seat_assignments_are_read_incrementally_and_deletions_wait_for_the_full_read() {
    let mut setup = setup(600).await;
    let first = sync(&setup).await;
    let (psl_rows, package_rows) = setup.sim.handle().with_org(|org| {
        (
            org.permission_set_license_assignments.len() as i64,
            org.user_package_licenses.len() as i64,
        )
    });
    assert_eq!(first.records["PermissionSetLicenseAssign"], psl_rows);
    assert_eq!(first.records["UserPackageLicense"], package_rows);

    // One new seat of each kind: only they are read.
    let user = active_user_ids(&setup, 1).remove(0);
    let removed = setup.sim.handle().with_org(|org| {
        let now = Utc::now();
        let psl = org.permission_set_licenses[0].id.clone();
        let package = org.package_licenses[0].id.clone();
        org.assign_permission_set_license(&user, &psl, now).unwrap();
        org.assign_package_license(&user, &package, now).unwrap();
        org.permission_set_license_assignments[0].id.clone()
    });
    let added = sync(&setup).await;
    assert_eq!(added.records["PermissionSetLicenseAssign"], 1);
    assert_eq!(added.records["UserPackageLicense"], 1);

    // A deleted row is invisible to an incremental read...
    setup.sim.handle().with_org(|org| {
        org.remove_permission_set_license_assignment(&removed)
            .unwrap()
    });
    let calls_before = setup.sim.handle().api_calls();
    let quiet = sync(&setup).await;
    assert_eq!(quiet.records["PermissionSetLicenseAssign"], 0);
    assert_eq!(
        setup.sim.handle().api_calls() - calls_before,
        7,
        "/limits plus one call per object"
    );

    // ...and the full read, due at once with a zero interval, has the rows as they are.
    setup.config.full_sync_interval_secs = 0;
    let full = sync(&setup).await;
    assert_eq!(full.records["PermissionSetLicenseAssign"], psl_rows);
    assert_eq!(full.records["UserPackageLicense"], package_rows + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn end_markers_say_which_reads_were_incremental() {
    let setup = setup(600).await;
    sync(&setup).await;
    let quiet = sync(&setup).await;

    // The markers of the quiet sync: absence in an incremental read deletes nothing.
    let markers: Vec<(SfObject, SnapshotMode)> = support::raw_envelopes(&setup.config.kafka)
        .into_iter()
        .filter(|e| e.sync_id == quiet.sync_id && e.kind == EnvelopeKind::SnapshotEnd)
        .map(|e| (e.object, e.snapshot.unwrap().mode))
        .collect();
    let incremental = [
        SfObject::PermissionSetLicenseAssign,
        SfObject::UserPackageLicense,
        SfObject::User,
    ];
    assert_eq!(markers.len(), SfObject::ALL.len(), "{markers:?}");
    for (object, mode) in markers {
        let expected = if incremental.contains(&object) {
            SnapshotMode::Incremental
        } else {
            SnapshotMode::Full
        };
        assert_eq!(mode, expected, "{object}");
    }
}
