//! The tokio server: a thin driver around [`crate::proto::server::ServerHandshake`].
//!
//! [`serve`] takes an already-bound listener and a shutdown future, so tests bind port 0 and
//! stop the server when they are done. Each connection runs the handshake under one deadline
//! then hands the request to `connect`, `bind` or `udp`.

mod bind;
mod connect;
mod mbind;
mod resolve;
mod udp;
mod udp_tun;

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info};

use crate::policy::Transport;
pub use crate::policy::{Credential, ServerConfig, Stats, Wiring};
use crate::proto::server::{HandshakeConfig, ProxyRequest, ServerEvent, ServerHandshake};
use crate::proto::{encode_reply, Address, Command, Reply};
use crate::tls::Stream;

/// What every connection handler shares.
pub(crate) struct Shared {
    pub config: ServerConfig,
}

/// A connection whose handshake is done, as every command handler receives it: built once by
/// the dispatcher, so the handlers share one entry signature.
pub(crate) struct Accepted<'a> {
    /// The client's stream, after the SOCKS handshake (and gost's method-level TLS, if any).
    pub stream: Stream,
    /// Where the client connects from.
    pub peer: SocketAddr,
    /// The request, kept by the dispatcher for its closing log line.
    pub request: &'a ProxyRequest,
    /// Bytes the client sent after its request, before any reply (read with the request).
    pub early: Vec<u8>,
    /// The server's configuration.
    pub shared: &'a Shared,
}

/// Connections still in the handshake, oldest first, each with the means to close it and how
/// far it has come.
#[derive(Default)]
struct Handshaking {
    next_id: u64,
    open: BTreeMap<u64, (oneshot::Sender<()>, Arc<AtomicU8>)>,
}

/// How far a handshake has come, for choosing whom to shed ([`enter_handshake`]).
mod progress {
    /// The server has not yet waited on this connection: it has not had its turn.
    pub const UNREAD: u8 = 0;
    /// The server waited for the client with not one complete message handled: how an idler or
    /// a slowloris client looks all its life.
    pub const STALLED: u8 = 1;
    /// At least one complete message (a greeting, a login) handled.
    pub const MESSAGE: u8 = 2;
}

/// A connection's place among the handshaking ones; dropping it (handshake over) leaves.
struct HandshakeSlot {
    id: u64,
    all: Arc<Mutex<Handshaking>>,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.all.lock().unwrap_or_else(|e| e.into_inner()).open.remove(&self.id);
    }
}

/// Enters a new connection among the handshaking ones. When `cap` are already handshaking, one
/// is told to close first: the oldest the server has waited on without a complete
/// message (an idler or a slowloris client, all its life), else the oldest it has not had its
/// turn with yet, else the oldest. Oldest alone is not enough against an attacker that
/// reconnects at once when shed: on a loaded machine a real client whose greeting has not been
/// read yet, or who is one round trip from its request, becomes the oldest after `cap` such
/// reconnects and was shed.
///
/// Returns the slot, the shed signal and the progress marker the handshake updates.
fn enter_handshake(
    all: &Arc<Mutex<Handshaking>>,
    cap: usize,
    stats: &Stats,
) -> (HandshakeSlot, oneshot::Receiver<()>, Arc<AtomicU8>) {
    let mut hs = all.lock().unwrap_or_else(|e| e.into_inner());
    while hs.open.len() >= cap {
        let at = |level: u8| {
            move |(id, (_, p)): (&u64, &(oneshot::Sender<()>, Arc<AtomicU8>))| {
                (p.load(Ordering::Relaxed) == level).then_some(*id)
            }
        };
        let victim = hs
            .open
            .iter()
            .find_map(at(progress::STALLED))
            .or_else(|| hs.open.iter().find_map(at(progress::UNREAD)))
            .or_else(|| hs.open.keys().next().copied());
        let Some((shed, _)) = victim.and_then(|id| hs.open.remove(&id)) else { break };
        let _ = shed.send(());
        Stats::bump(&stats.handshakes_shed);
    }
    let id = hs.next_id;
    hs.next_id += 1;
    let (tx, rx) = oneshot::channel();
    let marker = Arc::new(AtomicU8::new(progress::UNREAD));
    hs.open.insert(id, (tx, marker.clone()));
    (HandshakeSlot { id, all: all.clone() }, rx, marker)
}

