//! TCP stream reassembly and UDP datagram collection.
//!
//! Each TCP connection (a 4-tuple between a SYN and its FIN/RST; a new SYN after the end opens
//! a new one) becomes a [`TcpFlow`] with one [`Stream`] per direction. A stream places each
//! segment by its sequence number: bytes already delivered (retransmissions, overlaps) are
//! dropped after checking that they agree with what was delivered, segments ahead of the next
//! expected byte wait until the hole before them fills, and whatever still waits at the end of
//! the capture is a gap. A capture that starts in the middle of a connection starts each
//! stream at the first sequence number seen.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use super::read::{Packet, TcpSegment, Transport};

/// Where a byte range of a stream came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Offset in the stream of the chunk's first byte.
    pub offset: usize,
    /// Its length.
    pub len: usize,
    /// The packet that delivered it.
    pub packet: usize,
    /// That packet's capture time.
    pub time: Duration,
}

/// A TCP flag event (FIN or RST) seen on a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// The packet that carried it.
    pub packet: usize,
    /// Its time.
    pub time: Duration,
    /// Stream offset at which it was sent (bytes before it).
    pub offset: usize,
}

/// One direction of a TCP connection, reassembled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stream {
    /// The contiguous bytes from the stream's start (or the first byte captured).
    pub data: Vec<u8>,
    /// Where each delivered range came from, in stream order.
    pub chunks: Vec<Chunk>,
    /// True when no SYN was seen: the stream starts at the first byte the capture has.
    pub mid_flow: bool,
    /// Segments that carried only bytes already delivered.
    pub retransmissions: usize,
    /// Segments that arrived ahead of a hole and waited.
    pub out_of_order: usize,
    /// Segments whose overlap with delivered bytes disagreed with them (the first copy wins).
    pub conflicts: usize,
    /// Byte ranges never captured: `(offset, len)`. Bytes after the first gap are not in `data`.
    pub gaps: Vec<(usize, usize)>,
    /// The first FIN.
    pub fin: Option<Mark>,
    /// The first RST.
    pub rst: Option<Mark>,
    /// Data that sits before the stream's start (a capture that began mid-flow and then saw older
    /// bytes again), dropped.
    pub before_start: usize,
    base: Option<u32>,
    pending: BTreeMap<u64, (Vec<u8>, usize, Duration)>,
}

impl Stream {
    /// The time of the packet that delivered byte `offset` (the last byte of a message tells when
    /// the message was complete); the stream's last chunk time when `offset` is past the end.
    pub fn time_at(&self, offset: usize) -> Option<(usize, Duration)> {
        let i = self.chunks.partition_point(|c| c.offset + c.len <= offset);
        self.chunks.get(i).or(self.chunks.last()).map(|c| (c.packet, c.time))
    }

    fn syn(&mut self, seq: u32) {
        if self.base.is_none() {
            self.base = Some(seq.wrapping_add(1));
        }
    }

    fn segment(&mut self, packet: usize, time: Duration, seg: &TcpSegment) {
        let seq = if seg.syn { seg.seq.wrapping_add(1) } else { seg.seq };
        let base = *self.base.get_or_insert_with(|| {
            self.mid_flow = true;
            seq
        });
        let rel = seq.wrapping_sub(base);
        // Sequence space is 32 bits: a "negative" offset is data from before the start.
        if rel > u32::MAX / 2 {
            self.before_start += seg.payload.len();
            return;
        }
        let rel = u64::from(rel);
        let end_rel = rel + seg.payload.len() as u64;
        if seg.fin && self.fin.is_none() {
            self.fin = Some(Mark { packet, time, offset: end_rel as usize });
        }
        if seg.rst && self.rst.is_none() {
            self.rst = Some(Mark { packet, time, offset: rel as usize });
        }
        if seg.payload.is_empty() {
            return;
        }
        let delivered = self.data.len() as u64;
        if rel > delivered {
            self.out_of_order += 1;
            self.pending.entry(rel).or_insert((seg.payload.clone(), packet, time));
            return;
        }
        self.place(rel, &seg.payload, packet, time);
        self.drain();
    }

    /// Appends the part of a segment starting at `rel <= data.len()` that is new, after checking
    /// the overlapping part against what was delivered.
    fn place(&mut self, rel: u64, payload: &[u8], packet: usize, time: Duration) {
        let delivered = self.data.len();
        let rel = rel as usize;
        let overlap = (delivered - rel).min(payload.len());
        if self.data[rel..rel + overlap] != payload[..overlap] {
            self.conflicts += 1;
        }
        if overlap == payload.len() {
            self.retransmissions += 1;
            return;
        }
        let new = &payload[overlap..];
        self.chunks.push(Chunk { offset: delivered, len: new.len(), packet, time });
        self.data.extend_from_slice(new);
    }

