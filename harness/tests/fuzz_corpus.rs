//! Replays the `scenario` fuzz target's corpus and crash files (`fuzz/corpus/scenario/`,
//! `fuzz/artifacts/scenario/`) through the check the libFuzzer target calls.

use std::path::PathBuf;

#[path = "../../fuzz/src/scenario_check.rs"]
mod scenario_check;

fn files(kind: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz").join(kind).join("scenario");
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
