//! In-memory state of the orgs one evaluator owns, and the alert lifecycle over it.
//!
//! [`SeatState`] mirrors the compacted input topics: the latest licence, user and sync
//! status per key, a tombstone removing the key. [`AlertBook`] mirrors the alerts topic:
//! the last transition per fingerprint, which says what is firing. Both are rebuilt from
//! the topics after every start or rebalance; nothing here touches Kafka or the clock.

use std::collections::{BTreeMap, VecDeque};

use seatwatch_schemas::{Alert, AlertStatus, LicenseState, SyncStatus, UserState};

use crate::rules::{Condition, Evaluation, Level};

/// Most used-seat observations kept per licence for the forecast: at one sync every 15
/// minutes, two weeks of history.
const HISTORY_LIMIT: usize = 1344;

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
    pub sync: Option<SyncStatus>,
    /// The earliest `started_at` of the sync statuses read, the start of "never synced
    /// successfully" for the stale-sync rule. Since the compacted topic replays only the
    /// latest status, a restart moves it forward to that one.
    pub first_sync_at: Option<i64>,
    /// `(observed_at, used)` per licence key, oldest first, for the forecast. Known
    /// shortcut: a compacted topic replays only the latest value per key, so after a
    /// restart the trend is relearnt from the syncs that follow.
    history: BTreeMap<String, VecDeque<(i64, i64)>>,
}

impl OrgState {
    fn is_empty(&self) -> bool {
        self.licenses.is_empty() && self.users.is_empty() && self.sync.is_none()
    }

    /// The used-seat observations of one licence, oldest first.
    pub fn history(&self, license_key: &str) -> &[(i64, i64)] {
        self.history
            .get(license_key)
            .map(|samples| samples.as_slices().0)
            .unwrap_or_default()
    }

    fn observe(&mut self, key: &str, license: &LicenseState) {
        let samples = self.history.entry(key.to_owned()).or_default();
        if samples
            .back()
            .is_some_and(|(at, _)| *at >= license.observed_at)
        {
            return;
        }
        if samples.len() == HISTORY_LIMIT {
            samples.pop_front();
        }
        samples.push_back((license.observed_at, license.used));
        // Keep the samples contiguous so that `history` can hand out one slice.
        samples.make_contiguous();
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
        let org = self.org_mut(key);
        org.observe(key, &license);
        org.licenses.insert(key.to_owned(), license);
    }

