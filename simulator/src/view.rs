//! A read-only view of the org as SOQL sees it: rows of each object, field values by API name,
//! and lookups through relationships.
//!
//! The view is built once per query while the state lock is held; it indexes records by id and
//! derives seat counts once, so evaluating a query over every user stays cheap. It does not
//! parse or filter anything; that is the SOQL module's job.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};

use crate::org::{
    LoginHistory, Org, PackageLicense, PermissionSetLicense, PermissionSetLicenseAssign, Profile,
    SeatCounts, User, UserLicense, UserPackageLicense,
};
use crate::schema::{ObjectKind, RelDef};
use crate::sftime;

/// A field value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// No value.
    Null,
    /// Text or a picklist value.
    Text(String),
    /// An 18-character id.
    Id(String),
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A UTC date and time.
    DateTime(DateTime<Utc>),
    /// A calendar date.
    Date(NaiveDate),
}

impl Value {
    /// The value as it appears in a REST JSON record.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Text(s) | Value::Id(s) => J::String(s.clone()),
            Value::Bool(b) => J::Bool(*b),
            Value::Int(n) => J::from(*n),
            Value::DateTime(at) => J::String(sftime::datetime(at)),
            Value::Date(day) => J::String(sftime::date(day)),
        }
    }
}

/// One record of any object.
#[derive(Debug, Clone, Copy)]
pub enum Row<'a> {
    /// A UserLicense.
    UserLicense(&'a UserLicense),
    /// A Profile.
    Profile(&'a Profile),
    /// A User.
    User(&'a User),
    /// A PermissionSetLicense.
    PermissionSetLicense(&'a PermissionSetLicense),
    /// A PackageLicense.
    PackageLicense(&'a PackageLicense),
    /// A PermissionSetLicenseAssign.
    PermissionSetLicenseAssign(&'a PermissionSetLicenseAssign),
    /// A UserPackageLicense.
    UserPackageLicense(&'a UserPackageLicense),
    /// A LoginHistory row.
    LoginHistory(&'a LoginHistory),
}

impl Row<'_> {
    /// The record's id.
    pub fn id(&self) -> &str {
        match self {
            Row::UserLicense(r) => &r.id,
            Row::Profile(r) => &r.id,
            Row::User(r) => &r.id,
            Row::PermissionSetLicense(r) => &r.id,
            Row::PackageLicense(r) => &r.id,
            Row::PermissionSetLicenseAssign(r) => &r.id,
            Row::UserPackageLicense(r) => &r.id,
            Row::LoginHistory(r) => &r.id,
        }
    }
}

/// The org seen at one instant.
pub struct View<'a> {
    org: &'a Org,
    now: DateTime<Utc>,
    seats: SeatCounts,
    by_id: HashMap<&'a str, Row<'a>>,
}

impl<'a> View<'a> {
    /// Indexes the org for querying at `now`.
    pub fn new(org: &'a Org, now: DateTime<Utc>) -> Self {
        let mut by_id = HashMap::new();
        for r in &org.user_licenses {
            by_id.insert(r.id.as_str(), Row::UserLicense(r));
        }
        for r in &org.profiles {
            by_id.insert(r.id.as_str(), Row::Profile(r));
        }
        for r in &org.users {
            by_id.insert(r.id.as_str(), Row::User(r));
        }
        for r in &org.permission_set_licenses {
            by_id.insert(r.id.as_str(), Row::PermissionSetLicense(r));
        }
        Self {
            org,
            now,
            seats: org.seat_counts(),
            by_id,
        }
    }

    /// Every row of an object, in storage order.
    pub fn rows(&self, kind: ObjectKind) -> Vec<Row<'a>> {
        let org = self.org;
        match kind {
            ObjectKind::UserLicense => org.user_licenses.iter().map(Row::UserLicense).collect(),
            ObjectKind::Profile => org.profiles.iter().map(Row::Profile).collect(),
            ObjectKind::User => org.users.iter().map(Row::User).collect(),
            ObjectKind::PermissionSetLicense => org
                .permission_set_licenses
                .iter()
                .map(Row::PermissionSetLicense)
                .collect(),
            ObjectKind::PackageLicense => org
                .package_licenses
                .iter()
                .map(Row::PackageLicense)
                .collect(),
            ObjectKind::PermissionSetLicenseAssign => org
                .permission_set_license_assignments
                .iter()
                .map(Row::PermissionSetLicenseAssign)
                .collect(),
            ObjectKind::UserPackageLicense => org
                .user_package_licenses
                .iter()
                .map(Row::UserPackageLicense)
                .collect(),
            ObjectKind::LoginHistory => org.login_history.iter().map(Row::LoginHistory).collect(),
        }
    }

    /// The record a relationship of `row` points at, if any.
    pub fn follow(&self, row: Row<'a>, rel: &RelDef) -> Option<Row<'a>> {
        let Value::Id(id) = self.value(row, rel.id_field) else {
            return None;
        };
        self.by_id.get(id.as_str()).copied()
    }

    /// The value of a field, by canonical API name; unknown names read as null.
    pub fn value(&self, row: Row<'a>, field: &str) -> Value {
        match row {
            Row::UserLicense(r) => self.user_license(r, field),
            Row::Profile(r) => profile(r, field),
            Row::User(r) => user(r, field),
            Row::PermissionSetLicense(r) => self.permission_set_license(r, field),
            Row::PackageLicense(r) => self.package_license(r, field),
            Row::PermissionSetLicenseAssign(r) => psl_assign(r, field),
            Row::UserPackageLicense(r) => user_package(r, field),
            Row::LoginHistory(r) => login(r, field),
        }
    }

    fn user_license(&self, r: &UserLicense, field: &str) -> Value {
        match field {
            "Id" => id(&r.id),
            "LicenseDefinitionKey" => text(&r.license_definition_key),
            "Name" => text(&r.name),
            "MasterLabel" => text(&r.master_label),
            "Status" => text(r.status.as_str()),
            "TotalLicenses" => Value::Int(r.total_licenses),
            "UsedLicenses" => Value::Int(self.seats.user_license(&r.id)),
            // The count is computed on every read, so it is always as of now.
            "UsedLicensesLastUpdated" => Value::DateTime(self.now),
            "MonthlyLoginsEntitlement" => opt_int(r.monthly_logins_entitlement),
            "MonthlyLoginsUsed" => opt_int(r.monthly_logins_used),
            _ => audit(
                field,
                r.created_date,
                r.last_modified_date,
                r.system_modstamp,
            ),
        }
    }

    fn permission_set_license(&self, r: &PermissionSetLicense, field: &str) -> Value {
        match field {
            "Id" => id(&r.id),
            "DeveloperName" => text(&r.developer_name),
            "MasterLabel" => text(&r.master_label),
            "PermissionSetLicenseKey" => text(&r.permission_set_license_key),
            "Status" => text(r.status.as_str()),
            "TotalLicenses" => Value::Int(r.total_licenses),
            "UsedLicenses" => Value::Int(self.seats.permission_set_license(&r.id)),
            "ExpirationDate" => r.expiration_date.map_or(Value::Null, Value::Date),
            "IsAvailableForIntegrations" => Value::Bool(r.is_available_for_integrations),
            _ => audit(
                field,
                r.created_date,
                r.last_modified_date,
                r.system_modstamp,
            ),
        }
    }

    fn package_license(&self, r: &PackageLicense, field: &str) -> Value {
        match field {
            "Id" => id(&r.id),
            "NamespacePrefix" => text(&r.namespace_prefix),
            "AllowedLicenses" => Value::Int(r.allowed_licenses),
            "UsedLicenses" => Value::Int(self.seats.package_license(&r.id)),
            "Status" => text(r.status.as_str()),
            "ExpirationDate" => r.expiration_date.map_or(Value::Null, Value::DateTime),
            "IsProvisioned" => Value::Bool(r.is_provisioned),
            "IsAvailableForIntegrations" => Value::Bool(r.is_available_for_integrations),
            _ => audit(
                field,
                r.created_date,
                r.last_modified_date,
                r.system_modstamp,
            ),
        }
    }
}

fn profile(r: &Profile, field: &str) -> Value {
    match field {
        "Id" => id(&r.id),
        "Name" => text(&r.name),
        "UserLicenseId" => id(&r.user_license_id),
        _ => Value::Null,
    }
}

fn user(r: &User, field: &str) -> Value {
    match field {
        "Id" => id(&r.id),
        "Username" => text(&r.username),
        "Name" => text(&r.name),
        "Email" => text(&r.email),
        "IsActive" => Value::Bool(r.is_active),
        "UserType" => text(&r.user_type),
        "LastLoginDate" => r.last_login_date.map_or(Value::Null, Value::DateTime),
        "ProfileId" => id(&r.profile_id),
        "ManagerId" => r.manager_id.as_deref().map_or(Value::Null, id),
        _ => audit(
            field,
            r.created_date,
            r.last_modified_date,
            r.system_modstamp,
        ),
    }
}

fn psl_assign(r: &PermissionSetLicenseAssign, field: &str) -> Value {
    match field {
        "Id" => id(&r.id),
        "AssigneeId" => id(&r.assignee_id),
        "PermissionSetLicenseId" => id(&r.permission_set_license_id),
        "IsRevoked" => Value::Bool(r.is_revoked),
        _ => audit(
            field,
            r.created_date,
            r.last_modified_date,
            r.system_modstamp,
        ),
    }
}

fn user_package(r: &UserPackageLicense, field: &str) -> Value {
    match field {
        "Id" => id(&r.id),
        "UserId" => id(&r.user_id),
        "PackageLicenseId" => id(&r.package_license_id),
        "IsRevoked" => Value::Bool(r.is_revoked),
        _ => audit(
            field,
            r.created_date,
            r.last_modified_date,
            r.system_modstamp,
        ),
    }
}

fn login(r: &LoginHistory, field: &str) -> Value {
    let opt = |v: &Option<String>| v.as_deref().map_or(Value::Null, text);
    match field {
        "Id" => id(&r.id),
        "UserId" => id(&r.user_id),
        "LoginTime" => Value::DateTime(r.login_time),
        "Status" => text(&r.status),
        "Application" => text(&r.application),
        "LoginType" => text(&r.login_type),
        "LoginSubType" => opt(&r.login_sub_type),
        "LoginUrl" => opt(&r.login_url),
        "SourceIp" => text(&r.source_ip),
        "Browser" => text(&r.browser),
        "Platform" => text(&r.platform),
        "ApiType" => opt(&r.api_type),
        "ApiVersion" => opt(&r.api_version),
        "CountryIso" => opt(&r.country_iso),
        _ => Value::Null,
    }
}

/// The audit fields every object but Profile and LoginHistory shares.
fn audit(
    field: &str,
    created: DateTime<Utc>,
    modified: DateTime<Utc>,
    modstamp: DateTime<Utc>,
) -> Value {
    match field {
        "CreatedDate" => Value::DateTime(created),
        "LastModifiedDate" => Value::DateTime(modified),
        "SystemModstamp" => Value::DateTime(modstamp),
        _ => Value::Null,
    }
}

fn id(s: &str) -> Value {
    Value::Id(s.to_owned())
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn opt_int(n: Option<i64>) -> Value {
    n.map_or(Value::Null, Value::Int)
}
