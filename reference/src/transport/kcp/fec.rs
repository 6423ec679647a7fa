//! kcp-go's forward error correction layer (docs/kcp.md "FEC"). After the crypt header every
//! datagram carries `seqid u32 LE | type u16 LE | …`: type `0xf1` data packets continue with
//! `size u16 LE` (2 + KCP bytes) and the KCP bytes; after each `data` data packets the sender
//! emits `parity` packets (type `0xf2`) holding Reed–Solomon parity computed over the data
//! packets' `size|KCP` bytes, zero-padded to the longest in the group. seqids count every
//! packet, data and parity, so packet `seqid % (data+parity)` is its shard index.
//!
//! The Reed–Solomon code is klauspost/reedsolomon's default (a Vandermonde matrix made
//! systematic), which `reed-solomon-erasure`'s `galois_8` builds identically; the kcptun
//! interop test checks parity bytes from a live kcp-go peer against ours.
//!
//! Sans-IO: [`Encoder`] turns KCP packets into FEC packets; [`Decoder`] turns FEC packets back
//! into KCP packets, recovering lost data packets from parity when it can.

use std::collections::BTreeMap;

use reed_solomon_erasure::galois_8::ReedSolomon;

/// `seqid(4) | type(2)`.
pub const HEADER_LEN: usize = 6;
/// `seqid(4) | type(2) | size(2)`: what a data packet adds in front of the KCP bytes.
pub const DATA_HEADER_LEN: usize = HEADER_LEN + 2;
/// Type of a data packet.
pub const TYPE_DATA: u16 = 0xf1;
/// Type of a parity packet.
pub const TYPE_PARITY: u16 = 0xf2;
/// Groups kept waiting for recovery (kcp-go keeps 3 groups' worth of packets).
const GROUPS_KEPT: u32 = 3;

/// Whether the payload after the crypt header is an FEC packet (else it is bare KCP). KCP's
/// first 16-bit word of a segment at this offset is `cmd|frg` (cmd 81..84), never 0xf1/0xf2.
pub fn is_fec(payload: &[u8]) -> bool {
    payload.len() >= HEADER_LEN && matches!(u16::from_le_bytes([payload[4], payload[5]]), TYPE_DATA | TYPE_PARITY)
}

/// Emits FEC packets for outgoing KCP packets.
pub struct Encoder {
    codec: ReedSolomon,
    data: usize,
    parity: usize,
    next: u32,
    paws: u32,
    /// `size|KCP` bytes of the current group's data packets.
    group: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").field("data", &self.data).field("parity", &self.parity).finish()
    }
}

impl Encoder {
    /// `data` and `parity` shards per group (gost: 10 and 3). Both must be ≥ 1 and their sum
    /// ≤ 256; with 0 parity the caller sends bare KCP, as kcp-go does.
    pub fn new(data: usize, parity: usize) -> Result<Self, String> {
        let codec = ReedSolomon::new(data, parity).map_err(|e| format!("fec {data}/{parity}: {e:?}"))?;
        let total = (data + parity) as u32;
        Ok(Self { codec, data, parity, next: 0, paws: u32::MAX / total * total, group: Vec::with_capacity(data) })
    }

    /// Wraps one KCP packet: appends its FEC data packet (header + size + `kcp`) to `out`
    /// (each packet a separate `Vec`, with `room` zero bytes in front for the crypt header),
    /// followed by the group's parity packets when this packet completes a group.
    pub fn encode(&mut self, kcp: &[u8], room: usize, out: &mut Vec<Vec<u8>>) {
        let mut pkt = vec![0u8; room];
        pkt.extend_from_slice(&self.next.to_le_bytes());
        pkt.extend_from_slice(&TYPE_DATA.to_le_bytes());
        // KCP packets are at most one MTU (≤ 1500), so the size always fits 16 bits.
        pkt.extend_from_slice(&((kcp.len() + 2) as u16).to_le_bytes());
        pkt.extend_from_slice(kcp);
        self.next = self.next.wrapping_add(1);
        self.group.push(pkt[room + HEADER_LEN..].to_vec());
        out.push(pkt);
        if self.group.len() < self.data {
            return;
        }
        let max = self.group.iter().map(Vec::len).max().unwrap_or(0);
        let mut shards: Vec<Vec<u8>> = std::mem::take(&mut self.group);
        for s in &mut shards {
            s.resize(max, 0);
        }
        shards.resize(self.data + self.parity, vec![0u8; max]);
        // Equal-length shards of the configured count: encode cannot fail.
        if self.codec.encode(&mut shards).is_ok() {
            for p in &shards[self.data..] {
                let mut pkt = vec![0u8; room];
                pkt.extend_from_slice(&self.next.to_le_bytes());
                pkt.extend_from_slice(&TYPE_PARITY.to_le_bytes());
                pkt.extend_from_slice(p);
                // kcp-go wraps the sequence only at a parity packet, so groups stay aligned.
                self.next = (self.next.wrapping_add(1)) % self.paws;
                out.push(pkt);
            }
        }
    }
}

