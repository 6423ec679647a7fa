//! Every decision the server handlers consult: who may authenticate, where a request may go,
//! limits and timeouts. Choices on RFC ambiguities follow specs/security-catalog.md §2.0.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::proto::{Method, Reply};

/// One username/password pair (RFC 1929). Octets, not strings: RFC 1929 allows any octet.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// UNAME.
    pub user: Vec<u8>,
    /// PASSWD.
    pub pass: Vec<u8>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({})", self.user.escape_ascii())
    }
}

/// Server configuration: features, authentication, destination rules, limits and timeouts.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Accepted credentials; non-empty means SOCKS5 requires RFC 1929 and SOCKS4 is refused.
    pub users: Vec<Credential>,
    /// Whether an empty password may authenticate at all (D-04).
    pub allow_empty_password: bool,
    /// SOCKS4 USERIDs this server serves, as gost's `socks4://admin@…` (docs/gost-peer.md
    /// §1): when non-empty, a SOCKS4/4a request with any other USERID is answered `00 5D`.
    /// This is an access filter for gost compatibility, not authentication: a USERID is whatever
    /// the client claims, so it must not stand in for a password.
    pub socks4_userids: Vec<Vec<u8>>,
    /// Serve SOCKS4 and SOCKS4a.
    pub socks4: bool,
    /// Serve SOCKS5.
    pub socks5: bool,
    /// Enable BIND (off by default, R-45).
    pub allow_bind: bool,
    /// Let BIND accept any peer when DST.ADDR is all-zero (D-07 allows it only by config); the
    /// rtcp forwarder needs this, since the remote peer is not known in advance.
    pub bind_any_peer: bool,
    /// Enable UDP ASSOCIATE (off by default, R-52).
    pub allow_udp: bool,
    /// Accept an ASSOCIATE whose DST.ADDR differs from the TCP peer (off: REP 02, R-55).
    pub udp_allow_foreign_client_addr: bool,
    /// Let the client's UDP source port change after it was locked (NAT rebinding, D-01).
    pub udp_allow_port_change: bool,
    /// Relay datagrams from remotes the client never sent to (full cone, D-16).
    pub udp_full_cone: bool,
    /// Deny private, loopback, link-local and other internal destinations. Off by default
    /// because this lab runs every target on loopback; turn it on for any exposed deployment.
    pub deny_private: bool,
    /// The whole handshake, from accept to a parsed request.
    pub handshake_timeout: Duration,
    /// Outbound connect, all addresses of a name together.
    pub connect_timeout: Duration,
    /// How long a BIND waits for its one peer (D-07).
    pub bind_accept_timeout: Duration,
    /// A tunnel with no traffic either way for this long is closed.
    pub idle_timeout: Duration,
    /// A UDP association with no datagrams either way for this long is closed.
    pub udp_idle_timeout: Duration,
    /// Longest UDP-TUN payload passed on; longer ones are cut, as gost's `udpBufferSize` does
    /// (default there 4096). Ours defaults to the frame maximum, so nothing is cut unless asked.
    pub udp_buffer_size: usize,
    /// Reply 06 instead of 04 on connect timeout, for legacy clients (D-06).
    pub timeout_reply_ttl_expired: bool,
    /// Concurrent connections; more are closed at once.
    pub max_connections: usize,
    /// Replace BND in success replies with zeros to hide egress addresses.
    pub hide_bnd: bool,
    /// Upstream proxies for outbound traffic (`-F`); `None` connects directly.
    pub upstream: Option<Arc<crate::client::Chain>>,
    /// gost's method-level TLS (`80`/`82`, specs/gost-socks.md §3.3–§3.4): with a config, those
    /// methods are selected when offered; `None` is gost's `notls=true`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Counters the harness can assert on.
    pub stats: Arc<Stats>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            users: Vec::new(),
            allow_empty_password: false,
            socks4_userids: Vec::new(),
            socks4: true,
            socks5: true,
            allow_bind: false,
            bind_any_peer: false,
            allow_udp: false,
            udp_allow_foreign_client_addr: false,
            udp_allow_port_change: false,
            udp_full_cone: false,
            deny_private: false,
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(15),
            bind_accept_timeout: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(300),
            udp_idle_timeout: Duration::from_secs(300),
            udp_buffer_size: 65_535,
            timeout_reply_ttl_expired: false,
            max_connections: 10_000,
            hide_bnd: false,
            upstream: None,
            tls: None,
            stats: Arc::default(),
        }
    }
}

