//! Demo mode: the org changes on a schedule so a consumer polling every few seconds sees
//! alerts fire on the initial state and resolve within the first minute.
//!
//! [`schedule`] says what happens at each step; [`apply_step`] carries it out on an org at a
//! given time, so tests drive it without a clock; [`run`] applies one step every
//! `demo_step_secs`. Logins set LastLoginDate and add LoginHistory rows but, as in Salesforce,
//! do not bump SystemModstamp, so a consumer must snapshot Users fully (or read LoginHistory)
//! to see them. Actions name licences by key; on an org without them they do nothing.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use tokio_util::sync::CancellationToken;

use crate::org::{LoginSource, Org};
use crate::sftime;
use crate::state::Shared;

/// Days without login after which an active user counts as idle.
pub const IDLE_DAYS: i64 = 90;

/// One change the demo makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DemoAction {
    /// The first `count` idle users of a pool (in Id order) log in.
    IdleUsersLogIn {
        /// LicenseDefinitionKey of the pool.
        license_key: &'static str,
        /// How many.
        count: usize,
    },
    /// Every idle user of a pool logs in, so the pool's idle count drops to zero.
    AllIdleUsersLogIn {
        /// LicenseDefinitionKey of the pool.
        license_key: &'static str,
    },
    /// Active Salesforce users without a seat of this permission set licence get one, as far
    /// as free seats allow.
    AssignPermissionSetLicense {
        /// DeveloperName of the licence.
        developer_name: &'static str,
        /// How many.
        count: usize,
    },
    /// Seats of a package held by inactive users are taken back.
    ReclaimPackageSeats {
        /// NamespacePrefix of the package.
        namespace: &'static str,
        /// How many at most.
        count: usize,
    },
    /// A new user joins a pool, if it has a free seat.
    HireUser {
        /// LicenseDefinitionKey of the pool.
        license_key: &'static str,
    },
    /// Users of a pool are deactivated (never-logged-in and longest idle first, never anyone
    /// who logged in within a day) until the pool is at most `percent` used.
    FreePool {
        /// LicenseDefinitionKey of the pool.
        license_key: &'static str,
        /// Target use in percent.
        percent: i64,
    },
    /// A few users who logged in within the month log in again (rotating with the step).
    ActiveUsersLogIn {
        /// How many.
        count: usize,
    },
}

/// What happens at each step; step 1 comes `demo_step_secs` after start.
///
/// | step | what changes | alert effect |
/// |---|---|---|
/// | 1 | 3 idle Salesforce users log in; 2 CPQ seats assigned | idle count falls |
/// | 2 | 3 more idle Salesforce users log in; 2 inksign seats of inactive users freed | |
/// | 3 | a new hire joins the Salesforce pool; 2 idle Platform users log in | pool fuller |
/// | 4 | Salesforce pool cut to 80%; every idle Platform user logs in | both alerts resolve |
/// | 5+ | 2 active users log in; 2 more CPQ seats assigned; every third step one more inksign seat freed | CPQ forecast, churn |
// Laid out by hand, one step per line pair, to read as the table above.
#[rustfmt::skip]
pub fn schedule(step: u64) -> Vec<DemoAction> {
    use DemoAction::*;
    const SFDC: &str = "SFDC";
    const PLATFORM: &str = "AUL";
    const CPQ: &str = "SalesforceCPQ_CPQStandardPerm";
    const SIGN: &str = "inksign";
    match step {
        1 => vec![IdleUsersLogIn { license_key: SFDC, count: 3 },
                  AssignPermissionSetLicense { developer_name: CPQ, count: 2 }],
        2 => vec![IdleUsersLogIn { license_key: SFDC, count: 3 },
                  ReclaimPackageSeats { namespace: SIGN, count: 2 }],
        3 => vec![HireUser { license_key: SFDC },
                  IdleUsersLogIn { license_key: PLATFORM, count: 2 }],
        4 => vec![FreePool { license_key: SFDC, percent: 80 },
                  AllIdleUsersLogIn { license_key: PLATFORM }],
        n if n % 3 == 0 => vec![ActiveUsersLogIn { count: 2 },
                                AssignPermissionSetLicense { developer_name: CPQ, count: 2 },
                                ReclaimPackageSeats { namespace: SIGN, count: 1 }],
        _ => vec![ActiveUsersLogIn { count: 2 },
                  AssignPermissionSetLicense { developer_name: CPQ, count: 2 }],
    }
}

/// Applies the step's actions at `now`; returns how many records each action changed.
pub fn apply_step(org: &mut Org, step: u64, now: DateTime<Utc>) -> Vec<(DemoAction, usize)> {
    schedule(step)
        .into_iter()
        .map(|action| {
            let changed = apply(org, &action, step, now);
            (action, changed)
        })
        .collect()
}

