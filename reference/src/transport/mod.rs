//! Transports: the layers a SOCKS conversation travels in; docs/transports.md describes them,
//! their URL keys and what was proven against gost.
//!
//! A transport is a [`Listener`] (server side) and a [`Dialer`] (client side) that both yield the
//! one stream type the SOCKS code uses, [`crate::tls::Stream`]; the SOCKS handler and the client
//! chain never learn which transport they run over. The URL scheme `HANDLER+TRANSPORT` picks it
//! (`socks5+wss://…`), parsed in one place, [`split_url`].
//!
//! | transport | layers, outermost last | stream per SOCKS conversation |
//! |---|---|---|
//! | `tcp` | TCP | the TCP connection (the relay splices it) |
//! | `tls` | TCP → TLS | the TLS connection |
//! | `ws` / `wss` | TCP → (TLS) → WebSocket | the WebSocket, one binary message per write |
//! | `mtls` | TCP → TLS → smux | one smux stream; the dialer keeps one session |
//! | `mws` / `mwss` | TCP → (TLS) → WebSocket → smux | one smux stream; the dialer keeps one session |
//! | `kcp` | UDP → crypt → FEC → KCP → snappy → smux ([`kcp`]) | one smux stream; the dialer keeps one session |
//!
//! The upgrade of an accepted connection (TLS handshake, WebSocket upgrade) runs in the
//! connection's own task, under the SOCKS handshake deadline ([`Incoming::establish`]), so a
//! slow or hostile client never holds up the accept loop.
//!
//! kcp is the one transport with UDP, not TCP, underneath: its listener is a UDP socket on the
//! URL's port (as gost's), and its dialer makes its own UDP "connection", so a kcp hop can only be
//! the first hop of a chain (the hops before it would have to carry datagrams; see
//! [`Dialer::open_own`]).

pub mod kcp;

pub mod ws;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::debug;

use crate::proto::Address;
use crate::smux;
use crate::tls::{Layered, Stream};
use crate::url::{ProxyUrl, UrlError};

pub use ws::WsOptions;

/// Which transport; the part after `+` in a URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Plain TCP (no `+transport`, or `+tcp`).
    Tcp,
    /// TLS over TCP.
    Tls,
    /// WebSocket over TCP.
    Ws,
    /// WebSocket over TLS.
    Wss,
    /// smux over TLS.
    Mtls,
    /// smux over WebSocket.
    Mws,
    /// smux over WebSocket over TLS.
    Mwss,
    /// smux over KCP over UDP, kcp-go's wire ([`kcp`]).
    Kcp,
}

impl Kind {
    /// Every transport this build knows, as its URL name.
    pub const NAMES: &'static [&'static str] = &["tcp", "tls", "ws", "wss", "mtls", "mws", "mwss", "kcp"];

    /// The transport named `name` (`tls`, `ws`, …).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "tcp" => Kind::Tcp,
            "tls" => Kind::Tls,
            "ws" => Kind::Ws,
            "wss" => Kind::Wss,
            "mtls" => Kind::Mtls,
            "mws" => Kind::Mws,
            "mwss" => Kind::Mwss,
            "kcp" => Kind::Kcp,
            _ => return None,
        })
    }

    /// The URL name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Tls => "tls",
            Kind::Ws => "ws",
            Kind::Wss => "wss",
            Kind::Mtls => "mtls",
            Kind::Mws => "mws",
            Kind::Mwss => "mwss",
            Kind::Kcp => "kcp",
        }
    }

    /// Whether TLS is one of the layers.
    pub fn has_tls(self) -> bool {
        matches!(self, Kind::Tls | Kind::Wss | Kind::Mtls | Kind::Mwss)
    }

    /// Whether a WebSocket is one of the layers.
    pub fn has_ws(self) -> bool {
        matches!(self, Kind::Ws | Kind::Wss | Kind::Mws | Kind::Mwss)
    }

    /// Whether SOCKS conversations are smux streams of one shared session over a TCP
    /// connection (kcp's are too, over UDP: see [`Kind::is_udp`]).
    pub fn is_mux(self) -> bool {
        matches!(self, Kind::Mtls | Kind::Mws | Kind::Mwss)
    }

    /// Whether the transport runs over UDP (kcp): its listener binds a UDP socket and its
    /// dialer needs no TCP connection from the caller.
    pub fn is_udp(self) -> bool {
        self == Kind::Kcp
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// TLS files and switches from the URL (gost's names; docs/transports.md).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// Certificate chain (PEM): the listener's own, or a dialer's client certificate.
    pub cert_file: Option<String>,
    /// The key of `cert_file` (PEM).
    pub key_file: Option<String>,
    /// CA certificates (PEM): a listener then requires and verifies client certificates; a
    /// dialer verifies the server's chain against them.
    pub ca_file: Option<String>,
    /// Dialer: verify the server certificate and its name (`secure=true`).
    pub secure: bool,
    /// Dialer: the name sent as SNI and verified (`serverName`); default the node host.
    pub server_name: Option<String>,
}

