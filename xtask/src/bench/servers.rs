//! Starting, watching and stopping the SOCKS servers under test, and reading their memory use.
//!
//! Every server runs as a child process on 127.0.0.1 with its output in `target/bench/logs/`. A
//! [`ServerProcess`] stops its server on drop, by pid: we never signal anything we did not start.

use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::flags::ServerName;
use crate::peers::{self, Backend, PeerId, Prepared};

/// How long a server may take to accept connections after it was spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a server may take to exit after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// What a server supports, so rows it cannot play show "n/a" instead of an error.
#[derive(Debug, Clone, Copy)]
pub struct Capabilities {
    /// SOCKS4 CONNECT.
    pub socks4: bool,
    /// SOCKS5 UDP ASSOCIATE.
    pub udp: bool,
}

impl ServerName {
    /// The harness peer (harness/peers/<peer>/peer.yaml) and the instance of it the bench runs:
    /// the one definition of how each server is started and configured.
    fn definition(self) -> (&'static str, &'static str) {
        match self {
            // The benchmark variants (default timeouts, quiet logs, V2Ray closing at once) are
            // `lab:` instances, which `sockslab check` does not start.
            ServerName::Socksref => ("socksref", "bench"),
            ServerName::Gost => ("gost", "bench"),
            ServerName::V2ray5 => ("v2ray5", "bench"),
            ServerName::Microsocks => ("microsocks", "open"),
            ServerName::Danted => ("danted", "open"),
        }
    }

    /// The peer definition's instance this server is started from.
    pub fn instance(self) -> Result<sockslab::peers::InstanceDef> {
        let (peer, instance) = self.definition();
        let def = sockslab::peers::PeerDef::load(&peers::root().join("harness/peers").join(peer))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        def.instance(instance).cloned().map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// What this server supports, from its instance's claims (microsocks is SOCKS5 CONNECT
    /// only) and further listeners (gost serves SOCKS4 from a second one).
    pub fn capabilities(self) -> Result<Capabilities> {
        use sockslab::scenario::{Command, Version};
        let inst = self.instance()?;
        let claims = inst.claims.as_ref().context("a process instance has claims")?;
        Ok(Capabilities {
            socks4: claims.versions.contains(&Version::Socks4)
                || inst.extra.iter().any(|x| x.features.iter().any(|f| f == "socks4")),
            udp: claims.commands.contains(&Command::Udp),
        })
    }

    /// Where the executable comes from.
    fn origin(self) -> Origin {
        match self {
            ServerName::Socksref => Origin::Workspace,
            ServerName::Microsocks => Origin::Debian { program: "microsocks", package: "microsocks" },
            ServerName::Danted => Origin::Debian { program: "danted", package: "dante-server" },
            ServerName::Gost => Origin::InteropLab(PeerId::Gost),
            ServerName::V2ray5 => Origin::InteropLab(PeerId::V2ray5),
        }
    }
}

/// How a server's executable is obtained.
#[derive(Debug, Clone, Copy)]
enum Origin {
    /// Built from this workspace ([`build_socksref`]).
    Workspace,
    /// A Debian package, installed with apt-get when missing and allowed.
    Debian {
        /// The executable's file name.
        program: &'static str,
        /// The package that ships it.
        package: &'static str,
    },
    /// Built by the interop lab (Go, from the module proxy), so both measure the same binary.
    InteropLab(PeerId),
}

/// The workspace's `target/` directory, honouring `CARGO_TARGET_DIR` like cargo does.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    // xtask/ sits directly in the workspace root, so its parent is the root.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).join("target")
}

/// Raises the soft RLIMIT_NOFILE to the hard limit so thousands of idle tunnels fit, in this
/// process and in the servers it spawns (children inherit the limit). Returns the new soft limit.
pub fn raise_nofile_limit() -> Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read or write the struct we pass by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
        }
    }
    Ok(lim.rlim_cur)
}

/// Finds `program` on PATH or in the sbin directories, where Debian puts danted but a
/// non-root PATH may not look.
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Finds, builds or installs server `name`'s executable. socksref is built with cargo; gost and
/// V2Ray come from the interop lab's Go builds (cached under `<target>/interop/bin`, built on
/// first use); the Debian peers are installed with apt-get when missing, we are root and
/// `allow_install`. `Ok(None)` means "not available, skip it".
pub fn obtain(name: ServerName, allow_install: bool) -> Result<Option<PathBuf>> {
    match name.origin() {
        Origin::Workspace => build_socksref().map(Some),
        Origin::Debian { program, package } => find_or_install_peer(program, package, allow_install),
        Origin::InteropLab(peer) => {
            eprintln!("[bench] {}: the interop lab's binary (built once with Go if missing)", name.as_str());
            match peers::prepare(peer, Backend::Process)? {
                Prepared::Ready { program, .. } => Ok(Some(program)),
                Prepared::Unavailable(reason) => bail!("{reason}"),
            }
        }
    }
}

