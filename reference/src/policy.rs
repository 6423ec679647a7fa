//! Every decision the server handlers consult: who may authenticate, where a request may go,
//! limits and timeouts. Choices on RFC ambiguities follow the decisions D-01 … D-17 of
//! docs/catalogue.md.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::proto::{Method, Reply};

mod names;
pub mod reply;
mod rules;
mod udp;

pub use names::valid_hostname;
pub use rules::{DestRule, DestRules};
pub use udp::{UdpClientLock, UdpDeclared, MAX_REMOTES};

/// Ports below this one are privileged: a client may not make the server listen there.
pub const FIRST_UNPRIVILEGED_PORT: u16 = 1024;

/// whether a client may ask the server to listen on `port` (BIND, MBIND, UDP-TUN bind
/// mode). 0 means "any port" and is allowed; 1 to 1023 are refused.
pub fn check_listen_port(port: u16) -> Result<(), &'static str> {
    if port != 0 && port < FIRST_UNPRIVILEGED_PORT {
        return Err("privileged port");
    }
    Ok(())
}

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
    /// Concurrent connections still in the handshake (R-85's pre-auth cap); `None` derives it
    /// from `max_connections` (see [`ServerConfig::handshake_cap`]). When a new connection would
    /// exceed it, the oldest connection still handshaking is closed, so idlers cannot crowd out
    /// clients that complete their handshake promptly.
    pub max_handshakes: Option<usize>,
    /// Destination rules (`allow=`/`deny=`, V-08): checked for every endpoint the server talks to
    /// on a client's behalf, after name resolution.
    pub rules: DestRules,
    /// Replace BND in success replies with zeros to hide egress addresses.
    pub hide_bnd: bool,
    /// What the server is connected to in this process: not decisions (see [`Wiring`]).
    pub wiring: Wiring,
}

/// The parts of a server's configuration that are not decisions: the process around it (its
/// other listeners, its upstream chain, its certificate, its counters). Kept apart from the
/// policy fields so that [`ServerConfig`] reads as the list of choices a deployment makes.
#[derive(Debug, Clone, Default)]
pub struct Wiring {
    /// Every listening socket of this process (all services and forwarders), for the
    /// self-connect check (V-22, R-74). Services started together share one set.
    pub local_listeners: Arc<LocalListeners>,
    /// Upstream proxies for outbound traffic (`-F`); `None` connects directly.
    pub upstream: Option<Arc<crate::client::Chain>>,
    /// gost's method-level TLS (`80`/`82`, docs/gost.md §3.3–§3.4): with a config, those
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
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_handshakes: None,
            rules: DestRules::default(),
            hide_bnd: false,
            wiring: Wiring::default(),
        }
    }
}

impl ServerConfig {
    /// The SOCKS5 methods this server selects, in preference order (D-17).
    ///
    /// With TLS this is gost HEAD's RFC-compliant rule (docs/gost.md §3.3): `82` before
    /// `02` with authentication, `80` before `00` without, each only if offered, else `FF`.
    /// gost REL's rule (answer `00`/`02` even when not offered, `82` when only `80` was) is a
    /// quirk we do not copy: gost clients always offer what they accept, so the offered-only
    /// rule interoperates with them and stays correct for RFC clients.
    pub fn methods(&self) -> Vec<Method> {
        match (self.users.is_empty(), self.wiring.tls.is_some()) {
            (true, false) => vec![Method::NO_AUTH],
            (true, true) => vec![Method::TLS, Method::NO_AUTH],
            (false, false) => vec![Method::USER_PASS],
            (false, true) => vec![Method::TLS_AUTH, Method::USER_PASS],
        }
    }

