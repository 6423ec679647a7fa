//! SOCKS5 messages (RFC 1928 §3–§6).

use super::addr::Address;
use super::codec::{Decoded, Reader};
use super::enums::{Command, Method, Reply};
use super::ProtoError;

/// The protocol version byte of SOCKS5.
pub const VERSION: u8 = 0x05;

/// The client's greeting: `VER NMETHODS METHODS…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// Offered methods in the client's order; may be empty (answered with `05 FF`, R-08).
    pub methods: Vec<Method>,
}

impl Greeting {
    /// Decodes a greeting.
    pub fn decode(buf: &[u8]) -> Decoded<Self> {
        let mut r = Reader::new(buf);
        check_version(r.u8()?)?;
        let n = r.u8()? as usize;
        let methods = r.take(n)?.iter().copied().map(Method).collect();
        Ok((Self { methods }, r.consumed()))
    }

    /// Encodes the greeting; more than 255 methods cannot be expressed.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        let n =
            u8::try_from(self.methods.len()).map_err(|_| ProtoError::FieldTooLong { field: "METHODS", max: 255 })?;
        out.extend_from_slice(&[VERSION, n]);
        out.extend(self.methods.iter().map(|m| m.0));
        Ok(())
    }
}

/// The server's method selection: `VER METHOD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodSelection {
    /// The selected method, or `NO_ACCEPTABLE`.
    pub method: Method,
}

impl MethodSelection {
    /// Decodes a selection; the version must be 05 (client rule C-04).
    pub fn decode(buf: &[u8]) -> Decoded<Self> {
        let mut r = Reader::new(buf);
        check_version(r.u8()?)?;
        let method = Method(r.u8()?);
        Ok((Self { method }, r.consumed()))
    }

    /// Encodes the selection.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[VERSION, self.method.0]);
    }
}

/// A request: `VER CMD RSV ATYP DST.ADDR DST.PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// CMD, kept open so unknown commands can be answered with REP 07.
    pub command: Command,
    /// RSV as received; a server rejects non-zero (D-14).
    pub reserved: u8,
    /// DST.ADDR and DST.PORT.
    pub address: Address,
}

impl Request {
    /// Decodes a request. An unknown ATYP is [`ProtoError::UnsupportedAddrType`].
    pub fn decode(buf: &[u8]) -> Decoded<Self> {
        let mut r = Reader::new(buf);
        check_version(r.u8()?)?;
        let command = Command(r.u8()?);
        let reserved = r.u8()?;
        let address = Address::decode(&mut r)?;
        Ok((Self { command, reserved, address }, r.consumed()))
    }

    /// Encodes the request.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        out.extend_from_slice(&[VERSION, self.command.0, self.reserved]);
        self.address.encode(out)
    }
}

/// A reply: `VER REP RSV ATYP BND.ADDR BND.PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyMsg {
    /// REP.
    pub reply: Reply,
    /// RSV as received.
    pub reserved: u8,
    /// BND.ADDR and BND.PORT.
    pub address: Address,
}

impl ReplyMsg {
    /// A reply carrying `address`.
    pub fn new(reply: Reply, address: Address) -> Self {
        Self { reply, reserved: 0, address }
    }

    /// A failure reply: ATYP 01 with zeros, 10 bytes in all.
    pub fn failure(reply: Reply) -> Self {
        Self::new(reply, Address::UNSPECIFIED)
    }

    /// Decodes a reply by its own ATYP, whatever the request's was (C-03, V-31).
    pub fn decode(buf: &[u8]) -> Decoded<Self> {
        let mut r = Reader::new(buf);
        check_version(r.u8()?)?;
        let reply = Reply(r.u8()?);
        let reserved = r.u8()?;
        let address = Address::decode(&mut r)?;
        Ok((Self { reply, reserved, address }, r.consumed()))
    }

    /// Encodes the reply.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        out.extend_from_slice(&[VERSION, self.reply.0, self.reserved]);
        self.address.encode(out)
    }

    /// The encoded reply as a fresh buffer. Encoding only fails for an over-long domain, which a
    /// reply built from a socket address never has; such a reply degrades to the 10-byte form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(3 + self.address.encoded_len());
        if self.encode(&mut out).is_err() {
            out.clear();
            let _ = ReplyMsg::failure(self.reply).encode(&mut out);
        }
        out
    }
}

fn check_version(v: u8) -> Result<(), ProtoError> {
    if v == VERSION {
        Ok(())
    } else {
        Err(ProtoError::BadVersion { expected: VERSION, got: v })
    }
}
