//! The interop matrix: what each scenario came to, printed for people at the end of a
//! run and written as Markdown for the README. Pure: results in, text out.

use std::fmt::Write as _;

/// How one scenario ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It passed; the note says how, where that differs by peer ("stale flag shown").
    Pass(String),
    /// It failed; the first line of the error.
    Fail(String),
    /// The peer cannot do this; the reason, precisely.
    NotApplicable(String),
}

impl Outcome {
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Pass(_) => "pass",
            Outcome::Fail(_) => "FAIL",
            Outcome::NotApplicable(_) => "n/a",
        }
    }

    pub fn note(&self) -> &str {
        match self {
            Outcome::Pass(n) | Outcome::Fail(n) | Outcome::NotApplicable(n) => n,
        }
    }

    /// "pass", "FAIL: why", "n/a: why", on one line.
    pub fn cell(&self) -> String {
        let note = first_line(self.note());
        if note.is_empty() {
            self.word().to_string()
        } else {
            format!("{}: {note}", self.word())
        }
    }
}

/// One scenario's result: which row (peer or scenario) and column it fills.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub row: String,
    pub column: String,
    pub outcome: Outcome,
    pub seconds: f64,
}

/// Counts of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
    pub not_applicable: usize,
}

pub fn totals(entries: &[Entry]) -> Totals {
    let mut t = Totals::default();
    for e in entries {
        match e.outcome {
            Outcome::Pass(_) => t.passed += 1,
            Outcome::Fail(_) => t.failed += 1,
            Outcome::NotApplicable(_) => t.not_applicable += 1,
        }
    }
    t
}

/// The closing line test runners and CI read: `interop: N passed, N failed, N skipped`
/// (n/a cells count as skipped: each has its reason in the matrix).
pub fn summary_line(t: Totals) -> String {
    format!(
        "interop: {} passed, {} failed, {} skipped",
        t.passed, t.failed, t.not_applicable
    )
}

/// A Markdown table with `rows` × `columns`; a cell nobody filled reads "not run".
pub fn markdown(title: &str, rows: &[&str], columns: &[&str], entries: &[Entry]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {title} | {} |", columns.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(columns.len()));
    for row in rows {
        let cells: Vec<String> = columns
            .iter()
            .map(|col| {
                entries
                    .iter()
                    .find(|e| e.row == *row && e.column == *col)
                    .map(|e| escape(&e.outcome.cell()))
                    .unwrap_or_else(|| "not run".into())
            })
            .collect();
        let _ = writeln!(out, "| {row} | {} |", cells.join(" | "));
    }
    out
}

/// The same table for a terminal: one line per cell, grouped by row, so long reasons
/// stay readable.
pub fn text(title: &str, rows: &[&str], columns: &[&str], entries: &[Entry]) -> String {
    let width = columns.iter().map(|c| c.len()).max().unwrap_or(0);
    let mut out = format!("{title}\n");
    for row in rows {
        let _ = writeln!(out, "  {row}");
        for col in columns {
            let cell = entries
                .iter()
                .find(|e| e.row == *row && e.column == *col)
                .map(|e| format!("{} ({:.0} s)", e.outcome.cell(), e.seconds))
                .unwrap_or_else(|| "not run".into());
            let _ = writeln!(out, "    {col:<width$}  {cell}");
        }
    }
    out
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

fn escape(s: &str) -> String {
    s.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(row: &str, column: &str, outcome: Outcome) -> Entry {
        Entry {
            row: row.into(),
            column: column.into(),
            outcome,
            seconds: 1.0,
        }
    }

    #[test]
    fn cells_carry_word_and_first_line_of_the_note() {
        assert_eq!(Outcome::Pass(String::new()).cell(), "pass");
        assert_eq!(
            Outcome::Fail("timed out\nlogs…".into()).cell(),
            "FAIL: timed out"
        );
        assert_eq!(
            Outcome::NotApplicable("no RIB".into()).cell(),
            "n/a: no RIB"
        );
    }

    #[test]
    fn markdown_fills_cells_and_marks_the_missing() {
        let entries = vec![
            entry("bird", "session", Outcome::Pass(String::new())),
            entry("bird", "md5", Outcome::Fail("a|b".into())),
            entry("exabgp", "session", Outcome::NotApplicable("x".into())),
        ];
        let md = markdown("peer", &["bird", "exabgp"], &["session", "md5"], &entries);
        assert_eq!(
            md,
            "| peer | session | md5 |\n|---|---|---|\n| bird | pass | FAIL: a\\|b |\n| exabgp | n/a: x | not run |\n"
        );
        let t = totals(&entries);
        assert_eq!((t.passed, t.failed, t.not_applicable), (1, 1, 1), "{t:?}");
        assert_eq!(summary_line(t), "interop: 1 passed, 1 failed, 1 skipped");
    }

    #[test]
    fn text_lists_every_cell() {
        let entries = vec![entry("bird", "session", Outcome::Pass("ok".into()))];
        let t = text("matrix", &["bird"], &["session", "md5"], &entries);
        assert!(t.contains("session  pass: ok (1 s)"), "{t}");
        assert!(t.contains("md5      not run"), "{t}");
    }
}
