//! BIND: listen, first reply, accept exactly one peer, second reply, relay (RFC 1928 §4 and the
//! SOCKS4 text; decisions D-07, R-45…R-51).

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use crate::tls::Stream;
use tracing::{debug, info};

use crate::policy::reply;
use crate::proto::server::ProxyRequest;
use crate::proto::{encode_reply, Address, Host, Reply};

use super::{bnd, fail, resolve::resolve, Accepted, Shared};

/// Cap on bytes the client may send between the two replies; they are held for the peer.
const HELD_CAP: usize = 64 * 1024;

pub(crate) async fn run(accepted: Accepted<'_>) -> io::Result<()> {
    // Bytes sent early, and any sent between the two replies, are held for the peer.
    let Accepted { stream: mut control, peer, request, early: mut held, shared } = accepted;
    let cfg = &shared.config;
    if let Some(chain) = cfg.chain() {
        return via_chain(control, request, held, chain, shared).await;
    }
    // DST.ADDR names the host expected to connect (D-07). All-zero means "anyone", which is
    // allowed only when configured (the rtcp forwarder needs it).
    let expected: Option<IpAddr> = match &request.target.host {
        Host::Ip(ip) if ip.is_unspecified() => None,
        Host::Ip(ip) => Some(ip.to_canonical()),
        Host::Domain(_) => match resolve(&Address { port: 1, ..request.target.clone() }, shared).await {
            Ok(addrs) => addrs.first().map(|a| a.ip()),
            Err(rep) => return fail(control, request, rep).await,
        },
    };
    if expected.is_none() && !cfg.bind_any_peer {
        debug!(%peer, "bind refused: all-zero DST.ADDR and bindAnyPeer is off");
        return fail(control, request, Reply::NOT_ALLOWED).await;
    }
    // gost's rtcp asks for a specific port through DST.PORT (docs/gost.md §4.4), while the
    // RFC leaves DST.PORT of a BIND without a defined use. We honour a non-zero port as the port
    // to listen on, but never a privileged one.
    let port = request.target.port;
    if let Err(why) = crate::policy::check_listen_port(port) {
        debug!(%peer, port, "bind refused: {why}");
        return fail(control, request, Reply::NOT_ALLOWED).await;
    }
    // Listen on the address the client reached us on: that is an address it can reach.
    let local_ip = control.local_addr()?.ip();
    let listener = match listen(SocketAddr::new(local_ip, port)) {
        Ok(l) => l,
        Err(e) => {
            debug!(%peer, error = %e, "bind failed: cannot listen");
            return fail(control, request, reply::for_local_error(&e)).await;
        }
    };
    let bound = listener.local_addr()?;
    control.write_all(&encode_reply(request.version, Reply::SUCCEEDED, &bnd(cfg, bound))).await?;
    // Flushed: the server now waits, and over a TLS transport a reply can sit in rustls
    // until flushed (docs/transports.md).
    control.flush().await?;
    info!(%peer, %bound, "bind listening");

    // Wait for the one peer, the deadline, or the control connection going away.
    let deadline = tokio::time::sleep(cfg.bind_accept_timeout);
    tokio::pin!(deadline);
    let mut chunk = [0u8; 4096];
    let accepted = loop {
        tokio::select! {
            r = listener.accept() => break Some(r),
            () = &mut deadline => {
                info!(%peer, %bound, "bind timed out without a peer");
                break None;
            }
            r = control.read(&mut chunk), if held.len() < HELD_CAP => match r {
                Ok(0) | Err(_) => return Ok(()), // the listener is dropped on return
                Ok(n) => held.extend_from_slice(&chunk[..n]),
            },
        }
    };
    // Exactly one accept; after a timeout the port is released before the reply goes out.
    drop(listener);
    let (mut remote, remote_addr) = match accepted {
        Some(Ok(v)) => v,
        Some(Err(e)) => return fail(control, request, reply::for_local_error(&e)).await,
        None => return fail(control, request, reply::TIMED_OUT).await,
    };
    let remote_addr = SocketAddr::new(remote_addr.ip().to_canonical(), remote_addr.port());
    if expected.is_some_and(|ip| ip != remote_addr.ip()) {
        info!(%peer, %remote_addr, "bind peer is not the expected host");
        return fail(control, request, Reply::NOT_ALLOWED).await;
    }
    if let Err(rep) = cfg.check_peer(remote_addr) {
        info!(%peer, %remote_addr, "bind peer denied by the allow/deny rules");
        return fail(control, request, rep).await; // V-08
    }
    control.write_all(&encode_reply(request.version, Reply::SUCCEEDED, &Address::from(remote_addr))).await?;
    let _ = remote.set_nodelay(true);
    if !held.is_empty() {
        remote.write_all(&held).await?;
    }
    crate::tls::relay(&mut control, &mut Stream::Tcp(remote), Some(cfg.idle_timeout)).await.map(drop)
}

fn listen(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // A fixed port (rtcp) is listened on again right after the previous peer's connection, which
    // may still be in TIME_WAIT on that port.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1)
}

/// BIND through the upstream chain: the last hop listens and checks the peer; we pass both
/// replies on and relay.
async fn via_chain(
    mut control: Stream,
    request: &ProxyRequest,
    held: Vec<u8>,
    chain: &crate::client::Chain,
    shared: &Shared,
) -> io::Result<()> {
    let pending = match tokio::time::timeout(shared.config.connect_timeout, chain.bind(&request.target)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return fail(control, request, reply::for_chain_error(&e, chain)).await,
        Err(_) => return fail(control, request, reply::TIMED_OUT).await,
    };
    control.write_all(&encode_reply(request.version, Reply::SUCCEEDED, &pending.bound)).await?;
    // Flushed: the server now waits, and over a TLS transport a reply can sit in rustls
    // until flushed (docs/transports.md).
    control.flush().await?;
    let accept = tokio::time::timeout(shared.config.bind_accept_timeout, pending.accept());
    let (mut remote, peer) = match accept.await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return fail(control, request, reply::for_chain_error(&e, chain)).await,
        Err(_) => return fail(control, request, reply::TIMED_OUT).await,
    };
    control.write_all(&encode_reply(request.version, Reply::SUCCEEDED, &peer)).await?;
    if !held.is_empty() {
        remote.write_all(&held).await?;
    }
    crate::tls::relay(&mut control, &mut remote, Some(shared.config.idle_timeout)).await.map(drop)
}
