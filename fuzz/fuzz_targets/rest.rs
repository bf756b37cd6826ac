#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plotstream_server::fuzzing::check_rest(data));
