//! The simulated org: the records behind every query, and the changes that can be made to them.
//!
//! An [`Org`] holds licences, profiles, users, licence assignments and login history as plain
//! serde structs; the same JSON is what `--dump-org` prints and what `OrgSource::File` loads
//! (the format is described in `simulator/README.md`). Seat counts (`UsedLicenses`) are not
//! stored: they are derived from users and assignments whenever they are read, so they stay
//! consistent while tests and the demo change the org. The change methods here keep the audit
//! fields honest (a change bumps `SystemModstamp` and `LastModifiedDate`; a login does not, as
//! in Salesforce). The built-in org lives in [`builtin`]; SOQL and HTTP live elsewhere.

pub mod builtin;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::ids;

/// How many login history rows are kept; older rows are dropped, as Salesforce keeps about
/// six months of them. The bound keeps a long-running demo from growing without limit.
const MAX_LOGIN_HISTORY: usize = 50_000;

/// A simulated Salesforce org.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Org {
    /// The 18-character organization id (`00D…`).
    pub org_id: String,
    /// A display name, used in usernames of the built-in org and in logs.
    pub name: String,
    /// The time the org was generated for; built-in timestamps are offsets from it.
    pub reference_time: DateTime<Utc>,
    /// The serial of the last id handed out; new ids continue from here.
    #[serde(default)]
    pub last_serial: u64,
    /// UserLicense rows.
    pub user_licenses: Vec<UserLicense>,
    /// Profile rows; each ties users to one user licence.
    pub profiles: Vec<Profile>,
    /// User rows; users are deactivated, never deleted.
    pub users: Vec<User>,
    /// PermissionSetLicense rows.
    pub permission_set_licenses: Vec<PermissionSetLicense>,
    /// PackageLicense rows.
    pub package_licenses: Vec<PackageLicense>,
    /// PermissionSetLicenseAssign rows.
    pub permission_set_license_assignments: Vec<PermissionSetLicenseAssign>,
    /// UserPackageLicense rows.
    pub user_package_licenses: Vec<UserPackageLicense>,
    /// LoginHistory rows, oldest first.
    pub login_history: Vec<LoginHistory>,
}

/// Status of a user licence or permission set licence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LicenseStatus {
    /// Available.
    Active,
    /// Expired or switched off.
    Disabled,
}

impl LicenseStatus {
    /// The picklist value as Salesforce writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "Active",
            Self::Disabled => "Disabled",
        }
    }
}

/// Status of a managed package licence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PackageStatus {
    /// Paid and current.
    Active,
    /// Past its expiration date.
    Expired,
    /// Free package.
    Free,
    /// Trial.
    Trial,
}

impl PackageStatus {
    /// The picklist value as Salesforce writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "Active",
            Self::Expired => "Expired",
            Self::Free => "Free",
            Self::Trial => "Trial",
        }
    }
}

/// A UserLicense row; `UsedLicenses` is derived from active users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserLicense {
    /// Id (`100…`).
    pub id: String,
    /// LicenseDefinitionKey, for example `SFDC` or `AUL`.
    pub license_definition_key: String,
    /// Name.
    pub name: String,
    /// MasterLabel.
    pub master_label: String,
    /// Status.
    pub status: LicenseStatus,
    /// TotalLicenses.
    pub total_licenses: i64,
    /// MonthlyLoginsEntitlement; only login-based licences have one.
    pub monthly_logins_entitlement: Option<i64>,
    /// MonthlyLoginsUsed; only login-based licences have one.
    pub monthly_logins_used: Option<i64>,
    /// CreatedDate.
    pub created_date: DateTime<Utc>,
    /// LastModifiedDate.
    pub last_modified_date: DateTime<Utc>,
    /// SystemModstamp.
    pub system_modstamp: DateTime<Utc>,
}

/// A Profile row, reduced to what ties a user to a licence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Id (`00e…`).
    pub id: String,
    /// Name.
    pub name: String,
    /// UserLicenseId.
    pub user_license_id: String,
}

