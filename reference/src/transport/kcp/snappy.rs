//! The snappy framing format over the KCP byte stream (gost wraps the KCP session in golang/snappy's
//! framed `Writer`/`Reader` unless `nocomp`; docs/kcp.md "snappy"). The chunk coding itself
//! (compression, masked CRC-32C) is the `snap` crate's frame encoder and decoder, which
//! implement the same format; this module only makes them incremental, because the KCP
//! session task must not block: [`Encoder`] frames each write like golang/snappy's
//! `Write`+`Flush`, and [`Decoder`] cuts the incoming byte stream at chunk boundaries and hands
//! each complete chunk to `snap`.

use std::io::{Read, Write};

/// The stream identifier chunk that starts every framed stream.
pub const STREAM_ID: [u8; 10] = [0xff, 0x06, 0x00, 0x00, b's', b'N', b'a', b'P', b'p', b'Y'];
/// Largest chunk body the format allows (16 MiB − 1 by its 24-bit length; golang/snappy
/// never writes more than 65536 uncompressed bytes plus overhead).
const MAX_CHUNK: usize = 1 << 17;

/// Frames outgoing bytes.
pub struct Encoder {
    inner: snap::write::FrameEncoder<Vec<u8>>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("snappy::Encoder")
    }
}

impl Default for Encoder {
    fn default() -> Self {
        Self { inner: snap::write::FrameEncoder::new(Vec::new()) }
    }
}

impl Encoder {
    /// Frames `data` (chunks of ≤ 64 KiB, the stream identifier first on the first call) and
    /// returns the framed bytes.
    pub fn encode(&mut self, data: &[u8]) -> Vec<u8> {
        // Writing into a Vec cannot fail.
        let _ = self.inner.write_all(data);
        let _ = self.inner.flush();
        std::mem::take(self.inner.get_mut())
    }
}

/// Why a framed stream was refused (the session is then closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnappyError {
    /// The stream did not start with the stream identifier.
    #[error("snappy stream does not start with the stream identifier")]
    NoStreamId,
    /// A reserved unskippable chunk type (0x02..=0x7f).
    #[error("unskippable snappy chunk type {0:#04x}")]
    Unskippable(u8),
    /// A chunk longer than any snappy writer produces.
    #[error("snappy chunk of {0} bytes is too long")]
    TooLong(usize),
    /// `snap` refused the chunk (bad CRC, corrupt compressed data).
    #[error("bad snappy chunk: {0}")]
    Chunk(String),
}

/// Unframes incoming bytes.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    started: bool,
}

impl Decoder {
    /// Appends received bytes and returns the plain bytes of every chunk now complete.
    pub fn decode(&mut self, data: &[u8]) -> Result<Vec<u8>, SnappyError> {
        self.buf.extend_from_slice(data);
        let mut plain = Vec::new();
        let mut at = 0;
        while self.buf.len() - at >= 4 {
            let kind = self.buf[at];
            let len = u32::from_le_bytes([self.buf[at + 1], self.buf[at + 2], self.buf[at + 3], 0]) as usize;
            if len > MAX_CHUNK {
                return Err(SnappyError::TooLong(len));
            }
            if self.buf.len() - at - 4 < len {
                break;
            }
            let chunk = &self.buf[at..at + 4 + len];
            if !self.started {
                if chunk != STREAM_ID {
                    return Err(SnappyError::NoStreamId);
                }
                self.started = true;
            } else {
                match kind {
                    0x00 | 0x01 => {
                        // A fresh snap decoder per chunk: identifier + this chunk is a
                        // complete framed stream, so snap checks the CRC and decompresses.
                        let mut framed = Vec::with_capacity(STREAM_ID.len() + chunk.len());
                        framed.extend_from_slice(&STREAM_ID);
                        framed.extend_from_slice(chunk);
                        snap::read::FrameDecoder::new(&framed[..])
                            .read_to_end(&mut plain)
                            .map_err(|e| SnappyError::Chunk(e.to_string()))?;
                    }
                    0xff => {
                        if chunk != STREAM_ID {
                            return Err(SnappyError::NoStreamId);
                        }
                    }
                    0x80..=0xfe => {}
                    other => return Err(SnappyError::Unskippable(other)),
                }
            }
            at += 4 + len;
        }
        self.buf.drain(..at);
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn first_write_starts_with_the_identifier_and_round_trips_in_pieces() {
        let mut enc = Encoder::default();
        let a = enc.encode(b"hello hello hello hello hello hello");
        assert_eq!(&a[..10], &STREAM_ID);
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let b = enc.encode(&big);
        assert_ne!(&b[..10], &STREAM_ID, "identifier only once");
        let mut wire = a;
        wire.extend_from_slice(&b);
        let mut dec = Decoder::default();
        let mut plain = Vec::new();
        for piece in wire.chunks(777) {
            plain.extend(dec.decode(piece).unwrap());
        }
        assert_eq!(&plain[..35], b"hello hello hello hello hello hello");
        assert_eq!(&plain[35..], &big[..]);
    }

    #[test]
    fn refuses_missing_identifier_and_bad_crc() {
        assert_eq!(Decoder::default().decode(&[1, 5, 0, 0, 0, 0, 0, 0, b'x']), Err(SnappyError::NoStreamId));
        let mut wire = Encoder::default().encode(b"payload");
        let n = wire.len();
        wire[n - 1] ^= 0x55;
        assert!(matches!(Decoder::default().decode(&wire), Err(SnappyError::Chunk(_))));
    }

    #[test]
    fn fuzz_decoder_never_panics() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5a);
        let mut enc = Encoder::default();
        let good: Vec<u8> = enc.encode(b"abcabcabcabcabcabc xyz");
        for _ in 0..20_000 {
            let mut dec = Decoder::default();
            let mut wire = good.clone();
            for _ in 0..rng.random_range(0..4) {
                let i = rng.random_range(0..wire.len());
                wire[i] = rng.random();
            }
            wire.extend((0..rng.random_range(0..64)).map(|_| rng.random::<u8>()));
            let _ = dec.decode(&wire[..rng.random_range(0..wire.len())]);
            let _ = dec.decode(&wire);
        }
    }
}
