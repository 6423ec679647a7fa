//! Fuzz target `socks5_method`: the invariants are in `socksref::proto::fuzzing::socks5_method`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| socksref::proto::fuzzing::socks5_method(data));