struct Group {
    shards: Vec<Option<Vec<u8>>>,
    data_seen: usize,
    done: bool,
}

/// Turns received FEC packets back into KCP packets.
pub struct Decoder {
    codec: ReedSolomon,
    data: usize,
    total: u32,
    groups: BTreeMap<u32, Group>,
    newest: Option<u32>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").field("data", &self.data).field("groups", &self.groups.len()).finish()
    }
}

/// Why an FEC packet was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FecError {
    /// Shorter than its header.
    #[error("FEC packet of {0} bytes is too short")]
    Short(usize),
    /// A data packet's size field disagrees with its length.
    #[error("FEC data size {size} does not fit a {len}-byte packet")]
    BadSize {
        /// The size field.
        size: u16,
        /// Bytes after the 6-byte header.
        len: usize,
    },
    /// Neither data nor parity.
    #[error("not an FEC packet")]
    NotFec,
}

impl Decoder {
    /// Same shard counts as the peer's encoder.
    pub fn new(data: usize, parity: usize) -> Result<Self, String> {
        let codec = ReedSolomon::new(data, parity).map_err(|e| format!("fec {data}/{parity}: {e:?}"))?;
        Ok(Self { codec, data, total: (data + parity) as u32, groups: BTreeMap::new(), newest: None })
    }

