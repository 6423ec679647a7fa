//! `cargo xtask interop --configs`: every example config file under docker/configs/ run twice,
//! once by the real program it was written for (gost `-C`, V2Ray 4.34 `-config`, V2Ray 5
//! `run -c`) and once by `socksref -C` / `socksref --v2ray`, with the same client checks against
//! both. Verdicts must agree, except for the listed, reasoned expected differences.
//!
//! What runs is data: docker/configs/suites.yaml names each file, its format, its upstreams and
//! its checks; each peer's definition (harness/peers/<peer>/peer.yaml, `config_files`) says which
//! formats it runs and with what command line. This module only loads, validates and runs them.
//!
//! A file's fixed ports (1080, 2080, 9000, …) are replaced by free ones for each run, so runs never
//! collide; a file that needs an upstream (a chain, a forwarder) starts with its upstream file,
//! run by the same program.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sockslab::peers::PeerDef;
use socksref::client::{Chain, Hop};
use socksref::proto::{Address, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::backend::{Launcher, Running};
use crate::peers::PeerId;

/// The section's data file, in the folder of the config files it names.
const PLAN_FILE: &str = "suites.yaml";

/// The real programs the section may run a file with, in the report's order; which of them run a
/// given file follows from their definitions' `config_files`.
pub const REAL: [PeerId; 3] = [PeerId::Gost, PeerId::V2ray4, PeerId::V2ray5];

/// docker/configs/suites.yaml: the files, their checks and what the checks share.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Plan {
    /// Every port the files listen on or dial besides the targets; each run maps them to free ones.
    ports: Vec<u16>,
    /// The target ports the files forward to, answered by the lab's echoes.
    targets: TargetPorts,
    /// RFC 1929 credentials by name, as the files configure them.
    credentials: BTreeMap<String, Credential>,
    /// The files and their checks, in the report's order.
    suites: Vec<Suite>,
}

/// The files' target ports: the TCP echo's and the UDP echo's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetPorts {
    tcp: u16,
    udp: u16,
}

/// A username and password.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Credential {
    user: String,
    pass: String,
}

impl Credential {
    /// `user:pass`, as curl's `-U` and the userinfo of a URL take it.
    fn joined(&self) -> String {
        format!("{}:{}", self.user, self.pass)
    }
}

/// A config file's dialect, which decides the programs that run it (peer.yaml `config_files`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Format {
    /// gost's YAML config (`gost -C`).
    Gost,
    /// V2Ray's v4 JSON config (4.34, and 5.x by default).
    V2rayJson,
    /// V2Ray 5's jsonv5 config.
    V2rayJsonv5,
}

impl Format {
    const ALL: [Format; 3] = [Format::Gost, Format::V2rayJson, Format::V2rayJsonv5];

    /// The key in peer.yaml's `config_files`.
    fn name(self) -> &'static str {
        match self {
            Format::Gost => "gost",
            Format::V2rayJson => "v2ray-json",
            Format::V2rayJsonv5 => "v2ray-jsonv5",
        }
    }
}

/// One example file and what is checked against it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Suite {
    /// The file, in the plan's folder.
    file: String,
    /// Its dialect.
    format: Format,
    /// Files started first (upstreams), by the same program; each is a suite of the same format.
    #[serde(default)]
    needs: Vec<String>,
    /// The TCP port (before mapping) that accepts once the file is up; absent for a file that
    /// opens no TCP listener (a UDP forwarder), which is given a fixed moment instead.
    ready: Option<u16>,
    /// The file sends UDP to the TCP target port too (dokodemo-door's one target serves both), so
    /// a UDP echo answers on the TCP echo's port for this file's runs.
    #[serde(default)]
    udp_on_tcp_target: bool,
    /// The checks, in the report's order; names are unique within the suite.
    checks: Vec<NamedCheck>,
}

/// A check and the name its row has (`configs.<file>.<name>`).
#[derive(Debug, Deserialize)]
struct NamedCheck {
    name: String,
    // Flattened, so a check is one mapping (`{name: …, kind: curl, port: …}`); unknown keys are
    // refused by the variants' `deny_unknown_fields` (serde does not allow it beside `flatten`).
    #[serde(flatten)]
    check: Check,
}

