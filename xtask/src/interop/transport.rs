//! The lab's transport family (`cargo xtask interop --transport tcp,tls,…`): for every transport,
//! {reference, gost} clients × {reference, gost} servers × {connect, udp-tun, mbind}, each moving
//! [`VOLUME`] bytes each way with a SHA-256 check, UDP-TUN [`UDP_VOLUME`] in datagrams each
//! checked byte for byte (docs/transports.md).
//!
//! A server runs `-L socks5+T://127.0.0.1:P?bind=true&udp=true` (the same URL for gost and
//! socksref); a client is a forwarder `-L tcp|udp|rtcp://… -F socks5+T://127.0.0.1:P`. The
//! payload goes through the client's forwarder, the transport, the server, to an XOR echo.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::servers::free_port;
use super::targets::{xor, KEY};
use super::{tally, Cell, CellResult, Kind, Lab, Verdict};
use crate::peers::{Feature, PeerId};

/// Transports the family knows, in matrix order.
pub const TRANSPORTS: [&str; 8] = ["tcp", "tls", "ws", "wss", "mtls", "mws", "mwss", "kcp"];
/// Peers on both sides of the family.
const PEERS: [PeerId; 2] = [PeerId::Reference, PeerId::Gost];
/// The features of the family.
const FEATURES: [Feature; 3] = [Feature::Socks5Connect, Feature::UdpTun, Feature::Mbind];
/// Bytes each way per TCP cell (the 64 MiB).
pub const VOLUME: usize = 64 << 20;
/// Bytes each way per UDP-TUN cell: as much as a stream cell. (It was 1 MiB while gost's
/// `udp://` forwarder ran without `keepalive=true` and so opened a new tunnel per answer.)
pub const UDP_VOLUME: usize = VOLUME;
/// UDP payload per datagram: below gost's 4096-byte UDP buffer and a loopback MTU of headroom.
const DATAGRAM: usize = 1400;

/// The cell id of one transport cell.
pub fn cell_id(transport: &str, feature: Feature, client: PeerId, server: PeerId) -> String {
    format!("transport.{transport}.{}.{}.{}", feature.name(), client.name(), server.name())
}

/// The planned cells for `transports` (names checked by the flag parser).
pub fn plan(transports: &[String]) -> Vec<Cell> {
    let mut cells = Vec::new();
    for t in TRANSPORTS.iter().filter(|t| transports.iter().any(|x| x == *t)) {
        for f in FEATURES {
            for c in PEERS {
                for s in PEERS {
                    cells.push(Cell {
                        id: cell_id(t, f, c, s),
                        kind: Kind::Transport,
                        client: Some(c),
                        server: s,
                        feature: Some(f),
                        transport: Some((*t).to_string()),
                    });
                }
            }
        }
    }
    cells
}

/// The scheme for `transport`: plain `socks5` for tcp, else `socks5+T`.
fn scheme(transport: &str) -> String {
    if transport == "tcp" {
        "socks5".into()
    } else {
        format!("socks5+{transport}")
    }
}

/// Query keys every URL of the family carries. `notls=true` on the smux transports: gost's own
/// default (method 80 inside an smux stream) breaks its session for later streams, so gost ↔
/// gost itself fails there, and that is not what these cells test (docs/transports.md). On tcp,
/// too: the method-level TLS has its own cells. kcp is smux too; its key is set on both ends
/// as interoperating kcp nodes should (gost's effective default is the empty key, docs/kcp.md),
/// every other kcp setting is gost's effective default.
fn common_keys(transport: &str) -> &'static str {
    match transport {
        "tcp" | "mtls" | "mws" | "mwss" => "notls=true",
        "kcp" => "notls=true&kcp.key=sockslab",
        _ => "",
    }
}

/// A running XOR echo for this family's datagrams, separate from the lab's shared one (which
/// records every datagram it sees for the bypass probes: 64 MiB per cell would pile up there).
async fn udp_echo() -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let s = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = s.local_addr()?;
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            buf[..n].iter_mut().for_each(|b| *b ^= KEY);
            let _ = s.send_to(&buf[..n], from).await;
        }
    });
    Ok((addr, task))
}

