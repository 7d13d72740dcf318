//! Reclaim recommendations, the subscription optimizer's feed, priced from the config.
//!
//! Two kinds, both [`RecommendationAction::Reclaim`]:
//!
//! - an idle seat: an active user holding a user licence with no login for the pool's
//!   `idle_days` (or never), keyed `org/user/user-licence-id`;
//! - an orphaned assignment: an inactive user still holding a permission-set or package
//!   licence, keyed `org/user/licence-id`. Deactivating a user frees the user licence but
//!   not these.
//!
//! [`desired`] computes the full set from seat state; [`Published`] mirrors the compacted
//! `seats.recommendations` topic and [`Published::changes`] says what to write so the topic
//! matches: a new or changed recommendation, or a tombstone for one that no longer holds
//! (the user logged in again, was deactivated, or lost the licence). `observed_at` alone
//! changing is not a change, so a quiet org writes nothing.

use std::collections::BTreeMap;

use seatwatch_schemas::{
    LicenseKind, Recommendation, RecommendationAction, RecommendationEvidence, UserState,
};

use crate::config::PriceTable;
use crate::rule_config::RulesConfig;
use crate::rules::{holds_a_seat, is_idle, DAY_MS};
use crate::state::{OrgState, SeatState};

/// Every recommendation that holds for `state` at `now_ms`, by key.
pub fn desired(
    state: &SeatState,
    now_ms: i64,
    rules: &RulesConfig,
    prices: &PriceTable,
) -> BTreeMap<String, Recommendation> {
    let mut out = BTreeMap::new();
    for (org_id, org) in state.orgs() {
        for user in org.users.values() {
            let found = if holds_a_seat(user) {
                idle_seat(org_id, user, now_ms, rules, prices)
                    .into_iter()
                    .collect()
            } else if !user.active {
                orphaned_assignments(org, user, prices)
            } else {
                Vec::new()
            };
            out.extend(found.into_iter().map(|rec| (rec.key(), rec)));
        }
    }
    out
}

fn idle_seat(
    org_id: &str,
    user: &UserState,
    now_ms: i64,
    rules: &RulesConfig,
    prices: &PriceTable,
) -> Option<Recommendation> {
    let license_name = user.user_license.as_deref()?;
    let license_id = user.user_license_id.as_deref()?;
    let rule = &rules.for_pool(org_id, license_name).idle_seats;
    if !rule.enabled || !is_idle(user, now_ms, rule.idle_days) {
        return None;
    }
    // Days since the user was last seen: LoginHistory activity counts as much as
    // LastLoginDate.
    let days_idle = user
        .last_seen_at()
        .map(|login| i32::try_from((now_ms - login) / DAY_MS).unwrap_or(i32::MAX));
    let reason = match days_idle {
        Some(days) => format!(
            "{} has not logged in for {days} days; reclaim the {license_name} seat",
            user.username
        ),
        None => format!(
            "{} has never logged in; reclaim the {license_name} seat",
            user.username
        ),
    };
    // Twice the idle period, or never: hardly anyone still needs that seat.
    let long_idle = days_idle.is_none_or(|days| days >= 2 * rule.idle_days as i32);
    Some(Recommendation {
        org_id: org_id.to_owned(),
        user_id: Some(user.user_id.clone()),
        username: Some(user.username.clone()),
        license_kind: LicenseKind::User,
        license_id: license_id.to_owned(),
        license_name: license_name.to_owned(),
        action: RecommendationAction::Reclaim,
        evidence: evidence(user, days_idle, reason),
        estimated_monthly_saving: prices.monthly(license_name),
        currency: prices.currency.clone(),
        confidence: if long_idle { 0.9 } else { 0.7 },
        observed_at: user.observed_at,
    })
}

fn orphaned_assignments(
    org: &OrgState,
    user: &UserState,
    prices: &PriceTable,
) -> Vec<Recommendation> {
    let held = user
        .permission_set_licenses
        .iter()
        .map(|id| (LicenseKind::PermissionSet, id))
        .chain(
            user.package_licenses
                .iter()
                .map(|id| (LicenseKind::Package, id)),
        );
    held.map(|(kind, license_id)| {
        let license_name = license_name(org, kind, license_id);
        let reason = format!(
            "{} is inactive but still holds a {license_name} licence; remove the assignment",
            user.username
        );
        Recommendation {
            org_id: user.org_id.clone(),
            user_id: Some(user.user_id.clone()),
            username: Some(user.username.clone()),
            license_kind: kind,
            license_id: license_id.clone(),
            license_name: license_name.clone(),
            action: RecommendationAction::Reclaim,
            evidence: evidence(user, None, reason),
            estimated_monthly_saving: prices.monthly(&license_name),
            currency: prices.currency.clone(),
            // An inactive user cannot use the licence at all.
            confidence: 1.0,
            observed_at: user.observed_at,
        }
    })
    .collect()
}

