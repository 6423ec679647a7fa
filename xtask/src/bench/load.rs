//! The load generators: one async function per kind of measurement.
//!
//! Every loop here is bounded twice, by a count and by a deadline, so a stalled or misbehaving
//! server can slow the benchmark down but never hang it.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout, timeout_at, Instant};

use super::servers::tree_rss_kib;
use super::socks::{self, Route};
use super::targets::{TargetInfo, CHUNK};

/// Time allowed for one connection plus SOCKS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Size of one UDP payload, as the issue asks (close to the usual QUIC/DNS-over-UDP maximum).
const UDP_PAYLOAD: usize = 1200;
/// Datagrams allowed in flight between the sender and the sink: small enough that they fit in
/// the default 208 KiB socket buffers of the relay and the sink, so nothing is dropped for lack of
/// room and the rate measures relaying, not loss.
const UDP_WINDOW: u64 = 64;
/// With a full window and no arrival for this long, the datagrams in flight are counted as lost.
const UDP_LOSS_TIMEOUT: Duration = Duration::from_millis(50);
/// Count bounds that no realistic run reaches; the deadlines end the loops.
const MAX_CHUNKS_PER_STREAM: u64 = 1 << 24;
const MAX_HANDSHAKES_PER_WORKER: u64 = 10_000_000;
const MAX_DATAGRAMS: u64 = 100_000_000;
/// Consecutive failed handshakes after which a worker gives up on the server.
const MAX_CONSECUTIVE_FAILURES: u32 = 50;
/// Parallel connects while building the idle tunnels.
const TUNNEL_BUILDERS: usize = 16;

/// One measured value and anything worth saying about how it was obtained.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The value, in the unit of its row.
    pub value: f64,
    /// Failures or losses seen along the way.
    pub note: Option<String>,
}

/// Direction of a throughput measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → target: the client writes, the target's sink counts.
    Upload,
    /// Target → client: the target's source writes, the client counts.
    Download,
}

/// The warm-up before a window opens: connections get past slow start and the servers fault in
/// their buffers before anything is counted.
fn warmup(window: Duration) -> Duration {
    (window / 10).clamp(Duration::from_millis(100), Duration::from_millis(500))
}

/// Bulk CONNECT throughput over `streams` parallel tunnels, in MB/s (10⁶ bytes per second),
/// counted by the receiving end over `window` after a warm-up.
pub async fn throughput(
    route: Route,
    targets: &TargetInfo,
    direction: Direction,
    streams: usize,
    window: Duration,
) -> Result<Sample> {
    let target = match direction {
        Direction::Upload => targets.sink,
        Direction::Download => targets.source,
    };
    let mut conns = Vec::with_capacity(streams);
    for _ in 0..streams {
        conns.push(connect(route, target).await?);
    }
    let received = Arc::new(AtomicU64::new(0));
    let warm = warmup(window);
    // The workers stop by themselves shortly after the window even if abort were not called.
    let hard_deadline = Instant::now() + warm + window + Duration::from_secs(1);
    let mut workers = JoinSet::new();
    for mut stream in conns {
        let received = received.clone();
        workers.spawn(async move {
            let work = async {
                let mut buf = vec![0u8; CHUNK];
                for _ in 0..MAX_CHUNKS_PER_STREAM {
                    match direction {
                        Direction::Upload => stream.write_all(&buf).await?,
                        Direction::Download => {
                            let n = stream.read(&mut buf).await?;
                            if n == 0 {
                                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "tunnel closed"));
                            }
                            received.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                }
                Ok(())
            };
            // Reaching the deadline is the normal end, not an error.
            timeout_at(hard_deadline, work).await.unwrap_or(Ok(()))
        });
    }
    let count = || match direction {
        Direction::Upload => targets.counters.sink_bytes.load(Ordering::Relaxed),
        Direction::Download => received.load(Ordering::Relaxed),
    };
    sleep(warm).await;
    let (c0, t0) = (count(), Instant::now());
    sleep(window).await;
    let (c1, t1) = (count(), Instant::now());
    // Workers that already finished did so early: a tunnel broke inside the window.
    let mut early_error = None;
    while let Some(result) = workers.try_join_next() {
        match result {
            Ok(Err(e)) => early_error = Some(format!("a stream failed during the window: {e}")),
            Err(e) if e.is_panic() => early_error = Some(format!("a stream worker panicked: {e}")),
            _ => {}
        }
    }
    workers.abort_all();
    while workers.join_next().await.is_some() {}
    if let Some(error) = early_error {
        bail!(error);
    }
    let mb_per_s = (c1 - c0) as f64 / (t1 - t0).as_secs_f64() / 1e6;
    Ok(Sample { value: mb_per_s, note: None })
}

