//! The built-in org: a deterministic, realistic mid-size org generated from a seed.
//!
//! Given the same user count, reference time and integration username, [`built_in`] returns
//! the same org, because every random choice comes from one seeded ChaCha generator and every
//! timestamp is an offset from the reference time (so the org always looks current). The shape
//! is what a seat monitor should find interesting: one user licence pool at 96-97% (the
//! `Salesforce` pool), a small `Salesforce Platform` pool with idle users, about 15% of active
//! users idle for more than 90 days, inactive users still holding permission set and package
//! seats, a permission set licence expiring in three weeks, a fully used one and a disabled
//! one, a site-licensed package and a nearly full one, and a month of login history.
//! How the org changes over time is the demo module's business.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{
    LicenseStatus, LoginHistory, LoginSource, Org, PackageLicense, PackageStatus,
    PermissionSetLicense, PermissionSetLicenseAssign, Profile, User, UserLicense,
    UserPackageLicense,
};
use crate::{ids, sftime};

/// Users in the built-in org unless configured otherwise.
pub const DEFAULT_USERS: usize = 1200;

/// Fewest users the generator accepts: below this the pools cannot keep their shape.
pub const MIN_USERS: usize = 100;

/// Most users the generator accepts, to keep memory and query times reasonable.
pub const MAX_USERS: usize = 200_000;

/// Seed of the generator; changing it changes every built-in org.
const SEED: u64 = 0x5EA7_3A7C_0000_0001;

/// The connected app the integration user logs in through.
pub const CONNECTED_APP_NAME: &str = "Seatwatch Ingest";

/// Domain of internal usernames.
const DOMAIN: &str = "lakeside-freight.example";

/// Domain of customer community usernames.
const CUSTOMER_DOMAIN: &str = "customers.lakeside-freight.example";

/// First names of generated people, separated by spaces.
const FIRST_NAMES: &str = "\
    Ada Ben Chloe Dev Elena Farid Grace Hugo Ines Jonas Kira Liam Maya Noah Olga Pedro Quinn \
    Rosa Sami Tara Uma Victor Wen Xavier Yara Zane Amir Bea Carlos Dana Emil Freya Gus Hana \
    Ivo Jade Kofi Lena Milo Nora";

/// Last names of generated people, separated by spaces.
const LAST_NAMES: &str = "\
    Abbott Berg Costa Dahl Ekström Fischer Garcia Hale Ito Jensen Kowalski Lund Moreau \
    Nakamura Okafor Petrov Quist Rossi Singh Tanaka Ueda Varga Walsh Xu Yilmaz Zimmer Adler \
    Brandt Chen Duval Evans Ferreira Gupta Horvat Ivanova Jovanovic";

const BROWSERS: &[&str] = &["Chrome 124", "Firefox 125", "Safari 17", "Edge 124"];
const PLATFORMS: &[&str] = &["Windows 10", "Mac OSX", "iPhone", "Android 14", "Linux"];
const COUNTRIES: &[&str] = &["US", "US", "US", "GB", "DE", "CA"];

/// What happens to a generated user over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activity {
    /// Active and logged in within the last 60 days.
    Recent,
    /// Active but not logged in for more than 90 days.
    Idle,
    /// Active and never logged in.
    Never,
    /// Deactivated.
    Inactive,
}

/// The plan of one user licence pool.
struct Pool {
    key: &'static str,
    name: &'static str,
    status: LicenseStatus,
    total: i64,
    active: usize,
    inactive: usize,
    idle_percent: usize,
    user_type: &'static str,
    profiles: &'static [&'static str],
    customer: bool,
    monthly_entitlement: Option<i64>,
}

/// Generates the built-in org.
///
/// `users` is clamped to `MIN_USERS..=MAX_USERS`; the integration user (the one the token
/// endpoint logs in) gets `integration_username` and a System Administrator profile.
pub fn built_in(users: usize, reference_time: DateTime<Utc>, integration_username: &str) -> Org {
    let users = users.clamp(MIN_USERS, MAX_USERS);
    let mut gen = Generator::new(sftime::whole_seconds(reference_time));

    // Licences and profiles first, then the people, then what they hold and how they log in.
    let pools = plan_pools(users);
    gen.add_pools(&pools);
    gen.add_users(&pools, integration_username);
    gen.add_permission_set_licenses();
    gen.add_package_licenses();
    gen.add_login_history();
    gen.finish()
}

