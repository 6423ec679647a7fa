//! Fuzz target `udptun_frame`: the invariants are in `socksref::proto::fuzzing::udptun_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| socksref::proto::fuzzing::udptun_frame(data));