/// A client check. Ports are the file's (before mapping); `user` names a plan credential.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
enum Check {
    /// curl through the SOCKS port with `proto`, with `-U` when `user`.
    Curl {
        port: u16,
        proto: CurlProto,
        #[serde(default)]
        user: Option<String>,
    },
    /// socksref as a client: a `tcp://` forwarder through the SOCKS port, then an echo.
    SocksrefTcp {
        port: u16,
        #[serde(default)]
        user: Option<String>,
    },
    /// Raw SOCKS5 UDP ASSOCIATE (with RFC 1929 when `user`), one datagram to the UDP echo.
    UdpAssociate {
        port: u16,
        #[serde(default)]
        user: Option<String>,
    },
    /// A SOCKS5 datagram sent straight to the TCP port's UDP twin with no association (V2Ray's
    /// UDP authentication bypass): passes when it is relayed.
    UdpUnassociated { port: u16 },
    /// socksref's client does a SOCKS5 BIND (with RFC 1929 when `user`) naming the peer
    /// (127.0.0.1, or all-zero when `any_peer`: "whoever connects"), a loopback peer connects
    /// to BND, and bytes go both ways.
    Bind {
        port: u16,
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        any_peer: bool,
    },
    /// The same with gost's MBIND (`F2`): the peer's connection arrives as an smux stream.
    Mbind {
        port: u16,
        #[serde(default)]
        user: Option<String>,
    },
    /// A TCP echo through a local forwarder port.
    TcpForward { port: u16 },
    /// A UDP echo through a local forwarder port.
    UdpForward { port: u16 },
}

/// curl's SOCKS flag, spelled as on curl's command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
enum CurlProto {
    #[serde(rename = "--socks4")]
    Socks4,
    #[serde(rename = "--socks4a")]
    Socks4a,
    #[serde(rename = "--socks5-hostname")]
    Socks5Hostname,
}

impl CurlProto {
    fn flag(self) -> &'static str {
        match self {
            CurlProto::Socks4 => "--socks4",
            CurlProto::Socks4a => "--socks4a",
            CurlProto::Socks5Hostname => "--socks5-hostname",
        }
    }
}

impl Check {
    /// The file's port the check talks to.
    fn port(&self) -> u16 {
        match self {
            Check::Curl { port, .. }
            | Check::SocksrefTcp { port, .. }
            | Check::UdpAssociate { port, .. }
            | Check::UdpUnassociated { port }
            | Check::Bind { port, .. }
            | Check::Mbind { port, .. }
            | Check::TcpForward { port }
            | Check::UdpForward { port } => *port,
        }
    }

    /// The credential it names, if any.
    fn user(&self) -> Option<&str> {
        match self {
            Check::Curl { user, .. }
            | Check::SocksrefTcp { user, .. }
            | Check::UdpAssociate { user, .. }
            | Check::Bind { user, .. }
            | Check::Mbind { user, .. } => user.as_deref(),
            Check::UdpUnassociated { .. } | Check::TcpForward { .. } | Check::UdpForward { .. } => None,
        }
    }
}

