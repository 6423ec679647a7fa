//! Port forwarders through a [`Chain`], as gost users run them:
//! `-L tcp://:8080/host:80`, `-L udp://:1053/host:53`, `-L rtcp://:2222/host:22`,
//! `-L rudp://:5353/host:53`.
//!
//! Each forwarder takes an already-bound socket (tests bind port 0) and a shutdown future; shutdown
//! stops accepting new work, while connections already relaying run to their end.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::client::{Chain, Error, UdpAssociation};
use crate::proto::Address;

/// Most client source addresses [`udp`] serves at once; datagrams from further sources are
/// dropped until a session ends, so a spoofing sender cannot make us open unbounded associations.
pub const MAX_UDP_SESSIONS: usize = 1024;
/// Datagrams queued per UDP session while its association is being set up or the upstream is
/// busy; beyond that they are dropped, as a congested UDP path would.
const UDP_QUEUE: usize = 64;
/// Deadline of a connection's transport handshake in [`tcp`] when the listener's URL sets no
/// `handshakeTimeout` (a forwarder has no SOCKS handshake whose deadline could cover it).
pub const FORWARD_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause between failed BIND attempts in [`rtcp`].
pub const RTCP_MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Forwards every connection accepted on `listener` to `target` through `chain`. The listener may
/// run any transport (gost's `tcp+tls://`, `forward+ws://`, `mtls://:p/target`, …): each
/// connection's transport handshake runs in its own task, under the listener's own
/// `handshakeTimeout` ([`FORWARD_HANDSHAKE_TIMEOUT`] without one; the chain's timeouts are for
/// its hops, not for the clients of this listener), so a client that stalls its TLS or
/// WebSocket handshake holds up no one else.
pub async fn tcp(
    mut listener: crate::transport::Listener,
    target: Address,
    chain: Arc<Chain>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let transport = listener.kind();
    let handshake_timeout = listener.handshake_timeout().unwrap_or(FORWARD_HANDSHAKE_TIMEOUT);
    info!(local = %listener.local_addr(), %transport, %target, hops = chain.hops.len(), "tcp forwarder listening");
    tokio::pin!(shutdown);
    loop {
        let (incoming, peer) = tokio::select! {
            () = &mut shutdown => break,
            v = listener.accept_retrying() => v,
        };
        let (target, chain) = (target.clone(), chain.clone());
        tokio::spawn(async move {
            let mut client = match tokio::time::timeout(handshake_timeout, incoming.establish()).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return debug!(%peer, %transport, error = %e, "tcp forward: transport handshake failed"),
                Err(_) => return debug!(%peer, %transport, "tcp forward: transport handshake timed out"),
            };
            debug!(%peer, %target, "tcp forward: new connection");
            let mut upstream = match chain.connect(&target).await {
                Ok(s) => s,
                Err(e) => {
                    warn!(%peer, %target, hop = ?e.hop_index(), error = %e, "tcp forward: connect failed");
                    return;
                }
            };
            match crate::tls::relay(&mut client, &mut upstream, None).await {
                Ok(t) => debug!(%peer, up = t.a_to_b, down = t.b_to_a, "tcp forward: done"),
                Err(e) => debug!(%peer, error = %e, "tcp forward: relay ended"),
            }
        });
    }
    info!(%target, "tcp forwarder stopped");
    Ok(())
}

/// A session's entry in the map: a generation number, so an ending session never removes a newer
/// one for the same source, and the queue feeding it.
type Sessions = Arc<Mutex<HashMap<SocketAddr, (u64, mpsc::Sender<Vec<u8>>)>>>;

/// Forwards datagrams arriving on `socket` to `target`, one UDP association per client source
/// address, and sends the answers back to that source. A session ends after `idle` without a
/// datagram in either direction, or when its association's control connection closes. With an
/// empty chain the datagrams go directly to `target`.
pub async fn udp(
    socket: UdpSocket,
    target: Address,
    chain: Arc<Chain>,
    idle: Duration,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    udp_via(socket, target, chain, idle, UdpVia::Associate, shutdown).await
}

