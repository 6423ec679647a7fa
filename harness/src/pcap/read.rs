//! Capture files to packets: pcap and pcapng containers (through `pcap-file`), then the link
//! layer (Ethernet, Linux cooked SLL/SLL2, BSD loopback/NULL, raw IP), then IPv4/IPv6 and
//! TCP/UDP (through `etherparse`).
//!
//! Everything that is not TCP or UDP over IP (ARP, ICMP, IP fragments) is counted and skipped:
//! it cannot carry a SOCKS conversation. A file that is cut short or corrupt gives a
//! [`CaptureError`] naming the packet and the problem; no input panics (the `pcap_reader` fuzz
//! target checks that).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_file::pcap::PcapParser;
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::DataLink;

/// Why a capture could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    /// The file starts with neither the pcap nor the pcapng magic number.
    #[error("not a pcap or pcapng file (first bytes {0})")]
    UnknownFormat(String),
    /// The file header (pcap) or first section header (pcapng) is unusable.
    #[error("bad file header: {0}")]
    Header(String),
    /// The container is corrupt or cut short at a packet (1-based: the packet that would be next).
    #[error("packet {packet}: {what}")]
    Packet {
        /// 1-based number of the packet, as Wireshark counts them.
        packet: usize,
        /// What is wrong with it.
        what: String,
    },
}

/// The container format of a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Classic libpcap.
    Pcap,
    /// pcapng.
    PcapNg,
}

/// The transport part of a packet that matters to reassembly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A TCP segment.
    Tcp(TcpSegment),
    /// A UDP datagram's payload.
    Udp(Vec<u8>),
}

/// The fields of a TCP segment the reassembler uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSegment {
    /// Sequence number.
    pub seq: u32,
    /// SYN flag.
    pub syn: bool,
    /// ACK flag.
    pub ack: bool,
    /// FIN flag.
    pub fin: bool,
    /// RST flag.
    pub rst: bool,
    /// Segment payload as captured (may be shorter than sent when the snap length cut it).
    pub payload: Vec<u8>,
    /// Payload bytes the snap length cut off (0 for a whole segment).
    pub missing: usize,
}

/// One TCP or UDP packet of a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// 1-based number among the file's packets (Wireshark's "No.").
    pub number: usize,
    /// Capture time since the Unix epoch.
    pub time: Duration,
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// TCP segment or UDP payload.
    pub transport: Transport,
}

/// The TCP/UDP packets of a capture, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// pcap or pcapng.
    pub format: Format,
    /// Every TCP and UDP packet.
    pub packets: Vec<Packet>,
    /// Packets that carry neither (ARP, ICMP, other link or IP protocols, IP fragments).
    pub skipped: usize,
    /// Total packets in the file.
    pub total: usize,
}

const PCAP_MAGICS: [[u8; 4]; 4] =
    [[0xd4, 0xc3, 0xb2, 0xa1], [0xa1, 0xb2, 0xc3, 0xd4], [0x4d, 0x3c, 0xb2, 0xa1], [0xa1, 0xb2, 0x3c, 0x4d]];
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// Reads a whole capture file held in memory.
pub fn read_capture(bytes: &[u8]) -> Result<Capture, CaptureError> {
    let head: [u8; 4] = match bytes.get(..4) {
        Some(h) => [h[0], h[1], h[2], h[3]],
        None => return Err(CaptureError::UnknownFormat(hex(bytes))),
    };
    if PCAP_MAGICS.contains(&head) {
        read_pcap(bytes)
    } else if head == PCAPNG_MAGIC {
        read_pcapng(bytes)
    } else {
        Err(CaptureError::UnknownFormat(hex(&head)))
    }
}

fn hex(b: &[u8]) -> String {
    testkit::hex::spaced(b, usize::MAX)
}

struct Builder {
    format: Format,
    packets: Vec<Packet>,
    skipped: usize,
    total: usize,
}

impl Builder {
    fn add(&mut self, link: DataLink, time: Duration, data: &[u8], orig_len: u32) -> Result<(), CaptureError> {
        self.total += 1;
        let number = self.total;
        let cut = (orig_len as usize).saturating_sub(data.len());
        match decode_packet(link, data, cut) {
            Ok(Some((src, dst, transport))) => {
                self.packets.push(Packet { number, time, src, dst, transport });
                Ok(())
            }
            Ok(None) => {
                self.skipped += 1;
                Ok(())
            }
            Err(what) => Err(CaptureError::Packet { packet: number, what }),
        }
    }

