//! Chains of proxies: CONNECT through every hop, BIND and UDP ASSOCIATE at the last one.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::handshake::Handshake;
use super::udp::UdpAssociation;
use super::Error;
use crate::proto::client::ClientRequest;
use crate::proto::Method;
use crate::proto::{Address, Command, Host, Version};
use crate::tls::Stream;

/// What a hop is asked, as gost's connector of a node: a SOCKS request, or nothing at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connector {
    /// A SOCKS proxy of this version: it is sent a greeting and a request.
    Socks(Version),
    /// A forward node (gost's `forward`/`tcp` connector, `-F forward+tls://host:port`): only
    /// the hop's transport, to a server whose forward handler chooses the target itself. No
    /// SOCKS byte is sent, so only a CONNECT goes through it, its target unused, and only as
    /// the last hop (an earlier hop would have to be told where to go next).
    Forward,
}

/// One proxy in a chain.
#[derive(Clone, PartialEq, Eq)]
pub struct Hop {
    /// What this proxy is asked: the SOCKS version it speaks, or nothing (a forward node).
    pub connector: Connector,
    /// Where the proxy listens. A name is resolved locally: it is the proxy's own address, which
    /// the previous hop (or this host) must reach.
    pub proxy: Address,
    /// RFC 1929 user and password for SOCKS5, sent only if the proxy selects method 02 (C-08).
    /// For SOCKS4/4a the user part is the USERID and the password is ignored.
    pub credentials: Option<(Vec<u8>, Vec<u8>)>,
    /// Whether to offer gost's TLS methods `80`/`82` (SOCKS5 only; docs/gost.md §3.2).
    pub tls: HopTls,
    /// The transport to this proxy (docs/transports.md): it runs on the connection to this
    /// hop, which for a later hop is the tunnel through the earlier ones. Shared, because an
    /// smux dialer keeps its session across the chain's clones.
    pub transport: Arc<crate::transport::Dialer>,
}

/// gost's method-level TLS for one hop (docs/gost.md §3.2, §3.4).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HopTls {
    /// Offer only `00` (and `02` with credentials): gost's `notls=true`.
    #[default]
    Off,
    /// Offer `80` (and `82` with credentials) after them, as gost's client does by default, and
    /// accept any server certificate, as gost does (`InsecureSkipVerify`): gost servers present
    /// a fresh self-signed certificate, so verifying would fail against every default gost.
    /// The tunnel is then private against passive observers only.
    AcceptAny,
    /// Offer the TLS methods and verify the server certificate against the CA certificates in
    /// this PEM file, with the hop's host as the expected name (gost's `secure=true`).
    Verify(std::path::PathBuf),
}

impl Hop {
    /// A SOCKS hop of `version`, without credentials.
    pub fn new(version: Version, proxy: Address) -> Self {
        Self::with_connector(Connector::Socks(version), proxy)
    }

    /// A forward node at `proxy` (see [`Connector::Forward`]); give it a transport, or it is a
    /// plain TCP connection to `proxy`.
    pub fn forward(proxy: Address) -> Self {
        Self::with_connector(Connector::Forward, proxy)
    }

    fn with_connector(connector: Connector, proxy: Address) -> Self {
        Self { connector, proxy, credentials: None, tls: HopTls::Off, transport: Arc::default() }
    }

    /// The SOCKS version this hop speaks; `None` for a forward node.
    pub fn version(&self) -> Option<Version> {
        match self.connector {
            Connector::Socks(v) => Some(v),
            Connector::Forward => None,
        }
    }

    /// The same hop with credentials.
    pub fn with_credentials(mut self, user: impl Into<Vec<u8>>, pass: impl Into<Vec<u8>>) -> Self {
        self.credentials = Some((user.into(), pass.into()));
        self
    }
}

impl std::fmt::Debug for Hop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a password.
        f.debug_struct("Hop")
            .field("connector", &self.connector)
            .field("proxy", &self.proxy)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u.escape_ascii().to_string()))
            .field("tls", &self.tls)
            .field("transport", &self.transport.kind())
            .finish()
    }
}

