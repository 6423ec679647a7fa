//! `cargo xtask bench`: socksref side by side with microsocks, danted, gost and V2Ray 5 on loopback.
//!
//! One run starts the targets ([`targets`]) and every selected server ([`servers`]), then
//! measures each row ([`load`]) for direct loopback and through each server in turn, and
//! finally prints and saves the comparison ([`report`]) to `target/bench/bench.{txt,json}`.
//! Idle servers cost no CPU, so keeping them all up lets a row be measured for every subject
//! back to back.
//!
//! ```text
//! cargo xtask bench                       # full run, 3 s windows, 2000 idle tunnels (~4 min + builds)
//! cargo xtask bench --quick               # smoke test (~1.5 min + builds)
//! cargo xtask bench --peer socksref --peer danted --duration 5 --no-install
//! ```

mod load;
mod report;
pub(crate) mod servers;
mod socks;
mod targets;
mod transport;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use tokio::runtime::Runtime;

use crate::flags::{BenchArgs, ServerName};
use load::{Direction, Sample};
use report::{Meta, Outcome, Report, Row, RowSpec, Target};
use servers::ServerProcess;
use socks::Route;
use targets::{TargetInfo, Targets};

/// Pause between measurements so closing connections and queued bytes of one row do not leak
/// into the next.
const SETTLE: Duration = Duration::from_millis(300);

/// One row of the benchmark.
#[derive(Debug, Clone, Copy)]
enum Measure {
    /// Bulk CONNECT throughput with this many parallel streams.
    Throughput(Direction, usize),
    /// Handshake + CONNECT + close, this many at a time.
    Handshakes { socks4: bool, concurrency: usize },
    /// UDP ASSOCIATE relaying of 1200-byte datagrams.
    UdpPps,
    /// Memory per idle CONNECT tunnel, with this many tunnels.
    IdleRss(usize),
}

impl Measure {
    /// The rows of a run, in the order they are measured and printed.
    fn plan(tunnels: usize) -> Vec<Measure> {
        vec![
            Measure::Throughput(Direction::Upload, 1),
            Measure::Throughput(Direction::Upload, 8),
            Measure::Throughput(Direction::Download, 1),
            Measure::Throughput(Direction::Download, 8),
            Measure::Handshakes { socks4: false, concurrency: 1 },
            Measure::Handshakes { socks4: false, concurrency: 32 },
            Measure::Handshakes { socks4: true, concurrency: 1 },
            Measure::Handshakes { socks4: true, concurrency: 32 },
            Measure::UdpPps,
            Measure::IdleRss(tunnels),
        ]
    }

    /// The row's description, with the targets the issue sets for socksref.
    fn spec(self) -> RowSpec {
        let (id, title, unit, higher_is_better, target) = match self {
            Measure::Throughput(dir, streams) => {
                let way = if dir == Direction::Upload { "upload" } else { "download" };
                let plural = if streams == 1 { "" } else { "s" };
                (
                    format!("connect_{way}_{streams}"),
                    format!("CONNECT {way}, {streams} stream{plural}"),
                    "MB/s",
                    true,
                    (streams == 1).then_some(Target::AtLeastDirect(0.75)),
                )
            }
            Measure::Handshakes { socks4, concurrency } => {
                let version = if socks4 { 4 } else { 5 };
                (
                    format!("handshakes_socks{version}_c{concurrency}"),
                    format!("SOCKS{version} handshakes, c={concurrency}"),
                    "hs/s",
                    true,
                    (concurrency == 32).then_some(Target::AtLeastDirect(0.6)),
                )
            }
            Measure::UdpPps => (
                "udp_pps".to_owned(),
                "UDP ASSOCIATE, 1200 B".to_owned(),
                "pkt/s",
                true,
                Some(Target::AtLeastDirect(0.7)),
            ),
            Measure::IdleRss(n) => (
                "idle_rss_per_tunnel".to_owned(),
                format!("RSS per idle tunnel ({n})"),
                "KiB",
                false,
                Some(Target::AtMost(8.0)),
            ),
        };
        RowSpec { id, title, unit, higher_is_better, target }
    }
}

/// Who a measurement goes through.
#[derive(Debug, Clone, Copy)]
enum Subject {
    /// No proxy: the loopback baseline.
    Direct,
    /// A running server.
    Server {
        /// Which server.
        name: ServerName,
        /// Its SOCKS5 address.
        socks5: SocketAddr,
        /// Its SOCKS4 address (gost's is a second listener).
        socks4: SocketAddr,
        /// Its pid, for the memory rows.
        pid: u32,
    },
}

impl Subject {
    fn name(self) -> &'static str {
        match self {
            Subject::Direct => "direct",
            Subject::Server { name, .. } => name.as_str(),
        }
    }
}