/// A transport and its settings, from one URL.
#[derive(Debug, Clone)]
pub struct TransportSpec {
    /// Which transport.
    pub kind: Kind,
    /// TLS settings (for the kinds with TLS).
    pub tls: TlsFiles,
    /// WebSocket settings (for the kinds with a WebSocket).
    pub ws: WsOptions,
    /// smux settings (`mux.*`, for the mux kinds).
    pub mux: smux::Config,
    /// kcp settings (`kcp.*`, for kcp; gost's effective defaults otherwise).
    pub kcp: kcp::Config,
    /// Deadline of the transport handshake (`handshakeTimeout`); `None` leaves it to the SOCKS
    /// handshake deadline.
    pub handshake_timeout: Option<Duration>,
}

impl TransportSpec {
    /// Plain TCP.
    pub fn tcp() -> Self {
        Self::new(Kind::Tcp)
    }

    /// `kind` with gost's defaults.
    pub fn new(kind: Kind) -> Self {
        Self {
            kind,
            tls: TlsFiles::default(),
            ws: WsOptions::default(),
            mux: smux::Config::default(),
            kcp: kcp::Config::default(),
            handshake_timeout: None,
        }
    }

    /// The transport of `url` (see [`split_url`]), leaving `url` as it is.
    pub fn from_url(url: &ProxyUrl) -> Result<TransportSpec, UrlError> {
        split_url(url.clone()).map(|(_, t)| t)
    }
}

/// The query keys each transport reads, with gost's aliases; [`split_url`] removes them from
/// the URL so that the handler's own unknown-key check sees only its keys.
const TLS_KEYS: &[&str] = &[
    "certFile",
    "cert",
    "tls.certFile",
    "keyFile",
    "key",
    "tls.keyFile",
    "caFile",
    "ca",
    "tls.caFile",
    "secure",
    "tls.secure",
    "serverName",
    "tls.servername",
];
const WS_KEYS: &[&str] = &[
    "path",
    "ws.path",
    "host",
    "ws.host",
    "keepalive",
    "ws.keepalive",
    "keepalive.interval",
    "readBufferSize",
    "writeBufferSize",
    "enableCompression",
];
const MUX_KEYS: &[&str] = &[
    "mux.version",
    "mux.keepaliveInterval",
    "mux.keepaliveTimeout",
    "mux.keepaliveDisabled",
    "mux.maxFrameSize",
    "mux.maxReceiveBuffer",
    "mux.maxStreamBuffer",
];

/// kcp's keys without gost's `kcp.` prefix, which [`kcp::Config::from_params`] also takes
/// (every `kcp.`-prefixed key belongs to kcp too).
const KCP_KEYS: &[&str] = &[
    "key",
    "crypt",
    "mode",
    "mtu",
    "sndwnd",
    "rcvwnd",
    "datashard",
    "ds",
    "parityshard",
    "ps",
    "dscp",
    "nocomp",
    "acknodelay",
    "nodelay",
    "interval",
    "resend",
    "nc",
    "sockbuf",
    "keepalive",
    "smuxver",
    "smuxbuf",
    "streambuf",
    "tcp",
];

/// Whether `handler` (the scheme before `+`) is one of the SOCKS handlers, the only ones that
/// negotiate methods and so the only ones gost's TLS methods `80`/`82` concern.
fn is_socks_handler(handler: &str) -> bool {
    matches!(handler, "socks5" | "socks5h" | "socks" | "socks4" | "socks4a")
}