/// Proxies in the order they are traversed; no hops means direct connections.
///
/// Failures are never papered over: if any hop fails, the operation fails with
/// [`Error::Hop`] naming it, and nothing is tried without the proxies (C-07).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// The hops; hop `i` is asked to CONNECT to hop `i + 1`, the last one to the target.
    pub hops: Vec<Hop>,
    /// Limit for each hop's greeting and authentication, up to the moment the request is sent.
    pub handshake_timeout: Duration,
    /// Limit for a TCP connect to the first hop (or the target when direct), and for each hop's
    /// reply to a request, since a proxy replies to CONNECT only after its own connect.
    pub connect_timeout: Duration,
    /// The listening sockets of this process: the chain never dials one of them directly (the
    /// first hop, or the target of a direct chain), since that is a loop that consumes
    /// descriptors until none are left. `None` checks nothing (library use without services).
    pub own_listeners: Option<Arc<crate::policy::LocalListeners>>,
}

impl Default for Chain {
    fn default() -> Self {
        Self::direct()
    }
}

/// Default [`Chain::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`Chain::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

impl Chain {
    /// A chain through `hops` with the default timeouts.
    pub fn new(hops: Vec<Hop>) -> Self {
        Self {
            hops,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            own_listeners: None,
        }
    }

    /// No proxies: connections go straight to the target (a configuration, never a fallback).
    pub fn direct() -> Self {
        Self::new(Vec::new())
    }

    /// Whether the last hop is a forward node: then only [`Chain::connect`] goes through, and
    /// the far server, not the target given here, decides where the stream goes.
    pub fn ends_in_forward(&self) -> bool {
        self.hops.last().is_some_and(|h| h.connector == Connector::Forward)
    }

    /// Opens a stream to `target` through every hop in order.
    pub async fn connect(&self, target: &Address) -> Result<Stream, Error> {
        let Some(last) = self.hops.len().checked_sub(1) else {
            return self.dial_first(target).await.map(Stream::Tcp);
        };
        self.preflight(Command::CONNECT, target)?;
        let stream = self.reach(last).await?;
        if self.ends_in_forward() {
            // The forward node's server picks the target: the stream is the tunnel already.
            return Ok(stream);
        }
        let (stream, _, _) = self.negotiate(stream, last, Command::CONNECT, target).await?;
        Ok(stream)
    }

    /// Asks the last hop to listen for one connection from `peer` (BIND); earlier hops are
    /// traversed with CONNECT. The returned [`PendingBind`] carries the listening address to
    /// hand to the peer.
    pub async fn bind(&self, peer: &Address) -> Result<PendingBind, Error> {
        let Some(last) = self.hops.len().checked_sub(1) else {
            return Err(Error::Unsupported("BIND needs at least one proxy"));
        };
        self.preflight(Command::BIND, peer)?;
        let stream = self.reach(last).await?;
        let (stream, hs, bnd) = self.negotiate(stream, last, Command::BIND, peer).await?;
        // A zero BND.ADDR means "the proxy's own address" (R-46, SOCKS4 text).
        let bound = self.unspecified_to_proxy(&stream, last, bnd);
        Ok(PendingBind { bound, stream, handshake: hs, index: last, proxy: self.hops[last].proxy.clone() })
    }

