//! An smux session over any byte stream, wire-compatible with xtaci/smux v1.5.31 (v1 and v2) as
//! gost uses it for MBIND (docs/gost.md §5). Frames come from [`crate::proto::smux`].
//!
//! Each stream is handed out as one end of a [`tokio::io::DuplexStream`]; a small task per
//! stream turns what the user writes into PSH frames (at most `max_frame` bytes each) and a FIN
//! when the user drops or shuts down its end. Incoming PSH payloads are written into the duplex;
//! a full duplex buffer stops the session's reader, which is smux v1's own back-pressure (it
//! stops reading the socket while its receive buffer is full). In v2 we also send UPD frames and
//! respect the peer's window.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::debug;

use crate::proto::smux::{Cmd, Frame, HEADER_LEN, VERSION_1, VERSION_2};
use crate::proto::DecodeError;

/// Session settings; [`Config::default`] is xtaci's and gost's (§5.5, MBIND row).
#[derive(Debug, Clone)]
pub struct Config {
    /// 1 or 2; both ends must agree.
    pub version: u8,
    /// NOP every this long (xtaci: 10 s).
    pub keepalive_interval: Duration,
    /// The session dies when nothing at all arrived for this long (xtaci: 30 s).
    pub keepalive_timeout: Duration,
    /// Largest PSH payload we send (xtaci: 32768).
    pub max_frame: usize,
    /// Per-stream receive buffer, and the window advertised in v2 (gost MBIND: 65536).
    pub max_stream_buffer: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            version: VERSION_1,
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(30),
            max_frame: crate::proto::smux::MAX_FRAME_SIZE,
            max_stream_buffer: 65_536,
        }
    }
}

/// Which side of the session we are: the client opens odd stream ids (3, 5, …), the server even
/// ones (2, 4, …), as xtaci's session does (§5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// smux client (gost's MBIND: the SOCKS *server*).
    Client,
    /// smux server (gost's MBIND: the SOCKS *client*).
    Server,
}

/// xtaci's initial assumption of the peer's window in v2.
const INITIAL_PEER_WINDOW: u32 = 262_144;
/// Streams waiting in the accept queue; more SYNs are answered with FIN.
const ACCEPT_BACKLOG: usize = 1024;

/// The session's side of one stream.
struct Entry {
    /// Where incoming PSH payloads go (behind an async lock: written outside the map lock).
    to_user: Arc<tokio::sync::Mutex<WriteHalf<DuplexStream>>>,
    /// The task turning the user's writes into frames; aborted on FIN.
    pump: tokio::task::AbortHandle,
    /// v2: (peer consumed, peer window), for the pump's flow control.
    peer: watch::Sender<(u32, u32)>,
    /// v2: bytes handed to the user so far, and at the last UPD we sent.
    consumed: u32,
    last_upd: u32,
}

struct Shared {
    config: Config,
    streams: Mutex<HashMap<u32, Entry>>,
    out: mpsc::Sender<Vec<u8>>,
    next_id: AtomicU32,
}

impl Shared {
    fn frame(&self, cmd: Cmd, sid: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(HEADER_LEN + payload.len());
        // Payloads are at most max_frame (≤ 65535) or 8 bytes, so encoding cannot fail; an
        // empty frame would be dropped by the peer's reader only if malformed, never here.
        let _ = Frame::encode(self.config.version, cmd, sid, payload, &mut f);
        f
    }

    /// Registers a stream and starts its pump; returns the user's end.
    fn add_stream(self: &Arc<Self>, sid: u32) -> DuplexStream {
        let buffer = self.config.max_stream_buffer as usize;
        let (user, ours) = tokio::io::duplex(buffer.max(4096));
        let (from_user, to_user) = tokio::io::split(ours);
        let (peer_tx, peer_rx) = watch::channel((0u32, INITIAL_PEER_WINDOW));
        let pump = tokio::spawn(pump(self.clone(), sid, from_user, peer_rx)).abort_handle();
        let entry = Entry {
            to_user: Arc::new(tokio::sync::Mutex::new(to_user)),
            pump,
            peer: peer_tx,
            consumed: 0,
            last_upd: 0,
        };
        self.streams.lock().unwrap_or_else(|p| p.into_inner()).insert(sid, entry);
        user
    }

    fn remove(&self, sid: u32) {
        if let Some(e) = self.streams.lock().unwrap_or_else(|p| p.into_inner()).remove(&sid) {
            e.pump.abort();
        }
    }
}

/// Reads what the user writes to its end and sends it as PSH frames; FIN at the end.
async fn pump(
    shared: Arc<Shared>,
    sid: u32,
    mut from_user: ReadHalf<DuplexStream>,
    mut peer: watch::Receiver<(u32, u32)>,
) {
    let mut buf = vec![0u8; shared.config.max_frame];
    let mut written: u32 = 0;
    loop {
        if shared.config.version >= VERSION_2 {
            // v2: never have more than the peer's window in flight (§5.4).
            loop {
                let (consumed, window) = *peer.borrow_and_update();
                if written.wrapping_sub(consumed) < window {
                    break;
                }
                if peer.changed().await.is_err() {
                    return;
                }
            }
        }
        let n = match from_user.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        written = written.wrapping_add(n as u32);
        if shared.out.send(shared.frame(Cmd::Psh, sid, &buf[..n])).await.is_err() {
            return;
        }
    }
    let _ = shared.out.send(shared.frame(Cmd::Fin, sid, b"")).await;
    shared.streams.lock().unwrap_or_else(|p| p.into_inner()).remove(&sid);
}