/// The first of `keys` present in `url`.
fn first_key(url: &ProxyUrl, keys: &[&'static str]) -> Option<&'static str> {
    keys.iter().find(|k| url.params.contains_key(**k)).copied()
}

/// Splits `url` into its handler part and its transport: `socks5+wss://h:p?path=/x&bind=true`
/// becomes `socks5://h:p?bind=true` and a `wss` [`TransportSpec`] with path `/x`. The keys of
/// the transport are removed from the returned URL. A scheme without `+` is TCP. An unknown
/// transport is a `scheme` error naming the known ones.
///
/// With a transport that encrypts (tls, wss, mtls, mwss), a SOCKS handler's gost TLS *methods*
/// `80`/`82` are turned off unless the URL says `notls=false`: another TLS inside TLS buys nothing. The same
/// holds for mws: there, a method-`80` handshake inside one smux stream breaks gost's session
/// for every later stream (seen between two gost 3.2.6 peers: the next stream's first write
/// fails with "i/o timeout"), so a peer that wants to work with gost must not select or offer it.
/// kcp is smux too (and encrypts unless `crypt=none`), so the same holds there.
///
/// kcp's keys (`kcp.key`, `kcp.mode`, …, with or without the `kcp.` prefix) go to
/// [`kcp::Config::from_params`]; a bad value is a URL error naming the key.
pub fn split_url(mut url: ProxyUrl) -> Result<(ProxyUrl, TransportSpec), UrlError> {
    let Some((handler, transport)) = url.scheme.split_once('+') else {
        return Ok((url, TransportSpec::tcp()));
    };
    let Some(kind) = Kind::from_name(transport) else {
        let message = format!("unknown transport {transport:?} (known: {})", Kind::NAMES.join(", "));
        return Err(UrlError { url: url.to_string(), part: "scheme".into(), message });
    };
    let (handler, transport) = (handler.to_string(), transport.to_string());
    if handler.is_empty() {
        return Err(UrlError {
            url: url.to_string(),
            part: "scheme".into(),
            message: "missing handler before +".into(),
        });
    }
    let mut spec = TransportSpec::new(kind);
    let get = |url: &ProxyUrl, keys: &[&str]| keys.iter().find_map(|k| url.params.get(*k).cloned());
    let mut consumed: Vec<&str> = Vec::new();
    if let Some(t) = url.duration_param("handshakeTimeout")? {
        spec.handshake_timeout = Some(t);
    }
    consumed.push("handshakeTimeout");
    if kind.has_tls() {
        spec.tls.cert_file = get(&url, &["certFile", "cert", "tls.certFile"]);
        spec.tls.key_file = get(&url, &["keyFile", "key", "tls.keyFile"]);
        spec.tls.ca_file = get(&url, &["caFile", "ca", "tls.caFile"]);
        spec.tls.server_name = get(&url, &["serverName", "tls.servername"]);
        spec.tls.secure = match first_key(&url, &["secure", "tls.secure"]) {
            Some(k) => url.bool_param(k, false)?,
            None => false,
        };
        if spec.tls.cert_file.is_some() != spec.tls.key_file.is_some() {
            return Err(url.param_error("certFile", "certFile and keyFile go together"));
        }
        consumed.extend_from_slice(TLS_KEYS);
    }
    // Only a SOCKS handler has methods to turn off; a forwarder (`tcp+tls://`, `forward+mws://`)
    // negotiates nothing, so it gets no `notls` it would have to refuse or ignore.
    let encrypts_or_muxes = kind.has_tls() || kind.is_mux() || kind == Kind::Kcp;
    if encrypts_or_muxes && is_socks_handler(&handler) && !url.params.contains_key("notls") {
        url.params.insert("notls".into(), "true".into());
    }
    if kind.has_ws() {
        if let Some(p) = get(&url, &["path", "ws.path"]) {
            if !p.starts_with('/') {
                return Err(url.param_error("path", format!("{p:?} must start with /")));
            }
            spec.ws.path = p;
        }
        spec.ws.host = get(&url, &["host", "ws.host"]);
        let keepalive = match first_key(&url, &["keepalive", "ws.keepalive"]) {
            Some(k) => url.bool_param(k, false)?,
            None => false,
        };
        if keepalive {
            let interval = match first_key(&url, &["ttl", "keepalive.interval"]) {
                Some(k) => url.duration_param(k)?.unwrap_or(Duration::from_secs(15)),
                None => Duration::from_secs(15),
            };
            if interval.is_zero() {
                return Err(url.param_error("ttl", "the keepalive interval must be positive"));
            }
            spec.ws.keepalive = Some(interval);
            // `ttl` means the keepalive interval here (a forwarder's `ttl` is its own key).
            url.params.remove("ttl");
        }
        let size = |url: &ProxyUrl, key: &str| -> Result<Option<usize>, UrlError> {
            url.params
                .get(key)
                .map(|v| {
                    v.parse::<usize>().ok().filter(|n| *n <= 1 << 24).ok_or_else(|| url.param_error(key, "0..16777216"))
                })
                .transpose()
        };
        spec.ws.read_buffer_size = size(&url, "readBufferSize")?;
        spec.ws.write_buffer_size = size(&url, "writeBufferSize")?;
        if url.bool_param("enableCompression", false)? {
            return Err(url.param_error("enableCompression", "permessage-deflate is not supported"));
        }
        consumed.extend_from_slice(WS_KEYS);
    }
    if kind.is_mux() {
        let m = &mut spec.mux;
        if let Some(v) = url.params.get("mux.version") {
            m.version = match v.as_str() {
                "1" => 1,
                "2" => 2,
                _ => return Err(url.param_error("mux.version", "1 or 2")),
            };
        }
        if let Some(d) = url.duration_param("mux.keepaliveInterval")? {
            m.keepalive_interval = d.max(Duration::from_millis(100));
        }
        if let Some(d) = url.duration_param("mux.keepaliveTimeout")? {
            m.keepalive_timeout = d.max(Duration::from_millis(100));
        }
        if url.bool_param("mux.keepaliveDisabled", false)? {
            // No NOPs and no silence limit; a century stands in for "never" without overflowing
            // the clock arithmetic.
            m.keepalive_interval = Duration::from_secs(100 * 365 * 86_400);
            m.keepalive_timeout = m.keepalive_interval;
        }
        if let Some(v) = url.params.get("mux.maxFrameSize") {
            m.max_frame = v
                .parse()
                .ok()
                .filter(|n| (1..=65_535).contains(n))
                .ok_or_else(|| url.param_error("mux.maxFrameSize", "1..65535"))?;
        }
        if let Some(v) = url.params.get("mux.maxStreamBuffer") {
            m.max_stream_buffer = v
                .parse()
                .ok()
                .filter(|n| *n >= 1024)
                .ok_or_else(|| url.param_error("mux.maxStreamBuffer", ">= 1024"))?;
        }
        // mux.maxReceiveBuffer: xtaci's session-wide cap; our sessions apply back-pressure per
        // stream (each stream's buffer is bounded), so the key is accepted and has no effect.
        consumed.extend_from_slice(MUX_KEYS);
    }
    if kind == Kind::Kcp {
        let ours: std::collections::BTreeMap<String, String> = url
            .params
            .iter()
            .filter(|(k, _)| k.starts_with("kcp.") || KCP_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        spec.kcp = kcp::Config::from_params(&ours).map_err(|message| {
            // The config's messages name the key ("kcp: bad value \"x\" for kcp.sndwnd"); the
            // URL error names the first key that fails alone, so the user sees where.
            let key = ours
                .iter()
                .find(|(k, v)| {
                    let one = std::collections::BTreeMap::from([((*k).clone(), (*v).clone())]);
                    kcp::Config::from_params(&one).is_err()
                })
                .map(|(k, _)| k.clone())
                .unwrap_or_else(|| "kcp".into());
            url.param_error(&key, message)
        })?;
        for k in ours.keys() {
            url.params.remove(k);
        }
    }
    for k in consumed {
        url.params.remove(k);
    }
    url.scheme = handler;
    debug!(transport, "transport selected");
    Ok((url, spec))
}

// --- TLS configurations ---------------------------------------------------------------------

fn tls_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_key(path: &str) -> io::Result<rustls::pki_types::PrivateKeyDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::PrivateKeyDer::from_pem_file(path).map_err(|e| tls_err(format!("{path}: {e}")))
}

fn roots(path: &str) -> io::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(crate::tls::load_certs(std::path::Path::new(path))?);
    if added == 0 {
        return Err(tls_err(format!("{path}: no CA certificate")));
    }
    Ok(roots)
}

/// The listener's TLS configuration: the given certificate, or a fresh self-signed one as gost
/// makes (docs/gost.md §3.4.3); with a CA file, client certificates are required and verified.
/// No ALPN, as gost's listener.
pub fn server_tls(files: &TlsFiles) -> io::Result<Arc<rustls::ServerConfig>> {
    let (chain, key) = match (&files.cert_file, &files.key_file) {
        (Some(c), Some(k)) => (crate::tls::load_certs(std::path::Path::new(c))?, load_key(k)?),
        _ => {
            let (c, k) = crate::tls::self_signed().map_err(tls_err)?;
            (vec![c], k)
        }
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?;
    let builder = match &files.ca_file {
        Some(ca) => {
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                    .build()
                    .map_err(tls_err)?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(builder.with_single_cert(chain, key).map_err(tls_err)?))
}

/// The dialer's TLS configuration, as gost's: no verification unless `secure`; with a CA file
/// and not `secure`, the chain is verified but not the name; a client certificate when given.
pub fn client_tls(files: &TlsFiles) -> io::Result<Arc<rustls::ClientConfig>> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?;
    let builder = match (&files.ca_file, files.secure) {
        (Some(ca), secure) => {
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                .build()
                .map_err(tls_err)?;
            if secure {
                builder.with_webpki_verifier(inner)
            } else {
                builder.dangerous().with_custom_certificate_verifier(Arc::new(ChainOnly(inner)))
            }
        }
        (None, true) => return Err(tls_err("secure=true needs caFile=<pem> (no system roots are used)")),
        (None, false) => {
            // gost's InsecureSkipVerify: reuse the method-TLS configuration, which accepts any
            // certificate but checks the handshake signatures.
            let any = crate::tls::client_config(false, rustls::RootCertStore::empty()).map_err(tls_err)?;
            return match (&files.cert_file, &files.key_file) {
                (Some(_), Some(_)) => Err(tls_err("a client certificate needs caFile (set caFile to the server's CA)")),
                _ => Ok(any),
            };
        }
    };
    let config = match (&files.cert_file, &files.key_file) {
        (Some(c), Some(k)) => builder
            .with_client_auth_cert(crate::tls::load_certs(std::path::Path::new(c))?, load_key(k)?)
            .map_err(tls_err)?,
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Verifies the server's chain against the CA but accepts any name: Go's behaviour for a
/// `caFile` without `secure=true` (docs/gost.md §7.3).
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(NotValidForName | NotValidForNameContext { .. })) => {
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

// --- Listener -------------------------------------------------------------------------------

/// The server side's layers above TCP for one connection (no smux: that is per listener).
#[derive(Debug)]
struct ServerLayers {
    tls: Option<Arc<rustls::ServerConfig>>,
    ws: Option<WsOptions>,
    timeout: Option<Duration>,
}

impl ServerLayers {
    async fn run(&self, tcp: TcpStream) -> io::Result<Stream> {
        let fut = async {
            let (local, peer) = (tcp.local_addr()?, tcp.peer_addr()?);
            let mut s = Stream::Tcp(tcp);
            if let Some(tls) = &self.tls {
                s = s.accept_tls(tls.clone()).await.map_err(|e| io::Error::new(e.kind(), format!("TLS: {e}")))?;
            }
            if let Some(opts) = &self.ws {
                s = Stream::Layered(Box::new(Layered::new(ws::accept(s, opts).await?, local, peer)));
            }
            Ok(s)
        };
        match self.timeout {
            Some(t) => tokio::time::timeout(t, fut)
                .await
                .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "transport handshake timed out"))),
            None => fut.await,
        }
    }
}

/// An accepted connection whose transport handshake may still be due.
#[derive(Debug)]
pub struct Incoming(IncomingInner);

#[derive(Debug)]
enum IncomingInner {
    Ready(Stream),
    Pending(TcpStream, Arc<ServerLayers>),
}

impl Incoming {
    /// Runs the transport's handshake (TLS, WebSocket upgrade; nothing for TCP and for smux
    /// streams, whose session is already up) and returns the stream SOCKS runs on. Errors are
    /// the peer's: a failed TLS handshake, a wrong path, a request that is no upgrade.
    pub async fn establish(self) -> io::Result<Stream> {
        match self.0 {
            IncomingInner::Ready(s) => Ok(s),
            IncomingInner::Pending(tcp, layers) => layers.run(tcp).await,
        }
    }
}

/// Aborts a task when dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A listening transport: [`Listener::accept`] yields one [`Incoming`] per SOCKS conversation.
#[derive(Debug)]
pub struct Listener {
    local: SocketAddr,
    kind: Kind,
    /// The URL's `handshakeTimeout`, which [`ServerLayers`] already applies; kept so a handler
    /// with no deadline of its own (a forwarder) can read the limit the URL chose.
    handshake_timeout: Option<Duration>,
    inner: ListenerInner,
}

#[derive(Debug)]
enum ListenerInner {
    Plain { tcp: TcpListener, layers: Option<Arc<ServerLayers>> },
    Mux { streams: mpsc::Receiver<(Stream, SocketAddr)>, _sessions: AbortOnDrop },
    Kcp(kcp::Listener),
}

/// How long an smux listener waits for a connection's TLS/WebSocket handshake when the URL sets
/// no `handshakeTimeout` (there is no SOCKS deadline around it: streams come later).
const MUX_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

impl Listener {
    /// Plain TCP on an already-bound listener.
    pub fn tcp(tcp: TcpListener) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        Ok(Self { local, kind: Kind::Tcp, handshake_timeout: None, inner: ListenerInner::Plain { tcp, layers: None } })
    }

    /// `spec`'s transport on an already-bound TCP listener. Fails only when the TLS
    /// configuration cannot be built (unreadable certificate or key).
    pub fn new(tcp: TcpListener, spec: &TransportSpec) -> io::Result<Self> {
        if spec.kind.is_udp() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "kcp listens on UDP, not on a TCP listener"));
        }
        let local = tcp.local_addr()?;
        let layers = ServerLayers {
            tls: if spec.kind.has_tls() { Some(server_tls(&spec.tls)?) } else { None },
            ws: spec.kind.has_ws().then(|| spec.ws.clone()),
            timeout: spec.handshake_timeout,
        };
        if !spec.kind.is_mux() {
            let layers = (spec.kind != Kind::Tcp).then(|| Arc::new(layers));
            let inner = ListenerInner::Plain { tcp, layers };
            return Ok(Self { local, kind: spec.kind, handshake_timeout: spec.handshake_timeout, inner });
        }
        let layers =
            Arc::new(ServerLayers { timeout: Some(layers.timeout.unwrap_or(MUX_HANDSHAKE_TIMEOUT)), ..layers });
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(mux_accept_loop(tcp, layers, spec.mux.clone(), tx));
        Ok(Self {
            local,
            kind: spec.kind,
            handshake_timeout: spec.handshake_timeout,
            inner: ListenerInner::Mux { streams: rx, _sessions: AbortOnDrop(task.abort_handle()) },
        })
    }

    /// Binds `addr` and listens with `spec`'s transport: a TCP listener, or for kcp a UDP
    /// socket on that address (gost's kcp listener takes the same port number over UDP).
    pub async fn bind(addr: &str, spec: &TransportSpec) -> io::Result<Self> {
        if spec.kind.is_udp() {
            let mut last = io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: no address"));
            for sa in tokio::net::lookup_host(addr).await? {
                match kcp::Listener::bind(sa, &spec.kcp).await {
                    Ok(l) => return Ok(Self::kcp(l)),
                    Err(e) => last = e,
                }
            }
            return Err(last);
        }
        Self::new(TcpListener::bind(addr).await?, spec)
    }

    /// kcp on an already-bound kcp listener.
    pub fn kcp(listener: kcp::Listener) -> Self {
        Self {
            local: listener.local_addr(),
            kind: Kind::Kcp,
            handshake_timeout: None,
            inner: ListenerInner::Kcp(listener),
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The transport.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The deadline of a connection's transport handshake the URL set (`handshakeTimeout`);
    /// `None` when it set none, leaving the deadline to the handler.
    pub fn handshake_timeout(&self) -> Option<Duration> {
        self.handshake_timeout
    }

    /// [`Listener::accept`] until it succeeds: a failure is logged and retried after
    /// [`ACCEPT_BACKOFF`]. Cancel it (drop the future) to stop, e.g. at shutdown.
    pub async fn accept_retrying(&mut self) -> (Incoming, SocketAddr) {
        loop {
            match self.accept().await {
                Ok(v) => return v,
                Err(e) => accept_failed(e).await,
            }
        }
    }

    /// The next conversation and the address of the peer it comes from. For smux transports
    /// that is a stream of a session whose handshake is already done; otherwise a TCP
    /// connection whose transport handshake [`Incoming::establish`] still has to run.
    pub async fn accept(&mut self) -> io::Result<(Incoming, SocketAddr)> {
        match &mut self.inner {
            ListenerInner::Plain { tcp, layers } => {
                let (s, peer) = tcp.accept().await?;
                let _ = s.set_nodelay(true);
                Ok(match layers {
                    None => (Incoming(IncomingInner::Ready(Stream::Tcp(s))), peer),
                    Some(l) => (Incoming(IncomingInner::Pending(s, l.clone())), peer),
                })
            }
            ListenerInner::Mux { streams, .. } => match streams.recv().await {
                Some((s, peer)) => Ok((Incoming(IncomingInner::Ready(s)), peer)),
                None => Err(io::Error::other("smux listener stopped")),
            },
            ListenerInner::Kcp(l) => {
                let (s, peer) = l.accept().await?;
                let layered = Layered::new(s, self.local, peer);
                Ok((Incoming(IncomingInner::Ready(Stream::Layered(Box::new(layered)))), peer))
            }
        }
    }
}

/// Pause after a failed `accept` so an accept loop backs off instead of spinning.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What every accept loop does when `accept` fails (EMFILE and friends, R-87, V-19): say so and
/// pause [`ACCEPT_BACKOFF`], since retrying at once would spin on the same error.
async fn accept_failed(e: io::Error) {
    tracing::warn!(error = %e, "accept failed; backing off");
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}

/// Accepts TCP connections, runs their layers, and hands every smux stream of every session on.
/// Ends when the listener is dropped (which aborts this task and with it every session task).
async fn mux_accept_loop(
    tcp: TcpListener,
    layers: Arc<ServerLayers>,
    config: smux::Config,
    tx: mpsc::Sender<(Stream, SocketAddr)>,
) {
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        while sessions.try_join_next().is_some() {}
        let (s, peer) = match tcp.accept().await {
            Ok(v) => v,
            Err(e) => {
                accept_failed(e).await;
                continue;
            }
        };
        let _ = s.set_nodelay(true);
        let (layers, config, tx) = (layers.clone(), config.clone(), tx.clone());
        sessions.spawn(async move {
            let local = match s.local_addr() {
                Ok(a) => a,
                Err(_) => return,
            };
            let base = match layers.run(s).await {
                Ok(b) => b,
                Err(e) => {
                    debug!(%peer, error = %e, "transport handshake failed");
                    return;
                }
            };
            let session = Arc::new(smux::Session::new(base, smux::Role::Server, config));
            while let Some(stream) = session.accept().await {
                let owner: Arc<dyn std::any::Any + Send + Sync> = session.clone();
                let layered = Layered::new(stream, local, peer).keeping(owner);
                if tx.send((Stream::Layered(Box::new(layered)), peer)).await.is_err() {
                    return;
                }
            }
            debug!(%peer, "smux session ended");
        });
    }
}

