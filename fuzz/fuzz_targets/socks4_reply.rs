//! Fuzz target `socks4_reply`: the invariants are in `socksref::proto::fuzzing::socks4_reply`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| socksref::proto::fuzzing::socks4_reply(data));