/// Finds a Debian peer's executable, installing its package first when it is missing, we are
/// root and installing is allowed. `Ok(None)` means "not available, skip it".
fn find_or_install_peer(program: &str, package: &str, allow_install: bool) -> Result<Option<PathBuf>> {
    if let Some(found) = find_program(program) {
        return Ok(Some(found));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !allow_install || !root {
        eprintln!(
            "[bench] {program} not installed; skipping it (install Debian package `{package}`{})",
            if root { "" } else { " as root" }
        );
        return Ok(None);
    }
    eprintln!("[bench] installing {package} with apt-get");
    if !apt_get(&["install", "-y", package])? {
        // The usual cause is a stale or missing package list on a fresh machine.
        eprintln!("[bench] apt-get install failed; running apt-get update and retrying");
        apt_get(&["update"])?;
        if !apt_get(&["install", "-y", package])? {
            eprintln!("[bench] could not install {package}; skipping {program}");
            return Ok(None);
        }
    }
    Ok(find_program(program))
}

/// Runs apt-get non-interactively with its output on our stderr; returns whether it succeeded.
fn apt_get(args: &[&str]) -> Result<bool> {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .context("running apt-get")?;
    Ok(status.success())
}

/// Builds the `socksref` release binary with the workspace's cargo and returns its path.
pub fn build_socksref() -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("[bench] building socksref (cargo build --release -p socksref)");
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "-p", "socksref"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p socksref failed ({status})");
    }
    let bin = target_dir().join("release").join("socksref");
    if !bin.is_file() {
        bail!("{} missing after the build", bin.display());
    }
    Ok(bin)
}

/// A free loopback port ([`testkit::free_port`]: bind-and-release, a race this single-user
/// benchmark machine accepts).
fn free_port() -> Result<u16> {
    testkit::free_port().context("binding a probe port")
}

/// A running server we started; stops it (and only it and its forks) on drop.
pub struct ServerProcess {
    /// Which server this is.
    pub name: ServerName,
    /// Its SOCKS (SOCKS5, and SOCKS4 unless [`Self::socks4_addr`] differs) address on 127.0.0.1.
    pub addr: SocketAddr,
    /// Where SOCKS4 requests go: [`Self::addr`], except for gost, whose SOCKS4 handler is a
    /// service of its own on a second port of the same process.
    pub socks4_addr: SocketAddr,
    child: Child,
    log: PathBuf,
    /// A scratch directory (danted's or V2Ray's config) to remove after the server stopped.
    scratch: Option<PathBuf>,
}

impl ServerProcess {
    /// Starts `name` from executable `bin` on a free loopback port and waits until it accepts
    /// connections. Logs go to `logs_dir/<name>.log`. The arguments, config files, environment
    /// and further listeners are the peer definition's ([`ServerName::instance`]), run with `bin`.
    pub fn start(name: ServerName, bin: &Path, logs_dir: &Path) -> Result<ServerProcess> {
        fs::create_dir_all(logs_dir).with_context(|| format!("creating {}", logs_dir.display()))?;
        let inst = name.instance()?;
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut socks4_addr = addr;
        let mut extra_ports = Vec::new();
        for x in &inst.extra {
            let p = free_port()?;
            // A SOCKS4 service of its own (gost's): SOCKS4 rows go there.
            if x.features.iter().any(|f| f == "socks4") {
                socks4_addr = SocketAddr::from(([127, 0, 0, 1], p));
            }
            extra_ports.push(p);
        }
        // One scratch directory per server (config files, pid files): each removes its own when
        // it stops.
        let dir = std::env::temp_dir().join(format!("sockslab-bench-{}-{}", std::process::id(), name.as_str()));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let scratch = Some(dir.clone());
        let r = inst
            .render(port, Some(&extra_ports), &dir)
            .map_err(|e| anyhow::anyhow!("{} ({}): {e}", name.as_str(), inst.name))?;
        for (file, body) in &r.files {
            fs::write(dir.join(file), body).with_context(|| format!("writing {}", dir.join(file).display()))?;
        }
        let mut cmd = Command::new(bin);
        cmd.args(&r.args).envs(r.env);
        let log = logs_dir.join(format!("{}.log", name.as_str()));
        let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut server = ServerProcess { name, addr, socks4_addr, child, log, scratch };
        server.wait_ready()?;
        Ok(server)
    }

