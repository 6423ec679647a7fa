//! Fuzz target `server_handshake`: the invariants are in `socksref::proto::fuzzing::server_handshake`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| socksref::proto::fuzzing::server_handshake(data));