/// Applies one action; returns how many records it changed.
fn apply(org: &mut Org, action: &DemoAction, step: u64, now: DateTime<Utc>) -> usize {
    match action {
        DemoAction::IdleUsersLogIn { license_key, count } => {
            let users = idle_users(org, license_key, now);
            log_in(org, users.into_iter().take(*count).collect(), now)
        }
        DemoAction::AllIdleUsersLogIn { license_key } => {
            let users = idle_users(org, license_key, now);
            log_in(org, users, now)
        }
        DemoAction::AssignPermissionSetLicense {
            developer_name,
            count,
        } => assign_psl(org, developer_name, *count, now),
        DemoAction::ReclaimPackageSeats { namespace, count } => reclaim(org, namespace, *count),
        DemoAction::HireUser { license_key } => hire(org, license_key, step, now),
        DemoAction::FreePool {
            license_key,
            percent,
        } => free_pool(org, license_key, *percent, now),
        DemoAction::ActiveUsersLogIn { count } => {
            let users = recently_active_users(org, now);
            if users.is_empty() {
                return 0;
            }
            let start = (step as usize * count) % users.len();
            let chosen = users
                .iter()
                .cycle()
                .skip(start)
                .take(*count)
                .cloned()
                .collect();
            log_in(org, chosen, now)
        }
    }
}

/// Ids of a pool's idle users, in Id order.
fn idle_users(org: &Org, license_key: &str, now: DateTime<Utc>) -> Vec<String> {
    let Some(licence) = org.user_license_by_key(license_key) else {
        return Vec::new();
    };
    org.active_users_of_license(&licence.id)
        .into_iter()
        .filter(|u| u.user_type != "Guest" && Org::is_idle(u, now, IDLE_DAYS))
        .map(|u| u.id.clone())
        .collect()
}

/// Ids of active, non-guest users who logged in within 30 days, in Id order.
fn recently_active_users(org: &Org, now: DateTime<Utc>) -> Vec<String> {
    let mut users: Vec<&crate::org::User> = org
        .users
        .iter()
        .filter(|u| u.is_active && u.user_type != "Guest")
        .filter(|u| {
            u.last_login_date
                .is_some_and(|at| now - at <= Duration::days(30))
        })
        .collect();
    users.sort_by(|a, b| a.id.cmp(&b.id));
    users.into_iter().map(|u| u.id.clone()).collect()
}

/// Browser logins for each user; returns how many happened.
fn log_in(org: &mut Org, users: Vec<String>, now: DateTime<Utc>) -> usize {
    let source = LoginSource::browser("203.0.113.50", "Chrome 124", "Windows 10", "US");
    users
        .iter()
        .filter(|id| org.record_login(id, now, "Success", source.clone()).is_ok())
        .count()
}

fn assign_psl(org: &mut Org, developer_name: &str, count: usize, now: DateTime<Utc>) -> usize {
    let Some(psl) = org
        .permission_set_licenses
        .iter()
        .find(|p| p.developer_name == developer_name)
    else {
        return 0;
    };
    let (psl_id, total) = (psl.id.clone(), psl.total_licenses);
    let free = (total - org.seat_counts().permission_set_license(&psl_id)).max(0) as usize;
    let Some(sfdc) = org.user_license_by_key("SFDC") else {
        return 0;
    };

    // The first active Salesforce users (Id order) not already holding a seat.
    let holders: std::collections::HashSet<&str> = org
        .permission_set_license_assignments
        .iter()
        .filter(|a| a.permission_set_license_id == psl_id)
        .map(|a| a.assignee_id.as_str())
        .collect();
    let chosen: Vec<String> = org
        .active_users_of_license(&sfdc.id)
        .into_iter()
        .filter(|u| !holders.contains(u.id.as_str()))
        .take(count.min(free))
        .map(|u| u.id.clone())
        .collect();
    chosen
        .iter()
        .filter(|user| {
            org.assign_permission_set_license(user, &psl_id, now)
                .is_ok()
        })
        .count()
}

fn reclaim(org: &mut Org, namespace: &str, count: usize) -> usize {
    let Some(package) = org
        .package_licenses
        .iter()
        .find(|p| p.namespace_prefix == namespace)
    else {
        return 0;
    };
    let inactive: std::collections::HashSet<&str> = org
        .users
        .iter()
        .filter(|u| !u.is_active)
        .map(|u| u.id.as_str())
        .collect();
    let rows: Vec<String> = org
        .user_package_licenses
        .iter()
        .filter(|a| a.package_license_id == package.id && inactive.contains(a.user_id.as_str()))
        .take(count)
        .map(|a| a.id.clone())
        .collect();
    rows.iter()
        .filter(|id| org.remove_package_license_assignment(id).is_ok())
        .count()
}

