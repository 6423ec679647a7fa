//! `sockslab`: check SOCKS servers and clients against the scenario catalogue.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use sockslab::coverage::{Coverage, Requirements};
use sockslab::peers::{self, PeerDef};
use sockslab::profile::{Profile, PROFILES};
use sockslab::report::{json, junit, Report};
use sockslab::runner::{self, Claims, RunOptions, Sut};
use sockslab::scenario::{load_catalogue, Command as Cmd, Method, Role, Scenario, Schedule, Version};
use sockslab::verdict::{Expectations, ScenarioResult, Verdict};

#[derive(Parser)]
#[command(name = "sockslab", version, about = "SOCKS4/4a/5 conformance lab")]
struct Cli {
    #[command(subcommand)]
    cmd: Sub,
}

#[derive(Subcommand)]
enum Sub {
    /// Check a SOCKS server: `socks5://[user:pass@]127.0.0.1:PORT`, or start a peer with `--peer`.
    Check(CheckArgs),
    /// Check a SOCKS client: the runner plays the server for a command line such as
    /// `curl -sS --socks5 {proxy} http://{target}/`.
    CheckClient(ClientArgs),
    /// Every normative statement of the covered specs, with the scenarios that test it.
    Coverage {
        /// Catalogue directory.
        #[arg(long)]
        scenarios: Option<PathBuf>,
        /// Exit 1 when a statement without a `role` note is uncovered or a reference dangles.
        #[arg(long)]
        strict: bool,
    },
    /// List scenarios (optionally those a profile selects) and profiles.
    List {
        /// Catalogue directory.
        #[arg(long)]
        scenarios: Option<PathBuf>,
        /// Only scenarios this profile selects.
        #[arg(long)]
        profile: Option<String>,
    },
}

#[derive(clap::Args)]
struct CheckArgs {
    /// Server URL: socks4://, socks4a://, socks5:// with host:port on loopback.
    url: Option<String>,
    /// Peer name (a folder of harness/peers) or folder: starts its instances and uses its expected results.
    #[arg(long, conflicts_with = "url")]
    peer: Option<String>,
    /// RFC 1929 username (the server requires authentication).
    #[arg(long)]
    user: Option<String>,
    /// RFC 1929 password.
    #[arg(long)]
    pass: Option<String>,
    /// Profiles (repeatable or comma-separated): rfc1928-core, socks4, udp, bind, all.
    #[arg(long, value_delimiter = ',')]
    profile: Vec<String>,
    /// Only these scenario ids (repeatable; a trailing `*` matches a prefix).
    #[arg(long)]
    only: Vec<String>,
    /// Only these schedules: as-written, one-byte, coalesced, field-split.
    #[arg(long, value_delimiter = ',')]
    schedule: Vec<String>,
    /// The server's handshake timeout, so scenarios that wait for it can run.
    #[arg(long)]
    handshake_timeout_ms: Option<u64>,
    /// Expected-results file (default: the peer's expected.yaml).
    #[arg(long)]
    expected: Option<PathBuf>,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a JUnit XML report here.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Catalogue directory.
    #[arg(long)]
    scenarios: Option<PathBuf>,
    /// Scenarios run at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Print passing scenarios too.
    #[arg(short, long)]
    verbose: bool,
}

