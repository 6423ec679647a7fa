//! The catalogue against the in-process reference server: every scenario, under every delivery
//! schedule, must pass, and its normalized transcript (ports redacted, no timings) must match the
//! committed `insta` snapshot. One snapshot per scenario serves all four schedules, so a server
//! whose behaviour depends on how bytes are cut into writes fails here.

use std::path::{Path, PathBuf};

use rstest::rstest;
use sockslab::coverage::{Coverage, Requirements};
use sockslab::reference::{self, RefOptions};
use sockslab::runner::client;
use sockslab::scenario::{load_catalogue, Role, Scenario, Schedule};

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_passes_scenario(
    #[files("../scenarios/**/*.yaml")] path: PathBuf,
    #[values("as-written", "one-byte", "coalesced", "field-split")] schedule: &str,
) {
    if path.file_name().is_some_and(|n| n == "requirements.yaml") {
        return;
    }
    let scn = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let schedule = Schedule::from_name(schedule).expect("known schedule");
    if !scn.roles.contains(&Role::Client) || !scn.schedules().contains(&schedule) {
        // The scenario declares this schedule meaningless (with a reason in its notes).
        return;
    }
    let server = reference::start(&RefOptions::for_needs(&scn.needs), None).await.expect("reference starts");
    if let Some(why) = server.sut.claims.not_applicable(&scn) {
        panic!("{}: the reference must claim what every scenario needs, but: {why}", scn.id);
    }
    let transcript = client::play(&scn, schedule, &server.sut).await.unwrap_or_else(|f| {
        panic!(
            "{} [{}] failed at step {:?}: {}\ntranscript so far:\n{}",
            scn.id,
            schedule.name(),
            f.step,
            f.message,
            f.transcript.lines().join("\n")
        )
    });
    let mut settings = insta::Settings::clone_current();
    settings.set_info(&scn.title);
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| insta::assert_snapshot!(scn.id.clone(), transcript.lines().join("\n")));
}

#[test]
fn catalogue_is_large_unique_and_fully_referenced() {
    let dir = scenarios_dir();
    let all = load_catalogue(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(all.len() >= 80, "only {} scenarios", all.len());
    let reqs = Requirements::load(&dir.join("requirements.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let cov = Coverage::compute(&reqs, &all);
    assert!(cov.dangling.is_empty(), "references to unknown requirements: {:?}", cov.dangling);
    let unexplained: Vec<&str> = cov.uncovered().iter().filter(|r| r.role.is_none()).map(|r| r.id.as_str()).collect();
    assert!(unexplained.is_empty(), "uncovered statements without a reason: {unexplained:?}");
    for s in &all {
        assert!(!s.refs.is_empty(), "{} cites no requirement", s.id);
    }
    for id in ["regressions.v01.udp-without-any-tcp", "regressions.v01.udp-from-unassociated-socket"] {
        assert!(all.iter().any(|s| s.id == id), "V-01 scenario {id} is missing");
    }
}

#[test]
fn every_peer_definition_and_expected_results_file_loads() {
    let peers = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers");
    let ids: Vec<String> = load_catalogue(&scenarios_dir()).expect("catalogue").into_iter().map(|s| s.id).collect();
    for e in std::fs::read_dir(&peers).expect("peers dir") {
        let dir = e.expect("entry").path();
        if !dir.join("peer.yaml").exists() {
            continue;
        }
        let def = sockslab::peers::PeerDef::load(&dir).unwrap_or_else(|e| panic!("{e}"));
        let exp = def.expectations().unwrap_or_else(|e| panic!("{e}"));
        for f in &exp.expected_failures {
            assert!(ids.contains(&f.id), "{}: expected failure for unknown scenario {}", def.name, f.id);
            assert!(f.reason.len() > 10, "{}: {} needs a real reason", def.name, f.id);
        }
    }
}