    /// The server's pid, the root of the process tree whose memory we measure.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Retries connecting until the server accepts on every listener, it exits, or
    /// [`READY_TIMEOUT`] passes.
    fn wait_ready(&mut self) -> Result<()> {
        let mut listeners = vec![self.addr];
        if self.socks4_addr != self.addr {
            listeners.push(self.socks4_addr);
        }
        testkit::wait_accepting(&mut self.child, &listeners, READY_TIMEOUT)
            .map_err(|e| anyhow::anyhow!("{} {e}; {}", self.name.as_str(), self.log_tail()))
    }

    /// The last lines of the server's log, for error messages.
    fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join("\n  ");
        format!("log {}:\n  {tail}", self.log.display())
    }

    /// Whether the server is still running, so a crash mid-benchmark is reported as such.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            Some(status) => bail!("{} exited ({status}); {}", self.name.as_str(), self.log_tail()),
            None => Ok(()),
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let pid = self.child.id();
        // Remember the forks (danted's children) with their start times first: once the parent
        // is gone they are re-parented, and a bare pid could by then name someone else's process.
        let forks: Vec<(u32, u64)> = descendants(pid).into_iter().filter(|&(p, _)| p != pid).collect();
        // SIGTERM first: danted then stops its own children cleanly.
        testkit::terminate(&mut self.child, STOP_GRACE);
        for (fork, start) in forks {
            if proc_stat(fork).is_some_and(|stat| stat.start_time == start) {
                signal(fork, libc::SIGKILL);
            }
        }
        if let Some(dir) = &self.scratch {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Sends `sig` to one process by pid.
fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return };
    // SAFETY: kill(2) has no memory-safety preconditions; a positive pid targets one process.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// The fields of `/proc/PID/stat` we need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcStat {
    ppid: u32,
    /// Start time in clock ticks since boot: with the pid, it names a process uniquely.
    start_time: u64,
}

/// Parses `/proc/PID/stat`. The command name (field 2) is in parentheses and may itself contain
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) ... starttime(22), so ppid is index 1 and starttime 19.
    Some(ProcStat { ppid: fields.get(1)?.parse().ok()?, start_time: fields.get(19)?.parse().ok()? })
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    parse_proc_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `pid` and all its descendants, each with its start time, found by walking every process's
/// parent in /proc.
fn descendants(pid: u32) -> Vec<(u32, u64)> {
    let mut children: HashMap<u32, Vec<(u32, u64)>> = HashMap::new();
    let mut root = None;
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Some(stat) = proc_stat(p) else { continue };
        if p == pid {
            root = Some((p, stat.start_time));
        }
        children.entry(stat.ppid).or_default().push((p, stat.start_time));
    }
    let Some(root) = root else { return Vec::new() };
    let mut found = vec![root];
    let mut next = 0;
    while next < found.len() {
        if let Some(kids) = children.get(&found[next].0) {
            found.extend(kids.iter().copied());
        }
        next += 1;
    }
    found
}

/// Extracts `VmRSS` in KiB from the text of `/proc/PID/status`.
fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let value = words.next()?.parse().ok()?;
    // The kernel always reports kB (KiB); anything else means the format changed under us.
    (words.next() == Some("kB")).then_some(value)
}

