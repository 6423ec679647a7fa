//! `sockslab`: check SOCKS servers and clients against the scenario catalogue.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use sockslab::coverage::{Coverage, Requirements};
use sockslab::peers::{self, PeerDef};
use sockslab::preflight;
use sockslab::profile::{Profile, PROFILES};
use sockslab::report::{html, json, junit, Report};
use sockslab::runner::{self, Claims, RunOptions, Sut};
use sockslab::scenario::{
    load_catalogue, Command as Cmd, Extension, Feature, Method, Role, Scenario, Schedule, Version,
};
use sockslab::select::Only;
use sockslab::verdict::{Expectations, ScenarioResult, Strictness, Verdict};

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
    /// `curl -sS --socks5 {proxy} http://{target}/`. Placeholders: {proxy} (127.0.0.1:PORT),
    /// {proxy.host}, {proxy.port}, {target} (127.0.0.1:PORT), {target.host} (localhost),
    /// {target.port}, {user}, {pass}, {port} (a free port for the command's own forwarder).
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
    /// Decode every SOCKS conversation of a pcap/pcapng capture, one line per message.
    Dissect {
        /// The capture file.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Play the client side of each SOCKS conversation of a capture against a live server and
    /// compare its answers with the captured ones (varying fields templated), with `check`'s
    /// verdicts and reports.
    Replay(ReplayArgs),
    /// Turn a captured conversation into a catalogue scenario (e.g. scenarios/captured/NAME.yaml).
    Import {
        /// The capture file.
        file: PathBuf,
        /// Where to write the scenario.
        #[arg(short, long)]
        output: PathBuf,
        /// Which conversation (the `#N` of `sockslab dissect`).
        #[arg(long, default_value_t = 1)]
        conversation: usize,
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
    /// Server URL on loopback: socks4:// (SOCKS4 only), socks4a:// (4 and 4a), socks5://, or
    /// socks:// (4, 4a and 5 on one port), with host:port.
    url: Option<String>,
    /// Peer name (a folder of harness/peers) or folder: starts its instances and uses its expected results.
    #[arg(long, conflicts_with = "url")]
    peer: Option<String>,
    /// RFC 1929 username (the server requires authentication).
    #[arg(long, requires = "pass")]
    user: Option<String>,
    /// RFC 1929 password.
    #[arg(long, requires = "user")]
    pass: Option<String>,
    /// Profiles (repeatable or comma-separated): rfc1928-core, socks4, udp, bind, gost, all.
    #[arg(long, value_delimiter = ',')]
    profile: Vec<String>,
    /// Capabilities the server has besides CONNECT (comma-separated): bind, udp, gost.
    #[arg(long, value_delimiter = ',')]
    claims: Vec<String>,
    /// Features the server is configured to refuse (comma-separated): bind, udp, socks4, socks4a.
    /// Scenarios that test a refusal run only for what is declared here.
    #[arg(long, value_delimiter = ',')]
    disabled: Vec<String>,
    /// The server's handshake timeout (e.g. `3s`), so scenarios that wait for it can run.
    #[arg(long, value_parser = humantime::parse_duration)]
    handshake_timeout: Option<std::time::Duration>,
    /// The server's outgoing connect timeout (e.g. `3s`), so scenarios that wait for it can run.
    #[arg(long, value_parser = humantime::parse_duration)]
    connect_timeout: Option<std::time::Duration>,
    /// The server's BIND accept timeout (e.g. `3s`), so scenarios that wait for it can run.
    #[arg(long, value_parser = humantime::parse_duration)]
    bind_timeout: Option<std::time::Duration>,
    /// The server's UDP association idle timeout, so scenarios that wait for it can run.
    #[arg(long, value_parser = humantime::parse_duration)]
    udp_idle_timeout: Option<std::time::Duration>,
    /// Only scenario ids matching this glob (repeatable): `*` any run of characters (dots too),
    /// `?` one, `[abc]` a class, `{a,b}` alternatives; without wildcards the whole id exactly.
    #[arg(long, value_name = "GLOB")]
    only: Vec<String>,
    /// Only these schedules: as-written, one-byte, coalesced, field-split.
    #[arg(long, value_delimiter = ',')]
    schedule: Vec<String>,
    /// Exit non-zero on WARN (a SHOULD not met) too.
    #[arg(long)]
    strict: bool,
    /// Exit non-zero on POLICY (a MAY or a project decision not followed) too.
    #[arg(long)]
    policy: bool,
    /// Expected-results file (default: the peer's expected.yaml).
    #[arg(long)]
    expected: Option<PathBuf>,
    #[command(flatten)]
    reports: ReportFiles,
    /// Catalogue directory.
    #[arg(long)]
    scenarios: Option<PathBuf>,
    /// Scenarios run at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Print passing and not-applicable scenarios, and the transcript of each failure.
    #[arg(short, long)]
    verbose: bool,
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// The capture file.
    file: PathBuf,
    /// The server to replay against: socks5://[user:pass@]127.0.0.1:PORT (socks4://, socks4a://, socks://).
    #[arg(long, required_unless_present = "as_server", conflicts_with = "as_server")]
    against: Option<String>,
    /// Play the captured server side instead, against a client under test (as `check-client`).
    #[arg(long)]
    as_server: bool,
    /// With --as-server: the client command line (`check-client`'s placeholders). Default: for
    /// each conversation, the curl line that makes its request (--socks5, --socks5-hostname,
    /// --socks4, --socks4a, --proxy-user).
    #[arg(long, requires = "as_server")]
    client: Option<String>,
    /// With --as-server: the username the runner accepts and `{user}` becomes.
    #[arg(long, default_value = "alice", requires = "as_server")]
    user: String,
    /// With --as-server: the password the runner accepts and `{pass}` becomes.
    #[arg(long, default_value = "s3cret", requires = "as_server")]
    pass: String,
    /// Only this conversation (the `#N` of `sockslab dissect`).
    #[arg(long)]
    conversation: Option<usize>,
    /// Capabilities the server has besides CONNECT (comma-separated): bind, udp, gost.
    #[arg(long, value_delimiter = ',')]
    claims: Vec<String>,
    #[command(flatten)]
    reports: ReportFiles,
    /// Catalogue directory (for its requirements.yaml).
    #[arg(long)]
    scenarios: Option<PathBuf>,
    /// Print passing scenarios and the transcript of each failure.
    #[arg(short, long)]
    verbose: bool,
}

#[derive(clap::Args)]
struct ClientArgs {
    /// The client command line. Placeholders: {proxy} (the runner's listener, 127.0.0.1:PORT),
    /// {proxy.host}, {proxy.port}, {target} (the target fixture, 127.0.0.1:PORT), {target.host}
    /// (localhost, so name-sending modes send a name), {target.port}, {user}, {pass}, {port} (a
    /// free loopback port for the command's own use, e.g. a local forwarder; new every run). The
    /// command carries its own timeout (curl -m 3): scenarios where the server stays silent wait
    /// up to 12 s for the client to give up.
    #[arg(long)]
    command: String,
    /// Only scenario ids matching this glob (repeatable): `*` any run of characters (dots too),
    /// `?` one, `[abc]` a class, `{a,b}` alternatives; without wildcards the whole id exactly.
    #[arg(long, value_name = "GLOB")]
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
    /// proxy), or all. Scenarios needing anything else are not applicable. Default: all.
    #[arg(long, value_delimiter = ',')]
    speaks: Vec<String>,
    /// The command line logs in with {user} and {pass} (RFC 1929): scenarios where the server
    /// selects USERNAME/PASSWORD apply only then.
    #[arg(long)]
    login: bool,
    /// The SOCKS command the command line makes: connect (default), bind or udp. Scenarios about
    /// another command are not applicable.
    #[arg(long, default_value = "connect")]
    request: String,
    /// Expected-results file: scenarios this client is known to fail, each with its reason.
    #[arg(long)]
    expected: Option<PathBuf>,
    /// Catalogue directory.
    #[arg(long)]
    scenarios: Option<PathBuf>,
    #[command(flatten)]
    reports: ReportFiles,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().cmd {
        Sub::Check(a) => check(a).await,
        Sub::CheckClient(a) => check_client(a).await,
        Sub::Coverage { scenarios, strict } => coverage(scenarios, strict),
        Sub::List { scenarios, profile } => list(scenarios, profile),
        Sub::Dissect { file, json } => dissect(&file, json),
        Sub::Replay(a) => replay(a).await,
        Sub::Import { file, output, conversation } => import(&file, &output, conversation),
    };
    // Errors are the user's to read, not a developer's: one line (with its causes), exit 2, and
    // never a backtrace whatever RUST_BACKTRACE says.
    let code = result.unwrap_or_else(|e| {
        eprintln!("sockslab: {e:#}");
        2
    });
    std::process::exit(code);
}

fn dissect(file: &std::path::Path, json: bool) -> Result<i32> {
    let d = sockslab::pcap::dissect_file(file)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        print!("{}", d.to_text());
    }
    Ok(0)
}