    /// Sets up a UDP association at the last hop, which must speak SOCKS5. The control stream
    /// goes through the chain; datagrams go directly from a local UDP socket to the relay.
    ///
    /// With one hop, the request declares the UDP socket's own address, as RFC 1928 §4 intends
    /// (C-11). Behind more hops the last proxy sees the previous hop as its peer, not us, so the
    /// request declares an all-zero IP with our port, leaving the proxy to learn the IP from the
    /// first datagram instead of rejecting a "foreign" address (D-01).
    pub async fn udp_associate(&self) -> Result<UdpAssociation, Error> {
        let Some(last) = self.hops.len().checked_sub(1) else {
            return Err(Error::Unsupported("UDP ASSOCIATE needs at least one proxy"));
        };
        self.last_speaks_v5(last, "UDP ASSOCIATE needs SOCKS5 at the last hop")?;
        self.preflight(Command::UDP_ASSOCIATE, &Address::UNSPECIFIED)?;
        let control = self.reach(last).await?;
        let local = control.local_addr()?;
        let socket = tokio::net::UdpSocket::bind(SocketAddr::new(local.ip(), 0)).await?;
        let ours = socket.local_addr()?;
        let declared = if last == 0 {
            Address::from(ours)
        } else {
            let ip = if ours.is_ipv4() { IpAddr::V4(Ipv4Addr::UNSPECIFIED) } else { IpAddr::V6(0.into()) };
            Address { host: Host::Ip(ip), port: ours.port() }
        };
        let (control, _, bnd) = self.negotiate(control, last, Command::UDP_ASSOCIATE, &declared).await?;
        let proxy = &self.hops[last].proxy;
        let relay = self.relay_addr(&control, last, bnd).await.map_err(|e| e.at_hop(last, proxy))?;
        if relay.is_ipv4() != ours.is_ipv4() {
            return Err(Error::Unsupported("the UDP relay's address family differs from the control connection's")
                .at_hop(last, proxy));
        }
        // Connecting makes the kernel drop datagrams from anyone but the relay (C-11); the
        // association checks the source again in case the socket is ever left unconnected.
        socket.connect(relay).await?;
        Ok(UdpAssociation::new(control, socket, relay))
    }

    /// gost's MBIND (`F2`, docs/gost.md §4.5) at the last hop, which must speak SOCKS5:
    /// the proxy listens on `listen` and every connection to it arrives as a stream of the
    /// returned [`super::MuxBind`] (smux v1, gost's default).
    pub async fn mbind(&self, listen: &Address) -> Result<super::MuxBind, Error> {
        let Some(last) = self.hops.len().checked_sub(1) else {
            return Err(Error::Unsupported("MBIND needs at least one proxy"));
        };
        self.last_speaks_v5(last, "MBIND needs SOCKS5 at the last hop")?;
        self.preflight(Command::MUX_BIND, listen)?;
        let stream = self.reach(last).await?;
        let (stream, _, bnd) = self.negotiate(stream, last, Command::MUX_BIND, listen).await?;
        let bound = self.unspecified_to_proxy(&stream, last, bnd);
        let session = crate::smux::Session::new(stream, crate::smux::Role::Server, crate::smux::Config::default());
        Ok(super::MuxBind::new(bound, session))
    }

    /// Opens gost's UDP-TUN (`F3`, docs/gost.md §4.7) at the last hop, which must speak
    /// SOCKS5: relay mode with `bind = None` (the request carries `0.0.0.0:0`, as gost's),
    /// bind mode with the address the proxy is to listen on (its port must not be 0, which
    /// would mean relay mode). Earlier hops are traversed with CONNECT; datagrams travel inside
    /// the connection, so this works where UDP itself cannot pass.
    pub async fn udp_tun(&self, bind: Option<&Address>) -> Result<super::UdpTunnel, Error> {
        let Some(last) = self.hops.len().checked_sub(1) else {
            return Err(Error::Unsupported("UDP-TUN needs at least one proxy"));
        };
        self.last_speaks_v5(last, "UDP-TUN needs SOCKS5 at the last hop")?;
        let target = match bind {
            Some(a) if a.port == 0 => return Err(Error::Unsupported("UDP-TUN bind mode needs a non-zero port")),
            Some(a) => a.clone(),
            None => Address { host: Host::Ip(Ipv4Addr::UNSPECIFIED.into()), port: 0 },
        };
        self.preflight(Command::UDP_TUN, &target)?;
        let stream = self.reach(last).await?;
        let (stream, _, bnd) = self.negotiate(stream, last, Command::UDP_TUN, &target).await?;
        Ok(super::UdpTunnel::new(stream, bnd))
    }