/// Resident memory in KiB of `pid` plus all its descendants. Summing the tree is what makes a
/// forking server (danted) comparable to a threaded one; shared pages are counted once per process.
pub fn tree_rss_kib(pid: u32) -> Result<u64> {
    let tree = descendants(pid);
    if tree.is_empty() {
        bail!("process {pid} not found in /proc");
    }
    // A process can exit between the walk and the read; it then holds no memory to count.
    Ok(tree
        .iter()
        .filter_map(|&(p, _)| fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|status| parse_vm_rss_kib(&status))
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bench's Dante is the harness peer's: its config file, on the bench's port, in the
    /// scratch directory, named by `-f` (so there is no second Dante configuration to drift).
    #[test]
    fn the_bench_runs_the_harness_peers_dante_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let argv = ServerName::Danted.instance().unwrap().materialize(41234, dir.path()).unwrap();
        let conf_path = dir.path().join("danted.conf");
        let f = argv.iter().position(|a| a == "-f").expect("danted is given its config with -f");
        assert_eq!(argv[f + 1], conf_path.to_string_lossy());
        let conf = std::fs::read_to_string(&conf_path).unwrap();
        assert!(conf.contains("internal: 127.0.0.1 port = 41234"), "{conf}");
        assert!(conf.contains("socksmethod: none") && conf.contains("udpassociate"), "{conf}");
        assert!(argv.windows(2).any(|w| w == ["-N", "1"]), "{argv:?}");
    }

    /// Level 0 of the V2Ray policy in the config file the instance renders, after checking the
    /// config is JSON with a UDP-enabled SOCKS inbound on the given port.
    fn v2ray_policy(inst: &sockslab::peers::InstanceDef, port: u16) -> serde_json::Value {
        let r = inst.render(port, Some(&[]), Path::new("/scratch")).unwrap();
        assert_eq!(r.args, ["run", "-c", "/scratch/config.json"]);
        let (name, body) = &r.files[0];
        assert_eq!(name, "config.json");
        let v: serde_json::Value = serde_json::from_str(body).expect("the V2Ray config is JSON");
        assert_eq!(v["inbounds"][0]["port"], port);
        assert_eq!(v["inbounds"][0]["protocol"], "socks");
        assert_eq!(v["inbounds"][0]["settings"]["udp"], true);
        assert_eq!(v["inbounds"][0]["settings"]["auth"], "noauth");
        v["policy"]["levels"]["0"].clone()
    }

    /// The bench's V2Ray closes a tunnel as soon as one side is done; the lab's (the harness
    /// peer's `open`) keeps V2Ray's default linger.
    #[test]
    fn the_bench_v2ray_closes_at_once_and_the_labs_keeps_the_linger() {
        let level = v2ray_policy(&ServerName::V2ray5.instance().unwrap(), 2080);
        assert_eq!(level["uplinkOnly"], 0);
        assert_eq!(level["downlinkOnly"], 0);
        assert_eq!(level["handshake"], 4);
        let def = sockslab::peers::PeerDef::load(&peers::root().join("harness/peers/v2ray5")).unwrap();
        let level = v2ray_policy(def.instance("open").unwrap(), 1080);
        assert_eq!(level["handshake"], 4);
        assert!(level.get("uplinkOnly").is_none() && level.get("downlinkOnly").is_none(), "{level}");
    }

    /// What each server supports comes from its definition: microsocks is SOCKS5 CONNECT only,
    /// gost serves SOCKS4 from a further listener, the others speak both and UDP.
    #[test]
    fn capabilities_come_from_the_peer_definitions() {
        for name in ServerName::ALL {
            let c = name.capabilities().unwrap();
            let want = !matches!(name, ServerName::Microsocks);
            assert_eq!((c.socks4, c.udp), (want, want), "{}", name.as_str());
        }
        let gost = ServerName::Gost.instance().unwrap();
        let r = gost.render(3000, Some(&[3001]), Path::new("/scratch")).unwrap();
        assert_eq!(r.args, ["-L", "socks5://127.0.0.1:3000?udp=true", "-L", "socks4://127.0.0.1:3001"]);
        assert_eq!(r.env, [("GOST_LOGGER_LEVEL".to_string(), "warn".to_string())]);
    }

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tdanted\nVmPeak:\t   9000 kB\nVmRSS:\t    4136 kB\nThreads:\t1\n";
        assert_eq!(parse_vm_rss_kib(status), Some(4136));
    }

    #[test]
    fn vm_rss_missing_for_kernel_threads() {
        assert_eq!(parse_vm_rss_kib("Name:\tkthreadd\nThreads:\t1\n"), None);
    }

    #[test]
    fn proc_stat_survives_parentheses_in_the_name() {
        let stat = "6815 (danted: (x) y) S 6812 6812 1 0 -1 4194624 95 0 0 0 0 0 0 0 20 0 1 0 123456 1 2 3";
        assert_eq!(parse_proc_stat(stat), Some(ProcStat { ppid: 6812, start_time: 123456 }));
    }

    #[test]
    fn server_names_on_the_command_line_match_the_report() {
        use clap::ValueEnum;
        for name in ServerName::ALL {
            assert_eq!(ServerName::from_str(name.as_str(), false), Ok(name));
        }
    }

    #[test]
    fn own_process_tree_has_memory() {
        let rss = tree_rss_kib(std::process::id()).expect("our own pid is in /proc");
        assert!(rss > 0);
    }
}
