//! A tokio writer for Rust programs that stream points to a plotstream (or any Plotly
//! streaming) endpoint: a thin driver around `plotstream_proto::writer::Writer`.
//!
//! Not built yet (issue 5).

#![deny(missing_docs)]
