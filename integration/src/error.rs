//! The one error type of the test bed. Every variant names what was attempted, so a
//! failing test reads as a sentence without a backtrace.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(thiserror::Error)]
pub enum Error {
    /// A command ran and exited unsuccessfully.
    #[error("`{command}` failed ({status})\n--- stderr ---\n{stderr}\n--- stdout ---\n{stdout}")]
    Command {
        command: String,
        status: String,
        stdout: String,
        stderr: String,
    },

    /// A command could not be started at all.
    #[error("could not run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },

    /// A tool the test needs is not installed.
    #[error("`{tool}` is not installed: apt-get install {package}")]
    MissingTool { tool: String, package: String },

    /// Network namespaces, daemons on port 179 and TCP MD5 all need root.
    #[error("the test bed must run as root (effective uid is {euid}): network namespaces need it")]
    NotRoot { euid: u32 },

    /// `wait_until` ran out of time.
    #[error("timed out after {waited:?} waiting for {what}; last observed: {last}")]
    Timeout {
        what: String,
        waited: Duration,
        last: String,
    },

    /// The spec asks for something this daemon cannot be configured to do.
    #[error("{daemon} cannot be configured for {feature}")]
    Unsupported {
        daemon: &'static str,
        feature: String,
    },

    /// A daemon answered in a form the parser does not understand.
    #[error("could not read {what} from {daemon}: {detail}\n--- output ---\n{output}")]
    Parse {
        daemon: &'static str,
        what: String,
        detail: String,
        output: String,
    },

    /// A file or directory operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A spec value that no daemon could accept (e.g. a password with a quote in it).
    #[error("invalid spec: {0}")]
    InvalidSpec(String),

    /// A daemon was asked something while it is stopped.
    #[error("{daemon} is not running")]
    NotRunning { daemon: String },

    /// A scenario checked something and it did not hold.
    #[error("check failed: {0}")]
    Check(String),

    /// The User-Mode Linux runner could not be used.
    #[error("User-Mode Linux: {0}")]
    Uml(String),
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn parse(
        daemon: &'static str,
        what: impl Into<String>,
        detail: impl fmt::Display,
        output: &str,
    ) -> Self {
        const KEEP: usize = 4000;
        let output = if output.len() > KEEP {
            let mut end = KEEP;
            while !output.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}… ({} bytes in all)", &output[..end], output.len())
        } else {
            output.to_string()
        };
        Error::Parse {
            daemon,
            what: what.into(),
            detail: detail.to_string(),
            output,
        }
    }
}

/// Tests return `Result<(), Error>`; the test runner prints the error with `Debug`, so
/// `Debug` says the same sentence as `Display` plus the chain of causes.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")?;
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            write!(f, "\ncaused by: {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