/// A running session. Dropping it does not stop the session; it ends when the underlying
/// stream fails or the keepalive timeout passes, or when [`Session::close`] is called.
pub struct Session {
    shared: Arc<Shared>,
    accept: tokio::sync::Mutex<mpsc::Receiver<DuplexStream>>,
    driver: tokio::task::AbortHandle,
    done: watch::Receiver<bool>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("version", &self.shared.config.version).finish()
    }
}

impl Session {
    /// Starts a session over `io` (raw TCP, TLS, …).
    pub fn new<S>(io: S, role: Role, config: Config) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>(256);
        let first = match role {
            Role::Client => 1,
            Role::Server => 0,
        };
        let shared = Arc::new(Shared {
            config,
            streams: Mutex::new(HashMap::new()),
            out: out_tx,
            next_id: AtomicU32::new(first),
        });
        let (accept_tx, accept_rx) = mpsc::channel(ACCEPT_BACKLOG);
        let (done_tx, done_rx) = watch::channel(false);
        let driver = tokio::spawn(drive(shared.clone(), io, out_rx, accept_tx, done_tx)).abort_handle();
        Self { shared, accept: tokio::sync::Mutex::new(accept_rx), driver, done: done_rx }
    }

    /// Opens a stream (SYN) and returns its end.
    pub async fn open(&self) -> std::io::Result<DuplexStream> {
        // xtaci adds 2 before use: client 3, 5, …; server 2, 4, … (§5.2).
        let sid = self.shared.next_id.fetch_add(2, Ordering::Relaxed).wrapping_add(2);
        // Registered before the SYN goes out, so an immediate answer is not discarded.
        let user = self.shared.add_stream(sid);
        let syn = self.shared.frame(Cmd::Syn, sid, b"");
        if self.shared.out.send(syn).await.is_err() {
            self.shared.remove(sid);
            return Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        }
        Ok(user)
    }

    /// Opens a stream whose first bytes are `first`, sent as a PSH frame of their own before
    /// anything the user writes: gost's MBIND per-stream reply must not share a frame with
    /// data, since gost's reply reader over-reads (docs/gost.md §4.5, §8.1).
    pub async fn open_with(&self, first: &[u8]) -> std::io::Result<DuplexStream> {
        let sid = self.shared.next_id.fetch_add(2, Ordering::Relaxed).wrapping_add(2);
        let user = self.shared.add_stream(sid);
        let syn = self.shared.frame(Cmd::Syn, sid, b"");
        let psh = self.shared.frame(Cmd::Psh, sid, first);
        if self.shared.out.send(syn).await.is_err() || self.shared.out.send(psh).await.is_err() {
            self.shared.remove(sid);
            return Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        }
        Ok(user)
    }

    /// The next stream the peer opened; `None` once the session has ended.
    pub async fn accept(&self) -> Option<DuplexStream> {
        self.accept.lock().await.recv().await
    }

    /// Completes when the session has ended.
    pub async fn closed(&self) {
        let mut done = self.done.clone();
        let _ = done.wait_for(|d| *d).await;
    }

    /// Whether the session has ended (a dialer then starts a new one instead of opening a stream).
    pub fn is_closed(&self) -> bool {
        // The driver sends `true` when it ends; an aborted driver drops the sender instead.
        *self.done.borrow() || self.done.has_changed().is_err()
    }

    /// Ends the session now: every stream sees EOF.
    pub fn close(&self) {
        self.driver.abort();
        let streams = std::mem::take(&mut *self.shared.streams.lock().unwrap_or_else(|p| p.into_inner()));
        for (_, e) in streams {
            e.pump.abort();
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}

/// Reads frames, writes queued frames and keepalives, until the stream fails or goes silent.
async fn drive<S>(
    shared: Arc<Shared>,
    io: S,
    mut out_rx: mpsc::Receiver<Vec<u8>>,
    accept_tx: mpsc::Sender<DuplexStream>,
    done: watch::Sender<bool>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let interval = shared.config.keepalive_interval;
    let nop = shared.frame(Cmd::Nop, 0, b"");
    let writer = async move {
        let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
        loop {
            let frame = tokio::select! {
                f = out_rx.recv() => match f { Some(f) => f, None => return },
                _ = tick.tick() => nop.clone(),
            };
            // One write per frame, flushed: over TLS each frame is its own record (§8.1).
            if wr.write_all(&frame).await.is_err() || wr.flush().await.is_err() {
                return;
            }
        }
    };
    let reader = read_frames(&shared, &mut rd, &accept_tx);
    tokio::select! {
        () = writer => debug!("smux: writer ended"),
        () = reader => debug!("smux: reader ended"),
    }
    let streams = std::mem::take(&mut *shared.streams.lock().unwrap_or_else(|p| p.into_inner()));
    for (_, e) in streams {
        e.pump.abort();
    }
    let _ = done.send(true);
}

async fn read_frames<R: AsyncRead + Unpin>(shared: &Arc<Shared>, rd: &mut R, accept_tx: &mpsc::Sender<DuplexStream>) {
    let cfg = &shared.config;
    let mut buf: Vec<u8> = Vec::with_capacity(2 * (HEADER_LEN + 65_535));
    let mut chunk = vec![0u8; 64 * 1024];
    let mut last_seen = Instant::now();
    loop {
        // Handle every complete frame buffered.
        let mut used = 0;
        loop {
            let (frame, n) = match Frame::decode(&buf[used..], cfg.version) {
                Ok(v) => v,
                Err(DecodeError::Incomplete) => break,
                Err(DecodeError::Invalid(e)) => {
                    debug!(error = %e, "smux: invalid frame; ending the session");
                    return;
                }
            };
            let (cmd, sid) = (frame.cmd, frame.sid);
            let upd = frame.upd_values();
            let payload = frame.payload.to_vec();
            used += n;
            match cmd {
                Cmd::Nop => {}
                Cmd::Syn => {
                    let known = shared.streams.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&sid);
                    if !known {
                        let user = shared.add_stream(sid);
                        if accept_tx.try_send(user).is_err() {
                            shared.remove(sid);
                            let _ = shared.out.send(shared.frame(Cmd::Fin, sid, b"")).await;
                        }
                    }
                }
                Cmd::Fin => shared.remove(sid), // full close: EOF for reads, errors for writes
                Cmd::Upd => {
                    if let (Some(v), Some(e)) =
                        (upd, shared.streams.lock().unwrap_or_else(|p| p.into_inner()).get(&sid))
                    {
                        let _ = e.peer.send(v);
                    }
                }
                Cmd::Psh => {
                    let target =
                        shared.streams.lock().unwrap_or_else(|p| p.into_inner()).get(&sid).map(|e| e.to_user.clone());
                    // Unknown or closed stream: xtaci discards the payload too.
                    let Some(to_user) = target else { continue };
                    if to_user.lock().await.write_all(&payload).await.is_err() {
                        continue; // the user dropped its end; its pump sends the FIN
                    }
                    if cfg.version >= VERSION_2 {
                        send_upd_if_due(shared, sid, payload.len() as u32).await;
                    }
                }
            }
        }
        buf.drain(..used);
        let deadline = last_seen + cfg.keepalive_timeout;
        let n = tokio::select! {
            r = rd.read(&mut chunk) => match r { Ok(0) | Err(_) => return, Ok(n) => n },
            () = tokio::time::sleep_until(deadline) => {
                debug!("smux: keepalive timeout");
                return;
            }
        };
        last_seen = Instant::now();
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// v2: tell the peer what we consumed once half the window has been used since the last UPD.
async fn send_upd_if_due(shared: &Arc<Shared>, sid: u32, n: u32) {
    let window = shared.config.max_stream_buffer;
    let due = {
        let mut map = shared.streams.lock().unwrap_or_else(|p| p.into_inner());
        let Some(e) = map.get_mut(&sid) else { return };
        e.consumed = e.consumed.wrapping_add(n);
        if e.consumed.wrapping_sub(e.last_upd) >= window / 2 {
            e.last_upd = e.consumed;
            Some(e.consumed)
        } else {
            None
        }
    };
    if let Some(consumed) = due {
        let _ = shared.out.send(shared.frame(Cmd::Upd, sid, &Frame::upd_payload(consumed, window))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair(version: u8) -> (Session, Session) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let cfg = Config { version, ..Config::default() };
        (Session::new(a, Role::Client, cfg.clone()), Session::new(b, Role::Server, cfg))
    }

    #[tokio::test]
    async fn streams_carry_data_both_ways_in_v1_and_v2() {
        for version in [VERSION_1, VERSION_2] {
            let (client, server) = pair(version).await;
            let mut a = client.open().await.unwrap();
            let mut b = server.accept().await.unwrap();
            // More than the v2 window, so UPD frames must flow for this to finish.
            let data: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
            let d2 = data.clone();
            let w = tokio::spawn(async move {
                a.write_all(&d2).await.unwrap();
                a.shutdown().await.unwrap();
                a
            });
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, data, "v{version}");
            let _a = w.await.unwrap();
        }
    }

    #[tokio::test]
    async fn keepalive_timeout_ends_a_silent_session() {
        let (a, _b) = tokio::io::duplex(1024);
        let cfg = Config { keepalive_timeout: Duration::from_millis(200), ..Config::default() };
        let s = Session::new(a, Role::Server, cfg);
        tokio::time::timeout(Duration::from_secs(3), s.closed()).await.unwrap();
    }
}