    pub fn remove_license(&mut self, key: &str) {
        self.update_existing(key, |org| {
            org.licenses.remove(key);
            org.history.remove(key);
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
        let org = self.org_mut(key);
        let started = status.started_at;
        org.first_sync_at = Some(
            org.first_sync_at
                .map_or(started, |first| first.min(started)),
        );
        org.sync = Some(status);
    }

    pub fn remove_sync(&mut self, key: &str) {
        self.update_existing(key, |org| {
            org.sync = None;
            org.first_sync_at = None;
        });
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

/// The last transition of every alert read from (or written to) the alerts topic, and the
/// alerts waiting out their pending period.
///
/// Each entry keeps the offset it came from, so an older record read back after a newer
/// one was recorded on acknowledgement cannot win. Resolved entries are kept too: they
/// are what stops a stale FIRING from reviving, and their number is bounded by the alerts
/// topic's retention.
#[derive(Debug, Default)]
pub struct AlertBook {
    last: BTreeMap<String, (Alert, i64)>,
    /// When each not-yet-firing condition first reached firing level. Known shortcut:
    /// in memory only, so a restart starts pending periods over (delaying, never
    /// losing, an alert).
    pending_since: BTreeMap<String, i64>,
}

/// What the lifecycle needs besides the evaluation.
pub struct Lifecycle<'a> {
    /// Repeat a still-firing alert after this many milliseconds; 0 never repeats.
    pub repeat_ms: i64,
    /// Whether an alert is acknowledged or silenced, so that it does not repeat.
    pub quiet: &'a dyn Fn(&Alert) -> bool,
}

impl AlertBook {
    pub fn clear(&mut self) {
        self.last.clear();
        self.pending_since.clear();
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

    /// The latest record of every alert, firing or resolved.
    pub fn all(&self) -> impl Iterator<Item = &Alert> {
        self.last.values().map(|(alert, _)| alert)
    }

    /// The latest record of one alert, firing or resolved.
    pub fn get(&self, fingerprint: &str) -> Option<&Alert> {
        self.last.get(fingerprint).map(|(alert, _)| alert)
    }

    /// The records that bring the book in line with `evaluation` at `now_ms`:
    ///
    /// - FIRING for a condition at firing level once it stayed there `pending_ms`;
    /// - FIRING again (same `starts_at`) for a firing alert whose severity rose or whose
    ///   repeat interval passed, unless it is quiet;
    /// - RESOLVED for a firing alert whose condition cleared or vanished (its pool or org
    ///   is gone), unless its org is held: a stale org's seat alerts neither fire nor
    ///   resolve until fresh data arrives.
    ///
    /// A condition in its hysteresis band changes nothing.
    pub fn transitions(
        &mut self,
        evaluation: &Evaluation,
        now_ms: i64,
        lifecycle: &Lifecycle<'_>,
    ) -> Vec<Alert> {
        let held = |org_id: &str, rule: &str| {
            crate::rules::is_seat_rule(rule) && evaluation.held_orgs.contains(org_id)
        };
        let current: BTreeMap<String, &Condition> = evaluation
            .conditions
            .iter()
            .map(|condition| (condition.fingerprint(), condition))
            .collect();
        let mut out = Vec::new();

        for (fingerprint, condition) in &current {
            if held(&condition.org_id, condition.rule) {
                continue;
            }
            let firing = self
                .get(fingerprint)
                .filter(|alert| alert.status == AlertStatus::Firing);
            match (firing, condition.level) {
                (Some(alert), Level::Clear) => {
                    out.push(resolved_alert(alert, Some(condition), now_ms))
                }
                (Some(alert), level) => {
                    let escalated = level == Level::Firing && condition.severity > alert.severity;
                    let repeat_due = lifecycle.repeat_ms > 0
                        && now_ms - alert.sent_at >= lifecycle.repeat_ms
                        && !(lifecycle.quiet)(alert);
                    if escalated || repeat_due {
                        out.push(refreshed_alert(alert, condition, now_ms, escalated));
                    }
                }
                (None, Level::Firing) => {
                    let since = *self
                        .pending_since
                        .entry(fingerprint.clone())
                        .or_insert(now_ms);
                    if now_ms - since >= condition.pending_ms {
                        self.pending_since.remove(fingerprint);
                        out.push(firing_alert(fingerprint, condition, now_ms));
                    }
                }
                (None, _) => {
                    self.pending_since.remove(fingerprint);
                }
            }
        }

        // Pending periods of conditions that vanished start over.
        self.pending_since
            .retain(|fingerprint, _| current.contains_key(fingerprint));

        let vanished = self.firing().filter(|alert| {
            !current.contains_key(&alert.fingerprint) && !held(&alert.org_id, &alert.rule)
        });
        out.extend(vanished.map(|alert| resolved_alert(alert, None, now_ms)));
        out
    }
}

fn firing_alert(fingerprint: &str, condition: &Condition, now_ms: i64) -> Alert {
    Alert {
        fingerprint: fingerprint.to_owned(),
        rule: condition.rule.to_owned(),
        severity: condition.severity,
        status: AlertStatus::Firing,
        org_id: condition.org_id.clone(),
        pool: Some(condition.pool.clone()).filter(|pool| !pool.is_empty()),
        labels: condition.labels.clone(),
        summary: condition.summary.clone(),
        value: condition.value,
        threshold: condition.threshold,
        starts_at: now_ms,
        ends_at: None,
        sent_at: now_ms,
    }
}

/// A still-firing alert sent again: the same identity and start, today's measurement,
/// and a severity that only rises while it fires.
fn refreshed_alert(firing: &Alert, condition: &Condition, now_ms: i64, escalated: bool) -> Alert {
    let severity = if escalated {
        condition.severity
    } else {
        firing.severity
    };
    let mut labels = condition.labels.clone();
    labels.insert("severity".into(), severity.as_str().into());
    Alert {
        severity,
        labels,
        summary: condition.summary.clone(),
        value: condition.value,
        sent_at: now_ms,
        ..firing.clone()
    }
}

/// The resolution of `firing`: same identity and labels, how long it lasted, and what the
/// rule measures now when it still measures anything.
fn resolved_alert(firing: &Alert, now: Option<&Condition>, now_ms: i64) -> Alert {
    let lasted = human_duration(now_ms - firing.starts_at);
    let (summary, value) = match now {
        Some(condition) => (
            format!("Resolved after {lasted}: {}", condition.summary),
            condition.value,
        ),
        None => (
            format!(
                "Resolved after {lasted}, no longer measured (was: {})",
                firing.summary
            ),
            firing.value,
        ),
    };
    Alert {
        status: AlertStatus::Resolved,
        summary,
        value,
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
pub(crate) mod tests {
    use super::*;
    use crate::rule_config::RulesConfig;
    use crate::rules::tests::{license, state_with, user, NOW, ORG};
    use crate::rules::{evaluate, fingerprint, UTILIZATION};

    const MINUTE_MS: i64 = 60_000;

    /// A utilisation alert of the `Salesforce` pool with the given identity and state.
    pub fn alert(fingerprint: &str, status: AlertStatus, starts_at: i64) -> Alert {
        let labels = BTreeMap::from([
            ("alertname".to_owned(), "utilization".to_owned()),
            ("org_id".to_owned(), ORG.to_owned()),
            ("pool".to_owned(), "Salesforce".to_owned()),
            ("severity".to_owned(), "warning".to_owned()),
        ]);
        Alert {
            fingerprint: fingerprint.into(),
            rule: "utilization".into(),
            severity: seatwatch_schemas::Severity::Warning,
            status,
            org_id: ORG.into(),
            pool: Some("Salesforce".into()),
            labels,
            summary: "Salesforce pool at 95.0% (95 of 100 seats)".into(),
            value: 0.95,
            threshold: 0.9,
            starts_at,
            ends_at: (status == AlertStatus::Resolved).then_some(starts_at + 60_000),
            sent_at: starts_at,
        }
    }

    const NEVER_REPEAT: Lifecycle<'static> = Lifecycle {
        repeat_ms: 0,
        quiet: &|_| false,
    };

    /// Evaluates, records the transitions as if acknowledged at increasing offsets, and
    /// returns them.
    fn step(book: &mut AlertBook, state: &SeatState, now: i64, next: &mut i64) -> Vec<Alert> {
        step_with(
            book,
            state,
            now,
            next,
            &RulesConfig::default(),
            &NEVER_REPEAT,
        )
    }

    fn step_with(
        book: &mut AlertBook,
        state: &SeatState,
        now: i64,
        next: &mut i64,
        rules: &RulesConfig,
        lifecycle: &Lifecycle<'_>,
    ) -> Vec<Alert> {
        let evaluation = evaluate(state, now, rules);
        let transitions = book.transitions(&evaluation, now, lifecycle);
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
            "Resolved after 2h 5m: Salesforce pool at 80.0% (80 of 100 seats)"
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
        let evaluation = evaluate(&quiet, NOW + 2 * MINUTE_MS, &RulesConfig::default());
        assert!(book
            .transitions(&evaluation, NOW + 2 * MINUTE_MS, &NEVER_REPEAT)
            .is_empty());
        assert_eq!(book.firing().count(), 1);
    }

    #[test]
    fn an_older_record_read_back_does_not_override_a_newer_one() {
        let mut book = AlertBook::default();
        let state = state_with(&[license("Salesforce", 99, Some(100))], &[]);
        let evaluation = evaluate(&state, NOW, &RulesConfig::default());
        let fired = book.transitions(&evaluation, NOW, &NEVER_REPEAT).remove(0);
        assert!(book.record(fired.clone(), 10));
        let nothing = Evaluation::default();
        let resolved = book
            .transitions(&nothing, NOW + MINUTE_MS, &NEVER_REPEAT)
            .remove(0);
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

    #[test]
    fn hysteresis_holds_an_alert_through_a_flap() {
        let mut book = AlertBook::default();
        let mut offset = 0;
        let at = |used| state_with(&[license("Salesforce", used, Some(100))], &[]);
        let mut sent = Vec::new();
        for (minute, used) in [90, 87, 91, 86, 89, 92, 84, 88].into_iter().enumerate() {
            let now = NOW + minute as i64 * MINUTE_MS;
            sent.extend(step(&mut book, &at(used), now, &mut offset));
        }
        // Fired at 90, held through 87..92, resolved at 84, not re-fired at 88.
        let statuses: Vec<AlertStatus> = sent.iter().map(|a| a.status).collect();
        assert_eq!(statuses, [AlertStatus::Firing, AlertStatus::Resolved]);
        assert_eq!(sent[1].ends_at, Some(NOW + 6 * MINUTE_MS));
        assert!(sent[1].summary.contains("84.0%"), "{}", sent[1].summary);
    }

    #[test]
    fn a_pending_period_must_pass_at_firing_level() {
        let mut rules = RulesConfig::default();
        rules.utilization.for_secs = 120;
        let mut book = AlertBook::default();
        let mut offset = 0;
        let hot = state_with(&[license("Salesforce", 95, Some(100))], &[]);
        let cool = state_with(&[license("Salesforce", 50, Some(100))], &[]);
        let mut run = |state: &SeatState, minute: i64| {
            let now = NOW + minute * MINUTE_MS;
            step_with(&mut book, state, now, &mut offset, &rules, &NEVER_REPEAT)
        };
        assert!(run(&hot, 0).is_empty());
        assert!(run(&hot, 1).is_empty());
        // A dip restarts the pending period.
        assert!(run(&cool, 2).is_empty());
        assert!(run(&hot, 3).is_empty());
        assert!(run(&hot, 4).is_empty());
        let fired = run(&hot, 5);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].starts_at, NOW + 5 * MINUTE_MS);
    }

    #[test]
    fn firing_alerts_repeat_unless_quiet_and_escalate_at_once() {
        let mut book = AlertBook::default();
        let mut offset = 0;
        let hot = state_with(&[license("Salesforce", 95, Some(100))], &[]);
        let hour = 60 * MINUTE_MS;
        let rules = RulesConfig::default();
        let repeat = Lifecycle {
            repeat_ms: hour,
            quiet: &|_| false,
        };
        let quiet = Lifecycle {
            repeat_ms: hour,
            quiet: &|_| true,
        };

        let fired = step_with(&mut book, &hot, NOW, &mut offset, &rules, &repeat);
        assert_eq!(fired.len(), 1);
        assert!(step_with(
            &mut book,
            &hot,
            NOW + hour - 1,
            &mut offset,
            &rules,
            &repeat
        )
        .is_empty());
        let repeated = step_with(&mut book, &hot, NOW + hour, &mut offset, &rules, &repeat);
        assert_eq!(repeated.len(), 1);
        assert_eq!(repeated[0].status, AlertStatus::Firing);
        assert_eq!(repeated[0].starts_at, NOW, "a repeat keeps its start");
        assert_eq!(repeated[0].sent_at, NOW + hour);

        // Acknowledged or silenced: no repeat.
        assert!(step_with(&mut book, &hot, NOW + 3 * hour, &mut offset, &rules, &quiet).is_empty());

        // Full: severity rises, sent at once even when quiet.
        let full = state_with(&[license("Salesforce", 100, Some(100))], &[]);
        let escalated = step_with(
            &mut book,
            &full,
            NOW + 3 * hour,
            &mut offset,
            &rules,
            &quiet,
        );
        let utilization: Vec<&Alert> = escalated.iter().filter(|a| a.rule == UTILIZATION).collect();
        assert_eq!(utilization.len(), 1);
        assert_eq!(
            utilization[0].severity,
            seatwatch_schemas::Severity::Critical
        );
        assert_eq!(utilization[0].labels["severity"], "critical");
        assert_eq!(utilization[0].starts_at, NOW);
    }

    #[test]
    fn a_held_org_neither_fires_nor_resolves_its_seat_alerts() {
        let mut book = AlertBook::default();
        let mut offset = 0;
        let status = |last_success_mins_ago: i64| SyncStatus {
            org_id: ORG.into(),
            org_name: "acme".into(),
            sync_id: "s".into(),
            outcome: seatwatch_schemas::SyncOutcome::Failed,
            started_at: NOW,
            finished_at: NOW,
            last_success_at: Some(NOW - last_success_mins_ago * MINUTE_MS),
            records: Default::default(),
            api_calls: 1,
            api_used: None,
            api_limit: None,
            error_class: None,
            error_message: None,
        };
        let mut state = state_with(&[license("Salesforce", 95, Some(100))], &[]);
        state.put_sync(ORG, status(1));
        assert_eq!(step(&mut book, &state, NOW, &mut offset).len(), 1);

        // Data goes stale, and the last (stale) snapshot says the pool cooled down.
        let mut stale = state_with(&[license("Salesforce", 10, Some(100))], &[]);
        stale.put_sync(ORG, status(500));
        let sent = step(&mut book, &stale, NOW, &mut offset);
        let rules: Vec<&str> = sent.iter().map(|a| a.rule.as_str()).collect();
        assert_eq!(rules, ["stale_sync"], "only the stale-sync alert moves");
        assert_eq!(book.firing().filter(|a| a.rule == UTILIZATION).count(), 1);

        // Fresh data again: the seat alert resolves, the stale one too.
        let mut fresh = state_with(&[license("Salesforce", 10, Some(100))], &[]);
        fresh.put_sync(ORG, status(0));
        let sent = step(&mut book, &fresh, NOW + MINUTE_MS, &mut offset);
        assert_eq!(sent.len(), 2);
        assert!(sent.iter().all(|a| a.status == AlertStatus::Resolved));
    }
}
