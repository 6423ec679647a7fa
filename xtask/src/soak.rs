//! `cargo xtask soak`: holds thousands of tunnels through a `socksref` server and attacks it the
//! ways a long-running proxy meets, on loopback only, bounded in count and time.
//!
//! Three processes: `socksref` (the server under test, started with
//! `allow=127.0.0.0/8,::1/128`), this process (the clients), and a second copy of this binary
//! (`soak --targets-child`) holding the targets: an echo, a sink that never reads, and one that
//! resets. Server figures come from `/proc/PID/status` (VmRSS) and `/proc/PID/fd`.
//!
//! Phases: N concurrent tunnels that all relay data; slowloris alongside normal clients; resets on
//! either side; backpressure; descriptor exhaustion and recovery (a second server with a small
//! descriptor limit); SIGTERM with live tunnels. Exit status is non-zero on any loss or missed goal.

use std::io::{BufRead, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;

use crate::bench::servers::{build_socksref, raise_nofile_limit};
use crate::flags::SoakArgs;

/// Any single network operation taking longer than this is a loss, never a hang.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections opened at once while building up the tunnels: half the server's handshake cap,
/// because past the cap the server closes the oldest handshake (that is the slowloris defence,
/// and the soak's own clients must not trigger it).
const SETUP_PARALLEL: usize = MAX_HANDSHAKES / 2;
/// The server's handshake cap during the run; slowloris opens four times as many.
const MAX_HANDSHAKES: usize = 64;
/// Descriptors the driver keeps for itself besides 2 per tunnel (runtime, pipes, slack).
const FD_RESERVE: u64 = 200;

/// Entry point of `cargo xtask soak`.
pub fn run(args: &SoakArgs) -> Result<()> {
    let limit = raise_nofile_limit()?;
    if args.targets_child {
        return tokio::runtime::Runtime::new()?.block_on(targets_child());
    }
    let by_fds = (limit.saturating_sub(FD_RESERVE) / 2) as usize;
    // The server runs with the same hard limit: two descriptors per tunnel once its reserve and
    // its shared splice pipes are set aside (docs/hardening.md), which is its default maxConns.
    let by_server = socksref::policy::max_connections_for_fds(limit, 1);
    let n = args.tunnels.unwrap_or(if args.quick { 200 } else { 10_000 }).min(10_000).min(by_fds).min(by_server);
    println!(
        "soak: {n} tunnels (fd hard limit {limit}: at most {by_fds} at 2 fds per tunnel in the client, {by_server} in the server)"
    );
    let bin = build_socksref()?;
    let mut targets = Targets::spawn()?;
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = rt.block_on(soak(&bin, &targets, n, deadline));
    targets.stop();
    let report = report?;
    report.print();
    if !report.failures.is_empty() {
        bail!("soak failed: {}", report.failures.join("; "));
    }
    println!("soak: 0 lost, every goal met");
    Ok(())
}

/// The target process's three listening ports.
struct Targets {
    child: Child,
    echo: SocketAddrV4,
    sink: SocketAddrV4,
    reset: SocketAddrV4,
}

impl Targets {
    fn spawn() -> Result<Targets> {
        // The shared target directory's xtask binary can be replaced by another build while we
        // run; /proc/self/exe is still this very program, so run a private copy of it.
        let dir = tempfile::tempdir().context("scratch directory for the target process")?;
        let exe = dir.path().join("xtask-soak-targets");
        std::fs::copy("/proc/self/exe", &exe).context("copying /proc/self/exe")?;
        let mut child = Command::new(&exe)
            .args(["soak", "--targets-child"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("spawning the target process")?;
        // Once it runs, the copy is no longer needed on disk.
        drop(dir);
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("target stdout")?).read_line(&mut line)?;
        let ports: Vec<u16> = line.split_whitespace().filter_map(|p| p.parse().ok()).collect();
        let [echo, sink, reset] = ports[..] else { bail!("target process said {line:?}") };
        let at = |p| SocketAddrV4::new(Ipv4Addr::LOCALHOST, p);
        Ok(Targets { child, echo: at(echo), sink: at(sink), reset: at(reset) })
    }

    fn stop(&mut self) {
        // Closing its stdin ends the target process; wait so no zombie is left.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The target process: echo, sink and reset listeners; exits when stdin closes.
async fn targets_child() -> Result<()> {
    let echo = TcpListener::bind("127.0.0.1:0").await?;
    let sink = TcpListener::bind("127.0.0.1:0").await?;
    let reset = TcpListener::bind("127.0.0.1:0").await?;
    let port = |l: &TcpListener| l.local_addr().map(|a| a.port());
    println!("{} {} {}", port(&echo)?, port(&sink)?, port(&reset)?);
    std::io::stdout().flush()?;
    testkit::echo::tcp(echo);
    // The sink accepts and holds the connection without ever reading: backpressure must stop the
    // client's writes at the server, not grow the server's memory.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = sink.accept().await {
            held.push(s);
        }
    });
    tokio::spawn(async move {
        while let Ok((mut s, _)) = reset.accept().await {
            tokio::spawn(async move {
                let mut b = [0u8; 64];
                let _ = s.read(&mut b).await;
                set_linger_zero(&s);
            });
        }
    });
    // Block until the parent closes our stdin (or dies).
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    })
    .await?;
    Ok(())
}