    /// Rejects, before any connection is made, a request some hop could never encode: an
    /// over-long name or credential, or a UDP ASSOCIATE through a hop that cannot carry it
    /// (C-01, C-02, V-28: the error comes before a byte is sent), or a kcp hop behind another hop.
    fn preflight(&self, command: Command, target: &Address) -> Result<(), Error> {
        let last = self.hops.len() - 1;
        if self.ends_in_forward() && command != Command::CONNECT {
            return Err(self.forward_refusal(last));
        }
        for (i, hop) in self.hops.iter().enumerate() {
            if i > 0 && hop.transport.kind().is_udp() {
                // Its datagrams would have to cross the earlier hops, which carry streams.
                return Err(Error::Unsupported("kcp runs over UDP: it can only be the first hop").at_hop(i, &hop.proxy));
            }
            let Some(version) = hop.version() else {
                if i == last {
                    // A forward node is sent nothing: there is no request to check.
                    continue;
                }
                // It cannot be told where to go next: its server has the target.
                return Err(Error::Unsupported("a forward node can only be the last hop").at_hop(i, &hop.proxy));
            };
            let (cmd, next) = if i == last { (command, target) } else { (Command::CONNECT, &self.hops[i + 1].proxy) };
            // SOCKS4 resolves names locally (C-09), so stand in an IPv4 address for a name here;
            // the name's length is still checked.
            let stand_in;
            let next = match (&next.host, version) {
                (Host::Domain(d), Version::V4) => {
                    Address::domain(d.clone(), next.port).map_err(|e| Error::from(e).at_hop(i, &hop.proxy))?;
                    stand_in = Address { host: Host::Ip(Ipv4Addr::UNSPECIFIED.into()), port: next.port };
                    &stand_in
                }
                _ => next,
            };
            Handshake::new(request(hop, version, cmd, next.clone())).map_err(|e| e.at_hop(i, &hop.proxy))?;
        }
        Ok(())
    }

    /// Refuses, before anything is dialled, a SOCKS5-only request at a last hop that is a
    /// forward node (which sends no SOCKS at all) or speaks SOCKS4/4a (`needs` says which).
    fn last_speaks_v5(&self, last: usize, needs: &'static str) -> Result<(), Error> {
        match self.hops[last].connector {
            Connector::Socks(Version::V5) => Ok(()),
            Connector::Socks(_) => Err(Error::Unsupported(needs)),
            Connector::Forward => Err(self.forward_refusal(last)),
        }
    }

    /// The error for a request other than CONNECT through the forward node at hop `last`.
    fn forward_refusal(&self, last: usize) -> Error {
        Error::Unsupported("the last hop is a forward node: only CONNECT goes through it")
            .at_hop(last, &self.hops[last].proxy)
    }

    /// Dials the first hop and CONNECTs through hops `0..upto` so that the stream talks to hop
    /// `upto`, ready for its greeting.
    /// Dials what the chain reaches first (hop 0, or the target of a direct chain), refusing
    /// this process's own listeners when they are known.
    async fn dial_first(&self, addr: &Address) -> Result<TcpStream, Error> {
        self.refuse_own(addr, crate::policy::Transport::Tcp).await?;
        dial(addr, self.connect_timeout).await
    }

    /// Refuses `addr` when it is one of this process's own `proto` listeners (a loop).
    async fn refuse_own(&self, addr: &Address, proto: crate::policy::Transport) -> Result<(), Error> {
        if let Some(own) = &self.own_listeners {
            let addrs = within(self.connect_timeout, "name resolution", lookup(addr)).await?;
            if addrs.iter().any(|sa| own.contains(proto, *sa)) {
                return Err(Error::Unsupported("refusing to connect to one of this process's own listeners (a loop)"));
            }
        }
        Ok(())
    }