/// The API name of a licence by kind and id, or the id when its state is not known yet.
fn license_name(org: &OrgState, kind: LicenseKind, license_id: &str) -> String {
    org.licenses
        .values()
        .find(|license| license.kind == kind && license.license_id == license_id)
        .map(|license| license.name.clone())
        .unwrap_or_else(|| license_id.to_owned())
}

fn evidence(user: &UserState, days_idle: Option<i32>, reason: String) -> RecommendationEvidence {
    let mut assignments: Vec<String> = user
        .user_license_id
        .iter()
        .chain(&user.permission_set_licenses)
        .chain(&user.package_licenses)
        .cloned()
        .collect();
    assignments.sort();
    RecommendationEvidence {
        last_login_at: user.last_login_at,
        days_idle,
        active: user.active,
        assignments,
        reason,
    }
}

/// Monthly savings per org and pool, and the currency, for alert text and metrics.
pub fn savings_by_pool(
    recommendations: &BTreeMap<String, Recommendation>,
) -> BTreeMap<(String, String), f64> {
    let mut totals = BTreeMap::new();
    for rec in recommendations.values() {
        if let Some(saving) = rec.estimated_monthly_saving {
            *totals
                .entry((rec.org_id.clone(), rec.license_name.clone()))
                .or_insert(0.0) += saving;
        }
    }
    totals
}

/// The recommendations in the topic, as far as this instance has read or written them.
#[derive(Debug, Default)]
pub struct Published {
    by_key: BTreeMap<String, Recommendation>,
}

/// One record to write: a recommendation, or a tombstone for its key.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    Put(Box<Recommendation>),
    Withdraw { key: String, org_id: String },
}

impl Published {
    pub fn clear(&mut self) {
        self.by_key.clear();
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    pub fn all(&self) -> &BTreeMap<String, Recommendation> {
        &self.by_key
    }

    /// Applies a record read back from (or acknowledged by) the topic.
    pub fn apply(&mut self, key: &str, value: Option<Recommendation>) {
        match value {
            Some(rec) => self.by_key.insert(key.to_owned(), rec),
            None => self.by_key.remove(key),
        };
    }

    /// What to write so that the topic holds exactly `desired` for the orgs in
    /// `evaluated`; those of other orgs (held while stale) stay as they are.
    pub fn changes<'a>(
        &self,
        desired: &BTreeMap<String, Recommendation>,
        evaluated: impl Fn(&str) -> bool + 'a,
    ) -> Vec<Change> {
        let puts = desired
            .iter()
            .filter(|(_, rec)| evaluated(&rec.org_id))
            .filter(|(key, rec)| {
                self.by_key
                    .get(*key)
                    .is_none_or(|known| !same_advice(known, rec))
            })
            .map(|(_, rec)| Change::Put(Box::new(rec.clone())));
        let withdrawals = self
            .by_key
            .iter()
            .filter(|(key, rec)| evaluated(&rec.org_id) && !desired.contains_key(*key))
            .map(|(key, rec)| Change::Withdraw {
                key: key.clone(),
                org_id: rec.org_id.clone(),
            });
        puts.chain(withdrawals).collect()
    }
}