/// SO_LINGER 0: the next close sends RST instead of FIN.
fn set_linger_zero(s: &TcpStream) {
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt reads `l` for its size; the fd is open for the stream's lifetime.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// A `socksref` child we started; killed by pid on drop if still running.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(bin: &Path, max_conns: usize, nofile: Option<u64>) -> Result<Server> {
        let port = testkit::free_port()?;
        let url = format!(
            "socks5://127.0.0.1:{port}?allow=127.0.0.0/8,::1/128&maxConns={max_conns}&maxHandshakes={MAX_HANDSHAKES}"
        );
        let mut cmd = Command::new(bin);
        cmd.arg("-L").arg(&url).args(["--log-level", "error"]).stdin(Stdio::null()).stdout(Stdio::null());
        if let Some(n) = nofile {
            // SAFETY: only setrlimit between fork and exec, which is async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit { rlim_cur: n, rlim_max: n };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().with_context(|| format!("spawning {}", bin.display()))?;
        let mut s = Server { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) };
        // The workspace's one readiness rule: a server that exits (a refused rlimit) says so at once.
        testkit::wait_accepting(&mut s.child, &[s.addr], OP_TIMEOUT).map_err(|e| anyhow::anyhow!("socksref {e}"))?;
        Ok(s)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map(|d| d.count()).unwrap_or(0)
    }

    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Polls until the server holds at most `baseline` descriptors; the time it took, or `None`
    /// after 5 s.
    async fn fds_back_to(&self, baseline: usize) -> Option<Duration> {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if self.fds() <= baseline {
                return Some(t0.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Opens a SOCKS5 CONNECT tunnel to `target` (greeting and request pipelined in one write).
async fn tunnel(proxy: SocketAddr, target: SocketAddrV4) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(proxy).await?;
    // Greeting (05 01 00), then VER CMD RSV and the destination in the reference codec's form.
    let mut req = vec![5, 1, 0, 5, 1, 0];
    // An IPv4 address always encodes (only an over-long name can fail), so the result is unused.
    let _ = socksref::proto::Address::from(SocketAddr::V4(target)).encode(&mut req);
    s.write_all(&req).await?;
    let mut reply = [0u8; 12];
    s.read_exact(&mut reply).await?;
    if reply[..2] != [5, 0] || reply[2..4] != [5, 0] {
        return Err(std::io::Error::other(format!("refused: {reply:02x?}")));
    }
    Ok(s)
}

/// Sends a message unique to `id` through an echo tunnel and checks it comes back intact.
async fn echo(s: &mut TcpStream, id: usize) -> std::io::Result<()> {
    let msg = format!("soak tunnel {id:>8} says hi");
    s.write_all(msg.as_bytes()).await?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).await?;
    if back != msg.as_bytes() {
        return Err(std::io::Error::other("echo corrupted"));
    }
    Ok(())
}

async fn open_and_echo(proxy: SocketAddr, target: SocketAddrV4, id: usize) -> Result<TcpStream, String> {
    match timeout(OP_TIMEOUT, async {
        let mut s = tunnel(proxy, target).await?;
        echo(&mut s, id).await?;
        Ok::<_, std::io::Error>(s)
    })
    .await
    {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Opens `n` echo tunnels, at most [`SETUP_PARALLEL`] at a time, and keeps them all open.
async fn open_many(proxy: SocketAddr, target: SocketAddrV4, n: usize) -> (Vec<TcpStream>, Vec<String>) {
    let sem = Arc::new(Semaphore::new(SETUP_PARALLEL));
    let mut tasks = Vec::with_capacity(n);
    for id in 0..n {
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            open_and_echo(proxy, target, id).await
        }));
    }
    let (mut ok, mut errs) = (Vec::new(), Vec::new());
    for t in tasks {
        match t.await {
            Ok(Ok(s)) => ok.push(s),
            Ok(Err(e)) => errs.push(e),
            Err(e) => errs.push(e.to_string()),
        }
    }
    (ok, errs)
}