fn hire(org: &mut Org, license_key: &str, step: u64, now: DateTime<Utc>) -> usize {
    let Some(licence) = org.user_license_by_key(license_key) else {
        return 0;
    };
    if org.seat_counts().user_license(&licence.id) >= licence.total_licenses {
        return 0;
    }
    let profiles: Vec<&crate::org::Profile> = org
        .profiles
        .iter()
        .filter(|p| p.user_license_id == licence.id)
        .collect();
    let Some(profile) = profiles
        .iter()
        .find(|p| p.name == "Standard User")
        .or(profiles.first())
    else {
        return 0;
    };
    let profile_id = profile.id.clone();
    let username = format!("new.hire{step}@lakeside-freight.example");
    if org.user_by_username(&username).is_some() {
        return 0;
    }
    let name = format!("New Hire {step}");
    usize::from(
        org.add_user(&username, &name, &profile_id, "Standard", now)
            .is_ok(),
    )
}

fn free_pool(org: &mut Org, license_key: &str, percent: i64, now: DateTime<Utc>) -> usize {
    let Some(licence) = org.user_license_by_key(license_key) else {
        return 0;
    };
    let target = licence.total_licenses * percent / 100;
    let used = org.seat_counts().user_license(&licence.id);
    let excess = (used - target).max(0) as usize;

    // Never-logged-in first, then the longest idle; nobody who logged in within a day.
    let mut candidates: Vec<&crate::org::User> = org
        .active_users_of_license(&licence.id)
        .into_iter()
        .filter(|u| {
            u.last_login_date
                .is_none_or(|at| now - at > Duration::days(1))
        })
        .collect();
    candidates.sort_by_key(|u| u.last_login_date);
    let chosen: Vec<String> = candidates
        .into_iter()
        .take(excess)
        .map(|u| u.id.clone())
        .collect();
    chosen
        .iter()
        .filter(|id| org.set_user_active(id, false, now).is_ok())
        .count()
}

/// Applies one step every `step_secs` until shutdown.
pub(crate) async fn run(shared: Arc<Shared>, step_secs: u64, shutdown: CancellationToken) {
    let period = std::time::Duration::from_secs(step_secs);
    let start = tokio::time::Instant::now() + period;
    let mut ticker = tokio::time::interval_at(start, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut step = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        step += 1;
        let changes = apply_step(&mut shared.lock().org, step, sftime::now());
        tracing::debug!(step, ?changes, "demo step applied");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::org::builtin::built_in;
    use chrono::TimeZone;

    fn pool_state(org: &Org, key: &str, now: DateTime<Utc>) -> (i64, i64, usize) {
        let licence = org.user_license_by_key(key).unwrap();
        let used = org.seat_counts().user_license(&licence.id);
        (
            used,
            licence.total_licenses,
            idle_users(org, key, now).len(),
        )
    }

    #[test]
    fn first_four_steps_free_the_full_pool_and_wake_the_platform_pool() {
        let start = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
        let mut org = built_in(1200, start, "integration@lakeside-freight.example");
        let (used, total, _) = pool_state(&org, "SFDC", start);
        assert!(used * 100 >= total * 95);
        assert!(pool_state(&org, "AUL", start).2 > 0);

        for step in 1..=4 {
            let now = start + Duration::seconds(5 * step as i64);
            let changes = apply_step(&mut org, step, now);
            assert!(
                changes.iter().all(|(_, n)| *n > 0),
                "step {step}: {changes:?}"
            );
        }
        let now = start + Duration::seconds(20);
        let (used, total, _) = pool_state(&org, "SFDC", now);
        assert!(used * 100 < total * 90, "SFDC at {used}/{total}");
        assert_eq!(pool_state(&org, "AUL", now).2, 0);
        org.validate().unwrap();
    }

    #[test]
    fn logins_do_not_bump_system_modstamp() {
        let start = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
        let mut org = built_in(1200, start, "integration@lakeside-freight.example");
        let before = org.clone();
        apply_step(&mut org, 5, start + Duration::seconds(25));
        let moved: Vec<_> = org
            .users
            .iter()
            .zip(&before.users)
            .filter(|(a, b)| a.last_login_date != b.last_login_date)
            .collect();
        assert_eq!(moved.len(), 2);
        assert!(moved
            .iter()
            .all(|(a, b)| a.system_modstamp == b.system_modstamp));
    }

    #[tokio::test(start_paused = true)]
    async fn the_running_demo_reaches_step_four_in_twenty_seconds() {
        let start = sftime::now();
        let org = built_in(1200, start, "integration@lakeside-freight.example");
        let creds = crate::config::Credentials::demo();
        let shared = Arc::new(Shared::new(
            org,
            creds,
            1000,
            2000,
            "http://127.0.0.1:1".into(),
        ));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(Arc::clone(&shared), 5, shutdown.clone()));

        tokio::time::sleep(std::time::Duration::from_secs(21)).await;
        let org = shared.lock().org.clone();
        let sfdc = org.user_license_by_key("SFDC").unwrap();
        let used = org.seat_counts().user_license(&sfdc.id);
        assert!(used * 100 < sfdc.total_licenses * 90);
        shutdown.cancel();
        task.await.unwrap();
    }
}
