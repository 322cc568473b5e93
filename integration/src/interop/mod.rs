//! serval against BIRD, FRR, GoBGP, OpenBGPD and ExaBGP: the scenarios, what each peer
//! can and cannot do, a raw BGP client for malformed input, and the runner that plays
//! the scenarios in parallel and prints the interop matrix.
//!
//! - [`scenarios`]: each scenario once, generic over the peer daemon.
//! - [`peer`]: [`InteropPeer`], what the scenarios ask of a peer beyond [`BgpDaemon`]
//!   (its view of serval's capabilities, its refresh command, its last error) and the
//!   features it lacks, each with the reason.
//! - [`raw`]: a hand-driven BGP speaker that sends exactly the bytes a test wants.
//! - [`matrix`]: outcomes and their tables.
//!
//! [`BgpDaemon`]: crate::BgpDaemon

pub mod matrix;
pub mod peer;
pub mod raw;
pub mod scenarios;

pub use matrix::{Entry, Outcome};
pub use peer::InteropPeer;

use crate::error::{Error, Result};
use crate::workdir::TestDir;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// What a scenario body returns when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Passed; the note says how where that depends on the peer.
    Pass(String),
    /// The peer cannot do this (the reason says precisely why); nothing was checked.
    NotApplicable(String),
}

impl Verdict {
    pub fn pass() -> Verdict {
        Verdict::Pass(String::new())
    }
}

/// A scenario body: runs in its own [`TestDir`], builds its own namespaces.
pub type Body = Box<dyn FnOnce(&TestDir) -> Result<Verdict> + Send>;

/// One cell of the matrix and how to fill it.
pub struct Case {
    pub row: String,
    pub column: String,
    pub body: Body,
}

impl Case {
    pub fn new(
        row: &str,
        column: &str,
        body: impl FnOnce(&TestDir) -> Result<Verdict> + Send + 'static,
    ) -> Case {
        Case {
            row: row.into(),
            column: column.into(),
            body: Box::new(body),
        }
    }

    /// `row/column`, what a filter on the command line matches.
    pub fn name(&self) -> String {
        format!("{}/{}", self.row, self.column)
    }
}

/// Where failed scenarios leave their daemons' logs: `$CARGO_TARGET_DIR/interop-logs`,
/// or the system's temporary directory.
pub fn log_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => Path::new(&dir).join("interop-logs"),
        None => std::env::temp_dir().join("serval-interop-logs"),
    }
}

/// Runs one case: a failure (error or panic) becomes [`Outcome::Fail`] with the error,
/// and every log and config of the case is written to `logs/ROW-COLUMN.log`.
pub fn run_case(case: Case, logs: &Path) -> Entry {
    let name = case.name();
    let start = Instant::now();
    let dir = match TestDir::new(&name) {
        Ok(dir) => dir,
        Err(err) => {
            return Entry {
                row: case.row,
                column: case.column,
                outcome: Outcome::Fail(format!("{err}")),
                seconds: 0.0,
            }
        }
    };
    let body = case.body;
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| body(&dir)));
    let outcome = match result {
        Ok(Ok(Verdict::Pass(note))) => Outcome::Pass(note),
        Ok(Ok(Verdict::NotApplicable(why))) => Outcome::NotApplicable(why),
        Ok(Err(err)) => Outcome::Fail(format!("{err:?}")),
        Err(panic) => Outcome::Fail(panic_text(&panic)),
    };
    if let Outcome::Fail(why) = &outcome {
        let file = logs.join(format!("{}.log", name.replace('/', "-")));
        let text = format!("{name}: {why}\n\n{}", dir.logs());
        let written = std::fs::create_dir_all(logs).and_then(|()| std::fs::write(&file, text));
        match written {
            Ok(()) => eprintln!("{name}: FAIL: {why}\n  (logs in {})", file.display()),
            Err(e) => eprintln!("{name}: FAIL: {why}\n  (could not write logs: {e})"),
        }
    } else {
        eprintln!("{name}: {}", outcome.cell());
    }
    Entry {
        row: case.row,
        column: case.column,
        outcome,
        seconds: start.elapsed().as_secs_f64(),
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else if let Some(s) = panic.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else {
        "panicked".into()
    }
}

/// Runs `cases` on `jobs` threads, in the given order, and returns every entry.
pub fn run_all(cases: Vec<Case>, jobs: usize) -> Vec<Entry> {
    let queue = Mutex::new(cases.into_iter().collect::<VecDeque<_>>());
    let entries = Mutex::new(Vec::new());
    let logs = log_dir();
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let next = match queue.lock() {
                    Ok(mut q) => q.pop_front(),
                    Err(_) => None,
                };
                let Some(case) = next else { return };
                let entry = run_case(case, &logs);
                if let Ok(mut e) = entries.lock() {
                    e.push(entry);
                }
            });
        }
    });
    entries.into_inner().unwrap_or_default()
}

/// Fails a scenario with a sentence (for checks that are not a wait).
pub fn check(ok: bool, what: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Check(what()))
    }
}
