//! The sans-IO protocol core: every SOCKS4/4a/5, RFC 1929 and UDP-header message, and the
//! per-role handshake state machines.
//!
//! Nothing here touches a socket, a runtime or a clock. The same code serves the tokio server and
//! client, the harness's dissector and fuzz targets. Decoders distinguish "need more bytes" from
//! "invalid", never panic, and never consume past the end of their message.

pub mod addr;
pub mod auth;
pub mod client;
pub mod codec;
pub mod enums;
pub mod fuzzing;
pub mod server;
pub mod smux;
pub mod udp;
pub mod udptun;
pub mod v4;
pub mod v5;

pub use addr::{Address, Host};
pub use codec::{DecodeError, Decoded};
pub use enums::{AddrType, Command, Method, Reply, Socks4Command, Socks4Reply};

/// A message that is malformed or cannot be expressed on the wire.
///
/// Non-exhaustive: a new message kind brings its own variant rather than a free-text catch-all,
/// and callers outside this crate keep compiling when one is added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// The version byte is not the one this message has.
    #[error("bad version byte 0x{got:02x} (expected 0x{expected:02x})")]
    BadVersion {
        /// The version the message type requires.
        expected: u8,
        /// The byte that arrived.
        got: u8,
    },
    /// ATYP is not 01, 03 or 04, so the address length is unknown.
    #[error("unsupported address type {0}")]
    UnsupportedAddrType(AddrType),
    /// A length-limited field is longer than its limit.
    #[error("{field} longer than {max} bytes")]
    FieldTooLong {
        /// The field's name as in the spec.
        field: &'static str,
        /// Its limit.
        max: usize,
    },
    /// A NUL-terminated field contains a NUL.
    #[error("{field} contains a NUL byte")]
    EmbeddedNul {
        /// The field's name as in the spec.
        field: &'static str,
    },
    /// A datagram ends inside its header.
    #[error("truncated datagram header")]
    Truncated,
    /// A `host:port` text that is not an address (missing port, empty host, bad IPv6 literal).
    #[error("bad address: {0}")]
    BadAddress(&'static str),
    /// A SOCKS4a request with a HOSTNAME but a DSTIP that is not `0.0.0.x`, x ≠ 0.
    #[error("SOCKS4a hostname needs DSTIP 0.0.0.x, x != 0 (got {0})")]
    Socks4aWithoutMarker(std::net::Ipv4Addr),
    /// An smux frame whose command byte is none of SYN, FIN, PSH, NOP, UPD.
    #[error("unknown smux command {0:#04x}")]
    UnknownSmuxCommand(u8),
    /// An smux frame whose length is not allowed for its command (SYN/FIN/NOP carry none, UPD 8).
    #[error("smux frame length {len} not allowed for command {cmd:#04x}")]
    SmuxLength {
        /// The command byte.
        cmd: u8,
        /// The frame's length field.
        len: usize,
    },
    /// An empty datagram for UDP-TUN, whose RSV = 0 would mean "standard datagram" to gost.
    #[error("UDP-TUN cannot carry an empty datagram")]
    EmptyTunDatagram,
}

/// The protocol a request arrived in (or is to be sent in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// SOCKS4: IPv4 destinations only.
    V4,
    /// SOCKS4a: SOCKS4 with a hostname after the USERID.
    V4a,
    /// SOCKS5.
    V5,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Version::V4 => "socks4",
            Version::V4a => "socks4a",
            Version::V5 => "socks5",
        })
    }
}

/// Encodes the reply to a request of `version`: SOCKS5 keeps REP and BND; SOCKS4 maps success to
/// 5A and every failure to 5B with an 8-byte reply.
pub fn encode_reply(version: Version, reply: Reply, bnd: &Address) -> Vec<u8> {
    match version {
        Version::V5 => v5::ReplyMsg::new(reply, bnd.clone()).to_bytes(),
        Version::V4 | Version::V4a => {
            let code = if reply == Reply::SUCCEEDED { Socks4Reply::GRANTED } else { Socks4Reply::REJECTED };
            let (ip, port) = match (&bnd.host, reply == Reply::SUCCEEDED) {
                (Host::Ip(std::net::IpAddr::V4(ip)), true) => (*ip, bnd.port),
                (_, true) => (std::net::Ipv4Addr::UNSPECIFIED, bnd.port),
                _ => (std::net::Ipv4Addr::UNSPECIFIED, 0),
            };
            v4::Socks4ReplyMsg { code, port, ip }.to_bytes().to_vec()
        }
    }
}

#[cfg(test)]
mod tests;