#[derive(clap::Args)]
struct ClientArgs {
    /// The client command line; `{proxy}`, `{target}`, `{target.host}`, `{user}`, `{pass}` are substituted.
    #[arg(long)]
    command: String,
    /// Only these scenario ids.
    #[arg(long)]
    only: Vec<String>,
    /// Only these schedules.
    #[arg(long, value_delimiter = ',')]
    schedule: Vec<String>,
    /// Username substituted for `{user}`.
    #[arg(long, default_value = "alice")]
    user: String,
    /// Password substituted for `{pass}`.
    #[arg(long, default_value = "s3cret")]
    pass: String,
    /// How the client addresses targets (repeatable or comma-separated): socks4 (IPv4),
    /// socks4a (names), socks5 (IP addresses, resolved locally), socks5h (names, resolved by the
    /// proxy). Scenarios needing anything else are not applicable. Default: all.
    #[arg(long, value_delimiter = ',')]
    speaks: Vec<String>,
    /// Catalogue directory.
    #[arg(long)]
    scenarios: Option<PathBuf>,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a JUnit XML report here.
    #[arg(long)]
    junit: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let code = match Cli::parse().cmd {
        Sub::Check(a) => check(a).await?,
        Sub::CheckClient(a) => check_client(a).await?,
        Sub::Coverage { scenarios, strict } => coverage(scenarios, strict)?,
        Sub::List { scenarios, profile } => list(scenarios, profile)?,
    };
    std::process::exit(code);
}

fn catalogue(dir: Option<PathBuf>) -> Result<(PathBuf, Vec<Scenario>)> {
    let dir = dir.unwrap_or_else(sockslab::default_scenarios_dir);
    let s = load_catalogue(&dir).with_context(|| format!("loading scenarios from {}", dir.display()))?;
    Ok((dir, s))
}

fn only_matches(only: &[String], id: &str) -> bool {
    only.is_empty()
        || only.iter().any(|o| match o.strip_suffix('*') {
            Some(p) => id.starts_with(p),
            None => o == id,
        })
}

fn schedules(names: &[String]) -> Result<Vec<Schedule>> {
    if names.is_empty() {
        return Ok(Schedule::ALL.to_vec());
    }
    names.iter().map(|n| Schedule::from_name(n).with_context(|| format!("unknown schedule `{n}`"))).collect()
}

struct Target {
    scheme: Version,
    addr: SocketAddr,
    user: Option<String>,
    pass: Option<String>,
}

fn parse_url(url: &str) -> Result<Target> {
    let (scheme, rest) = url.split_once("://").context("expected scheme://host:port")?;
    let scheme = match scheme {
        "socks4" => Version::Socks4,
        "socks4a" => Version::Socks4a,
        "socks5" | "socks5h" => Version::Socks5,
        s => bail!("unsupported scheme `{s}` (socks4, socks4a, socks5)"),
    };
    let rest = rest.trim_end_matches('/');
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (user, pass) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, ""))) {
        Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
        None => (None, None),
    };
    let addr = hostport
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve `{hostport}`"))?
        .next()
        .context("no address")?;
    // This lab only ever talks to loopback, so a typo cannot turn it on a real network.
    if !addr.ip().is_loopback() {
        bail!("{addr} is not a loopback address; sockslab only checks servers on 127.0.0.0/8 or ::1");
    }
    Ok(Target { scheme, addr, user, pass })
}

