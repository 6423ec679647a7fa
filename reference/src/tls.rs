//! TLS for gost's method-level TLS (methods `80`/`82`, docs/gost.md §3.4): a self-signed
//! certificate made at start, the server and client configurations, and the stream type that is
//! either plain TCP or TLS over another stream.
//!
//! Only the `ring` provider is used (no aws-lc), through `builder_with_provider`, so nothing
//! depends on a process-wide default provider being installed.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The self-signed certificate could not be generated.
    #[error("cannot generate the self-signed certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls rejected the configuration (key, protocol versions).
    #[error("invalid TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A self-signed certificate like the one gost generates when it finds no `cert.pem`
/// (docs/gost.md §3.4.3): ECDSA P-256, O=`GOST`, CN and DNS SAN `gost.run`, valid for one
/// year, usable for server and client authentication.
pub fn self_signed() -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TlsError> {
    use rcgen::{DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(vec!["gost.run".to_string()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "GOST");
    dn.push(DnType::CommonName, "gost.run");
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyCertSign];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    // A clock before 1970 is not a state this program can be in; treat it as the epoch.
    let now_days = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() / 86_400).unwrap_or(0);
    let ymd = |days: u64| {
        let (y, m, d) = civil_from_days(days as i64);
        rcgen::date_time_ymd(y, m, d)
    };
    // One day of slack for clocks slightly behind ours.
    params.not_before = ymd(now_days.saturating_sub(1));
    params.not_after = ymd(now_days + 365);
    let cert = params.self_signed(&key)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((cert.der().clone(), key))
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

/// A TLS server configuration with a fresh self-signed certificate (gost's default, §3.4.3).
/// No ALPN, TLS 1.2 and 1.3, no client certificates.
pub fn server_config() -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (cert, key) = self_signed()?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    Ok(Arc::new(config))
}

/// A TLS client configuration. With `verify` false (gost's default: `InsecureSkipVerify`, since
/// gost servers present a self-signed certificate, §3.4.3) any certificate is accepted — the
/// channel is then encrypted but not authenticated. With `verify` true the server certificate
/// must chain to one of `roots`.
pub fn client_config(verify: bool, roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let config = if verify {
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider()))).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// Reads every certificate of a PEM file (for [`client_config`] roots).
pub fn load_certs(path: &std::path::Path) -> io::Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_file_iter(path)
        .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?
        .map(|c| c.map_err(|e| io::Error::other(format!("{}: {e}", path.display()))))
        .collect()
}

/// The SNI to send: the proxy's host name, or — for an IP literal, where SNI is not allowed —
/// the IP (rustls then omits SNI, as Go does).
pub fn server_name(host: &crate::proto::Host) -> ServerName<'static> {
    match host {
        crate::proto::Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
        crate::proto::Host::Domain(d) => std::str::from_utf8(d)
            .ok()
            .and_then(|s| ServerName::try_from(s.to_string()).ok())
            // gost's certificate name; only matters when verifying.
            .unwrap_or_else(|| ServerName::try_from("gost.run").expect("static DNS name is valid")),
    }
}

/// Accepts any server certificate but still checks the handshake signatures, so the peer must
/// at least hold the key of the certificate it presents.
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A proxy connection: plain TCP, TLS (either role) over another such stream — TLS over TLS
/// arises when a chain's second hop also selects method `80` inside the first hop's tunnel, or
/// when method `80` runs inside the `tls` transport — or a stream some transport layer made
/// (WebSocket, an smux stream, …; see [`crate::transport`]). The SOCKS code handles all of them
/// alike; only the relay looks for the plain-TCP case, to splice.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// We are the TLS server (gost method `80`/`82` selected by our server, or the `tls`
    /// transport's listener).
    TlsServer(Box<tokio_rustls::server::TlsStream<Stream>>),
    /// We are the TLS client (a proxy selected `80`/`82` for us, or the `tls` transport's dialer).
    TlsClient(Box<tokio_rustls::client::TlsStream<Stream>>),
    /// A transport layer's stream, with the addresses of the connection it travels on.
    Layered(Box<Layered>),
}

/// What a [`Stream::Layered`] needs of its inner stream.
pub trait LayeredIo: AsyncRead + AsyncWrite + Unpin + Send + Sync + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync + std::fmt::Debug> LayeredIo for T {}

