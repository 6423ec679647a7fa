//! Replays every fuzz target's corpus (`fuzz/corpus/<target>/`) and any crash the engine left
//! (`fuzz/artifacts/<target>/`) through the same check functions the libFuzzer targets call, so
//! the invariants hold on a stable toolchain in every `cargo test` run.

use std::path::PathBuf;

use socksref::proto::fuzzing;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Every file under `fuzz/<kind>/<target>/`, sorted so failures are reproducible by name.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(target);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

#[test]
fn every_reference_target_has_a_seed_corpus_and_replays_clean() {
    let mut replayed = 0;
    for target in fuzzing::TARGETS.iter().copied().filter(|t| !fuzzing::HARNESS_TARGETS.contains(t)) {
        let corpus = inputs("corpus", target);
        assert!(!corpus.is_empty(), "fuzz/corpus/{target}/ is empty: run `cargo xtask fuzz --seed`");
        for path in corpus.iter().chain(inputs("artifacts", target).iter()) {
            let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // A panic here names the broken invariant; the file name says which input.
            eprintln!("replaying {}", path.display());
            assert!(fuzzing::run(target, &data), "{target} is not a reference target");
            replayed += 1;
        }
    }
    assert!(replayed > 0);
}

#[test]
fn unknown_target_names_are_reported_not_ignored() {
    assert!(!fuzzing::run("no_such_target", b""));
    assert!(!fuzzing::run("scenario", b""), "the scenario target belongs to the harness");
}