/// Deterministic bytes for block `seq`: its sequence number, then pseudo-random bytes seeded by it.
fn block(seq: u64, len: usize) -> Vec<u8> {
    let mut v = seq.to_be_bytes().to_vec();
    v.extend(testkit::pseudo_random(seq, len.saturating_sub(v.len())));
    v.truncate(len);
    v
}

/// Streams [`VOLUME`] bytes to `addr` while reading the XORed echo; compares SHA-256 digests.
async fn tcp_volume(addr: SocketAddr) -> Result<String> {
    let t = Instant::now();
    let s = connect_retry(addr).await?;
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        let mut sent = Sha256::new();
        let mut seq = 0u64;
        let mut left = VOLUME;
        while left > 0 {
            let chunk = block(seq, left.min(64 * 1024));
            sent.update(xor(&chunk));
            w.write_all(&chunk).await?;
            left -= chunk.len();
            seq += 1;
        }
        // Keep the write side open until the echo is read (no half-close through ws/smux).
        Ok::<_, std::io::Error>((sent.finalize(), w))
    });
    let mut got = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0usize;
    while n < VOLUME {
        let k = r.read(&mut buf[..(VOLUME - n).min(256 * 1024)]).await.context("reading the echo")?;
        ensure!(k > 0, "EOF after {n} of {VOLUME} echo bytes");
        got.update(&buf[..k]);
        n += k;
    }
    let (want, _w) = writer.await.context("writer task")?.context("writing the payload")?;
    ensure!(got.finalize() == want, "SHA-256 of the echo differs from the payload XOR 0xA5");
    let secs = t.elapsed().as_secs_f64();
    Ok(format!(
        "{} MiB each way over TCP, SHA-256 verified, {:.0} MiB/s",
        VOLUME >> 20,
        (VOLUME >> 20) as f64 / secs.max(1e-3)
    ))
}

/// Connects, retrying while a forwarder (or an rtcp listener at the server) is coming up.
async fn connect_retry(addr: SocketAddr) -> Result<TcpStream> {
    let mut last = None;
    for _ in 0..80 {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(125)).await;
    }
    Err(last.map(anyhow::Error::from).unwrap_or_else(|| anyhow::anyhow!("no attempt")))
        .context(format!("connect {addr}"))
}

/// The probe's congestion window: how many datagrams may be unanswered at once. Additive
/// increase (one more per window's worth of answers), halved at most once per resend timeout
/// when a datagram has to be resent. Why adaptive: every hop of a UDP-TUN path ends in a UDP
/// socket whose receive buffer (about 200 KiB on Linux) drops what does not fit, so a fixed
/// large window loses datagrams at every burst (128 in flight lost a tenth of them on loopback
/// while 48 lost none), and a busy CI machine drains those buffers more slowly still.
#[derive(Debug)]
struct Window {
    /// Datagrams allowed in flight now.
    size: f64,
    /// When the window was last halved: one halving per timeout period, since one burst loses
    /// many datagrams at once and each of them must not halve it again.
    last_cut: Option<Instant>,
}

impl Window {
    /// The first window; measured on loopback over tcp, 8 in flight already moves 10k datagrams/s.
    const START: f64 = 16.0;
    /// The floor: never fewer than this in flight, so a lossy path still makes progress.
    const MIN: f64 = 4.0;
    /// The ceiling: 48 in flight moved 11-19k datagrams/s through every client × server pair on
    /// loopback without a loss; more only fills the socket buffers.
    const MAX: f64 = 48.0;

    fn new() -> Self {
        Self { size: Self::START, last_cut: None }
    }

    /// Datagrams that may be in flight.
    fn allowed(&self) -> usize {
        self.size as usize
    }

    /// One datagram answered.
    fn on_answer(&mut self) {
        self.size = (self.size + 1.0 / self.size).min(Self::MAX);
    }

    /// A datagram timed out at `now` (its resend timeout is `rto`).
    fn on_loss(&mut self, now: Instant, rto: Duration) {
        if self.last_cut.is_none_or(|at| now.duration_since(at) >= rto) {
            self.size = (self.size / 2.0).max(Self::MIN);
            self.last_cut = Some(now);
        }
    }
}