async fn replay(a: ReplayArgs) -> Result<i32> {
    let dir = a.scenarios.clone().unwrap_or_else(sockslab::default_scenarios_dir);
    let Some(against) = a.against.clone() else {
        let results = sockslab::pcap::replay::replay_as_server(
            &a.file,
            &dir,
            a.conversation,
            a.client.as_deref(),
            &a.user,
            &a.pass,
        )
        .await?;
        let label = a.client.clone().unwrap_or_else(|| format!("{} as server", a.file.display()));
        return finish(Report::new(label, results), Strictness::default(), true, &a.reports);
    };
    let t = parse_url(&against)?;
    let method = if t.user.is_some() { Method::Userpass } else { Method::Noauth };
    let mut claims = Claims { versions: t.versions.clone(), method, ipv6: true, domain: true, ..Claims::default() };
    add_claims(&mut claims, &a.claims)?;
    let sut = Sut {
        addr: t.addr,
        user: t.user.unwrap_or_default().into_bytes(),
        pass: t.pass.unwrap_or_default().into_bytes(),
        claims,
        instance: None,
        transport: t.transport.clone(),
    };
    let results = sockslab::pcap::replay::replay(&a.file, &dir, a.conversation, &sut).await?;
    for r in &results {
        print_result(r, a.verbose);
    }
    let report = Report::new(against, results);
    let s = &report.summary;
    println!(
        "{} replayed: {} pass, {} fail or warn, {} n/a",
        report.results.len(),
        s.passed,
        s.failed + s.warned + s.policy,
        s.not_applicable
    );
    a.reports.write(&report)?;
    Ok(if report.summary.ok(Strictness::default()) { 0 } else { 1 })
}

