//! The one error type of the catalogue.

use std::fmt;

/// Why a case file or a program of the bytes DSL was refused.
#[derive(Debug)]
pub enum Error {
    /// A program of the bytes DSL does not parse or cannot be evaluated.
    Dsl(String),
    /// A case file is not TOML of the case schema.
    Toml(toml::de::Error),
    /// A case file parses but breaks a rule of the catalogue.
    Case(String),
    /// The error, and where it happened (a file, a variant).
    At {
        /// `cases/B9.toml`, `variant "size line": bytes`.
        at: String,
        /// What went wrong there.
        source: Box<Error>,
    },
}

impl Error {
    /// The error, said to have happened at `at`.
    pub fn at(self, at: impl Into<String>) -> Error {
        Error::At {
            at: at.into(),
            source: Box::new(self),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Dsl(why) | Error::Case(why) => f.write_str(why),
            Error::Toml(e) => write!(f, "{e}"),
            Error::At { at, source } => write!(f, "{at}: {source}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<toml::de::Error> for Error {
    fn from(e: toml::de::Error) -> Error {
        Error::Toml(e)
    }
}

/// `return Err(Error::Dsl(format!(…)))` and the like: `bail!(Dsl, "…", args)`.
macro_rules! bail {
    ($kind:ident, $($arg:tt)*) => {
        return Err($crate::error::Error::$kind(format!($($arg)*)))
    };
}

pub(crate) use bail;
