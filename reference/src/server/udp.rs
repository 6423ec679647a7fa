//! UDP ASSOCIATE (RFC 1928 §6–§7) with the decisions D-01, D-02, D-12, D-16.
//!
//! Every association has its own relay socket bound to the address the client reached us on,
//! and accepts datagrams only from the client that associated over this TCP connection: the
//! V2Ray-style bypass (one shared relay that serves anyone, V-01) cannot happen by construction.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

use tracing::{debug, info};

use crate::policy::{reply, Live, Stats, UdpClientLock, UdpDeclared, MAX_REMOTES};
use crate::proto::udp::UdpHeader;
use crate::proto::{encode_reply, Address, Host, Reply};

use super::{bnd, fail, Accepted, Shared};

/// Large enough for any IPv4 or IPv6 datagram plus the largest header, so nothing is truncated
/// on receive.
const DATAGRAM_MAX: usize = 65_535 + 262;

pub(crate) async fn run(accepted: Accepted<'_>) -> io::Result<()> {
    // Early bytes are dropped: after UDP ASSOCIATE the control stream carries no data.
    let Accepted { stream: mut control, peer, request, early: _, shared } = accepted;
    let cfg = &shared.config;
    // D-01 and the declared-target rule: the decision is the policy's (policy::udp).
    let declared = match declared(&request.target, shared).await {
        Ok(d) => d,
        Err(why) => {
            debug!(%peer, dst = %request.target, reason = why, "udp associate refused");
            return fail(control, request, Reply::NOT_ALLOWED).await;
        }
    };
    let lock = match cfg.udp_client_lock(peer.ip(), &declared) {
        Ok(l) => l,
        Err(why) => {
            debug!(%peer, dst = %request.target, reason = why, "udp associate refused");
            return fail(control, request, Reply::NOT_ALLOWED).await;
        }
    };
    let local_ip = control.local_addr()?.ip();
    let (relay, outbound) = match sockets(local_ip, shared).await {
        Ok(v) => v,
        Err(rep) => {
            debug!(%peer, reply = %rep, "udp associate failed: no relay or outbound socket");
            return fail(control, request, rep).await;
        }
    };
    // D-02: a concrete BND.ADDR, the address the client reached us on.
    let relay_addr = relay.local_addr()?;
    control.write_all(&encode_reply(request.version, Reply::SUCCEEDED, &bnd(cfg, relay_addr))).await?;
    // Flushed: the server now waits, and over a TLS transport a reply can sit in rustls
    // until flushed (docs/transports.md).
    control.flush().await?;
    info!(%peer, relay = %relay_addr, "udp association open");
    // Declared before the association, so it is dropped after the relay socket has closed.
    let _live = Live::count(&cfg.wiring.stats.live_udp_associations);

    let mut assoc = Association {
        shared,
        lock,
        remotes: HashSet::new(),
        names: Default::default(),
        relay: Arc::new(relay),
        outbound: Arc::new(outbound),
    };
    let mut from_client = vec![0u8; DATAGRAM_MAX];
    let mut from_remote = vec![0u8; DATAGRAM_MAX];
    let mut control_buf = [0u8; 512];
    let relay = assoc.relay.clone();
    let outbound = assoc.outbound.clone();
    loop {
        let idle = tokio::time::sleep(cfg.udp_idle_timeout);
        tokio::select! {
            // The association ends with its TCP connection (RFC 1928 §6, R-63); anything the
            // client writes there is meaningless and discarded.
            r = control.read(&mut control_buf) => if matches!(r, Ok(0) | Err(_)) { break },
            r = relay.recv_from(&mut from_client) => {
                let (n, src) = r?;
                assoc.on_client_datagram(&from_client[..n], src).await;
            }
            r = outbound.recv_from(&mut from_remote) => {
                let (n, src) = r?;
                assoc.on_remote_datagram(&from_remote[..n], &src).await;
            }
            () = idle => { debug!(%peer, "udp association idle"); break }
        }
    }
    info!(%peer, relay = %relay_addr, "udp association closed");
    Ok(())
}

/// Every address the request's DST stands for: the literal, or what the name resolves to.
/// PySocks sends the name `"0"`, which resolves to `0.0.0.0` ("unspecified", RFC 1928 §6).
async fn declared(target: &Address, shared: &Shared) -> Result<UdpDeclared, &'static str> {
    match &target.host {
        Host::Ip(ip) => Ok(UdpDeclared::addr(SocketAddr::new(*ip, target.port))),
        Host::Domain(name) => {
            let name = super::resolve::valid_hostname(name).ok_or("DST is not a valid host name")?;
            let lookup = tokio::net::lookup_host((name, target.port));
            let addrs = match tokio::time::timeout(shared.config.connect_timeout, lookup).await {
                Ok(Ok(addrs)) => addrs.collect(),
                _ => Vec::new(), // the policy decides what an unresolvable DST means
            };
            Ok(UdpDeclared { dst: target.clone(), addrs })
        }
    }
}

/// The relay socket on the control connection's local IP, and the outbound side: a direct
/// socket (see [`direct_socket`]), or an association at the upstream chain's last hop.
async fn sockets(local_ip: IpAddr, shared: &Shared) -> Result<(UdpSocket, Outbound), Reply> {
    let relay = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await.map_err(|e| reply::for_local_error(&e))?;
    let outbound = match shared.config.chain() {
        Some(chain) => match tokio::time::timeout(shared.config.connect_timeout, chain.udp_associate()).await {
            Ok(Ok(a)) => Outbound::Chain(a),
            Ok(Err(e)) => return Err(reply::for_chain_error(&e, chain)),
            Err(_) => return Err(reply::TIMED_OUT),
        },
        None => Outbound::Direct(direct_socket().map_err(|e| reply::for_local_error(&e))?),
    };
    Ok((relay, outbound))
}

