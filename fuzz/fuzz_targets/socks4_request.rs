//! Fuzz target `socks4_request`: the invariants are in `socksref::proto::fuzzing::socks4_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| socksref::proto::fuzzing::socks4_request(data));