    /// Takes one FEC packet (the bytes after the crypt header). Returns the KCP bytes to feed
    /// the ARQ: the packet's own for a data packet, plus any data packets of its group that
    /// this packet made recoverable.
    pub fn decode(&mut self, pkt: &[u8]) -> Result<Vec<Vec<u8>>, FecError> {
        if pkt.len() < HEADER_LEN {
            return Err(FecError::Short(pkt.len()));
        }
        let seqid = u32::from_le_bytes([pkt[0], pkt[1], pkt[2], pkt[3]]);
        let kind = u16::from_le_bytes([pkt[4], pkt[5]]);
        let body = &pkt[HEADER_LEN..];
        let mut out = Vec::new();
        match kind {
            TYPE_DATA => {
                if body.len() < 2 {
                    return Err(FecError::Short(pkt.len()));
                }
                let size = u16::from_le_bytes([body[0], body[1]]);
                if (size as usize) < 2 || size as usize > body.len() {
                    return Err(FecError::BadSize { size, len: body.len() });
                }
                out.push(body[2..size as usize].to_vec());
            }
            TYPE_PARITY => {}
            _ => return Err(FecError::NotFec),
        }
        let base = seqid - seqid % self.total;
        let index = (seqid % self.total) as usize;
        // Drop groups that fell too far behind the newest one (wrapping distance).
        let newest = match self.newest {
            Some(n) if (base.wrapping_sub(n) as i32) <= 0 => n,
            _ => base,
        };
        self.newest = Some(newest);
        let horizon = GROUPS_KEPT * self.total;
        if (newest.wrapping_sub(base) as i32) >= horizon as i32 {
            return Ok(out); // too old to help any recovery
        }
        self.groups.retain(|b, _| (newest.wrapping_sub(*b) as i32) < horizon as i32);
        let data = self.data;
        let g = self.groups.entry(base).or_insert_with(|| Group {
            shards: vec![None; self.total as usize],
            data_seen: 0,
            done: false,
        });
        if g.done || g.shards[index].is_some() {
            return Ok(out);
        }
        g.shards[index] = Some(body.to_vec());
        if index < data {
            g.data_seen += 1;
        }
        let have = g.shards.iter().filter(|s| s.is_some()).count();
        if g.data_seen == data {
            g.done = true;
            g.shards.iter_mut().for_each(|s| *s = None);
        } else if have >= data {
            g.done = true;
            let max = g.shards.iter().flatten().map(Vec::len).max().unwrap_or(0);
            let missing: Vec<usize> = (0..data).filter(|&k| g.shards[k].is_none()).collect();
            for s in g.shards.iter_mut().flatten() {
                s.resize(max, 0);
            }
            if self.codec.reconstruct_data(&mut g.shards).is_ok() {
                for k in missing {
                    if let Some(r) = &g.shards[k] {
                        let size = u16::from_le_bytes([r[0], r[1]]) as usize;
                        if (2..=r.len()).contains(&size) {
                            out.push(r[2..size].to_vec());
                        }
                    }
                }
            }
            g.shards.iter_mut().for_each(|s| *s = None);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn packets(n: usize, rng: &mut impl Rng) -> Vec<Vec<u8>> {
        (0..n).map(|_| (0..rng.random_range(24..200)).map(|_| rng.random()).collect()).collect()
    }

    #[test]
    fn layout_matches_kcp_go() {
        let mut enc = Encoder::new(2, 1).unwrap();
        let mut out = Vec::new();
        enc.encode(b"ab", 20, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0][20..], &[0, 0, 0, 0, 0xf1, 0, 4, 0, b'a', b'b']);
        enc.encode(b"cde", 20, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(&out[1][20..28], &[1, 0, 0, 0, 0xf1, 0, 5, 0]);
        // klauspost's matrix: Vandermonde rows [1,0],[1,1],[1,2] made systematic by the
        // inverse of the top square ([[1,0],[1,1]] in GF(2^8)), so the parity row is [3, 2]:
        // parity = 3·a ⊕ 2·b (polynomial 0x11d), padded to the longer shard.
        let p = &out[2][20..];
        assert_eq!(&p[..6], &[2, 0, 0, 0, 0xf2, 0]);
        let mul2 = |x: u8| (x << 1) ^ if x & 0x80 != 0 { 0x1d } else { 0 };
        let a = [4u8, 0, b'a', b'b', 0];
        let b = [5u8, 0, b'c', b'd', b'e'];
        let x: Vec<u8> = a.iter().zip(b.iter()).map(|(&x, &y)| mul2(x) ^ x ^ mul2(y)).collect();
        assert_eq!(&p[6..], &x[..]);
    }

    #[test]
    fn recovers_lost_data_from_parity() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(10);
        let kcp = packets(10, &mut rng);
        let mut enc = Encoder::new(10, 3).unwrap();
        let mut out = Vec::new();
        for k in &kcp {
            enc.encode(k, 0, &mut out);
        }
        assert_eq!(out.len(), 13);
        let mut dec = Decoder::new(10, 3).unwrap();
        let mut got = Vec::new();
        for (i, p) in out.iter().enumerate() {
            if [1, 4, 7].contains(&i) {
                continue; // lost
            }
            got.extend(dec.decode(p).unwrap());
        }
        let mut want = kcp.clone();
        let mut have = got.clone();
        want.sort();
        have.sort();
        assert_eq!(have, want);
    }

    #[test]
    fn fuzz_decoder_never_panics() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xfec);
        let mut dec = Decoder::new(10, 3).unwrap();
        let mut enc = Encoder::new(10, 3).unwrap();
        for round in 0..20_000 {
            let mut p: Vec<u8> = if round % 3 == 0 {
                (0..rng.random_range(0..80)).map(|_| rng.random()).collect()
            } else {
                let mut out = Vec::new();
                let k: Vec<u8> = (0..rng.random_range(0..60)).map(|_| rng.random()).collect();
                enc.encode(&k, 0, &mut out);
                out.swap_remove(rng.random_range(0..out.len()))
            };
            if !p.is_empty() && rng.random_bool(0.4) {
                let i = rng.random_range(0..p.len());
                p[i] = rng.random();
            }
            if rng.random_bool(0.05) && p.len() >= 4 {
                p[..4].copy_from_slice(&rng.random::<u32>().to_le_bytes());
            }
            let _ = dec.decode(&p);
        }
        assert!(dec.groups.len() <= GROUPS_KEPT as usize + 1);
    }
}