/// A User row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Id (`005…`).
    pub id: String,
    /// Username, unique in the org (compared without regard to case).
    pub username: String,
    /// Name (first and last name).
    pub name: String,
    /// Email.
    pub email: String,
    /// IsActive.
    pub is_active: bool,
    /// UserType, for example `Standard`, `CsnOnly`, `CspLitePortal` or `Guest`.
    pub user_type: String,
    /// LastLoginDate; `None` for users who never logged in.
    pub last_login_date: Option<DateTime<Utc>>,
    /// ProfileId.
    pub profile_id: String,
    /// ManagerId.
    pub manager_id: Option<String>,
    /// CreatedDate.
    pub created_date: DateTime<Utc>,
    /// LastModifiedDate.
    pub last_modified_date: DateTime<Utc>,
    /// SystemModstamp.
    pub system_modstamp: DateTime<Utc>,
}

/// A PermissionSetLicense row; `UsedLicenses` is derived from assignments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionSetLicense {
    /// Id (`0PL…`).
    pub id: String,
    /// DeveloperName.
    pub developer_name: String,
    /// MasterLabel.
    pub master_label: String,
    /// PermissionSetLicenseKey.
    pub permission_set_license_key: String,
    /// Status; `Disabled` means expired.
    pub status: LicenseStatus,
    /// TotalLicenses.
    pub total_licenses: i64,
    /// ExpirationDate (a date, not a dateTime).
    pub expiration_date: Option<NaiveDate>,
    /// IsAvailableForIntegrations.
    pub is_available_for_integrations: bool,
    /// CreatedDate.
    pub created_date: DateTime<Utc>,
    /// LastModifiedDate.
    pub last_modified_date: DateTime<Utc>,
    /// SystemModstamp.
    pub system_modstamp: DateTime<Utc>,
}

/// A PackageLicense row; `UsedLicenses` is derived from assignments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageLicense {
    /// Id (`050…`).
    pub id: String,
    /// NamespacePrefix.
    pub namespace_prefix: String,
    /// AllowedLicenses; -1 means a site licence (everyone may use the package).
    pub allowed_licenses: i64,
    /// Seats a site licence reports on top of its assignment rows. Salesforce does not enforce
    /// per-user rows for site licences, so their UsedLicenses drifts away from the rows; this
    /// models that drift and is ignored for seat-based licences.
    #[serde(default)]
    pub site_license_drift: i64,
    /// Status.
    pub status: PackageStatus,
    /// ExpirationDate (a dateTime).
    pub expiration_date: Option<DateTime<Utc>>,
    /// IsProvisioned.
    pub is_provisioned: bool,
    /// IsAvailableForIntegrations.
    pub is_available_for_integrations: bool,
    /// CreatedDate.
    pub created_date: DateTime<Utc>,
    /// LastModifiedDate.
    pub last_modified_date: DateTime<Utc>,
    /// SystemModstamp.
    pub system_modstamp: DateTime<Utc>,
}

/// A PermissionSetLicenseAssign row: one user holding one permission set licence seat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionSetLicenseAssign {
    /// Id (`2LA…`).
    pub id: String,
    /// AssigneeId.
    pub assignee_id: String,
    /// PermissionSetLicenseId.
    pub permission_set_license_id: String,
    /// IsRevoked; a revoked row holds no seat.
    pub is_revoked: bool,
    /// CreatedDate.
    pub created_date: DateTime<Utc>,
    /// LastModifiedDate.
    pub last_modified_date: DateTime<Utc>,
    /// SystemModstamp.
    pub system_modstamp: DateTime<Utc>,
}

/// A UserPackageLicense row: one user holding one managed package seat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPackageLicense {
    /// Id (`051…`).
    pub id: String,
    /// UserId.
    pub user_id: String,
    /// PackageLicenseId.
    pub package_license_id: String,
    /// IsRevoked; a revoked row holds no seat.
    pub is_revoked: bool,
    /// CreatedDate.
    pub created_date: DateTime<Utc>,
    /// LastModifiedDate.
    pub last_modified_date: DateTime<Utc>,
    /// SystemModstamp.
    pub system_modstamp: DateTime<Utc>,
}

