//! gost's MBIND (command `F2`, docs/gost.md §4.5): listen, reply, then the connection
//! becomes an smux session in which we are the smux *client*: every accepted TCP connection is a
//! new stream that starts with its own SOCKS5 reply naming the peer.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket};
use tracing::{debug, info};

use crate::policy::listen_address;
use crate::proto::server::ProxyRequest;
use crate::proto::{encode_reply, Address, Host, Reply};
use crate::smux::{Config, Role, Session};

use super::{bnd, fail, Accepted, Shared};

pub(crate) async fn run(accepted: Accepted<'_>) -> io::Result<()> {
    // Early bytes have nowhere to go: the stream becomes an smux session after the reply.
    let Accepted { stream: mut control, peer, request, early: _, shared } = accepted;
    let cfg = &shared.config;
    let listener = match listen(request, control.local_addr()?.ip(), shared) {
        Ok(l) => l,
        Err((rep, why)) => {
            debug!(%peer, target = %request.target, reason = why, "mbind refused");
            return fail(control, request, rep).await;
        }
    };
    let bound = listener.local_addr()?;
    // BND: where we listen, which is the address the client reached us on.
    control.write_all(&encode_reply(request.version, Reply::SUCCEEDED, &bnd(cfg, bound))).await?;
    control.flush().await?;
    info!(%peer, %bound, "mbind listening");
    let session = Session::new(control, Role::Client, Config::default());
    loop {
        tokio::select! {
            r = listener.accept() => {
                let Ok((conn, from)) = r else { continue };
                let from = SocketAddr::new(from.ip().to_canonical(), from.port());
                if cfg.check_peer(from).is_err() {
                    debug!(%peer, %from, "mbind peer denied by the allow/deny rules");
                    continue; // dropping the connection closes it
                }
                // The per-stream reply in a frame of its own (gost v3 clients require it;
                // gost's `comp=true` for v2 clients is not offered).
                let reply = encode_reply(request.version, Reply::SUCCEEDED, &Address::from(from));
                let Ok(mut stream) = session.open_with(&reply).await else { break };
                let idle = cfg.idle_timeout;
                tokio::spawn(async move {
                    let _ = conn.set_nodelay(true);
                    let mut conn = conn;
                    // The smux stream ends with its session; the peer's socket is watched.
                    let watch: Vec<_> = crate::relay::HangupWatch::new(&conn).into_iter().collect();
                    let r = crate::relay::relay_watched(&mut stream, &mut conn, Some(idle), &watch).await;
                    debug!(%from, ok = r.is_ok(), "mbind stream closed");
                });
            }
            // Streams the client opens have no meaning here: close them at once, as gost does.
            s = session.accept() => if s.is_none() { break },
            () = session.closed() => break,
        }
    }
    info!(%peer, %bound, "mbind closed");
    Ok(())
}

/// Listens on the requested port of the address the control connection came in on, as BIND
/// does (D-07): gost listens on exactly the requested address, so `rtcp://:2222` (a request for
/// `0.0.0.0:2222`) would open the port on every interface of a loopback-only server.
/// Privileged ports are refused, names are not listened on, and with an upstream chain it
/// is refused rather than exposing our own address.
fn listen(request: &ProxyRequest, local: IpAddr, shared: &Shared) -> Result<TcpListener, (Reply, &'static str)> {
    if shared.config.chain().is_some() {
        return Err((Reply::COMMAND_NOT_SUPPORTED, "no MBIND through an upstream chain"));
    }
    let Host::Ip(ip) = request.target.host else {
        return Err((Reply::ADDR_TYPE_NOT_SUPPORTED, "MBIND needs an IP address"));
    };
    let ip = listen_address(ip, local).map_err(|why| (Reply::NOT_ALLOWED, why))?;
    let port = request.target.port;
    crate::policy::check_listen_port(port).map_err(|why| (Reply::NOT_ALLOWED, why))?;
    let addr = SocketAddr::new(ip, port);
    let failed = |e: std::io::Error| (crate::policy::reply::for_local_error(&e), "cannot listen there");
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(failed)?;
    // The same port is listened on again when a client re-binds after a session died.
    socket.set_reuseaddr(true).map_err(failed)?;
    socket.bind(addr).map_err(failed)?;
    socket.listen(128).map_err(failed)
}
