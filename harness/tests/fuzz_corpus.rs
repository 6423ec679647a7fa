//! Replays the `scenario` fuzz target's corpus and crash files (`fuzz/corpus/scenario/`,
//! `fuzz/artifacts/scenario/`) through the check the libFuzzer target calls.

use std::path::PathBuf;

#[path = "../../fuzz/src/scenario_check.rs"]
mod scenario_check;

#[path = "../../fuzz/src/pcap_check.rs"]
mod pcap_check;

fn files(kind: &str) -> Vec<PathBuf> {
    target_files(kind, "scenario")
}

fn target_files(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz").join(kind).join(target);
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn scenario_corpus_and_crash_files_replay_clean() {
    let corpus = files("corpus");
    assert!(!corpus.is_empty(), "fuzz/corpus/scenario/ is empty: run `cargo xtask fuzz --seed`");
    for p in corpus.iter().chain(files("artifacts").iter()) {
        eprintln!("replaying {}", p.display());
        scenario_check::check(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())));
    }
}

#[test]
fn a_catalogue_style_template_matches_its_own_rendering() {
    // The check must really exercise the template: a scenario's send step renders and matches.
    let vars = scenario_check::fixed_vars();
    let t = sockslab::scenario::Template::parse("05 01 00 ; 05 01 00 01 {target.addr} {target.port}").unwrap();
    assert_eq!(scenario_check::render_send(&t, &vars).unwrap(), [5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 7]);
}

#[test]
fn pcap_reader_corpus_and_crash_files_replay_clean() {
    let corpus = target_files("corpus", "pcap_reader");
    assert!(!corpus.is_empty(), "fuzz/corpus/pcap_reader/ is empty: run `cargo xtask fuzz --seed`");
    for p in corpus.iter().chain(target_files("artifacts", "pcap_reader").iter()) {
        eprintln!("replaying {}", p.display());
        pcap_check::check(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())));
    }
}

#[test]
fn the_pcap_seed_corpus_holds_real_conversations() {
    // The check must reach the dissector: at least one seed decodes to a SOCKS conversation.
    let decoded = target_files("corpus", "pcap_reader")
        .iter()
        .filter_map(|p| sockslab::pcap::dissect_bytes(&std::fs::read(p).ok()?).ok())
        .filter(|d| !d.conversations.is_empty())
        .count();
    assert!(decoded > 0);
}
