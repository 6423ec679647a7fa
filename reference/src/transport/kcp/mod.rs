//! gost's `kcp` transport, wire-compatible with kcp-go v5 as gost and kcptun use it
//! (docs/kcp.md has every wire detail, including where the real peers differ from what their
//! documentation says).
//!
//! Stack, per direction: UDP datagram ⟵ [`crypt`] (nonce + CRC-32, AES-CFB by default) ⟵
//! [`fec`] (kcp-go's FEC header, Reed–Solomon parity groups) ⟵ KCP segments ([`segment`],
//! ARQ in stream mode) ⟵ [`snappy`] framing (unless `nocomp`) ⟵ smux ([`crate::smux`]) ⟵ one
//! stream per proxied connection. The dialer is the smux client (streams 3, 5, …), the
//! listener the smux server.
//!
//! Why partly hand-written: no Rust crate speaks kcp-go's wire. The crates checked:
//! `kcp` (an ikcp port: the ARQ only, no crypt header, no FEC, no session/listener; we use it
//! for the ARQ), `tokio_kcp` (tokio sessions over `kcp`, but its datagrams are bare ikcp: no
//! nonce+CRC32 crypt header, no FEC header or Reed–Solomon groups, its own conv handshake),
//! `kcp-rs`/`kcp-sys` (ARQ only). So the crypt header, the FEC header and grouping (with
//! `reed-solomon-erasure`, whose matrix is klauspost/reedsolomon's), the snappy adapter (over
//! `snap`'s frame coder), the session task, listener and dialer are ours.

pub mod config;
pub mod crypt;
pub mod fec;
pub mod segment;
mod session;
pub mod snappy;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::DuplexStream;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Mutex};
use tracing::debug;

pub use config::Config;
pub use crypt::{BlockCrypt, Cipher};

/// Bytes in front of the KCP segments of a data datagram: crypt header + FEC data header.
pub const HEADER_ROOM: usize = crypt::HEADER_LEN + fec::DATA_HEADER_LEN;
/// kcp-go's receive buffer: longer datagrams are truncated by it, so no peer sends them.
const MAX_DATAGRAM: usize = 1500;
/// Datagrams queued per session before we drop (UDP semantics; the ARQ resends).
const SESSION_QUEUE: usize = 1024;
/// Sessions waiting for [`Listener::accept`] streams.
const ACCEPT_BACKLOG: usize = 128;

/// A proxied connection over kcp: one smux stream.
pub type Stream = DuplexStream;

fn smux_config(cfg: &Config) -> crate::smux::Config {
    crate::smux::Config {
        version: cfg.smuxver,
        keepalive_interval: cfg.keepalive,
        keepalive_timeout: std::time::Duration::from_secs(30),
        max_frame: crate::proto::smux::MAX_FRAME_SIZE,
        max_stream_buffer: cfg.streambuf.min(u32::MAX as usize) as u32,
    }
}

fn tune_socket(sock: &UdpSocket, cfg: &Config) {
    let s = socket2::SockRef::from(sock);
    // Best effort, as gost (it only warns when these fail).
    if let Err(e) = s.set_recv_buffer_size(cfg.sockbuf) {
        debug!("kcp: SO_RCVBUF: {e}");
    }
    if let Err(e) = s.set_send_buffer_size(cfg.sockbuf) {
        debug!("kcp: SO_SNDBUF: {e}");
    }
    if cfg.dscp > 0 {
        let tos = u32::from(cfg.dscp) << 2;
        let r = if sock.local_addr().map(|a| a.is_ipv4()).unwrap_or(true) {
            s.set_tos_v4(tos)
        } else {
            s.set_tclass_v6(tos)
        };
        if let Err(e) = r {
            debug!("kcp: DSCP: {e}");
        }
    }
}

