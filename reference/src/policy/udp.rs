//! Which client source may feed a UDP association: D-01, plus the rule for clients that put the
//! *target* in the ASSOCIATE request's DST (V2Ray does, RFC 1928 §6 says DST is the client's own
//! sending address).
//!
//! The IP is always the TCP control connection's peer: nothing from any other IP is relayed,
//! whatever the request said (V-01, RFC 1928 §7). Only the *port* rule varies:
//!
//! - DST unspecified (`0.0.0.0`, `::`, or a name resolving to one, such as PySocks' `"0"`):
//!   the port is DST.PORT when non-zero, else the first datagram's source port.
//! - DST is the client's IP: the same, except that while no datagram has yet come from the
//!   declared port, a datagram from another port of that IP *whose header names DST itself as
//!   its destination* locks the association to its port. That is V2Ray's signature: it declares
//!   the target and then sends every datagram to it. A client that really declared its own
//!   address does not send datagrams to itself through the proxy.
//! - DST is some other address: refused with REP 02 by default (R-55, anti-reflection). With
//!   `udp_allow_foreign_client_addr` it is taken as a declared target (V2Ray with a remote
//!   target): locked to the control connection's IP and the first datagram's source port.

use std::net::{IpAddr, SocketAddr};

use super::ServerConfig;
use crate::proto::Address;

/// Remotes one association (plain UDP or UDP-TUN) remembers for endpoint-dependent filtering
/// (D-16); past this many, replies from new remotes are dropped rather than memory grown.
pub const MAX_REMOTES: usize = 4096;

/// The DST of an ASSOCIATE request as sent, and every address it stands for after name
/// resolution (none when a name does not resolve).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpDeclared {
    /// DST as in the request.
    pub dst: Address,
    /// What it resolves to (the address itself when it is one).
    pub addrs: Vec<SocketAddr>,
}

impl UdpDeclared {
    /// DST given as an address.
    pub fn addr(a: SocketAddr) -> Self {
        Self { dst: Address::from(a), addrs: vec![a] }
    }
}

/// The source filter of one association (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpClientLock {
    ip: IpAddr,
    port: Option<u16>,
    /// DST (as sent) when it named the client's own IP and a port: it may in fact be the target.
    target_hint: Option<Address>,
    /// Whether a datagram has been admitted, after which the port only moves with
    /// `allow_port_change`.
    confirmed: bool,
    allow_port_change: bool,
}

impl ServerConfig {
    /// The source filter for an association requested over a TCP connection from `peer_ip`
    /// with `declared` as its DST, or why it is refused (for the debug log; the REP is 02).
    pub fn udp_client_lock(&self, peer_ip: IpAddr, declared: &UdpDeclared) -> Result<UdpClientLock, &'static str> {
        let peer_ip = peer_ip.to_canonical();
        let canonical = |a: &SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
        let mut lock = UdpClientLock {
            ip: peer_ip,
            port: None,
            target_hint: None,
            confirmed: false,
            allow_port_change: self.udp_allow_port_change,
        };
        if let Some(a) = declared.addrs.iter().map(canonical).find(|a| a.ip().is_unspecified()) {
            lock.port = (a.port() != 0).then_some(a.port());
            return Ok(lock);
        }
        if let Some(a) = declared.addrs.iter().map(canonical).find(|a| a.ip() == peer_ip) {
            if a.port() != 0 {
                lock.port = Some(a.port());
                lock.target_hint = Some(declared.dst.clone());
            }
            return Ok(lock);
        }
        if self.udp_allow_foreign_client_addr {
            return Ok(lock); // a declared target: first datagram's port from the peer's IP
        }
        if declared.addrs.is_empty() {
            return Err("DST name does not resolve");
        }
        Err("DST is neither unspecified nor the client's own address (R-55)")
    }
}

impl UdpClientLock {
    /// Whether a datagram from `src`, whose header names `header_dst`, belongs to this
    /// association; admitting it may lock or move the port.
    pub fn admit(&mut self, src: SocketAddr, header_dst: Option<&Address>) -> bool {
        let src = SocketAddr::new(src.ip().to_canonical(), src.port());
        if src.ip() != self.ip {
            return false;
        }
        let ok = match self.port {
            None => true,
            Some(p) if p == src.port() => true,
            Some(_) if self.allow_port_change => true,
            Some(_) => !self.confirmed && header_dst.is_some_and(|h| self.is_target_hint(h)),
        };
        if ok {
            self.port = Some(src.port());
            self.confirmed = true;
        }
        ok
    }

    /// Whether a datagram header's destination is the DST the request declared, name for name
    /// or address for address (IPv4-mapped IPv6 counting as IPv4).
    fn is_target_hint(&self, header_dst: &Address) -> bool {
        let canonical = |a: &Address| a.socket_addr().map(|s| SocketAddr::new(s.ip().to_canonical(), s.port()));
        match &self.target_hint {
            None => false,
            Some(hint) => hint == header_dst || canonical(hint).is_some_and(|h| Some(h) == canonical(header_dst)),
        }
    }