    fn finish(self) -> Capture {
        Capture { format: self.format, packets: self.packets, skipped: self.skipped, total: self.total }
    }
}

/// Decodes one frame of link type `link` as packet `number`: `None` when it is not TCP/UDP.
pub fn decode_one(
    link: DataLink,
    time: Duration,
    data: &[u8],
    orig_len: u32,
    number: usize,
) -> Result<Option<Packet>, CaptureError> {
    check_link(link)?;
    let cut = (orig_len as usize).saturating_sub(data.len());
    match decode_packet(link, data, cut) {
        Ok(Some((src, dst, transport))) => Ok(Some(Packet { number, time, src, dst, transport })),
        Ok(None) => Ok(None),
        Err(what) => Err(CaptureError::Packet { packet: number, what }),
    }
}

fn read_pcap(bytes: &[u8]) -> Result<Capture, CaptureError> {
    let (mut rest, parser) = PcapParser::new(bytes).map_err(|e| CaptureError::Header(e.to_string()))?;
    let link = parser.header().datalink;
    check_link(link)?;
    let mut b = Builder { format: Format::Pcap, packets: Vec::new(), skipped: 0, total: 0 };
    while !rest.is_empty() {
        let packet = b.total + 1;
        let (r, p) =
            parser.next_packet(rest).map_err(|e| CaptureError::Packet { packet, what: container_error(&e) })?;
        b.add(link, p.timestamp(), p.data(), p.orig_len())?;
        rest = r;
    }
    Ok(b.finish())
}

fn container_error(e: &dyn std::fmt::Display) -> String {
    let s = e.to_string();
    if s.contains("too small") || s.contains("Incomplete") || s.contains("need") {
        format!("file ends inside this packet ({s})")
    } else {
        s
    }
}

fn read_pcapng(bytes: &[u8]) -> Result<Capture, CaptureError> {
    let (mut rest, mut parser) = PcapNgParser::new(bytes).map_err(|e| CaptureError::Header(e.to_string()))?;
    let mut b = Builder { format: Format::PcapNg, packets: Vec::new(), skipped: 0, total: 0 };
    while !rest.is_empty() {
        let packet = b.total + 1;
        let (r, block) =
            parser.next_block(rest).map_err(|e| CaptureError::Packet { packet, what: container_error(&e) })?;
        rest = r;
        let interface = |id: u32| -> Result<DataLink, CaptureError> {
            let ifs = parser.interfaces();
            let i = ifs.get(id as usize).ok_or_else(|| CaptureError::Packet {
                packet,
                what: format!("interface {id} was never described (the file has {})", ifs.len()),
            })?;
            check_link(i.linktype).map_err(|e| CaptureError::Packet { packet, what: e.to_string() })?;
            Ok(i.linktype)
        };
        match block {
            Block::EnhancedPacket(p) => {
                let link = interface(p.interface_id)?;
                b.add(link, p.timestamp, &p.data, p.original_len)?;
            }
            Block::SimplePacket(p) => {
                let link = interface(0)?;
                // A simple packet block carries no timestamp.
                b.add(link, Duration::ZERO, &p.data, p.original_len)?;
            }
            Block::Packet(p) => {
                let link = interface(u32::from(p.interface_id))?;
                b.add(link, p.timestamp, &p.data, p.original_len)?;
            }
            _ => {}
        }
    }
    Ok(b.finish())
}