/// Sizes the user licence pools for `n` users. The Salesforce pool is sized to sit at about
/// 96.7% used; the inactive users are whatever remains of `n` after the active ones.
fn plan_pools(n: usize) -> Vec<Pool> {
    let sfdc_total = (n as i64 + 2) / 4;
    let sfdc_active = (sfdc_total - sfdc_total * 34 / 1000) as usize;
    let aul_total = (n as i64 / 20).max(10);
    let aul_active = (aul_total * 7 / 10) as usize;
    let chatter_active = n / 10;
    let cc_active = n * 35 / 100;
    let ccl_active = n * 15 / 100;
    let guest_active = 2;
    let active = sfdc_active + aul_active + chatter_active + cc_active + ccl_active + guest_active;
    let inactive = n.saturating_sub(active);
    let (sfdc_inactive, aul_inactive) = (inactive * 6 / 10, inactive / 10);
    let cc_inactive = inactive - sfdc_inactive - aul_inactive;
    let round_up = |seats: usize| ((seats as i64 * 5 / 2) / 100 + 1) * 100;

    // Every pool starts as an active, internal, seat-based licence; the few exceptions say so.
    let pool = |key, name, total, active, inactive, idle_percent, user_type, profiles| Pool {
        key,
        name,
        status: LicenseStatus::Active,
        total,
        active,
        inactive,
        idle_percent,
        user_type,
        profiles,
        customer: false,
        monthly_entitlement: None,
    };

    // One pool per entry, arguments in the closure's order; kept as a table on purpose.
    #[rustfmt::skip]
    let pools = vec![
        pool("SFDC", "Salesforce", sfdc_total, sfdc_active, sfdc_inactive, 15, "Standard",
            &["System Administrator", "Sales Manager", "Standard User"]),
        pool("AUL", "Salesforce Platform", aul_total, aul_active, aul_inactive, 20, "Standard",
            &["Standard Platform User"]),
        pool("PID_Chatter", "Chatter Free", 5000, chatter_active, 0, 15, "CsnOnly",
            &["Chatter Free User"]),
        Pool { customer: true, ..pool("PID_Customer_Community", "Customer Community",
            round_up(cc_active), cc_active, cc_inactive, 15, "CspLitePortal",
            &["Customer Community User"]) },
        Pool { customer: true, monthly_entitlement: Some(round_up(ccl_active) * 4),
            ..pool("PID_Customer_Community_Login", "Customer Community Login",
            round_up(ccl_active), ccl_active, 0, 15, "CspLitePortal",
            &["Customer Community Login User"]) },
        Pool { status: LicenseStatus::Disabled, ..pool("PID_Partner_Community",
            "Partner Community", 0, 0, 0, 0, "PowerPartner", &["Partner Community User"]) },
        pool("PID_Guest_User", "Guest User License", 25, guest_active, 0, 0, "Guest",
            &["Help Site Profile", "Careers Site Profile"]),
    ];
    pools
}

/// The generator's working state.
struct Generator {
    rng: ChaCha8Rng,
    now: DateTime<Utc>,
    serial: u64,
    org: Org,
    usernames: HashSet<String>,
}

impl Generator {
    fn new(now: DateTime<Utc>) -> Self {
        let org = Org {
            org_id: ids::make_id(ids::ORG_PREFIX, 77_000_123),
            name: "Lakeside Freight".into(),
            reference_time: now,
            last_serial: 0,
            user_licenses: Vec::new(),
            profiles: Vec::new(),
            users: Vec::new(),
            permission_set_licenses: Vec::new(),
            package_licenses: Vec::new(),
            permission_set_license_assignments: Vec::new(),
            user_package_licenses: Vec::new(),
            login_history: Vec::new(),
        };
        Self {
            rng: ChaCha8Rng::seed_from_u64(SEED),
            now,
            serial: 0,
            org,
            usernames: HashSet::new(),
        }
    }

    /// The next id with the given key prefix.
    fn id(&mut self, prefix: &str) -> String {
        self.serial += 1;
        ids::make_id(prefix, self.serial)
    }

