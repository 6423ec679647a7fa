//! sockslab: a conformance lab for SOCKS4/4a/5 clients and servers.
//!
//! Data flows one way: scenario → runner → peer → transcript → verdicts → report/snapshots.
//! [`scenario`] loads the YAML catalogue, [`runner`] plays it (as client or server, under every
//! delivery schedule) against [`fixtures`] on loopback, [`verdict`] decides outcomes against a
//! peer's expected results, [`report`] writes JSON/JUnit, [`coverage`] maps scenarios to the
//! normative statements they test, and [`peers`] starts real servers (and the in-process
//! [`reference`]) to check. [`select`] is the one `--only` glob syntax of every tool.

pub mod coverage;
pub mod fixtures;
pub mod pcap;
pub mod peers;
pub mod preflight;
pub mod profile;
pub mod reference;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod select;
pub mod transcript;
pub mod verdict;

use std::path::PathBuf;

/// The catalogue directory: `./scenarios` when run from the workspace root, else the one next to
/// this crate.
pub fn default_scenarios_dir() -> PathBuf {
    let here = PathBuf::from("scenarios");
    if here.join("requirements.yaml").exists() {
        return here;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

/// The peers directory next to this crate (`harness/peers`).
pub fn default_peers_dir() -> PathBuf {
    let here = PathBuf::from("harness/peers");
    if here.exists() {
        return here;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers")
}