/// The figures and what went wrong.
#[derive(Default)]
struct Report {
    lines: Vec<String>,
    failures: Vec<String>,
}

impl Report {
    fn figure(&mut self, line: String) {
        println!("  {line}");
        self.lines.push(line);
    }

    fn check(&mut self, ok: bool, what: String) {
        let line = format!("{} {what}", if ok { "ok  " } else { "FAIL" });
        println!("  {line}");
        self.lines.push(line);
        if !ok {
            self.failures.push(what);
        }
    }

    fn print(&self) {
        println!("soak summary:");
        for l in &self.lines {
            println!("  {l}");
        }
    }
}

fn sample(errs: &[String]) -> String {
    errs.iter().take(3).cloned().collect::<Vec<_>>().join(" | ")
}

async fn soak(bin: &Path, targets: &Targets, n: usize, deadline: Instant) -> Result<Report> {
    let mut r = Report::default();
    // socksref spends two descriptors per tunnel plus at most 256 for its splice pipes: give
    // it room for all N and the later phases' extra connections, if we may raise its hard limit
    // (root outside a container); else it runs with ours, which `n` was sized for.
    let max_conns = n + 8 * MAX_HANDSHAKES;
    let want = (2 * max_conns) as u64 + 2 * socksref::policy::SPLICE_PIPES + 1024;
    let mut server = match Server::start(bin, max_conns, Some(want)) {
        Ok(s) => s,
        Err(e) => {
            println!("soak: could not give the server {want} fds ({e:#}); it keeps the inherited limit");
            Server::start(bin, max_conns, None)?
        }
    };
    let proxy = server.addr;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (fd_base, rss_base) = (server.fds(), server.rss_kib());
    r.figure(format!("server pid {} baseline: {fd_base} fds, {rss_base} KiB RSS", server.pid()));

    tunnels(&mut r, &server, targets, n, fd_base, rss_base).await;
    slowloris(&mut r, proxy, targets, n).await;
    resets(&mut r, &server, targets, fd_base).await;
    backpressure(&mut r, &server, targets).await?;
    sigterm(&mut r, &mut server, targets).await;
    // Descriptor exhaustion and recovery, on a server with 256 descriptors and no connection
    // cap below them, so accept() and connect() really meet EMFILE.
    println!("phase: fd exhaustion (server limited to 256 fds) and recovery");
    if Instant::now() > deadline {
        r.check(false, "time budget spent before the fd exhaustion phase".into());
        return Ok(r);
    }
    exhaustion(&mut r, bin, targets).await?;
    Ok(r)
}

