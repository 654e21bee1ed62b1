#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| chatd::fuzzing::ws_frame(data));
