//! Turning typed Salesforce records into seat state.
//!
//! Pure functions, one per licence object plus one for users, mapping Salesforce's field
//! names and quirks (site licences as `AllowedLicenses = -1`, dates where seat state holds
//! instants, a null `UserType`) onto the published Avro records. Everything time-like comes
//! from the event itself, never the clock, so re-processing an event yields the same bytes.
//! Which records exist, and what a user holds, is the processor's business.

use seatwatch_schemas::salesforce::{
    date_to_millis, PackageLicenseRecord, PermissionSetLicenseRecord, UserLicenseRecord, UserRecord,
};
use seatwatch_schemas::{LicenseKind, LicenseState, LicenseStatus, UserState};

use crate::dlq::{ErrorClass, Rejection};

/// `PackageLicense.AllowedLicenses` of a site licence: every user may hold a seat.
const SITE_LICENSE: i64 = -1;

/// Where and when a record was fetched, copied into every state built from it.
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    pub org_id: &'a str,
    pub sync_id: &'a str,
    /// `fetched_at` of the envelope, in milliseconds since the epoch.
    pub at_ms: i64,
}

/// The seats of one pool, before the derived figures are added.
struct Seats {
    total: Option<i64>,
    used: i64,
}

impl Seats {
    /// `total - used`, negative when over-assigned; unknown when the pool is unlimited.
    fn available(&self) -> Option<i64> {
        self.total.map(|total| total - self.used)
    }

    /// `used / total`; unknown when the pool is unlimited or empty.
    fn utilization(&self) -> Option<f64> {
        self.total
            .filter(|total| *total != 0)
            .map(|total| self.used as f64 / total as f64)
    }
}

/// The identity and labels of a licence pool, before its seats are added.
struct Pool<'a> {
    kind: LicenseKind,
    id: &'a str,
    name: &'a str,
    label: &'a str,
    definition_key: Option<&'a str>,
    status: Option<&'a str>,
    expires_at: Option<i64>,
}

fn license_state(observed: Observed<'_>, pool: Pool<'_>, seats: Seats) -> LicenseState {
    LicenseState {
        org_id: observed.org_id.to_owned(),
        kind: pool.kind,
        license_id: pool.id.to_owned(),
        name: pool.name.to_owned(),
        label: pool.label.to_owned(),
        definition_key: pool.definition_key.map(str::to_owned),
        status: LicenseStatus::from_salesforce(pool.status),
        total: seats.total,
        used: seats.used,
        available: seats.available(),
        utilization: seats.utilization(),
        expires_at: pool.expires_at,
        observed_at: observed.at_ms,
        sync_id: observed.sync_id.to_owned(),
    }
}

/// A `UserLicense`: the pool of user licences one profile type draws from.
pub fn user_license(observed: Observed<'_>, record: &UserLicenseRecord) -> LicenseState {
    let pool = Pool {
        kind: LicenseKind::User,
        id: &record.id,
        name: &record.name,
        label: record.master_label.as_deref().unwrap_or(&record.name),
        definition_key: record.license_definition_key.as_deref(),
        status: record.status.as_deref(),
        expires_at: None,
    };
    let seats = Seats {
        total: Some(record.total_licenses),
        used: record.used_licenses,
    };
    license_state(observed, pool, seats)
}

/// A `PermissionSetLicense`; its expiration date is taken as midnight UTC.
pub fn permission_set_license(
    observed: Observed<'_>,
    record: &PermissionSetLicenseRecord,
) -> LicenseState {
    let pool = Pool {
        kind: LicenseKind::PermissionSet,
        id: &record.id,
        name: &record.developer_name,
        label: record
            .master_label
            .as_deref()
            .unwrap_or(&record.developer_name),
        definition_key: record.permission_set_license_key.as_deref(),
        status: record.status.as_deref(),
        expires_at: record.expiration_date.map(date_to_millis),
    };
    let seats = Seats {
        total: Some(record.total_licenses),
        used: record.used_licenses,
    };
    license_state(observed, pool, seats)
}

/// A `PackageLicense`; a site licence has no total. Any other negative allowance is not
/// something Salesforce sends, so it is rejected rather than guessed at.
pub fn package_license(
    observed: Observed<'_>,
    record: &PackageLicenseRecord,
) -> Result<LicenseState, Rejection> {
    let total = match record.allowed_licenses {
        SITE_LICENSE => None,
        allowed if allowed >= 0 => Some(allowed),
        allowed => {
            let message = format!(
                "PackageLicense record: field AllowedLicenses is {allowed}, expected -1 (a site \
                 licence) or a seat count"
            );
            return Err(Rejection::new(ErrorClass::InvalidRecord, message));
        }
    };
    let pool = Pool {
        kind: LicenseKind::Package,
        id: &record.id,
        name: &record.namespace_prefix,
        label: &record.namespace_prefix,
        definition_key: None,
        status: record.status.as_deref(),
        expires_at: record.expiration_date.map(|at| at.timestamp_millis()),
    };
    let seats = Seats {
        total,
        used: record.used_licenses,
    };
    Ok(license_state(observed, pool, seats))
}

/// A user as Salesforce describes them, with the licences they hold (sorted ids). The
/// record is taken by value: its strings move into the state instead of being copied.
pub fn user_state(
    observed: Observed<'_>,
    record: UserRecord,
    permission_set_licenses: Vec<String>,
    package_licenses: Vec<String>,
) -> UserState {
    let (profile_name, user_license_id, license) = match record.profile {
        Some(profile) => (profile.name, profile.user_license_id, profile.user_license),
        None => (None, None, None),
    };
    let (user_license, license_definition_key) = match license {
        Some(license) => (license.name, license.license_definition_key),
        None => (None, None),
    };
    UserState {
        org_id: observed.org_id.to_owned(),
        user_id: record.id,
        username: record.username,
        active: record.is_active,
        user_type: record.user_type.unwrap_or_else(|| "Standard".to_owned()),
        profile_name,
        user_license_id,
        user_license,
        license_definition_key,
        last_login_at: record.last_login_date.map(|at| at.timestamp_millis()),
        // LoginHistory's business: the processor fills it in.
        last_activity_at: None,
        permission_set_licenses,
        package_licenses,
        observed_at: observed.at_ms,
        sync_id: observed.sync_id.to_owned(),
    }
}
