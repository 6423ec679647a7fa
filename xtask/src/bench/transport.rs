//! Transport rows of `cargo xtask bench` (docs/transports.md): tls, wss and kcp throughput and
//! handshakes per second, socksref against gost.
//!
//! A transport needs a client that speaks it, so each subject is a pair of one implementation:
//! its server `-L socks5+T://…` and its own forwarder `-L tcp://…/target -F socks5+T://…` in
//! front. The load generator talks plain TCP to the forwarder. Throughput: one stream uploading
//! to a discard target for the window. Handshakes: 8 workers each opening a connection through
//! the forwarder (so a new TCP + TLS (+ WebSocket upgrade) + SOCKS handshake to the server),
//! exchanging one byte with an echo, and closing. `notls=true` on both so gost does not add its
//! method-level TLS inside the transport's (socksref does not by default over these transports).
//! Over kcp a "handshake" is a new smux stream of the forwarder's one KCP session (no new
//! session per connection, in gost as in socksref) plus the SOCKS handshake; both ends set the
//! same `kcp.key` and otherwise run gost's effective kcp defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The transports measured.
pub const TRANSPORTS: [&str; 3] = ["tls", "wss", "kcp"];
/// Concurrent workers of the handshake rows.
const HANDSHAKE_WORKERS: usize = 8;

/// One measured value or why there is none.
pub type Value = Result<f64, String>;

/// One transport row: socksref's and gost's figure.
#[derive(Debug)]
pub struct TransportRow {
    /// What was measured, e.g. `tls throughput (MB/s)`.
    pub title: String,
    /// socksref client + server.
    pub socksref: Value,
    /// gost client + server.
    pub gost: Value,
}

impl TransportRow {
    /// socksref ÷ gost (both rows are higher-is-better).
    pub fn ratio(&self) -> Option<f64> {
        match (&self.socksref, &self.gost) {
            (Ok(s), Ok(g)) if *g > 0.0 => Some(s / g),
            _ => None,
        }
    }
}

/// A child process stopped (killed by its pid, through the handle) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(bin: &Path, args: &[String], log: &Path) -> Result<Proc> {
    let out = std::fs::File::create(log)?;
    let child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(Proc(child))
}

impl Proc {
    /// Waits until every one of `addrs` accepts TCP, or says why not (the workspace's one
    /// readiness rule, [`testkit::wait_accepting_async`]: an exit is reported at once).
    async fn wait_listening(&mut self, addrs: &[SocketAddr]) -> Result<()> {
        testkit::wait_accepting_async(&mut self.0, addrs, Duration::from_secs(10)).await.map_err(anyhow::Error::new)
    }
}

/// The query both ends of `transport` carry.
fn keys(transport: &str) -> &'static str {
    if transport == "kcp" {
        "notls=true&kcp.key=sockslab-bench"
    } else {
        "notls=true"
    }
}

/// A discard target and a one-byte echo target; the tasks end with the runtime.
async fn targets() -> Result<(SocketAddr, SocketAddr)> {
    let sink = TcpListener::bind("127.0.0.1:0").await?;
    let echo = TcpListener::bind("127.0.0.1:0").await?;
    let addrs = (sink.local_addr()?, echo.local_addr()?);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = sink.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).await.is_ok() {
                    let _ = s.write_all(&b).await;
                }
            });
        }
    });
    Ok(addrs)
}

/// MB/s uploaded through `front` for `window`.
async fn throughput(front: SocketAddr, window: Duration) -> Result<f64> {
    let mut s = TcpStream::connect(front).await?;
    let buf = vec![0x5au8; 128 * 1024];
    // Let the tunnel come up before timing.
    s.write_all(&buf).await?;
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < window {
        s.write_all(&buf).await?;
        sent += buf.len() as u64;
    }
    Ok(sent as f64 / 1e6 / start.elapsed().as_secs_f64())
}