async fn check(a: CheckArgs) -> Result<i32> {
    let (_, all) = catalogue(a.scenarios.clone())?;
    let mut profiles: Vec<Profile> = a
        .profile
        .iter()
        .map(|p| Profile::by_name(p).with_context(|| format!("unknown profile `{p}`; try `sockslab list`")))
        .collect::<Result<_>>()?;
    let opts = RunOptions { schedules: schedules(&a.schedule)?, concurrency: a.concurrency };
    let mut running = Vec::new();
    let (suts, mut expected, label) = if let Some(peer) = &a.peer {
        let dir = if PathBuf::from(peer).join("peer.yaml").exists() {
            PathBuf::from(peer)
        } else {
            sockslab::default_peers_dir().join(peer)
        };
        let def = PeerDef::load(&dir)?;
        if profiles.is_empty() {
            profiles.push(Profile::by_name("all").expect("built-in profile"));
        }
        let version = peers::version(&def).await.unwrap_or_default();
        eprintln!("starting {} ({version}): {} instance(s)", def.name, def.instances.len());
        let mut suts = Vec::new();
        for inst in &def.instances {
            let r = peers::launch(&def, inst).await?;
            suts.push(r.sut.clone());
            running.push(r);
        }
        (suts, def.expectations()?, def.name.clone())
    } else {
        let url = a.url.clone().context("give a URL (socks5://127.0.0.1:PORT) or --peer NAME")?;
        let t = parse_url(&url)?;
        if profiles.is_empty() {
            let p = if t.scheme == Version::Socks5 { "rfc1928-core" } else { "socks4" };
            profiles.push(Profile::by_name(p).expect("built-in profile"));
        }
        let user = a.user.clone().or(t.user);
        let pass = a.pass.clone().or(t.pass);
        let mut versions: BTreeSet<Version> = [t.scheme].into();
        if t.scheme == Version::Socks4a {
            versions.insert(Version::Socks4);
        }
        let mut claims = Claims {
            versions,
            commands: [Cmd::Connect].into(),
            method: if user.is_some() { Method::Userpass } else { Method::Noauth },
            handshake_timeout_ms: a.handshake_timeout_ms,
            ipv6: true,
            domain: true,
        };
        for p in &profiles {
            p.extend_claims(&mut claims);
        }
        let sut = Sut {
            addr: t.addr,
            user: user.unwrap_or_default().into_bytes(),
            pass: pass.unwrap_or_default().into_bytes(),
            claims,
            instance: None,
        };
        (vec![sut], Expectations::default(), url)
    };
    if let Some(p) = &a.expected {
        expected = Expectations::load(p)?;
    }
    let selected: Vec<Scenario> = all
        .into_iter()
        .filter(|s| only_matches(&a.only, &s.id))
        .filter(|s| !a.only.is_empty() || profiles.iter().any(|p| p.selects(s)))
        .collect();
    if selected.is_empty() {
        bail!("no scenario selected");
    }
    let tty = std::io::stderr().is_terminal();
    let results = runner::run_all(&selected, &suts, &opts, &expected, |done, total, r| {
        if tty {
            eprint!("\r\x1b[K[{done}/{total}] {} {}", r.verdict.label(), r.id);
            let _ = std::io::stderr().flush();
        }
    })
    .await;
    if tty {
        eprint!("\r\x1b[K");
    }
    for r in running {
        r.stop().await;
    }
    let code = finish(Report::new(label, results), a.verbose, a.json.as_ref(), a.junit.as_ref())?;
    // An expected-results entry for a scenario that was not run is not an error, but say so:
    // entries for deleted or renamed scenarios would otherwise linger.
    let ids: BTreeSet<&str> = selected.iter().map(|s| s.id.as_str()).collect();
    for e in &expected.expected_failures {
        if a.only.is_empty() && a.profile.is_empty() && !ids.contains(e.id.as_str()) {
            eprintln!("note: expected failure `{}` names no selected scenario", e.id);
        }
    }
    Ok(code)
}

