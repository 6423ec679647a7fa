//! The interop lab's peers: what each one claims, how its binary is obtained on the host, and how
//! its container image is built locally from that binary (no registry is ever contacted).
//!
//! Every peer runs either as a plain process (the binary on the host) or as a container made from
//! the same binary, so the two backends test the same code.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// Label on every container and image the lab creates, so leftovers can be removed by label.
pub const LABEL: &str = "sockslab.interop";

/// A peer of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerId {
    /// Debian's curl 7.88 (client only).
    Curl,
    /// gost 3.2.6's start-up over go-gost/x v0.8.1, the libraries gost 3.2.6 links (our own main
    /// in docker/gost: the proxy does not serve go-gost/gost itself, see docker/gost/README.md).
    Gost,
    /// V2Ray 5.52.0 built with Go.
    V2ray5,
    /// Debian's V2Ray 4.34.0.
    V2ray4,
    /// socksref, this workspace's reference implementation.
    Reference,
}

impl PeerId {
    /// Every peer, in the matrix's order.
    pub const ALL: [PeerId; 5] = [PeerId::Curl, PeerId::Gost, PeerId::V2ray5, PeerId::V2ray4, PeerId::Reference];

    /// The name in cell ids, on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            PeerId::Curl => "curl",
            PeerId::Gost => "gost",
            PeerId::V2ray5 => "v2ray5",
            PeerId::V2ray4 => "v2ray4",
            PeerId::Reference => "reference",
        }
    }

    /// The folder under `docker/` holding its Dockerfile.
    pub fn docker_dir(self) -> &'static str {
        match self {
            PeerId::Curl => "curl",
            PeerId::Gost => "gost",
            PeerId::V2ray5 | PeerId::V2ray4 => "v2ray",
            PeerId::Reference => "reference",
        }
    }

    /// The harness peer (`harness/peers/<name>/`) this lab peer is: its definition (how it
    /// starts, what it claims in the matrix) and its expected results, which hold both the
    /// catalogue's expected failures and the lab's matrix cells.
    pub fn harness_peer(self) -> &'static str {
        match self {
            PeerId::Curl => "curl",
            PeerId::Gost => "gost",
            PeerId::V2ray5 => "v2ray5",
            PeerId::V2ray4 => "v2ray",
            PeerId::Reference => "socksref",
        }
    }

    /// The peer's definition (harness/peers/<name>/peer.yaml): the one place its server
    /// configurations, their claims and credentials, and its matrix entry are written.
    pub fn definition(self) -> Result<sockslab::peers::PeerDef> {
        sockslab::peers::PeerDef::load(&root().join("harness/peers").join(self.harness_peer()))
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// The peer's expected results (scenarios and lab cells), loaded by the harness's one loader.
    pub fn expectations(self) -> Result<sockslab::verdict::Expectations> {
        self.definition()?.expectations().map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Where the program lives inside its image (the definition's `matrix.image_program`).
    pub fn program_in_image(self) -> &'static str {
        &self.lab().image_program
    }

    /// What the peer claims, per role (the definition's `matrix.client` and `matrix.server`).
    /// Cells a peer does not claim are not applicable.
    pub fn caps(self) -> &'static Caps {
        &self.lab().caps
    }

    /// How the lab starts it as a client (the definition's `matrix.client`); none for a server
    /// only.
    pub fn client(self) -> Option<&'static sockslab::peers::ClientDef> {
        self.lab().client.as_ref()
    }

    /// Pinned version, for reports (the definition's `matrix.version`).
    pub fn version(self) -> &'static str {
        &self.lab().version
    }

    fn lab(self) -> &'static LabPeer {
        match LAB_PEERS.get_or_init(load_lab_peers) {
            // `load_lab_peers` returns a map with every peer or an error, so the index is there.
            Ok(all) => &all[&self],
            // Every entry point (interop, bench, their tests) calls `load()` first and stops at
            // its error; reaching this means one forgot to.
            Err(e) => panic!("peer definitions were not checked before use: {e}"),
        }
    }
}

