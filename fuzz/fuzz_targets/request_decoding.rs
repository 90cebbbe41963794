//! `token_broker::fuzzing::request_decoding`: see its documentation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| token_broker::fuzzing::request_decoding(data));