impl Plan {
    /// Loads `dir`/suites.yaml and checks what a schema cannot: the files exist, `needs` name
    /// suites of the same format, check names are unique per suite, credentials and ports are
    /// the plan's own. Errors name the file (and, from the parser, the line and field).
    fn load(dir: &Path) -> Result<Plan> {
        let path = dir.join(PLAN_FILE);
        let plan: Plan = sockslab::scenario::yaml::from_file(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
        plan.validate(dir).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(plan)
    }

    fn validate(&self, dir: &Path) -> Result<(), String> {
        let targets = [self.targets.tcp, self.targets.udp];
        if let Some(p) = self.ports.iter().find(|p| targets.contains(p)) {
            return Err(format!("port {p} is both in `ports` and a target"));
        }
        let mut files = BTreeSet::new();
        for s in &self.suites {
            let here = |m: String| format!("suite `{}`: {m}", s.file);
            if !files.insert(s.file.as_str()) {
                return Err(here("is defined twice".into()));
            }
            if !dir.join(&s.file).is_file() {
                return Err(here(format!("no such file in {}", dir.display())));
            }
            for n in &s.needs {
                match self.suite(n) {
                    None => return Err(here(format!("`needs: {n}` names no suite"))),
                    Some(u) if u.format != s.format => {
                        return Err(here(format!("`needs: {n}` is another format (one program runs both)")))
                    }
                    Some(_) => {}
                }
            }
            if let Some(p) = s.ready.filter(|p| !self.ports.contains(p)) {
                return Err(here(format!("`ready: {p}` is not in `ports` (it would not be mapped)")));
            }
            let mut names = BTreeSet::new();
            for c in &s.checks {
                let here = |m: String| here(format!("check `{}`: {m}", c.name));
                if !names.insert(c.name.as_str()) {
                    return Err(here("is defined twice".into()));
                }
                if !self.ports.contains(&c.check.port()) {
                    return Err(here(format!("port {} is not in `ports` (it would not be mapped)", c.check.port())));
                }
                if let Some(u) = c.check.user().filter(|u| !self.credentials.contains_key(*u)) {
                    return Err(here(format!("`user: {u}` names no credential")));
                }
            }
        }
        Ok(())
    }

    fn suite(&self, file: &str) -> Option<&Suite> {
        self.suites.iter().find(|s| s.file == file)
    }

    /// The credential a check names (validated on load, so a miss is a bug worth a clear error).
    fn credential(&self, user: Option<&str>) -> Result<Option<&Credential>> {
        user.map(|u| self.credentials.get(u).with_context(|| format!("no credential `{u}`"))).transpose()
    }

    /// Each suite with the real programs that run it (every [`REAL`] peer whose definition has its
    /// format), after checking that socksref runs every format and that no definition names an
    /// unknown one (which would leave a program out without a word).
    fn runs<'a>(&'a self, defs: &BTreeMap<PeerId, PeerDef>) -> Result<Vec<(&'a Suite, Vec<PeerId>)>> {
        for (peer, def) in defs {
            if let Some(f) = def.config_files.keys().find(|k| !Format::ALL.iter().any(|f| f.name() == *k)) {
                anyhow::bail!("{peer}'s peer.yaml: `config_files.{f}` is no format of {PLAN_FILE}");
            }
        }
        let reference = defs.get(&PeerId::Reference).context("socksref's definition is needed")?;
        let mut runs = Vec::new();
        for s in &self.suites {
            argv(reference, s.format, &s.file)?;
            let peers: Vec<PeerId> = REAL
                .into_iter()
                .filter(|p| defs.get(p).is_some_and(|d| d.config_files.contains_key(s.format.name())))
                .collect();
            anyhow::ensure!(!peers.is_empty(), "{}: no real program runs format {}", s.file, s.format.name());
            runs.push((s, peers));
        }
        Ok(runs)
    }
}

/// The definitions of socksref and of the real programs.
fn definitions() -> Result<BTreeMap<PeerId, PeerDef>> {
    REAL.into_iter().chain([PeerId::Reference]).map(|p| Ok((p, p.definition()?))).collect()
}

/// The folder of the example files and their plan.
fn configs_dir() -> PathBuf {
    crate::peers::root().join("docker/configs")
}

/// How `def`'s program runs `file` of `format`: its `config_files` command line without the program
/// (the launcher supplies its own), `{file}` replaced; `{dir}` is left for the launcher.
fn argv(def: &PeerDef, format: Format, file: &str) -> Result<Vec<String>> {
    let line = def.config_files.get(format.name()).with_context(|| {
        format!("{}'s peer.yaml has no `config_files.{}`, so it cannot run {file}", def.name, format.name())
    })?;
    anyhow::ensure!(
        line.len() > 1 && line.iter().any(|a| a.contains("{file}")),
        "{}'s peer.yaml: `config_files.{}` must be a program and arguments naming `{{file}}`",
        def.name,
        format.name()
    );
    // The one placeholder syntax of peer definitions, strict: `{file}` is filled, `{dir}` kept for
    // the launcher, and any other name is a misspelling reported here rather than passed on.
    let value = |name: &str| match name {
        "file" => Some(file.to_string()),
        "dir" => Some("{dir}".to_string()),
        _ => None,
    };
    line[1..]
        .iter()
        .map(|a| sockslab::peers::fill(a, value, true))
        .collect::<Result<_, String>>()
        .map_err(|e| anyhow::anyhow!("{}'s peer.yaml: `config_files.{}`: {e}", def.name, format.name()))
}