fn import(file: &std::path::Path, output: &std::path::Path, conversation: usize) -> Result<i32> {
    let d = sockslab::pcap::dissect_file(file)?;
    let conv = d.conversations.iter().find(|c| c.index == conversation).with_context(|| {
        format!("{}: no conversation #{conversation} ({} found)", file.display(), d.conversations.len())
    })?;
    let stem = output.file_stem().map(|s| s.to_string_lossy().into_owned()).context("output needs a file name")?;
    let imp = sockslab::pcap::scenario::to_scenario(conv, &format!("captured.{stem}"), &file.display().to_string())
        .map_err(|e| anyhow::anyhow!(e))?;
    if let Some(parent) = output.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(output, &imp.yaml).with_context(|| format!("writing {}", output.display()))?;
    // The scenario must load as the catalogue would load it.
    Scenario::load(output).with_context(|| format!("{} does not load", output.display()))?;
    print!("{}", imp.yaml);
    for n in &imp.notes {
        eprintln!("note: {n}");
    }
    Ok(0)
}

fn catalogue(dir: Option<PathBuf>) -> Result<(PathBuf, Vec<Scenario>)> {
    let dir = dir.unwrap_or_else(sockslab::default_scenarios_dir);
    let s = load_catalogue(&dir).with_context(|| format!("loading scenarios from {}", dir.display()))?;
    Ok((dir, s))
}

fn schedules(names: &[String]) -> Result<Vec<Schedule>> {
    if names.is_empty() {
        return Ok(Schedule::ALL.to_vec());
    }
    names.iter().map(|n| Schedule::from_name(n).with_context(|| format!("unknown schedule `{n}`"))).collect()
}

