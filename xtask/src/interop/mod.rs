//! `cargo xtask interop`: the containerized interop lab.
//!
//! Cells are planned first (client × server × feature, the catalogue per server, the UDP bypass
//! regression per server); a cell whose peers do not claim the feature is *not applicable* and one
//! whose peer cannot be obtained is *unavailable*, both decided before anything runs. The rest
//! really run, and their verdicts are written as JSON, JUnit XML and an HTML matrix.

mod backend;
mod behaviour;
#[cfg(test)]
mod browser_test;
mod bypass;
mod capture;
mod catalogue;
mod cells;
mod configs;
mod report;
mod servers;
mod shard;
mod targets;
mod transport;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::flags::{BackendArg, InteropAction, InteropArgs, Shard};
use crate::peers::{self, Backend, Feature, PeerId, Prepared};
use backend::Launcher;
use servers::{Config, Server};
pub(crate) use sockslab::verdict::Verdict;
use sockslab::verdict::{Expectations, Strictness};
use targets::Targets;

/// Clients of the matrix, in row order.
const CLIENTS: [PeerId; 5] = [PeerId::Curl, PeerId::Gost, PeerId::V2ray5, PeerId::V2ray4, PeerId::Reference];
/// Servers of the matrix, in column order.
const SERVERS: [PeerId; 4] = [PeerId::Gost, PeerId::V2ray5, PeerId::V2ray4, PeerId::Reference];

/// What kind of check a cell is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A client peer through a server peer, payload integrity checked.
    Feature,
    /// One catalogue scenario against a server peer.
    Scenario,
    /// The UDP authentication bypass probes against a server peer (snapshot).
    UdpBypass,
    /// A client peer through a server peer over one transport, 64 MiB each way
    /// (`--transport`, docs/transports.md).
    Transport,
}

/// How strictly the lab holds every peer to its expected results: at every level. An unlisted
/// SHOULD or policy deviation of a catalogue scenario is a regression as much as a MUST one (the
/// peers' expected results list every deviation, whatever its grade).
pub const STRICT: Strictness = Strictness { warn: true, policy: true };

/// A planned cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    /// Stable id, used by `--only`.
    pub id: String,
    /// Kind.
    pub kind: Kind,
    /// Client peer (feature cells).
    pub client: Option<PeerId>,
    /// Server peer.
    pub server: PeerId,
    /// Feature (feature and transport cells).
    pub feature: Option<Feature>,
    /// Transport (transport cells): `tcp`, `tls`, `ws`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
}

impl Cell {
    /// The matrix cell `FEATURE.CLIENT.SERVER`.
    pub fn feature(f: Feature, client: PeerId, server: PeerId) -> Cell {
        Cell {
            id: format!("{}.{}.{}", f.name(), client.name(), server.name()),
            kind: Kind::Feature,
            client: Some(client),
            server,
            feature: Some(f),
            transport: None,
        }
    }

    /// The UDP-bypass cell of `server`.
    pub fn bypass(server: PeerId) -> Cell {
        let id = format!("udp-bypass.{}", server.name());
        Cell { id, kind: Kind::UdpBypass, client: None, server, feature: None, transport: None }
    }

    /// The catalogue cell of scenario `id` against `server`.
    pub fn scenario(server: PeerId, id: &str) -> Cell {
        let id = format!("scenario.{}.{id}", server.name());
        Cell { id, kind: Kind::Scenario, client: None, server, feature: None, transport: None }
    }
}

/// A finished cell.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellResult {
    /// The cell.
    #[serde(flatten)]
    pub cell: Cell,
    /// Verdict, decided by the harness's rules (`sockslab::verdict`).
    #[serde(flatten)]
    pub status: Verdict,
    /// What happened, in a line or a few.
    pub detail: String,
    /// Peer logs (failing cells).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub logs: String,
    /// The command that reruns only this cell.
    pub reproduce: String,
    /// Wall time.
    pub millis: u64,
}

