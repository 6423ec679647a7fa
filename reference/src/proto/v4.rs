//! SOCKS4 and SOCKS4a messages (the NEC "SOCKS: A protocol for TCP proxy across firewalls" text
//! and its SOCKS4A extension).

use std::net::Ipv4Addr;

use super::codec::{Decoded, Reader};
use super::enums::{Socks4Command, Socks4Reply};
use super::ProtoError;

/// The request version byte VN.
pub const VERSION: u8 = 0x04;
/// Default cap on USERID and HOSTNAME: more is a rejected request, not a bigger buffer.
pub const DEFAULT_MAX_FIELD: usize = 255;

/// `VN CD DSTPORT DSTIP USERID 00 [HOSTNAME 00]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Socks4Request {
    /// CD.
    pub command: Socks4Command,
    /// DSTPORT.
    pub port: u16,
    /// DSTIP; `0.0.0.x` with x≠0 marks SOCKS4a.
    pub ip: Ipv4Addr,
    /// USERID, never treated as authentication.
    pub user_id: Vec<u8>,
    /// HOSTNAME, present exactly for SOCKS4a requests.
    pub hostname: Option<Vec<u8>>,
}

impl std::fmt::Debug for Socks4Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socks4Request")
            .field("command", &self.command)
            .field("port", &self.port)
            .field("ip", &self.ip)
            .field("user_id", &self.user_id.escape_ascii().to_string())
            .field("hostname", &self.hostname.as_ref().map(|h| h.escape_ascii().to_string()))
            .finish()
    }
}

/// Whether DSTIP announces a SOCKS4a hostname: exactly `0.0.0.x` with x≠0 (D-09).
pub fn is_socks4a_marker(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 0 && o[1] == 0 && o[2] == 0 && o[3] != 0
}

impl Socks4Request {
    /// Decodes a request with USERID and HOSTNAME capped at `max_field` octets each.
    pub fn decode(buf: &[u8], max_field: usize) -> Decoded<Self> {
        let mut r = Reader::new(buf);
        let v = r.u8()?;
        if v != VERSION {
            return Err(ProtoError::BadVersion { expected: VERSION, got: v }.into());
        }
        let command = Socks4Command(r.u8()?);
        let port = r.u16()?;
        let ip = Ipv4Addr::from(r.array::<4>()?);
        let user_id = r.nul_terminated(max_field, "USERID")?.to_vec();
        let hostname =
            if is_socks4a_marker(ip) { Some(r.nul_terminated(max_field, "HOSTNAME")?.to_vec()) } else { None };
        Ok((Self { command, port, ip, user_id, hostname }, r.consumed()))
    }

    /// Encodes the request. Fields must be at most 255 octets and contain no NUL (C-02), and a
    /// hostname needs a `0.0.0.x` DSTIP.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        check_field(&self.user_id, "USERID")?;
        if let Some(h) = &self.hostname {
            check_field(h, "HOSTNAME")?;
            if !is_socks4a_marker(self.ip) {
                return Err(ProtoError::Socks4aWithoutMarker(self.ip));
            }
        }
        out.extend_from_slice(&[VERSION, self.command.0]);
        out.extend_from_slice(&self.port.to_be_bytes());
        out.extend_from_slice(&self.ip.octets());
        out.extend_from_slice(&self.user_id);
        out.push(0);
        if let Some(h) = &self.hostname {
            out.extend_from_slice(h);
            out.push(0);
        }
        Ok(())
    }
}

fn check_field(f: &[u8], field: &'static str) -> Result<(), ProtoError> {
    if f.len() > DEFAULT_MAX_FIELD {
        return Err(ProtoError::FieldTooLong { field, max: DEFAULT_MAX_FIELD });
    }
    if f.contains(&0) {
        return Err(ProtoError::EmbeddedNul { field });
    }
    Ok(())
}

/// `VN CD DSTPORT DSTIP`, always 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Socks4ReplyMsg {
    /// CD.
    pub code: Socks4Reply,
    /// DSTPORT.
    pub port: u16,
    /// DSTIP; 0 in a BIND reply means "the server's address".
    pub ip: Ipv4Addr,
}

impl Socks4ReplyMsg {
    /// A reply with zero port and address.
    pub fn new(code: Socks4Reply) -> Self {
        Self { code, port: 0, ip: Ipv4Addr::UNSPECIFIED }
    }

    /// Decodes a reply; VN 00 and 04 are both accepted (D-08).
    pub fn decode(buf: &[u8]) -> Decoded<Self> {
        let mut r = Reader::new(buf);
        let v = r.u8()?;
        if v != 0 && v != VERSION {
            return Err(ProtoError::BadVersion { expected: 0, got: v }.into());
        }
        let code = Socks4Reply(r.u8()?);
        let port = r.u16()?;
        let ip = Ipv4Addr::from(r.array::<4>()?);
        Ok((Self { code, port, ip }, r.consumed()))
    }

    /// Encodes the reply with VN 00 (D-08).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0, self.code.0]);
        out.extend_from_slice(&self.port.to_be_bytes());
        out.extend_from_slice(&self.ip.octets());
    }

    /// The encoded reply as a fresh 8-byte array.
    pub fn to_bytes(&self) -> [u8; 8] {
        let mut v = Vec::with_capacity(8);
        self.encode(&mut v);
        let mut out = [0u8; 8];
        out.copy_from_slice(&v);
        out
    }
}