    pub(crate) async fn reach(&self, upto: usize) -> Result<Stream, Error> {
        // An smux hop with a live session needs no new connection: start from the deepest one.
        let mut start = None;
        for j in (0..=upto).rev() {
            if let Some(s) = self.hops[j].transport.reuse().await {
                start = Some((j, s));
                break;
            }
        }
        let (from, mut stream) = match start {
            Some(v) => v,
            None => {
                let first = &self.hops[0];
                // kcp makes its own (UDP) connection: no TCP dial first.
                if first.transport.kind().is_udp() {
                    self.refuse_own(&first.proxy, crate::policy::Transport::Udp)
                        .await
                        .map_err(|e| e.at_hop(0, &first.proxy))?;
                }
                let own = within(self.connect_timeout, "kcp session", async {
                    first.transport.open_own(&first.proxy).await.transpose().map_err(Error::Io)
                });
                match own.await.map_err(|e| e.at_hop(0, &first.proxy))? {
                    Some(s) => (0, s),
                    None => {
                        let tcp =
                            Stream::Tcp(self.dial_first(&first.proxy).await.map_err(|e| e.at_hop(0, &first.proxy))?);
                        (0, self.through_transport(tcp, 0).await?)
                    }
                }
            }
        };
        for i in from..upto {
            let next = self.hops[i + 1].proxy.clone();
            stream = self.negotiate(stream, i, Command::CONNECT, &next).await?.0;
            stream = self.through_transport(stream, i + 1).await?;
        }
        Ok(stream)
    }

    /// Runs hop `index`'s transport on `base`, a connection or tunnel to that hop.
    async fn through_transport(&self, base: Stream, index: usize) -> Result<Stream, Error> {
        let hop = &self.hops[index];
        if hop.transport.kind() == crate::transport::Kind::Tcp {
            return Ok(base);
        }
        let run = async { hop.transport.establish(base, &hop.proxy).await.map_err(Error::Io) };
        within(self.handshake_timeout, "transport handshake", run).await.map_err(|e| e.at_hop(index, &hop.proxy))
    }

    /// Runs hop `index`'s handshake for `command` to `dst` on `stream`, under the chain's
    /// deadlines, and returns the handshake (for BIND's second reply) with the first BND.
    pub(crate) async fn negotiate(
        &self,
        stream: Stream,
        index: usize,
        command: Command,
        dst: &Address,
    ) -> Result<(Stream, Handshake, Address), Error> {
        let hop = &self.hops[index];
        let run = async {
            let mut stream = stream;
            // preflight refused every chain that would send a request to a forward node.
            let version = hop.version().ok_or(Error::Unsupported("a forward node is sent no SOCKS request"))?;
            let dst = if version == Version::V4 { resolve_v4(dst).await? } else { dst.clone() };
            let mut hs = Handshake::new(request(hop, version, command, dst))?;
            let greet = async {
                // At most one extension method per handshake: the machine accepts a selection
                // once, so this loop runs once or twice.
                while let Some(method) = hs.send_request_or_method(&mut stream).await? {
                    stream = start_tls(stream, hop, method).await?;
                    hs.method_ready()?;
                }
                Ok::<_, Error>(stream)
            };
            let mut stream = within(self.handshake_timeout, "greeting and authentication", greet).await?;
            let bnd = within(self.connect_timeout, "waiting for the reply", hs.next_reply(&mut stream)).await?;
            tracing::debug!(hop = index, proxy = %hop.proxy, %command, bnd = %bnd, "hop granted");
            Ok((stream, hs, bnd))
        };
        run.await.map_err(|e: Error| e.at_hop(index, &hop.proxy))
    }

    /// Replaces an all-zero BND.ADDR with the address of hop `index` (D-02, R-46).
    fn unspecified_to_proxy(&self, stream: &Stream, index: usize, bnd: Address) -> Address {
        match &bnd.host {
            Host::Ip(ip) if ip.is_unspecified() => {
                let host = if index == 0 {
                    stream
                        .peer_addr()
                        .map(|a| Host::Ip(a.ip().to_canonical()))
                        .unwrap_or(self.hops[0].proxy.host.clone())
                } else {
                    self.hops[index].proxy.host.clone()
                };
                Address { host, port: bnd.port }
            }
            _ => bnd,
        }
    }

    /// Where datagrams go: BND, with an all-zero IP meaning the proxy itself and a DOMAINNAME
    /// resolved locally (C-03, V-31).
    async fn relay_addr(&self, control: &Stream, index: usize, bnd: Address) -> Result<SocketAddr, Error> {
        if bnd.port == 0 {
            return Err(Error::Resolve { host: bnd, reason: "the proxy announced UDP relay port 0".into() });
        }
        let bnd = self.unspecified_to_proxy(control, index, bnd);
        match bnd.socket_addr() {
            Some(sa) => Ok(sa),
            None => lookup(&bnd)
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| Error::Resolve { host: bnd.clone(), reason: "no addresses".into() }),
        }
    }
}

