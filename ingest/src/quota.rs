//! The API-quota governor: seatwatch is one of many integrations sharing an org's daily
//! API allowance, so it stops before it takes too much.
//!
//! Every data response reports the org's usage in `Sforce-Limit-Info`; `/limits` gives
//! the same figure before the first query. A sync stops when it has used more than
//! `max_run_share` of the allowance by itself, or when the org as a whole is above
//! `max_total_share`. Either way its status says "paused for quota", never success, and
//! the org waits `quota_pause_secs` before trying again.

use crate::salesforce::LimitInfo;

/// Why the governor stopped a sync.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuotaStop {
    #[error(
        "paused for quota: this sync used {calls} API calls, {percent:.1}% of the org's \
         daily allowance of {limit}, above max_run_share {max:.0}%; the next sync goes on \
         where the data stands then"
    )]
    Run {
        calls: u64,
        limit: u64,
        percent: f64,
        max: f64,
    },
    #[error(
        "paused for quota: the org has used {used} of its {limit} daily API calls \
         ({percent:.1}%), above max_total_share {max:.0}%; syncs resume when usage falls \
         (raise the allowance or the share if this org should get more)"
    )]
    Total {
        used: u64,
        limit: u64,
        percent: f64,
        max: f64,
    },
}

/// The thresholds of one ingest.
#[derive(Debug, Clone, Copy)]
pub struct QuotaGovernor {
    pub max_run_share: f64,
    pub max_total_share: f64,
}

impl QuotaGovernor {
    /// Checks usage after `calls` calls of this sync, given the latest reported usage.
    /// Without any usage report there is nothing to judge by, so the sync goes on.
    pub fn check(&self, calls: u64, usage: Option<LimitInfo>) -> Result<(), QuotaStop> {
        let Some(LimitInfo { used, limit }) = usage else {
            return Ok(());
        };
        if limit == 0 {
            return Ok(());
        }
        let total = used as f64 / limit as f64;
        if total > self.max_total_share {
            return Err(QuotaStop::Total {
                used,
                limit,
                percent: total * 100.0,
                max: self.max_total_share * 100.0,
            });
        }
        let run = calls as f64 / limit as f64;
        if run > self.max_run_share {
            return Err(QuotaStop::Run {
                calls,
                limit,
                percent: run * 100.0,
                max: self.max_run_share * 100.0,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOVERNOR: QuotaGovernor = QuotaGovernor {
        max_run_share: 0.25,
        max_total_share: 0.8,
    };

    fn usage(used: u64, limit: u64) -> Option<LimitInfo> {
        Some(LimitInfo { used, limit })
    }

    #[test]
    fn within_both_shares_goes_on() {
        assert_eq!(GOVERNOR.check(250, usage(800, 1000)), Ok(()));
        assert_eq!(GOVERNOR.check(5, None), Ok(()));
    }

    #[test]
    fn the_org_above_its_total_share_stops_the_sync() {
        let stop = GOVERNOR.check(1, usage(801, 1000)).unwrap_err();
        assert!(matches!(stop, QuotaStop::Total { used: 801, .. }));
        assert!(stop.to_string().contains("80.1%"), "{stop}");
    }

    #[test]
    fn a_run_above_its_share_stops_even_when_the_org_is_fine() {
        let stop = GOVERNOR.check(251, usage(300, 1000)).unwrap_err();
        assert!(matches!(stop, QuotaStop::Run { calls: 251, .. }));
        assert!(stop.to_string().contains("max_run_share 25%"), "{stop}");
    }
}