/// The resend timeout: four smoothed round trips of first transmissions (a resent datagram's
/// answer could be either copy's, so it is not sampled), within [`Rto::MIN`]..[`Rto::MAX`].
#[derive(Debug)]
struct Rto {
    srtt: Option<Duration>,
}

impl Rto {
    /// Never resend sooner: a datagram queued behind a full window of others (through smux or
    /// kcp) can take tens of milliseconds, and an early resend only doubles the load.
    const MIN: Duration = Duration::from_millis(200);
    /// Never wait longer than this for an answer before resending.
    const MAX: Duration = Duration::from_secs(1);

    fn sample(&mut self, rtt: Duration) {
        self.srtt = Some(match self.srtt {
            None => rtt,
            Some(s) => (s * 7 + rtt) / 8,
        });
    }

    fn get(&self) -> Duration {
        self.srtt.map_or(Self::MIN, |s| s * 4).clamp(Self::MIN, Self::MAX)
    }
}

/// Sends [`UDP_VOLUME`] bytes in datagrams of [`DATAGRAM`] bytes to `addr`, at most a
/// [`Window`] of them unanswered, resending those unanswered after the [`Rto`]; every reply
/// must be its datagram XOR 0xA5, byte for byte, and every datagram must be answered.
async fn udp_volume(addr: SocketAddr) -> Result<String> {
    let t = Instant::now();
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    sock.connect(addr).await?;
    let total = UDP_VOLUME.div_ceil(DATAGRAM) as u64;
    let len = |seq: u64| if seq + 1 == total { UDP_VOLUME - (total as usize - 1) * DATAGRAM } else { DATAGRAM };
    let mut acked = vec![false; total as usize];
    // Unanswered datagrams: when last sent, and whether that was a resend.
    let mut in_flight: BTreeMap<u64, (Instant, bool)> = BTreeMap::new();
    let (mut window, mut rto) = (Window::new(), Rto { srtt: None });
    let (mut next, mut done, mut resent, mut duplicates) = (0u64, 0u64, 0u64, 0u64);
    let mut buf = vec![0u8; 65_536];
    let mut last_progress = Instant::now();
    while done < total {
        // The window counts datagrams in flight, not the distance from the oldest unanswered
        // one: a lost datagram waiting for its resend must not stop the others.
        while next < total && in_flight.len() < window.allowed() {
            sock.send(&block(next, len(next))).await?;
            in_flight.insert(next, (Instant::now(), false));
            next += 1;
        }
        // Wait at most until the oldest datagram in flight is due for a resend.
        let wait = in_flight
            .values()
            .map(|(at, _)| (*at + rto.get()).saturating_duration_since(Instant::now()))
            .min()
            .unwrap_or(Rto::MIN);
        match tokio::time::timeout(wait, sock.recv(&mut buf)).await {
            Ok(Ok(n)) if n >= 8 => {
                let seq = u64::from_be_bytes((&xor(&buf[..8])[..]).try_into().expect("8 bytes"));
                ensure!(seq < total, "an answer for datagram {seq}, but only {total} were sent");
                if acked[seq as usize] {
                    // The answer to a resent copy after the first one's.
                    duplicates += 1;
                } else {
                    let expect = xor(&block(seq, len(seq)));
                    ensure!(buf[..n] == expect[..], "datagram {seq}: the echo differs from the payload XOR 0xA5");
                    acked[seq as usize] = true;
                    done += 1;
                    if let Some((at, false)) = in_flight.remove(&seq) {
                        rto.sample(at.elapsed());
                    }
                    window.on_answer();
                    last_progress = Instant::now();
                }
            }
            Ok(Ok(n)) => anyhow::bail!("a {n}-byte answer: shorter than a sequence number"),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {}
        }
        ensure!(
            last_progress.elapsed() < Duration::from_secs(10),
            "no datagram answered for 10 s ({done} of {total} done, {} in flight)",
            in_flight.len()
        );
        let (now, timeout) = (Instant::now(), rto.get());
        let stale: Vec<u64> =
            in_flight.iter().filter(|(_, (at, _))| now.duration_since(*at) >= timeout).map(|(s, _)| *s).collect();
        if !stale.is_empty() {
            window.on_loss(now, timeout);
        }
        for seq in stale {
            sock.send(&block(seq, len(seq))).await?;
            in_flight.insert(seq, (now, true));
            resent += 1;
        }
    }
    ensure!(acked.iter().all(|a| *a), "unanswered datagrams");
    let secs = t.elapsed().as_secs_f64();
    Ok(format!(
        "{} MiB each way in {total} datagrams of {DATAGRAM} bytes ({resent} resent, {duplicates} answered twice), \
         every reply verified, {:.0} datagrams/s, {:.1} MiB/s",
        UDP_VOLUME >> 20,
        total as f64 / secs.max(1e-3),
        (UDP_VOLUME >> 20) as f64 / secs.max(1e-3)
    ))
}