struct Target {
    versions: BTreeSet<Version>,
    addr: SocketAddr,
    user: Option<String>,
    pass: Option<String>,
    /// `socks5+wss://…`: the transport every connection to the server runs through.
    transport: std::sync::Arc<socksref::transport::Dialer>,
}

/// `--claims bind,udp,gost`: what the server under test says it serves beyond CONNECT.
fn add_claims(claims: &mut Claims, names: &[String]) -> Result<()> {
    for c in names {
        match c.as_str() {
            "bind" => claims.commands.insert(Cmd::Bind),
            "udp" => claims.commands.insert(Cmd::Udp),
            "gost" => claims.extensions.insert(Extension::Gost),
            other => bail!("--claims {other}: use bind, udp or gost"),
        };
    }
    Ok(())
}

fn parse_url(url: &str) -> Result<Target> {
    // `HANDLER+TRANSPORT://…?transport keys`: the reference's own parser and dialer, so the
    // harness speaks each transport exactly as socksref does (docs/transports.md).
    let (url, transport) = match url.split_once("://") {
        Some((scheme, _)) if scheme.contains('+') => {
            let parsed = socksref::url::ProxyUrl::parse(url)?;
            let (handler, spec) = socksref::transport::split_url(parsed)?;
            let dialer = socksref::transport::Dialer::new(spec).context("transport settings")?;
            let rest = url.split_once("://").map(|(_, r)| r).unwrap_or_default();
            let rest = rest.split_once('?').map(|(r, _)| r).unwrap_or(rest);
            (format!("{}://{rest}", handler.scheme), std::sync::Arc::new(dialer))
        }
        _ => (url.to_string(), std::sync::Arc::default()),
    };
    let url = url.as_str();
    let (scheme, rest) = url.split_once("://").context("expected scheme://host:port")?;
    let versions: BTreeSet<Version> = match scheme {
        "socks4" => [Version::Socks4].into(),
        "socks4a" => [Version::Socks4, Version::Socks4a].into(),
        "socks5" | "socks5h" => [Version::Socks5].into(),
        "socks" => [Version::Socks4, Version::Socks4a, Version::Socks5].into(),
        s => bail!("unsupported scheme `{s}` (socks4, socks4a, socks5, or socks for all three on one port)"),
    };
    let rest = rest.trim_end_matches('/');
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (user, pass) = match userinfo {
        Some(u) => {
            let (u, p) = u.split_once(':').with_context(|| format!("`{u}@`: give user:password@ or neither"))?;
            (Some(u.to_string()), Some(p.to_string()))
        }
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
    Ok(Target { versions, addr, user, pass, transport })
}

fn millis(d: Option<std::time::Duration>) -> Option<u64> {
    d.map(|d| d.as_millis() as u64)
}

/// The claims of a server given by URL: what the scheme, the flags and the profiles say.
fn url_claims(a: &CheckArgs, t: &Target, method: Method, profiles: &[Profile]) -> Result<Claims> {
    let mut claims = Claims {
        versions: t.versions.clone(),
        method,
        handshake_timeout_ms: millis(a.handshake_timeout),
        connect_timeout_ms: millis(a.connect_timeout),
        bind_timeout_ms: millis(a.bind_timeout),
        udp_idle_timeout_ms: millis(a.udp_idle_timeout),
        ipv6: true,
        domain: true,
        ..Claims::default()
    };
    add_claims(&mut claims, &a.claims)?;
    for d in &a.disabled {
        let f = Feature::from_name(d).with_context(|| format!("--disabled {d}: use bind, udp, socks4 or socks4a"))?;
        claims.disabled.insert(f);
    }
    for p in profiles {
        p.extend_claims(&mut claims);
    }
    for (f, c) in [(Feature::Bind, Cmd::Bind), (Feature::Udp, Cmd::Udp)] {
        if claims.disabled.contains(&f) && claims.commands.contains(&c) {
            bail!("{} is both claimed and declared disabled", f.name());
        }
    }
    Ok(claims)
}

async fn check(a: CheckArgs) -> Result<i32> {
    let started = std::time::Instant::now();
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
        if def.instances.is_empty() {
            bail!(
                "peer `{}` has no server instances to check (it is a client only: try `sockslab check-client`)",
                def.name
            );
        }
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
            let p = if t.versions.contains(&Version::Socks5) { "rfc1928-core" } else { "socks4" };
            profiles.push(Profile::by_name(p).expect("built-in profile"));
        }
        let user = a.user.clone().or(t.user.clone());
        let pass = a.pass.clone().or(t.pass.clone());
        let creds = user.as_ref().zip(pass.as_ref()).map(|(u, p)| (u.as_bytes(), p.as_bytes()));
        let socks5 = t.versions.contains(&Version::Socks5);
        let pre = preflight::run_via(t.addr, &t.transport, socks5, creds).await?;
        if let Some(n) = &pre.note {
            eprintln!("note: {n}");
        }
        let claims = url_claims(&a, &t, pre.method, &profiles)?;
        let sut = Sut {
            addr: t.addr,
            user: user.unwrap_or_default().into_bytes(),
            pass: pass.unwrap_or_default().into_bytes(),
            claims,
            instance: None,
            transport: t.transport.clone(),
        };
        (vec![sut], Expectations::default(), url)
    };
    if let Some(p) = &a.expected {
        expected = Expectations::load(p)?;
    }
    let only = Only::new(&a.only)?;
    let selected: Vec<Scenario> = all
        .into_iter()
        .filter(|s| only.matches(&s.id))
        .filter(|s| !a.only.is_empty() || profiles.iter().any(|p| p.selects(s)))
        .collect();
    if selected.is_empty() {
        bail!("no scenario selected");
    }
    let progress = Progress::new(selected.len());
    let results = runner::run_all(&selected, &suts, &opts, &expected, |done, _, r| progress.tick(done, r)).await;
    progress.finish();
    for r in running {
        r.stop().await;
    }
    let strict = Strictness { warn: a.strict, policy: a.policy };
    let report = Report::new(label, results).with_wall(started.elapsed());
    let code = finish(report, strict, a.verbose, &a.reports)?;
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

