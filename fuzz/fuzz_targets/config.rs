#![no_main]
//! `plotstream serve --config FILE`: the binary's own parser and `serve`'s flags, included by
//! path (the `plotstream` package is a binary; as a dependency it would bring the load
//! generator into this build).

#[allow(dead_code)]
#[path = "../../crates/plotstream/src/config_file.rs"]
mod config_file;
#[allow(dead_code)]
#[path = "../../crates/plotstream/src/serve_args.rs"]
mod serve_args;

libfuzzer_sys::fuzz_target!(|data: &[u8]| config_file::check_document(
    data,
    &serve_args::command()
));
