//! `seatwatch ingest check`: sign in to every org and read one row of every object, then
//! say, for each failure, the likely cause and the fix.
//!
//! It is the first thing to run against a new org: it costs one sign-in and one API call
//! per object, emits nothing to Kafka and needs no broker.

use std::fmt::Write;

use seatwatch_schemas::SfObject;

use crate::salesforce::{SalesforceClient, SalesforceError};
use crate::sync::is_permission_refusal;
use crate::{build_clients, IngestConfig, IngestError};

/// What the check found for one org.
#[derive(Debug)]
pub struct OrgCheck {
    pub org: String,
    /// The org id and instance URL, or why sign-in failed.
    pub sign_in: Result<(String, String), SalesforceError>,
    /// Each object and whether the integration user can read it.
    pub objects: Vec<(SfObject, Result<(), SalesforceError>)>,
}

impl OrgCheck {
    /// Signed in and every object readable.
    pub fn passed(&self) -> bool {
        self.sign_in.is_ok() && self.objects.iter().all(|(_, r)| r.is_ok())
    }
}

/// Checks every configured org.
pub async fn check(config: &IngestConfig) -> Result<Vec<OrgCheck>, IngestError> {
    config.validate().map_err(IngestError::Config)?;
    let mut results = Vec::new();
    for (mut client, org) in build_clients(config)?.into_iter().zip(&config.orgs) {
        let login_history = config.login_history_for(org);
        results.push(check_org(&mut client, login_history).await);
    }
    Ok(results)
}

/// Signs in and reads one row of every object, `LoginHistory` too when it is enabled.
async fn check_org(client: &mut SalesforceClient, login_history: bool) -> OrgCheck {
    let org = client.org_name().to_owned();
    let sign_in = match client.sign_in().await {
        Ok(session) => Ok((session.org_id.clone(), session.instance_url.to_string())),
        Err(e) => Err(e),
    };
    let mut objects = Vec::new();
    if sign_in.is_ok() {
        let optional = login_history.then_some(SfObject::LoginHistory);
        for object in SfObject::ALL.into_iter().chain(optional) {
            let soql = format!("SELECT Id FROM {object} LIMIT 1");
            objects.push((object, client.query_all(&soql).await.map(|_| ())));
        }
    }
    OrgCheck {
        org,
        sign_in,
        objects,
    }
}

/// The permission the integration user needs to read `object`.
fn permission_for(object: SfObject) -> &'static str {
    match object {
        SfObject::UserLicense | SfObject::PermissionSetLicense | SfObject::PackageLicense => {
            "the 'View Setup and Configuration' permission"
        }
        SfObject::PermissionSetLicenseAssign => {
            "'View Setup and Configuration' or 'Assign Permission Sets'"
        }
        SfObject::UserPackageLicense => "'View Setup and Configuration' (package seat assignments)",
        SfObject::User => "API access to Users ('API Enabled' on the profile)",
        SfObject::LoginHistory => {
            "'Manage Users' or 'Monitor Login History' (or set login_history = false)"
        }
    }
}

/// A refused sign-in as what Salesforce said, the likely cause and the fix.
fn render_sign_in_failure(out: &mut String, org: &str, error: &SalesforceError) {
    match (error, error.advice()) {
        (SalesforceError::Auth { error, description }, Some(advice)) => {
            let _ = writeln!(out, "org {org}: sign-in FAILED: {error} ({description})");
            let _ = writeln!(out, "  likely cause: {}", advice.cause);
            let _ = writeln!(out, "  fix: {}", advice.fix);
        }
        _ => {
            let _ = writeln!(out, "org {org}: sign-in FAILED\n  {error}");
        }
    }
}

/// Renders the findings as a short report with a fix per failure.
pub fn render(checks: &[OrgCheck]) -> String {
    let mut out = String::new();
    for check in checks {
        match &check.sign_in {
            Ok((org_id, instance)) => {
                let _ = writeln!(
                    out,
                    "org {}: signed in to {org_id} at {instance}",
                    check.org
                );
            }
            Err(e) => {
                render_sign_in_failure(&mut out, &check.org, e);
                continue;
            }
        }
        for (object, result) in &check.objects {
            match result {
                Ok(()) => {
                    let _ = writeln!(out, "  {:<28} readable", object.as_str());
                }
                Err(e @ SalesforceError::Refused { code, .. }) if is_permission_refusal(e) => {
                    let _ = writeln!(
                        out,
                        "  {:<28} NOT readable ({code}): the integration user cannot see \
                         {object}; grant {}",
                        object.as_str(),
                        permission_for(*object)
                    );
                }
                Err(e) => {
                    let _ = writeln!(out, "  {:<28} NOT readable: {e}", object.as_str());
                }
            }
        }
    }
    let failed = checks.iter().filter(|c| !c.passed()).count();
    let _ = match failed {
        0 => writeln!(out, "all {} org(s) readable", checks.len()),
        n => writeln!(out, "{n} of {} org(s) need attention", checks.len()),
    };
    out
}