/// How [`udp_via`] carries datagrams through a SOCKS5 chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpVia {
    /// UDP ASSOCIATE at the last hop (gost's `relay=udp`, RFC 1928 §7).
    Associate,
    /// gost's UDP-TUN (`F3`) relay mode: datagrams framed inside the SOCKS connection, gost's
    /// default for `udp://` forwarders (docs/gost.md §4.7).
    Tun,
}

/// [`udp`] with the choice of carrier: one association or one UDP-TUN connection per client
/// source address (like gost, which opens one tunnel per local peer).
pub async fn udp_via(
    socket: UdpSocket,
    target: Address,
    chain: Arc<Chain>,
    idle: Duration,
    via: UdpVia,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    info!(local = %socket.local_addr()?, %target, hops = chain.hops.len(), ?via, "udp forwarder listening");
    let socket = Arc::new(socket);
    let sessions: Sessions = Arc::default();
    let mut generation = 0u64;
    let mut buf = vec![0u8; 65_536];
    tokio::pin!(shutdown);
    loop {
        let (n, src) = tokio::select! {
            () = &mut shutdown => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(e) => {
                    // Linux reports ICMP errors for earlier sends here; they concern one peer,
                    // not the listening socket.
                    debug!(error = %e, "udp forward: receive error");
                    continue;
                }
            },
        };
        let datagram = buf[..n].to_vec();
        let mut map = sessions.lock().unwrap_or_else(|p| p.into_inner());
        let datagram = match map.get(&src) {
            Some((_, tx)) => match tx.try_send(datagram) {
                Ok(()) => continue,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    debug!(%src, "udp forward: queue full, dropping datagram");
                    continue;
                }
                // The session ended but has not removed itself yet: start a new one.
                Err(mpsc::error::TrySendError::Closed(d)) => d,
            },
            None => datagram,
        };
        map.remove(&src);
        if map.len() >= MAX_UDP_SESSIONS {
            debug!(%src, "udp forward: session limit reached, dropping datagram");
            continue;
        }
        generation += 1;
        let (tx, rx) = mpsc::channel(UDP_QUEUE);
        // The channel is new and empty, so the first datagram always fits.
        let _ = tx.try_send(datagram);
        map.insert(src, (generation, tx));
        drop(map);
        let session = UdpSession {
            src,
            generation,
            socket: socket.clone(),
            target: target.clone(),
            chain: chain.clone(),
            idle,
            via,
            sessions: sessions.clone(),
        };
        tokio::spawn(session.run(rx));
    }
    // Dropping every queue's sender ends every session promptly.
    sessions.lock().unwrap_or_else(|p| p.into_inner()).clear();
    info!(%target, "udp forwarder stopped");
    Ok(())
}

/// Where a UDP session sends: straight to the target, or through an association.
enum Upstream {
    /// A socket connected to the resolved target, so only its answers get in.
    Direct(UdpSocket),
    /// A SOCKS5 association at the chain's last hop.
    Socks(UdpAssociation),
    /// gost's UDP-TUN at the chain's last hop.
    Tun(crate::client::UdpTunnel),
}

impl Upstream {
    async fn open(chain: &Chain, target: &Address, via: UdpVia) -> Result<Self, Error> {
        if !chain.hops.is_empty() {
            return Ok(match via {
                UdpVia::Associate => Upstream::Socks(chain.udp_associate().await?),
                UdpVia::Tun => Upstream::Tun(chain.udp_tun(None).await?),
            });
        }
        let addr = crate::client::lookup(target).await?.into_iter().next().ok_or(Error::Unsupported("no address"))?;
        let bind: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
        let socket = UdpSocket::bind(bind).await?;
        socket.connect(addr).await?;
        Ok(Upstream::Direct(socket))
    }

    async fn send(&self, payload: &[u8], target: &Address) -> Result<(), Error> {
        match self {
            Upstream::Direct(s) => s.send(payload).await.map(drop).map_err(Error::from),
            Upstream::Socks(a) => a.send_to(payload, target).await.map(drop),
            Upstream::Tun(t) => t.send_to(payload, target).await.map(drop),
        }
    }