/// A BIND whose listening socket is ready at the last hop; the peer has not connected yet.
#[derive(Debug)]
pub struct PendingBind {
    /// Where the peer must connect (BND of the first reply; an all-zero address is replaced by
    /// the last proxy's address).
    pub bound: Address,
    stream: Stream,
    handshake: Handshake,
    index: usize,
    proxy: Address,
}

impl PendingBind {
    /// Waits for the second reply, i.e. for the peer to connect, and returns the stream, which
    /// now carries the peer's bytes, with the peer's address as the proxy reported it.
    ///
    /// There is no deadline here: the proxy enforces its own accept timeout (D-07, 120 s by
    /// default), and a forwarder may want to wait longer. Wrap it in `tokio::time::timeout` to
    /// bound it.
    pub async fn accept(mut self) -> Result<(Stream, Address), Error> {
        let peer = self.handshake.next_reply(&mut self.stream).await.map_err(|e| e.at_hop(self.index, &self.proxy))?;
        Ok((self.stream, peer))
    }
}

/// The request `hop`, a SOCKS proxy of `version`, is sent.
fn request(hop: &Hop, version: Version, command: Command, target: Address) -> ClientRequest {
    ClientRequest {
        version,
        command,
        target,
        credentials: hop.credentials.clone(),
        extra_methods: match (&hop.tls, version, hop.credentials.is_some()) {
            (HopTls::Off, _, _) | (_, Version::V4 | Version::V4a, _) => Vec::new(),
            // gost's order (§3.2): 00 [02] 80 [82].
            (_, Version::V5, false) => vec![Method::TLS],
            (_, Version::V5, true) => vec![Method::TLS, Method::TLS_AUTH],
        },
    }
}

/// Wraps `stream` in TLS after the proxy selected `80`/`82`. gost's client would also accept
/// `82` when it offered only `80`; our machine accepts only methods it offered, so an
/// unrequested `82` (gost REL with authentication, §3.3) fails as an unexpected method.
async fn start_tls(stream: Stream, hop: &Hop, method: Method) -> Result<Stream, Error> {
    if method != Method::TLS && method != Method::TLS_AUTH {
        return Err(Error::UnsupportedMethod(method));
    }
    let config = match &hop.tls {
        HopTls::Off => return Err(Error::UnsupportedMethod(method)),
        HopTls::AcceptAny => crate::tls::client_config(false, rustls::RootCertStore::empty()),
        HopTls::Verify(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = crate::tls::load_certs(ca)?;
            roots.add_parsable_certificates(certs);
            crate::tls::client_config(true, roots)
        }
    }
    .map_err(|e| Error::Io(std::io::Error::other(e)))?;
    Ok(stream.connect_tls(config, crate::tls::server_name(&hop.proxy.host)).await?)
}

/// Runs `fut` with a deadline, naming the phase in the error.
async fn within<T>(
    after: Duration,
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(after, fut).await.unwrap_or(Err(Error::Timeout { what, after }))
}

/// Resolves `addr` locally: IP literals as they are, names through the system resolver.
pub(crate) async fn lookup(addr: &Address) -> Result<Vec<SocketAddr>, Error> {
    let name = match &addr.host {
        Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, addr.port)]),
        Host::Domain(name) => name,
    };
    let name = std::str::from_utf8(name)
        .map_err(|_| Error::Resolve { host: addr.clone(), reason: "name is not UTF-8".into() })?;
    let found = tokio::net::lookup_host((name, addr.port))
        .await
        .map_err(|e| Error::Resolve { host: addr.clone(), reason: e.to_string() })?
        .collect::<Vec<_>>();
    if found.is_empty() {
        return Err(Error::Resolve { host: addr.clone(), reason: "no addresses".into() });
    }
    Ok(found)
}

