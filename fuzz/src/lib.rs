//! Shared code of the fuzz targets. The reference targets' checks live in
//! `socksref::proto::fuzzing`; the harness's scenario check lives here, in a file the harness's
//! replay test includes too (`harness/tests/fuzz_corpus.rs`), so both call one function.

pub mod pcap_check;
pub mod scenario_check;
