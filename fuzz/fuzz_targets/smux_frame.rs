//! Fuzz target `smux_frame`: the invariants are in `socksref::proto::fuzzing::smux_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| socksref::proto::fuzzing::smux_frame(data));
