#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plotstream_cases::fuzzing::check_conform_dsl(data));