    async fn recv(&self, buf: &mut [u8]) -> Result<usize, Error> {
        match self {
            Upstream::Direct(s) => Ok(s.recv(buf).await?),
            Upstream::Socks(a) => Ok(a.recv_from(buf).await?.0),
            // The frame's source is ignored, as gost's client does: the session has one target.
            Upstream::Tun(t) => Ok(t.recv_from(buf).await?.0),
        }
    }

    async fn closed(&self) {
        match self {
            // A tunnel's end shows up as a receive error instead.
            Upstream::Direct(_) | Upstream::Tun(_) => std::future::pending().await,
            Upstream::Socks(a) => a.closed().await,
        }
    }
}

/// One client source address of [`udp`].
struct UdpSession {
    src: SocketAddr,
    generation: u64,
    socket: Arc<UdpSocket>,
    target: Address,
    chain: Arc<Chain>,
    idle: Duration,
    via: UdpVia,
    sessions: Sessions,
}

impl UdpSession {
    async fn run(self, mut rx: mpsc::Receiver<Vec<u8>>) {
        let src = self.src;
        debug!(%src, target = %self.target, "udp forward: new session");
        match Upstream::open(&self.chain, &self.target, self.via).await {
            Ok(up) => self.pump(&up, &mut rx).await,
            Err(e) => warn!(%src, hop = ?e.hop_index(), error = %e, "udp forward: association failed"),
        }
        let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&src).is_some_and(|(g, _)| *g == self.generation) {
            map.remove(&src);
        }
        debug!(%src, "udp forward: session ended");
    }

    async fn pump(&self, up: &Upstream, rx: &mut mpsc::Receiver<Vec<u8>>) {
        let mut buf = vec![0u8; 65_536];
        let mut deadline = Instant::now() + self.idle;
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(d) => {
                        if let Err(e) = up.send(&d, &self.target).await {
                            debug!(src = %self.src, error = %e, "udp forward: upstream send failed");
                        }
                    }
                    None => return,
                },
                r = up.recv(&mut buf) => match r {
                    Ok(n) => {
                        if let Err(e) = self.socket.send_to(&buf[..n], self.src).await {
                            debug!(src = %self.src, error = %e, "udp forward: reply send failed");
                        }
                    }
                    Err(e) => {
                        debug!(src = %self.src, error = %e, "udp forward: upstream receive failed");
                        return;
                    }
                },
                () = up.closed() => {
                    debug!(src = %self.src, "udp forward: proxy closed the association");
                    return;
                }
                () = tokio::time::sleep_until(deadline) => return,
            }
            deadline = Instant::now() + self.idle;
        }
    }
}

/// Remote port forwarding: asks the chain's last hop to listen on `listen` (BIND with that DST;
/// the server is expected to take a non-zero DST.PORT as the port to listen on and, when so
/// configured, an all-zero DST.ADDR as "any peer"), and connects each peer that arrives directly
/// to the local `target`. One BIND serves one connection, so a new BIND follows each accept.
/// Failures back off, doubling up to [`RTCP_MAX_BACKOFF`].
pub async fn rtcp(
    listen: Address,
    target: Address,
    chain: Arc<Chain>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    if chain.hops.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "rtcp needs at least one proxy"));
    }
    let (listen_at, to, limit) = (&listen, &target, chain.connect_timeout);
    let open = || async {
        let pending = chain.bind(listen_at).await?;
        info!(bound = %pending.bound, listen = %listen_at, target = %to, "rtcp: listening at the proxy");
        pending.accept().await
    };
    let serve = |(mut stream, peer): (crate::tls::Stream, Address)| {
        let target = to.clone();
        tokio::spawn(async move {
            let Some(local) = dial_local(&peer, &target, limit).await else { return };
            relay_ended(&peer, crate::tls::relay(&mut stream, &mut crate::tls::Stream::Tcp(local), None).await);
        });
        // The next BIND goes out at once: only a failure backs off.
        std::future::ready(AfterServe::Reopen)
    };
    reconnect("rtcp: bind failed", shutdown, open, serve).await;
    info!(%listen, "rtcp forwarder stopped");
    Ok(())
}