/// A LoginHistory row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginHistory {
    /// Id (`0Ya…`).
    pub id: String,
    /// UserId.
    pub user_id: String,
    /// LoginTime.
    pub login_time: DateTime<Utc>,
    /// Status: `Success` or a failure reason such as `Invalid Password`.
    pub status: String,
    /// Application.
    pub application: String,
    /// LoginType.
    pub login_type: String,
    /// LoginSubType.
    pub login_sub_type: Option<String>,
    /// LoginUrl.
    pub login_url: Option<String>,
    /// SourceIp.
    pub source_ip: String,
    /// Browser.
    pub browser: String,
    /// Platform.
    pub platform: String,
    /// ApiType.
    pub api_type: Option<String>,
    /// ApiVersion.
    pub api_version: Option<String>,
    /// CountryIso.
    pub country_iso: Option<String>,
}

/// Where a login came from; the fields LoginHistory records besides user, time and status.
#[derive(Debug, Clone, PartialEq)]
pub struct LoginSource {
    /// Application.
    pub application: String,
    /// LoginType.
    pub login_type: String,
    /// LoginSubType.
    pub login_sub_type: Option<String>,
    /// LoginUrl.
    pub login_url: Option<String>,
    /// SourceIp.
    pub source_ip: String,
    /// Browser.
    pub browser: String,
    /// Platform.
    pub platform: String,
    /// CountryIso.
    pub country_iso: Option<String>,
}

impl LoginSource {
    /// A browser login through the login page.
    pub fn browser(source_ip: &str, browser: &str, platform: &str, country: &str) -> Self {
        Self {
            application: "Browser".into(),
            login_type: "Application".into(),
            login_sub_type: Some("UsernamePasswordUiLogin".into()),
            login_url: Some("lakeside-freight.my.salesforce.com".into()),
            source_ip: source_ip.into(),
            browser: browser.into(),
            platform: platform.into(),
            country_iso: Some(country.into()),
        }
    }

    /// An OAuth username-password login by a connected app.
    pub fn oauth_password(application: &str, login_url: &str, source_ip: &str) -> Self {
        Self {
            application: application.into(),
            login_type: "Remote Access 2.0".into(),
            login_sub_type: Some("OauthUsernamePassword".into()),
            login_url: Some(login_url.into()),
            source_ip: source_ip.into(),
            browser: "Unknown".into(),
            platform: "Unknown".into(),
            country_iso: None,
        }
    }
}

/// Seats in use per licence, derived from users and assignments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeatCounts {
    /// UserLicense id → active users whose profile carries that licence.
    pub user_licenses: HashMap<String, i64>,
    /// PermissionSetLicense id → assignments not revoked.
    pub permission_set_licenses: HashMap<String, i64>,
    /// PackageLicense id → assignments not revoked, plus the drift of a site licence.
    pub package_licenses: HashMap<String, i64>,
}

impl SeatCounts {
    /// UsedLicenses of a user licence.
    pub fn user_license(&self, id: &str) -> i64 {
        self.user_licenses.get(id).copied().unwrap_or(0)
    }

    /// UsedLicenses of a permission set licence.
    pub fn permission_set_license(&self, id: &str) -> i64 {
        self.permission_set_licenses.get(id).copied().unwrap_or(0)
    }

    /// UsedLicenses of a package licence.
    pub fn package_license(&self, id: &str) -> i64 {
        self.package_licenses.get(id).copied().unwrap_or(0)
    }
}

/// A change that could not be made because it names something the org does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrgChangeError {
    /// No record with that id.
    #[error("no {object} with id {id} in the org")]
    NotFound {
        /// The object searched.
        object: &'static str,
        /// The id given.
        id: String,
    },
}

