#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatd::fuzzing::roster(data));