    /// The upstream chain, when one with at least one hop is configured.
    pub fn chain(&self) -> Option<&Arc<crate::client::Chain>> {
        self.wiring.upstream.as_ref().filter(|c| !c.hops.is_empty())
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

    /// Whether a TCP connection to `dest` is allowed. The answer is the REP to send on refusal
    /// (REP 02, which the SOCKS4 encoder turns into 0x5B).
    pub fn check_destination(&self, dest: SocketAddr) -> Result<(), Reply> {
        self.check_destination_via(dest, Transport::Tcp).map_err(|(rep, _)| rep)
    }

    /// Like [`ServerConfig::check_destination`] for a UDP datagram's destination, with the
    /// reason for the debug log.
    pub fn check_datagram_destination(&self, dest: SocketAddr) -> Result<(), (Reply, &'static str)> {
        self.check_destination_via(dest, Transport::Udp)
    }

    /// The destination check for either transport, with a reason for the debug log.
    pub fn check_destination_via(&self, dest: SocketAddr, transport: Transport) -> Result<(), (Reply, &'static str)> {
        let ip = dest.ip().to_canonical();
        if dest.port() == 0 || is_unspecified_net(ip) {
            return Err((Reply::NOT_ALLOWED, "port 0 or unspecified address"));
        }
        if self.wiring.local_listeners.contains(transport, SocketAddr::new(ip, dest.port())) {
            return Err((Reply::NOT_ALLOWED, "destination is one of this process's listeners"));
            // V-22
        }
        if self.deny_private && is_internal(ip) {
            return Err((Reply::NOT_ALLOWED, "internal address and denyPrivate is set"));
            //
        }
        if !self.rules.permits(SocketAddr::new(ip, dest.port())) {
            return Err((Reply::NOT_ALLOWED, "denied by the allow/deny rules")); // V-08
        }
        Ok(())
    }

    /// Whether a remote peer of a listening command (BIND's connecting host, an MBIND peer, a
    /// UDP-TUN bind-mode sender) may be relayed: the allow/deny rules only, since the peer came
    /// to us and the SSRF and self-connect checks are about where we go.
    pub fn check_peer(&self, peer: SocketAddr) -> Result<(), Reply> {
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        if self.rules.permits(peer) {
            Ok(())
        } else {
            Err(Reply::NOT_ALLOWED)
        }
    }

    /// The cap on connections still in the handshake: `max_handshakes`, or a quarter of
    /// `max_connections` but at most 256 (the pre-auth figure of F-07 in docs/catalogue.md); never more
    /// than `max_connections`, and at least one.
    pub fn handshake_cap(&self) -> usize {
        let derived = (self.max_connections / 4).clamp(1, 256);
        self.max_handshakes.unwrap_or(derived).clamp(1, self.max_connections.max(1))
    }
}

/// Where a listening command (BIND, gost's MBIND and UDP-TUN bind mode) listens: always on the
/// address the control connection came in on (D-07, R-46), so a client of a loopback-only server
/// cannot open listeners on other interfaces. A requested unspecified address (gost's `rtcp://:port`
/// asks for `0.0.0.0`) means "wherever the server listens" and gets that address; a request for
/// any other address than that one is refused with the reason, as the REP 02 goes out.
pub fn listen_address(requested: IpAddr, control_local: IpAddr) -> Result<IpAddr, &'static str> {
    let local = control_local.to_canonical();
    let requested = requested.to_canonical();
    if requested.is_unspecified() || requested == local {
        Ok(local)
    } else {
        Err("a listening command may only listen on the address the client connected to")
    }
}

/// The connection cap when nothing else limits it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Descriptors one tunnel holds: the client socket and the outbound socket. Splice pipes are
/// not per tunnel: a direction borrows one from a shared pool only while a chunk passes
/// ([`SPLICE_PIPES`]).
pub const FDS_PER_TUNNEL: u64 = 2;

/// Descriptors kept back from the tunnel budget for listeners, the runtime, logging and the
/// accept that has to happen before a connection over the cap can be closed.
pub const FD_RESERVE: u64 = 64;

/// Most splice pipes the relay holds at once (two descriptors each), shared by every tunnel: a
/// chunk in flight per pipe is far more concurrency than two cores can use.
pub const SPLICE_PIPES: u64 = 128;

/// The splice pipe budget of a process whose descriptor limit is `nofile`: [`SPLICE_PIPES`],
/// or an eighth of what is left after [`FD_RESERVE`] on a small limit.
pub fn splice_pipe_budget(nofile: u64) -> u64 {
    SPLICE_PIPES.min(nofile.saturating_sub(FD_RESERVE) / 8)
}

/// The default connection cap for each of `services` services sharing a process whose
/// descriptor limit is `nofile`: as many tunnels as fit at [`FDS_PER_TUNNEL`] each once the
/// reserve and the splice pipes are set aside, at most [`DEFAULT_MAX_CONNECTIONS`], at least one.
pub fn max_connections_for_fds(nofile: u64, services: usize) -> usize {
    let for_tunnels = nofile.saturating_sub(FD_RESERVE).saturating_sub(2 * splice_pipe_budget(nofile));
    let per_service = for_tunnels / FDS_PER_TUNNEL / services.max(1) as u64;
    usize::try_from(per_service).unwrap_or(usize::MAX).clamp(1, DEFAULT_MAX_CONNECTIONS)
}

