//! Typed views of the Salesforce records seatwatch reads, and Salesforce's datetimes.
//!
//! Salesforce writes datetimes as `2024-05-01T12:34:56.000+0000`: RFC 3339 but for the
//! offset, which has no colon, so `DateTime::parse_from_rfc3339` rejects them. Dates are
//! plain `2026-12-31`. Every field that Salesforce may return as `null` is an `Option`;
//! fields seatwatch cannot work without are required, so a record missing one is
//! rejected with serde's message naming the field. Unknown fields (`attributes`, fields a
//! later API version adds) are ignored.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Deserializer};

/// Parses a Salesforce datetime (`2024-05-01T12:34:56.000+0000`; also accepts `+00:00`
/// and `Z`).
///
/// Salesforce's own form is RFC 3339 but for the colon in the offset; with the colon put
/// back, chrono's RFC 3339 parser reads it several times faster than a format string
/// (every user record carries a few datetimes). Anything else takes the general path.
pub fn parse_datetime(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    if let Some(parsed) = with_offset_colon(text, DateTime::parse_from_rfc3339) {
        return Ok(parsed.with_timezone(&Utc));
    }
    DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(text))
        .map(|dt| dt.with_timezone(&Utc))
}

/// Runs `parse` on `text` with a colon put into its trailing `±hhmm` offset, if it has
/// one, without allocating; `None` when it has none or `parse` refuses the result.
fn with_offset_colon<T, E>(text: &str, parse: impl Fn(&str) -> Result<T, E>) -> Option<T> {
    const MAX: usize = 40;
    let bytes = text.as_bytes();
    let len = bytes.len();
    if !(6..MAX).contains(&len) {
        return None;
    }
    let (head, offset) = bytes.split_at(len - 5);
    if !matches!(offset[0], b'+' | b'-') || !offset[1..].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut buffer = [0u8; MAX];
    buffer[..head.len()].copy_from_slice(head);
    buffer[head.len()..head.len() + 3].copy_from_slice(&offset[..3]);
    buffer[head.len() + 3] = b':';
    buffer[head.len() + 4..=len].copy_from_slice(&offset[3..]);
    let with_colon = std::str::from_utf8(&buffer[..=len]).ok()?;
    parse(with_colon).ok()
}

/// Parses a Salesforce date (`2026-12-31`).
pub fn parse_date(text: &str) -> Result<NaiveDate, chrono::ParseError> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
}

/// Formats a datetime the way Salesforce writes it in responses.
pub fn format_datetime(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// Formats a datetime as a SOQL literal. `Z` rather than `+0000`, so no `+` can be
/// mistaken for a space in a URL.
pub fn format_soql_datetime(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Midnight UTC of a date, for fields that hold dates where seat state holds instants.
pub fn date_to_millis(date: NaiveDate) -> i64 {
    date.and_time(NaiveTime::MIN).and_utc().timestamp_millis()
}

fn opt_datetime<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    Option::<&str>::deserialize(d)?
        .map(|s| parse_datetime(s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}"))))
        .transpose()
}

fn req_datetime<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    // Owned, so that records read from a `serde_json::Value` parse too.
    let s = String::deserialize(d)?;
    parse_datetime(&s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
}

fn opt_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NaiveDate>, D::Error> {
    Option::<&str>::deserialize(d)?
        .map(|s| parse_date(s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}"))))
        .transpose()
}

/// Just the id of any record, for keys.
#[derive(Debug, Deserialize)]
pub struct RecordId<'a> {
    #[serde(rename = "Id", borrow)]
    pub id: std::borrow::Cow<'a, str>,
}

/// A `UserLicense` row: one pool of user licences.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserLicenseRecord {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub master_label: Option<String>,
    #[serde(default)]
    pub license_definition_key: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    pub total_licenses: i64,
    pub used_licenses: i64,
}

/// A `PermissionSetLicense` row.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PermissionSetLicenseRecord {
    pub id: String,
    pub developer_name: String,
    #[serde(default)]
    pub master_label: Option<String>,
    #[serde(default)]
    pub permission_set_license_key: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    pub total_licenses: i64,
    pub used_licenses: i64,
    #[serde(default, deserialize_with = "opt_date")]
    pub expiration_date: Option<NaiveDate>,
}

/// A `PackageLicense` row. `AllowedLicenses = -1` is a site licence (unlimited).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PackageLicenseRecord {
    pub id: String,
    pub namespace_prefix: String,
    pub allowed_licenses: i64,
    pub used_licenses: i64,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "opt_datetime")]
    pub expiration_date: Option<DateTime<Utc>>,
}

/// A `PermissionSetLicenseAssign` row: one user holding one permission-set licence.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PermissionSetLicenseAssignRecord {
    pub id: String,
    pub assignee_id: String,
    pub permission_set_license_id: String,
    #[serde(default)]
    pub is_revoked: Option<bool>,
}

/// A `UserPackageLicense` row: one user holding one package seat.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserPackageLicenseRecord {
    pub id: String,
    pub user_id: String,
    pub package_license_id: String,
    #[serde(default)]
    pub is_revoked: Option<bool>,
}

/// A `User` row with its profile's user licence.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserRecord {
    pub id: String,
    pub username: String,
    pub is_active: bool,
    #[serde(default)]
    pub user_type: Option<String>,
    #[serde(default, deserialize_with = "opt_datetime")]
    pub last_login_date: Option<DateTime<Utc>>,
    #[serde(default)]
    pub profile: Option<ProfileRef>,
}