/// Progress on stderr: a live line on a terminal, a periodic line otherwise (CI logs).
struct Progress {
    total: usize,
    tty: bool,
    started: std::time::Instant,
    last: std::sync::Mutex<std::time::Instant>,
    bad: std::sync::atomic::AtomicUsize,
}

/// How often a non-terminal progress line is printed.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Progress {
    fn new(total: usize) -> Progress {
        let now = std::time::Instant::now();
        Progress {
            total,
            tty: std::io::stderr().is_terminal(),
            started: now,
            last: std::sync::Mutex::new(now),
            bad: Default::default(),
        }
    }

    fn tick(&self, done: usize, r: &ScenarioResult) {
        use std::sync::atomic::Ordering;
        if matches!(r.verdict, Verdict::Fail | Verdict::Xpass { .. }) {
            self.bad.fetch_add(1, Ordering::Relaxed);
        }
        let bad = self.bad.load(Ordering::Relaxed);
        if self.tty {
            let width = 30;
            let filled = width * done / self.total.max(1);
            eprint!(
                "\r\x1b[K[{}{}] {done}/{} {bad} failing  {} {}",
                "#".repeat(filled),
                "-".repeat(width - filled),
                self.total,
                r.verdict.label(),
                r.id
            );
            let _ = std::io::stderr().flush();
            return;
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() >= PROGRESS_EVERY || done == self.total {
            *last = std::time::Instant::now();
            eprintln!(
                "progress: {done}/{} scenarios in {:.0} s, {bad} failing",
                self.total,
                self.started.elapsed().as_secs_f64()
            );
        }
    }

    fn finish(&self) {
        if self.tty {
            eprint!("\r\x1b[K");
        }
    }
}

/// The report files a run writes, the same three options on every command that produces verdicts.
#[derive(clap::Args, Debug)]
struct ReportFiles {
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a JUnit XML report here.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Write a self-contained HTML report here (verdict, grade and requirement text per scenario).
    #[arg(long)]
    html: Option<PathBuf>,
}