/// The prefix of a configs row's id in a peer's expected results (`cells:` in
/// harness/peers/<peer>/expected.yaml, the one expected-results format): a listed row is a check
/// whose verdict differs between the real program and socksref on purpose, with the reason.
pub const ID_PREFIX: &str = "configs.";

/// The id of the row for `check` of `file`, as expected results name it.
pub fn row_id(file: &str, check: &str) -> String {
    format!("{ID_PREFIX}{file}.{check}")
}

/// One check's verdicts.
#[derive(Debug, Serialize)]
pub struct Row {
    file: String,
    peer: String,
    check: String,
    real: bool,
    socksref: bool,
    verdict: String,
}

/// The loopback targets every run points at: HTTP (for curl), TCP echo, UDP echo.
struct Targets {
    http: SocketAddr,
    echo: SocketAddr,
    udp: SocketAddr,
}

async fn targets() -> Result<Targets> {
    let http = TcpListener::bind("127.0.0.1:0").await?;
    let echo = TcpListener::bind("127.0.0.1:0").await?;
    let udp = UdpSocket::bind("127.0.0.1:0").await?;
    let t = Targets { http: http.local_addr()?, echo: echo.local_addr()?, udp: udp.local_addr()? };
    tokio::spawn(async move {
        while let Ok((mut s, _)) = http.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nconfigs").await;
            });
        }
    });
    testkit::echo::tcp(echo);
    testkit::echo::udp(udp, |_| {});
    Ok(t)
}

/// A TCP and UDP port both free a moment ago.
fn free_pair() -> Result<u16> {
    for _ in 0..50 {
        let t = std::net::TcpListener::bind("127.0.0.1:0")?;
        let p = t.local_addr()?.port();
        if std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return Ok(p);
        }
    }
    anyhow::bail!("no free TCP+UDP port pair")
}

/// The text of a file with its ports mapped.
fn mapped(text: &str, ports: &BTreeMap<u16, u16>) -> String {
    let mut out = text.to_string();
    for (from, to) in ports {
        out = out
            .replace(&format!(":{from}"), &format!(":{to}"))
            .replace(&format!("\"port\": {from}"), &format!("\"port\": {to}"));
    }
    out
}

/// Starts `suite`'s file with `def`'s command line for its format, its ports mapped; ready when
/// its `ready` port accepts, or after a fixed moment for a file without one.
async fn start(l: &Launcher, def: &PeerDef, suite: &Suite, dir: &Path, ports: &BTreeMap<u16, u16>) -> Result<Running> {
    let file = suite.file.as_str();
    let text = std::fs::read_to_string(dir.join(file)).with_context(|| file.to_string())?;
    let text = mapped(&text, ports);
    let ready = suite.ready.and_then(|p| ports.get(&p)).map(|p| SocketAddr::from(([127, 0, 0, 1], *p)));
    let r = l.start(&argv(def, suite.format, file)?, &[(file, text)], ready).await?;
    if ready.is_none() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(r)
}

/// What every check of a run shares: the plan, the targets and the client programs.
struct Env<'a> {
    plan: &'a Plan,
    dir: PathBuf,
    targets: Targets,
    curl: &'a Launcher,
    reference: &'a Launcher,
}

/// Runs the configs section; returns the rows and whether every verdict agreed or was expected.
pub async fn run(
    launchers: &BTreeMap<PeerId, Launcher>,
    unavailable: &BTreeMap<PeerId, String>,
    out: &Path,
) -> Result<bool> {
    let dir = configs_dir();
    let plan = Plan::load(&dir)?;
    let defs = definitions()?;
    let runs = plan.runs(&defs)?;
    let env = Env {
        plan: &plan,
        dir,
        targets: targets().await?,
        curl: launchers.get(&PeerId::Curl).context("curl is needed")?,
        reference: launchers.get(&PeerId::Reference).context("socksref is needed")?,
    };
    let mut rows = Vec::new();
    for (suite, peers) in runs {
        for peer in peers {
            let expected = peer.expectations()?;
            let Some(real) = launchers.get(&peer) else {
                eprintln!(
                    "configs: {} on {peer}: unavailable ({})",
                    suite.file,
                    unavailable.get(&peer).map_or("", |s| s)
                );
                continue;
            };
            let a = run_suite(&env, suite, real, peer, &defs[&peer]).await?;
            let b = run_suite(&env, suite, env.reference, PeerId::Reference, &defs[&PeerId::Reference]).await?;
            for ((c, a), b) in suite.checks.iter().zip(a).zip(b) {
                let listed = expected.cell(&row_id(&suite.file, &c.name));
                let verdict = match (a == b, listed) {
                    (true, None) => "same".to_string(),
                    (false, Some(e)) => format!("expected difference: {}", e.reason),
                    (true, Some(_)) => "listed difference did not show (stale list)".to_string(),
                    (false, None) => "DIFFERENT".to_string(),
                };
                rows.push(Row {
                    file: suite.file.clone(),
                    peer: peer.to_string(),
                    check: c.name.clone(),
                    real: a,
                    socksref: b,
                    verdict,
                });
            }
        }
    }
    print_table(&rows);
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("configs.json"), serde_json::to_string_pretty(&rows)?)?;
    eprintln!("configs: {} rows, report {}", rows.len(), out.join("configs.json").display());
    Ok(rows.iter().all(|r| r.verdict == "same" || r.verdict.starts_with("expected difference")))
}

