//! How the simulator writes and rounds times.
//!
//! Salesforce REST JSON writes every dateTime as `YYYY-MM-DDThh:mm:ss.SSS+0000` (UTC, offset
//! without a colon) and every date as `YYYY-MM-DD`. Stored times are whole seconds, as the
//! `.000` milliseconds of real responses suggest, which also makes rows changed within the
//! same second share a SystemModstamp, the case an Id tie-break exists for. Reading SOQL
//! literals is the lexer's business, not this module's.

use chrono::{DateTime, NaiveDate, SubsecRound, Utc};

/// Writes a dateTime the way Salesforce REST responses do.
pub fn datetime(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// Writes a date the way Salesforce REST responses do.
pub fn date(day: &NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

/// Drops the fraction of a second.
pub fn whole_seconds(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(0)
}

/// The current time in whole seconds.
pub fn now() -> DateTime<Utc> {
    whole_seconds(Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn formats_match_salesforce_json() {
        let at = Utc.with_ymd_and_hms(2024, 5, 1, 12, 34, 56).unwrap();
        assert_eq!(datetime(&at), "2024-05-01T12:34:56.000+0000");
        assert_eq!(date(&at.date_naive()), "2024-05-01");
    }
}
