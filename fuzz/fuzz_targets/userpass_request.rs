//! Fuzz target `userpass_request`: the invariants are in `socksref::proto::fuzzing::userpass_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| socksref::proto::fuzzing::userpass_request(data));