/// Equal apart from when the data was seen.
fn same_advice(a: &Recommendation, b: &Recommendation) -> bool {
    Recommendation {
        observed_at: 0,
        ..a.clone()
    } == Recommendation {
        observed_at: 0,
        ..b.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::tests::{license, state_with, user, NOW, ORG};

    fn prices() -> PriceTable {
        PriceTable {
            currency: "EUR".into(),
            monthly: BTreeMap::from([
                ("Salesforce".into(), 150.0),
                ("Sales Cloud PSL".into(), 40.0),
            ]),
        }
    }

    fn with_license_id(mut user: UserState) -> UserState {
        user.user_license_id = Some("100Salesforce".into());
        user
    }

    #[test]
    fn idle_active_users_get_a_priced_reclaim_with_evidence() {
        let idle = with_license_id(user("005A", "Salesforce", Some(120)));
        let never = with_license_id(user("005B", "Salesforce", None));
        let recent = with_license_id(user("005C", "Salesforce", Some(3)));
        let state = state_with(
            &[license("Salesforce", 3, Some(10))],
            &[idle, never, recent],
        );

        let recs = desired(&state, NOW, &RulesConfig::default(), &prices());
        let keys: Vec<&String> = recs.keys().collect();
        assert_eq!(
            keys,
            [
                &format!("{ORG}/005A/100Salesforce"),
                &format!("{ORG}/005B/100Salesforce")
            ]
        );

        let rec = &recs[&format!("{ORG}/005A/100Salesforce")];
        assert_eq!(rec.action, RecommendationAction::Reclaim);
        assert_eq!(rec.estimated_monthly_saving, Some(150.0));
        assert_eq!(rec.currency, "EUR");
        assert_eq!(rec.evidence.days_idle, Some(120));
        assert!(
            rec.evidence.reason.contains("120 days"),
            "{}",
            rec.evidence.reason
        );
        assert_eq!(rec.confidence, 0.7);
        assert_eq!(recs[&format!("{ORG}/005B/100Salesforce")].confidence, 0.9);

        let totals = savings_by_pool(&recs);
        assert_eq!(totals[&(ORG.to_owned(), "Salesforce".to_owned())], 300.0);
    }

    #[test]
    fn login_history_activity_prevents_or_shortens_a_reclaim() {
        // LastLoginDate 120 days old, a successful login 2 days ago: not idle.
        let mut seen = with_license_id(user("005A", "Salesforce", Some(120)));
        seen.last_activity_at = Some(NOW - 2 * DAY_MS);
        // LastLoginDate 300 days old, activity 100 days ago: idle for 100 days, not 300.
        let mut faded = with_license_id(user("005B", "Salesforce", Some(300)));
        faded.last_activity_at = Some(NOW - 100 * DAY_MS);
        let state = state_with(&[license("Salesforce", 2, Some(10))], &[seen, faded]);

        let recs = desired(&state, NOW, &RulesConfig::default(), &prices());
        let keys: Vec<&String> = recs.keys().collect();
        assert_eq!(keys, [&format!("{ORG}/005B/100Salesforce")]);
        let rec = &recs[&format!("{ORG}/005B/100Salesforce")];
        assert_eq!(rec.evidence.days_idle, Some(100));
        assert_eq!(rec.evidence.last_login_at, Some(NOW - 300 * DAY_MS));
        assert!(
            rec.evidence.reason.contains("for 100 days"),
            "{}",
            rec.evidence.reason
        );
    }

    #[test]
    fn inactive_users_holding_permission_set_licences_are_orphans() {
        let mut psl = license("Sales Cloud PSL", 1, Some(5));
        psl.kind = LicenseKind::PermissionSet;
        psl.license_id = "0PLx".into();
        let mut gone = user("005D", "Salesforce", Some(400));
        gone.active = false;
        gone.permission_set_licenses = vec!["0PLx".into()];
        gone.package_licenses = vec!["050unknown".into()];
        let state = state_with(&[psl], &[gone]);

        let recs = desired(&state, NOW, &RulesConfig::default(), &prices());
        assert_eq!(recs.len(), 2);
        let rec = &recs[&format!("{ORG}/005D/0PLx")];
        assert_eq!(rec.license_kind, LicenseKind::PermissionSet);
        assert_eq!(rec.license_name, "Sales Cloud PSL");
        assert_eq!(rec.estimated_monthly_saving, Some(40.0));
        assert!(!rec.evidence.active);
        // A licence whose state is unknown keeps its id as name and has no price.
        let unknown = &recs[&format!("{ORG}/005D/050unknown")];
        assert_eq!(unknown.license_name, "050unknown");
        assert_eq!(unknown.estimated_monthly_saving, None);
    }

    #[test]
    fn changes_write_new_advice_once_and_withdraw_what_no_longer_holds() {
        let idle = with_license_id(user("005A", "Salesforce", Some(120)));
        let state = state_with(&[], std::slice::from_ref(&idle));
        let mut published = Published::default();
        let everything = |_: &str| true;

        let recs = desired(&state, NOW, &RulesConfig::default(), &prices());
        let changes = published.changes(&recs, everything);
        assert_eq!(changes.len(), 1);
        let Change::Put(rec) = &changes[0] else {
            panic!("expected a put")
        };
        published.apply(&rec.key(), Some(rec.as_ref().clone()));

        // The next sync sees the same user: only observed_at moved, nothing to write.
        let mut later = idle.clone();
        later.observed_at += 60_000;
        let state = state_with(&[], &[later]);
        let recs = desired(&state, NOW + 60_000, &RulesConfig::default(), &prices());
        assert!(published.changes(&recs, everything).is_empty());

        // The user logs in: the recommendation is withdrawn with a tombstone.
        let mut back = idle;
        back.last_login_at = Some(NOW);
        let state = state_with(&[], &[back]);
        let recs = desired(&state, NOW, &RulesConfig::default(), &prices());
        assert_eq!(
            published.changes(&recs, everything),
            [Change::Withdraw {
                key: rec.key(),
                org_id: ORG.into()
            }]
        );
        // ...unless the org is held: nothing is withdrawn on stale data.
        assert!(published.changes(&recs, |_| false).is_empty());
    }
}
