//! One KCP conversation driven by a tokio task: datagrams in (already decrypted), FEC
//! decode, the `kcp` crate's ARQ in stream mode, snappy framing, and a byte stream out (one
//! end of a duplex pipe, on which the smux session runs). Outgoing: the user's bytes, snappy,
//! KCP segments, FEC encode, crypt, UDP.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::{Duration, Instant};
use tracing::debug;

use super::crypt::{self, BlockCrypt};
use super::{fec, snappy, Config};

/// Received bytes we hold for the user before we stop taking data out of the ARQ (which then
/// shrinks the window we advertise: KCP's own back-pressure).
const USER_PENDING_MAX: usize = 256 * 1024;
/// Bytes read from the user per step. The kcp crate refuses a send of 128 segments or more.
const USER_READ: usize = 64 * 1024;
/// Duplex buffer between the session task and smux.
pub(crate) const PIPE: usize = 256 * 1024;

/// The `Write` the ARQ outputs into: each `write` is one KCP packet (the crate flushes a
/// packet's worth of segments per call).
#[derive(Clone, Default)]
struct Packets(Arc<Mutex<Vec<Vec<u8>>>>);

impl std::io::Write for Packets {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(buf.to_vec());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Where a session sends its datagrams.
pub(crate) struct Sender {
    /// The UDP socket (the listener's shared one, or the dialer's own).
    pub sock: Arc<UdpSocket>,
    /// The peer.
    pub peer: SocketAddr,
    /// The cipher.
    pub crypt: BlockCrypt,
}

struct Driver {
    arq: kcp::Kcp<Packets>,
    out: Packets,
    fec_enc: Option<fec::Encoder>,
    fec_dec: Option<fec::Decoder>,
    tx: Sender,
    start: Instant,
    cfg: Arc<Config>,
}

impl Driver {
    fn now(&self) -> u32 {
        self.start.elapsed().as_millis() as u32
    }

    /// One datagram's payload after the crypt header: FEC, then the ARQ.
    fn input(&mut self, payload: &[u8]) {
        if fec::is_fec(payload) {
            // kcp-go creates a 1/1 decoder when FEC arrives unconfigured; we just need one.
            let dec = self.fec_dec.get_or_insert_with(|| fec::Decoder::new(1, 1).expect("1/1 is a valid code"));
            match dec.decode(payload) {
                Ok(kcps) => {
                    for k in kcps {
                        self.input_kcp(&k);
                    }
                }
                Err(e) => debug!(peer = %self.tx.peer, "kcp: dropping FEC packet: {e}"),
            }
        } else {
            self.input_kcp(payload);
        }
    }

    fn input_kcp(&mut self, k: &[u8]) {
        match super::segment::validate(k) {
            Ok(h) if h.conv == self.arq.conv() => {
                if let Err(e) = self.arq.input(k) {
                    debug!(peer = %self.tx.peer, "kcp: segment refused: {e}");
                }
            }
            Ok(h) => debug!(peer = %self.tx.peer, conv = h.conv, "kcp: segment of another conversation dropped"),
            Err(e) => debug!(peer = %self.tx.peer, "kcp: bad segment dropped: {e}"),
        }
    }

    /// Sends everything the ARQ produced.
    async fn transmit(&mut self) -> std::io::Result<()> {
        let pkts = std::mem::take(&mut *self.out.0.lock().unwrap_or_else(|p| p.into_inner()));
        let mut datagrams = Vec::with_capacity(pkts.len() + 4);
        for p in pkts {
            match &mut self.fec_enc {
                Some(enc) => enc.encode(&p, crypt::HEADER_LEN, &mut datagrams),
                None => {
                    let mut d = vec![0u8; crypt::HEADER_LEN];
                    d.extend_from_slice(&p);
                    datagrams.push(d);
                }
            }
        }
        for mut d in datagrams {
            self.tx.crypt.seal(&mut d);
            if let Err(e) = self.tx.sock.send_to(&d, self.tx.peer).await {
                // A full socket buffer or a transient ICMP error: the ARQ resends.
                if e.kind() != std::io::ErrorKind::WouldBlock {
                    debug!(peer = %self.tx.peer, "kcp: send: {e}");
                }
            }
        }
        Ok(())
    }

