//! Synthetic captures built in code: the reader's tests, the fuzz corpus seeds and examples in
//! docs use these instead of binary files nobody can read.
//!
//! [`Script`] plays a TCP conversation (handshake, data each way, FIN/RST) keeping both sides'
//! sequence numbers, and lets a test reorder, duplicate or drop segments before writing them as
//! pcap or pcapng with any supported link type.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption, InterfaceTsResolution,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;

/// The link layer to frame packets in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Ethernet II.
    Ethernet,
    /// Linux cooked capture v1.
    Sll,
    /// Linux cooked capture v2.
    Sll2,
    /// BSD loopback, address family in little-endian host order.
    Null,
    /// OpenBSD loopback, address family in network order.
    Loop,
    /// Raw IP.
    Raw,
}

impl Link {
    /// Every link type, for tests that try them all.
    pub const ALL: [Link; 6] = [Link::Ethernet, Link::Sll, Link::Sll2, Link::Null, Link::Loop, Link::Raw];

    /// The pcap link type number.
    pub fn datalink(self) -> DataLink {
        match self {
            Link::Ethernet => DataLink::ETHERNET,
            Link::Sll => DataLink::LINUX_SLL,
            Link::Sll2 => DataLink::LINUX_SLL2,
            Link::Null => DataLink::NULL,
            Link::Loop => DataLink::LOOP,
            Link::Raw => DataLink::RAW,
        }
    }
}

/// One TCP segment or UDP datagram to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seg {
    /// Capture time.
    pub time: Duration,
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// `None` for UDP; TCP's sequence number and flags otherwise.
    pub tcp: Option<TcpMeta>,
    /// Payload.
    pub payload: Vec<u8>,
}

/// TCP header fields of a [`Seg`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpMeta {
    /// Sequence number.
    pub seq: u32,
    /// SYN.
    pub syn: bool,
    /// ACK (always with acknowledgment number 1: reassembly ignores it).
    pub ack: bool,
    /// FIN.
    pub fin: bool,
    /// RST.
    pub rst: bool,
}

/// The IP packet (IPv4 or IPv6 by the addresses) carrying `seg`.
pub fn ip_packet(seg: &Seg) -> Vec<u8> {
    let mut out = Vec::new();
    let ip = match (seg.src.ip(), seg.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (s, d) => PacketBuilder::ipv6(v6(s), v6(d), 64),
    };
    let res = match seg.tcp {
        None => ip.udp(seg.src.port(), seg.dst.port()).write(&mut out, &seg.payload),
        Some(t) => {
            let mut b = ip.tcp(seg.src.port(), seg.dst.port(), t.seq, 65535);
            if t.syn {
                b = b.syn();
            }
            if t.ack {
                b = b.ack(1);
            }
            if t.fin {
                b = b.fin();
            }
            if t.rst {
                b = b.rst();
            }
            b.write(&mut out, &seg.payload)
        }
    };
    // Building only fails for payloads too long for IP, which no synthetic capture has.
    if res.is_err() {
        out.clear();
    }
    out
}

fn v6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
    }
}

/// `seg` framed in `link`.
pub fn frame(link: Link, seg: &Seg) -> Vec<u8> {
    let ip = ip_packet(seg);
    let v6 = seg.src.is_ipv6();
    let ethertype: u16 = if v6 { 0x86dd } else { 0x0800 };
    let family: u32 = if v6 { 30 } else { 2 };
    let mut out = Vec::new();
    match link {
        Link::Ethernet => {
            out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&ethertype.to_be_bytes());
        }
        Link::Sll => {
            // Packet type 0 (to us), ARPHRD_LOOPBACK 772, 6-byte address, 2 bytes padding.
            out.extend_from_slice(&[0, 0, 0x03, 0x04, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&ethertype.to_be_bytes());
        }
        Link::Sll2 => {
            out.extend_from_slice(&ethertype.to_be_bytes());
            out.extend_from_slice(&[0, 0]); // reserved
            out.extend_from_slice(&1u32.to_be_bytes()); // interface index
            out.extend_from_slice(&[0x03, 0x04, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0]);
        }
        Link::Null => out.extend_from_slice(&family.to_le_bytes()),
        Link::Loop => out.extend_from_slice(&family.to_be_bytes()),
        Link::Raw => {}
    }
    out.extend_from_slice(&ip);
    out
}

/// A pcap file (microsecond timestamps) of `segs` framed in `link`.
pub fn pcap(link: Link, segs: &[Seg]) -> Vec<u8> {
    let header = PcapHeader { datalink: link.datalink(), snaplen: 65535, ..PcapHeader::default() };
    let mut w = match PcapWriter::with_header(Vec::new(), header) {
        Ok(w) => w,
        Err(_) => return Vec::new(),
    };
    for s in segs {
        let data = frame(link, s);
        if let Ok(p) = PcapPacket::new(s.time, data.len() as u32, data) {
            let _ = w.write_packet(&p);
        }
    }
    w.into_inner()
}

/// A pcapng file of `segs` framed in `link`, with nanosecond timestamps when `nanos`.
pub fn pcapng(link: Link, segs: &[Seg], nanos: bool) -> Vec<u8> {
    let mut w = match PcapNgWriter::new(Vec::new()) {
        Ok(w) => w,
        Err(_) => return Vec::new(),
    };
    let mut idb = InterfaceDescriptionBlock::new(link.datalink(), 65535);
    if nanos {
        idb.options.push(InterfaceDescriptionOption::IfTsResol(InterfaceTsResolution::NANO));
    }
    let _ = w.write_pcapng_block(idb);
    for s in segs {
        let data = frame(link, s);
        let epb = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: s.time,
            original_len: data.len() as u32,
            data: Cow::Owned(data),
            options: vec![],
        };
        let _ = w.write_pcapng_block(epb);
    }
    w.into_inner()
}