/// Phase 1: N concurrent tunnels, all relaying, and all relaying again while every one is open.
async fn tunnels(r: &mut Report, server: &Server, targets: &Targets, n: usize, fd_base: usize, rss_base: u64) {
    let proxy = server.addr;
    println!("phase: {n} concurrent tunnels");
    let t0 = Instant::now();
    let (mut held, errs) = open_many(proxy, targets.echo, n).await;
    r.figure(format!("tunnels held: {} of {n} (opened and echoed in {:.1}s)", held.len(), t0.elapsed().as_secs_f64()));
    r.check(errs.is_empty(), format!("{} tunnels lost while opening {}", errs.len(), sample(&errs)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = server.rss_kib();
    let per = (rss_idle.saturating_sub(rss_base) as f64 * 1024.0) / held.len().max(1) as f64;
    r.figure(format!("server with {} idle tunnels: {rss_idle} KiB RSS, {} fds", held.len(), server.fds()));
    r.check(per <= 8192.0, format!("RSS per idle tunnel {:.0} B (goal <= 8 KiB)", per));
    // Every held tunnel relays again while all are open at once.
    let sem = Arc::new(Semaphore::new(SETUP_PARALLEL));
    let lost = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (id, mut s) in held.drain(..).enumerate() {
        let (sem, lost) = (sem.clone(), lost.clone());
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await;
            if !matches!(timeout(OP_TIMEOUT, echo(&mut s, id)).await, Ok(Ok(()))) {
                lost.fetch_add(1, Ordering::Relaxed);
            }
            s
        }));
    }
    for t in tasks {
        held.extend(t.await.ok());
    }
    r.check(
        lost.load(Ordering::Relaxed) == 0,
        format!("{} tunnels lost on the second echo round", lost.load(Ordering::Relaxed)),
    );
    drop(held);
    let back = server.fds_back_to(fd_base).await;
    r.check(
        back.is_some_and(|d| d <= Duration::from_secs(1)),
        format!("fds back to baseline {fd_base} after clients left: {back:?} (goal <= 1 s; now {})", server.fds()),
    );
}