    fn window_open(&self) -> bool {
        let w = self.arq.wait_snd();
        w < self.arq.snd_wnd() as usize && w < self.arq.rmt_wnd() as usize
    }
}

/// Runs one conversation until the peer goes silent, the user end closes and everything sent
/// was acknowledged, or the link is dead (too many retransmissions).
pub(crate) async fn run(conv: u32, cfg: Arc<Config>, tx: Sender, mut rx: mpsc::Receiver<Vec<u8>>, user: DuplexStream) {
    let out = Packets::default();
    let mut arq = kcp::Kcp::new_stream(conv, out.clone());
    let reserved = crypt::HEADER_LEN + if cfg.fec() { fec::DATA_HEADER_LEN } else { 0 };
    let _ = arq.set_mtu(cfg.mtu - reserved);
    arq.set_nodelay(cfg.nodelay, cfg.interval as i32, cfg.resend as i32, cfg.nc);
    arq.set_wndsize(cfg.sndwnd, cfg.rcvwnd);
    let (fec_enc, fec_dec) = if cfg.fec() {
        (fec::Encoder::new(cfg.datashard, cfg.parityshard).ok(), fec::Decoder::new(cfg.datashard, cfg.parityshard).ok())
    } else {
        (None, None)
    };
    let mut d = Driver { arq, out, fec_enc, fec_dec, tx, start: Instant::now(), cfg: cfg.clone() };
    let _ = d.arq.update(d.now());

    let (mut ur, mut uw) = tokio::io::split(user);
    let mut enc = snappy::Encoder::default();
    let mut dec = snappy::Decoder::default();
    let mut rbuf = vec![0u8; USER_READ];
    let mut kbuf = vec![0u8; 128 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut pos = 0usize;
    let mut user_eof = false;
    let mut user_gone = false;
    // The smux keepalive (NOP every few seconds) keeps a live peer talking; silence this
    // long means the peer is gone (smux itself gives up after its 30 s timeout).
    let idle = cfg.keepalive * 3 + Duration::from_secs(30);
    let mut last_rx = Instant::now();

    loop {
        let now = d.now();
        let wait = d.arq.check(now);
        let deadline = Instant::now() + Duration::from_millis(wait as u64);
        let can_read = !user_eof && d.window_open();
        tokio::select! {
            biased;
            pkt = rx.recv() => match pkt {
                Some(p) => {
                    last_rx = Instant::now();
                    let _ = d.arq.update(d.now());
                    d.input(&p);
                    while let Ok(p) = rx.try_recv() {
                        d.input(&p);
                    }
                    if d.cfg.acknodelay || d.arq.wait_snd() > 0 {
                        let _ = d.arq.flush();
                    }
                }
                None => break,
            },
            w = uw.write(&pending[pos..]), if pos < pending.len() && !user_gone => match w {
                Ok(n) if n > 0 => {
                    pos += n;
                    if pos == pending.len() {
                        pending.clear();
                        pos = 0;
                    }
                }
                _ => user_gone = true,
            },
            r = ur.read(&mut rbuf), if can_read => match r {
                Ok(0) | Err(_) => user_eof = true,
                Ok(n) => {
                    let _ = d.arq.update(d.now());
                    let framed;
                    let bytes: &[u8] = if d.cfg.nocomp { &rbuf[..n] } else { framed = enc.encode(&rbuf[..n]); &framed };
                    let step = d.arq.mss() * 100;
                    for chunk in bytes.chunks(step.max(1)) {
                        if let Err(e) = d.arq.send(chunk) {
                            debug!(peer = %d.tx.peer, "kcp: send refused: {e}");
                        }
                    }
                    let _ = d.arq.flush();
                }
            },
            _ = tokio::time::sleep_until(deadline) => {
                let _ = d.arq.update(d.now());
                if last_rx.elapsed() > idle {
                    debug!(peer = %d.tx.peer, "kcp: peer silent for {idle:?}, closing the session");
                    break;
                }
            }
        }
        // Move received bytes towards the user while our buffer has room.
        while pending.len() - pos < USER_PENDING_MAX {
            match d.arq.recv(&mut kbuf) {
                Ok(n) => {
                    if d.cfg.nocomp {
                        pending.extend_from_slice(&kbuf[..n]);
                    } else {
                        match dec.decode(&kbuf[..n]) {
                            Ok(plain) => pending.extend_from_slice(&plain),
                            Err(e) => {
                                debug!(peer = %d.tx.peer, "kcp: closing session: {e}");
                                return;
                            }
                        }
                    }
                }
                Err(_) => break,
            }
        }
        if d.transmit().await.is_err() {
            break;
        }
        if d.arq.is_dead_link() {
            debug!(peer = %d.tx.peer, "kcp: dead link (too many retransmissions)");
            break;
        }
        if (user_eof || user_gone) && d.arq.wait_snd() == 0 {
            break;
        }
    }
    let _ = uw.shutdown().await;
}
