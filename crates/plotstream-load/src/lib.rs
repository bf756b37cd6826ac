//! `plotstream load` and `plotstream conform`: an open-loop load generator that proves nothing
//! was lost, and a conformance runner for any Plotly-streaming endpoint. Shaped like oha: the
//! binary's `main` is thin, each command is `run(opts)` here, one module per concern. Both
//! read a target's side routes (inspection, `/metrics`, the SSE viewer) and recompute digests
//! through one `probe` module.

#![deny(missing_docs)]

pub mod conform;
pub mod error;
pub mod load;
mod probe;

pub use error::{Error, Result};
