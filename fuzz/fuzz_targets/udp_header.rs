//! Fuzz target `udp_header`: the invariants are in `socksref::proto::fuzzing::udp_header`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| socksref::proto::fuzzing::udp_header(data));