/// A `LoginHistory` row: one login attempt, successful or not. Only the fields seatwatch
/// uses are typed; the raw record on `salesforce.usage.raw` keeps all of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LoginHistoryRecord {
    pub id: String,
    pub user_id: String,
    #[serde(deserialize_with = "req_datetime")]
    pub login_time: DateTime<Utc>,
    /// `Success`, or the failure reason (`Invalid Password`, ...).
    pub status: String,
    #[serde(default)]
    pub application: Option<String>,
    /// `Application`, `Remote Access 2.0`, `Other Apex API`, ...
    #[serde(default)]
    pub login_type: Option<String>,
    #[serde(default)]
    pub login_sub_type: Option<String>,
    #[serde(default)]
    pub login_url: Option<String>,
    #[serde(default)]
    pub source_ip: Option<String>,
}

impl LoginHistoryRecord {
    /// The `Status` Salesforce writes for a successful login.
    pub const SUCCESS: &'static str = "Success";

    /// Whether the login succeeded.
    pub fn succeeded(&self) -> bool {
        self.status == Self::SUCCESS
    }
}

/// `User.Profile`, as nested in a query result.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProfileRef {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub user_license_id: Option<String>,
    #[serde(default)]
    pub user_license: Option<UserLicenseRef>,
}

/// `User.Profile.UserLicense`, as nested in a query result.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserLicenseRef {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub license_definition_key: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salesforce_datetimes_without_offset_colon_parse() {
        let at = parse_datetime("2024-05-01T12:34:56.000+0000").unwrap();
        assert_eq!(at.timestamp_millis(), 1_714_566_896_000);
        assert_eq!(
            parse_datetime("2024-05-01T14:34:56.123+0200")
                .unwrap()
                .timestamp(),
            at.timestamp()
        );
        assert_eq!(parse_datetime("2024-05-01T12:34:56Z").unwrap(), at);
        assert!(parse_datetime("2024-05-01 12:34:56").is_err());
        assert_eq!(format_datetime(at), "2024-05-01T12:34:56.000+0000");
        assert_eq!(format_soql_datetime(at), "2024-05-01T12:34:56.000Z");
    }

    #[test]
    fn the_fast_path_reads_what_the_format_string_reads() {
        let format = "%Y-%m-%dT%H:%M:%S%.f%z";
        for text in [
            "2024-05-01T12:34:56.000+0000",
            "1999-12-31T23:59:59.999-1130",
            "2024-02-29T00:00:00+0530",
            "2024-05-01T12:34:56.123456789+0000",
            "2023-02-29T00:00:00.000+0000",
            "2024-05-01T25:00:00.000+0000",
            "2024-05-01T12:34:56.000+00000",
            "2024-05-01T12:34:56.000+99x9",
            "+0000",
        ] {
            let expected = DateTime::parse_from_str(text, format).map(|dt| dt.to_utc());
            let fast = with_offset_colon(text, DateTime::parse_from_rfc3339).map(|d| d.to_utc());
            match expected {
                Ok(at) => assert_eq!(fast, Some(at), "{text}"),
                Err(_) => assert_eq!(fast, None, "{text}"),
            }
            assert_eq!(parse_datetime(text).ok(), expected.ok(), "{text}");
        }
    }

    #[test]
    fn dates_parse_and_nulls_are_fine() {
        let psl: PermissionSetLicenseRecord = serde_json::from_str(
            r#"{"Id":"0PL1","DeveloperName":"X","TotalLicenses":10,"UsedLicenses":10,
                "ExpirationDate":"2026-12-31","MasterLabel":null,"Status":null}"#,
        )
        .unwrap();
        assert_eq!(
            psl.expiration_date,
            Some(NaiveDate::from_ymd_opt(2026, 12, 31).unwrap())
        );
        let user: UserRecord = serde_json::from_str(
            r#"{"Id":"005","Username":"u@x.example","IsActive":true,"LastLoginDate":null,
                "Profile":null,"Manager":null}"#,
        )
        .unwrap();
        assert!(user.last_login_date.is_none() && user.profile.is_none());
    }

    #[test]
    fn missing_required_field_is_named() {
        let err = serde_json::from_str::<UserLicenseRecord>(r#"{"Id":"100","Name":"S"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("TotalLicenses"), "{err}");
    }

    #[test]
    fn login_history_fixture_parses() {
        let page: serde_json::Value = serde_json::from_str(include_str!(
            "../../fixtures/salesforce/query_loginhistory.json"
        ))
        .unwrap();
        let records: Vec<LoginHistoryRecord> =
            serde_json::from_value(page["body"]["records"].clone()).unwrap();
        assert_eq!(records.len(), 4);
        assert_eq!(records[0].id, "0Ya5g0000000001CAA");
        assert_eq!(records[0].user_id, "0055g00000AbCdEAAV");
        assert_eq!(records[0].login_time.timestamp_millis(), 1_714_566_895_000);
        assert!(records[0].succeeded());
        assert_eq!(records[0].login_type.as_deref(), Some("Remote Access 2.0"));
        assert_eq!(records[2].status, "Invalid Password");
        assert!(!records[2].succeeded());
        assert!(!records[3].succeeded());
        let err = serde_json::from_str::<LoginHistoryRecord>(
            r#"{"Id":"0Ya1","UserId":"005","Status":"Success","LoginTime":null}"#,
        );
        assert!(err.is_err(), "LoginTime is required");
    }

    #[test]
    fn bad_datetime_is_an_error() {
        let err = serde_json::from_str::<UserRecord>(
            r#"{"Id":"005","Username":"u","IsActive":true,"LastLoginDate":"yesterday"}"#,
        );
        assert!(err.is_err());
    }
}
