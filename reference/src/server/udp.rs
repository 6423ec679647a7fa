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

use crate::tls::Stream;
use tracing::{debug, info};

use crate::policy::Stats;
use crate::proto::server::ProxyRequest;
use crate::proto::udp::UdpHeader;
use crate::proto::{encode_reply, Address, Host, Reply};

use super::{bnd, fail, Shared};

/// Large enough for any IPv4 or IPv6 datagram plus the largest header, so nothing is truncated
/// on receive.
const DATAGRAM_MAX: usize = 65_535 + 262;
/// Remotes remembered per association for endpoint-dependent filtering (D-16).
const MAX_REMOTES: usize = 4096;

pub(crate) async fn run(
    mut control: Stream,
    peer: SocketAddr,
    request: &ProxyRequest,
    shared: &Shared,
) -> io::Result<()> {
    let cfg = &shared.config;
    let client_ip = peer.ip().to_canonical();
    // D-01: the client's IP is the TCP peer's; a different declared IP is refused.
    let declared_port = request.target.port;
    let foreign = match &request.target.host {
        Host::Ip(ip) => !ip.is_unspecified() && ip.to_canonical() != client_ip,
        Host::Domain(_) => true,
    };
    if foreign && !cfg.udp_allow_foreign_client_addr {
        return fail(control, request, Reply::NOT_ALLOWED).await;
    }
    let local_ip = control.local_addr()?.ip();
    let (relay, outbound) = match sockets(local_ip, shared).await {
        Ok(v) => v,
        Err(rep) => {
            return fail(control, request, rep).await;
        }
    };
    // D-02: a concrete BND.ADDR, the address the client reached us on.
    let relay_addr = relay.local_addr()?;
    control.write_all(&encode_reply(request.version, Reply::SUCCEEDED, &bnd(cfg, relay_addr))).await?;
    info!(%peer, relay = %relay_addr, "udp association open");

    let mut assoc = Association {
        shared,
        client_ip,
        client_port: (declared_port != 0).then_some(declared_port),
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

/// The relay socket on the control connection's local IP, and the outbound side: a socket of
/// the same family on an ephemeral port, or an association at the upstream chain's last hop.
async fn sockets(local_ip: IpAddr, shared: &Shared) -> Result<(UdpSocket, Outbound), Reply> {
    let relay = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await.map_err(|_| Reply::GENERAL_FAILURE)?;
    let outbound = match shared.config.chain() {
        Some(chain) => match tokio::time::timeout(shared.config.connect_timeout, chain.udp_associate()).await {
            Ok(Ok(a)) => Outbound::Chain(a),
            Ok(Err(e)) => return Err(super::connect::reply_for_chain(&e, chain)),
            Err(_) => return Err(Reply::HOST_UNREACHABLE),
        },
        None => {
            let any: IpAddr =
                if local_ip.is_ipv4() { [0, 0, 0, 0].into() } else { std::net::Ipv6Addr::UNSPECIFIED.into() };
            Outbound::Direct(UdpSocket::bind(SocketAddr::new(any, 0)).await.map_err(|_| Reply::GENERAL_FAILURE)?)
        }
    };
    Ok((relay, outbound))
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
            (Outbound::Direct(s), Some(sa)) => s.send_to(payload, sa).await.is_ok(),
            (Outbound::Direct(_), None) => false,
            (Outbound::Chain(a), _) => a.send_to(payload, dest).await.is_ok(),
        }
    }

    pub(super) async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, Address)> {
        match self {
            Outbound::Direct(s) => s.recv_from(buf).await.map(|(n, a)| (n, Address::from(a))),
            Outbound::Chain(a) => a.recv_from(buf).await.map_err(|e| io::Error::other(e.to_string())),
        }
    }
}

struct Association<'a> {
    shared: &'a Shared,
    client_ip: IpAddr,
    client_port: Option<u16>,
    remotes: HashSet<Address>,
    names: super::resolve::NameCache,
    relay: Arc<UdpSocket>,
    outbound: Arc<Outbound>,
}

impl Association<'_> {
    async fn on_client_datagram(&mut self, datagram: &[u8], src: SocketAddr) {
        let stats = &self.shared.config.stats;
        let src = SocketAddr::new(src.ip().to_canonical(), src.port());
        // RFC 1928 §7: only the associated client's IP, and its port once known.
        let port_ok = match self.client_port {
            Some(p) => p == src.port() || self.shared.config.udp_allow_port_change,
            None => true,
        };
        if src.ip() != self.client_ip || !port_ok {
            Stats::bump(&stats.udp_dropped_foreign);
            return;
        }
        if self.client_port.is_none() || self.shared.config.udp_allow_port_change {
            self.client_port = Some(src.port());
        }
        let (header, offset) = match UdpHeader::decode(datagram) {
            Ok(v) => v,
            Err(_) => return Stats::bump(&stats.udp_dropped_malformed),
        };
        if header.frag != 0 {
            return Stats::bump(&stats.udp_dropped_frag); // D-12
        }
        let Some(dest) = self.destination(&header.address).await else {
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
        let stats = &self.shared.config.stats;
        if !self.shared.config.udp_full_cone && !self.remotes.contains(src) {
            return Stats::bump(&stats.udp_dropped_unsolicited); // D-16
        }
        let Some(port) = self.client_port else { return };
        // the real source address, FRAG 0, RSV 0.
        let header = UdpHeader::new(src.clone());
        let mut out = Vec::with_capacity(header.encoded_len() + payload.len());
        if header.encode(&mut out).is_err() {
            return;
        }
        out.extend_from_slice(payload);
        if self.relay.send_to(&out, SocketAddr::new(self.client_ip, port)).await.is_ok() {
            Stats::bump(&stats.udp_relayed_in);
        }
    }

    /// The checked destination of a datagram; names are resolved once per association and cached.
    /// Through an upstream chain, names go on unresolved for the last hop to resolve (C-01).
    async fn destination(&mut self, addr: &Address) -> Option<Address> {
        if self.shared.config.chain().is_some() {
            return super::connect::check_for_upstream(addr, self.shared).ok().map(|()| addr.clone());
        }
        self.names.resolve(addr, self.shared).await.map(Address::from)
    }
}
