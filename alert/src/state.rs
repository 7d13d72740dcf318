//! In-memory state of the orgs one evaluator owns, and the alert lifecycle over it.
//!
//! [`SeatState`] mirrors the compacted input topics: the latest licence, user and sync
//! status per key, a tombstone removing the key. [`AlertBook`] mirrors the alerts topic:
//! the last transition per fingerprint, which says what is firing. Both are rebuilt from
//! the topics after every start or rebalance; nothing here touches Kafka or the clock.

use std::collections::BTreeMap;

use seatwatch_schemas::{Alert, AlertStatus, LicenseState, SyncStatus, UserState};

use crate::rules::Condition;

/// The latest seat state of every org read so far.
#[derive(Debug, Default)]
pub struct SeatState {
    orgs: BTreeMap<String, OrgState>,
}

/// One org's licences and users by their Kafka keys, and its latest sync status.
#[derive(Debug, Default)]
pub struct OrgState {
    pub licenses: BTreeMap<String, LicenseState>,
    pub users: BTreeMap<String, UserState>,
    /// Kept for the stale-sync rules to come; no rule reads it yet.
    pub sync: Option<SyncStatus>,
}

impl OrgState {
    fn is_empty(&self) -> bool {
        self.licenses.is_empty() && self.users.is_empty() && self.sync.is_none()
    }
}

/// The org a key belongs to: every seatwatch key starts with `org/`, or is the org.
fn org_of(key: &str) -> &str {
    key.split('/').next().unwrap_or(key)
}

impl SeatState {
    pub fn orgs(&self) -> impl Iterator<Item = (&str, &OrgState)> {
        self.orgs.iter().map(|(org, state)| (org.as_str(), state))
    }

    pub fn clear(&mut self) {
        self.orgs.clear();
    }

    pub fn put_license(&mut self, key: &str, license: LicenseState) {
        self.org_mut(key).licenses.insert(key.to_owned(), license);
    }

    pub fn remove_license(&mut self, key: &str) {
        self.update_existing(key, |org| {
            org.licenses.remove(key);
        });
    }

    pub fn put_user(&mut self, key: &str, user: UserState) {
        self.org_mut(key).users.insert(key.to_owned(), user);
    }

    pub fn remove_user(&mut self, key: &str) {
        self.update_existing(key, |org| {
            org.users.remove(key);
        });
    }

    pub fn put_sync(&mut self, key: &str, status: SyncStatus) {
        self.org_mut(key).sync = Some(status);
    }

    pub fn remove_sync(&mut self, key: &str) {
        self.update_existing(key, |org| org.sync = None);
    }

    fn org_mut(&mut self, key: &str) -> &mut OrgState {
        self.orgs.entry(org_of(key).to_owned()).or_default()
    }

    /// Applies `change` to the key's org if it is known, forgetting the org once empty.
    fn update_existing(&mut self, key: &str, change: impl FnOnce(&mut OrgState)) {
        let org_id = org_of(key);
        if let Some(org) = self.orgs.get_mut(org_id) {
            change(org);
            if org.is_empty() {
                self.orgs.remove(org_id);
            }
        }
    }
}

/// The last transition of every alert read from (or written to) the alerts topic.
///
/// Each entry keeps the offset it came from, so an older record read back after a newer
/// one was recorded on acknowledgement cannot win. Resolved entries are kept too: they
/// are what stops a stale FIRING from reviving, and their number is bounded by the alerts
/// topic's retention.
#[derive(Debug, Default)]
pub struct AlertBook {
    last: BTreeMap<String, (Alert, i64)>,
}

impl AlertBook {
    pub fn clear(&mut self) {
        self.last.clear();
    }

    /// Records `alert`, read or acknowledged at `offset` of its partition, unless a
    /// transition at the same or a later offset is already known. Returns whether it was
    /// recorded.
    pub fn record(&mut self, alert: Alert, offset: i64) -> bool {
        match self.last.get(&alert.fingerprint) {
            Some((_, known)) if *known >= offset => false,
            _ => {
                self.last.insert(alert.fingerprint.clone(), (alert, offset));
                true
            }
        }
    }

