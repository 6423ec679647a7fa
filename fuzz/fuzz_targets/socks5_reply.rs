//! Fuzz target `socks5_reply`: the invariants are in `socksref::proto::fuzzing::socks5_reply`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| socksref::proto::fuzzing::socks5_reply(data));