// --- Dialer ---------------------------------------------------------------------------------

/// The first address of `server` (IP literals as they are).
async fn resolve(server: &Address) -> io::Result<SocketAddr> {
    let name = match &server.host {
        crate::proto::Host::Ip(ip) => return Ok(SocketAddr::new(*ip, server.port)),
        crate::proto::Host::Domain(d) => String::from_utf8_lossy(d).into_owned(),
    };
    let mut found = tokio::net::lookup_host((name.as_str(), server.port)).await?;
    found.next().ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{server}: no addresses")))
}

/// Whether `host` names `addr`'s IP (a name is taken to, as it resolved to it when the dialer was made).
fn host_is(host: &crate::proto::Host, addr: SocketAddr) -> bool {
    match host {
        crate::proto::Host::Ip(ip) => *ip == addr.ip(),
        crate::proto::Host::Domain(_) => true,
    }
}

/// The unspecified address of `peer`'s family, port 0.
fn unspecified(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

/// A live smux session of a dialer and the addresses of the connection it runs on.
struct MuxSession {
    session: Arc<smux::Session>,
    local: SocketAddr,
    peer: SocketAddr,
}

/// The client side of a transport for one hop. For the smux transports it keeps one session
/// and opens a stream on it per conversation, starting a new session when the old one died, as
/// gost's mux dialers do.
pub struct Dialer {
    spec: TransportSpec,
    tls: Option<Arc<rustls::ClientConfig>>,
    session: Mutex<Option<MuxSession>>,
    /// kcp: the kcp dialer (one KCP+smux session, re-dialled by it when it ends), made on first
    /// use because only then is the server's address known.
    kcp: Mutex<Option<Arc<kcp::Dialer>>>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer").field("kind", &self.spec.kind).field("ws_path", &self.spec.ws.path).finish()
    }
}

