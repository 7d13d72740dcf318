//! What a sync shows while it reads: a progress bar per object on a terminal, one plain
//! line per object otherwise (logs, CI, pipes), nothing for the long-running service.
//!
//! A sync reports through [`Progress`]; [`for_stderr`] picks the form that suits where
//! stderr goes. The figures are counts and Salesforce object names only, never a record.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use seatwatch_schemas::{SfObject, SnapshotMode};

/// Receives a sync's progress, object by object.
pub trait Progress: Send + Sync {
    /// A read of `object` begins.
    fn object_started(&self, org: &str, object: SfObject, mode: SnapshotMode);
    /// A page arrived: `read` of the query's `total` records are in.
    fn page_read(&self, org: &str, object: SfObject, read: u64, total: u64);
    /// The read ended; `emitted` records went to the raw topic.
    fn object_finished(&self, org: &str, object: SfObject, emitted: u64);
}

/// Shows nothing: the service's syncs, and tests.
pub struct Silent;

impl Progress for Silent {
    fn object_started(&self, _: &str, _: SfObject, _: SnapshotMode) {}
    fn page_read(&self, _: &str, _: SfObject, _: u64, _: u64) {}
    fn object_finished(&self, _: &str, _: SfObject, _: u64) {}
}

/// Bars on a terminal, plain lines elsewhere, both on stderr (stdout keeps the summary).
pub fn for_stderr() -> Box<dyn Progress> {
    if std::io::stderr().is_terminal() {
        Box::new(Bars::new())
    } else {
        Box::new(Lines::new(std::io::stderr()))
    }
}

fn mode_name(mode: SnapshotMode) -> &'static str {
    match mode {
        SnapshotMode::Full => "full",
        SnapshotMode::Incremental => "incremental",
    }
}

/// One line when an object is done: `org sim: User incremental, 3 records`.
pub struct Lines<W: Write + Send> {
    out: Mutex<W>,
    modes: Mutex<HashMap<(String, SfObject), SnapshotMode>>,
}

impl<W: Write + Send> Lines<W> {
    pub fn new(out: W) -> Self {
        Self {
            out: Mutex::new(out),
            modes: Mutex::new(HashMap::new()),
        }
    }

    /// The writer back, for tests.
    pub fn into_inner(self) -> W {
        self.out.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

impl<W: Write + Send> Progress for Lines<W> {
    fn object_started(&self, org: &str, object: SfObject, mode: SnapshotMode) {
        let mut modes = self.modes.lock().unwrap_or_else(|p| p.into_inner());
        modes.insert((org.to_owned(), object), mode);
    }

    fn page_read(&self, _: &str, _: SfObject, _: u64, _: u64) {}

    fn object_finished(&self, org: &str, object: SfObject, emitted: u64) {
        let mode = {
            let modes = self.modes.lock().unwrap_or_else(|p| p.into_inner());
            modes.get(&(org.to_owned(), object)).copied()
        };
        let mode = mode.map_or("", mode_name);
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // A closed stderr must not fail the sync.
        let _ = writeln!(out, "org {org}: {object} {mode}, {emitted} records");
        let _ = out.flush();
    }
}

/// A bar per object, its length the query's `totalSize`.
pub struct Bars {
    bars: MultiProgress,
    open: Mutex<HashMap<(String, SfObject), ProgressBar>>,
}

impl Bars {
    pub fn new() -> Self {
        Self {
            bars: MultiProgress::new(),
            open: Mutex::new(HashMap::new()),
        }
    }

    fn style() -> ProgressStyle {
        ProgressStyle::with_template("{prefix:<40} [{bar:30}] {pos:>8}/{len:<8} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ")
    }
}

impl Default for Bars {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress for Bars {
    fn object_started(&self, org: &str, object: SfObject, mode: SnapshotMode) {
        let bar = self.bars.add(ProgressBar::new(0));
        bar.set_style(Self::style());
        bar.set_prefix(format!("{org}: {object}"));
        bar.set_message(mode_name(mode));
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.insert((org.to_owned(), object), bar);
    }

    fn page_read(&self, org: &str, object: SfObject, read: u64, total: u64) {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bar) = open.get(&(org.to_owned(), object)) {
            bar.set_length(total.max(read));
            bar.set_position(read);
        }
    }

    fn object_finished(&self, org: &str, object: SfObject, emitted: u64) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bar) = open.remove(&(org.to_owned(), object)) {
            let mode = bar.message();
            bar.finish_with_message(format!("{mode}, {emitted} records"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_name_org_object_mode_and_count() {
        let lines = Lines::new(Vec::new());
        lines.object_started("acme", SfObject::User, SnapshotMode::Incremental);
        lines.page_read("acme", SfObject::User, 3, 10);
        lines.object_finished("acme", SfObject::User, 3);
        lines.object_started("acme", SfObject::UserLicense, SnapshotMode::Full);
        lines.object_finished("acme", SfObject::UserLicense, 7);

        let text = String::from_utf8(lines.into_inner()).unwrap();
        assert_eq!(
            text,
            "org acme: User incremental, 3 records\norg acme: UserLicense full, 7 records\n"
        );
    }

    #[test]
    fn bars_follow_pages_and_close() {
        let bars = Bars::new();
        bars.bars
            .set_draw_target(indicatif::ProgressDrawTarget::hidden());
        bars.object_started("acme", SfObject::User, SnapshotMode::Full);
        bars.page_read("acme", SfObject::User, 2000, 5000);
        {
            let open = bars.open.lock().unwrap();
            let bar = &open[&("acme".to_owned(), SfObject::User)];
            assert_eq!((bar.position(), bar.length()), (2000, Some(5000)));
        }
        bars.object_finished("acme", SfObject::User, 5000);
        assert!(bars.open.lock().unwrap().is_empty());
    }
}