/// Runs `cargo xtask bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    let duration = args.duration.unwrap_or(if args.quick { 0.5 } else { 3.0 });
    if !(0.05..=600.0).contains(&duration) {
        bail!("--duration must be between 0.05 and 600 seconds");
    }
    let window = Duration::from_secs_f64(duration);
    let tunnels = args.tunnels.unwrap_or(if args.quick { 200 } else { 2000 });
    if tunnels == 0 {
        bail!("--tunnels must be at least 1");
    }
    let nofile = servers::raise_nofile_limit()?;
    // Each tunnel costs two descriptors here (client end, sink end) and two in the server.
    if nofile < (tunnels as u64) * 2 + 256 {
        eprintln!("[bench] warning: RLIMIT_NOFILE is {nofile}, too low for {tunnels} tunnels");
    }
    let out_dir = servers::target_dir().join("bench");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    if args.transports_only {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        let text = transport_rows(&runtime, args, window, &out_dir)?;
        print!("{text}");
        let path = out_dir.join("bench-transports.txt");
        fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("[bench] wrote {}", path.display());
        return Ok(());
    }

    let selected: Vec<ServerName> =
        ServerName::ALL.into_iter().filter(|n| args.peers.is_empty() || args.peers.contains(n)).collect();
    // Find (or build, or install) every executable before measuring anything, so the noisy and
    // slow steps are over before the numbers start.
    let executables = obtain_executables(&selected, !args.no_install);

    let plan = Measure::plan(tunnels);
    // Other work on the machine skews every number; record how busy it was when we started.
    let load_average = fs::read_to_string("/proc/loadavg").unwrap_or_default().trim().to_owned();
    eprintln!("[bench] load average at start: {load_average}");
    let targets = Targets::start()?;
    // Two workers: as many as there are CPUs on the reference machine. The servers get the same
    // CPUs; what matters is that every subject is measured with the same client.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-client")
        .enable_all()
        .build()
        .context("building the client runtime")?;
    eprintln!(
        "[bench] {} rows × {} subjects, {duration} s windows, {tunnels} idle tunnels",
        plan.len(),
        1 + executables.len()
    );

    let mut servers = start_servers(executables, &out_dir.join("logs"));
    let rows = measure_rows(&runtime, &targets, &plan, &mut servers, window);
    let server_status = server_status(&mut servers);
    // Dropping the handles stops the servers (SIGTERM, then SIGKILL), by pid.
    drop(servers);
    let transports =
        transport_rows(&runtime, args, window, &out_dir).unwrap_or_else(|e| format!("\ntransport rows: {e:#}\n"));
    // Both runtimes must go outside async code: dropping a runtime inside it panics.
    drop(runtime);
    drop(targets);

    let meta = Meta {
        unix_time: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        duration_s: duration,
        tunnels,
        quick: args.quick,
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        kernel: fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
        load_average_at_start: load_average,
        servers: server_status,
    };
    write_report(&out_dir, &Report { meta, rows }, &transports)
}

/// Every selected server's executable, found, built or installed before anything is measured
/// (so the noisy and slow steps are over before the numbers start), or why there is none.
fn obtain_executables(selected: &[ServerName], install: bool) -> Vec<(ServerName, Result<PathBuf, String>)> {
    selected
        .iter()
        .map(|&name| {
            let found = match servers::obtain(name, install) {
                Ok(Some(path)) => Ok(path),
                Ok(None) => Err("not installed".to_owned()),
                Err(e) => Err(format!("{e:#}")),
            };
            if let Err(reason) = &found {
                eprintln!("[bench] {}: {reason}; its rows are skipped", name.as_str());
            }
            (name, found)
        })
        .collect()
}

/// Every server that has an executable, started and listening, or why it is not.
fn start_servers(
    executables: Vec<(ServerName, Result<PathBuf, String>)>,
    logs: &Path,
) -> Vec<(ServerName, Result<ServerProcess, String>)> {
    executables
        .into_iter()
        .map(|(name, executable)| {
            let started = executable
                .and_then(|bin| ServerProcess::start(name, &bin, logs).map_err(|e| format!("did not start: {e:#}")));
            match &started {
                Ok(server) => {
                    eprintln!("[bench] {} listening on {} (pid {})", name.as_str(), server.addr, server.pid())
                }
                Err(reason) => eprintln!("[bench] {}: {reason}; its rows are skipped", name.as_str()),
            }
            (name, started)
        })
        .collect()
}

/// The rows of `plan`, row by row rather than server by server: the machine is shared (builds
/// run beside the benchmark), and measuring a row for every subject back to back keeps each
/// row's ratios comparable even when the background load changes during the run.
fn measure_rows(
    runtime: &tokio::runtime::Runtime,
    targets: &Targets,
    plan: &[Measure],
    servers: &mut [(ServerName, Result<ServerProcess, String>)],
    window: Duration,
) -> Vec<Row> {
    let mut rows = Vec::with_capacity(plan.len());
    for &m in plan {
        let direct = measure(runtime, &targets.info, Subject::Direct, m, window);
        let mut outcomes = Vec::with_capacity(servers.len());
        for (name, server) in servers.iter_mut() {
            let outcome = match server {
                Err(reason) => Outcome::Skipped { reason: reason.clone() },
                // A crashed server fails its remaining rows rather than producing connect errors.
                Ok(process) => match process.check_alive() {
                    Err(e) => Outcome::Failed { error: format!("{e:#}") },
                    Ok(()) => {
                        let subject = Subject::Server {
                            name: *name,
                            socks5: process.addr,
                            socks4: process.socks4_addr,
                            pid: process.pid(),
                        };
                        measure(runtime, &targets.info, subject, m, window)
                    }
                },
            };
            outcomes.push((*name, outcome));
        }
        rows.push(Row { spec: m.spec(), direct, servers: outcomes });
    }
    rows
}