/// One program's run of a suite: its upstreams and its file started on fresh ports, every check
/// made, everything stopped; the checks' outcomes in order (all fail when a file did not start).
async fn run_suite(
    env: &Env<'_>,
    suite: &Suite,
    launcher: &Launcher,
    peer: PeerId,
    def: &PeerDef,
) -> Result<Vec<bool>> {
    let t = &env.targets;
    let mut ports: BTreeMap<u16, u16> = BTreeMap::new();
    for &p in &env.plan.ports {
        ports.insert(p, free_pair()?);
    }
    // The targets: the TCP echo (HTTP for curl goes by URL) and the UDP echo.
    ports.insert(env.plan.targets.tcp, t.echo.port());
    ports.insert(env.plan.targets.udp, t.udp.port());
    let twin = if suite.udp_on_tcp_target { Some(udp_twin(t.echo.port()).await?) } else { None };
    let mut running = Vec::new();
    for s in suite.needs.iter().filter_map(|n| env.plan.suite(n)).chain([suite]) {
        match start(launcher, def, s, &env.dir, &ports).await {
            Ok(r) => running.push(r),
            Err(e) => eprintln!("configs: {} on {peer}: {e:#}", s.file),
        }
    }
    // Remote listens (rtcp/rudp) are set up once the forwarder has reached its server.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut results = Vec::new();
    for c in &suite.checks {
        let ok = if running.len() == suite.needs.len() + 1 {
            run_check(&c.check, env, &ports).await.unwrap_or(false)
        } else {
            false
        };
        eprintln!("configs: {} {} on {peer}: {}", suite.file, c.name, if ok { "pass" } else { "fail" });
        results.push(ok);
    }
    for r in running {
        r.stop().await;
    }
    if let Some(h) = twin {
        h.abort();
        let _ = h.await;
    }
    Ok(results)
}

fn print_table(rows: &[Row]) {
    println!("{:<32} {:<8} {:<20} {:<6} {:<8} verdict", "file", "peer", "check", "real", "socksref");
    for r in rows {
        println!(
            "{:<32} {:<8} {:<20} {:<6} {:<8} {}",
            r.file,
            r.peer,
            r.check,
            if r.real { "pass" } else { "fail" },
            if r.socksref { "pass" } else { "fail" },
            r.verdict
        );
    }
}
/// A UDP socket on `port` (the TCP echo's port) that answers like the UDP echo, for dokodemo's
/// one target port serving both.
async fn udp_twin(port: u16) -> Result<tokio::task::JoinHandle<()>> {
    let s = UdpSocket::bind(("127.0.0.1", port)).await.context("UDP twin of the TCP echo port")?;
    Ok(testkit::echo::udp(s, |_| {}))
}

const LIMIT: Duration = Duration::from_secs(5);
/// Between tries of a forwarder check whose remote listen may not be open yet.
const RETRY: Duration = Duration::from_millis(300);

