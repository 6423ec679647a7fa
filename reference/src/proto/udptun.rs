//! gost's UDP-TUN frames (command `F3`, docs/gost.md §4.7): UDP datagrams carried over the
//! SOCKS byte stream after the reply.
//!
//! `RSV(2) = payload length, big-endian` · `FRAG(1)` · `ATYP ADDR PORT` · `DATA`.
//!
//! Client → server the address is the destination, server → client the datagram's source.

use super::addr::Address;
use super::codec::{DecodeError, Reader};
use super::ProtoError;

/// FRAG as gost v3 writes it ("UDP tun relay flag"); gost v2 wrote `00`. Readers ignore it, so
/// we decode any value (a reader that dropped FRAG≠0 as RFC 1928 §7 suggests would drop every
/// gost v3 frame, docs/gost.md §4.7) and write `FF` like gost v3.
pub const FRAG_TUN: u8 = 0xff;

/// Largest payload one frame can carry (RSV is 16 bits).
pub const MAX_PAYLOAD: usize = u16::MAX as usize;

/// One decoded frame, borrowing its payload from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunFrame<'a> {
    /// FRAG as received (ignored, kept for dissectors).
    pub frag: u8,
    /// Destination (client → server) or source (server → client).
    pub address: Address,
    /// The datagram.
    pub payload: &'a [u8],
}

impl<'a> TunFrame<'a> {
    /// Decodes one frame from the front of a byte stream and returns it with its length.
    /// `Incomplete` until the whole frame is there; never reads past it.
    ///
    /// RSV = 0 is decoded as an empty payload. gosocks5 would read "the rest of the packet"
    /// there, which on a stream swallows following frames (§4.7): we never produce such a frame
    /// and do not imitate that reading.
    pub fn decode(input: &'a [u8]) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::new(input);
        let len = usize::from(r.u16()?);
        let frag = r.u8()?;
        let address = Address::decode(&mut r)?;
        let payload = r.take(len)?;
        Ok((Self { frag, address, payload }, r.consumed()))
    }

    /// Appends the frame. An empty payload is refused: gost reads RSV = 0 as "standard datagram"
    /// and desynchronises (§4.7, §8.4), so callers must skip empty datagrams instead.
    pub fn encode(address: &Address, payload: &[u8], out: &mut Vec<u8>) -> Result<(), ProtoError> {
        if payload.is_empty() {
            return Err(ProtoError::EmptyTunDatagram);
        }
        let len = u16::try_from(payload.len())
            .map_err(|_| ProtoError::FieldTooLong { field: "UDP-TUN payload", max: MAX_PAYLOAD })?;
        let start = out.len();
        out.extend_from_slice(&len.to_be_bytes());
        out.push(FRAG_TUN);
        if let Err(e) = address.encode(out) {
            out.truncate(start);
            return Err(e);
        }
        out.extend_from_slice(payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Host;

    use testkit::hex::decode as hex;

    #[test]
    fn spec_example_encodes_byte_for_byte() {
        // §4.7: 5-byte payload to 127.0.0.1:53.
        let mut out = Vec::new();
        TunFrame::encode(&"127.0.0.1:53".parse::<std::net::SocketAddr>().unwrap().into(), b"hello", &mut out).unwrap();
        assert_eq!(out, hex("00 05 ff 01 7f 00 00 01 00 35 68 65 6c 6c 6f"));
    }

    #[test]
    fn decodes_v2_and_v3_frag_domain_and_ipv6_and_stops_at_the_frame_end() {
        for (bytes, frag, host_len, payload) in [
            ("00 02 ff 01 0a000001 0035 aabb", 0xff, 4, &[0xaa, 0xbb][..]),
            ("00 01 00 03 03 616263 0050 cc", 0x00, 3, &[0xcc][..]),
            ("00 01 ff 04 00000000000000000000000000000001 0035 dd", 0xff, 16, &[0xdd][..]),
        ] {
            let mut input = hex(bytes);
            let n = input.len();
            input.extend_from_slice(&hex("00 01 ff")); // the next frame's start
            let (f, used) = TunFrame::decode(&input).unwrap();
            assert_eq!((f.frag, f.payload, used), (frag, payload, n), "{bytes}");
            let len = match &f.address.host {
                Host::Ip(std::net::IpAddr::V4(_)) => 4,
                Host::Ip(std::net::IpAddr::V6(_)) => 16,
                Host::Domain(d) => d.len(),
            };
            assert_eq!(len, host_len);
        }
    }

    #[test]
    fn incomplete_until_the_last_payload_byte_and_rsv_zero_is_empty() {
        let full = hex("00 03 ff 01 7f000001 0035 010203");
        for cut in 0..full.len() {
            assert_eq!(TunFrame::decode(&full[..cut]), Err(DecodeError::Incomplete), "cut {cut}");
        }
        let zero = hex("00 00 ff 01 7f000001 0035 99");
        let (f, n) = TunFrame::decode(&zero).unwrap();
        assert_eq!((f.payload.len(), n), (0, 10));
        assert!(matches!(
            TunFrame::decode(&hex("00 01 ff 05 7f000001 0035 99")),
            Err(DecodeError::Invalid(ProtoError::UnsupportedAddrType(_)))
        ));
    }

    #[test]
    fn empty_and_oversized_payloads_are_refused() {
        let a: Address = "127.0.0.1:53".parse::<std::net::SocketAddr>().unwrap().into();
        let mut out = Vec::new();
        assert!(TunFrame::encode(&a, b"", &mut out).is_err());
        assert!(TunFrame::encode(&a, &vec![0; MAX_PAYLOAD + 1], &mut out).is_err());
        assert!(out.is_empty());
        TunFrame::encode(&a, &vec![7; MAX_PAYLOAD], &mut out).unwrap();
        assert_eq!(&out[..3], &[0xff, 0xff, 0xff]);
    }
}
