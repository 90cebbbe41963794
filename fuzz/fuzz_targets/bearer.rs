//! `token_broker::fuzzing::bearer`: see its documentation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| token_broker::fuzzing::bearer(data));
