//! gost's UDP-TUN (command `F3`, docs/gost.md §4.7): UDP datagrams framed on the SOCKS
//! connection itself, in relay mode (DST.PORT = 0: we send to any destination the client names)
//! or bind mode (DST.PORT ≠ 0: we listen on DST and pass on what anyone sends there).

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tracing::{debug, info};

use crate::policy::{reply, Stats, MAX_REMOTES};
use crate::proto::udptun::TunFrame;
use crate::proto::{encode_reply, Address, DecodeError, Host, Reply};
use crate::tls::Stream;

use super::udp::Outbound;
use super::{bnd, fail, Accepted, Shared};

/// The longest frame: header with a 255-byte name, and a 65535-byte payload.
const MAX_FRAME: usize = 3 + 1 + 1 + 255 + 2 + 65_535;

pub(crate) async fn run(accepted: Accepted<'_>) -> io::Result<()> {
    // Early bytes are the start of the first frames.
    let Accepted { stream: mut control, peer, request, early, shared } = accepted;
    let cfg = &shared.config;
    let bind_mode = request.target.port != 0;
    // gost gates relay mode on `udp` and bind mode on `bind`, refusing with 02 (§4.2).
    let allowed = if bind_mode { cfg.allow_bind } else { cfg.allow_udp };
    let socket = if !allowed {
        Err(Reply::NOT_ALLOWED)
    } else if bind_mode {
        bind_socket(&request.target, control.local_addr()?.ip(), shared).await.map(Outbound::Direct)
    } else {
        relay_socket(shared).await
    };
    let outbound = match socket {
        Ok(s) => s,
        Err(rep) => {
            debug!(%peer, target = %request.target, reply = %rep, bind_mode, "udp-tun refused");
            return fail(control, request, rep).await;
        }
    };
    // BND: the UDP socket's own address (gost sends it verbatim too); a chain has none of ours.
    // In relay mode the socket is dual-stack on `[::]`; gost shows its unspecified address, so
    // we show the unspecified address of the client's own family with the socket's port.
    let local = match &outbound {
        Outbound::Direct(s) if bind_mode => s.local_addr()?,
        Outbound::Direct(s) => {
            let any: IpAddr = match control.local_addr()?.ip().to_canonical() {
                IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
                IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
            };
            SocketAddr::new(any, s.local_addr()?.port())
        }
        Outbound::Chain(_) => SocketAddr::new(control.local_addr()?.ip(), 0),
    };
    // Its own write and flush (its own TLS record): gost's reply reader over-reads (§8.1).
    control.write_all(&encode_reply(request.version, Reply::SUCCEEDED, &bnd(cfg, local))).await?;
    control.flush().await?;
    info!(%peer, %local, bind_mode, "udp-tun open");
    let mut tun = Tunnel { shared, bind_mode, remotes: HashSet::new(), names: Default::default() };
    let r = tun.pump(&mut control, &outbound, early).await;
    info!(%peer, %local, "udp-tun closed");
    r
}

/// Relay mode: an unconnected dual-stack socket on an ephemeral port, so frames reach IPv4 and
/// IPv6 destinations whatever the control connection's family, or an association at the
/// upstream chain's last hop.
async fn relay_socket(shared: &Shared) -> Result<Outbound, Reply> {
    if let Some(chain) = shared.config.chain() {
        return match tokio::time::timeout(shared.config.connect_timeout, chain.udp_associate()).await {
            Ok(Ok(a)) => Ok(Outbound::Chain(a)),
            Ok(Err(e)) => Err(reply::for_chain_error(&e, chain)),
            Err(_) => Err(reply::TIMED_OUT),
        };
    }
    super::udp::direct_socket().map_err(|e| reply::for_local_error(&e)).map(Outbound::Direct)
}

/// Bind mode: a socket on the requested port of the address the control connection came in on,
/// as BIND does (D-07); gost binds exactly the requested address, so `rudp://:5353` (a request
/// for `0.0.0.0:5353`) would open the port on every interface. Privileged ports are refused like
/// BIND's; names are not bound to. Through an upstream chain this would expose our own
/// address instead of the chain's, so it is refused there.
async fn bind_socket(target: &Address, local: IpAddr, shared: &Shared) -> Result<UdpSocket, Reply> {
    if shared.config.chain().is_some() {
        return Err(Reply::COMMAND_NOT_SUPPORTED);
    }
    let Host::Ip(ip) = target.host else { return Err(Reply::ADDR_TYPE_NOT_SUPPORTED) };
    let ip = crate::policy::listen_address(ip, local).map_err(|why| {
        debug!(%target, reason = why, "udp-tun bind refused");
        Reply::NOT_ALLOWED
    })?;
    // Bind mode names the port to relay from: "any port" (0) has no meaning here.
    if target.port == 0 || crate::policy::check_listen_port(target.port).is_err() {
        return Err(Reply::NOT_ALLOWED);
    }
    UdpSocket::bind(SocketAddr::new(ip, target.port)).await.map_err(|e| reply::for_local_error(&e))
}