/// One running server of the family.
struct FamilyServer {
    addr: SocketAddr,
    running: super::backend::Running,
}

async fn start_server(lab: &Lab, peer: PeerId, transport: &str) -> Result<FamilyServer> {
    let mut attempt = 0;
    loop {
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let keys = common_keys(transport);
        let sep = if keys.is_empty() { "" } else { "&" };
        let url = format!("{}://127.0.0.1:{port}?bind=true&udp=true{sep}{keys}", scheme(transport));
        let args = vec!["-L".to_string(), url];
        // kcp listens on UDP: probed by `testkit::wait_udp_bound` instead of a TCP connect.
        let kcp = transport == "kcp";
        let started = match lab.launchers[&peer].start(&args, &[], (!kcp).then_some(addr)).await {
            Ok(running) if kcp => match testkit::wait_udp_bound(addr, Duration::from_secs(10)).await {
                Ok(()) => Ok(running),
                Err(e) => {
                    let logs = running.logs().await;
                    running.stop().await;
                    Err(anyhow::Error::new(e).context(logs))
                }
            },
            other => other,
        };
        match started {
            Ok(running) => return Ok(FamilyServer { addr, running }),
            Err(_) if attempt < 2 => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Runs one cell against `server`.
async fn run_cell(
    lab: &Lab,
    c: &Cell,
    server: SocketAddr,
    tcp_echo: u16,
    udp_echo: SocketAddr,
) -> Result<(String, String)> {
    let client = c.client.context("client")?;
    let feature = c.feature.context("feature")?;
    let transport = c.transport.as_deref().context("transport")?;
    let keys = common_keys(transport);
    let hop = if keys.is_empty() {
        format!("{}://{server}", scheme(transport))
    } else {
        format!("{}://{server}?{keys}", scheme(transport))
    };
    let listen = free_port()?;
    let local = SocketAddr::from(([127, 0, 0, 1], listen));
    let (forwarder, ready) = match feature {
        // keepalive=true: gost's udp listener otherwise ends a session after its first answer,
        // so every datagram after that opens a new UDP-TUN connection (docs/transports.md).
        Feature::UdpTun => (format!("udp://127.0.0.1:{listen}/{udp_echo}?keepalive=true"), None),
        // rtcp: the server listens on the port; nothing local to probe.
        Feature::Mbind => (format!("rtcp://127.0.0.1:{listen}/127.0.0.1:{tcp_echo}"), None),
        _ => (format!("tcp://127.0.0.1:{listen}/127.0.0.1:{tcp_echo}"), Some(local)),
    };
    let args = vec!["-L".to_string(), forwarder, "-F".to_string(), hop];
    let running = lab.launchers[&client].start(&args, &[], ready).await?;
    if ready.is_none() {
        // The udp forwarder binds right after start; the rtcp listener appears at the server.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let r = tokio::time::timeout(Duration::from_secs(240), async {
        match feature {
            Feature::UdpTun => udp_volume(local).await,
            _ => tcp_volume(local).await,
        }
    })
    .await
    .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out after 240 s")));
    let logs = format!("{} {}\n{}", client.name(), args.join(" "), running.logs().await);
    running.stop().await;
    let detail = r.with_context(|| format!("client log:\n{logs}"))?;
    Ok((detail, logs))
}

/// Runs the family's cells: one server per (peer, transport), its cells one after another
/// (each moves 64 MiB each way; on two cores, parallel cells would only measure each other).
pub async fn run(lab: &Arc<Lab>, cells: Vec<Cell>, done: &mut usize, total: usize) -> Result<Vec<CellResult>> {
    let (udp_echo, echo_task) = udp_echo().await?;
    let tcp_echo = lab.targets.echo_port;
    let mut groups: BTreeMap<(PeerId, String), Vec<Cell>> = BTreeMap::new();
    for c in cells {
        groups.entry((c.server, c.transport.clone().unwrap_or_default())).or_default().push(c);
    }
    let mut out = Vec::new();
    for ((peer, transport), cells) in groups {
        let server = start_server(lab, peer, &transport).await;
        for c in cells {
            let t = Instant::now();
            let r = match &server {
                Ok(s) => run_cell(lab, &c, s.addr, tcp_echo, udp_echo).await,
                Err(e) => Err(anyhow::anyhow!("server {peer} over {transport} did not start: {e:#}")),
            };
            let (status, detail, logs) = match r {
                Ok((d, l)) => (lab.decide(&c, true), d, l),
                Err(e) => (lab.decide(&c, false), format!("{e:#}"), String::new()),
            };
            let logs = match (&status, &server) {
                (Verdict::Pass, _) => String::new(),
                (_, Ok(s)) => format!("{logs}\n--- server\n{}", s.running.logs().await),
                _ => logs,
            };
            tally(&mut out, CellResult::finished(c, status, detail, logs, t, lab.backend), done, total);
        }
        if let Ok(s) = server {
            s.running.stop().await;
        }
    }
    echo_task.abort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_family_is_peers_squared_times_features_per_transport() {
        let cells = plan(&["tls".into(), "mwss".into(), "kcp".into()]);
        assert_eq!(cells.len(), 3 * FEATURES.len() * PEERS.len() * PEERS.len());
        assert!(cells.iter().any(|c| c.id == "transport.kcp.udp-tun.reference.gost"));
        assert!(cells.iter().any(|c| c.id == "transport.tls.mbind.gost.reference"));
        assert!(cells.iter().all(|c| c.kind == Kind::Transport && c.transport.is_some()));
    }

    #[test]
    fn the_window_grows_to_its_ceiling_and_halves_once_per_timeout() {
        let mut w = Window::new();
        assert_eq!(w.allowed(), Window::START as usize);
        for _ in 0..100_000 {
            w.on_answer();
        }
        assert_eq!(w.allowed(), Window::MAX as usize);
        let (now, rto) = (Instant::now(), Duration::from_millis(200));
        w.on_loss(now, rto);
        assert_eq!(w.allowed(), Window::MAX as usize / 2);
        // More losses of the same burst do not cut it again.
        w.on_loss(now + Duration::from_millis(10), rto);
        assert_eq!(w.allowed(), Window::MAX as usize / 2);
        // A loss one timeout later does, down to the floor and no further.
        for i in 1..10 {
            w.on_loss(now + rto * i, rto);
        }
        assert_eq!(w.allowed(), Window::MIN as usize);
    }

    #[test]
    fn the_resend_timeout_follows_the_round_trip_within_its_bounds() {
        let mut r = Rto { srtt: None };
        assert_eq!(r.get(), Rto::MIN);
        r.sample(Duration::from_millis(1));
        assert_eq!(r.get(), Rto::MIN);
        for _ in 0..100 {
            r.sample(Duration::from_millis(100));
        }
        let t = r.get();
        assert!(t > Duration::from_millis(390) && t <= Duration::from_millis(400), "{t:?}");
        r.sample(Duration::from_secs(30));
        assert_eq!(r.get(), Rto::MAX);
    }

    #[test]
    fn blocks_differ_and_carry_their_sequence_number() {
        let (a, b) = (block(1, DATAGRAM), block(2, DATAGRAM));
        assert_ne!(a, b);
        assert_eq!(u64::from_be_bytes(a[..8].try_into().unwrap()), 1);
        assert_eq!(block(7, 100).len(), 100);
    }
}
