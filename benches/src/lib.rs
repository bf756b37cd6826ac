//! Criterion benches of plotstream hot paths; see `benches/`.