impl ServerConfig {
    /// The SOCKS5 methods this server selects, in preference order (D-17).
    ///
    /// With TLS this is gost HEAD's RFC-compliant rule (specs/gost-socks.md §3.3): `82` before
    /// `02` with authentication, `80` before `00` without, each only if offered, else `FF`.
    /// gost REL's rule (answer `00`/`02` even when not offered, `82` when only `80` was) is a
    /// quirk we do not copy: gost clients always offer what they accept, so the offered-only
    /// rule interoperates with them and stays correct for RFC clients.
    pub fn methods(&self) -> Vec<Method> {
        match (self.users.is_empty(), self.tls.is_some()) {
            (true, false) => vec![Method::NO_AUTH],
            (true, true) => vec![Method::TLS, Method::NO_AUTH],
            (false, false) => vec![Method::USER_PASS],
            (false, true) => vec![Method::TLS_AUTH, Method::USER_PASS],
        }
    }

    /// The upstream chain, when one with at least one hop is configured.
    pub fn chain(&self) -> Option<&Arc<crate::client::Chain>> {
        self.upstream.as_ref().filter(|c| !c.hops.is_empty())
    }

    /// Whether `user`/`pass` match a configured credential: byte-exact, length-exact, and in time
    /// independent of where the first difference is (R-20, R-22, V-15).
    pub fn check_credentials(&self, user: &[u8], pass: &[u8]) -> bool {
        if pass.is_empty() && !self.allow_empty_password {
            return false;
        }
        let mut ok = false;
        for c in &self.users {
            ok |= ct_eq(&c.user, user) & ct_eq(&c.pass, pass);
        }
        ok
    }

    /// Whether SOCKS4 USERIDs are checked at all (a list is configured).
    pub fn checks_socks4_userid(&self) -> bool {
        !self.socks4_userids.is_empty()
    }

    /// Whether a SOCKS4 request with `userid` may go on: byte-exact against the configured list
    /// (gost compares the USERID with its user name the same way). Always true without a list.
    pub fn check_socks4_userid(&self, userid: &[u8]) -> bool {
        if self.socks4_userids.is_empty() {
            return true;
        }
        let mut ok = false;
        for id in &self.socks4_userids {
            ok |= ct_eq(id, userid);
        }
        ok
    }

    /// Whether a connection to `dest` is allowed; `listeners` are the server's own sockets.
    /// The answer is the REP to send on refusal.
    pub fn check_destination(&self, dest: SocketAddr, listeners: &[SocketAddr]) -> Result<(), Reply> {
        let ip = dest.ip().to_canonical();
        if dest.port() == 0 || is_unspecified_net(ip) {
            return Err(Reply::NOT_ALLOWED);
        }
        let is_self = listeners.iter().any(|l| {
            l.port() == dest.port() && (l.ip().to_canonical() == ip || l.ip().is_unspecified() || ip.is_loopback())
        });
        if is_self {
            return Err(Reply::NOT_ALLOWED); // V-22
        }
        if self.deny_private && is_internal(ip) {
            return Err(Reply::NOT_ALLOWED);
        }
        Ok(())
    }
}

/// 0.0.0.0/8 and `::`: connecting there reaches local listeners on Linux.
fn is_unspecified_net(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 0,
        IpAddr::V6(v6) => v6.is_unspecified(),
    }
}

