//! The harness's capture reader, reassembly and dissector (see `sockslab_fuzz::pcap_check`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sockslab_fuzz::pcap_check::check(data));