/// Starts a KCP session + smux over it; returns the smux session.
fn start_session(
    conv: u32,
    cfg: &Arc<Config>,
    sock: Arc<UdpSocket>,
    peer: SocketAddr,
    rx: mpsc::Receiver<Vec<u8>>,
    role: crate::smux::Role,
) -> crate::smux::Session {
    let (ours, theirs) = tokio::io::duplex(session::PIPE);
    let tx = session::Sender { sock, peer, crypt: BlockCrypt::new(cfg.crypt, &cfg.key) };
    tokio::spawn(session::run(conv, cfg.clone(), tx, rx, ours));
    crate::smux::Session::new(theirs, role, smux_config(cfg))
}

/// The conversation id and first sn of a datagram payload (after the crypt header), if it
/// names one: a data packet or bare KCP does, a parity packet does not.
fn conv_of(payload: &[u8]) -> Option<(u32, u32)> {
    let kcp = if fec::is_fec(payload) {
        if u16::from_le_bytes([payload[4], payload[5]]) != fec::TYPE_DATA || payload.len() < fec::DATA_HEADER_LEN {
            return None;
        }
        &payload[fec::DATA_HEADER_LEN..]
    } else {
        payload
    };
    segment::Header::decode(kcp).ok().map(|h| (h.conv, h.sn))
}

/// A kcp listener: one UDP socket, one KCP+smux session per peer address, streams out.
/// Dropping it stops taking datagrams; sessions already running then end on their own once
/// their peer is silent (they hold the socket until then, so their last bytes still go out).
#[derive(Debug)]
pub struct Listener {
    local: SocketAddr,
    accept: Mutex<mpsc::Receiver<(Stream, SocketAddr)>>,
    task: tokio::task::AbortHandle,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener {
    /// Binds the UDP socket and starts serving.
    pub async fn bind(addr: SocketAddr, cfg: &Config) -> std::io::Result<Self> {
        let sock = Arc::new(UdpSocket::bind(addr).await?);
        tune_socket(&sock, cfg);
        let local = sock.local_addr()?;
        let (accept_tx, accept_rx) = mpsc::channel(ACCEPT_BACKLOG);
        let task = tokio::spawn(serve(sock, Arc::new(cfg.clone()), accept_tx)).abort_handle();
        Ok(Self { local, accept: Mutex::new(accept_rx), task })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The next stream a peer opened, with the peer's UDP address.
    pub async fn accept(&self) -> std::io::Result<(Stream, SocketAddr)> {
        self.accept
            .lock()
            .await
            .recv()
            .await
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "kcp listener stopped"))
    }
}

struct Peer {
    conv: u32,
    tx: mpsc::Sender<Vec<u8>>,
}

