//! CONNECT: dial, reply, relay.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::tls::Stream;
use tracing::info;

use crate::policy::reply;
use crate::proto::server::ProxyRequest;
use crate::proto::{encode_reply, Reply};

use super::{bnd, fail, resolve::resolve, Accepted, Shared};

pub(crate) async fn run(accepted: Accepted<'_>) -> io::Result<()> {
    let Accepted { stream: mut client, peer, request, early, shared } = accepted;
    let cfg = &shared.config;
    let mut upstream = match dial(request, shared).await {
        Ok(s) => s,
        Err(rep) => {
            info!(%peer, target = %request.target, reply = %rep, "connect refused");
            return fail(client, request, rep).await;
        }
    };
    if let Some(tcp) = upstream.tcp() {
        let _ = tcp.set_nodelay(true);
    }
    // The reply goes out only now that the outbound connection exists (R-36, V-26), and in a
    // write of its own so an over-reading client cannot swallow tunnel bytes with it (docs/gost.md §8).
    let local = upstream.local_addr()?;
    client.write_all(&encode_reply(request.version, Reply::SUCCEEDED, &bnd(cfg, local))).await?;
    // Optimistic data the client sent with its request goes to the target first (D-15, R-03).
    if !early.is_empty() {
        upstream.write_all(&early).await?;
    }
    cfg.wiring.stats.live_tunnels.fetch_add(1, Ordering::Relaxed);
    let moved = crate::tls::relay(&mut client, &mut upstream, Some(cfg.idle_timeout)).await;
    cfg.wiring.stats.live_tunnels.fetch_sub(1, Ordering::Relaxed);
    let (up, down) = moved.as_ref().map(|t| (t.a_to_b + early.len() as u64, t.b_to_a)).unwrap_or_default();
    info!(%peer, target = %request.target, up, down, ok = moved.is_ok(), "tunnel closed");
    moved.map(drop)
}

/// Connects to the first reachable checked address of the target within the connect timeout.
async fn dial(request: &ProxyRequest, shared: &Shared) -> Result<Stream, Reply> {
    let cfg = &shared.config;
    if let Some(chain) = cfg.chain() {
        check_for_upstream(&request.target, shared).await?;
        // Boxed: a chain's connect holds every hop's transport handshake (TLS, WebSocket, smux)
        // inline, and an inline future would size every tunnel's task for it for the tunnel's
        // whole life (the soak measured 14.7 KB per idle tunnel instead of 7.9 KB).
        let connect = Box::pin(chain.connect(&request.target));
        return match tokio::time::timeout(cfg.connect_timeout, connect).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(reply::for_chain_error(&e, chain)),
            Err(_) => Err(reply::TIMED_OUT),
        };
    }
    let addrs = resolve(&request.target, shared).await?;
    let attempt = async {
        let mut last = Reply::HOST_UNREACHABLE;
        for a in addrs {
            match TcpStream::connect(a).await {
                Ok(s) => return Ok(Stream::Tcp(s)),
                Err(e) => last = reply::for_connect_error(&e),
            }
        }
        Err(last)
    };
    match tokio::time::timeout(cfg.connect_timeout, attempt).await {
        Ok(r) => r,
        Err(_) if cfg.timeout_reply_ttl_expired => Err(Reply::TTL_EXPIRED),
        Err(_) => Err(reply::TIMED_OUT),
    }
}

/// With an upstream chain the last hop resolves names (remote DNS, C-01), so what is checked
/// here is: IP destinations against the policy, names for well-formedness, and, when allow/deny
/// rules are configured, the name's local resolution against them: rules that a name could
/// sidestep would be no rules (every answer must pass, and the name then goes on unresolved).
pub(crate) async fn check_for_upstream(target: &crate::proto::Address, shared: &Shared) -> Result<(), Reply> {
    match target.socket_addr() {
        Some(sa) => shared.config.check_destination(sa),
        None => match &target.host {
            crate::proto::Host::Domain(d) => {
                let Some(name) = super::resolve::valid_hostname(d) else { return Err(reply::NO_ADDRESS) };
                if shared.config.rules.is_empty() {
                    return Ok(());
                }
                let lookup = tokio::net::lookup_host((name, target.port));
                let addrs: Vec<SocketAddr> = match tokio::time::timeout(shared.config.connect_timeout, lookup).await {
                    Ok(Ok(a)) => a.collect(),
                    _ => return Err(reply::NO_ADDRESS),
                };
                if addrs.is_empty() {
                    return Err(reply::NO_ADDRESS);
                }
                match addrs.iter().all(|a| shared.config.check_destination(*a).is_ok()) {
                    true => Ok(()),
                    false => {
                        info!(%target, "refused: a local answer for the name is denied by the rules");
                        Err(Reply::NOT_ALLOWED)
                    }
                }
            }
            _ => Err(Reply::HOST_UNREACHABLE),
        },
    }
}
