//! Addresses as they travel in SOCKS messages.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::codec::{DecodeError, Reader};
use super::enums::AddrType;
use super::ProtoError;

/// The longest DOMAINNAME a length byte can carry.
pub const MAX_DOMAIN_LEN: usize = 255;

/// A destination or bound host: an IP address or a domain name kept as raw octets.
///
/// Domain names are octets, not `String`: the wire allows any byte, and a conformance tool must
/// be able to carry a name containing NUL or invalid UTF-8 to see what a peer does with it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A domain name, 0 to 255 octets once validated for encoding.
    Domain(Vec<u8>),
}

/// A host and port, the DST/BND pair of every SOCKS message.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Address {
    /// The host part.
    pub host: Host,
    /// The port, host byte order.
    pub port: u16,
}

impl Address {
    /// The all-zero IPv4 address used in replies that carry no address.
    pub const UNSPECIFIED: Address = Address { host: Host::Ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), port: 0 };

    /// A domain address; fails when the name does not fit in a length byte (client rule C-02).
    pub fn domain(name: impl Into<Vec<u8>>, port: u16) -> Result<Self, ProtoError> {
        let name = name.into();
        if name.len() > MAX_DOMAIN_LEN {
            return Err(ProtoError::FieldTooLong { field: "DOMAINNAME", max: MAX_DOMAIN_LEN });
        }
        Ok(Self { host: Host::Domain(name), port })
    }

    /// Parses `host:port`, `[v6]:port` or `v4:port`; a host that is not an IP literal is a name.
    pub fn parse(s: &str) -> Result<Self, ProtoError> {
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(sa.into());
        }
        let (host, port) = s.rsplit_once(':').ok_or(ProtoError::BadAddress("missing :port"))?;
        let port = port.parse::<u16>().map_err(|_| ProtoError::BadAddress("port is not a number 0-65535"))?;
        if host.is_empty() {
            return Err(ProtoError::BadAddress("empty host"));
        }
        if host.starts_with('[') || host.contains(':') {
            return Err(ProtoError::BadAddress("bad IPv6 literal (use [addr]:port)"));
        }
        Self::domain(host.as_bytes().to_vec(), port)
    }

    /// The socket address, when the host is an IP address.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match &self.host {
            Host::Ip(ip) => Some(SocketAddr::new(*ip, self.port)),
            Host::Domain(_) => None,
        }
    }

    /// The address type this host encodes as.
    pub fn addr_type(&self) -> AddrType {
        match &self.host {
            Host::Ip(IpAddr::V4(_)) => AddrType::IPV4,
            Host::Ip(IpAddr::V6(_)) => AddrType::IPV6,
            Host::Domain(_) => AddrType::DOMAIN,
        }
    }

    /// Size of the SOCKS5 encoding: ATYP, address and port.
    pub fn encoded_len(&self) -> usize {
        3 + match &self.host {
            Host::Ip(IpAddr::V4(_)) => 4,
            Host::Ip(IpAddr::V6(_)) => 16,
            Host::Domain(d) => 1 + d.len(),
        }
    }

    /// The length of the SOCKS5 address (`ATYP ADDR PORT`) that starts `prefix`, as soon as the
    /// octets present tell it: `Ok(None)` until ATYP (and for a name, its length byte) arrived.
    ///
    /// Stream readers use it to read a message exactly, never a byte of what follows it; an
    /// unknown ATYP is an error at once because nothing can tell how long the address is (D-05).
    pub fn wire_len(prefix: &[u8]) -> Result<Option<usize>, ProtoError> {
        let Some(&atyp) = prefix.first() else { return Ok(None) };
        match AddrType(atyp) {
            AddrType::IPV4 => Ok(Some(1 + 4 + 2)),
            AddrType::IPV6 => Ok(Some(1 + 16 + 2)),
            AddrType::DOMAIN => Ok(prefix.get(1).map(|&len| 2 + usize::from(len) + 2)),
            other => Err(ProtoError::UnsupportedAddrType(other)),
        }
    }

    /// Decodes exactly one SOCKS5 address occupying all of `b`; `None` when `b` is anything else.
    pub fn decode_exact(b: &[u8]) -> Option<Self> {
        let mut r = Reader::new(b);
        let a = Self::decode(&mut r).ok()?;
        (r.consumed() == b.len()).then_some(a)
    }

    /// The SOCKS5 encoding as a fresh buffer. Only an over-long name fails to encode; use
    /// [`Address::encode`] where that is possible.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ProtoError> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out)?;
        Ok(out)
    }

    /// Appends the SOCKS5 form `ATYP ADDR PORT` (RFC 1928 §5).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        match &self.host {
            Host::Ip(IpAddr::V4(ip)) => {
                out.push(AddrType::IPV4.0);
                out.extend_from_slice(&ip.octets());
            }
            Host::Ip(IpAddr::V6(ip)) => {
                out.push(AddrType::IPV6.0);
                out.extend_from_slice(&ip.octets());
            }
            Host::Domain(d) => {
                let len = u8::try_from(d.len())
                    .map_err(|_| ProtoError::FieldTooLong { field: "DOMAINNAME", max: MAX_DOMAIN_LEN })?;
                out.push(AddrType::DOMAIN.0);
                out.push(len);
                out.extend_from_slice(d);
            }
        }
        out.extend_from_slice(&self.port.to_be_bytes());
        Ok(())
    }

    /// Reads the SOCKS5 form `ATYP ADDR PORT`. An unknown ATYP is invalid because the length of
    /// what follows cannot be known (the stream cannot be resynchronised, D-05).
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let atyp = AddrType(r.u8()?);
        let host = match atyp {
            AddrType::IPV4 => Host::Ip(IpAddr::V4(Ipv4Addr::from(r.array::<4>()?))),
            AddrType::IPV6 => Host::Ip(IpAddr::V6(Ipv6Addr::from(r.array::<16>()?))),
            AddrType::DOMAIN => {
                let len = r.u8()? as usize;
                Host::Domain(r.take(len)?.to_vec())
            }
            other => return Err(ProtoError::UnsupportedAddrType(other).into()),
        };
        let port = r.u16()?;
        Ok(Self { host, port })
    }
}

impl From<SocketAddr> for Address {
    fn from(sa: SocketAddr) -> Self {
        // A v4-mapped IPv6 address is the IPv4 host; encode it as such so peers see ATYP 01.
        Self { host: Host::Ip(sa.ip().to_canonical()), port: sa.port() }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(ip) => write!(f, "{ip}"),
            // Names are attacker-controlled: escape so a log line can never be split (V-16).
            Host::Domain(d) => write!(f, "{}", d.escape_ascii()),
        }
    }
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