/// Phase 2: slowloris (stalled handshakes) alongside normal clients, which must still get in.
async fn slowloris(r: &mut Report, proxy: SocketAddr, targets: &Targets, n: usize) {
    println!("phase: slowloris ({} stalled handshakes) with normal clients", 4 * MAX_HANDSHAKES);
    let stop = Arc::new(AtomicBool::new(false));
    let evicted = Arc::new(AtomicUsize::new(0));
    let mut loris = Vec::new();
    for _ in 0..4 * MAX_HANDSHAKES {
        let (stop, evicted) = (stop.clone(), evicted.clone());
        loris.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut s) = TcpStream::connect(proxy).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                // The first byte of a greeting, then nothing: the handshake never completes.
                let _ = s.write_all(&[5]).await;
                let mut b = [0u8; 16];
                if let Ok(Ok(_)) = timeout(Duration::from_millis(500), s.read(&mut b)).await {
                    evicted.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let normal = if n >= 1000 { 1000 } else { 200 };
    let sem = Arc::new(Semaphore::new(16));
    let mut tasks = Vec::new();
    for id in 0..normal {
        let sem = sem.clone();
        let target = targets.echo;
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire_owned().await;
            open_and_echo(proxy, target, id).await.map(drop)
        }));
    }
    let mut errs = Vec::new();
    for t in tasks {
        if let Ok(Err(e)) = t.await {
            errs.push(e);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for l in loris {
        let _ = l.await;
    }
    r.figure(format!(
        "slowloris connections closed by the server (handshake cap): {}",
        evicted.load(Ordering::Relaxed)
    ));
    r.check(
        errs.is_empty(),
        format!("normal clients refused during slowloris: {} of {normal} {}", errs.len(), sample(&errs)),
    );
}

/// Phase 3: resets from clients and from targets; the other side must see them, and no
/// descriptor may stay behind.
async fn resets(r: &mut Report, server: &Server, targets: &Targets, fd_base: usize) {
    let proxy = server.addr;
    println!("phase: resets from clients and from targets");
    let (mut rst_clients, errs) = open_many(proxy, targets.echo, 100).await;
    r.check(errs.is_empty(), format!("{} tunnels lost before the client resets", errs.len()));
    for s in &rst_clients {
        set_linger_zero(s);
    }
    rst_clients.clear();
    let mut hung = 0;
    for _ in 0..100 {
        let res = timeout(OP_TIMEOUT, async {
            let mut s = tunnel(proxy, targets.reset).await?;
            s.write_all(b"reset me").await?;
            let mut b = [0u8; 16];
            // The target resets: the client must see EOF or a reset, not wait forever.
            let _ = s.read(&mut b).await;
            Ok::<_, std::io::Error>(())
        })
        .await;
        if !matches!(res, Ok(Ok(()))) {
            hung += 1;
        }
    }
    r.check(hung == 0, format!("target resets not passed on to the client: {hung} of 100"));
    let back = server.fds_back_to(fd_base).await;
    r.check(back.is_some(), format!("fds back to baseline after resets: {back:?}"));
}

/// Phase 4: backpressure: tunnels into a target that never reads must not grow the server.
async fn backpressure(r: &mut Report, server: &Server, targets: &Targets) -> Result<()> {
    let proxy = server.addr;
    println!("phase: backpressure (8 tunnels into a target that never reads)");
    let rss_before = server.rss_kib();
    let mut pushed = Vec::new();
    let mut sinks = Vec::new();
    for _ in 0..8 {
        let mut s = timeout(OP_TIMEOUT, tunnel(proxy, targets.sink)).await.context("sink tunnel")??;
        let chunk = vec![0x5au8; 64 * 1024];
        let mut total = 0usize;
        // Write until the tunnel stops taking bytes for half a second (or 64 MiB went in).
        while total < 64 << 20 {
            match timeout(Duration::from_millis(500), s.write(&chunk)).await {
                Ok(Ok(k)) => total += k,
                _ => break,
            }
        }
        pushed.push(total);
        sinks.push(s);
    }
    let rss_after = server.rss_kib();
    let growth = rss_after.saturating_sub(rss_before);
    r.figure(format!("bytes accepted per stalled tunnel before the writer blocked: {pushed:?}"));
    r.check(
        growth <= 4096 && pushed.iter().all(|&p| p < 64 << 20),
        format!("server RSS under backpressure: {rss_before} -> {rss_after} KiB (+{growth}, goal flat: <= 4 MiB)"),
    );
    drop(sinks);
    Ok(())
}

/// Phase 5: SIGTERM with live tunnels (the last use of this server): a clean exit that closes
/// every tunnel.
async fn sigterm(r: &mut Report, server: &mut Server, targets: &Targets) {
    let proxy = server.addr;
    println!("phase: SIGTERM with live tunnels");
    let (mut live, errs) = open_many(proxy, targets.echo, 100).await;
    r.check(errs.is_empty(), format!("{} tunnels lost before SIGTERM", errs.len()));
    // SAFETY: kill() on the pid of a child we spawned and have not reaped.
    unsafe { libc::kill(server.pid() as libc::pid_t, libc::SIGTERM) };
    let t0 = Instant::now();
    let status = loop {
        if let Ok(Some(st)) = server.child.try_wait() {
            break Some(st);
        }
        if t0.elapsed() > OP_TIMEOUT {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let mut ended = 0;
    for s in &mut live {
        let mut b = [0u8; 8];
        if matches!(timeout(Duration::from_secs(2), s.read(&mut b)).await, Ok(Ok(0)) | Ok(Err(_))) {
            ended += 1;
        }
    }
    r.check(
        status.is_some_and(|s| s.success()),
        format!(
            "SIGTERM with {} live tunnels: exit {status:?} after {:.2}s; {ended} tunnels saw the close",
            live.len(),
            t0.elapsed().as_secs_f64()
        ),
    );
    r.check(ended == live.len(), format!("live tunnels closed at shutdown: {ended} of {}", live.len()));
    drop(live);
    let _ = server.alive();
}

/// Phase 6: descriptor exhaustion and recovery (see [`soak`]).
async fn exhaustion(r: &mut Report, bin: &Path, targets: &Targets) -> Result<()> {
    let mut small = Server::start(bin, 10_000, Some(256))?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let small_base = small.fds();
    let (flood, errs) = open_many(small.addr, targets.echo, 400).await;
    r.figure(format!(
        "with 400 clients against 256 fds: {} tunnels up, {} refused or dropped",
        flood.len(),
        errs.len()
    ));
    r.check(small.alive(), "server survived descriptor exhaustion".into());
    drop(flood);
    let back = small.fds_back_to(small_base).await;
    r.figure(format!("fds after recovery: {} (baseline {small_base}, back in {back:?})", small.fds()));
    r.check(
        back.is_some_and(|d| d <= Duration::from_secs(1)),
        format!("fds back to baseline within 1 s after exhaustion: {back:?}"),
    );
    let (after, errs) = open_many(small.addr, targets.echo, 50).await;
    r.check(errs.is_empty(), format!("tunnels after recovery: {} of 50 {}", after.len(), sample(&errs)));
    Ok(())
}