impl Org {
    /// Derives the seats in use of every licence.
    pub fn seat_counts(&self) -> SeatCounts {
        let mut counts = SeatCounts::default();

        // User licences count active users through their profile.
        let licence_of_profile: HashMap<&str, &str> = self
            .profiles
            .iter()
            .map(|p| (p.id.as_str(), p.user_license_id.as_str()))
            .collect();
        for user in self.users.iter().filter(|u| u.is_active) {
            if let Some(licence) = licence_of_profile.get(user.profile_id.as_str()) {
                *counts
                    .user_licenses
                    .entry((*licence).to_owned())
                    .or_default() += 1;
            }
        }

        // Permission set and package licences count assignment rows that hold a seat.
        for row in self
            .permission_set_license_assignments
            .iter()
            .filter(|a| !a.is_revoked)
        {
            let id = row.permission_set_license_id.clone();
            *counts.permission_set_licenses.entry(id).or_default() += 1;
        }
        for row in self.user_package_licenses.iter().filter(|a| !a.is_revoked) {
            *counts
                .package_licenses
                .entry(row.package_license_id.clone())
                .or_default() += 1;
        }
        for package in self
            .package_licenses
            .iter()
            .filter(|p| p.allowed_licenses == -1)
        {
            *counts
                .package_licenses
                .entry(package.id.clone())
                .or_default() += package.site_license_drift;
        }
        counts
    }

    /// Finds a user by username, ignoring case as Salesforce does.
    pub fn user_by_username(&self, username: &str) -> Option<&User> {
        self.users
            .iter()
            .find(|u| u.username.eq_ignore_ascii_case(username))
    }

    /// Finds a user licence by its LicenseDefinitionKey.
    pub fn user_license_by_key(&self, key: &str) -> Option<&UserLicense> {
        self.user_licenses
            .iter()
            .find(|l| l.license_definition_key == key)
    }

    /// The user licence a user's profile carries.
    pub fn license_of_user(&self, user: &User) -> Option<&UserLicense> {
        let profile = self.profiles.iter().find(|p| p.id == user.profile_id)?;
        self.user_licenses
            .iter()
            .find(|l| l.id == profile.user_license_id)
    }

    /// Active users of a user licence, in Id order.
    pub fn active_users_of_license(&self, license_id: &str) -> Vec<&User> {
        let profiles: HashSet<&str> = self
            .profiles
            .iter()
            .filter(|p| p.user_license_id == license_id)
            .map(|p| p.id.as_str())
            .collect();
        let mut users: Vec<&User> = self
            .users
            .iter()
            .filter(|u| u.is_active && profiles.contains(u.profile_id.as_str()))
            .collect();
        users.sort_by(|a, b| a.id.cmp(&b.id));
        users
    }

    /// Tells whether an active user is idle: never logged in, or not for more than `days`.
    pub fn is_idle(user: &User, now: DateTime<Utc>, days: i64) -> bool {
        match user.last_login_date {
            None => true,
            Some(at) => now - at > chrono::Duration::days(days),
        }
    }

    /// Hands out a fresh id with the given key prefix.
    pub fn new_id(&mut self, prefix: &str) -> String {
        // Serials only grow; the loop only matters for hand-written org files whose ids happen
        // to collide with generated ones.
        loop {
            self.last_serial += 1;
            let id = ids::make_id(prefix, self.last_serial);
            if !self.contains_id(&id) {
                return id;
            }
        }
    }