/// Addresses a public proxy must not reach by default, embedded IPv4 included.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || o[0] == 0
                || o[0] >= 240
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10 CGNAT
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0/24
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18/15
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let embedded_v4 =
                |hi: u16, lo: u16| std::net::Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] & 0xffc0) == 0xfec0 // site local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0064 && s[1] == 0xff9b && is_internal(embedded_v4(s[6], s[7]).into())) // NAT64
                || (s[0] == 0x2002 && is_internal(embedded_v4(s[1], s[2]).into())) // 6to4
                || (s[0] == 0x2001 && s[1] == 0) // Teredo
                || (s[..6] == [0; 6] && is_internal(embedded_v4(s[6], s[7]).into()))
            // v4-compatible
        }
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    // The length is not secret (it is on the wire); the content comparison is branch-free.
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Counters exposed for tests and operators.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections closed at once because of the connection cap.
    pub over_cap: AtomicU64,
    /// Handshakes that failed or timed out.
    pub handshake_failures: AtomicU64,
    /// RFC 1929 failures.
    pub auth_failures: AtomicU64,
    /// Requests refused by destination policy.
    pub policy_denials: AtomicU64,
    /// Tunnels currently relaying.
    pub live_tunnels: AtomicU64,
    /// Datagrams dropped because their source is not the associated client (V-01, R-54).
    pub udp_dropped_foreign: AtomicU64,
    /// Datagrams dropped for FRAG≠0 (D-12, R-57).
    pub udp_dropped_frag: AtomicU64,
    /// Datagrams dropped for a malformed header.
    pub udp_dropped_malformed: AtomicU64,
    /// Datagrams dropped by destination policy.
    pub udp_dropped_policy: AtomicU64,
    /// Datagrams from remotes the client never contacted (D-16, R-62).
    pub udp_dropped_unsolicited: AtomicU64,
    /// Datagrams relayed client → remote.
    pub udp_relayed_out: AtomicU64,
    /// Datagrams relayed remote → client.
    pub udp_relayed_in: AtomicU64,
}

impl Stats {
    /// Increments a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socks4_userid_list_is_exact_and_absent_means_any() {
        let mut c = ServerConfig::default();
        assert!(!c.checks_socks4_userid());
        assert!(c.check_socks4_userid(b"anyone"));
        c.socks4_userids.push(b"admin".to_vec());
        assert!(c.checks_socks4_userid());
        assert!(c.check_socks4_userid(b"admin"));
        assert!(!c.check_socks4_userid(b"Admin"));
        assert!(!c.check_socks4_userid(b"admin2"));
        assert!(!c.check_socks4_userid(b""));
    }

    fn cfg() -> ServerConfig {
        ServerConfig {
            users: vec![Credential { user: b"user".to_vec(), pass: b"pass".to_vec() }],
            ..Default::default()
        }
    }

    #[test]
    fn credentials_are_exact_r20() {
        let c = cfg();
        assert!(c.check_credentials(b"user", b"pass"));
        for (u, p) in [("use", "pass"), ("user", "pas"), ("user", "pass\0"), ("User", "pass"), ("user", ""), ("", "")] {
            assert!(!c.check_credentials(u.as_bytes(), p.as_bytes()), "{u:?}/{p:?}");
        }
    }

    #[test]
    fn empty_password_needs_explicit_permission_d04() {
        let mut c =
            ServerConfig { users: vec![Credential { user: b"u".to_vec(), pass: vec![] }], ..Default::default() };
        assert!(!c.check_credentials(b"u", b""));
        c.allow_empty_password = true;
        assert!(c.check_credentials(b"u", b""));
    }

    #[test]
    fn destinations() {
        let c = ServerConfig::default();
        let me: SocketAddr = "127.0.0.1:1080".parse().unwrap();
        let ok = |s: &str| c.check_destination(s.parse().unwrap(), &[me]);
        assert_eq!(ok("127.0.0.1:80"), Ok(()));
        assert_eq!(ok("127.0.0.1:0"), Err(Reply::NOT_ALLOWED));
        assert_eq!(ok("0.0.0.0:80"), Err(Reply::NOT_ALLOWED));
        assert_eq!(ok("0.1.2.3:80"), Err(Reply::NOT_ALLOWED));
        assert_eq!(ok("[::]:80"), Err(Reply::NOT_ALLOWED));
        assert_eq!(ok("127.0.0.1:1080"), Err(Reply::NOT_ALLOWED));
        assert_eq!(ok("127.0.0.2:1080"), Err(Reply::NOT_ALLOWED));
        assert_eq!(ok("[::ffff:127.0.0.1]:1080"), Err(Reply::NOT_ALLOWED));
        let strict = ServerConfig { deny_private: true, ..Default::default() };
        for s in [
            "127.0.0.1:80",
            "10.1.2.3:80",
            "169.254.169.254:80",
            "100.100.100.200:80",
            "[::ffff:7f00:1]:80",
            "[fe80::1]:80",
            "[64:ff9b::a00:1]:80",
        ] {
            assert_eq!(strict.check_destination(s.parse().unwrap(), &[]), Err(Reply::NOT_ALLOWED), "{s}");
        }
        assert_eq!(strict.check_destination("93.184.216.34:80".parse().unwrap(), &[]), Ok(()));
    }
}