struct Tunnel<'a> {
    shared: &'a Shared,
    bind_mode: bool,
    remotes: HashSet<Address>,
    names: super::resolve::NameCache,
}

impl Tunnel<'_> {
    /// Moves frames to datagrams and back until the control connection ends, a frame is
    /// malformed, or nothing moves for the UDP idle timeout. gost ends at the first error in
    /// either direction (§4.7); so do we for the stream, while a datagram that cannot be sent
    /// (policy, resolution) is dropped and the tunnel goes on, as for UDP ASSOCIATE.
    async fn pump(&mut self, control: &mut Stream, outbound: &Outbound, early: Vec<u8>) -> io::Result<()> {
        let cfg = &self.shared.config;
        let mut inbuf = early;
        let mut chunk = vec![0u8; 16 * 1024];
        let mut from_remote = vec![0u8; 65_535];
        let mut frame = Vec::with_capacity(MAX_FRAME);
        loop {
            // Every complete frame already here goes out first.
            let mut used = 0;
            loop {
                match TunFrame::decode(&inbuf[used..]) {
                    Ok((f, n)) => {
                        used += n;
                        let payload = &f.payload[..f.payload.len().min(cfg.udp_buffer_size)];
                        self.on_frame(outbound, &f.address, payload).await;
                    }
                    Err(DecodeError::Incomplete) => break,
                    Err(DecodeError::Invalid(e)) => {
                        debug!(error = %e, "udp-tun: malformed frame; closing");
                        return Ok(());
                    }
                }
            }
            inbuf.drain(..used);
            let idle = tokio::time::sleep(cfg.udp_idle_timeout);
            tokio::select! {
                r = control.read(&mut chunk) => match r {
                    Ok(0) | Err(_) => return Ok(()),
                    Ok(n) => inbuf.extend_from_slice(&chunk[..n]),
                },
                r = outbound.recv_from(&mut from_remote) => {
                    let (n, src) = r?;
                    let n = n.min(cfg.udp_buffer_size);
                    if n == 0 {
                        continue; // gost cannot read an empty frame (§4.7)
                    }
                    if !self.bind_mode && !cfg.udp_full_cone && !self.remotes.contains(&src) {
                        Stats::bump(&cfg.wiring.stats.udp_dropped_unsolicited);
                        continue; // D-16
                    }
                    // Bind mode relays whoever sends to the socket: the allow/deny rules decide
                    // which senders may (V-08).
                    if self.bind_mode && src.socket_addr().is_some_and(|a| cfg.check_peer(a).is_err()) {
                        Stats::bump(&cfg.wiring.stats.udp_dropped_policy);
                        continue;
                    }
                    frame.clear();
                    if TunFrame::encode(&src, &from_remote[..n], &mut frame).is_ok() {
                        control.write_all(&frame).await?;
                        control.flush().await?;
                        Stats::bump(&cfg.wiring.stats.udp_relayed_in);
                    }
                }
                () = idle => { debug!("udp-tun idle"); return Ok(()) }
            }
        }
    }

    async fn on_frame(&mut self, outbound: &Outbound, dest: &Address, payload: &[u8]) {
        let stats = &self.shared.config.wiring.stats;
        if payload.is_empty() {
            return; // RSV = 0: nothing to send
        }
        let dest = if self.shared.config.chain().is_some() {
            super::connect::check_for_upstream(dest, self.shared).await.ok().map(|()| dest.clone())
        } else {
            self.names.resolve(dest, self.shared).await.map(Address::from)
        };
        let Some(dest) = dest else {
            return Stats::bump(&stats.udp_dropped_policy);
        };
        if self.remotes.len() < MAX_REMOTES {
            self.remotes.insert(dest.clone());
        }
        if outbound.send_to(payload, &dest).await {
            Stats::bump(&stats.udp_relayed_out);
        }
    }
}