/// Makes one check against the running file(s); `ports` maps the file's ports to this run's.
async fn run_check(check: &Check, env: &Env<'_>, ports: &BTreeMap<u16, u16>) -> Result<bool> {
    let t = &env.targets;
    let port = |p: u16| ports.get(&p).copied().unwrap_or(p);
    let user = env.plan.credential(check.user())?;
    match *check {
        Check::Curl { port: p, proto, .. } => {
            let tmp = tempfile::tempdir()?;
            let mut args =
                vec!["-s".to_string(), "-m".into(), "5".into(), proto.flag().into(), format!("127.0.0.1:{}", port(p))];
            if let Some(u) = user {
                args.extend(["-U".into(), u.joined()]);
            }
            args.push(format!("http://{}/", t.http));
            let exit = env.curl.run_once(tmp.path(), &args, Duration::from_secs(10)).await?;
            Ok(exit.code == 0 && exit.output.contains("configs"))
        }
        Check::SocksrefTcp { port: p, .. } => {
            let local = free_pair()?;
            let auth = user.map(|u| format!("{}@", u.joined())).unwrap_or_default();
            let args = vec![
                "-L".to_string(),
                format!("tcp://127.0.0.1:{local}/{}", t.echo),
                "-F".into(),
                format!("socks5://{auth}127.0.0.1:{}?notls=true", port(p)),
            ];
            let r = env.reference.start(&args, &[], Some(SocketAddr::from(([127, 0, 0, 1], local)))).await?;
            let ok = tcp_echo(local).await.unwrap_or(false);
            r.stop().await;
            Ok(ok)
        }
        Check::Bind { port: p, any_peer, .. } => {
            let chain = one_hop(port(p), user);
            let peer = if any_peer { Address::UNSPECIFIED } else { SocketAddr::from(([127, 0, 0, 1], 0)).into() };
            let work = async {
                let pending = chain.bind(&peer).await?;
                let bound = pending.bound.socket_addr().context("BND is not an IP address")?;
                let mut peer = TcpStream::connect(bound).await?;
                let (mut s, _) = pending.accept().await?;
                anyhow::Ok(both_ways(&mut s, &mut peer).await?)
            };
            Ok(tokio::time::timeout(LIMIT, work).await.is_ok_and(|r| r.unwrap_or(false)))
        }
        Check::Mbind { port: p, .. } => {
            let chain = one_hop(port(p), user);
            let work = async {
                let mux = chain.mbind(&Address::from(SocketAddr::from(([127, 0, 0, 1], 0)))).await?;
                let bound = mux.bound.socket_addr().context("BND is not an IP address")?;
                let mut peer = TcpStream::connect(bound).await?;
                let (mut s, _) = mux.accept().await?;
                anyhow::Ok(both_ways(&mut s, &mut peer).await?)
            };
            Ok(tokio::time::timeout(LIMIT, work).await.is_ok_and(|r| r.unwrap_or(false)))
        }
        // A remote listen (rtcp/rudp) opens only once the forwarder has reached its server, which
        // takes longer on a busy machine: a refused connect or an unanswered datagram is tried
        // again until LIMIT; a wrong echo is an answer.
        Check::TcpForward { port: p } => {
            let until = tokio::time::Instant::now() + LIMIT;
            loop {
                match tcp_echo(port(p)).await {
                    Err(_) if tokio::time::Instant::now() < until => tokio::time::sleep(RETRY).await,
                    r => return r,
                }
            }
        }
        Check::UdpForward { port: p } => {
            let s = UdpSocket::bind("127.0.0.1:0").await?;
            let mut buf = [0u8; 2048];
            let until = tokio::time::Instant::now() + LIMIT;
            while tokio::time::Instant::now() < until {
                let _ = s.send_to(b"configs-udp", ("127.0.0.1", port(p))).await;
                if let Ok(Ok((n, _))) = tokio::time::timeout(RETRY, s.recv_from(&mut buf)).await {
                    return Ok(&buf[..n] == b"configs-udp");
                }
            }
            Ok(false)
        }
        Check::UdpAssociate { port: p, .. } => udp_associate(port(p), user, t.udp).await,
        Check::UdpUnassociated { port: p } => {
            let s = UdpSocket::bind("127.0.0.1:0").await?;
            s.send_to(&datagram(t.udp, b"bypass"), ("127.0.0.1", port(p))).await?;
            let mut buf = [0u8; 2048];
            match tokio::time::timeout(Duration::from_secs(2), s.recv_from(&mut buf)).await {
                Ok(Ok((n, _))) => Ok(buf[..n].ends_with(b"bypass")),
                _ => Ok(false),
            }
        }
    }
}

