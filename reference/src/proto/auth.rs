//! Username/password sub-negotiation (RFC 1929).

use super::codec::{Decoded, Reader};
use super::ProtoError;

/// The sub-negotiation version byte.
pub const VERSION: u8 = 0x01;
/// STATUS for success; any other value is a failure.
pub const STATUS_SUCCESS: u8 = 0x00;
/// STATUS this implementation sends on failure.
pub const STATUS_FAILURE: u8 = 0x01;

/// `VER ULEN UNAME PLEN PASSWD`. Fields are opaque octets; empty ones parse (D-04).
#[derive(Clone, PartialEq, Eq)]
pub struct UserPassRequest {
    /// UNAME.
    pub user: Vec<u8>,
    /// PASSWD.
    pub pass: Vec<u8>,
}

impl std::fmt::Debug for UserPassRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a password.
        f.debug_struct("UserPassRequest").field("user", &self.user.escape_ascii().to_string()).finish_non_exhaustive()
    }
}

impl UserPassRequest {
    /// Decodes the request.
    pub fn decode(buf: &[u8]) -> Decoded<Self> {
        let mut r = Reader::new(buf);
        let v = r.u8()?;
        if v != VERSION {
            return Err(ProtoError::BadVersion { expected: VERSION, got: v }.into());
        }
        let ulen = r.u8()? as usize;
        let user = r.take(ulen)?.to_vec();
        let plen = r.u8()? as usize;
        let pass = r.take(plen)?.to_vec();
        Ok((Self { user, pass }, r.consumed()))
    }

    /// Encodes the request; each field is at most 255 octets (C-02, V-29, V-35).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        let ulen = u8::try_from(self.user.len()).map_err(|_| ProtoError::FieldTooLong { field: "UNAME", max: 255 })?;
        let plen = u8::try_from(self.pass.len()).map_err(|_| ProtoError::FieldTooLong { field: "PASSWD", max: 255 })?;
        out.push(VERSION);
        out.push(ulen);
        out.extend_from_slice(&self.user);
        out.push(plen);
        out.extend_from_slice(&self.pass);
        Ok(())
    }
}

/// `VER STATUS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserPassReply {
    /// STATUS: 00 success, anything else failure.
    pub status: u8,
}

impl UserPassReply {
    /// Decodes the reply; VER must be 01 (C-04: some servers wrongly send 05).
    pub fn decode(buf: &[u8]) -> Decoded<Self> {
        let mut r = Reader::new(buf);
        let v = r.u8()?;
        if v != VERSION {
            return Err(ProtoError::BadVersion { expected: VERSION, got: v }.into());
        }
        Ok((Self { status: r.u8()? }, r.consumed()))
    }

    /// Encodes the reply.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[VERSION, self.status]);
    }
}
