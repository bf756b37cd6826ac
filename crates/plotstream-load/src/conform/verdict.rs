//! The verdict types: what happened to a case, to each of its variants and to one run
//! (docs/reliability.md §8). `execute`, `judge` and `drivers` produce them and `report` prints
//! them; each imports them from here, so `report` imports nothing back from the runner.

use std::time::Duration;

use plotstream_cases::Level;

/// A case's class (docs/reliability.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Passed.
    Pass,
    /// A SHOULD failed.
    NonStrict,
    /// An INFO case, recorded.
    Info,
    /// A MUST or COMPAT case failed (or any case was inconsistent across modes).
    Fail,
    /// A precondition is missing.
    Skip,
}

impl Verdict {
    /// The word printed in reports.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::NonStrict => "NON-STRICT",
            Verdict::Info => "INFO",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        }
    }
}

/// What happened to one variant.
#[derive(Debug, Clone)]
pub struct VariantReport {
    /// The variant's name (empty for one-variant cases).
    pub name: String,
    /// Pass, or why not.
    pub outcome: VariantOutcome,
    /// Per mode: the mode, how many runs, and how many matched.
    pub modes: Vec<(String, usize, usize)>,
    /// Every acceptable outcome.
    pub expected: Vec<String>,
    /// The outcome of the first run (or of the failing one).
    pub actual: String,
    /// The failing run's wire log (or the first run's), as a hex dump.
    pub wire: String,
    /// Side remarks (limit counters not observed, after-EOF reactions).
    pub notes: Vec<String>,
}

/// A variant's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VariantOutcome {
    /// Every mode matched.
    Pass,
    /// Some run did not match: where and why.
    Fail(String),
    /// A mode disagreed with another (fails even INFO cases).
    Inconsistent(String),
    /// Not run, or not provable: why.
    Skip(String),
}

/// What happened to one case.
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// Id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Level.
    pub level: Level,
    /// Citations.
    pub anchor: Vec<String>,
    /// Class.
    pub verdict: Verdict,
    /// One line: why it failed or was skipped.
    pub reason: String,
    /// Per variant.
    pub variants: Vec<VariantReport>,
    /// Wall time.
    pub duration: Duration,
    /// The case's note.
    pub note: Option<String>,
}

impl VariantReport {
    /// A variant report with only a name and an outcome (nothing was run, or a driver ran).
    pub fn new(name: &str, outcome: VariantOutcome) -> VariantReport {
        VariantReport {
            name: name.to_owned(),
            outcome,
            modes: Vec::new(),
            expected: Vec::new(),
            actual: String::new(),
            wire: String::new(),
            notes: Vec::new(),
        }
    }
}

/// How one run compares with its variant's expectations.
#[derive(Debug)]
pub(crate) enum Match {
    /// It matched.
    Yes,
    /// Everything but a timing bound matched (see `judge::Timing`): judged again on a quiet
    /// rerun.
    Late(String),
    /// It did not match.
    No(String),
    /// The target cannot show what the expectation needs (no inspection route, no metrics).
    Unobservable(String),
}

impl Match {
    /// Why it did not match (empty for `Yes`).
    pub fn into_reason(self) -> String {
        match self {
            Match::Yes => String::new(),
            Match::No(why) | Match::Late(why) | Match::Unobservable(why) => why,
        }
    }
}

/// Every note about a quiet rerun contains this (`report` shows such notes even for passing
/// cases).
pub const RERUN_MARK: &str = "quiet rerun";