/// Serves SOCKS on `listener` until `shutdown` completes; then stops accepting and aborts the
/// connections still open. The listener is recorded in `config.wiring.local_listeners` while it serves,
/// so that no service of the process can be asked to connect to it (V-22).
pub async fn serve(listener: TcpListener, config: ServerConfig, shutdown: impl Future<Output = ()>) -> io::Result<()> {
    serve_on(crate::transport::Listener::tcp(listener)?, config, shutdown).await
}

/// [`serve`] over any transport (docs/transports.md): each accepted conversation runs the
/// transport's handshake (TLS, WebSocket upgrade) inside the SOCKS handshake deadline, in its
/// own task, then the same SOCKS handling as plain TCP.
pub async fn serve_on(
    mut listener: crate::transport::Listener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let local = listener.local_addr();
    let transport = listener.kind();
    // A kcp listener is a UDP socket: that is the port a loop would come back to.
    let proto = if transport.is_udp() { Transport::Udp } else { Transport::Tcp };
    let _record = config.wiring.local_listeners.register(proto, local);
    let shared = Arc::new(Shared { config });
    let permits = Arc::new(Semaphore::new(shared.config.max_connections));
    let handshake_cap = shared.config.handshake_cap();
    let handshaking = Arc::new(Mutex::new(Handshaking::default()));
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    info!(%local, %transport, max_conns = shared.config.max_connections, max_handshakes = handshake_cap, "socks server listening");
    loop {
        // Reap finished tasks so the set does not grow with the number of past connections.
        while tasks.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            // EMFILE and friends back off there instead of spinning (R-87, V-19).
            v = listener.accept_retrying() => v,
        };
        Stats::bump(&shared.config.wiring.stats.accepted);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            Stats::bump(&shared.config.wiring.stats.over_cap);
            debug!(%peer, "connection cap reached; closing");
            continue; // dropping the stream closes it at once
        };
        let (slot, shed, marker) = enter_handshake(&handshaking, handshake_cap, &shared.config.wiring.stats);
        let shared = shared.clone();
        tasks.spawn(async move {
            let _permit = permit;
            handle(stream, peer, shared, (slot, shed, marker)).await;
        });
    }
    tasks.abort_all();
    info!(%local, "socks server stopped");
    Ok(())
}

/// The outcome of a handshake: the request and any bytes the client sent after it.
struct Handshaken {
    request: ProxyRequest,
    early: Vec<u8>,
}