    /// A time between `lo` and `hi` days before the reference time.
    fn days_ago(&mut self, lo: i64, hi: i64) -> DateTime<Utc> {
        let secs = self.rng.random_range(lo * 86_400..=hi * 86_400);
        self.now - Duration::seconds(secs)
    }

    /// A random element of a non-empty list.
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.rng.random_range(0..from.len())]
    }

    /// Up to `k` distinct elements of `from`, in random order.
    fn sample<T: Clone>(&mut self, from: &[T], k: usize) -> Vec<T> {
        let mut all = from.to_vec();
        all.shuffle(&mut self.rng);
        all.truncate(k);
        all
    }

    /// Adds one UserLicense and its profiles per pool.
    fn add_pools(&mut self, pools: &[Pool]) {
        for pool in pools {
            let id = self.id(ids::USER_LICENSE_PREFIX);
            let created = self.days_ago(1400, 1800);
            let modified = self.days_ago(20, 200);
            let entitlement = pool.monthly_entitlement;
            self.org.user_licenses.push(UserLicense {
                id: id.clone(),
                license_definition_key: pool.key.into(),
                name: pool.name.into(),
                master_label: pool.name.into(),
                status: pool.status,
                total_licenses: pool.total,
                monthly_logins_entitlement: entitlement,
                monthly_logins_used: entitlement.map(|_| pool.active as i64 * 6),
                created_date: created,
                last_modified_date: modified,
                system_modstamp: modified,
            });
            for name in pool.profiles {
                let profile_id = self.id(ids::PROFILE_PREFIX);
                self.org.profiles.push(Profile {
                    id: profile_id,
                    name: (*name).into(),
                    user_license_id: id.clone(),
                });
            }
        }
    }

    /// The id of the profile with the given name.
    fn profile_id(&self, name: &str) -> String {
        let profile = self.org.profiles.iter().find(|p| p.name == name);
        profile.map(|p| p.id.clone()).unwrap_or_default()
    }

    /// Adds the users of every pool: active ones (recent, idle or never logged in) and
    /// inactive ones, the integration user first.
    fn add_users(&mut self, pools: &[Pool], integration_username: &str) {
        for (index, pool) in pools.iter().enumerate() {
            let activities = self.activities(pool, index == 0);
            for (n, activity) in activities.into_iter().enumerate() {
                let profile = self.profile_for(pool, index == 0, n, activity);
                let user = self.make_user(pool, &profile, activity);
                self.org.users.push(user);
            }
        }

        // The integration user is the first Salesforce user; it logs in through the API.
        if let Some(integration) = self.org.users.first_mut() {
            integration.username = integration_username.to_owned();
            integration.email = integration_username.to_owned();
            integration.name = "Seatwatch Integration".into();
            integration.last_login_date = Some(self.now - Duration::minutes(10));
        }
        self.usernames
            .insert(integration_username.to_ascii_lowercase());
        self.assign_managers();
    }

    /// The activity of each user of a pool: exact shares of idle and never-logged-in users,
    /// shuffled, then the inactive users. The integration user (first of the first pool) is
    /// always recent.
    fn activities(&mut self, pool: &Pool, has_integration_user: bool) -> Vec<Activity> {
        let mut active = vec![Activity::Recent; pool.active];
        let guest = pool.user_type == "Guest";
        if guest {
            active.fill(Activity::Never);
        } else {
            let idle = pool.active * pool.idle_percent / 100;
            let never = if pool.key == "SFDC" || pool.key == "AUL" {
                (pool.active / 100).max(1)
            } else {
                pool.active / 100
            };
            let start = usize::from(has_integration_user);
            let slots: Vec<usize> = (start..pool.active).collect();
            let chosen = self.sample(&slots, idle + never);
            for (k, slot) in chosen.into_iter().enumerate() {
                active[slot] = if k < idle {
                    Activity::Idle
                } else {
                    Activity::Never
                };
            }
        }
        active.extend(std::iter::repeat_n(Activity::Inactive, pool.inactive));
        active
    }

    /// The profile of the `n`-th user of a pool. In the Salesforce pool the first three are
    /// administrators and the next twenty sales managers.
    fn profile_for(&self, pool: &Pool, is_sfdc: bool, n: usize, activity: Activity) -> String {
        let name = if is_sfdc && activity != Activity::Inactive {
            match n {
                0..=2 => "System Administrator",
                3..=22 => "Sales Manager",
                _ => "Standard User",
            }
        } else if is_sfdc {
            "Standard User"
        } else {
            pool.profiles[n % pool.profiles.len()]
        };
        self.profile_id(name)
    }

    /// Makes one user with timestamps that fit its activity.
    fn make_user(&mut self, pool: &Pool, profile_id: &str, activity: Activity) -> User {
        let id = self.id(ids::USER_PREFIX);
        let (name, username) = self.person(pool);

        // Last login first; creation precedes it and the last change follows creation.
        let last_login = match activity {
            Activity::Recent => {
                let u: f64 = self.rng.random();
                Some(self.now - Duration::seconds(300 + (u * u * 60.0 * 86_400.0) as i64))
            }
            Activity::Idle => Some(self.days_ago(91, 540)),
            Activity::Never => None,
            Activity::Inactive if self.rng.random_bool(0.85) => Some(self.days_ago(100, 900)),
            Activity::Inactive => None,
        };
        let anchor = last_login.unwrap_or(self.now);
        let created = anchor - Duration::seconds(self.rng.random_range(86_400..=1500 * 86_400));
        let span = (self.now - created).num_seconds().max(1);
        let modified = match activity {
            // A deactivation comes after the last login.
            Activity::Inactive => {
                let since = (self.now - anchor).num_seconds().max(1);
                anchor + Duration::seconds(self.rng.random_range(0..=since))
            }
            _ => created + Duration::seconds(self.rng.random_range(0..=span)),
        };
        User {
            id,
            email: username.clone(),
            username,
            name,
            is_active: activity != Activity::Inactive,
            user_type: pool.user_type.into(),
            last_login_date: last_login,
            profile_id: profile_id.into(),
            manager_id: None,
            created_date: created,
            last_modified_date: modified.min(self.now),
            system_modstamp: modified.min(self.now),
        }
    }

    /// A display name and a unique username for a new user of a pool.
    fn person(&mut self, pool: &Pool) -> (String, String) {
        let first = self.pick(&FIRST_NAMES.split_whitespace().collect::<Vec<_>>());
        let last = self.pick(&LAST_NAMES.split_whitespace().collect::<Vec<_>>());
        if pool.user_type == "Guest" {
            let taken = self
                .usernames
                .contains(&format!("help_site_guest@{DOMAIN}"));
            let site = if taken { "careers" } else { "help" };
            let username = self.unique(&format!("{site}_site_guest"), DOMAIN);
            return (format!("{} Site Guest User", capitalise(site)), username);
        }
        let domain = if pool.customer {
            CUSTOMER_DOMAIN
        } else {
            DOMAIN
        };
        let local = format!(
            "{}.{}",
            first.to_lowercase(),
            ascii_fold(&last.to_lowercase())
        );
        (format!("{first} {last}"), self.unique(&local, domain))
    }

    /// `local@domain`, with a number added when that username is taken.
    fn unique(&mut self, local: &str, domain: &str) -> String {
        let mut candidate = format!("{local}@{domain}");
        let mut n = 2;
        while !self.usernames.insert(candidate.to_ascii_lowercase()) {
            candidate = format!("{local}{n}@{domain}");
            n += 1;
        }
        candidate
    }

    /// Gives most Standard User profiles in the Salesforce pool a sales manager.
    fn assign_managers(&mut self) {
        let manager_profile = self.profile_id("Sales Manager");
        let standard_profile = self.profile_id("Standard User");
        let managers: Vec<String> = self
            .org
            .users
            .iter()
            .filter(|u| u.profile_id == manager_profile)
            .map(|u| u.id.clone())
            .collect();
        if managers.is_empty() {
            return;
        }
        for index in 0..self.org.users.len() {
            if self.org.users[index].profile_id == standard_profile && self.rng.random_bool(0.6) {
                let manager = managers[self.rng.random_range(0..managers.len())].clone();
                self.org.users[index].manager_id = Some(manager);
            }
        }
    }

    /// Ids of users of the Salesforce pool (skipping the integration user), split into
    /// active and inactive.
    fn sfdc_users(&self) -> (Vec<String>, Vec<String>) {
        let Some(licence) = self.org.user_license_by_key("SFDC") else {
            return (Vec::new(), Vec::new());
        };
        let profiles: HashSet<&str> = self
            .org
            .profiles
            .iter()
            .filter(|p| p.user_license_id == licence.id)
            .map(|p| p.id.as_str())
            .collect();
        let users = self
            .org
            .users
            .iter()
            .skip(1)
            .filter(|u| profiles.contains(u.profile_id.as_str()));
        let (active, inactive): (Vec<&User>, Vec<&User>) = users.partition(|u| u.is_active);
        let ids = |v: Vec<&User>| v.into_iter().map(|u| u.id.clone()).collect();
        (ids(active), ids(inactive))
    }

    /// Picks `active` active and `inactive` inactive Salesforce users as seat holders.
    fn holders(&mut self, active: usize, inactive: usize) -> Vec<String> {
        let (active_pool, inactive_pool) = self.sfdc_users();
        let mut chosen = self.sample(&active_pool, active);
        chosen.extend(self.sample(&inactive_pool, inactive));
        chosen
    }

    /// Adds the permission set licences and their assignments.
    fn add_permission_set_licenses(&mut self) {
        let sfdc_total = self
            .org
            .user_license_by_key("SFDC")
            .map_or(300, |l| l.total_licenses);
        let today = self.now.date_naive();
        let cpq_total = (sfdc_total * 2 / 5).max(10);
        let cpq_used = (cpq_total * 7 / 10) as usize;
        // DeveloperName, label, status, total, expiration, active holders, inactive holders.
        #[rustfmt::skip]
        let plans = [
            ("SalesforceCPQ_CPQStandardPerm", "Salesforce CPQ License", LicenseStatus::Active,
                cpq_total, None, cpq_used - 6, 6),
            ("IdentityConnect", "Identity Connect", LicenseStatus::Active,
                10, Some(today + Duration::days(240)), 9, 1),
            ("EinsteinAnalyticsPlusPsl", "CRM Analytics Plus", LicenseStatus::Active,
                25, Some(today + Duration::days(21)), 18, 0),
            ("SalesConsoleUser", "Sales Console User", LicenseStatus::Disabled,
                25, Some(today - Duration::days(120)), 0, 0),
        ];
        for (name, label, status, total, expires, active, inactive) in plans {
            let id = self.id(ids::PSL_PREFIX);
            let created = self.days_ago(600, 1200);
            let modified = self.days_ago(10, 120);
            self.org.permission_set_licenses.push(PermissionSetLicense {
                id: id.clone(),
                developer_name: name.into(),
                master_label: label.into(),
                permission_set_license_key: name.into(),
                status,
                total_licenses: total,
                expiration_date: expires,
                is_available_for_integrations: name == "IdentityConnect",
                created_date: created,
                last_modified_date: modified,
                system_modstamp: modified,
            });
            for user in self.holders(active, inactive) {
                let row_id = self.id(ids::PSL_ASSIGN_PREFIX);
                let at = self.days_ago(10, 700);
                self.org
                    .permission_set_license_assignments
                    .push(PermissionSetLicenseAssign {
                        id: row_id,
                        assignee_id: user,
                        permission_set_license_id: id.clone(),
                        is_revoked: false,
                        created_date: at,
                        last_modified_date: at,
                        system_modstamp: at,
                    });
            }
        }
    }

    /// Adds the managed package licences and their seat assignments.
    fn add_package_licenses(&mut self) {
        let sfdc_total = self
            .org
            .user_license_by_key("SFDC")
            .map_or(300, |l| l.total_licenses);
        let (sfdc_active, _) = self.sfdc_users();
        let sign_total = (sfdc_total / 5).max(12);
        let sign_used = (sign_total * 11 / 12) as usize;
        let route_total = (sfdc_total / 2).max(10);
        let route_used = (route_total * 11 / 15) as usize;
        let site_drift = sfdc_active.len() as i64 - 12;
        // Namespace, allowed, status, expires in days, active holders, inactive holders, drift.
        #[rustfmt::skip]
        let plans = [
            ("inksign", sign_total, PackageStatus::Active, Some(200), sign_used - 5, 5, 0),
            ("routeplanner", route_total, PackageStatus::Active, Some(320), route_used, 0, 0),
            ("learnhub", -1, PackageStatus::Active, None, 12, 0, site_drift.max(0)),
            ("trialtool", 10, PackageStatus::Trial, Some(14), 2, 0, 0),
            ("oldreports", 20, PackageStatus::Expired, Some(-90), 9, 3, 0),
            ("freebie", -1, PackageStatus::Free, None, 0, 0, 0),
        ];
        for (namespace, allowed, status, expires_in, active, inactive, drift) in plans {
            let id = self.id(ids::PACKAGE_LICENSE_PREFIX);
            let created = self.days_ago(400, 1100);
            let modified = self.days_ago(5, 90);
            let expiration = expires_in.map(|days| {
                let day = (self.now + Duration::days(days)).date_naive();
                day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
            });
            self.org.package_licenses.push(PackageLicense {
                id: id.clone(),
                namespace_prefix: namespace.into(),
                allowed_licenses: allowed,
                site_license_drift: drift,
                status,
                expiration_date: expiration,
                is_provisioned: true,
                is_available_for_integrations: false,
                created_date: created,
                last_modified_date: modified,
                system_modstamp: modified,
            });
            for user in self.holders(active, inactive) {
                let row_id = self.id(ids::USER_PACKAGE_LICENSE_PREFIX);
                let at = self.days_ago(10, 380);
                self.org.user_package_licenses.push(UserPackageLicense {
                    id: row_id,
                    user_id: user,
                    package_license_id: id.clone(),
                    is_revoked: false,
                    created_date: at,
                    last_modified_date: at,
                    system_modstamp: at,
                });
            }
        }
    }

    /// Adds a month of login history: each recent login of an active user, some failed
    /// password attempts, and the integration user's API logins every six hours.
    fn add_login_history(&mut self) {
        let month_ago = self.now - Duration::days(30);
        let mut rows: Vec<(DateTime<Utc>, String, &'static str, LoginSource)> = Vec::new();

        // Browser logins of people, with the odd wrong password shortly before.
        let people: Vec<(String, DateTime<Utc>, bool)> = self
            .org
            .users
            .iter()
            .skip(1)
            .filter(|u| u.is_active)
            .filter_map(|u| {
                let at = u.last_login_date.filter(|at| *at >= month_ago)?;
                Some((u.id.clone(), at, u.user_type == "CspLitePortal"))
            })
            .collect();
        for (user_id, at, community) in people {
            let source = self.browser_source(community);
            if self.rng.random_bool(0.1) {
                let earlier = at - Duration::seconds(self.rng.random_range(60..=600));
                rows.push((earlier, user_id.clone(), "Invalid Password", source.clone()));
            }
            rows.push((at, user_id, "Success", source));
        }

        // The integration user's API logins.
        if let Some(integration) = self.org.users.first() {
            let (user_id, last) = (integration.id.clone(), integration.last_login_date);
            for k in 0..12 {
                let at = last.unwrap_or(self.now) - Duration::hours(6 * k);
                let source = LoginSource::oauth_password(
                    CONNECTED_APP_NAME,
                    "login.salesforce.com",
                    "198.51.100.10",
                );
                rows.push((at, user_id.clone(), "Success", source));
            }
        }

        // Ids follow time, as they do in Salesforce.
        rows.sort_by_key(|row| row.0);
        for (at, user_id, status, source) in rows {
            let id = self.id(ids::LOGIN_HISTORY_PREFIX);
            self.org.login_history.push(LoginHistory {
                id,
                user_id,
                login_time: at,
                status: status.into(),
                application: source.application,
                login_type: source.login_type,
                login_sub_type: source.login_sub_type,
                login_url: source.login_url,
                source_ip: source.source_ip,
                browser: source.browser,
                platform: source.platform,
                api_type: None,
                api_version: None,
                country_iso: source.country_iso,
            });
        }
    }

    /// Where a browser login came from: a random documentation-range address and client.
    fn browser_source(&mut self, community: bool) -> LoginSource {
        let ip = format!("203.0.113.{}", self.rng.random_range(1..=254));
        let browser = self.pick(BROWSERS);
        let platform = self.pick(PLATFORMS);
        let country = self.pick(COUNTRIES);
        let mut source = LoginSource::browser(&ip, browser, platform, country);
        if community {
            source.login_type = "Chatter Communities External User".into();
            source.login_url = Some("lakeside-freight.my.site.com".into());
        }
        source
    }

    fn finish(mut self) -> Org {
        self.org.last_serial = self.serial;
        self.org
    }
}