/// A transport layer's byte stream (a WebSocket, one smux stream, a kcp stream, …) and the
/// socket addresses of the connection beneath it, which SOCKS replies and policy need although
/// no single TCP socket belongs to this stream (an smux stream shares its connection).
#[derive(Debug)]
pub struct Layered {
    io: Box<dyn LayeredIo>,
    local: std::net::SocketAddr,
    peer: std::net::SocketAddr,
    /// Whatever must live as long as this stream (the smux session a stream belongs to).
    keep: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

impl Layered {
    /// Wraps `io`, travelling on a connection from `local` to `peer`.
    pub fn new(io: impl LayeredIo + 'static, local: std::net::SocketAddr, peer: std::net::SocketAddr) -> Self {
        Self { io: Box::new(io), local, peer, keep: None }
    }

    /// The same stream, keeping `owner` alive while it exists.
    pub fn keeping(mut self, owner: Arc<dyn std::any::Any + Send + Sync>) -> Self {
        self.keep = Some(owner);
        self
    }
}

impl Stream {
    /// The TCP socket at the bottom, for socket options and hang-up watches; `None` for a
    /// transport stream that shares its connection or has no TCP beneath (smux, kcp).
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Tcp(s) => Some(s),
            Stream::TlsServer(s) => s.get_ref().0.tcp(),
            Stream::TlsClient(s) => s.get_ref().0.tcp(),
            Stream::Layered(_) => None,
        }
    }

    /// The TCP socket, if there is no TLS layer (then the relay may splice).
    pub fn as_tcp_mut(&mut self) -> Option<&mut TcpStream> {
        match self {
            Stream::Tcp(s) => Some(s),
            _ => None,
        }
    }

    /// Local address of the connection.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        match self {
            Stream::Tcp(s) => s.local_addr(),
            Stream::TlsServer(s) => s.get_ref().0.local_addr(),
            Stream::TlsClient(s) => s.get_ref().0.local_addr(),
            Stream::Layered(l) => Ok(l.local),
        }
    }

    /// Remote address of the connection.
    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        match self {
            Stream::Tcp(s) => s.peer_addr(),
            Stream::TlsServer(s) => s.get_ref().0.peer_addr(),
            Stream::TlsClient(s) => s.get_ref().0.peer_addr(),
            Stream::Layered(l) => Ok(l.peer),
        }
    }

    /// Runs the TLS server handshake on this stream.
    pub async fn accept_tls(self, config: Arc<rustls::ServerConfig>) -> io::Result<Stream> {
        let tls = tokio_rustls::TlsAcceptor::from(config).accept(self).await?;
        Ok(Stream::TlsServer(Box::new(tls)))
    }

    /// Runs the TLS client handshake on this stream.
    pub async fn connect_tls(self, config: Arc<rustls::ClientConfig>, name: ServerName<'static>) -> io::Result<Stream> {
        let tls = tokio_rustls::TlsConnector::from(config).connect(name, self).await?;
        Ok(Stream::TlsClient(Box::new(tls)))
    }
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Self {
        Stream::Tcp(s)
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Layered(l) => Pin::new(l.io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Layered(l) => Pin::new(l.io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Layered(l) => Pin::new(l.io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::TlsServer(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::TlsClient(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Layered(l) => Pin::new(l.io.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Relays between two proxy streams: spliced when both are plain TCP, copied otherwise.
pub async fn relay(
    a: &mut Stream,
    b: &mut Stream,
    idle: Option<std::time::Duration>,
) -> io::Result<crate::relay::Transferred> {
    match (a, b) {
        (Stream::Tcp(a), Stream::Tcp(b)) => crate::relay::relay_tcp(a, b, idle).await,
        (a, b) => {
            // R-41 for the copy relay: watch both sockets beneath any TLS layer.
            let watches: Vec<crate::relay::HangupWatch> = [a.tcp(), b.tcp()]
                .into_iter()
                .flatten()
                .filter_map(|s| crate::relay::HangupWatch::new(s).ok())
                .collect();
            crate::relay::relay_watched(a, b, idle, &watches).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn self_signed_certificate_builds_configs() {
        assert!(server_config().is_ok());
        assert!(client_config(false, rustls::RootCertStore::empty()).is_ok());
    }
}
