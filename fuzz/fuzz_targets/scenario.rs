//! Scenario YAML and byte-template parser of the harness (see `sockslab_fuzz::scenario_check`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sockslab_fuzz::scenario_check::check(data));