/// What [`reconnect`] does once a session's `serve` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterServe {
    /// Open the next session at once (rtcp's BIND: one session per connection, by design).
    Reopen,
    /// The session ended: wait the (reset) backoff before opening the next one.
    Pause,
}

/// The reconnect loop of the remote forwarders: `open` a session at the chain's last hop,
/// `serve` it, and after a failed `open` (logged as `failed`), or a session that ended with
/// [`AfterServe::Pause`], wait before the next `open`. The wait starts at 100 ms, doubles after
/// each wait up to [`RTCP_MAX_BACKOFF`], and is back at 100 ms after every session opened.
/// Returns at `shutdown`, whichever of open, serve or wait it interrupts.
async fn reconnect<T, O, S>(
    failed: &str,
    shutdown: impl Future<Output = ()>,
    mut open: impl FnMut() -> O,
    mut serve: impl FnMut(T) -> S,
) where
    O: Future<Output = Result<T, Error>>,
    S: Future<Output = AfterServe>,
{
    const FIRST: Duration = Duration::from_millis(100);
    tokio::pin!(shutdown);
    let mut backoff = FIRST;
    loop {
        let opened = tokio::select! {
            () = &mut shutdown => return,
            r = open() => r,
        };
        match opened {
            Ok(session) => {
                backoff = FIRST;
                let after = tokio::select! {
                    () = &mut shutdown => return,
                    after = serve(session) => after,
                };
                if after == AfterServe::Reopen {
                    continue;
                }
            }
            Err(e) => warn!(hop = ?e.hop_index(), error = %e, retry_in = ?backoff, "{failed}"),
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RTCP_MAX_BACKOFF);
    }
}

/// Dials the local `target` for a remote forwarder's `peer`, directly, not through the chain:
/// the target is on this side. `None` (logged) when it cannot be reached.
async fn dial_local(peer: &Address, target: &Address, limit: Duration) -> Option<tokio::net::TcpStream> {
    debug!(%peer, %target, "rtcp: peer connected");
    match crate::client::dial(target, limit).await {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(%peer, %target, error = %e, "rtcp: local connect failed");
            None
        }
    }
}

/// Logs how a remote forwarder's relay for `peer` ended.
fn relay_ended(peer: &Address, r: io::Result<crate::relay::Transferred>) {
    match r {
        Ok(t) => debug!(%peer, inbound = t.a_to_b, outbound = t.b_to_a, "rtcp: done"),
        Err(e) => debug!(%peer, error = %e, "rtcp: relay ended"),
    }
}

/// Peers of [`rudp`]: a generation (so an ending peer task never removes a newer one) and the
/// local socket that talks to the target for that peer.
type RudpPeers = Arc<Mutex<HashMap<Address, (u64, Arc<UdpSocket>)>>>;

/// Remote UDP forwarding, as gost's `rudp://` (docs/gost.md §4.7, bind mode): the chain's
/// last hop listens on `listen` through one UDP-TUN connection; every datagram a peer sends there
/// comes down the tunnel and is sent from here to `target` over a local socket of that peer's
/// own, and the target's answers go back up to that peer. A peer's socket closes after `idle`
/// without an answer. A failed tunnel is opened again with backoff.
pub async fn rudp(
    listen: Address,
    target: Address,
    chain: Arc<Chain>,
    idle: Duration,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let (listen_at, to) = (&listen, &target);
    let open = || chain.udp_tun(Some(listen_at));
    let serve = |tun: crate::client::UdpTunnel| async move {
        info!(bound = %tun.bound(), listen = %listen_at, target = %to, "rudp: listening at the proxy");
        if let Err(e) = rudp_serve(Arc::new(tun), to, idle).await {
            warn!(error = %e, "rudp: tunnel ended");
        }
        AfterServe::Pause
    };
    reconnect("rudp: bind failed", shutdown, open, serve).await;
    info!(%listen, "rudp forwarder stopped");
    Ok(())
}