    /// Where replies go: the client's IP and its port once known.
    pub fn client(&self) -> Option<SocketAddr> {
        self.port.map(|p| SocketAddr::new(self.ip, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn ad(s: &str) -> Address {
        Address::from(sa(s))
    }

    fn lock(cfg: &ServerConfig, dst: &str) -> Result<UdpClientLock, &'static str> {
        cfg.udp_client_lock("127.0.0.1".parse().unwrap(), &UdpDeclared::addr(sa(dst)))
    }

    #[test]
    fn other_ips_never_get_in_v01() {
        let cfg = ServerConfig { udp_allow_foreign_client_addr: true, ..Default::default() };
        for dst in ["0.0.0.0:0", "127.0.0.1:5000", "10.9.9.9:53"] {
            let mut l = lock(&cfg, dst).unwrap();
            assert!(!l.admit(sa("127.0.0.2:5000"), Some(&ad("10.9.9.9:53"))), "{dst}");
        }
    }

    #[test]
    fn declared_port_is_locked_d01() {
        let mut l = lock(&ServerConfig::default(), "127.0.0.1:5000").unwrap();
        assert!(!l.admit(sa("127.0.0.1:6000"), Some(&ad("127.0.0.1:7777"))));
        assert!(l.admit(sa("127.0.0.1:5000"), Some(&ad("127.0.0.1:7777"))));
        assert_eq!(l.client(), Some(sa("127.0.0.1:5000")));
        // Once the owner has spoken, even the V2Ray signature no longer moves the port.
        assert!(!l.admit(sa("127.0.0.1:6000"), Some(&ad("127.0.0.1:5000"))));
    }

    #[test]
    fn zero_dst_locks_to_the_first_datagram() {
        let mut l = lock(&ServerConfig::default(), "0.0.0.0:0").unwrap();
        assert_eq!(l.client(), None);
        assert!(l.admit(sa("127.0.0.1:6000"), None));
        assert!(!l.admit(sa("127.0.0.1:6001"), None));
        assert_eq!(l.client(), Some(sa("127.0.0.1:6000")));
    }

    #[test]
    fn unspecified_name_with_port_is_the_client_pysocks() {
        let cfg = ServerConfig::default();
        let declared = UdpDeclared { dst: Address::parse("0:4321").unwrap(), addrs: vec![sa("0.0.0.0:4321")] };
        let mut l = cfg.udp_client_lock("127.0.0.1".parse().unwrap(), &declared).unwrap();
        assert!(!l.admit(sa("127.0.0.1:1111"), None));
        assert!(l.admit(sa("127.0.0.1:4321"), None));
    }

    #[test]
    fn target_in_dst_locks_to_its_sender_v2ray() {
        // V2Ray declares the target 127.0.0.1:7777 and sends to it from port 6000.
        let mut l = lock(&ServerConfig::default(), "127.0.0.1:7777").unwrap();
        assert!(!l.admit(sa("127.0.0.1:6000"), Some(&ad("127.0.0.1:8888"))), "not the declared target");
        assert!(l.admit(sa("127.0.0.1:6000"), Some(&ad("127.0.0.1:7777"))));
        assert_eq!(l.client(), Some(sa("127.0.0.1:6000")));
        assert!(!l.admit(sa("127.0.0.1:6001"), Some(&ad("127.0.0.1:7777"))), "locked now");
    }

    #[test]
    fn a_target_declared_by_name_matches_headers_with_that_name() {
        let declared =
            UdpDeclared { dst: Address::parse("localhost:7777").unwrap(), addrs: vec![sa("127.0.0.1:7777")] };
        let mut l = ServerConfig::default().udp_client_lock("127.0.0.1".parse().unwrap(), &declared).unwrap();
        assert!(l.admit(sa("127.0.0.1:6000"), Some(&Address::parse("localhost:7777").unwrap())));
        assert_eq!(l.client(), Some(sa("127.0.0.1:6000")));
    }

    #[test]
    fn foreign_dst_refused_unless_allowed_r55() {
        assert!(lock(&ServerConfig::default(), "127.0.0.2:1234").is_err());
        let cfg = ServerConfig { udp_allow_foreign_client_addr: true, ..Default::default() };
        let mut l = lock(&cfg, "10.9.9.9:53").unwrap();
        assert!(l.admit(sa("127.0.0.1:6000"), Some(&ad("10.9.9.9:53"))));
        assert!(!l.admit(sa("127.0.0.1:6001"), Some(&ad("10.9.9.9:53"))));
        let nowhere = UdpDeclared { dst: Address::parse("nowhere.invalid:53").unwrap(), addrs: vec![] };
        assert!(ServerConfig::default().udp_client_lock("127.0.0.1".parse().unwrap(), &nowhere).is_err());
        assert!(cfg.udp_client_lock("127.0.0.1".parse().unwrap(), &nowhere).is_ok(), "a declared target");
    }

    #[test]
    fn port_change_follows_the_client_when_allowed() {
        let cfg = ServerConfig { udp_allow_port_change: true, ..Default::default() };
        let mut l = lock(&cfg, "127.0.0.1:5000").unwrap();
        assert!(l.admit(sa("127.0.0.1:6000"), None));
        assert_eq!(l.client(), Some(sa("127.0.0.1:6000")));
        assert!(!l.admit(sa("10.0.0.1:6000"), None));
    }
}