/// A TCP conversation between a client and a server, written segment by segment.
#[derive(Debug, Clone)]
pub struct Script {
    /// The client's address.
    pub client: SocketAddr,
    /// The server's address.
    pub server: SocketAddr,
    /// Segments so far, in the order they will be written.
    pub segs: Vec<Seg>,
    cseq: u32,
    sseq: u32,
    clock: Duration,
}

impl Script {
    /// A conversation with the given initial sequence numbers; no packets yet.
    pub fn new(client: SocketAddr, server: SocketAddr, client_isn: u32, server_isn: u32) -> Self {
        Self {
            client,
            server,
            segs: Vec::new(),
            cseq: client_isn,
            sseq: server_isn,
            clock: Duration::from_secs(1_700_000_000),
        }
    }

    fn push(&mut self, from_client: bool, meta: TcpMeta, payload: &[u8]) {
        self.clock += Duration::from_micros(250);
        let (src, dst) = if from_client { (self.client, self.server) } else { (self.server, self.client) };
        self.segs.push(Seg { time: self.clock, src, dst, tcp: Some(meta), payload: payload.to_vec() });
    }

    /// SYN, SYN-ACK, ACK.
    pub fn handshake(mut self) -> Self {
        let (c, s) = (self.cseq, self.sseq);
        self.push(true, TcpMeta { seq: c, syn: true, ..TcpMeta::default() }, b"");
        self.push(false, TcpMeta { seq: s, syn: true, ack: true, ..TcpMeta::default() }, b"");
        self.cseq = c.wrapping_add(1);
        self.sseq = s.wrapping_add(1);
        let seq = self.cseq;
        self.push(true, TcpMeta { seq, ack: true, ..TcpMeta::default() }, b"");
        self
    }

    /// One data segment from the client.
    pub fn client(mut self, data: &[u8]) -> Self {
        let seq = self.cseq;
        self.push(true, TcpMeta { seq, ack: true, ..TcpMeta::default() }, data);
        self.cseq = seq.wrapping_add(data.len() as u32);
        self
    }

    /// One data segment from the server.
    pub fn server(mut self, data: &[u8]) -> Self {
        let seq = self.sseq;
        self.push(false, TcpMeta { seq, ack: true, ..TcpMeta::default() }, data);
        self.sseq = seq.wrapping_add(data.len() as u32);
        self
    }

    /// A FIN from the client (`true`) or server.
    pub fn fin(mut self, from_client: bool) -> Self {
        let seq = if from_client { self.cseq } else { self.sseq };
        self.push(from_client, TcpMeta { seq, ack: true, fin: true, ..TcpMeta::default() }, b"");
        if from_client {
            self.cseq = seq.wrapping_add(1);
        } else {
            self.sseq = seq.wrapping_add(1);
        }
        self
    }

    /// An RST from the client (`true`) or server.
    pub fn rst(mut self, from_client: bool) -> Self {
        let seq = if from_client { self.cseq } else { self.sseq };
        self.push(from_client, TcpMeta { seq, rst: true, ..TcpMeta::default() }, b"");
        self
    }

    /// A UDP datagram (not part of the TCP connection) between any two addresses.
    pub fn udp(mut self, src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Self {
        self.clock += Duration::from_micros(250);
        self.segs.push(Seg { time: self.clock, src, dst, tcp: None, payload: payload.to_vec() });
        self
    }
}

/// Rewrites a classic pcap file (what tcpdump writes) as pcapng with the same link type, packets
/// and timestamps (nanosecond resolution, so nothing is rounded).
pub fn pcap_to_pcapng(bytes: &[u8]) -> Result<Vec<u8>, super::CaptureError> {
    pcap_to_pcapng_filtered(bytes, |_| true)
}

/// [`pcap_to_pcapng`] keeping only the TCP/UDP packets `keep` accepts (and dropping the rest,
/// including non-IP frames): a capture made with a broad filter on a shared loopback keeps only
/// the conversation it was made for.
pub fn pcap_to_pcapng_filtered(
    bytes: &[u8],
    keep: impl Fn(&super::read::Packet) -> bool,
) -> Result<Vec<u8>, super::CaptureError> {
    use super::CaptureError;
    let (mut rest, parser) =
        pcap_file::pcap::PcapParser::new(bytes).map_err(|e| CaptureError::Header(e.to_string()))?;
    let err = |packet: usize, e: &dyn std::fmt::Display| CaptureError::Packet { packet, what: e.to_string() };
    let mut w = PcapNgWriter::new(Vec::new()).map_err(|e| err(0, &e))?;
    let header = parser.header();
    let mut idb = InterfaceDescriptionBlock::new(header.datalink, header.snaplen);
    idb.options.push(InterfaceDescriptionOption::IfTsResol(InterfaceTsResolution::NANO));
    w.write_pcapng_block(idb).map_err(|e| err(0, &e))?;
    let mut n = 0;
    while !rest.is_empty() {
        n += 1;
        let (r, p) = parser.next_packet(rest).map_err(|e| err(n, &e))?;
        rest = r;
        match super::read::decode_one(header.datalink, p.timestamp(), p.data(), p.orig_len(), n) {
            Ok(Some(packet)) if keep(&packet) => {}
            Ok(_) => continue,
            Err(e) => return Err(e),
        }
        let epb = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: p.timestamp(),
            original_len: p.orig_len(),
            data: Cow::Owned(p.data().to_vec()),
            options: vec![],
        };
        w.write_pcapng_block(epb).map_err(|e| err(n, &e))?;
    }
    Ok(w.into_inner())
}
