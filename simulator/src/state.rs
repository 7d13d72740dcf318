//! The simulator's shared state and the handle tests use to inspect and change it.
//!
//! All mutable state (org, sessions, query cursors, counters, faults) sits behind one mutex,
//! so every request sees one consistent org and a test's change lands between requests, never
//! inside one. The lock is never held across an await. Settings fixed at start (credentials,
//! limits, base URL) sit beside it, outside the lock.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::{Duration, Instant};

use crate::config::Credentials;
use crate::faults::Faults;
use crate::org::Org;
use crate::soql::exec::OutRecord;

/// How long a session lives without use; Salesforce's default inactivity timeout.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(2 * 60 * 60);

/// Logins per user per hour before `login rate exceeded`, as in Salesforce.
pub const DEFAULT_LOGIN_RATE_LIMIT: u32 = 3600;

/// Open query cursors kept. Salesforce keeps cursors two days without a count limit; a bound
/// here keeps a long demo from growing, and the oldest cursor goes first.
pub const MAX_OPEN_CURSORS: usize = 1000;

/// Settings fixed for the life of a run, and the lock around everything else.
pub(crate) struct Shared {
    /// What the token endpoint accepts.
    pub credentials: Credentials,
    /// The daily API allocation.
    pub api_daily_limit: u64,
    /// Most rows per page.
    pub page_size: usize,
    /// `http://<bound address>`, used when a request carries no Host header.
    pub base_url: String,
    /// Everything that changes.
    state: Mutex<State>,
}

impl Shared {
    pub fn new(
        org: Org,
        credentials: Credentials,
        api_daily_limit: u64,
        page_size: usize,
        base_url: String,
    ) -> Self {
        let state = State {
            org,
            sessions: HashMap::new(),
            cursors: Cursors::default(),
            api_calls: 0,
            logins: 0,
            faults: Faults::default(),
            login_rate_limit_per_hour: DEFAULT_LOGIN_RATE_LIMIT,
            recent_logins: HashMap::new(),
        };
        Self {
            credentials,
            api_daily_limit,
            page_size,
            base_url,
            state: Mutex::new(state),
        }
    }

    /// Locks the state. A panic while locked leaves the data usable (every change is a few
    /// field writes), so a poisoned lock is taken over rather than propagated.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Everything that changes while the simulator runs.
pub(crate) struct State {
    /// The org.
    pub org: Org,
    /// Access token → session.
    pub sessions: HashMap<String, Session>,
    /// Open query cursors.
    pub cursors: Cursors,
    /// Data calls counted against the daily allocation.
    pub api_calls: u64,
    /// Successful logins.
    pub logins: u64,
    /// Injected faults.
    pub faults: Faults,
    /// Logins per user per hour before `login rate exceeded`.
    pub login_rate_limit_per_hour: u32,
    /// User id → times of that user's logins within the last hour.
    pub recent_logins: HashMap<String, VecDeque<Instant>>,
}

impl State {
    /// The session of a token, if it exists, has not timed out, and its user is still
    /// active (deactivating a user ends their sessions, as in Salesforce).
    pub fn live_session(&mut self, token: &str, now: Instant) -> Option<&mut Session> {
        let org = &self.org;
        let expired = self.sessions.get(token).is_some_and(|s| {
            let user_active = org.users.iter().any(|u| u.id == s.user_id && u.is_active);
            !user_active || now.duration_since(s.last_used) > SESSION_TIMEOUT
        });
        if expired {
            self.sessions.remove(token);
        }
        self.sessions.get_mut(token)
    }

    /// Drops sessions that timed out.
    pub fn sweep_sessions(&mut self, now: Instant) {
        self.sessions
            .retain(|_, s| now.duration_since(s.last_used) <= SESSION_TIMEOUT);
    }
}

/// A logged-in session.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The user it belongs to.
    pub user_id: String,
    /// Last login or data call; the inactivity timeout counts from here.
    pub last_used: Instant,
    /// Data calls made with it.
    pub data_calls: u64,
}

/// A query's snapshotted result, paged through `nextRecordsUrl`.
pub(crate) struct Cursor {
    /// The access token of the session that ran the query.
    pub session: String,
    /// All result records, fixed when the query ran.
    pub records: Arc<Vec<OutRecord>>,
    /// Rows per page.
    pub page_size: usize,
}

/// Open cursors by locator, oldest evicted first.
#[derive(Default)]
pub(crate) struct Cursors {
    by_locator: HashMap<String, Cursor>,
    order: VecDeque<String>,
    serial: u64,
}

impl Cursors {
    /// Stores a cursor and returns its new locator.
    pub fn open(&mut self, cursor: Cursor) -> String {
        self.serial += 1;
        let locator = crate::ids::make_id(crate::ids::QUERY_LOCATOR_PREFIX, self.serial);
        self.by_locator.insert(locator.clone(), cursor);
        self.order.push_back(locator.clone());
        while self.order.len() > MAX_OPEN_CURSORS {
            if let Some(oldest) = self.order.pop_front() {
                self.by_locator.remove(&oldest);
            }
        }
        locator
    }

    /// The cursor of a locator.
    pub fn get(&self, locator: &str) -> Option<&Cursor> {
        self.by_locator.get(locator)
    }
}

/// A cheap, cloneable view into a running simulator for tests and tools.
#[derive(Clone)]
pub struct SimulatorHandle {
    pub(crate) shared: Arc<Shared>,
}

impl SimulatorHandle {
    /// Data calls counted against the daily allocation so far.
    pub fn api_calls(&self) -> u64 {
        self.shared.lock().api_calls
    }

    /// Sets the count of data calls made, for example to start near the daily limit.
    pub fn set_api_calls(&self, calls: u64) {
        self.shared.lock().api_calls = calls;
    }

    /// Successful logins so far.
    pub fn logins(&self) -> u64 {
        self.shared.lock().logins
    }

    /// Invalidates every issued access token (and so every open cursor).
    pub fn expire_sessions(&self) {
        self.shared.lock().sessions.clear();
    }

    /// Sessions currently valid.
    pub fn open_sessions(&self) -> usize {
        let mut state = self.shared.lock();
        state.sweep_sessions(Instant::now());
        state.sessions.len()
    }

    /// The 18-character org id.
    pub fn org_id(&self) -> String {
        self.shared.lock().org.org_id.clone()
    }

    /// Reads or changes the org. Use the `Org` change methods to keep audit fields honest;
    /// seat counts follow automatically.
    pub fn with_org<R>(&self, change: impl FnOnce(&mut Org) -> R) -> R {
        change(&mut self.shared.lock().org)
    }

    /// Reads or changes the injected faults.
    pub fn with_faults<R>(&self, change: impl FnOnce(&mut Faults) -> R) -> R {
        change(&mut self.shared.lock().faults)
    }

    /// Sets how many logins per user per hour succeed before `login rate exceeded`.
    pub fn set_login_rate_limit_per_hour(&self, limit: u32) {
        self.shared.lock().login_rate_limit_per_hour = limit;
    }
}