impl CellResult {
    /// A cell decided without running it (not applicable, unavailable, or its server did not
    /// start), with the command that reruns it on `backend`.
    fn decided(cell: Cell, status: Verdict, detail: String, backend: Backend) -> CellResult {
        CellResult { reproduce: reproduce(&cell.id, backend), cell, status, detail, logs: String::new(), millis: 0 }
    }

    /// A cell that ran from `started`. The peers' `logs` are kept only for a verdict that is an
    /// error (what a reader has to diagnose); a pass or an expected failure drops them.
    fn finished(
        cell: Cell,
        status: Verdict,
        detail: String,
        logs: String,
        started: Instant,
        backend: Backend,
    ) -> CellResult {
        let logs = if status.is_error(STRICT) { logs } else { String::new() };
        let millis = started.elapsed().as_millis() as u64;
        CellResult { reproduce: reproduce(&cell.id, backend), cell, status, detail, logs, millis }
    }
}

/// Counts a finished cell, prints its progress line and keeps it.
fn tally(out: &mut Vec<CellResult>, r: CellResult, done: &mut usize, total: usize) {
    *done += 1;
    progress(*done, total, &r);
    out.push(r);
}

fn plan(args: &InteropArgs, scenario_ids: &[String]) -> Result<Vec<Cell>> {
    let only = sockslab::select::Only::new(&args.only)?;
    if !args.transports.is_empty() {
        // `--transport`: the transport family alone (it is long: 64 MiB each way per cell).
        let mut cells = transport::plan(&args.transports);
        cells.retain(|c| {
            let peer_ok = args.peers.is_empty()
                || args.peers.iter().any(|p| Some(p.as_str()) == c.client.map(PeerId::name) || p == c.server.name());
            let feature_ok = args.features.is_empty()
                || args.features.iter().any(|f| Some(f.as_str()) == c.feature.map(Feature::name));
            peer_ok && feature_ok && only.matches(&c.id)
        });
        return Ok(cells);
    }
    let mut cells = Vec::new();
    for f in Feature::ALL {
        for c in CLIENTS {
            for s in SERVERS {
                cells.push(Cell::feature(f, c, s));
            }
        }
    }
    cells.extend(SERVERS.map(Cell::bypass));
    for s in SERVERS {
        for id in scenario_ids {
            cells.push(Cell::scenario(s, id));
        }
    }
    cells.retain(|c| {
        let peer_ok = args.peers.is_empty()
            || args.peers.iter().any(|p| Some(p.as_str()) == c.client.map(PeerId::name) || p == c.server.name());
        let feature_ok = args.features.is_empty()
            || args.features.iter().any(|f| match c.kind {
                Kind::Feature => Some(f.as_str()) == c.feature.map(Feature::name),
                Kind::UdpBypass => f == "udp-bypass",
                Kind::Scenario => f == "scenarios",
                Kind::Transport => false,
            });
        let only_ok = only.matches(&c.id);
        peer_ok && feature_ok && only_ok
    });
    Ok(cells)
}

/// Why a cell does not apply, decided from claims alone.
fn not_applicable(c: &Cell) -> Option<String> {
    if c.kind == Kind::Transport {
        // Both peers of the family serve and use every transport and feature in it.
        return None;
    }
    let f = c.feature?;
    let client = c.client?;
    if !client.caps().client.contains(&f) {
        return Some(format!("{client} does not claim {} as a client", f.name()));
    }
    if !c.server.caps().server.contains(&f) {
        return Some(format!("{} does not claim {} as a server", c.server, f.name()));
    }
    None
}

/// The shared server configuration a feature cell uses: the password one for the features that
/// authenticate, the open one otherwise.
fn server_config(feature: Option<Feature>) -> Config {
    match feature {
        Some(Feature::Userpass | Feature::TlsAuth) => Config::Auth,
        _ => Config::Open,
    }
}

/// Everything a run needs to share between cells.
struct Lab {
    targets: Targets,
    launchers: BTreeMap<PeerId, Launcher>,
    unavailable: BTreeMap<PeerId, String>,
    /// Each peer's expected results (the harness peer's `expected.yaml`: scenarios and cells).
    expected: BTreeMap<PeerId, Expectations>,
    backend: Backend,
}