impl ReportFiles {
    /// Writes every report that was asked for.
    fn write(&self, report: &Report) -> Result<()> {
        type Render = fn(&Report) -> String;
        let outputs: [(&Option<PathBuf>, Render); 3] =
            [(&self.json, json::render), (&self.junit, junit::render), (&self.html, html::render)];
        for (path, render) in outputs {
            if let Some(p) = path {
                std::fs::write(p, render(report)).with_context(|| format!("writing {}", p.display()))?;
            }
        }
        Ok(())
    }
}

fn finish(report: Report, strict: Strictness, verbose: bool, reports: &ReportFiles) -> Result<i32> {
    // The most serious first: MUST failures and xpasses, then SHOULD, then policy, then the rest.
    let rank = |v: &Verdict| match v {
        Verdict::Fail | Verdict::Xpass { .. } => 0,
        Verdict::Warn => 1,
        Verdict::Policy => 2,
        _ => 3,
    };
    let mut order: Vec<&ScenarioResult> = report.results.iter().collect();
    order.sort_by_key(|r| rank(&r.verdict));
    for r in order {
        print_result(r, verbose);
    }
    if let Some(h) = split_delivery_hint(&report.results) {
        println!("{h}");
    }
    println!("{}: {}", report.target, report.summary);
    reports.write(&report)?;
    Ok(if report.summary.ok(strict) { 0 } else { 1 })
}

fn print_result(r: &ScenarioResult, verbose: bool) {
    let inst = r.instance.as_deref().map(|i| format!(" [{i}]")).unwrap_or_default();
    let label = r.verdict.label();
    match &r.verdict {
        Verdict::Pass if !verbose => {}
        Verdict::Pass => println!("PASS    {}{inst}", r.id),
        Verdict::NotApplicable { reason } if verbose => println!("N/A     {}: {reason}", r.id),
        Verdict::NotApplicable { .. } => {}
        Verdict::Unavailable { reason } => println!("UNAVAIL {}: {reason}", r.id),
        Verdict::ExpectedFailure { reason, .. } => println!("XFAIL   {}{inst}: {reason}", r.id),
        Verdict::Xpass { reason } => println!("XPASS   {}{inst}: passed, but expected to fail ({reason})", r.id),
        Verdict::Fail | Verdict::Warn | Verdict::Policy => {
            // One line per scenario: the first failure (its schedules grouped), then the
            // requirement it breaks; -v adds the other failures and the transcript.
            let groups = grouped(r);
            let (first, more) = match groups.split_first() {
                Some((f, m)) => (Some(f), m),
                None => (None, &[][..]),
            };
            let detail = first
                .map(|(schedules, f)| {
                    let step = f.step.map(|s| format!("step {s}: ")).unwrap_or_default();
                    format!("[{schedules}] {step}{}", f.message)
                })
                .unwrap_or_default();
            let others = if more.is_empty() || verbose {
                String::new()
            } else {
                format!(" (+{} other failure{}, -v shows them)", more.len(), if more.len() == 1 { "" } else { "s" })
            };
            println!("{label:<7} {}{inst}: {detail}{others}", r.id);
            if let Some(c) = r.cites.iter().find(|c| sockslab::verdict::Grade::of(c.level) == r.grade) {
                println!("        {} {}: {}", r.grade.label(), c.id, one_line(&c.text, 150));
            }
            if verbose {
                println!("        {}", r.title);
                for (schedules, f) in more {
                    let step = f.step.map(|s| format!("step {s}: ")).unwrap_or_default();
                    println!("        [{schedules}] {step}{}", f.message);
                }
                if let Some(f) = r.failures.first() {
                    print!("{}", f.transcript.render("          "));
                }
            }
        }
    }
}

/// A hint when many scenarios fail only under the split or pipelined schedules: one cause
/// (reading each message with a single `recv()`) rather than many deviations.
fn split_delivery_hint(results: &[ScenarioResult]) -> Option<String> {
    let only_split = results
        .iter()
        .filter(|r| r.verdict.deviated())
        .filter(|r| {
            let failed: Vec<Schedule> = r.failures.iter().map(|f| f.schedule).collect();
            !failed.is_empty() && r.schedules.contains(&Schedule::AsWritten) && {
                let as_written = r.failures.iter().find(|f| f.schedule == Schedule::AsWritten);
                let split = r.failures.iter().find(|f| f.schedule != Schedule::AsWritten);
                // The split schedules fail, and not the same way as the as-written one (if at all).
                split.is_some_and(|s| as_written.is_none_or(|a| a.step != s.step || a.message != s.message))
            }
        })
        .count();
    (only_split >= 5).then(|| {
        format!(
            "note: {only_split} scenarios fail differently once messages are split or pipelined (one-byte, \
             field-split, coalesced): the server probably treats each recv() as one whole message (V-23); \
             --schedule as-written shows the rest"
        )
    })
}