/// Dialers are equal when they are the same dialer, or both plain TCP (which has no settings):
/// a chain compares equal to itself, and parsed plain chains compare by their hops.
impl PartialEq for Dialer {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other) || (self.spec.kind == Kind::Tcp && other.spec.kind == Kind::Tcp)
    }
}
impl Eq for Dialer {}

impl Default for Dialer {
    fn default() -> Self {
        Self { spec: TransportSpec::tcp(), tls: None, session: Mutex::new(None), kcp: Mutex::new(None) }
    }
}

impl Dialer {
    /// A dialer for `spec`. Fails only when the TLS configuration cannot be built.
    pub fn new(spec: TransportSpec) -> io::Result<Self> {
        let tls = if spec.kind.has_tls() { Some(client_tls(&spec.tls)?) } else { None };
        Ok(Self { spec, tls, session: Mutex::new(None), kcp: Mutex::new(None) })
    }

    /// Opens a conversation to `server` when this transport makes its own connection: kcp,
    /// which talks UDP to the server itself (one session per dialer, a stream per call, a new
    /// session when the old one has ended, as gost's kcp dialer). `None` for the TCP-based
    /// transports, which run on a connection the caller makes ([`Dialer::establish`]).
    pub async fn open_own(&self, server: &Address) -> Option<io::Result<Stream>> {
        if !self.spec.kind.is_udp() {
            return None;
        }
        Some(self.open_kcp(server).await)
    }

