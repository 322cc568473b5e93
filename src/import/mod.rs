//! Importing another system's configuration into serval resources. Each importer turns
//! documents into serval documents (`serval.dev/v1`, the shape `serval apply -f` and
//! `kubectl apply -f` take) and a list of [`Finding`]s: every field it could not carry
//! over, with the document, the field path and why. Nothing is dropped silently.

pub mod calico;

use std::fmt;

/// What happened to a part of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Carried over in another form (a deprecated field, a different name); said so
    /// that nobody is surprised by the output.
    Converted,
    /// Not carried over; what was imported still does what it did, minus this field.
    Dropped,
    /// The whole document was not imported: serval has no equivalent, or dropping the
    /// field would make the resource select or allow more than it did.
    Skipped,
    /// The document is invalid as serval reads it (a value serval rejects).
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Converted => "converted",
            Severity::Dropped => "not carried",
            Severity::Skipped => "document skipped",
            Severity::Error => "error",
        })
    }
}

/// One field (or document) that did not come over as it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// `FILE: document N (KIND NAME)`.
    pub document: String,
    /// The field path in the input document (`spec.failureDetectionMode`), or `` for
    /// the whole document.
    pub path: String,
    pub severity: Severity,
    /// Why.
    pub reason: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}: {}", self.document, self.severity, self.reason)
        } else {
            write!(
                f,
                "{}: {}: {}: {}",
                self.document, self.path, self.severity, self.reason
            )
        }
    }
}

/// The result of an import: serval documents in input order, and the findings.
#[derive(Clone, Debug, Default)]
pub struct Imported {
    pub documents: Vec<serde_json::Value>,
    pub findings: Vec<Finding>,
}

impl Imported {
    /// Whether some input could not be imported at all (skipped or invalid documents).
    pub fn incomplete(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.severity >= Severity::Skipped)
    }
}