/// Failures with the same step and message, with the schedules they happened under.
fn grouped(r: &ScenarioResult) -> Vec<(String, &sockslab::verdict::ScheduleFailure)> {
    let mut out: Vec<(Vec<&str>, &sockslab::verdict::ScheduleFailure)> = Vec::new();
    for f in &r.failures {
        match out.iter_mut().find(|(_, g)| g.step == f.step && g.message == f.message) {
            Some((names, _)) => names.push(f.schedule.name()),
            None => out.push((vec![f.schedule.name()], f)),
        }
    }
    out.into_iter()
        .map(|(names, f)| {
            let all = names.len() == Schedule::ALL.len();
            (if all { "every schedule".to_string() } else { names.join(", ") }, f)
        })
        .collect()
}

fn one_line(s: &str, max: usize) -> String {
    let t: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if t.chars().count() > max {
        format!("{}…", t.chars().take(max).collect::<String>())
    } else {
        t
    }
}

async fn check_client(a: ClientArgs) -> Result<i32> {
    let started = std::time::Instant::now();
    let (_, all) = catalogue(a.scenarios.clone())?;
    let scheds = schedules(&a.schedule)?;
    let only = Only::new(&a.only)?;
    let selected: Vec<Scenario> =
        all.into_iter().filter(|s| s.roles.contains(&Role::Server) && only.matches(&s.id)).collect();
    if selected.is_empty() {
        bail!("no server-role scenario selected");
    }
    let mut speaks = Vec::new();
    for v in &a.speaks {
        match v.as_str() {
            "all" => speaks.clear(),
            "socks4" => speaks.push((Version::Socks4, false)),
            "socks4a" => speaks.push((Version::Socks4a, true)),
            "socks5" => speaks.push((Version::Socks5, false)),
            "socks5h" => speaks.push((Version::Socks5, true)),
            _ => bail!("--speaks {v:?}: use socks4, socks4a, socks5, socks5h or all"),
        }
    }
    let expected = match &a.expected {
        Some(p) => Expectations::load(p)?,
        None => Expectations::default(),
    };
    let request = match a.request.as_str() {
        "connect" => Cmd::Connect,
        "bind" => Cmd::Bind,
        "udp" => Cmd::Udp,
        other => bail!("--request {other:?}: use connect, bind or udp"),
    };
    let mut results = Vec::new();
    for s in &selected {
        if s.needs.command != request {
            let reason =
                format!("the scenario is about {:?}, the client makes {:?} requests", s.needs.command, request)
                    .to_lowercase();
            results.push(ScenarioResult::new(s, None, Verdict::NotApplicable { reason }));
            continue;
        }
        if !speaks.is_empty() && !speaks.contains(&(s.needs.version, s.needs.domain)) {
            // Decided before running: the client does not claim this protocol and addressing.
            let how = if s.needs.domain { "names" } else { "addresses" };
            let reason = format!("the client does not send {how} in {:?}", s.needs.version).to_lowercase();
            results.push(ScenarioResult::new(s, None, Verdict::NotApplicable { reason }));
            continue;
        }
        if s.needs.method == Method::Userpass && !a.login {
            let reason = "the server selects USERNAME/PASSWORD; the client is not declared to log in (--login)".into();
            results.push(ScenarioResult::new(s, None, Verdict::NotApplicable { reason }));
            continue;
        }
        let exp = expected.expected_failures.iter().find(|e| e.id == s.id);
        results.push(runner::server::grade(s, &scheds, &a.command, &a.user, &a.pass, exp).await);
    }
    let report = Report::new(a.command.clone(), results).with_wall(started.elapsed());
    finish(report, Strictness::default(), true, &a.reports)
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