/// Upper-cases the first letter.
fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Replaces the few non-ASCII letters of the name lists, for usernames.
fn ascii_fold(word: &str) -> String {
    word.chars()
        .map(|c| if c == 'ö' { 'o' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn reference() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
    }

    fn org() -> Org {
        built_in(
            DEFAULT_USERS,
            reference(),
            "integration@lakeside-freight.example",
        )
    }

    #[test]
    fn same_reference_time_gives_the_same_org() {
        assert_eq!(org(), org());
        let later = built_in(
            DEFAULT_USERS,
            reference() + Duration::days(1),
            "x@y.example",
        );
        assert_ne!(org(), later);
    }

    #[test]
    fn built_in_org_is_valid_and_sized() {
        let org = org();
        org.validate().unwrap();
        assert_eq!(org.users.len(), DEFAULT_USERS);
        assert!(org
            .user_by_username("INTEGRATION@lakeside-freight.example")
            .is_some());
    }

    #[test]
    fn exactly_one_user_licence_pool_is_at_least_95_percent_used() {
        let org = org();
        let counts = org.seat_counts();
        let full: Vec<&str> = org
            .user_licenses
            .iter()
            .filter(|l| l.total_licenses > 0)
            .filter(|l| counts.user_license(&l.id) * 100 >= l.total_licenses * 95)
            .map(|l| l.license_definition_key.as_str())
            .collect();
        assert_eq!(full, vec!["SFDC"]);
        let sfdc = org.user_license_by_key("SFDC").unwrap();
        assert_eq!(
            (counts.user_license(&sfdc.id), sfdc.total_licenses),
            (290, 300)
        );
    }

    #[test]
    fn licences_have_the_interesting_cases() {
        let org = org();
        let counts = org.seat_counts();
        let today = reference().date_naive();

        // A permission set licence expiring within 30 days, a full one and a disabled one.
        let psls = &org.permission_set_licenses;
        assert!(psls.iter().any(|p| p.status == LicenseStatus::Active
            && p.expiration_date
                .is_some_and(|d| d > today && d <= today + Duration::days(30))));
        assert!(psls
            .iter()
            .any(|p| counts.permission_set_license(&p.id) == p.total_licenses
                && p.total_licenses > 0));
        assert!(psls.iter().any(|p| p.status == LicenseStatus::Disabled));

        // A site licence, and a disabled user licence.
        assert!(org.package_licenses.iter().any(|p| p.allowed_licenses == -1
            && p.status == PackageStatus::Active
            && counts.package_license(&p.id) > 0));
        assert!(org
            .user_licenses
            .iter()
            .any(|l| l.status == LicenseStatus::Disabled));

        // Seats held by inactive users.
        let inactive: HashSet<&str> = org
            .users
            .iter()
            .filter(|u| !u.is_active)
            .map(|u| u.id.as_str())
            .collect();
        assert!(org
            .permission_set_license_assignments
            .iter()
            .any(|a| inactive.contains(a.assignee_id.as_str())));
        assert!(org
            .user_package_licenses
            .iter()
            .any(|a| inactive.contains(a.user_id.as_str())));
    }

    #[test]
    fn about_fifteen_percent_of_active_users_are_idle() {
        let org = org();
        let now = reference();
        let active: Vec<&User> = org.users.iter().filter(|u| u.is_active).collect();
        let stale = active
            .iter()
            .filter(|u| {
                u.last_login_date
                    .is_some_and(|at| now - at > Duration::days(90))
            })
            .count();
        let never = active
            .iter()
            .filter(|u| u.last_login_date.is_none())
            .count();
        let percent = stale as f64 * 100.0 / active.len() as f64;
        assert!((13.0..=17.0).contains(&percent), "idle {percent:.1}%");
        assert!(never > 0);
        assert!(org.users.iter().any(|u| !u.is_active));
        assert!(org.login_history.len() > 100);
    }
}
