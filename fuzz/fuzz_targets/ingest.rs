#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| plotstream_proto::fuzzing::check_ingest(data));
