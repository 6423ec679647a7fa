//! The in-process tier over every transport (docs/transports.md): the whole client-role
//! catalogue against the in-process reference, reached through tls, ws, wss, mtls, mws, mwss
//! and kcp. A verdict must not depend on the transport: every scenario passes, except those the
//! runner marks not applicable with the reason (a half-close a WebSocket or an smux stream —
//! kcp's streams are smux streams — cannot carry), and those must be exactly the half-close ones.

use std::path::Path;

use rstest::rstest;
use rstest_reuse::apply;
use sockslab::reference::{self, RefOptions};
use sockslab::runner::{run_scenario, RunOptions};
use sockslab::scenario::{load_catalogue, Role, Scenario, Schedule, StepKind};
use sockslab::verdict::{Expectations, Verdict};
use socksref::transport::{Kind, TransportSpec};

/// The repository's scenario catalogue.
fn catalogue() -> Vec<Scenario> {
    load_catalogue(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")).expect("catalogue loads")
}

#[apply(testkit::tunnels)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalogue_passes_over_the_transport(#[case] kind: Kind) {
    let catalogue = catalogue();
    let spec = TransportSpec::new(kind);
    // The delivery schedules are the plain-TCP tier's business; here one schedule per scenario
    // checks that the transport changes nothing.
    let opts = RunOptions { schedules: vec![Schedule::AsWritten], ..RunOptions::default() };
    let mut failed = Vec::new();
    let (mut passed, mut na) = (0, 0);
    let scenarios: Vec<_> = catalogue.into_iter().filter(|s| s.roles.contains(&Role::Client)).collect();
    let mut set = tokio::task::JoinSet::new();
    for chunk in scenarios.chunks(scenarios.len().div_ceil(8)).map(|c| c.to_vec()) {
        let (spec, opts) = (spec.clone(), opts.clone());
        set.spawn(async move {
            let mut out = Vec::new();
            for scn in chunk {
                let server = reference::start_on(&RefOptions::for_needs(&scn.needs), None, &spec)
                    .await
                    .expect("reference starts");
                let r = run_scenario(&scn, &server.sut, &opts, &Expectations::default()).await;
                let half = scn.steps.iter().any(|s| matches!(s.kind, StepKind::HalfClose | StepKind::ExpectHalfClose));
                // Over kcp (UDP) the proxy's own TCP port is no loop: the self-connect scenarios.
                let own_port = kind == Kind::Kcp && scn.refs.iter().any(|r| r == "V-22");
                out.push((scn.id.clone(), half || own_port, r));
            }
            out
        });
    }
    while let Some(j) = set.join_next().await {
        for (id, half, r) in j.expect("no panic") {
            match &r.verdict {
                Verdict::Pass => passed += 1,
                Verdict::NotApplicable { reason } => {
                    na += 1;
                    // The reference claims everything the catalogue needs (the plain tier checks
                    // that), so the transport is the only acceptable reason.
                    let by_transport = reason.contains("transport cannot carry");
                    if !(by_transport && half) {
                        failed.push(format!("{id}: not applicable over {kind}: {reason}"));
                    }
                }
                v => failed.push(format!(
                    "{id}: {v:?}: {}",
                    r.failures
                        .iter()
                        .map(|f| format!("step {:?}: {}", f.step, f.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                )),
            }
        }
    }
    assert!(
        failed.is_empty(),
        "over {kind}: {} passed, {na} n/a, {} failed:\n{}",
        passed,
        failed.len(),
        failed.join("\n")
    );
    assert!(passed > 100, "over {kind}: only {passed} scenarios ran");
    eprintln!("catalogue over {kind}: {passed} pass, {na} not applicable");
}

/// The runner flushes after every send step: over TLS a write may stay inside rustls when the
/// socket reports not-ready (tokio's cooperative budget does that after ~128 writes in a row),
/// so a long message sent one byte per write lost its last 34 bytes until the runner flushed
/// (`rfc1928.method.nmethods-255-duplicates`: 223 of 257 one-byte records went out).
#[rstest]
#[case::tls(Kind::Tls)]
#[case::wss(Kind::Wss)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_messages_written_one_byte_at_a_time_arrive_whole(#[case] kind: Kind) {
    let catalogue = catalogue();
    let spec = TransportSpec::new(kind);
    let opts = RunOptions { schedules: vec![Schedule::OneByte], ..RunOptions::default() };
    let ids = ["rfc1928.method.nmethods-255-duplicates", "regressions.v17.domain-255-octets"];
    for id in ids {
        let scn = catalogue.iter().find(|s| s.id == id).unwrap_or_else(|| panic!("{id} is in the catalogue"));
        let server =
            reference::start_on(&RefOptions::for_needs(&scn.needs), None, &spec).await.expect("reference starts");
        let r = run_scenario(scn, &server.sut, &opts, &Expectations::default()).await;
        assert_eq!(r.verdict, Verdict::Pass, "{id} over {kind}, one byte per write: {:?}", r.failures);
    }
}