impl Lab {
    fn expected_cell(&self, c: &Cell) -> Option<&sockslab::verdict::ExpectedFailure> {
        [c.client, Some(c.server)]
            .into_iter()
            .flatten()
            .filter_map(|p| self.expected.get(&p))
            .find_map(|e| e.cell(&c.id))
    }

    /// A cell's verdict, by the harness's rules for a check run once (`decide_check`), from
    /// whether it passed and the expected results of its client and server.
    fn decide(&self, c: &Cell, ok: bool) -> Verdict {
        sockslab::verdict::decide_check(ok, "", self.expected_cell(c))
    }
}

fn reproduce(id: &str, backend: Backend) -> String {
    let b = match backend {
        Backend::Docker => "docker",
        Backend::Process => "process",
    };
    format!("cargo xtask interop --backend {b} --only '{id}'")
}

/// Prints one progress line.
fn progress(done: usize, total: usize, r: &CellResult) {
    let extra = if r.status.is_error(STRICT) && !matches!(r.status, Verdict::Xpass { .. }) {
        format!(" — {}", r.detail.lines().next().unwrap_or_default())
    } else {
        String::new()
    };
    eprintln!("[{done:>4}/{total}] {:<11} {} ({} ms){extra}", r.status.label(), r.cell.id, r.millis);
}

/// Writes the JSON, JUnit and HTML reports into `out`.
fn write_reports(rep: &report::Report, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("interop.json"), serde_json::to_string_pretty(rep)?)?;
    std::fs::write(out.join("interop.xml"), report::junit(rep))?;
    std::fs::write(out.join("interop.html"), report::html(rep))?;
    Ok(())
}

/// Prints the summary line and fails when a cell failed or passed unexpectedly.
fn conclude(rep: &report::Report, out: &Path) -> Result<()> {
    let s = &rep.summary;
    eprintln!(
        "interop: {} cells in {:.1} s: {} — {}",
        s.total,
        rep.meta.seconds,
        report::counts(s),
        out.join("interop.html").display()
    );
    if !s.ok(STRICT) {
        anyhow::bail!("{} unexpected result(s)", s.failed + s.warned + s.policy + s.xpass);
    }
    Ok(())
}

/// The features `cargo xtask capture` records by default: every feature family and the bypass.
pub const CAPTURE_FEATURES: &[&str] = &[
    "socks4",
    "socks4a",
    "socks4-userid",
    "socks5-connect",
    "userpass",
    "bind",
    "udp-associate",
    "mbind",
    "udp-tun",
    "rudp-tun",
    "tls-methods",
    "tls-auth",
    "half-close",
    "udp-bypass",
];