/// Serves one bind-mode tunnel until it fails.
async fn rudp_serve(tun: Arc<crate::client::UdpTunnel>, target: &Address, idle: Duration) -> Result<(), Error> {
    let to = crate::client::lookup(target).await?.into_iter().next().ok_or(Error::Unsupported("no address"))?;
    let peers: RudpPeers = Arc::default();
    let mut generation = 0u64;
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, peer) = tun.recv_from(&mut buf).await?;
        let existing = peers.lock().unwrap_or_else(|p| p.into_inner()).get(&peer).map(|(_, s)| s.clone());
        let socket = match existing {
            Some(s) => s,
            None => {
                if peers.lock().unwrap_or_else(|p| p.into_inner()).len() >= MAX_UDP_SESSIONS {
                    debug!(%peer, "rudp: peer limit reached, dropping datagram");
                    continue;
                }
                let bind: SocketAddr = if to.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
                let s = UdpSocket::bind(bind).await?;
                s.connect(to).await?;
                let s = Arc::new(s);
                generation += 1;
                peers.lock().unwrap_or_else(|p| p.into_inner()).insert(peer.clone(), (generation, s.clone()));
                tokio::spawn(rudp_answers(tun.clone(), s.clone(), peer.clone(), generation, peers.clone(), idle));
                s
            }
        };
        if let Err(e) = socket.send(&buf[..n]).await {
            debug!(%peer, error = %e, "rudp: send to target failed");
        }
    }
}

/// Carries the target's answers for one peer back up the tunnel until `idle` passes in silence.
async fn rudp_answers(
    tun: Arc<crate::client::UdpTunnel>,
    socket: Arc<UdpSocket>,
    peer: Address,
    generation: u64,
    peers: RudpPeers,
    idle: Duration,
) {
    let mut buf = vec![0u8; 65_536];
    while let Ok(Ok(n)) = tokio::time::timeout(idle, socket.recv(&mut buf)).await {
        if tun.send_to(&buf[..n], &peer).await.is_err() {
            break;
        }
    }
    let mut map = peers.lock().unwrap_or_else(|p| p.into_inner());
    if map.get(&peer).is_some_and(|(g, _)| *g == generation) {
        map.remove(&peer);
    }
}