async fn handle(
    incoming: crate::transport::Incoming,
    peer: SocketAddr,
    shared: Arc<Shared>,
    (slot, shed, marker): (HandshakeSlot, oneshot::Receiver<()>, Arc<AtomicU8>),
) {
    let cfg = &shared.config;
    // The deadline covers the transport's handshake (TLS, WebSocket upgrade) and gost's
    // method-level TLS handshake too (gost's TLS methods 80/82).
    let establish_and_handshake = async {
        let stream = match incoming.establish().await {
            Ok(s) => s,
            Err(e) => {
                debug!(%peer, error = %e, "transport handshake failed");
                return Err(e);
            }
        };
        handshake(stream, cfg, &marker).await
    };
    let deadline = tokio::time::timeout(cfg.handshake_timeout, Box::pin(establish_and_handshake));
    let hs = tokio::select! {
        r = deadline => r,
        // Shed to make room for a newer connection: close without a reply, as on the deadline.
        Ok(()) = shed => {
            Stats::bump(&cfg.wiring.stats.handshake_failures);
            debug!(%peer, "closed while handshaking: handshake cap reached");
            return;
        }
    };
    drop(slot);
    let (stream, Handshaken { request, early }) = match hs {
        Ok(Ok((stream, Some(h)))) => (stream, h),
        Ok(Ok((stream, None))) => {
            Stats::bump(&cfg.wiring.stats.handshake_failures);
            return linger_close(stream).await;
        }
        Ok(Err(e)) => {
            Stats::bump(&cfg.wiring.stats.handshake_failures);
            debug!(%peer, error = %e, "handshake i/o error");
            return;
        }
        Err(_) => {
            // never a partial reply; just close.
            Stats::bump(&cfg.wiring.stats.handshake_failures);
            debug!(%peer, "handshake deadline passed");
            return;
        }
    };
    let user = request.user.as_ref().map(|u| u.escape_ascii().to_string()).unwrap_or_default();
    debug!(%peer, version = %request.version, command = %request.command, target = %request.target, %user, "request");
    // Boxed so each connection's task is sized for the command it runs, not for the largest
    // (UDP and BIND keep more state than CONNECT); idle tunnels are the common case.
    let accepted = Accepted { stream, peer, request: &request, early, shared: &shared };
    let result = match request.command {
        Command::CONNECT => Box::pin(connect::run(accepted)).await,
        Command::BIND if cfg.allow_bind => Box::pin(bind::run(accepted)).await,
        Command::UDP_ASSOCIATE if cfg.allow_udp => Box::pin(udp::run(accepted)).await,
        // gost's UDP-TUN (docs/gost.md §4.7) exists only where UDP or BIND is enabled;
        // the mode's own gate (relay: udp, bind: bind) answers 02 inside, as gost does.
        // gost's MBIND (docs/gost.md §4.5) shares BIND's switch, as in gost.
        Command::MUX_BIND if request.version == crate::proto::Version::V5 && cfg.allow_bind => {
            Box::pin(mbind::run(accepted)).await
        }
        Command::UDP_TUN if request.version == crate::proto::Version::V5 && (cfg.allow_udp || cfg.allow_bind) => {
            Box::pin(udp_tun::run(accepted)).await
        }
        _ => {
            // Unknown, disabled and extension commands alike: REP 07, never reinterpreted (R-25, V-27).
            fail(accepted.stream, &request, Reply::COMMAND_NOT_SUPPORTED).await
        }
    };
    if let Err(e) = result {
        debug!(%peer, target = %request.target, error = %e, "session ended with error");
    }
}

