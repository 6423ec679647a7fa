//! Fuzz target `socks5_request`: the invariants are in `socksref::proto::fuzzing::socks5_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| socksref::proto::fuzzing::socks5_request(data));