/// A peer as the lab sees it, from the `matrix:` of its definition.
#[derive(Debug)]
struct LabPeer {
    version: String,
    image_program: String,
    caps: Caps,
    client: Option<sockslab::peers::ClientDef>,
}

static LAB_PEERS: std::sync::OnceLock<Result<std::collections::BTreeMap<PeerId, LabPeer>, String>> =
    std::sync::OnceLock::new();

/// Reads every peer's `matrix:` (harness/peers/<peer>/peer.yaml) once, and says what is wrong
/// with any of them. The lab and the bench call it before they plan anything, so a definition
/// with a missing `matrix:` or an unknown feature name stops the run with its file and the name.
pub fn load() -> Result<()> {
    LAB_PEERS.get_or_init(load_lab_peers).as_ref().map(|_| ()).map_err(|e| anyhow::anyhow!("{e}"))
}

fn load_lab_peers() -> Result<std::collections::BTreeMap<PeerId, LabPeer>, String> {
    let mut out = std::collections::BTreeMap::new();
    for peer in PeerId::ALL {
        let def = peer.definition().map_err(|e| e.to_string())?;
        let file = def.dir.join("peer.yaml");
        let m =
            def.matrix.ok_or_else(|| format!("{}: no `matrix:` (the lab's peer {peer} needs one)", file.display()))?;
        let client_names: Vec<String> = m.client.iter().flat_map(|c| c.features.keys().cloned()).collect();
        let caps = Caps {
            client: features(&client_names).map_err(|e| format!("{}: matrix.client: {e}", file.display()))?,
            server: features(&m.server).map_err(|e| format!("{}: matrix.server: {e}", file.display()))?,
        };
        out.insert(peer, LabPeer { version: m.version, image_program: m.image_program, caps, client: m.client });
    }
    Ok(out)
}

/// The matrix features named in a definition (its `matrix.client` or `matrix.server`).
fn features(names: &[String]) -> Result<BTreeSet<Feature>, String> {
    let mut out = BTreeSet::new();
    for n in names {
        let f = Feature::ALL.into_iter().find(|f| f.name() == n).ok_or_else(|| {
            let known: Vec<&str> = Feature::ALL.iter().map(|f| f.name()).collect();
            format!("unknown feature `{n}` (known: {})", known.join(", "))
        })?;
        if !out.insert(f) {
            return Err(format!("`{n}` is listed twice"));
        }
    }
    Ok(out)
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A feature column of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Feature {
    /// SOCKS4 CONNECT to an IPv4 target.
    Socks4,
    /// SOCKS4a CONNECT to a host name.
    Socks4a,
    /// SOCKS4 CONNECT to a server that requires a USERID (gost's `socks4://admin@…`).
    Socks4Userid,
    /// SOCKS5 CONNECT without authentication.
    Socks5Connect,
    /// SOCKS5 CONNECT with RFC 1929 username/password.
    Userpass,
    /// BIND (remote port forwarding).
    Bind,
    /// SOCKS5 UDP ASSOCIATE.
    UdpAssociate,
    /// gost's MBIND (0xF2, BIND multiplexed over smux).
    Mbind,
    /// gost's UDP-over-TCP (0xF3), relay mode (`udp://` forwarder).
    UdpTun,
    /// gost's UDP-over-TCP (0xF3), bind mode (`rudp://` forwarder: the server listens on UDP).
    RudpTun,
    /// gost's TLS method 0x80 (TLS, no authentication).
    TlsMethods,
    /// gost's TLS method 0x82 (TLS, then RFC 1929 inside it).
    TlsAuth,
    /// A client that half-closes (FIN) after its payload still receives the whole reply, which the
    /// target sends only after that FIN.
    HalfClose,
}

impl Feature {
    /// Every feature, in column order.
    pub const ALL: [Feature; 13] = [
        Feature::Socks4,
        Feature::Socks4a,
        Feature::Socks4Userid,
        Feature::Socks5Connect,
        Feature::Userpass,
        Feature::Bind,
        Feature::UdpAssociate,
        Feature::Mbind,
        Feature::UdpTun,
        Feature::RudpTun,
        Feature::TlsMethods,
        Feature::TlsAuth,
        Feature::HalfClose,
    ];

    /// The name in cell ids.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Socks4 => "socks4",
            Feature::Socks4a => "socks4a",
            Feature::Socks4Userid => "socks4-userid",
            Feature::Socks5Connect => "socks5-connect",
            Feature::Userpass => "userpass",
            Feature::Bind => "bind",
            Feature::UdpAssociate => "udp-associate",
            Feature::Mbind => "mbind",
            Feature::UdpTun => "udp-tun",
            Feature::RudpTun => "rudp-tun",
            Feature::TlsMethods => "tls-methods",
            Feature::TlsAuth => "tls-auth",
            Feature::HalfClose => "half-close",
        }
    }
}