    /// Records a login. A successful one sets the user's LastLoginDate without touching
    /// SystemModstamp (Salesforce does not bump it for logins) and counts towards the monthly
    /// logins of a login-based licence.
    pub fn record_login(
        &mut self,
        user_id: &str,
        at: DateTime<Utc>,
        status: &str,
        source: LoginSource,
    ) -> Result<(), OrgChangeError> {
        let index = self.user_index(user_id)?;

        // A successful login moves the user's last login and the licence's monthly count.
        if status == "Success" {
            self.users[index].last_login_date = Some(at);
            let licence_id = self
                .license_of_user(&self.users[index])
                .map(|l| l.id.clone());
            let licence = self
                .user_licenses
                .iter_mut()
                .find(|l| Some(&l.id) == licence_id.as_ref());
            if let Some(used) = licence.and_then(|l| l.monthly_logins_used.as_mut()) {
                *used += 1;
            }
        }

        // Every attempt leaves a LoginHistory row; the oldest rows go once the bound is hit.
        let id = self.new_id(ids::LOGIN_HISTORY_PREFIX);
        self.login_history.push(LoginHistory {
            id,
            user_id: user_id.to_owned(),
            login_time: at,
            status: status.to_owned(),
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
        if self.login_history.len() > MAX_LOGIN_HISTORY {
            let excess = self.login_history.len() - MAX_LOGIN_HISTORY;
            self.login_history.drain(..excess);
        }
        Ok(())
    }

    /// Activates or deactivates a user.
    pub fn set_user_active(
        &mut self,
        user_id: &str,
        active: bool,
        at: DateTime<Utc>,
    ) -> Result<(), OrgChangeError> {
        let index = self.user_index(user_id)?;
        let user = &mut self.users[index];
        user.is_active = active;
        touch(&mut user.last_modified_date, &mut user.system_modstamp, at);
        Ok(())
    }

    /// Moves a user to another profile, and so possibly to another user licence.
    pub fn set_user_profile(
        &mut self,
        user_id: &str,
        profile_id: &str,
        at: DateTime<Utc>,
    ) -> Result<(), OrgChangeError> {
        if !self.profiles.iter().any(|p| p.id == profile_id) {
            return Err(not_found("Profile", profile_id));
        }
        let index = self.user_index(user_id)?;
        let user = &mut self.users[index];
        user.profile_id = profile_id.to_owned();
        touch(&mut user.last_modified_date, &mut user.system_modstamp, at);
        Ok(())
    }

    /// Adds an active user who has never logged in and returns their id.
    pub fn add_user(
        &mut self,
        username: &str,
        name: &str,
        profile_id: &str,
        user_type: &str,
        at: DateTime<Utc>,
    ) -> Result<String, OrgChangeError> {
        if !self.profiles.iter().any(|p| p.id == profile_id) {
            return Err(not_found("Profile", profile_id));
        }
        let id = self.new_id(ids::USER_PREFIX);
        self.users.push(User {
            id: id.clone(),
            username: username.to_owned(),
            name: name.to_owned(),
            email: username.to_owned(),
            is_active: true,
            user_type: user_type.to_owned(),
            last_login_date: None,
            profile_id: profile_id.to_owned(),
            manager_id: None,
            created_date: at,
            last_modified_date: at,
            system_modstamp: at,
        });
        Ok(id)
    }

    /// Changes the seats bought for a user licence.
    pub fn set_user_license_total(
        &mut self,
        license_id: &str,
        total: i64,
        at: DateTime<Utc>,
    ) -> Result<(), OrgChangeError> {
        let licence = self
            .user_licenses
            .iter_mut()
            .find(|l| l.id == license_id)
            .ok_or_else(|| not_found("UserLicense", license_id))?;
        licence.total_licenses = total;
        touch(
            &mut licence.last_modified_date,
            &mut licence.system_modstamp,
            at,
        );
        Ok(())
    }

    /// Gives a user a permission set licence seat and returns the assignment id.
    pub fn assign_permission_set_license(
        &mut self,
        user_id: &str,
        psl_id: &str,
        at: DateTime<Utc>,
    ) -> Result<String, OrgChangeError> {
        self.user_index(user_id)?;
        if !self.permission_set_licenses.iter().any(|p| p.id == psl_id) {
            return Err(not_found("PermissionSetLicense", psl_id));
        }
        let id = self.new_id(ids::PSL_ASSIGN_PREFIX);
        self.permission_set_license_assignments
            .push(PermissionSetLicenseAssign {
                id: id.clone(),
                assignee_id: user_id.to_owned(),
                permission_set_license_id: psl_id.to_owned(),
                is_revoked: false,
                created_date: at,
                last_modified_date: at,
                system_modstamp: at,
            });
        Ok(id)
    }

    /// Deletes a permission set licence assignment; the row disappears from queries.
    pub fn remove_permission_set_license_assignment(
        &mut self,
        id: &str,
    ) -> Result<(), OrgChangeError> {
        let before = self.permission_set_license_assignments.len();
        self.permission_set_license_assignments
            .retain(|a| a.id != id);
        if self.permission_set_license_assignments.len() == before {
            return Err(not_found("PermissionSetLicenseAssign", id));
        }
        Ok(())
    }

    /// Gives a user a managed package seat and returns the assignment id.
    pub fn assign_package_license(
        &mut self,
        user_id: &str,
        package_id: &str,
        at: DateTime<Utc>,
    ) -> Result<String, OrgChangeError> {
        self.user_index(user_id)?;
        if !self.package_licenses.iter().any(|p| p.id == package_id) {
            return Err(not_found("PackageLicense", package_id));
        }
        let id = self.new_id(ids::USER_PACKAGE_LICENSE_PREFIX);
        self.user_package_licenses.push(UserPackageLicense {
            id: id.clone(),
            user_id: user_id.to_owned(),
            package_license_id: package_id.to_owned(),
            is_revoked: false,
            created_date: at,
            last_modified_date: at,
            system_modstamp: at,
        });
        Ok(id)
    }

    /// Deletes a managed package seat assignment; the row disappears from queries.
    pub fn remove_package_license_assignment(&mut self, id: &str) -> Result<(), OrgChangeError> {
        let before = self.user_package_licenses.len();
        self.user_package_licenses.retain(|a| a.id != id);
        if self.user_package_licenses.len() == before {
            return Err(not_found("UserPackageLicense", id));
        }
        Ok(())
    }

    /// Checks that ids are well formed and unique and that every reference resolves.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen = HashSet::new();
        let mut check = |id: &str, prefix: &str, what: &str| -> Result<(), String> {
            if !ids::is_valid(id, prefix) {
                return Err(format!(
                    "{what} id {id:?} is not an 18-character Salesforce id starting with {prefix} \
                     with a matching case suffix"
                ));
            }
            if !seen.insert(id.to_owned()) {
                return Err(format!("id {id} is used twice"));
            }
            Ok(())
        };

        // Every record's own id.
        check(&self.org_id, ids::ORG_PREFIX, "org_id")?;
        for l in &self.user_licenses {
            check(&l.id, ids::USER_LICENSE_PREFIX, "user licence")?;
        }
        for p in &self.profiles {
            check(&p.id, ids::PROFILE_PREFIX, "profile")?;
        }
        for u in &self.users {
            check(&u.id, ids::USER_PREFIX, "user")?;
        }
        for p in &self.permission_set_licenses {
            check(&p.id, ids::PSL_PREFIX, "permission set licence")?;
        }
        for p in &self.package_licenses {
            check(&p.id, ids::PACKAGE_LICENSE_PREFIX, "package licence")?;
        }
        for a in &self.permission_set_license_assignments {
            check(
                &a.id,
                ids::PSL_ASSIGN_PREFIX,
                "permission set licence assignment",
            )?;
        }
        for a in &self.user_package_licenses {
            check(
                &a.id,
                ids::USER_PACKAGE_LICENSE_PREFIX,
                "user package licence",
            )?;
        }
        for h in &self.login_history {
            check(&h.id, ids::LOGIN_HISTORY_PREFIX, "login history")?;
        }

        self.validate_references()?;
        self.validate_usernames()
    }

    /// Checks that every reference between records points at an existing record.
    fn validate_references(&self) -> Result<(), String> {
        let ids_of =
            |v: Vec<&str>| -> HashSet<String> { v.into_iter().map(String::from).collect() };
        let licences = ids_of(self.user_licenses.iter().map(|l| l.id.as_str()).collect());
        let profiles = ids_of(self.profiles.iter().map(|p| p.id.as_str()).collect());
        let users = ids_of(self.users.iter().map(|u| u.id.as_str()).collect());
        let psls = ids_of(
            self.permission_set_licenses
                .iter()
                .map(|p| p.id.as_str())
                .collect(),
        );
        let packages = ids_of(
            self.package_licenses
                .iter()
                .map(|p| p.id.as_str())
                .collect(),
        );
        let missing = |kind: &str, id: &str, by: &str| {
            Err(format!(
                "{by} refers to {kind} {id}, which is not in the org"
            ))
        };

        for p in &self.profiles {
            if !licences.contains(&p.user_license_id) {
                return missing(
                    "user licence",
                    &p.user_license_id,
                    &format!("profile {}", p.id),
                );
            }
        }
        for u in &self.users {
            if !profiles.contains(&u.profile_id) {
                return missing("profile", &u.profile_id, &format!("user {}", u.id));
            }
            if let Some(m) = u.manager_id.as_ref().filter(|m| !users.contains(*m)) {
                return missing("manager", m, &format!("user {}", u.id));
            }
        }
        for a in &self.permission_set_license_assignments {
            if !users.contains(&a.assignee_id) {
                return missing("user", &a.assignee_id, &format!("assignment {}", a.id));
            }
            if !psls.contains(&a.permission_set_license_id) {
                let psl = &a.permission_set_license_id;
                return missing(
                    "permission set licence",
                    psl,
                    &format!("assignment {}", a.id),
                );
            }
        }
        for a in &self.user_package_licenses {
            if !users.contains(&a.user_id) {
                return missing("user", &a.user_id, &format!("assignment {}", a.id));
            }
            if !packages.contains(&a.package_license_id) {
                let package = &a.package_license_id;
                return missing("package licence", package, &format!("assignment {}", a.id));
            }
        }
        for h in &self.login_history {
            if !users.contains(&h.user_id) {
                return missing("user", &h.user_id, &format!("login history row {}", h.id));
            }
        }
        Ok(())
    }

    /// Checks that no two users share a username.
    fn validate_usernames(&self) -> Result<(), String> {
        let mut seen = HashSet::new();
        for u in &self.users {
            if !seen.insert(u.username.to_ascii_lowercase()) {
                return Err(format!("username {} is used by two users", u.username));
            }
        }
        Ok(())
    }

    /// Tells whether any record already uses `id`.
    fn contains_id(&self, id: &str) -> bool {
        self.org_id == id
            || self.user_licenses.iter().any(|r| r.id == id)
            || self.profiles.iter().any(|r| r.id == id)
            || self.users.iter().any(|r| r.id == id)
            || self.permission_set_licenses.iter().any(|r| r.id == id)
            || self.package_licenses.iter().any(|r| r.id == id)
            || self
                .permission_set_license_assignments
                .iter()
                .any(|r| r.id == id)
            || self.user_package_licenses.iter().any(|r| r.id == id)
            || self.login_history.iter().any(|r| r.id == id)
    }

    /// Position of a user in `users`.
    fn user_index(&self, user_id: &str) -> Result<usize, OrgChangeError> {
        self.users
            .iter()
            .position(|u| u.id == user_id)
            .ok_or_else(|| not_found("User", user_id))
    }
}

/// Moves the audit fields of a changed record forward (never backward).
fn touch(last_modified: &mut DateTime<Utc>, modstamp: &mut DateTime<Utc>, at: DateTime<Utc>) {
    *last_modified = (*last_modified).max(at);
    *modstamp = (*modstamp).max(at);
}

/// The error for an id that names nothing.
fn not_found(object: &'static str, id: &str) -> OrgChangeError {
    OrgChangeError::NotFound {
        object,
        id: id.to_owned(),
    }
}