async fn serve(sock: Arc<UdpSocket>, cfg: Arc<Config>, accept_tx: mpsc::Sender<(Stream, SocketAddr)>) {
    let crypt = BlockCrypt::new(cfg.crypt, &cfg.key);
    let mut peers: HashMap<SocketAddr, Peer> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(v) => v,
            Err(e) => {
                // ICMP port unreachable from a vanished peer surfaces here on Linux.
                debug!("kcp listener: recv: {e}");
                continue;
            }
        };
        let d = &mut buf[..n.min(MAX_DATAGRAM)];
        if let Err(e) = crypt.open(d) {
            debug!(peer = %from, "kcp: datagram dropped: {e}");
            continue;
        }
        let payload = &d[crypt::HEADER_LEN..];
        if payload.len() < segment::HEADER_LEN {
            debug!(peer = %from, "kcp: datagram dropped: {} bytes after the crypt header", payload.len());
            continue;
        }
        let named = conv_of(payload);
        if let Some(p) = peers.get(&from) {
            let same = named.is_none_or(|(conv, _)| conv == p.conv);
            if same {
                if p.tx.try_send(payload.to_vec()).is_ok() {
                    continue;
                }
                if !p.tx.is_closed() {
                    continue; // queue full: drop, the ARQ resends
                }
                peers.remove(&from);
            } else if named.is_some_and(|(_, sn)| sn == 0) {
                // kcp-go: a new conversation from the same address replaces the old one.
                debug!(peer = %from, "kcp: new conversation replaces the old one");
                peers.remove(&from);
            } else {
                debug!(peer = %from, "kcp: datagram of a stale conversation dropped");
                continue;
            }
        }
        let Some((conv, _)) = named else { continue };
        if accept_tx.capacity() == 0 {
            debug!(peer = %from, "kcp: accept backlog full, new session refused");
            continue;
        }
        // Forget sessions that have ended, so the map does not grow with past peers.
        peers.retain(|_, p| !p.tx.is_closed());
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let _ = tx.try_send(payload.to_vec());
        debug!(peer = %from, conv, "kcp: new session");
        let smux = start_session(conv, &cfg, sock.clone(), from, rx, crate::smux::Role::Server);
        peers.insert(from, Peer { conv, tx });
        let accept_tx = accept_tx.clone();
        tokio::spawn(async move {
            while let Some(s) = smux.accept().await {
                if accept_tx.send((s, from)).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// A kcp dialer: one KCP+smux session to `addr`, shared by every stream it opens, recreated
/// when it has ended (gost's dialer keeps one session per server address the same way).
#[derive(Debug)]
pub struct Dialer {
    addr: SocketAddr,
    cfg: Arc<Config>,
    session: Mutex<Option<Arc<crate::smux::Session>>>,
    /// The UDP socket's address of the newest session (SOCKS replies and logs want a local
    /// address; with a connected socket it names the interface the kernel chose).
    local: std::sync::Mutex<Option<SocketAddr>>,
}

impl Dialer {
    /// A dialer for `addr`; nothing is sent until [`Dialer::open`].
    pub fn new(addr: SocketAddr, cfg: &Config) -> Self {
        Self { addr, cfg: Arc::new(cfg.clone()), session: Mutex::new(None), local: std::sync::Mutex::new(None) }
    }

    /// The server address this dialer talks to.
    pub fn peer_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The local UDP address of the newest session, once one has started.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        *self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn connect(&self) -> std::io::Result<crate::smux::Session> {
        let bind: SocketAddr = if self.addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
        let sock = Arc::new(UdpSocket::bind(bind).await?);
        sock.connect(self.addr).await?;
        tune_socket(&sock, &self.cfg);
        *self.local.lock().unwrap_or_else(|p| p.into_inner()) = sock.local_addr().ok();
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let reader_sock = sock.clone();
        let crypt = BlockCrypt::new(self.cfg.crypt, &self.cfg.key);
        let peer = self.addr;
        // The reader ends when the session task has dropped its receiver.
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                let n = match reader_sock.recv(&mut buf).await {
                    Ok(n) => n,
                    Err(e) => {
                        debug!(%peer, "kcp dialer: recv: {e}");
                        if tx.is_closed() {
                            return;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let d = &mut buf[..n.min(MAX_DATAGRAM)];
                if let Err(e) = crypt.open(d) {
                    debug!(%peer, "kcp: datagram dropped: {e}");
                    continue;
                }
                match tx.try_send(d[crypt::HEADER_LEN..].to_vec()) {
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                    _ => continue,
                }
            }
        });
        let conv: u32 = rand::random();
        Ok(start_session(conv, &self.cfg, sock, self.addr, rx, crate::smux::Role::Client))
    }

    /// Opens a stream, starting (or restarting) the session first when needed.
    pub async fn open(&self) -> std::io::Result<Stream> {
        let mut slot = self.session.lock().await;
        if let Some(s) = slot.as_ref() {
            if !s.is_closed() {
                if let Ok(st) = s.open().await {
                    return Ok(st);
                }
            }
        }
        let s = Arc::new(self.connect().await?);
        let st = s.open().await?;
        *slot = Some(s);
        Ok(st)
    }
}

/// A [`Dialer`] for `addr` with its session already started (a stream opened on it and closed
/// again, so the first [`Dialer::open`] does not wait for the KCP handshake-free start either).
pub async fn dial(addr: SocketAddr, cfg: &Config) -> std::io::Result<Dialer> {
    let d = Dialer::new(addr, cfg);
    let mut slot = d.session.lock().await;
    *slot = Some(Arc::new(d.connect().await?));
    drop(slot);
    Ok(d)
}