/// Completed connect + one-byte exchange + close per second through `front`.
async fn handshakes(front: SocketAddr, window: Duration) -> Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..HANDSHAKE_WORKERS {
        let done = done.clone();
        set.spawn(async move {
            while start.elapsed() < window {
                let mut s = TcpStream::connect(front).await?;
                s.write_all(b"x").await?;
                let mut b = [0u8; 1];
                tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut b))
                    .await
                    .context("no echo within 10 s")??;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r.context("worker")??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// Server + forwarder of one implementation over `transport`; returns (throughput, handshakes).
async fn measure_pair(bin: &Path, transport: &str, window: Duration, logs: &Path) -> Result<(f64, f64)> {
    let (sink, echo) = targets().await?;
    let port = testkit::free_port()?;
    let server_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let name = bin.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut server = spawn(
        bin,
        &["-L".into(), format!("socks5+{transport}://127.0.0.1:{port}?{}", keys(transport))],
        &logs.join(format!("{name}-{transport}-server.log")),
    )?;
    if transport == "kcp" {
        testkit::wait_udp_bound(server_addr, Duration::from_secs(10)).await?;
    } else {
        server.wait_listening(&[server_addr]).await?;
    }
    let (up, hs) = (testkit::free_port()?, testkit::free_port()?);
    let hop = format!("socks5+{transport}://127.0.0.1:{port}?{}", keys(transport));
    let mut client = spawn(
        bin,
        &[
            "-L".into(),
            format!("tcp://127.0.0.1:{up}/{sink}"),
            "-L".into(),
            format!("tcp://127.0.0.1:{hs}/{echo}"),
            "-F".into(),
            hop,
        ],
        &logs.join(format!("{name}-{transport}-client.log")),
    )?;
    let (up, hs) = (SocketAddr::from(([127, 0, 0, 1], up)), SocketAddr::from(([127, 0, 0, 1], hs)));
    client.wait_listening(&[up, hs]).await?;
    let t = throughput(up, window).await.context("throughput")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let h = handshakes(hs, window).await.context("handshakes")?;
    Ok((t, h))
}

/// The socksref binary for the rows: the interop lab's static build when present (no second
/// release build), else the benchmark's own.
pub fn socksref_binary(fallback: impl FnOnce() -> Result<PathBuf>) -> Result<PathBuf> {
    let lab = crate::peers::work_dir().join("bin").join("socksref");
    if lab.is_file() {
        return Ok(lab);
    }
    fallback()
}

/// Measures every transport row.
pub fn rows(
    runtime: &tokio::runtime::Runtime,
    socksref: &Path,
    gost: Option<&Path>,
    window: Duration,
    logs: &Path,
) -> Vec<TransportRow> {
    let _ = std::fs::create_dir_all(logs);
    let mut out = Vec::new();
    for t in TRANSPORTS {
        eprintln!("[bench] transport {t}: socksref pair");
        let s = runtime.block_on(measure_pair(socksref, t, window, logs)).map_err(|e| format!("{e:#}"));
        eprintln!("[bench] transport {t}: gost pair");
        let g = match gost {
            Some(g) => runtime.block_on(measure_pair(g, t, window, logs)).map_err(|e| format!("{e:#}")),
            None => Err("gost unavailable".into()),
        };
        let split = |v: &Result<(f64, f64), String>, i: usize| {
            v.as_ref().map(|p| if i == 0 { p.0 } else { p.1 }).map_err(Clone::clone)
        };
        out.push(TransportRow {
            title: format!("{t} throughput, 1 stream (MB/s)"),
            socksref: split(&s, 0),
            gost: split(&g, 0),
        });
        out.push(TransportRow {
            title: format!("{t} handshakes/s, {HANDSHAKE_WORKERS} at a time"),
            socksref: split(&s, 1),
            gost: split(&g, 1),
        });
    }
    out
}

/// The rows as a text table.
pub fn table(rows: &[TransportRow]) -> String {
    let mut o =
        String::from("\nTransports (each subject's own forwarder → its server over the transport; notls on both)\n");
    o.push_str(&format!("{:<34} {:>12} {:>12} {:>10}\n", "row", "socksref", "gost", "ratio"));
    let show = |v: &Value| match v {
        Ok(x) => super::report::format_value(*x),
        Err(_) => "—".into(),
    };
    for r in rows {
        let ratio = r.ratio().map(super::report::format_ratio).unwrap_or_else(|| "—".into());
        o.push_str(&format!("{:<34} {:>12} {:>12} {:>10}\n", r.title, show(&r.socksref), show(&r.gost), ratio));
        for (who, v) in [("socksref", &r.socksref), ("gost", &r.gost)] {
            if let Err(e) = v {
                o.push_str(&format!("  {who}: {e}\n"));
            }
        }
    }
    o
}