/// How each server ended the run: `ran`, why it stopped, or why it never started.
fn server_status(servers: &mut [(ServerName, Result<ServerProcess, String>)]) -> Vec<(String, String)> {
    servers
        .iter_mut()
        .map(|(name, server)| {
            let status = match server {
                Ok(process) => process.check_alive().map_or_else(|e| format!("{e:#}"), |()| "ran".to_owned()),
                Err(reason) => reason.clone(),
            };
            (name.as_str().to_owned(), status)
        })
        .collect()
}

/// Prints the table (with the transport rows) and writes it and the JSON report to `out_dir`.
fn write_report(out_dir: &Path, report: &Report, transports: &str) -> Result<()> {
    let table = report.to_table() + transports;
    print!("{table}");
    let json_path = out_dir.join("bench.json");
    fs::write(&json_path, report.to_json()?).with_context(|| format!("writing {}", json_path.display()))?;
    let txt_path = out_dir.join("bench.txt");
    fs::write(&txt_path, &table).with_context(|| format!("writing {}", txt_path.display()))?;
    eprintln!("[bench] wrote {} and {}", json_path.display(), txt_path.display());
    Ok(())
}

/// The transport rows (docs/transports.md) as text: socksref's pair against gost's, with ratios.
fn transport_rows(runtime: &Runtime, args: &BenchArgs, window: Duration, out_dir: &std::path::Path) -> Result<String> {
    let socksref = transport::socksref_binary(servers::build_socksref)?;
    let gost = match servers::obtain(ServerName::Gost, !args.no_install) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("[bench] gost: {e:#}; transport rows without it");
            None
        }
    };
    let rows =
        transport::rows(runtime, &socksref, gost.as_deref(), window.max(Duration::from_secs(1)), &out_dir.join("logs"));
    Ok(transport::table(&rows))
}

/// Runs one measurement for one subject and prints a progress line.
fn measure(runtime: &Runtime, targets: &TargetInfo, subject: Subject, m: Measure, window: Duration) -> Outcome {
    let spec = m.spec();
    // What the server supports comes from its peer definition, which it was started from.
    let caps = match subject {
        Subject::Server { name, .. } => Some(name.capabilities()),
        Subject::Direct => None,
    };
    let result: Option<Result<Sample>> = match (subject, m, caps) {
        (Subject::Direct, Measure::IdleRss(_), _) => None,
        (_, _, Some(Err(e))) => Some(Err(e)),
        (_, Measure::Handshakes { socks4: true, .. }, Some(Ok(c))) if !c.socks4 => None,
        (_, Measure::UdpPps, Some(Ok(c))) if !c.udp => None,
        (subject, m, _) => Some(runtime.block_on(run_measure(targets, subject, m, window))),
    };
    let outcome = match result {
        None => Outcome::NotApplicable,
        Some(Ok(Sample { value, note })) => Outcome::Ok { value, note },
        Some(Err(e)) => Outcome::Failed { error: format!("{e:#}") },
    };
    let shown = match &outcome {
        Outcome::Ok { value, note } => {
            let note = note.as_deref().map(|n| format!("  ({n})")).unwrap_or_default();
            format!("{} {}{note}", report::format_value(*value), spec.unit)
        }
        Outcome::NotApplicable => "n/a".to_owned(),
        Outcome::Skipped { reason } => format!("skipped: {reason}"),
        Outcome::Failed { error } => format!("FAILED: {error}"),
    };
    eprintln!("[bench] {:<10} {:<30} {shown}", subject.name(), spec.title);
    if !matches!(outcome, Outcome::NotApplicable) {
        std::thread::sleep(SETTLE);
    }
    outcome
}

async fn run_measure(targets: &TargetInfo, subject: Subject, m: Measure, window: Duration) -> Result<Sample> {
    let (socks5, socks4) = match subject {
        Subject::Direct => (Route::Direct, Route::Direct),
        Subject::Server { socks5, socks4, .. } => (Route::Socks5(socks5), Route::Socks4(socks4)),
    };
    match m {
        Measure::Throughput(direction, streams) => load::throughput(socks5, targets, direction, streams, window).await,
        Measure::Handshakes { socks4: v4, concurrency } => {
            let route = if v4 { socks4 } else { socks5 };
            load::handshakes(route, targets.accept_close, concurrency, window).await
        }
        Measure::UdpPps => load::udp_pps(socks5, targets, window).await,
        Measure::IdleRss(n) => match subject {
            Subject::Server { socks5, pid, .. } => load::idle_rss(socks5, pid, targets.sink, n).await,
            Subject::Direct => bail!("idle RSS needs a server process"),
        },
    }
}