/// Entry point of `cargo xtask interop`.
pub fn run(args: &InteropArgs) -> Result<()> {
    if let Some(InteropAction::Report(r)) = &args.action {
        let rep = shard::merge(&r.merge)?;
        let out = r.out.clone().unwrap_or_else(|| peers::work_dir().join("report"));
        write_reports(&rep, &out)?;
        eprintln!("interop: merged {} report(s) of {} shard(s)", r.merge.len(), rep.plan.of);
        return conclude(&rep, &out);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: &InteropArgs) -> Result<()> {
    let started = Instant::now();
    let Some(p) = plan_run(args)? else { return Ok(()) };
    let backend = choose_backend(args)?;
    if args.configs {
        return run_configs(args, backend).await;
    }
    let lab = Arc::new(prepare_lab(&p, backend).await?);
    let prep_secs = started.elapsed().as_secs_f64();
    let mut phases = Phases::new(prep_secs);

    let total = p.cells.len();
    let (mut results, to_run) = predecide(&lab, p.cells.clone());
    let mut done = 0;
    for r in &results {
        done += 1;
        progress(done, total, r);
    }
    let shared = start_shared_servers(&lab, &to_run, &p.behaviour_servers).await;
    results.extend(run_feature_cells(&lab, &to_run, &shared, args.capture, args.jobs, &mut done, total).await?);
    phases.end("feature cells (with their shared servers)");
    let behaviour = run_behaviour(&lab, &p.behaviour_servers, shared).await?;
    phases.end("behaviour diff");
    let (bypass, bypass_obs) =
        bypass::run_bypass_cells(&lab, &p.catalogue, &to_run, args.capture, &mut done, total).await?;
    results.extend(bypass);
    phases.end("udp-bypass");
    // The transport family, one server per (peer, transport).
    let transport_cells: Vec<Cell> = to_run.iter().filter(|c| c.kind == Kind::Transport).cloned().collect();
    if !transport_cells.is_empty() {
        results.extend(transport::run(&lab, transport_cells, &mut done, total).await?);
        phases.end("transport cells");
    }
    let schedules = args.schedules.as_deref();
    results.extend(catalogue::run_catalogues(&lab, &p, &to_run, schedules, &mut phases, &mut done, total).await);
    write_run_report(args, &lab, &p, results, behaviour, bypass_obs, started, prep_secs, &phases)
}

/// What a run plans before anything starts: the catalogue, the whole plan, this shard's cells and
/// the servers whose behaviour diff this shard probes.
struct Planned {
    catalogue: Vec<sockslab::scenario::Scenario>,
    full: Vec<Cell>,
    cells: Vec<Cell>,
    shard: Shard,
    behaviour_servers: BTreeSet<PeerId>,
}

/// Wall time per phase, for the report: where a slow run spends its time.
struct Phases {
    list: Vec<report::Phase>,
    start: Instant,
}

impl Phases {
    /// Starts with the peers' preparation, which took `prep_secs`.
    fn new(prep_secs: f64) -> Phases {
        Phases { list: vec![report::Phase { name: "prepare peers".into(), seconds: prep_secs }], start: Instant::now() }
    }

    /// Ends the current phase under `name` and starts the next.
    fn end(&mut self, name: impl Into<String>) {
        self.list.push(report::Phase { name: name.into(), seconds: self.start.elapsed().as_secs_f64() });
        self.start = Instant::now();
    }
}

/// The shared servers (open and with password) of the feature cells and the behaviour diff, and
/// the start errors of those that did not come up.
struct Shared {
    servers: BTreeMap<(PeerId, Config), Arc<Server>>,
    errors: BTreeMap<(PeerId, Config), String>,
}

/// Loads the catalogue and plans the cells; `None` when `--list` printed them instead.
fn plan_run(args: &InteropArgs) -> Result<Option<Planned>> {
    let catalogue =
        sockslab::scenario::load_catalogue(&peers::root().join("scenarios")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let catalogue: Vec<_> =
        catalogue.into_iter().filter(|s| s.roles.contains(&sockslab::scenario::Role::Client)).collect();
    let ids: Vec<String> = catalogue.iter().map(|s| s.id.clone()).collect();
    let shard = args.shard.unwrap_or(Shard::WHOLE);
    let full = plan(args, &ids)?;
    if full.is_empty() {
        anyhow::bail!("no cell matches the filters (see --list)");
    }
    let cells: Vec<Cell> = full.iter().filter(|c| shard::owns(shard, &c.id)).cloned().collect();
    if args.capture {
        cells::SMALL_PAYLOADS.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    // The behaviour diff is not a cell: each server's probes go to the shard owning a pseudo id,
    // for the servers some runnable feature cell of the whole plan targets (unsharded: all of those).
    let behaviour_servers: BTreeSet<PeerId> = if args.only.is_empty() && !args.capture {
        full.iter()
            .filter(|c| c.kind == Kind::Feature && not_applicable(c).is_none())
            .map(|c| c.server)
            .filter(|s| shard::owns(shard, &format!("behaviour.{}", s.name())))
            .collect()
    } else {
        BTreeSet::new()
    };
    if args.list {
        for c in &cells {
            let na = not_applicable(c).map(|r| format!("  (not applicable: {r})")).unwrap_or_default();
            println!("{}{na}", c.id);
        }
        return Ok(None);
    }
    if shard.of > 1 {
        eprintln!("interop: shard {shard}: {} of the {} planned cells", cells.len(), full.len());
    }
    Ok(Some(Planned { catalogue, full, cells, shard, behaviour_servers }))
}

/// The backend: docker when a daemon is usable (starting one as root), else processes.
fn choose_backend(args: &InteropArgs) -> Result<Backend> {
    let backend = match args.backend {
        Some(BackendArg::Process) => Backend::Process,
        Some(BackendArg::Docker) => {
            peers::ensure_docker()?;
            Backend::Docker
        }
        None => match peers::ensure_docker() {
            Ok(()) => Backend::Docker,
            Err(e) => {
                eprintln!("interop: {e:#}; using --backend process");
                Backend::Process
            }
        },
    };
    if backend == Backend::Docker {
        peers::remove_leftovers()?;
    }
    Ok(backend)
}

/// Prepares the peers some runnable cell needs and loads every peer's expected results.
async fn prepare_lab(p: &Planned, backend: Backend) -> Result<Lab> {
    let needed: BTreeSet<PeerId> = p
        .cells
        .iter()
        .filter(|c| not_applicable(c).is_none())
        .flat_map(|c| [c.client, Some(c.server)])
        .flatten()
        .chain(p.behaviour_servers.iter().copied())
        .collect();
    let mut launchers = BTreeMap::new();
    let mut unavailable = BTreeMap::new();
    let mut expected = BTreeMap::new();
    for p in PeerId::ALL {
        expected.insert(p, p.expectations().with_context(|| format!("expected results of {p}"))?);
    }
    for p in &needed {
        let t = Instant::now();
        match peers::prepare(*p, backend).with_context(|| format!("preparing {p}"))? {
            Prepared::Ready { program, image } => {
                eprintln!(
                    "interop: {p} ready ({}) in {:.1} s",
                    image.clone().unwrap_or_else(|| program.display().to_string()),
                    t.elapsed().as_secs_f64()
                );
                launchers.insert(*p, Launcher { peer: *p, program, image });
            }
            Prepared::Unavailable(reason) => {
                eprintln!("interop: {p} {reason}");
                unavailable.insert(*p, reason);
            }
        }
    }
    Ok(Lab { targets: Targets::start().await?, launchers, unavailable, expected, backend })
}

/// Decides the not-applicable and unavailable cells up front; returns them and the cells to run.
fn predecide(lab: &Lab, cells: Vec<Cell>) -> (Vec<CellResult>, Vec<Cell>) {
    let mut results: Vec<CellResult> = Vec::new();
    let mut to_run = Vec::new();
    for c in cells {
        let pre = not_applicable(&c).map(|reason| Verdict::NotApplicable { reason }).or_else(|| {
            [c.client, Some(c.server)]
                .into_iter()
                .flatten()
                .find_map(|p| lab.unavailable.get(&p).map(|r| Verdict::Unavailable { reason: format!("{p}: {r}") }))
        });
        match pre {
            Some(status) => results.push(CellResult::decided(c, status, String::new(), lab.backend)),
            None => to_run.push(c),
        }
    }
    (results, to_run)
}

/// Starts the shared servers the feature cells and the behaviour diff use.
async fn start_shared_servers(lab: &Lab, to_run: &[Cell], behaviour_servers: &BTreeSet<PeerId>) -> Shared {
    let mut shared: BTreeMap<(PeerId, Config), Arc<Server>> = BTreeMap::new();
    let mut server_errors: BTreeMap<(PeerId, Config), String> = BTreeMap::new();
    let wanted: BTreeSet<(PeerId, Config)> = to_run
        .iter()
        .filter(|c| c.kind == Kind::Feature)
        .map(|c| (c.server, server_config(c.feature)))
        .chain(
            behaviour_servers
                .iter()
                .filter(|s| lab.launchers.contains_key(s))
                .flat_map(|s| [(*s, Config::Open), (*s, Config::Auth)]),
        )
        .collect();
    for key in wanted {
        match servers::start(key.0, &lab.launchers[&key.0], key.1).await {
            Ok(s) => {
                shared.insert(key, Arc::new(s));
            }
            Err(e) => {
                server_errors.insert(key, format!("{e:#}"));
            }
        }
    }
    Shared { servers: shared, errors: server_errors }
}

/// Runs the feature cells against the shared servers, a few at once.
async fn run_feature_cells(
    lab: &Arc<Lab>,
    to_run: &[Cell],
    shared: &Shared,
    capture: bool,
    jobs: usize,
    done: &mut usize,
    total: usize,
) -> Result<Vec<CellResult>> {
    let mut results = Vec::new();
    // Feature cells, a few at once (2 cores; containers start in parallel fine).
    // While capturing, one cell at a time: each capture's filter must see only its own cell.
    let jobs = if capture { 1 } else { jobs.max(1) };
    let sem = Arc::new(tokio::sync::Semaphore::new(jobs));
    let mut set = tokio::task::JoinSet::new();
    for c in to_run.iter().filter(|c| c.kind == Kind::Feature).cloned() {
        let key = (c.server, server_config(c.feature));
        let server = shared.servers.get(&key).map(|s| s.addr_for(c.feature.unwrap_or(Feature::Socks5Connect)));
        let server_err = shared.errors.get(&key).cloned();
        let server_command = shared.servers.get(&key).map(|s| s.command.clone()).unwrap_or_default();
        let lab = lab.clone();
        let sem = sem.clone();
        set.spawn(async move {
            let _p = sem.acquire_owned().await;
            let t = Instant::now();
            let client = c.client.expect("feature cells have a client");
            let feature = c.feature.expect("feature cells have a feature");
            let recorder = match (capture, server) {
                (true, Some(addr)) => {
                    let udp = feature == Feature::UdpAssociate;
                    Some(capture::Recorder::start(&capture::filter(&[addr.port()], udp)).await)
                }
                _ => None,
            };
            let r = match (server, server_err) {
                (Some(addr), _) => cells::run(client, &lab.launchers[&client], addr, feature, &lab.targets).await,
                (None, e) => Err(anyhow::anyhow!("server {} did not start: {}", c.server, e.unwrap_or_default())),
            };
            let (status, mut detail, logs) = match r {
                Ok(o) => (lab.decide(&c, true), o.detail, o.logs),
                Err(e) => (lab.decide(&c, false), format!("{e:#}"), String::new()),
            };
            if let (Some(rec), Some(addr)) = (recorder, server) {
                let note =
                    capture::record_cell(&c, rec, addr.port(), status == Verdict::Pass, &detail, &logs, server_command)
                        .await;
                detail = format!("{detail}; {note}");
            }
            CellResult::finished(c, status, detail, logs, t, lab.backend)
        });
    }
    while let Some(j) = set.join_next().await {
        tally(&mut results, j.context("a cell panicked")?, done, total);
    }
    Ok(results)
}

/// The behaviour-diff probes against the shared servers, which are stopped afterwards.
async fn run_behaviour(
    lab: &Lab,
    behaviour_servers: &BTreeSet<PeerId>,
    shared: Shared,
) -> Result<BTreeMap<PeerId, Vec<behaviour::Row>>> {
    // The behaviour-diff view, against the shared servers (no filter: only on full runs).
    let mut behaviour: BTreeMap<PeerId, Vec<behaviour::Row>> = BTreeMap::new();
    if !behaviour_servers.is_empty() {
        let closed = servers::free_port()?;
        let mut set = tokio::task::JoinSet::new();
        for s in behaviour_servers.iter().copied() {
            if let Some(open) = shared.servers.get(&(s, Config::Open)) {
                let (open, echo) = (open.addr, lab.targets.echo_port);
                let auth = shared.servers.get(&(s, Config::Auth)).map(|a| a.addr);
                set.spawn(async move { (s, behaviour::probe(open, auth, echo, closed).await) });
            }
        }
        while let Some(j) = set.join_next().await {
            let (s, rows) = j.context("a behaviour probe panicked")?;
            behaviour.insert(s, rows);
        }
    }
    for (_, s) in shared.servers {
        if let Ok(s) = Arc::try_unwrap(s) {
            s.running.stop().await;
        }
    }
    Ok(behaviour)
}

/// Orders the results as planned, writes the reports and concludes the run.
#[allow(clippy::too_many_arguments)]
fn write_run_report(
    args: &InteropArgs,
    lab: &Lab,
    p: &Planned,
    mut results: Vec<CellResult>,
    behaviour: BTreeMap<PeerId, Vec<behaviour::Row>>,
    bypass_obs: BTreeMap<PeerId, bypass::Observations>,
    started: Instant,
    prep_secs: f64,
    phases: &Phases,
) -> Result<()> {
    let order: BTreeMap<&str, usize> = p.full.iter().enumerate().map(|(i, c)| (c.id.as_str(), i)).collect();
    results.sort_by_key(|r| order.get(r.cell.id.as_str()).copied().unwrap_or(usize::MAX));
    let out = args.out.clone().unwrap_or_else(|| peers::work_dir().join("report"));
    let meta = report::Meta {
        backend: lab.backend,
        seconds: started.elapsed().as_secs_f64(),
        prepare_seconds: prep_secs,
        versions: PeerId::ALL.iter().map(|p| (p.name().to_string(), p.version().to_string())).collect(),
        unavailable: lab.unavailable.iter().map(|(p, r)| (p.name().to_string(), r.clone())).collect(),
    };
    let plan_info = report::PlanInfo {
        cells: p.full.iter().map(|c| c.id.clone()).collect(),
        of: p.shard.of,
        shards: vec![report::ShardRun {
            index: p.shard.index,
            seconds: meta.seconds,
            prepare_seconds: prep_secs,
            phases: phases.list.clone(),
        }],
    };
    let rep = report::Report::new(meta, plan_info, results, behaviour, bypass_obs);
    write_reports(&rep, &out)?;
    let by_phase: Vec<String> = phases.list.iter().map(|p| format!("{} {:.1} s", p.name, p.seconds)).collect();
    eprintln!("interop: time by phase: {}", by_phase.join(", "));
    conclude(&rep, &out)
}

/// `--configs`: the config-file section (configs.rs), with its own peers.
async fn run_configs(args: &InteropArgs, backend: Backend) -> Result<()> {
    let mut launchers = BTreeMap::new();
    let mut unavailable = BTreeMap::new();
    for p in [PeerId::Curl, PeerId::Reference].into_iter().chain(configs::REAL) {
        match peers::prepare(p, backend).with_context(|| format!("preparing {p}"))? {
            Prepared::Ready { program, image } => {
                launchers.insert(p, Launcher { peer: p, program, image });
            }
            Prepared::Unavailable(reason) => {
                unavailable.insert(p, reason);
            }
        }
    }
    let out = args.out.clone().unwrap_or_else(|| peers::work_dir().join("report"));
    if configs::run(&launchers, &unavailable, &out).await? {
        Ok(())
    } else {
        anyhow::bail!("configs: a verdict differs between a real program and socksref (see the table)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(only: &[&str]) -> InteropArgs {
        InteropArgs {
            backend: None,
            peers: Vec::new(),
            features: Vec::new(),
            only: only.iter().map(|s| s.to_string()).collect(),
            list: false,
            jobs: 1,
            schedules: None,
            out: None,
            shard: None,
            capture: false,
            configs: false,
            action: None,
            transports: Vec::new(),
        }
    }

    #[test]
    fn shards_of_the_full_plan_cover_it_exactly_once() {
        let root = peers::root().join("scenarios");
        let catalogue = sockslab::scenario::load_catalogue(&root).unwrap();
        let ids: Vec<String> = catalogue
            .into_iter()
            .filter(|s| s.roles.contains(&sockslab::scenario::Role::Client))
            .map(|s| s.id)
            .collect();
        let full = plan(&args(&[]), &ids).unwrap();
        assert!(full.len() > 200, "the full plan has the catalogue and the matrix: {}", full.len());
        let all: BTreeSet<&str> = full.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(all.len(), full.len(), "cell ids are unique, so an id names one shard");
        for of in 1..=5 {
            let mut owner: BTreeMap<&str, u32> = BTreeMap::new();
            for index in 1..=of {
                let mine: Vec<&Cell> = full.iter().filter(|c| shard::owns(Shard { index, of }, &c.id)).collect();
                // Roughly even, or sharding would not shorten the slowest job.
                let fair = full.len() as f64 / f64::from(of);
                assert!(
                    (mine.len() as f64) > 0.6 * fair && (mine.len() as f64) < 1.4 * fair,
                    "{index}/{of}: {}",
                    mine.len()
                );
                for c in mine {
                    if let Some(k) = owner.insert(c.id.as_str(), index) {
                        panic!("{} is in shards {k} and {index} of {of}", c.id);
                    }
                }
            }
            assert_eq!(owner.keys().copied().collect::<BTreeSet<_>>(), all, "{of} shards");
        }
    }

    #[test]
    fn shard_flags_parse_and_reject_nonsense() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, of: 4 }));
        for bad in ["0/4", "5/4", "2", "a/b", "1/0", "-1/3"] {
            assert!(bad.parse::<Shard>().unwrap_err().contains("K/N"), "{bad}");
        }
    }

    #[test]
    fn the_matrix_has_every_client_server_feature_cell_and_only_filters() {
        let all = plan(&args(&[]), &["a.b".into()]).unwrap();
        let features = all.iter().filter(|c| c.kind == Kind::Feature).count();
        assert_eq!(features, Feature::ALL.len() * CLIENTS.len() * SERVERS.len());
        assert_eq!(all.iter().filter(|c| c.kind == Kind::UdpBypass).count(), SERVERS.len());
        assert_eq!(all.iter().filter(|c| c.kind == Kind::Scenario).count(), SERVERS.len());
        let one = plan(&args(&["socks4a.curl.v2ray5"]), &[]).unwrap();
        assert_eq!(one.len(), 1);
        let curl = plan(&args(&["*.curl.*"]), &[]).unwrap();
        assert!(!curl.is_empty() && curl.iter().all(|c| c.id.contains(".curl.")), "{curl:?}");
        assert!(plan(&args(&["bad.[1"]), &[]).is_err(), "an unclosed class is refused");
    }

    /// A lab-cell entry of a peer's expected results must name a cell the lab plans with that
    /// peer as client or server, or it would never be decided (and never turn into an xpass).
    #[test]
    fn every_expected_cell_is_a_planned_cell_of_its_peer() {
        let cells = plan(&args(&[]), &[]).unwrap();
        let mut entries = 0;
        for peer in PeerId::ALL {
            // The configs section's rows are checked against its suites (configs.rs).
            for e in peer.expectations().unwrap().cells.iter().filter(|e| !e.id.starts_with(configs::ID_PREFIX)) {
                let c = cells.iter().find(|c| c.id == e.id).unwrap_or_else(|| panic!("{peer}: no cell `{}`", e.id));
                assert!(c.client == Some(peer) || c.server == peer, "{peer}: `{}` does not involve it", e.id);
                assert!(not_applicable(c).is_none(), "{peer}: `{}` is not applicable, so never runs", e.id);
                entries += 1;
            }
        }
        assert_eq!(entries, 5, "every entry moved from the lab's old cell files is here");
    }

    #[test]
    fn unclaimed_features_are_not_applicable_before_running() {
        let cells = plan(&args(&[]), &[]).unwrap();
        let na = |id: &str| not_applicable(cells.iter().find(|c| c.id == id).unwrap());
        // curl has no BIND; V2Ray has no BIND server; 4.34's outbound always speaks SOCKS5.
        assert!(na("bind.curl.reference").unwrap().contains("curl"));
        assert!(na("bind.reference.v2ray5").unwrap().contains("v2ray5"));
        assert!(na("socks4.v2ray4.reference").is_some());
        // gost's rtcp is always MBIND, so gost claims no BIND as a client (its server has BIND).
        assert!(na("bind.gost.reference").unwrap().contains("gost"));
        assert_eq!(na("bind.reference.gost"), None);
        // Claimed on both sides: runs.
        assert_eq!(na("socks5-connect.curl.v2ray4"), None);
        assert_eq!(na("mbind.gost.gost"), None);
        assert_eq!(na("mbind.reference.reference"), None);
        assert_eq!(na("socks4-userid.curl.gost"), None);
        assert!(na("half-close.curl.gost").unwrap().contains("curl"));
    }
}