/// A one-hop SOCKS5 chain of socksref's client to 127.0.0.1:`port`, offering no TLS methods.
fn one_hop(port: u16, user: Option<&Credential>) -> Chain {
    let mut hop = Hop::new(Version::V5, Address::from(SocketAddr::from(([127, 0, 0, 1], port))));
    if let Some(u) = user {
        hop = hop.with_credentials(u.user.as_str(), u.pass.as_str());
    }
    Chain::new(vec![hop])
}

/// Bytes from `a` reach `b` and the other way round.
async fn both_ways<A, B>(a: &mut A, b: &mut B) -> std::io::Result<bool>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (there, back) = (b"configs-there", b"configs-back");
    a.write_all(there).await?;
    let mut got = [0u8; 13];
    b.read_exact(&mut got).await?;
    b.write_all(back).await?;
    let mut got_back = [0u8; 12];
    a.read_exact(&mut got_back).await?;
    Ok(&got == there && &got_back == back)
}

async fn tcp_echo(port: u16) -> Result<bool> {
    let mut s = tokio::time::timeout(LIMIT, TcpStream::connect(("127.0.0.1", port))).await??;
    s.write_all(b"configs-tcp").await?;
    let mut buf = [0u8; 11];
    Ok(matches!(tokio::time::timeout(LIMIT, s.read_exact(&mut buf)).await, Ok(Ok(_))) && &buf == b"configs-tcp")
}

/// A SOCKS5 UDP datagram to `to` carrying `data`, encoded by the reference's one codec.
fn datagram(to: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    // Encoding into a Vec cannot fail: an IP address always fits the header.
    let _ = socksref::proto::udp::UdpHeader::new(Address::from(to)).encode(&mut d);
    d.extend(data);
    d
}