    async fn open_kcp(&self, server: &Address) -> io::Result<Stream> {
        let known = self.kcp.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let dialer = match known {
            Some(d) if d.peer_addr().port() == server.port && host_is(&server.host, d.peer_addr()) => d,
            _ => {
                let addr = resolve(server).await?;
                let d = Arc::new(kcp::Dialer::new(addr, &self.spec.kcp));
                *self.kcp.lock().unwrap_or_else(|p| p.into_inner()) = Some(d.clone());
                d
            }
        };
        let stream = dialer.open().await?;
        let peer = dialer.peer_addr();
        let local = dialer.local_addr().unwrap_or_else(|| unspecified(peer));
        let owner: Arc<dyn std::any::Any + Send + Sync> = dialer;
        Ok(Stream::Layered(Box::new(Layered::new(stream, local, peer).keeping(owner))))
    }

    /// The transport.
    pub fn kind(&self) -> Kind {
        self.spec.kind
    }

    /// The settings.
    pub fn spec(&self) -> &TransportSpec {
        &self.spec
    }

    /// A new stream on the live smux session, when this is an smux dialer that has one; then no
    /// connection needs to be made. `None` otherwise (also when the session has died).
    pub async fn reuse(&self) -> Option<Stream> {
        if self.spec.kind.is_udp() {
            // A kcp dialer always has a session to open a stream on (it re-dials by itself).
            let d = self.kcp.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
            let peer = d.peer_addr();
            return self.open_kcp(&Address::from(peer)).await.ok();
        }
        let (session, local, peer) = {
            let guard = self.session.lock().unwrap_or_else(|p| p.into_inner());
            let s = guard.as_ref()?;
            if s.session.is_closed() {
                return None;
            }
            (s.session.clone(), s.local, s.peer)
        };
        let stream = session.open().await.ok()?;
        let owner: Arc<dyn std::any::Any + Send + Sync> = session;
        Some(Stream::Layered(Box::new(Layered::new(stream, local, peer).keeping(owner))))
    }