/// What a peer claims as a client and as a server.
#[derive(Debug, Clone)]
pub struct Caps {
    /// Features it can use as a client.
    pub client: BTreeSet<Feature>,
    /// Features it serves as a server.
    pub server: BTreeSet<Feature>,
}

/// How peers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// Containers through testcontainers, host networking.
    Docker,
    /// The same binaries as plain processes.
    Process,
}

/// A peer ready to run, or why it cannot.
#[derive(Debug, Clone)]
pub enum Prepared {
    /// Runnable: the program on the host and, with the docker backend, its image.
    Ready {
        /// The program on the host (process backend).
        program: PathBuf,
        /// `name:tag` of its local image (docker backend).
        image: Option<String>,
    },
    /// Cannot be obtained on this machine; every cell involving it is reported with this reason.
    Unavailable(String),
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    // xtask's manifest dir always has a parent (the workspace root).
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(".."))
}

/// `<target dir>/interop`, where binaries, the rootfs and reports go: `$CARGO_TARGET_DIR/interop`
/// when set (CI keeps it outside the clone, so a second run is warm), else `target/interop`.
pub fn work_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() { d } else { root().join(d) }.join("interop")
        }
        _ => root().join("target/interop"),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn run(cmd: &mut Command) -> Result<()> {
    let what = format!("{cmd:?}");
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn apt_install(pkg: &str) -> Result<()> {
    if !is_root() {
        bail!("`{pkg}` is missing and installing it needs root: sudo apt-get install -y {pkg}");
    }
    eprintln!("interop: apt-get install -y {pkg}");
    let install = || {
        run(Command::new("apt-get").env("DEBIAN_FRONTEND", "noninteractive").args([
            "install",
            "-y",
            "--no-install-recommends",
            pkg,
        ]))
    };
    // A fresh machine may have no package lists yet: update once and retry.
    install().or_else(|_| {
        run(Command::new("apt-get").arg("update"))?;
        install()
    })
}

/// Ensures a usable Docker daemon: uses a running one, else (as root) installs `docker.io` and
/// starts `dockerd` without a bridge or iptables (containers use host networking). Returns why
/// Docker cannot be used otherwise.
/// Makes `cmd`'s program start with only stdin, stdout and stderr of the descriptors this process
/// inherited. A daemon outliving the run must not keep what our parent gave us: under
/// `flock /tmp/interop.lock cargo xtask interop` that is the lock itself, and a dockerd holding it
/// blocks every later lab run on the machine for as long as the daemon lives.
fn keep_no_inherited_fds(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: runs in the child between fork and exec; it only makes async-signal-safe syscalls
    // and touches no memory of the parent. Close-on-exec rather than close: std's own pipe that
    // reports a failed exec must stay open until the exec.
    unsafe {
        cmd.pre_exec(|| {
            const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
            if libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, libc::c_uint::MAX, CLOSE_RANGE_CLOEXEC) != 0 {
                // Kernels before 5.11: mark them one by one (EBADF for the unused numbers is fine).
                for fd in 3..4096 {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            Ok(())
        });
    }
}

pub fn ensure_docker() -> Result<()> {
    let info = || {
        Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if info() {
        return Ok(());
    }
    if !is_root() {
        bail!("no Docker daemon answers `docker info`, and starting one needs root (run as root, or use --backend process)");
    }
    if Command::new("sh").args(["-c", "command -v dockerd >/dev/null"]).status().map(|s| !s.success()).unwrap_or(true) {
        apt_install("docker.io")?;
    }
    let dir = work_dir();
    std::fs::create_dir_all(&dir)?;
    let log = std::fs::File::create(dir.join("dockerd.log"))?;
    eprintln!("interop: starting dockerd (log: target/interop/dockerd.log)");
    // Detached on purpose: the daemon outlives this run so the next one is warm. No bridge and
    // no iptables because every container uses host networking and the machine may forbid both.
    let mut daemon = Command::new("setsid");
    keep_no_inherited_fds(&mut daemon);
    let child = daemon
        .args(["dockerd", "--bridge=none", "--iptables=false", "--ip6tables=false"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start dockerd")?;
    std::fs::write(dir.join("dockerd.pid"), child.id().to_string())?;
    for _ in 0..60 {
        if info() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    bail!("dockerd did not answer within 30 s; see target/interop/dockerd.log")
}

/// Removes containers left by earlier runs (they carry [`LABEL`]).
pub fn remove_leftovers() -> Result<()> {
    let out = Command::new("docker").args(["ps", "-aq", "--filter", &format!("label={LABEL}=1")]).output()?;
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_string).collect();
    if !ids.is_empty() {
        eprintln!("interop: removing {} leftover container(s)", ids.len());
        run(Command::new("docker").args(["rm", "-f"]).args(&ids))?;
    }
    Ok(())
}

fn sha_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect()
}

fn image_exists(tag: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", tag])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The Debian mirror from the host's apt sources (debootstrap uses the same one).
fn debian_mirror() -> String {
    let mut texts = Vec::new();
    for p in ["/etc/apt/sources.list"]
        .iter()
        .map(PathBuf::from)
        .chain(std::fs::read_dir("/etc/apt/sources.list.d").into_iter().flatten().flatten().map(|e| e.path()))
    {
        texts.push(std::fs::read_to_string(p).unwrap_or_default());
    }
    for line in texts.iter().flat_map(|t| t.lines()) {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http") && w.ends_with("/debian")) {
            return url.to_string();
        }
    }
    "http://deb.debian.org/debian".to_string()
}

/// Packages the base image gets from debootstrap. curl comes from here rather than from the host
/// because its shared libraries would otherwise have to be collected by hand.
const BASE_INCLUDE: &str = "curl,ca-certificates";

/// Builds (once per set of inputs) `sockslab-base:bookworm-<hash>` with debootstrap + docker
/// import, for the dynamically linked Debian peers.
pub fn base_image() -> Result<String> {
    let mirror = debian_mirror();
    let key = format!("suite=bookworm variant=minbase mirror={mirror} include={BASE_INCLUDE}");
    let tag = format!("sockslab-base:bookworm-{}", sha_hex(&[key.as_bytes()]));
    if image_exists(&tag) {
        return Ok(tag);
    }
    if !is_root() {
        bail!("building {tag} with debootstrap needs root");
    }
    if Command::new("sh").args(["-c", "command -v debootstrap >/dev/null"]).status().map(|s| !s.success())? {
        apt_install("debootstrap")?;
    }
    let dir = work_dir().join("rootfs-bookworm");
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("interop: debootstrap bookworm from {mirror} (a few minutes, once)");
    run(Command::new("debootstrap").args([
        "--variant=minbase",
        &format!("--include={BASE_INCLUDE}"),
        "bookworm",
        &dir.to_string_lossy(),
        &mirror,
    ]))?;
    run(Command::new("sh").arg("-c").arg(format!(
        "tar -C '{}' --exclude=./var/cache/apt/archives -c . | docker import --change 'LABEL {LABEL}.image=1' - '{tag}'",
        dir.display()
    )))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(tag)
}

/// Builds `docker/<dir>/<dockerfile>` with `files` copied into the context; the tag hashes the
/// Dockerfile, the files and the build args, so an image is rebuilt only when an input changes.
fn build_image(peer: PeerId, dockerfile: &str, files: &[(&str, &Path)], args: &[(&str, &str)]) -> Result<String> {
    let df_path = root().join("docker").join(peer.docker_dir()).join(dockerfile);
    let df = std::fs::read(&df_path).with_context(|| format!("reading {}", df_path.display()))?;
    let mut parts: Vec<Vec<u8>> = vec![df.clone()];
    for (name, p) in files {
        parts.push(name.as_bytes().to_vec());
        parts.push(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?);
    }
    for (k, v) in args {
        parts.push(format!("{k}={v}").into_bytes());
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let tag = format!("sockslab-{}:{}", peer.name(), sha_hex(&refs));
    if image_exists(&tag) {
        return Ok(tag);
    }
    let ctx = tempfile::tempdir()?;
    std::fs::write(ctx.path().join("Dockerfile"), &df)?;
    for (name, p) in files {
        std::fs::copy(p, ctx.path().join(name))?;
    }
    eprintln!("interop: docker build {tag}");
    let mut cmd = Command::new("docker");
    // The legacy builder: BuildKit is not installed with Debian's docker.io.
    cmd.env("DOCKER_BUILDKIT", "0").args(["build", "-q", "--label", &format!("{LABEL}.image=1"), "-t", &tag]);
    for (k, v) in args {
        cmd.args(["--build-arg", &format!("{k}={v}")]);
    }
    run(cmd.arg(ctx.path()))?;
    Ok(tag)
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(prog)).find(|p| p.is_file())
}

/// Builds a static Go binary from a module of our own, with the host's toolchain and the Go
/// module proxy: `files` (go.mod, and go.sum and sources when there are any) are written into
/// `target/interop/<dir>` (outside the clone, so the build never writes into the worktree),
/// then `go build -trimpath` of `package` goes to `bin`.
///
/// Not `go install …@version`: that also asks the proxy for the module's version list (to look
/// for a deprecation notice), which this machine's proxy refuses with 403. A module that
/// requires exact versions fetches only those.
fn build_go(what: &str, dir: &str, files: &[(String, Vec<u8>)], package: &str, bin: &Path) -> Result<()> {
    let go = which("go").with_context(|| format!("the Go toolchain is missing (needed to build {what})"))?;
    let dir = work_dir().join(dir);
    // A fresh directory: a source file removed from the inputs must not linger in the build.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    for (name, body) in files {
        std::fs::write(dir.join(name), body)?;
    }
    // With a committed go.sum the build must match it exactly (readonly); without one
    // (the V2Ray wrapper) Go records the sums it fetched.
    let mod_flag = if files.iter().any(|(n, _)| n == "go.sum") { "-mod=readonly" } else { "-mod=mod" };
    eprintln!("interop: building {what} with Go (minutes on a cold module cache, once)");
    // Written under a temporary name and renamed, so an interrupted build leaves no binary
    // that a later run would take for a finished one.
    let tmp = bin.with_extension("partial");
    run(Command::new(go)
        .current_dir(&dir)
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", mod_flag)
        .args(["build", "-trimpath", "-ldflags", "-s -w -buildid=", "-o"])
        .arg(&tmp)
        .arg(package))?;
    std::fs::rename(&tmp, bin)?;
    Ok(())
}

/// Builds V2Ray 5.52.0 statically into `target/interop/bin/v2ray5`, in a throwaway module that
/// requires exactly v5.52.0.
fn build_v2ray5(bin: &Path) -> Result<()> {
    let go_mod = "module sockslab.local/v2raybuild\n\ngo 1.24\n\nrequire github.com/v2fly/v2ray-core/v5 v5.52.0\n";
    build_go(
        "V2Ray 5.52.0",
        "go-v2ray5",
        &[("go.mod".into(), go_mod.as_bytes().to_vec())],
        "github.com/v2fly/v2ray-core/v5/main",
        bin,
    )
}

/// The inputs of the gost peer: `docker/gost/go.mod`, `go.sum` and every `.go` file, by name.
fn gost_inputs() -> Result<Vec<(String, Vec<u8>)>> {
    let src = root().join("docker/gost");
    let mut files = Vec::new();
    for e in std::fs::read_dir(&src).with_context(|| format!("reading {}", src.display()))? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "go.mod" || name == "go.sum" || name.ends_with(".go") {
            files.push((name, std::fs::read(e.path())?));
        }
    }
    files.sort();
    if !files.iter().any(|(n, _)| n == "go.mod") {
        bail!("{} has no go.mod", src.display());
    }
    Ok(files)
}

/// Builds the gost peer (docker/gost: gost 3.2.6's start-up over go-gost/x v0.8.1) into
/// `target/interop/bin/gost-<hash of its inputs>`, so it is rebuilt only when an input changes.
fn build_gost(bin_dir: &Path) -> Result<PathBuf> {
    let files = gost_inputs()?;
    let parts: Vec<&[u8]> = files.iter().flat_map(|(n, b)| [n.as_bytes(), b.as_slice()]).collect();
    let bin = bin_dir.join(format!("gost-{}", sha_hex(&parts)));
    if !bin.exists() {
        build_go("gost 3.2.6 (go-gost/x v0.8.1)", "go-gost", &files, ".", &bin)?;
    }
    Ok(bin)
}

/// Builds socksref as a static binary (for `FROM scratch`) in its own target dir, so the normal
/// build is not invalidated by the different RUSTFLAGS.
fn build_reference(bin: &Path) -> Result<()> {
    let target_dir = work_dir().join("static");
    run(Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root())
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args(["build", "--release", "-q", "-p", "socksref", "--target", "x86_64-unknown-linux-gnu"]))?;
    std::fs::copy(target_dir.join("x86_64-unknown-linux-gnu/release/socksref"), bin)?;
    Ok(())
}

/// Obtains a peer's binary on the host and, for the docker backend, its image.
pub fn prepare(peer: PeerId, backend: Backend) -> Result<Prepared> {
    let bin_dir = work_dir().join("bin");
    std::fs::create_dir_all(&bin_dir)?;
    let program = match peer {
        PeerId::Gost => build_gost(&bin_dir).context("building the gost peer (docker/gost)")?,
        PeerId::Curl => {
            if which("curl").is_none() {
                apt_install("curl")?;
            }
            which("curl").context("curl")?
        }
        PeerId::V2ray4 => {
            if !Path::new("/usr/bin/v2ray").exists() {
                apt_install("v2ray")?;
            }
            PathBuf::from("/usr/bin/v2ray")
        }
        PeerId::V2ray5 => {
            let bin = bin_dir.join("v2ray5");
            if !bin.exists() {
                if let Err(e) = build_v2ray5(&bin) {
                    return Ok(Prepared::Unavailable(format!("unavailable: building V2Ray 5.52.0 failed: {e:#}")));
                }
            }
            bin
        }
        PeerId::Reference => {
            let bin = bin_dir.join("socksref");
            build_reference(&bin)?;
            bin
        }
    };
    let image = match backend {
        Backend::Process => None,
        Backend::Docker => Some(match peer {
            PeerId::Curl => {
                let base = base_image()?;
                build_image(peer, "Dockerfile", &[], &[("BASE", &base)])?
            }
            PeerId::V2ray4 => {
                let base = base_image()?;
                build_image(peer, "Dockerfile.v4", &[("v2ray", &program)], &[("BASE", &base)])?
            }
            PeerId::V2ray5 => build_image(peer, "Dockerfile.v5", &[("v2ray", &program)], &[])?,
            PeerId::Reference => build_image(peer, "Dockerfile", &[("socksref", &program)], &[])?,
            PeerId::Gost => build_image(peer, "Dockerfile", &[("gost", &program)], &[])?,
        }),
    };
    Ok(Prepared::Ready { program, image })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every lab peer's expected results are a harness peer's: they load, and their scenario
    /// entries name real catalogue scenarios (a stale entry would hide an xpass or fail every run).
    #[test]
    fn lab_expectations_are_the_harness_peers_and_name_real_scenarios() {
        let ids: BTreeSet<String> = sockslab::scenario::load_catalogue(&root().join("scenarios"))
            .expect("the catalogue loads")
            .into_iter()
            .map(|s| s.id)
            .collect();
        let mut with_cells = Vec::new();
        for peer in PeerId::ALL {
            let exp = peer.expectations().unwrap_or_else(|e| panic!("{peer}: {e:#}"));
            for f in &exp.expected_failures {
                assert!(ids.contains(&f.id), "{peer}: `{}` is not a catalogue scenario", f.id);
            }
            if !exp.cells.is_empty() {
                with_cells.push(peer);
            }
        }
        assert_eq!(with_cells, [PeerId::Gost, PeerId::V2ray5, PeerId::V2ray4]);
        assert!(PeerId::Curl.expectations().unwrap().cells.is_empty());
    }

    /// Every lab peer's matrix entry comes from its definition and says what the matrix relies
    /// on: curl is a client only, every other peer serves, and only the reference and gost claim
    /// the gost extensions in both roles.
    #[test]
    fn every_lab_peer_has_a_matrix_entry_in_its_definition() {
        load().unwrap_or_else(|e| panic!("{e:#}"));
        assert!(PeerId::Curl.caps().server.is_empty());
        assert!(PeerId::Curl.caps().client.contains(&Feature::Socks4Userid));
        for peer in [PeerId::Gost, PeerId::V2ray5, PeerId::V2ray4, PeerId::Reference] {
            assert!(peer.caps().server.contains(&Feature::Socks5Connect), "{peer}");
            assert!(!peer.version().is_empty() && peer.program_in_image().starts_with('/'), "{peer}");
        }
        for peer in [PeerId::Gost, PeerId::Reference] {
            assert!(peer.caps().client.contains(&Feature::Mbind) && peer.caps().server.contains(&Feature::Mbind));
        }
        assert!(!PeerId::V2ray4.caps().client.contains(&Feature::Socks4), "4.34's outbound speaks SOCKS5 only");
        assert_eq!(PeerId::V2ray5.version(), "5.52.0");
    }

    #[test]
    fn a_matrix_feature_list_with_an_unknown_or_repeated_name_is_an_error() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(features(&names(&["bind", "udp-tun"])).unwrap(), BTreeSet::from([Feature::Bind, Feature::UdpTun]));
        let e = features(&names(&["bind", "udp"])).unwrap_err();
        assert!(e.contains("unknown feature `udp`") && e.contains("udp-associate"), "{e}");
        assert!(features(&names(&["bind", "bind"])).unwrap_err().contains("listed twice"));
    }

    /// Whether a child sees descriptor `fd` open.
    fn child_sees(fd: i32, strip: bool) -> bool {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &format!("[ -e /proc/self/fd/{fd} ]")]);
        if strip {
            keep_no_inherited_fds(&mut cmd);
        }
        cmd.status().unwrap().success()
    }

    #[test]
    fn a_started_daemon_does_not_inherit_our_descriptors() {
        let f = tempfile::tempfile().unwrap();
        // dup() makes a descriptor without close-on-exec, like the lock fd flock(1) hands us.
        let fd = unsafe { libc::dup(std::os::fd::AsRawFd::as_raw_fd(&f)) };
        assert!(fd > 2);
        assert!(child_sees(fd, false), "the control: an inheritable descriptor reaches a plain child");
        assert!(!child_sees(fd, true));
        unsafe { libc::close(fd) };
    }
}