/// The transport of a listening socket: a TCP destination can only loop into a TCP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A TCP listener (SOCKS services, tcp:// forwarders).
    Tcp,
    /// A UDP socket that relays what it receives (udp:// forwarders).
    Udp,
}

/// The listening sockets of the process, shared by every service so that none of them can be
/// made to connect to another (V-22, R-74) and no forwarder can be pointed at one.
#[derive(Debug, Default)]
pub struct LocalListeners {
    addrs: RwLock<Vec<(Transport, SocketAddr)>>,
}

/// A listening socket's record in a [`LocalListeners`] set; dropping it removes the record.
#[derive(Debug)]
pub struct ListenerRecord {
    set: Arc<LocalListeners>,
    transport: Transport,
    addr: SocketAddr,
}

impl Drop for ListenerRecord {
    fn drop(&mut self) {
        self.set.remove(self.transport, self.addr);
    }
}

/// Two sets are equal when they record the same sockets (for chains compared in tests).
impl PartialEq for LocalListeners {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other) || self.snapshot() == other.snapshot()
    }
}

impl Eq for LocalListeners {}

impl LocalListeners {
    /// Records a listening socket.
    pub fn add(&self, transport: Transport, addr: SocketAddr) {
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        self.addrs.write().unwrap_or_else(|e| e.into_inner()).push((transport, addr));
    }

    /// Records a listening socket until the returned guard is dropped, so a service whose task
    /// is cancelled leaves no stale record behind.
    pub fn register(self: &Arc<Self>, transport: Transport, addr: SocketAddr) -> ListenerRecord {
        self.add(transport, addr);
        ListenerRecord { set: self.clone(), transport, addr }
    }

    /// Forgets one record of a listening socket (when its service stops).
    pub fn remove(&self, transport: Transport, addr: SocketAddr) {
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        let mut v = self.addrs.write().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = v.iter().position(|x| *x == (transport, addr)) {
            v.remove(i);
        }
    }

    /// Whether connecting to `dest` would reach one of the recorded sockets. A listener on the
    /// unspecified address is reached through any local address, and every loopback address
    /// reaches a loopback listener's port; both are treated as self to stay on the safe side.
    pub fn contains(&self, transport: Transport, dest: SocketAddr) -> bool {
        let ip = dest.ip().to_canonical();
        let v = self.addrs.read().unwrap_or_else(|e| e.into_inner());
        v.iter().any(|(t, l)| {
            *t == transport
                && l.port() == dest.port()
                && (l.ip() == ip || l.ip().is_unspecified() || (ip.is_loopback() && l.ip().is_loopback()))
        })
    }

    /// Every recorded socket, for start-up checks and logs.
    pub fn snapshot(&self) -> Vec<(Transport, SocketAddr)> {
        self.addrs.read().unwrap_or_else(|e| e.into_inner()).clone()
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
    /// Datagrams dropped for a malformed header or RSV≠0 (D-14).
    pub udp_dropped_malformed: AtomicU64,
    /// Datagrams dropped by destination policy.
    pub udp_dropped_policy: AtomicU64,
    /// Datagrams from remotes the client never contacted (D-16, R-62).
    pub udp_dropped_unsolicited: AtomicU64,
    /// Datagrams relayed client → remote.
    pub udp_relayed_out: AtomicU64,
    /// Datagrams relayed remote → client.
    pub udp_relayed_in: AtomicU64,
    /// Connections closed while still handshaking to make room under the handshake cap.
    pub handshakes_shed: AtomicU64,
    /// UDP associations currently open; it drops once an association's relay socket is closed,
    /// so a test can wait for "the association has ended" instead of sleeping.
    pub live_udp_associations: AtomicU64,
}

/// Counts one live item in a gauge of [`Stats`] for as long as it is held.
#[derive(Debug)]
pub struct Live<'a>(&'a AtomicU64);

