//! What a case runs under: its requirement level, the segmentation modes that cut its bytes
//! into writes, and the server configuration it needs (docs/reliability.md §5, §7).

use std::fmt;

use serde::Deserialize;

/// Requirement level (docs/reliability.md, top).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Level {
    /// A failure fails CI.
    #[serde(rename = "MUST")]
    Must,
    /// A failure is NON-STRICT; it fails only under `--strict`.
    #[serde(rename = "SHOULD")]
    Should,
    /// Required because a real client depends on it; a failure fails CI.
    #[serde(rename = "COMPAT")]
    Compat,
    /// Recorded, never failed, but the same in every segmentation mode.
    #[serde(rename = "INFO")]
    Info,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Must => "MUST",
            Level::Should => "SHOULD",
            Level::Compat => "COMPAT",
            Level::Info => "INFO",
        })
    }
}

/// How the bytes are cut into writes (docs/reliability.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Segmentation {
    /// W: every pause-separated part in one write.
    Whole,
    /// W, but also cut at every `|` of the program: the writes a real client makes.
    Timed,
    /// O: W plus one cut after byte k.
    Split,
    /// B: one byte per write.
    Bytewise,
}

impl fmt::Display for Segmentation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Segmentation::Whole => "whole",
            Segmentation::Timed => "timed",
            Segmentation::Split => "split",
            Segmentation::Bytewise => "bytewise",
        })
    }
}

/// The server configuration a case needs (`[reg]`, `[len]`, `[rej]` in §5; accounts for group K).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    /// `open` (default) or `registered`.
    #[serde(default)]
    pub tokens: TokensMode,
    /// `strict` (default) or `lenient`.
    #[serde(default)]
    pub lines: LinesMode,
    /// `takeover` (default) or `reject`.
    #[serde(default)]
    pub on_duplicate: DuplicateMode,
    /// The target has accounts (group K): `--target-accounts`, else `--target`.
    #[serde(default)]
    pub accounts: bool,
    /// Tokens the target must know in registered mode. The runner registers fresh tokens for
    /// every placeholder of length 10, so this is documentation.
    #[serde(default)]
    pub registered: Vec<String>,
}

/// `--tokens`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokensMode {
    /// Any well-formed token names a stream.
    #[default]
    Open,
    /// Only registered tokens are admitted.
    Registered,
}

/// `--lenient-lines` or not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinesMode {
    /// The first bad line gets 422.
    #[default]
    Strict,
    /// Bad lines are skipped and counted.
    Lenient,
}

/// `--on-duplicate`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DuplicateMode {
    /// The new writer displaces the old one.
    #[default]
    Takeover,
    /// The new writer gets 423.
    Reject,
}

impl Setup {
    /// Which target serves this setup: `None` for the default one.
    pub fn kind(&self) -> Option<SetupKind> {
        if self.tokens == TokensMode::Registered {
            Some(SetupKind::Registered)
        } else if self.lines == LinesMode::Lenient {
            Some(SetupKind::Lenient)
        } else if self.on_duplicate == DuplicateMode::Reject {
            Some(SetupKind::Reject)
        } else if self.accounts {
            Some(SetupKind::Accounts)
        } else {
            None
        }
    }

    pub(crate) fn n_special(&self) -> usize {
        usize::from(self.tokens == TokensMode::Registered)
            + usize::from(self.lines == LinesMode::Lenient)
            + usize::from(self.on_duplicate == DuplicateMode::Reject)
            + usize::from(self.accounts)
    }
}

/// A non-default server configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SetupKind {
    /// `--tokens registered`.
    Registered,
    /// `--lenient-lines`.
    Lenient,
    /// `--on-duplicate reject`.
    Reject,
    /// Accounts (plotstream: `serve --users FILE`); `--target` when no accounts target is given.
    Accounts,
}

impl fmt::Display for SetupKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SetupKind::Registered => "registered",
            SetupKind::Lenient => "lenient",
            SetupKind::Reject => "reject",
            SetupKind::Accounts => "accounts",
        })
    }
}