/// The outbound socket of a direct association or UDP-TUN relay: one dual-stack socket on
/// `[::]:0`, so datagrams reach IPv4 and IPv6 destinations alike whichever family the client
/// used for the control connection (an IPv4-only socket cannot send to `[::1]`). Where the host
/// has no IPv6, an IPv4 socket is used and IPv6 destinations are dropped.
pub(super) fn direct_socket() -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let dual = || -> io::Result<Socket> {
        let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_only_v6(false)?;
        s.bind(&SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)).into())?;
        Ok(s)
    };
    let socket = match dual() {
        Ok(s) => s,
        Err(_) => {
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            s.bind(&SocketAddr::from(([0, 0, 0, 0], 0)).into())?;
            s
        }
    };
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

/// Where datagrams from the client go (shared with UDP-TUN).
pub(super) enum Outbound {
    /// Straight to the destination.
    Direct(UdpSocket),
    /// Through an association at the upstream chain's last hop.
    Chain(crate::client::UdpAssociation),
}

impl Outbound {
    pub(super) async fn send_to(&self, payload: &[u8], dest: &Address) -> bool {
        match (self, dest.socket_addr()) {
            (Outbound::Direct(s), Some(sa)) => {
                // A dual-stack socket reaches IPv4 destinations through their mapped form.
                let sa = match (s.local_addr().map(|l| l.is_ipv6()), sa.ip()) {
                    (Ok(true), IpAddr::V4(v4)) => SocketAddr::new(v4.to_ipv6_mapped().into(), sa.port()),
                    _ => sa,
                };
                s.send_to(payload, sa).await.is_ok()
            }
            (Outbound::Direct(_), None) => false,
            (Outbound::Chain(a), _) => a.send_to(payload, dest).await.is_ok(),
        }
    }

    /// The next datagram and its source, IPv4 sources in their plain form (not mapped), so they
    /// match the destinations the client named and go back to it as ATYP 01.
    pub(super) async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, Address)> {
        match self {
            Outbound::Direct(s) => s
                .recv_from(buf)
                .await
                .map(|(n, a)| (n, Address::from(SocketAddr::new(a.ip().to_canonical(), a.port())))),
            Outbound::Chain(a) => a.recv_from(buf).await.map_err(|e| io::Error::other(e.to_string())),
        }
    }
}

struct Association<'a> {
    shared: &'a Shared,
    lock: UdpClientLock,
    remotes: HashSet<Address>,
    names: super::resolve::NameCache,
    relay: Arc<UdpSocket>,
    outbound: Arc<Outbound>,
}

impl Association<'_> {
    async fn on_client_datagram(&mut self, datagram: &[u8], src: SocketAddr) {
        let stats = &self.shared.config.wiring.stats;
        let decoded = UdpHeader::decode(datagram);
        let header_dst = decoded.as_ref().ok().map(|(h, _)| &h.address);
        // RFC 1928 §7: only the associated client's IP, and its port as the lock says.
        if !self.lock.admit(src, header_dst) {
            Stats::bump(&stats.udp_dropped_foreign);
            return;
        }
        let (header, offset) = match decoded {
            Ok(v) => v,
            Err(e) => {
                debug!(%src, error = %e, "udp datagram dropped: malformed header");
                return Stats::bump(&stats.udp_dropped_malformed);
            }
        };
        if header.reserved != 0 {
            // D-14 as for a TCP request: RSV must be zero; a datagram cannot get REP 01, so it
            // is dropped (and counted) instead of relayed.
            debug!(%src, rsv = header.reserved, "udp datagram dropped: RSV is not zero");
            return Stats::bump(&stats.udp_dropped_malformed);
        }
        if header.frag != 0 {
            debug!(%src, frag = header.frag, "udp datagram dropped: fragment");
            return Stats::bump(&stats.udp_dropped_frag); // D-12
        }
        let Some(dest) = self.destination(&header.address).await else {
            debug!(%src, dst = %header.address, "udp datagram dropped: destination refused");
            return Stats::bump(&stats.udp_dropped_policy); // drop, keep the association
        };
        if self.remotes.len() < MAX_REMOTES {
            self.remotes.insert(dest.clone());
        }
        if self.outbound.send_to(&datagram[offset..], &dest).await {
            Stats::bump(&stats.udp_relayed_out);
        }
    }

    async fn on_remote_datagram(&mut self, payload: &[u8], src: &Address) {
        let stats = &self.shared.config.wiring.stats;
        if !self.shared.config.udp_full_cone && !self.remotes.contains(src) {
            return Stats::bump(&stats.udp_dropped_unsolicited); // D-16
        }
        let Some(client) = self.lock.client() else { return };
        // the real source address, FRAG 0, RSV 0.
        let header = UdpHeader::new(src.clone());
        let mut out = Vec::with_capacity(header.encoded_len() + payload.len());
        if header.encode(&mut out).is_err() {
            return;
        }
        out.extend_from_slice(payload);
        if self.relay.send_to(&out, client).await.is_ok() {
            Stats::bump(&stats.udp_relayed_in);
        }
    }

    /// The checked destination of a datagram; names are resolved once per association and cached.
    /// Through an upstream chain, names go on unresolved for the last hop to resolve (C-01).
    async fn destination(&mut self, addr: &Address) -> Option<Address> {
        if self.shared.config.chain().is_some() {
            return super::connect::check_for_upstream(addr, self.shared).await.ok().map(|()| addr.clone());
        }
        self.names.resolve(addr, self.shared).await.map(Address::from)
    }
}