/// SOCKS4 carries only IPv4: resolve a name locally and take its first IPv4 address (C-09).
async fn resolve_v4(addr: &Address) -> Result<Address, Error> {
    match &addr.host {
        Host::Ip(IpAddr::V4(_)) => Ok(addr.clone()),
        Host::Ip(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => Ok(Address { host: Host::Ip(v4.into()), port: addr.port }),
            None => Err(Error::Resolve { host: addr.clone(), reason: "SOCKS4 cannot carry IPv6".into() }),
        },
        Host::Domain(_) => lookup(addr)
            .await?
            .into_iter()
            .find(|sa| sa.is_ipv4())
            .map(Address::from)
            .ok_or_else(|| Error::Resolve { host: addr.clone(), reason: "no IPv4 address (SOCKS4)".into() }),
    }
}

/// Connects to `addr` (resolved locally), trying each address in turn within one deadline.
pub(crate) async fn dial(addr: &Address, limit: Duration) -> Result<TcpStream, Error> {
    within(limit, "TCP connect", async {
        let mut last = None;
        for sa in lookup(addr).await? {
            match TcpStream::connect(sa).await {
                Ok(s) => {
                    // Handshake messages are tiny and strictly request/response: Nagle would
                    // only add delay.
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.map(Error::Io).unwrap_or_else(|| Error::Resolve { host: addr.clone(), reason: "no addresses".into() }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A listener standing in for a forward node's server, and its address.
    async fn node() -> (tokio::net::TcpListener, Address) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = Address::from(l.local_addr().unwrap());
        (l, addr)
    }

    /// Whether anyone connected to `l` before now: a probe connects, and the first connection
    /// accepted is the probe's only if nobody came before it (no waiting, no timing).
    async fn untouched(l: &tokio::net::TcpListener) -> bool {
        let probe = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (_, first) = l.accept().await.unwrap();
        first == probe.local_addr().unwrap()
    }

    #[tokio::test]
    async fn a_forward_node_is_sent_no_socks_and_passes_the_callers_bytes() {
        let (l, addr) = node().await;
        let chain = Chain::new(vec![Hop::forward(addr)]);
        assert!(chain.ends_in_forward());
        let mut s = chain.connect(&Address::UNSPECIFIED).await.unwrap();
        s.write_all(b"hi").await.unwrap();
        let (mut far, _) = l.accept().await.unwrap();
        let mut got = [0u8; 2];
        far.read_exact(&mut got).await.unwrap();
        // The first bytes are ours: no greeting went before them.
        assert_eq!(&got, b"hi");
    }

    #[tokio::test]
    async fn only_connect_goes_through_a_forward_node_and_the_rest_is_refused_before_dialling() {
        let (l, addr) = node().await;
        let first = Hop::new(Version::V5, addr.clone());
        for chain in [Chain::new(vec![Hop::forward(addr.clone())]), Chain::new(vec![first, Hop::forward(addr.clone())])]
        {
            let last = chain.hops.len() - 1;
            let errors = [
                chain.bind(&addr).await.err(),
                chain.udp_associate().await.err(),
                chain.mbind(&addr).await.err(),
                chain.udp_tun(None).await.err(),
            ];
            for e in errors {
                let e = e.expect("refused");
                assert_eq!(e.hop_index(), Some(last), "{e}");
                assert_eq!(
                    e.root().to_string(),
                    "unsupported: the last hop is a forward node: only CONNECT goes through it"
                );
            }
            assert!(untouched(&l).await);
        }
    }

    #[tokio::test]
    async fn a_forward_node_before_another_hop_is_refused_before_dialling() {
        let (l, addr) = node().await;
        let chain = Chain::new(vec![Hop::forward(addr.clone()), Hop::new(Version::V5, addr)]);
        assert!(!chain.ends_in_forward());
        let e = chain.connect(&Address::UNSPECIFIED).await.expect_err("refused");
        assert_eq!(e.hop_index(), Some(0), "{e}");
        assert_eq!(e.root().to_string(), "unsupported: a forward node can only be the last hop");
        assert!(untouched(&l).await);
    }
}
