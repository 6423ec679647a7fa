//! Fuzz target `socks5_greeting`: the invariants are in `socksref::proto::fuzzing::socks5_greeting`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| socksref::proto::fuzzing::socks5_greeting(data));
