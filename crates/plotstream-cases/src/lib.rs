//! The case catalogue of `plotstream conform` as data, without I/O: one TOML file per case in
//! `cases/` (embedded by `build.rs`), the bytes DSL that says what a case sends, and the
//! segmentation modes that cut those bytes into writes (docs/reliability.md §7–§8).
//!
//! Two runners read it. `plotstream conform` (in `plotstream-load`) sends the bytes over loopback
//! TCP to any endpoint and judges everything a case expects; the tests of `plotstream-proto` feed
//! the same bytes to the `Ingest` state machine and judge what one request on one connection
//! decides (status, lines accepted, the response, the same outcome in every mode). So each
//! real client's transcript and each adversarial case is written once, here.
//!
//! ```
//! let cases = plotstream_cases::catalogue().unwrap();
//! let b9 = cases.iter().find(|c| c.id == "B9").unwrap();
//! let items = b9.variants[0].bytes.as_ref().unwrap().eval(&b9.fixed_tokens()).unwrap();
//! let bytes = plotstream_cases::payload(&items);
//! assert!(bytes.ends_with(b"e\n{\"x\":1,\"y\":1}\n\r\n"));
//! ```
//!
//! Architecture Invariant: this crate depends on nothing of ours, so that `plotstream-proto`'s
//! tests can use it without a dependency cycle.

#![deny(missing_docs)]

mod case;
mod dsl;
mod error;
mod expect;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod load;
pub mod segment;
mod setup;

pub use case::{Case, ScriptStep, Variant, MAX_TOKEN_LEN};
pub use dsl::{
    payload, substitute_text, variables, Item, Program, END, MAX_DEPTH, MAX_EVAL_BYTES,
    MAX_EVAL_ITEMS, P1, P2,
};
pub use error::Error;
pub use expect::{Converted, End, Expect, NoStatus, StatusSpec};
pub use load::{catalogue, parse_case, ACCOUNT_VARIABLES, DEFAULT_WAIT_MS, STREAM_ID_VARIABLE};
pub use setup::{DuplicateMode, Level, LinesMode, Segmentation, Setup, SetupKind, TokensMode};
