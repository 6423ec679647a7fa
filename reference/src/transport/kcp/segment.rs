//! The KCP segment header (ikcp's wire format, which kcp-go keeps): 24 bytes little-endian
//! `conv u32, cmd u8, frg u8, wnd u16, ts u32, sn u32, una u32, len u32`, then `len` bytes.
//! Several segments may share a datagram. The ARQ itself runs in the `kcp` crate; this codec
//! is what the listener uses to see a new conversation before a session exists, and what
//! validates a datagram before the ARQ sees it.

/// Header length.
pub const HEADER_LEN: usize = 24;
/// Data segment.
pub const CMD_PUSH: u8 = 81;
/// Acknowledgement.
pub const CMD_ACK: u8 = 82;
/// Window probe (ask).
pub const CMD_WASK: u8 = 83;
/// Window size (tell).
pub const CMD_WINS: u8 = 84;

/// One decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Conversation id, the same for every segment of one session.
    pub conv: u32,
    /// [`CMD_PUSH`], [`CMD_ACK`], [`CMD_WASK`] or [`CMD_WINS`].
    pub cmd: u8,
    /// Fragment countdown (always 0 in stream mode).
    pub frg: u8,
    /// Sender's free receive window, in segments.
    pub wnd: u16,
    /// Sender's timestamp (echoed in ACKs).
    pub ts: u32,
    /// Sequence number.
    pub sn: u32,
    /// Sender's next expected sequence number.
    pub una: u32,
    /// Payload length.
    pub len: u32,
}

/// Why a datagram's KCP part was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    /// Fewer than 24 bytes where a header should be.
    #[error("truncated KCP header ({0} bytes)")]
    Truncated(usize),
    /// A command byte outside 81..=84.
    #[error("unknown KCP command {0}")]
    UnknownCmd(u8),
    /// `len` runs past the end of the datagram.
    #[error("KCP segment length {len} exceeds the {left} bytes left")]
    Overrun {
        /// Declared length.
        len: u32,
        /// Bytes actually left.
        left: usize,
    },
    /// Segments of different conversations in one datagram.
    #[error("mixed conversations in one datagram")]
    MixedConv,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Header {
    /// Decodes the header at the start of `b`.
    pub fn decode(b: &[u8]) -> Result<Self, SegmentError> {
        if b.len() < HEADER_LEN {
            return Err(SegmentError::Truncated(b.len()));
        }
        let h = Header {
            conv: u32_at(b, 0),
            cmd: b[4],
            frg: b[5],
            wnd: u16::from_le_bytes([b[6], b[7]]),
            ts: u32_at(b, 8),
            sn: u32_at(b, 12),
            una: u32_at(b, 16),
            len: u32_at(b, 20),
        };
        if !(CMD_PUSH..=CMD_WINS).contains(&h.cmd) {
            return Err(SegmentError::UnknownCmd(h.cmd));
        }
        Ok(h)
    }

    /// Appends the encoded header to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.conv.to_le_bytes());
        out.push(self.cmd);
        out.push(self.frg);
        out.extend_from_slice(&self.wnd.to_le_bytes());
        out.extend_from_slice(&self.ts.to_le_bytes());
        out.extend_from_slice(&self.sn.to_le_bytes());
        out.extend_from_slice(&self.una.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
    }
}

/// Walks every segment of a datagram's KCP part and returns the first header; refuses a
/// datagram the ARQ would reject half-way (so a bad datagram never half-applies).
pub fn validate(mut b: &[u8]) -> Result<Header, SegmentError> {
    let first = Header::decode(b)?;
    while !b.is_empty() {
        let h = Header::decode(b)?;
        if h.conv != first.conv {
            return Err(SegmentError::MixedConv);
        }
        let left = b.len() - HEADER_LEN;
        if h.len as usize > left {
            return Err(SegmentError::Overrun { len: h.len, left });
        }
        b = &b[HEADER_LEN + h.len as usize..];
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn header_round_trips_and_datagram_walks() {
        let h = Header { conv: 0xdeadbeef, cmd: CMD_PUSH, frg: 0, wnd: 32, ts: 7, sn: 1, una: 0, len: 3 };
        let mut d = Vec::new();
        h.encode(&mut d);
        d.extend_from_slice(b"abc");
        let ack = Header { cmd: CMD_ACK, len: 0, ..h };
        ack.encode(&mut d);
        assert_eq!(Header::decode(&d).unwrap(), h);
        assert_eq!(validate(&d).unwrap(), h);
        assert_eq!(validate(&d[..d.len() - 1]), Err(SegmentError::Truncated(23)));
        let mut bad = d.clone();
        bad[20] = 200;
        assert!(matches!(validate(&bad), Err(SegmentError::Overrun { len: 200, .. })));
        let mut other = d.clone();
        other[27] = 0;
        assert_eq!(validate(&other), Err(SegmentError::MixedConv));
        let mut cmd = d.clone();
        cmd[4] = 0x50;
        assert_eq!(validate(&cmd), Err(SegmentError::UnknownCmd(0x50)));
    }

    /// Random bytes, and valid datagrams with random corruption, through the decoder and
    /// through the `kcp` crate's input (what the session feeds it): errors only, no panic.
    #[test]
    fn fuzz_segment_decoder_and_arq_input_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x6b6370);
        let mut arq = kcp::Kcp::new_stream(1, std::io::sink());
        arq.update(0).ok();
        for round in 0..20_000u32 {
            let mut d: Vec<u8> = if round % 2 == 0 {
                (0..rng.random_range(0..200)).map(|_| rng.random()).collect()
            } else {
                let h = Header {
                    conv: 1,
                    cmd: rng.random_range(80..86),
                    frg: rng.random(),
                    wnd: rng.random(),
                    ts: rng.random(),
                    sn: rng.random(),
                    una: rng.random(),
                    len: rng.random_range(0..40),
                };
                let mut d = Vec::new();
                h.encode(&mut d);
                d.extend((0..rng.random_range(0..48)).map(|_| rng.random::<u8>()));
                d
            };
            if !d.is_empty() && rng.random_bool(0.3) {
                let i = rng.random_range(0..d.len());
                d[i] = rng.random();
            }
            if validate(&d).is_ok() {
                let _ = arq.input(&d);
                let _ = arq.update(round);
                let mut sink = [0u8; 4096];
                while arq.recv(&mut sink).is_ok() {}
            }
        }
    }
}
