//! `token_broker::fuzzing::inline_policy`: see its documentation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| token_broker::fuzzing::inline_policy(data));