    /// The alerts currently firing, by fingerprint.
    pub fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.last
            .values()
            .map(|(alert, _)| alert)
            .filter(|alert| alert.status == AlertStatus::Firing)
    }

    /// The transitions that bring the book in line with `conditions` at `now_ms`: FIRING
    /// for each condition not firing yet, RESOLVED for each firing alert whose condition
    /// is gone (cleared, or its pool or org vanished). Firing alerts whose condition still
    /// holds send nothing, even if the value or severity moved.
    pub fn transitions(&self, conditions: &[Condition], now_ms: i64) -> Vec<Alert> {
        let current: BTreeMap<String, &Condition> = conditions
            .iter()
            .map(|condition| (condition.fingerprint(), condition))
            .collect();

        let firing: BTreeMap<&str, &Alert> = self
            .firing()
            .map(|alert| (alert.fingerprint.as_str(), alert))
            .collect();

        let fired = current
            .iter()
            .filter(|(fingerprint, _)| !firing.contains_key(fingerprint.as_str()))
            .map(|(fingerprint, condition)| firing_alert(fingerprint, condition, now_ms));

        let resolved = firing
            .values()
            .filter(|alert| !current.contains_key(&alert.fingerprint))
            .map(|alert| resolved_alert(alert, now_ms));

        fired.chain(resolved).collect()
    }
}

fn firing_alert(fingerprint: &str, condition: &Condition, now_ms: i64) -> Alert {
    Alert {
        fingerprint: fingerprint.to_owned(),
        rule: condition.rule.to_owned(),
        severity: condition.severity,
        status: AlertStatus::Firing,
        org_id: condition.org_id.clone(),
        pool: Some(condition.pool.clone()),
        labels: condition.labels.clone(),
        summary: condition.summary.clone(),
        value: condition.value,
        threshold: condition.threshold,
        starts_at: now_ms,
        ends_at: None,
        sent_at: now_ms,
    }
}

/// The resolution of `firing`: same identity and labels, its last known value, and a
/// summary saying how long it lasted.
fn resolved_alert(firing: &Alert, now_ms: i64) -> Alert {
    let lasted = human_duration(now_ms - firing.starts_at);
    Alert {
        status: AlertStatus::Resolved,
        summary: format!("Resolved after {lasted}: {}", firing.summary),
        ends_at: Some(now_ms),
        sent_at: now_ms,
        ..firing.clone()
    }
}