    /// Runs the transport's layers on `base`, a connection (or a tunnel through earlier hops) to
    /// the server at `server`, and returns the stream SOCKS runs on. For smux transports the
    /// result is the first stream of a new session, which later [`Dialer::reuse`] calls share.
    pub async fn establish(&self, base: Stream, server: &Address) -> io::Result<Stream> {
        if self.spec.kind == Kind::Tcp {
            return Ok(base);
        }
        if self.spec.kind.is_udp() {
            // Through earlier hops kcp would need a datagram path the SOCKS chain does not offer
            // as a stream; the URL parser refuses such chains, this is the library's guard.
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("kcp runs over UDP: it can only be the first hop (to {server})"),
            ));
        }
        let fut = async {
            let (local, peer) = (base.local_addr()?, base.peer_addr()?);
            let mut s = base;
            if let Some(tls) = &self.tls {
                let name = match &self.spec.tls.server_name {
                    Some(n) => rustls::pki_types::ServerName::try_from(n.clone())
                        .map_err(|e| tls_err(format!("serverName {n:?}: {e}")))?,
                    None => crate::tls::server_name(&server.host),
                };
                s = s
                    .connect_tls(tls.clone(), name)
                    .await
                    .map_err(|e| io::Error::new(e.kind(), format!("TLS: {e}")))?;
            }
            if self.spec.kind.has_ws() {
                // gost's Host: the node address with its port (docs/gost.md §7.4).
                let host = match &server.host {
                    crate::proto::Host::Ip(std::net::IpAddr::V6(ip)) => format!("[{ip}]:{}", server.port),
                    _ => server.to_string(),
                };
                s = Stream::Layered(Box::new(Layered::new(ws::connect(s, &host, &self.spec.ws).await?, local, peer)));
            }
            Ok::<_, io::Error>((s, local, peer))
        };
        let (s, local, peer) = match self.spec.handshake_timeout {
            Some(t) => tokio::time::timeout(t, fut)
                .await
                .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "transport handshake timed out")))?,
            None => fut.await?,
        };
        if !self.spec.kind.is_mux() {
            return Ok(s);
        }
        let session = Arc::new(smux::Session::new(s, smux::Role::Client, self.spec.mux.clone()));
        let stream = session.open().await?;
        *self.session.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(MuxSession { session: session.clone(), local, peer });
        let owner: Arc<dyn std::any::Any + Send + Sync> = session;
        Ok(Stream::Layered(Box::new(Layered::new(stream, local, peer).keeping(owner))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_splits_into_handler_and_transport() {
        let u = ProxyUrl::parse("socks5+wss://127.0.0.1:8443?path=/x&bind=true&mux.version=2").unwrap();
        let (u, t) = split_url(u).unwrap();
        assert_eq!(u.scheme, "socks5");
        assert_eq!(t.kind, Kind::Wss);
        assert_eq!(t.ws.path, "/x");
        assert!(u.params.contains_key("bind"));
        assert!(!u.params.contains_key("path"));
        // mux keys belong to the mux kinds only: left for the handler to refuse here.
        assert!(u.params.contains_key("mux.version"));
        // wss encrypts: the TLS methods are off unless asked for.
        assert_eq!(u.params.get("notls").map(String::as_str), Some("true"));
        let (u, t) = split_url(ProxyUrl::parse("socks5://:1080").unwrap()).unwrap();
        assert_eq!((u.scheme.as_str(), t.kind), ("socks5", Kind::Tcp));
        let (u, t) = split_url(ProxyUrl::parse("socks5+mws://:1?notls=false&mux.version=2").unwrap()).unwrap();
        assert_eq!((t.kind, t.mux.version), (Kind::Mws, 2));
        assert_eq!(u.params.get("notls").map(String::as_str), Some("false"));
    }

    #[test]
    fn notls_is_implied_only_for_a_socks_handler() {
        let notls = |raw: &str| split_url(ProxyUrl::parse(raw).unwrap()).unwrap().0.params.get("notls").cloned();
        for raw in ["socks5+tls://:1", "socks+mws://:1", "socks4a+kcp://:1", "socks5h+mtls://:1"] {
            assert_eq!(notls(raw).as_deref(), Some("true"), "{raw}");
        }
        // A forwarder negotiates no methods: nothing to turn off, and no key it would refuse.
        for raw in ["tcp+tls://:1/127.0.0.1:80", "forward+mws://:1", "tcp+kcp://:1/127.0.0.1:80", "forward+tls://h:1"] {
            assert_eq!(notls(raw), None, "{raw}");
        }
        // What the URL says stays; a plain TCP transport implies nothing.
        assert_eq!(notls("socks5+tls://:1?notls=false").as_deref(), Some("false"));
        assert_eq!(notls("socks5://:1"), None);
    }

    #[test]
    fn unknown_transport_names_the_known_ones() {
        let e = split_url(ProxyUrl::parse("socks5+quic://:1").unwrap()).unwrap_err();
        assert_eq!(e.part, "scheme");
        assert!(e.message.contains("mwss"), "{e}");
        let e = split_url(ProxyUrl::parse("socks5+ws://:1?path=ws").unwrap()).unwrap_err();
        assert_eq!(e.part, "query path");
    }
}
