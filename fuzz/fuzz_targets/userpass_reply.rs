//! Fuzz target `userpass_reply`: the invariants are in `socksref::proto::fuzzing::userpass_reply`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| socksref::proto::fuzzing::userpass_reply(data));