/// Runs the handshake machine over `stream` and returns the stream the connection continues on
/// (TLS-wrapped when gost's method `80`/`82` was selected). `None` means it failed and any reply
/// the protocol calls for has been written.
async fn handshake(
    mut stream: Stream,
    cfg: &ServerConfig,
    marker: &AtomicU8,
) -> io::Result<(Stream, Option<Handshaken>)> {
    let mut hs = ServerHandshake::new(HandshakeConfig {
        socks4: cfg.socks4,
        socks5: cfg.socks5,
        methods: cfg.methods(),
        max_field: crate::proto::v4::DEFAULT_MAX_FIELD,
        socks4_userid_check: cfg.checks_socks4_userid(),
    });
    // Handshake messages are bounded, and the machine consumes every complete one, so
    // this buffer never holds more than one partial message plus one read of early data.
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let used = hs.handle_input(&buf);
        buf.drain(..used);
        if used > 0 {
            marker.store(progress::MESSAGE, Ordering::Relaxed);
        }
        let mut progressed = used > 0;
        while let Some(event) = hs.poll_event() {
            progressed = true;
            match event {
                ServerEvent::Authenticate(req) => {
                    let ok = cfg.check_credentials(&req.user, &req.pass);
                    if !ok {
                        Stats::bump(&cfg.wiring.stats.auth_failures);
                        info!(user = %req.user.escape_ascii(), "authentication failed");
                    }
                    hs.auth_result(ok);
                }
                ServerEvent::CheckUserid(userid) => {
                    let ok = cfg.check_socks4_userid(&userid);
                    if !ok {
                        Stats::bump(&cfg.wiring.stats.auth_failures);
                        info!(userid = %userid.escape_ascii(), "SOCKS4 USERID not accepted");
                    }
                    hs.userid_result(ok);
                }
                ServerEvent::MethodSelected(method) => {
                    // gost's 80/82 (docs/gost.md §3.4): the selection goes out in clear,
                    // then TLS starts on the same connection with the client as TLS client.
                    if let Some(out) = hs.poll_transmit() {
                        stream.write_all(&out).await?;
                        stream.flush().await?;
                    }
                    let Some(tls) = cfg.wiring.tls.clone() else {
                        // Methods come from the configuration, which lists 80/82 only with a
                        // TLS config; anything else cannot be set up.
                        return Ok((stream, None));
                    };
                    if !buf.is_empty() {
                        // The client sent bytes before reading our selection: it cannot have
                        // known TLS would follow, so these are not a ClientHello we could hand
                        // to the TLS layer. Refuse rather than guess.
                        debug!(%method, "bytes pipelined before the TLS method was selected");
                        return Ok((stream, None));
                    }
                    stream = stream.accept_tls(tls).await?;
                    hs.method_ready();
                }
                ServerEvent::Request(request) => {
                    if let Some(out) = hs.poll_transmit() {
                        stream.write_all(&out).await?;
                    }
                    return Ok((stream, Some(Handshaken { request, early: std::mem::take(&mut buf) })));
                }
                ServerEvent::Failed(why) => {
                    debug!(reason = %why, "handshake failed");
                    if let Some(out) = hs.poll_transmit() {
                        stream.write_all(&out).await?;
                        // Over TLS the bytes (e.g. `01 01` for a bad password inside 82) sit in
                        // the TLS layer until flushed.
                        stream.flush().await?;
                    }
                    return Ok((stream, None));
                }
            }
        }
        if let Some(out) = hs.poll_transmit() {
            stream.write_all(&out).await?;
        }
        // An event may have unblocked the machine (e.g. authentication succeeded) while the
        // next message is already buffered: offer it before reading more.
        if progressed && !buf.is_empty() {
            continue;
        }
        stream.flush().await?;
        // Waiting for the client with no complete message yet: the first to shed (see
        // `enter_handshake`); a handled message lifts it out of that for good.
        let _ = marker.compare_exchange(progress::UNREAD, progress::STALLED, Ordering::Relaxed, Ordering::Relaxed);
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok((stream, None)); // EOF mid-handshake
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Ends a request with a failure reply in its protocol, then closes as D-13 says. Every
/// handler's refusal goes through here, so no path can reply and keep the connection open.
pub(crate) async fn fail(mut stream: Stream, request: &ProxyRequest, reply: Reply) -> io::Result<()> {
    let _ = stream.write_all(&encode_reply(request.version, reply, &Address::UNSPECIFIED)).await;
    linger_close(stream).await;
    Ok(())
}

/// After a failure: flush, half-close, and close within a second (D-13), discarding whatever the
/// client still sends.
pub(crate) async fn linger_close(mut stream: Stream) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// The BND a success reply carries: the socket's address, or zeros when hidden.
pub(crate) fn bnd(cfg: &ServerConfig, addr: SocketAddr) -> Address {
    if cfg.hide_bnd {
        Address::UNSPECIFIED
    } else {
        Address::from(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fills a cap of 3 with connections at the given progress levels, oldest first, then adds
    /// one more: returns which of the first three was told to close.
    fn shed_among(levels: [u8; 3]) -> usize {
        let all = Arc::new(Mutex::new(Handshaking::default()));
        let stats = Stats::default();
        let mut held = Vec::new();
        for level in levels {
            let (slot, rx, marker) = enter_handshake(&all, 3, &stats);
            marker.store(level, Ordering::Relaxed);
            held.push((slot, rx));
        }
        let _newest = enter_handshake(&all, 3, &stats);
        let mut shed = Vec::new();
        for (i, (_, rx)) in held.iter_mut().enumerate() {
            if rx.try_recv().is_ok() {
                shed.push(i);
            }
        }
        assert_eq!(shed.len(), 1, "exactly one shed: {shed:?}");
        assert_eq!(stats.handshakes_shed.load(Ordering::Relaxed), 1);
        shed[0]
    }

    #[test]
    fn the_handshake_cap_sheds_a_stalled_handshake_before_a_client_making_progress() {
        use progress::{MESSAGE, STALLED, UNREAD};
        // The oldest stalled one goes, even when younger than the others.
        assert_eq!(shed_among([MESSAGE, UNREAD, STALLED]), 2);
        assert_eq!(shed_among([STALLED, STALLED, MESSAGE]), 0);
        // Else the oldest not waited on yet, then the oldest.
        assert_eq!(shed_among([MESSAGE, UNREAD, UNREAD]), 1);
        assert_eq!(shed_among([UNREAD, UNREAD, MESSAGE]), 0);
        assert_eq!(shed_among([MESSAGE, MESSAGE, MESSAGE]), 0);
    }
}