fn finish(report: Report, verbose: bool, json_out: Option<&PathBuf>, junit_out: Option<&PathBuf>) -> Result<i32> {
    for r in &report.results {
        print_result(r, verbose);
    }
    println!("{}: {}", report.target, report.summary);
    if let Some(p) = json_out {
        std::fs::write(p, json::render(&report)).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = junit_out {
        std::fs::write(p, junit::render(&report)).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(if report.summary.ok() { 0 } else { 1 })
}

fn print_result(r: &ScenarioResult, verbose: bool) {
    let inst = r.instance.as_deref().map(|i| format!(" [{i}]")).unwrap_or_default();
    match &r.verdict {
        Verdict::Pass if !verbose => {}
        Verdict::Pass => println!("PASS   {}{inst}", r.id),
        Verdict::NotApplicable { reason } if verbose => println!("N/A    {}: {reason}", r.id),
        Verdict::NotApplicable { .. } => {}
        Verdict::ExpectedFailure { reason } => println!("XFAIL  {}{inst}: {reason}", r.id),
        Verdict::Xpass { reason } => println!("XPASS  {}{inst}: passed, but expected to fail ({reason})", r.id),
        Verdict::Fail => {
            println!("FAIL   {}{inst}: {}", r.id, r.title);
            for f in &r.failures {
                let step = f.step.map(|s| format!("step {s}: ")).unwrap_or_default();
                println!("         [{}] {step}{}", f.schedule.name(), f.message);
            }
        }
    }
}

async fn check_client(a: ClientArgs) -> Result<i32> {
    let (_, all) = catalogue(a.scenarios.clone())?;
    let scheds = schedules(&a.schedule)?;
    let selected: Vec<Scenario> =
        all.into_iter().filter(|s| s.roles.contains(&Role::Server) && only_matches(&a.only, &s.id)).collect();
    if selected.is_empty() {
        bail!("no server-role scenario selected");
    }
    let speaks = a
        .speaks
        .iter()
        .map(|v| match v.as_str() {
            "socks4" => Ok((sockslab::scenario::Version::Socks4, false)),
            "socks4a" => Ok((sockslab::scenario::Version::Socks4a, true)),
            "socks5" => Ok((sockslab::scenario::Version::Socks5, false)),
            "socks5h" => Ok((sockslab::scenario::Version::Socks5, true)),
            _ => Err(anyhow::anyhow!("--speaks {v:?}: use socks4, socks4a, socks5 or socks5h")),
        })
        .collect::<Result<Vec<_>>>()?;
    let mut results = Vec::new();
    for s in &selected {
        let started = std::time::Instant::now();
        if !speaks.is_empty() && !speaks.contains(&(s.needs.version, s.needs.domain)) {
            // Decided before running: the client does not claim this protocol and addressing.
            let how = if s.needs.domain { "names" } else { "addresses" };
            let reason = format!("the client does not send {how} in {:?}", s.needs.version).to_lowercase();
            results.push(ScenarioResult {
                id: s.id.clone(),
                title: s.title.clone(),
                instance: None,
                verdict: sockslab::verdict::Verdict::NotApplicable { reason },
                schedules: Vec::new(),
                failures: Vec::new(),
                millis: 0,
            });
            continue;
        }
        let mut failures = Vec::new();
        let ran: Vec<Schedule> = s.schedules().into_iter().filter(|x| scheds.contains(x)).collect();
        for sch in &ran {
            if let Err(f) = runner::server::play(s, *sch, &a.command, &a.user, &a.pass).await {
                failures.push(sockslab::verdict::ScheduleFailure { schedule: *sch, step: f.step, message: f.message });
            }
        }
        let verdict = sockslab::verdict::decide(&ran, &failures, None);
        results.push(ScenarioResult {
            id: s.id.clone(),
            title: s.title.clone(),
            instance: None,
            verdict,
            schedules: ran,
            failures,
            millis: started.elapsed().as_millis() as u64,
        });
    }
    finish(Report::new(a.command.clone(), results), true, a.json.as_ref(), a.junit.as_ref())
}

fn coverage(dir: Option<PathBuf>, strict: bool) -> Result<i32> {
    let (dir, scenarios) = catalogue(dir)?;
    let reqs = Requirements::load(&dir.join("requirements.yaml"))?;
    let c = Coverage::compute(&reqs, &scenarios);
    print!("{}", c.render());
    let bad = c.uncovered().iter().any(|r| r.role.is_none()) || !c.dangling.is_empty();
    Ok(if strict && bad { 1 } else { 0 })
}

fn list(dir: Option<PathBuf>, profile: Option<String>) -> Result<i32> {
    let (_, scenarios) = catalogue(dir)?;
    let p = match profile {
        Some(n) => Some(Profile::by_name(&n).with_context(|| format!("unknown profile `{n}`"))?),
        None => None,
    };
    for s in scenarios.iter().filter(|s| p.is_none_or(|p| p.selects(s))) {
        println!("{:<48} {}", s.id, s.title);
    }
    println!("\nprofiles:");
    for p in PROFILES {
        println!("  {:<14} {}", p.name, p.about);
    }
    Ok(0)
}