/// The link types this reader decodes.
fn check_link(link: DataLink) -> Result<(), CaptureError> {
    match link {
        DataLink::ETHERNET
        | DataLink::LINUX_SLL
        | DataLink::LINUX_SLL2
        | DataLink::NULL
        | DataLink::LOOP
        | DataLink::RAW
        | DataLink::IPV4
        | DataLink::IPV6 => Ok(()),
        other => Err(CaptureError::Header(format!(
            "link type {other:?} is not supported (Ethernet, Linux cooked SLL/SLL2, BSD loopback/NULL and raw IP are)"
        ))),
    }
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;

fn by_ethertype(t: u16, rest: &[u8]) -> Option<&[u8]> {
    (t == ETHERTYPE_IPV4 || t == ETHERTYPE_IPV6).then_some(rest)
}

/// The IP packet inside a link-layer frame, or `None` when the frame carries something else.
fn ip_payload(link: DataLink, data: &[u8]) -> Result<Option<&[u8]>, String> {
    let need = |n: usize, what: &str| -> Result<(), String> {
        if data.len() < n {
            Err(format!("{what} header needs {n} bytes, the packet has {}", data.len()))
        } else {
            Ok(())
        }
    };
    match link {
        DataLink::LINUX_SLL => {
            // Packet type, ARPHRD type, address length, 8 address bytes, then the protocol.
            need(16, "Linux cooked (SLL)")?;
            Ok(by_ethertype(u16::from_be_bytes([data[14], data[15]]), &data[16..]))
        }
        DataLink::LINUX_SLL2 => {
            // SLL2 moves the protocol to the front and adds an interface index: 20 bytes.
            need(20, "Linux cooked v2 (SLL2)")?;
            Ok(by_ethertype(u16::from_be_bytes([data[0], data[1]]), &data[20..]))
        }
        DataLink::NULL | DataLink::LOOP => {
            // A 4-byte address family: host order of the capturing machine for NULL (so either),
            // network order for LOOP. AF_INET is 2 everywhere; AF_INET6 is 24, 28 or 30 by OS.
            need(4, "BSD loopback")?;
            let f = [data[0], data[1], data[2], data[3]];
            let fam = if link == DataLink::LOOP {
                u32::from_be_bytes(f)
            } else {
                let le = u32::from_le_bytes(f);
                if le <= 0xffff {
                    le
                } else {
                    u32::from_be_bytes(f)
                }
            };
            Ok(matches!(fam, 2 | 24 | 28 | 30).then_some(&data[4..]))
        }
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => Ok(Some(data)),
        // Ethernet is handled by etherparse directly (VLAN tags included).
        _ => Ok(None),
    }
}

type Decoded = (SocketAddr, SocketAddr, Transport);

/// Decodes one frame: `Ok(None)` for a packet that is not TCP/UDP over IP.
fn decode_packet(link: DataLink, data: &[u8], cut: usize) -> Result<Option<Decoded>, String> {
    let sliced = if link == DataLink::ETHERNET {
        SlicedPacket::from_ethernet(data)
    } else {
        match ip_payload(link, data)? {
            Some(ip) if !ip.is_empty() => SlicedPacket::from_ip(ip),
            Some(_) => return Err("empty IP packet".into()),
            None => return Ok(None),
        }
    };
    let sliced = match sliced {
        Ok(s) => s,
        Err(e) if cut > 0 => {
            return Err(format!("cut by the snap length ({cut} bytes not captured), headers unreadable: {e}"))
        }
        Err(e) => return Err(e.to_string()),
    };
    let (src_ip, dst_ip, fragmented): (IpAddr, IpAddr, bool) = match &sliced.net {
        Some(NetSlice::Ipv4(v4)) => {
            (v4.header().source_addr().into(), v4.header().destination_addr().into(), v4.is_payload_fragmented())
        }
        Some(NetSlice::Ipv6(v6)) => {
            (v6.header().source_addr().into(), v6.header().destination_addr().into(), v6.is_payload_fragmented())
        }
        _ => return Ok(None),
    };
    if fragmented {
        return Ok(None);
    }
    let (src_port, dst_port, transport) = match &sliced.transport {
        Some(TransportSlice::Tcp(t)) => (
            t.source_port(),
            t.destination_port(),
            Transport::Tcp(TcpSegment {
                seq: t.sequence_number(),
                syn: t.syn(),
                ack: t.ack(),
                fin: t.fin(),
                rst: t.rst(),
                payload: t.payload().to_vec(),
                missing: cut,
            }),
        ),
        Some(TransportSlice::Udp(u)) => (u.source_port(), u.destination_port(), Transport::Udp(u.payload().to_vec())),
        _ => return Ok(None),
    };
    Ok(Some((SocketAddr::new(src_ip, src_port), SocketAddr::new(dst_ip, dst_port), transport)))
}