/// UDP ASSOCIATE through the server with socksref's client: one datagram to the echo target
/// must come back.
async fn udp_associate(port: u16, user: Option<&Credential>, echo: SocketAddr) -> Result<bool> {
    let work = async {
        let assoc = one_hop(port, user).udp_associate().await?;
        assoc.send_to(b"configs-assoc", &Address::from(echo)).await?;
        let mut buf = [0u8; 2048];
        let (n, _) = assoc.recv_from(&mut buf).await?;
        anyhow::Ok(buf[..n].ends_with(b"configs-assoc"))
    };
    Ok(tokio::time::timeout(LIMIT, work).await.unwrap_or(Ok(false)).unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan::load(&configs_dir()).unwrap()
    }

    /// The real suites.yaml loads (its files exist, `needs` name suites, check names are unique,
    /// credentials and ports resolve), every file has a real program and socksref runs it, and
    /// the rows are the section's 61.
    #[test]
    fn the_real_plan_loads_and_every_file_has_its_programs() {
        let plan = plan();
        let defs = definitions().unwrap();
        let runs = plan.runs(&defs).unwrap();
        let peers_of = |file: &str| runs.iter().find(|(s, _)| s.file == file).unwrap().1.clone();
        assert_eq!(peers_of("gost-chain.yaml"), [PeerId::Gost]);
        assert_eq!(peers_of("v2ray4-socks-server.json"), [PeerId::V2ray4, PeerId::V2ray5]);
        assert_eq!(peers_of("v2ray5-socks-server.json"), [PeerId::V2ray5]);
        let rows: usize = runs.iter().map(|(s, peers)| s.checks.len() * peers.len()).sum();
        assert_eq!((runs.len(), rows), (14, 61));
    }

    /// Each program's command line for a file, as the definitions give it: `{dir}` is left for
    /// the launcher, and a program is never asked to run a format it does not declare.
    #[test]
    fn command_lines_come_from_the_peer_definitions() {
        let defs = definitions().unwrap();
        let cases: [(PeerId, Format, &str, &[&str]); 7] = [
            (PeerId::Gost, Format::Gost, "g.yaml", &["-C", "{dir}/g.yaml"]),
            (PeerId::V2ray4, Format::V2rayJson, "v.json", &["-config", "{dir}/v.json"]),
            (PeerId::V2ray5, Format::V2rayJson, "v.json", &["run", "-c", "{dir}/v.json"]),
            (PeerId::V2ray5, Format::V2rayJsonv5, "v.json", &["run", "-c", "{dir}/v.json", "-format", "jsonv5"]),
            (PeerId::Reference, Format::Gost, "g.yaml", &["-C", "{dir}/g.yaml"]),
            (PeerId::Reference, Format::V2rayJson, "v.json", &["--v2ray", "{dir}/v.json"]),
            (PeerId::Reference, Format::V2rayJsonv5, "v.json", &["--v2ray", "{dir}/v.json"]),
        ];
        for (peer, format, file, want) in cases {
            assert_eq!(argv(&defs[&peer], format, file).unwrap(), want, "{peer} {format:?}");
        }
        let e = argv(&defs[&PeerId::Gost], Format::V2rayJson, "v.json").unwrap_err().to_string();
        assert!(e.contains("no `config_files.v2ray-json`"), "{e}");
    }

    /// A plan that breaks a rule is refused, naming the file and what is wrong (and the line,
    /// when the parser found it).
    #[test]
    fn broken_plans_are_refused_with_the_file_and_the_fault() {
        let good = "ports: [1080, 2080]\ntargets: {tcp: 9000, udp: 9053}\ncredentials:\n  up: {user: u, pass: p}\n\
                    suites:\n  - file: a.yaml\n    format: gost\n    ready: 1080\n    checks:\n\
                    \x20     - {name: c, kind: curl, port: 1080, proto: --socks4, user: up}\n";
        let cases = [
            ("proto: --socks4,", "prot: --socks4,", "suites.yaml:10:"),
            ("proto: --socks4,", "proto: --socks4, any_peer: true,", "unknown field `any_peer`"),
            ("kind: curl", "kind: ftp", "unknown variant `ftp`"),
            ("proto: --socks4", "proto: --socks6", "unknown variant `--socks6`"),
            ("format: gost", "format: gost\n    colour: red", "unknown field `colour`"),
            ("user: up", "user: admin", "check `c`: `user: admin` names no credential"),
            ("port: 1080, proto", "port: 3080, proto", "check `c`: port 3080 is not in `ports`"),
            ("ready: 1080", "ready: 9000", "`ready: 9000` is not in `ports`"),
            ("ports: [1080, 2080]", "ports: [1080, 9053]", "port 9053 is both in `ports` and a target"),
            ("file: a.yaml", "file: missing.yaml", "suite `missing.yaml`: no such file"),
            ("format: gost", "format: gost\n    needs: [b.json]", "`needs: b.json` names no suite"),
            // (Braces balanced in every case: `cargo xtask tidy` counts them to find this module.)
            (
                "    checks:\n",
                "    checks:\n      - {name: c, kind: tcp-forward, port: 2080}\n",
                "check `c`: is defined twice",
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "services: []\n").unwrap();
        std::fs::write(dir.path().join(PLAN_FILE), good).unwrap();
        Plan::load(dir.path()).expect("the unbroken plan loads");
        for (from, to, want) in cases {
            assert!(good.contains(from), "{from}");
            std::fs::write(dir.path().join(PLAN_FILE), good.replacen(from, to, 1)).unwrap();
            let e = format!("{:#}", Plan::load(dir.path()).unwrap_err());
            assert!(e.contains(PLAN_FILE) && e.contains(want), "{to}: {e}");
        }
    }

    /// A configs entry in a peer's expected results must name a check of a file that peer runs,
    /// or it would never be compared (and never show as stale).
    #[test]
    fn every_listed_configs_difference_names_a_check_its_peer_runs() {
        let plan = plan();
        let runs = plan.runs(&definitions().unwrap()).unwrap();
        let mut entries = 0;
        for peer in PeerId::ALL {
            for e in peer.expectations().unwrap().cells.iter().filter(|e| e.id.starts_with(ID_PREFIX)) {
                let known = runs.iter().any(|(s, peers)| {
                    peers.contains(&peer) && s.checks.iter().any(|c| row_id(&s.file, &c.name) == e.id)
                });
                assert!(known, "{peer}: `{}` is no check of a file {peer} runs", e.id);
                assert!(!e.reason.trim().is_empty(), "{peer}: `{}` has no reason", e.id);
                entries += 1;
            }
        }
        assert_eq!(entries, 4, "the bind-any-peer difference and V2Ray's UDP bypass on three rows");
    }
}