    fn drain(&mut self) {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > self.data.len() as u64 {
                break;
            }
            let (rel, (payload, packet, time)) = entry.remove_entry();
            self.place(rel, &payload, packet, time);
        }
    }

    /// Records what is still waiting as gaps (the capture missed the bytes before it).
    fn close(&mut self) {
        let mut at = self.data.len() as u64;
        for (&rel, (payload, _, _)) in &self.pending {
            if rel > at {
                self.gaps.push((at as usize, (rel - at) as usize));
            }
            at = at.max(rel + payload.len() as u64);
        }
    }
}

/// One TCP connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpFlow {
    /// The side that opened the connection (sent the SYN), or, for a capture that starts
    /// mid-flow, the sender of the first packet seen.
    pub client: SocketAddr,
    /// The other side.
    pub server: SocketAddr,
    /// True when the client was inferred rather than seen sending the SYN.
    pub client_guessed: bool,
    /// The first packet of the flow.
    pub first_packet: usize,
    /// Its time.
    pub start: Duration,
    /// Client to server.
    pub to_server: Stream,
    /// Server to client.
    pub to_client: Stream,
}

impl TcpFlow {
    fn ended(&self) -> bool {
        let done = |s: &Stream| s.fin.is_some() || s.rst.is_some();
        (done(&self.to_server) && done(&self.to_client)) || self.to_server.rst.is_some() || self.to_client.rst.is_some()
    }
}

/// One UDP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The packet number.
    pub packet: usize,
    /// Capture time.
    pub time: Duration,
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// Payload.
    pub payload: Vec<u8>,
}

/// Every TCP connection and UDP datagram of a capture.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flows {
    /// TCP connections in order of their first packet.
    pub tcp: Vec<TcpFlow>,
    /// UDP datagrams in capture order.
    pub udp: Vec<Datagram>,
}

/// Reassembles the TCP connections and collects the UDP datagrams of `packets`.
pub fn reassemble(packets: &[Packet]) -> Flows {
    let mut flows = Flows::default();
    // The open flow of each unordered address pair.
    let mut open: HashMap<(SocketAddr, SocketAddr), usize> = HashMap::new();
    for p in packets {
        let seg = match &p.transport {
            Transport::Udp(payload) => {
                flows.udp.push(Datagram {
                    packet: p.number,
                    time: p.time,
                    src: p.src,
                    dst: p.dst,
                    payload: payload.clone(),
                });
                continue;
            }
            Transport::Tcp(seg) => seg,
        };
        let key = if p.src <= p.dst { (p.src, p.dst) } else { (p.dst, p.src) };
        let opening = seg.syn && !seg.ack;
        let idx = match open.get(&key) {
            Some(&i) if !opening || !(flows.tcp[i].ended() || is_new_syn(&flows.tcp[i], p, seg)) => i,
            _ => {
                // A SYN-ACK names the server as its sender; any other first packet is taken to
                // come from the client.
                let from_server = seg.syn && seg.ack;
                let (client, server) = if from_server { (p.dst, p.src) } else { (p.src, p.dst) };
                flows.tcp.push(TcpFlow {
                    client,
                    server,
                    client_guessed: !opening,
                    first_packet: p.number,
                    start: p.time,
                    to_server: Stream::default(),
                    to_client: Stream::default(),
                });
                open.insert(key, flows.tcp.len() - 1);
                flows.tcp.len() - 1
            }
        };
        let flow = &mut flows.tcp[idx];
        let stream = if p.src == flow.client { &mut flow.to_server } else { &mut flow.to_client };
        if seg.syn {
            stream.syn(seg.seq);
        }
        stream.segment(p.number, p.time, seg);
    }
    for f in &mut flows.tcp {
        f.to_server.close();
        f.to_client.close();
    }
    flows
}

/// A SYN from the client with a different initial sequence number than the flow's: the port pair
/// was reused for a new connection without the capture seeing the old one end.
fn is_new_syn(flow: &TcpFlow, p: &Packet, seg: &TcpSegment) -> bool {
    p.src == flow.client && flow.to_server.base.is_some_and(|b| b != seg.seq.wrapping_add(1))
}
