//! Fuzz target `proxy_url`: the invariants are in `socksref::proto::fuzzing::proxy_url`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| socksref::proto::fuzzing::proxy_url(data));