/// Remote TCP forwarding as gost's `rtcp://` does it (docs/gost.md §4.5): one MBIND at
/// the chain's last hop carries every inbound connection as an smux stream, each relayed to
/// `target` from here. When the session dies (proxy gone, keepalive timeout, a bad per-stream
/// reply) it is bound again with backoff. [`rtcp`] does the same with one BIND per connection,
/// for proxies without gost's extensions.
pub async fn rtcp_mux(
    listen: Address,
    target: Address,
    chain: Arc<Chain>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let (listen_at, to, limit) = (&listen, &target, chain.connect_timeout);
    let open = || chain.mbind(listen_at);
    let serve = |mux: crate::client::MuxBind| async move {
        info!(bound = %mux.bound, listen = %listen_at, target = %to, "rtcp: listening at the proxy (MBIND)");
        loop {
            let (mut stream, peer) = match mux.accept().await {
                Ok(v) => v,
                Err(e) => {
                    // As gost: a bad stream (or the end) tears the session down.
                    warn!(error = %e, "rtcp: MBIND session ended");
                    return AfterServe::Pause;
                }
            };
            let target = to.clone();
            tokio::spawn(async move {
                let Some(mut local) = dial_local(&peer, &target, limit).await else { return };
                relay_ended(&peer, crate::relay::relay(&mut stream, &mut local, None).await);
            });
        }
    };
    reconnect("rtcp: MBIND failed", shutdown, open, serve).await;
    info!(%listen, "rtcp forwarder stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{Kind, TransportSpec};
    use tokio::io::AsyncReadExt;

    /// How long a `tcp` forwarder on a WebSocket listener keeps a client that never sends its
    /// upgrade request, with the listener's `handshakeTimeout` (or none) and a chain whose own
    /// handshake timeout is 1 s. On a paused clock: the only timer is the forwarder's, so the
    /// clock jumps straight to it and the time read is exactly the deadline that closed it.
    async fn stalled_client_kept_for(listener_timeout: Option<Duration>) -> Duration {
        let mut spec = TransportSpec::new(Kind::Ws);
        spec.handshake_timeout = listener_timeout;
        let bound = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = bound.local_addr().unwrap();
        let listener = crate::transport::Listener::new(bound, &spec).unwrap();
        let chain = Arc::new(Chain { handshake_timeout: Duration::from_secs(1), ..Chain::direct() });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let fwd = tokio::spawn(super::tcp(listener, Address::from(addr), chain, async move {
            let _ = stopped.await;
        }));
        let start = Instant::now();
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The forwarder closes the connection at its deadline: EOF, no byte.
        assert_eq!(client.read(&mut [0u8; 1]).await.unwrap(), 0);
        let kept = start.elapsed();
        let _ = stop.send(());
        fwd.await.unwrap().unwrap();
        kept
    }

    #[tokio::test(start_paused = true)]
    async fn reconnect_backs_off_doubling_to_the_cap_resets_after_a_session_and_stops_at_shutdown() {
        let start = Instant::now();
        // When each `open` ran, and what it returned: failures, one session, failures again.
        let outcomes = [false, false, false, false, false, false, true, false, false];
        let opens = Mutex::new(Vec::new());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let stop = Mutex::new(Some(stop));
        let open = || {
            let mut at = opens.lock().unwrap();
            at.push(start.elapsed());
            let ok = outcomes.get(at.len() - 1).copied().unwrap_or(false);
            if at.len() == outcomes.len() {
                // Stop during the wait that follows this last failure.
                let _ = stop.lock().unwrap().take().map(|s| s.send(()));
            }
            std::future::ready(if ok { Ok(()) } else { Err(Error::Unsupported("refused")) })
        };
        let serve = |()| std::future::ready(AfterServe::Pause);
        reconnect("test: open failed", async { drop(stopped.await) }, open, serve).await;
        let at = opens.into_inner().unwrap();
        let gaps: Vec<u64> = at.windows(2).map(|w| (w[1] - w[0]).as_millis() as u64).collect();
        // 100 ms doubling to the 1 s cap; the session resets it, so its pause is 100 ms again.
        assert_eq!(gaps, [100, 200, 400, 800, 1000, 1000, 100, 200], "{at:?}");
        assert_eq!(RTCP_MAX_BACKOFF, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn reconnect_opens_again_at_once_after_a_reopen_session() {
        let start = Instant::now();
        let opens = Mutex::new(Vec::new());
        let open = || {
            opens.lock().unwrap().push(start.elapsed());
            std::future::ready(Ok::<_, Error>(()))
        };
        let count = std::sync::atomic::AtomicUsize::new(0);
        let serve = |()| {
            let n = count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move {
                if n == 3 {
                    // The fourth session never ends: shutdown interrupts it.
                    std::future::pending::<()>().await;
                }
                AfterServe::Reopen
            }
        };
        let shutdown = tokio::time::sleep(Duration::from_secs(5));
        reconnect("test: open failed", shutdown, open, serve).await;
        let at = opens.into_inner().unwrap();
        assert_eq!(at, [Duration::ZERO; 4]);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn the_listeners_handshake_timeout_bounds_the_transport_handshake_not_the_chains() {
        let kept = stalled_client_kept_for(Some(Duration::from_secs(30))).await;
        assert!(kept >= Duration::from_secs(30) && kept < Duration::from_secs(31), "{kept:?}");
        let kept = stalled_client_kept_for(None).await;
        assert!(
            kept >= FORWARD_HANDSHAKE_TIMEOUT && kept < FORWARD_HANDSHAKE_TIMEOUT + Duration::from_secs(1),
            "{kept:?}"
        );
    }
}