/// Handshakes per second: `concurrency` workers each open a connection, complete the SOCKS
/// handshake and a CONNECT to a target that accepts, then close, over and over for `window`.
/// Direct loopback does the same with a bare TCP connect.
pub async fn handshakes(route: Route, target: SocketAddrV4, concurrency: usize, window: Duration) -> Result<Sample> {
    let start = Instant::now();
    let deadline = start + window;
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        workers.spawn(async move {
            let (mut ok, mut failed, mut consecutive, mut last_error) = (0u64, 0u64, 0u32, None);
            for _ in 0..MAX_HANDSHAKES_PER_WORKER {
                if Instant::now() >= deadline {
                    break;
                }
                match handshake_once(route, target).await {
                    Ok(()) => {
                        ok += 1;
                        consecutive = 0;
                    }
                    Err(e) => {
                        failed += 1;
                        consecutive += 1;
                        last_error = Some(format!("{e:#}"));
                        if consecutive >= MAX_CONSECUTIVE_FAILURES {
                            break;
                        }
                        // Do not spin on a refusing server; the pause is tiny next to a window.
                        sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            (ok, failed, last_error)
        });
    }
    let (mut ok, mut failed, mut last_error) = (0u64, 0u64, None);
    while let Some(result) = workers.join_next().await {
        let (o, f, e) = result.context("handshake worker panicked")?;
        ok += o;
        failed += f;
        last_error = last_error.or(e);
    }
    let elapsed = start.elapsed().as_secs_f64();
    if ok == 0 {
        bail!("no handshake completed: {}", last_error.unwrap_or_default());
    }
    let note = (failed > 0).then(|| format!("{failed} failed, last: {}", last_error.unwrap_or_default()));
    Ok(Sample { value: ok as f64 / elapsed, note })
}

/// UDP datagrams per second delivered to the target's sink: one socket sends 1200-byte payloads
/// (through the relay of a UDP ASSOCIATE, or straight to the sink for direct loopback) as fast as
/// possible while keeping at most [`UDP_WINDOW`] datagrams in flight. The rate is what the
/// sink received inside the window, so it measures how fast the relay forwards, not how much it
/// drops under overload.
pub async fn udp_pps(route: Route, targets: &TargetInfo, window: Duration) -> Result<Sample> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.context("binding the UDP client")?;
    let local = match socket.local_addr()? {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => bail!("bound 127.0.0.1 but got IPv6"),
    };
    let payload = [0u8; UDP_PAYLOAD];
    // The control connection must stay open for the whole run: closing it ends the association.
    let (_control, dest, packet) = match route {
        Route::Direct => (None, SocketAddr::V4(targets.udp_sink), payload.to_vec()),
        Route::Socks5(proxy) => {
            // Declaring our own address lets servers that lock the client port (socksref) and
            // servers that filter on it (danted) accept our datagrams.
            let (control, relay) = timeout(CONNECT_TIMEOUT, socks::udp_associate(proxy, local))
                .await
                .map_err(|_| anyhow!("UDP ASSOCIATE timed out"))??;
            let mut packet = socks::udp_header(targets.udp_sink);
            packet.extend_from_slice(&payload);
            (Some(control), relay, packet)
        }
        Route::Socks4(_) => bail!("SOCKS4 has no UDP"),
    };
    let counters = &targets.counters;
    let base = counters.udp_datagrams.load(Ordering::Relaxed);
    let delivered = || counters.udp_datagrams.load(Ordering::Relaxed) - base;
    let start = Instant::now();
    let (open, close) = (start + warmup(window), start + warmup(window) + window);
    let (mut sent, mut lost) = (0u64, 0u64);
    let mut opened: Option<(u64, Instant)> = None;
    for _ in 0..MAX_DATAGRAMS {
        let now = Instant::now();
        if now >= close {
            break;
        }
        if opened.is_none() && now >= open {
            opened = Some((delivered(), now));
        }
        while sent.saturating_sub(lost + delivered()) >= UDP_WINDOW && Instant::now() < close {
            if timeout(UDP_LOSS_TIMEOUT, counters.udp_arrived.notified()).await.is_err() {
                lost = sent.saturating_sub(delivered());
            }
        }
        socket.send_to(&packet, dest).await.context("sending a datagram")?;
        sent += 1;
    }
    let (c1, t1) = (delivered(), Instant::now());
    let (c0, t0) = opened.context("the UDP window never opened")?;
    if c1 == c0 {
        bail!("no datagram reached the target ({sent} sent)");
    }
    let note = (lost > 0).then(|| format!("{lost} of {sent} datagrams lost"));
    Ok(Sample { value: (c1 - c0) as f64 / (t1 - t0).as_secs_f64(), note })
}

/// Resident memory per idle tunnel, in KiB: the server's process tree RSS before and after
/// opening `tunnels` SOCKS5 CONNECT tunnels to the sink that then carry nothing.
pub async fn idle_rss(proxy: SocketAddr, pid: u32, target: SocketAddrV4, tunnels: usize) -> Result<Sample> {
    let before = tree_rss_kib(pid)?;
    let per_builder = tunnels.div_ceil(TUNNEL_BUILDERS);
    let mut builders = JoinSet::new();
    for i in 0..TUNNEL_BUILDERS {
        let count = per_builder.min(tunnels.saturating_sub(i * per_builder));
        builders.spawn(async move {
            let mut held = Vec::with_capacity(count);
            for _ in 0..count {
                held.push(connect(Route::Socks5(proxy), target).await?);
            }
            anyhow::Ok(held)
        });
    }
    let mut held = Vec::with_capacity(tunnels);
    let build = async {
        while let Some(result) = builders.join_next().await {
            held.extend(result.context("tunnel builder panicked")??);
        }
        anyhow::Ok(())
    };
    timeout(Duration::from_secs(120), build)
        .await
        .map_err(|_| anyhow!("opening {tunnels} tunnels took over 120 s"))??;
    // Let the server finish whatever it does after replying (spawning relay tasks, forking).
    sleep(Duration::from_millis(500)).await;
    let after = tree_rss_kib(pid)?;
    drop(held);
    let per_tunnel = after.saturating_sub(before) as f64 / tunnels as f64;
    let note = Some(format!("RSS {} → {} KiB", before, after));
    Ok(Sample { value: per_tunnel, note })
}

/// One handshake cycle: connect (and CONNECT through the proxy), then wait for the target's close
/// to come back before closing our end. Letting the target close first keeps TIME_WAIT on the
/// listening sides; if the client closed first, every cycle would park one of its ~28k ephemeral
/// ports for a minute and a 3-second window at 10k+ cycles/s would run out of them.
async fn handshake_once(route: Route, target: SocketAddrV4) -> Result<()> {
    let mut stream = connect(route, target).await?;
    let mut byte = [0u8; 1];
    match timeout(CONNECT_TIMEOUT, stream.read(&mut byte)).await {
        Ok(Ok(0)) => Ok(()),
        Ok(Ok(_)) => bail!("unexpected data on a tunnel to an accept-and-close target"),
        // A reset instead of a FIN still ends the cycle; the handshake itself succeeded.
        Ok(Err(_)) => Ok(()),
        Err(_) => bail!("the close did not come through within {CONNECT_TIMEOUT:?}"),
    }
}

/// [`socks::connect`] bounded by [`CONNECT_TIMEOUT`].
async fn connect(route: Route, target: SocketAddrV4) -> Result<TcpStream> {
    match timeout(CONNECT_TIMEOUT, socks::connect(route, target)).await {
        Ok(result) => result.with_context(|| format!("connecting to {target} via {route:?}")),
        Err(_) => bail!("connecting to {target} via {route:?} timed out"),
    }
}