impl<'a> Live<'a> {
    /// Increments `gauge`; dropping the guard decrements it again, on every exit path.
    pub fn count(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Live(gauge)
    }
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
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
        c.wiring.local_listeners.add(Transport::Tcp, "127.0.0.1:1080".parse().unwrap());
        let ok = |s: &str| c.check_destination(s.parse().unwrap());
        assert_eq!(ok("127.0.0.1:80"), Ok(()));
        assert_eq!(ok("127.0.0.1:0"), Err(Reply::NOT_ALLOWED));
        assert_eq!(ok("0.0.0.0:80"), Err(Reply::NOT_ALLOWED));
        assert_eq!(ok("0.1.2.3:80"), Err(Reply::NOT_ALLOWED));
        assert_eq!(ok("[::]:80"), Err(Reply::NOT_ALLOWED));
        assert_eq!(ok("127.0.0.1:1080"), Err(Reply::NOT_ALLOWED));
        assert_eq!(ok("127.0.0.2:1080"), Err(Reply::NOT_ALLOWED));
        assert_eq!(ok("[::ffff:127.0.0.1]:1080"), Err(Reply::NOT_ALLOWED));
        // A TCP listener is not reached by a datagram, and vice versa.
        assert_eq!(c.check_datagram_destination("127.0.0.1:1080".parse().unwrap()), Ok(()));
        c.wiring.local_listeners.add(Transport::Udp, "0.0.0.0:5353".parse().unwrap());
        assert!(c.check_datagram_destination("10.1.1.1:5353".parse().unwrap()).is_err());
        assert_eq!(ok("10.1.1.1:5353"), Ok(()));
        c.wiring.local_listeners.remove(Transport::Tcp, "127.0.0.1:1080".parse().unwrap());
        assert_eq!(ok("127.0.0.1:1080"), Ok(()));
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
            assert_eq!(strict.check_destination(s.parse().unwrap()), Err(Reply::NOT_ALLOWED), "{s}");
        }
        assert_eq!(strict.check_destination("93.184.216.34:80".parse().unwrap()), Ok(()));
    }

    #[test]
    fn rules_apply_to_destinations_and_peers_v08() {
        let c = ServerConfig {
            rules: DestRules { allow: DestRules::parse_list("127.0.0.0/8").unwrap(), deny: vec![] },
            ..Default::default()
        };
        assert_eq!(c.check_destination("127.0.0.1:80".parse().unwrap()), Ok(()));
        assert_eq!(c.check_destination("[::1]:80".parse().unwrap()), Err(Reply::NOT_ALLOWED));
        assert!(c.check_datagram_destination("10.0.0.1:53".parse().unwrap()).is_err());
        assert_eq!(c.check_peer("[::ffff:127.0.0.9]:4000".parse().unwrap()), Ok(()));
        assert_eq!(c.check_peer("10.0.0.1:4000".parse().unwrap()), Err(Reply::NOT_ALLOWED));
    }

    #[test]
    fn listeners_stay_on_the_control_connections_address_d07() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(listen_address("0.0.0.0".parse().unwrap(), lo), Ok(lo));
        assert_eq!(listen_address("::".parse().unwrap(), lo), Ok(lo));
        assert_eq!(listen_address(lo, "::ffff:127.0.0.1".parse().unwrap()), Ok(lo));
        assert!(listen_address("10.0.0.1".parse().unwrap(), lo).is_err());
        assert!(listen_address("127.0.0.2".parse().unwrap(), lo).is_err());
    }

    #[test]
    fn caps_fit_the_descriptor_budget() {
        // 1024: 120 pipes (240 fds) and (1024 - 64 - 240) / 2 tunnels.
        assert_eq!(splice_pipe_budget(1024), 120);
        assert_eq!(max_connections_for_fds(1024, 1), 360);
        assert_eq!(max_connections_for_fds(1024, 2), 180);
        // The hard limit of these machines: 128 pipes, and 9,840 tunnels at two fds each.
        assert_eq!(splice_pipe_budget(20_000), SPLICE_PIPES);
        assert_eq!(max_connections_for_fds(20_000, 1), 9_840);
        assert_eq!(max_connections_for_fds(1 << 20, 1), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(max_connections_for_fds(10, 1), 1);
        let c = ServerConfig { max_connections: 1000, ..Default::default() };
        assert_eq!(c.handshake_cap(), 250);
        assert_eq!(ServerConfig::default().handshake_cap(), 256);
        let tiny = ServerConfig { max_connections: 2, max_handshakes: Some(50), ..Default::default() };
        assert_eq!(tiny.handshake_cap(), 2, "never above the connection cap");
    }
}
