//! The lab's catalogue section: the harness's scenarios against every server peer's catalogue
//! instances, graded by the harness runner with the peer's expected results, each scenario a cell.

use std::collections::BTreeSet;
use std::time::Instant;

use super::servers::{self, Config, Server};
use super::{reproduce, tally, Cell, CellResult, Kind, Lab, Phases, Planned, Verdict, STRICT};
use crate::peers::{Backend, Feature, PeerId};

/// The catalogue against every server peer that has scenario cells to run.
pub(super) async fn run_catalogues(
    lab: &Lab,
    p: &Planned,
    to_run: &[Cell],
    schedules: Option<&[String]>,
    phases: &mut Phases,
    done: &mut usize,
    total: usize,
) -> Vec<CellResult> {
    let mut results = Vec::new();
    // The catalogue against every server peer.
    let mut catalogue_servers = BTreeSet::new();
    for c in to_run.iter().filter(|c| c.kind == Kind::Scenario) {
        catalogue_servers.insert(c.server);
    }
    for s in catalogue_servers {
        let wanted: BTreeSet<String> = to_run
            .iter()
            .filter(|c| c.kind == Kind::Scenario && c.server == s)
            .map(|c| c.id.trim_start_matches(&format!("scenario.{}.", s.name())).to_string())
            .collect();
        let scns: Vec<_> = p.catalogue.iter().filter(|x| wanted.contains(&x.id)).cloned().collect();
        results.extend(run_catalogue(lab, s, &scns, done, total, schedules).await);
        phases.end(format!("catalogue against {s}"));
    }
    results
}

/// The gost extension a catalogue scenario exercises, from its id (`gost.<extension>.…`).
fn gost_extension(id: &str) -> Option<Feature> {
    let rest = id.strip_prefix("gost.")?;
    Some(match rest.split('.').next()? {
        "mbind" => Feature::Mbind,
        "udp-tun" => Feature::UdpTun,
        "tls" | "tls-methods" => Feature::TlsMethods,
        // Any other gost scenario: treat as needing every extension gost has (only gost claims that).
        _ => Feature::Mbind,
    })
}

/// The catalogue's instances of a server peer, in the order scenarios pick them (the first that
/// applies): narrow configurations first, so "UDP disabled" scenarios find one.
pub(super) fn catalogue_configs(peer: PeerId) -> Vec<Config> {
    match peer {
        PeerId::Reference => vec![
            Config::Catalogue("plain"),
            Config::Catalogue("auth-plain"),
            Config::Open,
            Config::Auth,
            Config::Catalogue("bind"),
        ],
        // gost's SOCKS4 handler is a separate service: its own instance for the SOCKS4 scenarios.
        PeerId::Gost => vec![Config::Open, Config::Auth, Config::Catalogue("socks4")],
        _ => vec![Config::Open, Config::Auth],
    }
}

/// The catalogue's scenarios `scns` against `peer`'s catalogue instances, graded by the harness.
async fn run_catalogue(
    lab: &Lab,
    peer: PeerId,
    scns: &[sockslab::scenario::Scenario],
    done: &mut usize,
    total: usize,
    schedules: Option<&[String]>,
) -> Vec<CellResult> {
    let t = Instant::now();
    let mut out = Vec::new();
    let (unclaimed, scns) = split_unclaimed_extensions(peer, scns);
    for (scn, reason) in unclaimed {
        let r = CellResult::decided(
            Cell::scenario(peer, &scn),
            Verdict::NotApplicable { reason },
            String::new(),
            lab.backend,
        );
        tally(&mut out, r, done, total);
    }
    let started = match start_catalogue_instances(lab, peer).await {
        Ok(started) => started,
        Err(e) => {
            for s in &scns {
                let detail = format!("could not start the server instances: {e}");
                tally(
                    &mut out,
                    CellResult::decided(Cell::scenario(peer, &s.id), Verdict::Fail, detail, lab.backend),
                    done,
                    total,
                );
            }
            return out;
        }
    };
    let suts: Vec<_> = started.iter().map(Server::sut).collect();
    let mut opts = sockslab::runner::RunOptions::default();
    if let Some(names) = schedules {
        opts.schedules = names.iter().filter_map(|n| sockslab::scenario::Schedule::from_name(n)).collect();
    }
    let expectations = lab.expected.get(&peer).cloned().unwrap_or_default();
    let results = sockslab::runner::run_all(&scns, &suts, &opts, &expectations, |_, _, _| {}).await;
    let mut logs = String::new();
    for s in &started {
        logs.push_str(&format!("--- {} instance {}\n{}\n", peer, s.config.name(), s.running.logs().await));
    }
    for s in started {
        s.running.stop().await;
    }
    for r in results {
        tally(&mut out, scenario_result(peer, r, &logs, lab.backend), done, total);
    }
    eprintln!("interop: catalogue against {peer} took {:.1} s", t.elapsed().as_secs_f64());
    out
}

/// Splits off the gost-extension scenarios `peer` does not claim, with why they do not apply.
/// Their `needs` say only `command: udp` etc., which every UDP server claims; the peer's own
/// capabilities decide them instead.
fn split_unclaimed_extensions(
    peer: PeerId,
    scns: &[sockslab::scenario::Scenario],
) -> (Vec<(String, String)>, Vec<sockslab::scenario::Scenario>) {
    let mut unclaimed = Vec::new();
    let mut runnable = Vec::new();
    for scn in scns {
        match gost_extension(&scn.id).filter(|f| !peer.caps().server.contains(f)) {
            Some(f) => unclaimed.push((scn.id.clone(), format!("{peer} does not claim gost's {}", f.name()))),
            None => runnable.push(scn.clone()),
        }
    }
    (unclaimed, runnable)
}

/// Starts every catalogue instance of `peer`; if one fails, stops those started and says why.
async fn start_catalogue_instances(lab: &Lab, peer: PeerId) -> std::result::Result<Vec<Server>, String> {
    let mut started = Vec::new();
    let mut err = None;
    for c in catalogue_configs(peer) {
        match servers::start(peer, &lab.launchers[&peer], c).await {
            Ok(s) => started.push(s),
            Err(e) => err = Some(format!("{e:#}")),
        }
    }
    match err {
        None => Ok(started),
        Some(e) => {
            for s in started {
                s.running.stop().await;
            }
            Err(e)
        }
    }
}

/// A scenario's harness result as a lab cell. The harness decided the verdict (schedules,
/// intermittent entries, grades); the lab only holds a WARN or POLICY to be an error too
/// (`STRICT`), and keeps the instances' `logs` for an error.
fn scenario_result(peer: PeerId, r: sockslab::verdict::ScenarioResult, logs: &str, backend: Backend) -> CellResult {
    let failures = r
        .failures
        .iter()
        .map(|f| format!("\n{} step {:?}: {}", f.schedule.name(), f.step, f.message))
        .collect::<String>();
    let detail = format!("instance {}{failures}", r.instance.unwrap_or_default());
    let logs = if r.verdict.is_error(STRICT) { logs.to_string() } else { String::new() };
    let cell = Cell::scenario(peer, &r.id);
    CellResult { reproduce: reproduce(&cell.id, backend), cell, status: r.verdict, detail, logs, millis: r.millis }
}
