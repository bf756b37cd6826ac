//! Why a load or conformance run could not be carried out. A failed case or a lost point is not
//! an error: it is in the report. These are the runs that could not start or could not go on.

use std::fmt;

/// The error of `plotstream load` and `plotstream conform` as a library.
#[derive(Debug)]
pub enum Error {
    /// A flag's value cannot be used (the message names the flag).
    Usage(String),
    /// The target cannot be reached, or refused what the run needs from it.
    Target(String),
    /// A script step could not run: a capture found nothing, a response was not what it needs.
    Script(String),
    /// A file of the report could not be written.
    Io {
        /// What was being done, with the path.
        what: String,
        /// The OS's reason.
        source: std::io::Error,
    },
    /// The runner itself failed: a task panicked or the runner was shut.
    Runner(String),
    /// A case of the catalogue could not be made into bytes.
    Case(plotstream_cases::Error),
}

impl Error {
    /// An I/O error while doing `what`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) | Error::Target(m) | Error::Script(m) | Error::Runner(m) => {
                f.write_str(m)
            }
            Error::Io { what, source } => write!(f, "{what}: {source}"),
            Error::Case(e) => write!(f, "case: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Case(e) => Some(e),
            _ => None,
        }
    }
}

impl From<plotstream_cases::Error> for Error {
    fn from(e: plotstream_cases::Error) -> Error {
        Error::Case(e)
    }
}

impl From<crate::probe::http::Error> for Error {
    fn from(e: crate::probe::http::Error) -> Error {
        Error::Target(e.to_string())
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
