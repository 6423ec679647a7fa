//! The SOCKS5 UDP request header (RFC 1928 §7): `RSV(2) FRAG ATYP DST.ADDR DST.PORT DATA`.

use super::addr::Address;
use super::codec::Reader;
use super::ProtoError;

/// A decoded UDP header; the payload is what follows it in the datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpHeader {
    /// RSV as received (RFC: X'0000').
    pub reserved: u16,
    /// FRAG; a relay without reassembly drops non-zero values (D-12).
    pub frag: u8,
    /// DST (client → relay) or the real source (relay → client).
    pub address: Address,
}

impl UdpHeader {
    /// A header with RSV 0 and FRAG 0.
    pub fn new(address: Address) -> Self {
        Self { reserved: 0, frag: 0, address }
    }

    /// Decodes the header of a whole datagram and returns it with the payload offset. A datagram
    /// is complete by definition, so a truncated header is invalid, not "incomplete".
    pub fn decode(datagram: &[u8]) -> Result<(Self, usize), ProtoError> {
        let mut r = Reader::new(datagram);
        let parse = |r: &mut Reader<'_>| -> Result<Self, super::codec::DecodeError> {
            let reserved = r.u16()?;
            let frag = r.u8()?;
            let address = Address::decode(r)?;
            Ok(Self { reserved, frag, address })
        };
        match parse(&mut r) {
            Ok(h) => Ok((h, r.consumed())),
            Err(super::codec::DecodeError::Incomplete) => Err(ProtoError::Truncated),
            Err(super::codec::DecodeError::Invalid(e)) => Err(e),
        }
    }

    /// Appends the encoded header (without payload).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        out.extend_from_slice(&self.reserved.to_be_bytes());
        out.push(self.frag);
        self.address.encode(out)
    }

    /// Header size for this address (computed from the structure, D-11).
    pub fn encoded_len(&self) -> usize {
        3 + self.address.encoded_len()
    }
}
