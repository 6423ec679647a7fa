//! Port forwarders through a [`Chain`], as gost users run them:
//! `-L tcp://:8080/host:80`, `-L udp://:1053/host:53`, `-L rtcp://:2222/host:22`.
//!
//! Each forwarder takes an already-bound socket (tests bind port 0) and a shutdown future; shutdown
//! stops accepting new work, while connections already relaying run to their end.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
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
/// Pause after a failed `accept` (e.g. EMFILE) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between failed BIND attempts in [`rtcp`].
pub const RTCP_MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Forwards every connection accepted on `listener` to `target` through `chain`.
pub async fn tcp(
    listener: TcpListener,
    target: Address,
    chain: Arc<Chain>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    info!(local = %listener.local_addr()?, %target, hops = chain.hops.len(), "tcp forwarder listening");
    tokio::pin!(shutdown);
    loop {
        let (client, peer) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let (target, chain) = (target.clone(), chain.clone());
        tokio::spawn(async move {
            debug!(%peer, %target, "tcp forward: new connection");
            let mut upstream = match chain.connect(&target).await {
                Ok(s) => s,
                Err(e) => {
                    warn!(%peer, %target, hop = ?e.hop_index(), error = %e, "tcp forward: connect failed");
                    return;
                }
            };
            let mut client = crate::tls::Stream::Tcp(client);
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
    info!(local = %socket.local_addr()?, %target, hops = chain.hops.len(), "udp forwarder listening");
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
}

impl Upstream {
    async fn open(chain: &Chain, target: &Address) -> Result<Self, Error> {
        if !chain.hops.is_empty() {
            return Ok(Upstream::Socks(chain.udp_associate().await?));
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
        }
    }

    async fn recv(&self, buf: &mut [u8]) -> Result<usize, Error> {
        match self {
            Upstream::Direct(s) => Ok(s.recv(buf).await?),
            Upstream::Socks(a) => Ok(a.recv_from(buf).await?.0),
        }
    }

    async fn closed(&self) {
        match self {
            Upstream::Direct(_) => std::future::pending().await,
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
    sessions: Sessions,
}

impl UdpSession {
    async fn run(self, mut rx: mpsc::Receiver<Vec<u8>>) {
        let src = self.src;
        debug!(%src, target = %self.target, "udp forward: new session");
        match Upstream::open(&self.chain, &self.target).await {
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
    tokio::pin!(shutdown);
    let mut backoff = Duration::from_millis(100);
    loop {
        let round = async {
            let pending = chain.bind(&listen).await?;
            info!(bound = %pending.bound, %listen, %target, "rtcp: listening at the proxy");
            pending.accept().await
        };
        let r = tokio::select! {
            () = &mut shutdown => break,
            r = round => r,
        };
        match r {
            Ok((mut stream, peer)) => {
                backoff = Duration::from_millis(100);
                let (target, limit) = (target.clone(), chain.connect_timeout);
                tokio::spawn(async move {
                    debug!(%peer, %target, "rtcp: peer connected");
                    // Directly, not through the chain: the target is on this side.
                    let local = match crate::client::dial(&target, limit).await {
                        Ok(s) => s,
                        Err(e) => {
                            warn!(%peer, %target, error = %e, "rtcp: local connect failed");
                            return;
                        }
                    };
                    let mut local = crate::tls::Stream::Tcp(local);
                    match crate::tls::relay(&mut stream, &mut local, None).await {
                        Ok(t) => debug!(%peer, inbound = t.a_to_b, outbound = t.b_to_a, "rtcp: done"),
                        Err(e) => debug!(%peer, error = %e, "rtcp: relay ended"),
                    }
                });
            }
            Err(e) => {
                warn!(hop = ?e.hop_index(), error = %e, retry_in = ?backoff, "rtcp: bind failed");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(RTCP_MAX_BACKOFF);
            }
        }
    }
    info!(%listen, "rtcp forwarder stopped");
    Ok(())
}