/// A duration in milliseconds as its two largest units: `45s`, `12m 5s`, `3h 20m`,
/// `4d 2h`. Negative durations (clock skew between instances) read as `0s`.
pub fn human_duration(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    let (days, hours, minutes, seconds) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m {seconds}s")
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RulesConfig;
    use crate::rules::tests::{license, state_with, user, NOW, ORG};
    use crate::rules::{evaluate, fingerprint, UTILIZATION};

    const MINUTE_MS: i64 = 60_000;

    /// Evaluates, records the transitions as if acknowledged at increasing offsets, and
    /// returns them.
    fn step(book: &mut AlertBook, state: &SeatState, now: i64, next: &mut i64) -> Vec<Alert> {
        let conditions = evaluate(state, now, &RulesConfig::default());
        let transitions = book.transitions(&conditions, now);
        for alert in &transitions {
            *next += 1;
            assert!(book.record(alert.clone(), *next));
        }
        transitions
    }

    #[test]
    fn fires_once_then_resolves_with_its_duration() {
        let mut book = AlertBook::default();
        let mut offset = 0;
        let hot = state_with(&[license("Salesforce", 95, Some(100))], &[]);

        let fired = step(&mut book, &hot, NOW, &mut offset);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].status, AlertStatus::Firing);
        assert_eq!((fired[0].starts_at, fired[0].ends_at), (NOW, None));
        assert_eq!(
            fired[0].fingerprint,
            fingerprint(UTILIZATION, ORG, "Salesforce")
        );

        // Still hot a minute later: nothing new.
        assert!(step(&mut book, &hot, NOW + MINUTE_MS, &mut offset).is_empty());

        let cool = state_with(&[license("Salesforce", 80, Some(100))], &[]);
        let later = NOW + 125 * MINUTE_MS;
        let resolved = step(&mut book, &cool, later, &mut offset);
        assert_eq!(resolved.len(), 1);
        let resolved = &resolved[0];
        assert_eq!(resolved.status, AlertStatus::Resolved);
        assert_eq!(resolved.fingerprint, fired[0].fingerprint);
        assert_eq!((resolved.starts_at, resolved.ends_at), (NOW, Some(later)));
        assert_eq!(
            resolved.summary,
            "Resolved after 2h 5m: Salesforce pool at 95.0% (95 of 100 seats)"
        );
        assert_eq!(book.firing().count(), 0);
        assert!(step(&mut book, &cool, later + MINUTE_MS, &mut offset).is_empty());
    }

    #[test]
    fn a_vanished_pool_or_org_resolves() {
        let mut book = AlertBook::default();
        let mut offset = 0;
        let users = [user("005A", "Salesforce", None)];
        let mut state = state_with(&[license("Salesforce", 99, Some(100))], &users);
        assert_eq!(step(&mut book, &state, NOW, &mut offset).len(), 2);

        // The licence is deleted (tombstone): utilisation resolves, idle seats stay.
        state.remove_license(&license("Salesforce", 0, None).key());
        let resolved = step(&mut book, &state, NOW + MINUTE_MS, &mut offset);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].rule, UTILIZATION);

        // The last user goes: the org is forgotten and its idle alert resolves.
        state.remove_user(&users[0].key());
        assert_eq!(state.orgs().count(), 0);
        let resolved = step(&mut book, &state, NOW + 2 * MINUTE_MS, &mut offset);
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].status, AlertStatus::Resolved);
        assert_eq!(book.firing().count(), 0);
    }

    #[test]
    fn a_book_replayed_from_the_topic_prevents_refiring() {
        // A previous instance fired utilisation, fired and resolved idle seats.
        let mut history = AlertBook::default();
        let mut offset = 0;
        let users = [user("005A", "Salesforce", None)];
        let state = state_with(&[license("Salesforce", 99, Some(100))], &users);
        let mut topic = step(&mut history, &state, NOW, &mut offset);
        let quiet = state_with(&[license("Salesforce", 99, Some(100))], &[]);
        topic.extend(step(&mut history, &quiet, NOW + MINUTE_MS, &mut offset));
        assert_eq!(topic.len(), 3);

        // A new instance replays the topic and sees the same seats: nothing to send.
        let mut book = AlertBook::default();
        for (offset, alert) in topic.into_iter().enumerate() {
            assert!(book.record(alert, offset as i64));
        }
        let conditions = evaluate(&quiet, NOW + 2 * MINUTE_MS, &RulesConfig::default());
        assert!(book
            .transitions(&conditions, NOW + 2 * MINUTE_MS)
            .is_empty());
        assert_eq!(book.firing().count(), 1);
    }

    #[test]
    fn an_older_record_read_back_does_not_override_a_newer_one() {
        let mut book = AlertBook::default();
        let state = state_with(&[license("Salesforce", 99, Some(100))], &[]);
        let conditions = evaluate(&state, NOW, &RulesConfig::default());
        let fired = book.transitions(&conditions, NOW).remove(0);
        assert!(book.record(fired.clone(), 10));
        let resolved = book.transitions(&[], NOW + MINUTE_MS).remove(0);
        assert!(book.record(resolved, 11));

        // The consumer now reads the FIRING record at offset 10 back.
        assert!(!book.record(fired, 10));
        assert_eq!(book.firing().count(), 0);
    }

    #[test]
    fn tombstones_of_unknown_keys_are_harmless_and_sync_status_is_kept() {
        let mut state = SeatState::default();
        state.remove_user("00Dx/005x");
        state.remove_license("00Dx/user/100x");
        state.remove_sync("00Dx");
        assert_eq!(state.orgs().count(), 0);

        let status = SyncStatus {
            org_id: ORG.into(),
            org_name: "acme".into(),
            sync_id: "s".into(),
            outcome: seatwatch_schemas::SyncOutcome::Success,
            started_at: NOW,
            finished_at: NOW,
            last_success_at: Some(NOW),
            records: Default::default(),
            api_calls: 3,
            api_used: None,
            api_limit: None,
            error_class: None,
            error_message: None,
        };
        state.put_sync(ORG, status.clone());
        state.put_sync(
            ORG,
            SyncStatus {
                api_calls: 4,
                ..status
            },
        );
        let (org, org_state) = state.orgs().next().unwrap();
        assert_eq!(org, ORG);
        assert_eq!(org_state.sync.as_ref().map(|s| s.api_calls), Some(4));
        state.remove_sync(ORG);
        assert_eq!(state.orgs().count(), 0);
    }

    #[test]
    fn durations_read_in_two_units() {
        assert_eq!(human_duration(-5), "0s");
        assert_eq!(human_duration(45_000), "45s");
        assert_eq!(human_duration(12 * MINUTE_MS + 5_000), "12m 5s");
        assert_eq!(human_duration(200 * MINUTE_MS), "3h 20m");
        assert_eq!(human_duration((4 * 24 + 2) * 60 * MINUTE_MS), "4d 2h");
    }
}
