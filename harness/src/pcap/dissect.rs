//! SOCKS conversations in reassembled flows, decoded with the reference's sans-IO core.
//!
//! Every TCP flow whose client's first byte is 04 or 05 is walked as the protocol prescribes:
//! SOCKS5 greeting, method selection, RFC 1929 sub-negotiation, request, reply (and BIND's second
//! reply), then whatever the command turns the connection into: relayed bytes (CONNECT, BIND), a
//! control connection with matched UDP datagrams (UDP ASSOCIATE), smux frames (gost MBIND, F2),
//! UDP-TUN frames (gost F3), or TLS (gost methods 80/82, where decoding stops). SOCKS4/4a has a
//! request and a reply (two for BIND). Departures from the protocol are reported as anomalies
//! on their own lines: bytes after a failure reply, data pipelined before the answer it depends
//! on, replies that break the RFC, UDP datagrams sent to a SOCKS port with no association.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;
use socksref::proto::auth::{UserPassReply, UserPassRequest};
use socksref::proto::smux::{Cmd, Frame};
use socksref::proto::udp::UdpHeader;
use socksref::proto::udptun::TunFrame;
use socksref::proto::v4::{Socks4ReplyMsg, Socks4Request, DEFAULT_MAX_FIELD};
use socksref::proto::v5::{Greeting, MethodSelection, ReplyMsg, Request};
use socksref::proto::{Address, Command, DecodeError, Decoded, Host, Method, Reply, Socks4Command, Socks4Reply};

use super::reassembly::{Datagram, Flows, Stream, TcpFlow};

/// Who sent a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dir {
    /// Client to SOCKS server (TCP).
    ClientToServer,
    /// SOCKS server to client (TCP).
    ServerToClient,
    /// Client to the UDP relay.
    ClientToRelay,
    /// UDP relay to client.
    RelayToClient,
    /// Not a message: an observation about the conversation.
    Anomaly,
}

impl Dir {
    fn arrow(self) -> &'static str {
        match self {
            Dir::ClientToServer => "C>S",
            Dir::ServerToClient => "S>C",
            Dir::ClientToRelay => "C>R",
            Dir::RelayToClient => "R>C",
            Dir::Anomaly => "!! ",
        }
    }
}

/// One decoded message (or anomaly).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Seconds since the capture's first packet, to the microsecond.
    pub time: String,
    /// The packet that completed the message.
    pub packet: usize,
    /// Direction.
    pub dir: Dir,
    /// Message name (`greeting`, `reply`, `smux`, `anomaly`...).
    pub what: String,
    /// Decoded fields in wire order, as `name=value` text.
    pub fields: Vec<(String, String)>,
}

/// One SOCKS conversation (a TCP connection and, for UDP ASSOCIATE, its datagrams).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conversation {
    /// 1-based index among the capture's SOCKS conversations.
    pub index: usize,
    /// socks4, socks4a or socks5.
    pub protocol: String,
    /// The client's address.
    pub client: SocketAddr,
    /// The SOCKS server's address.
    pub server: SocketAddr,
    /// The command (`connect`, `bind`, `udp-associate`, `mbind`, `udp-tun`...), if one was sent.
    pub command: Option<String>,
    /// The messages and anomalies in stream order.
    pub events: Vec<Event>,
    /// The raw bytes each side sent, for replay and import (not printed).
    #[serde(skip)]
    pub raw: RawConversation,
}

/// What a conversation's two sides sent, message by message, for replay and import.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawConversation {
    /// TCP messages in order, each with its direction and bytes.
    pub messages: Vec<(Dir, String, Vec<u8>)>,
    /// The packet number that completed each of `messages` (the first one of relayed data), so
    /// the two directions after the handshake can be put back in wire order.
    pub at: Vec<usize>,
    /// The association's UDP datagrams (client to relay and back), with their packet numbers,
    /// in capture order.
    pub datagrams: Vec<(Dir, usize, Vec<u8>)>,
    /// The UDP relay address from the ASSOCIATE reply, if any.
    pub relay: Option<SocketAddr>,
    /// Whether the server closed the connection (FIN/RST) after its last message.
    pub server_closed: bool,
}

/// A whole capture's dissection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dissection {
    /// Packets in the file.
    pub packets: usize,
    /// TCP connections in the file.
    pub tcp_flows: usize,
    /// UDP datagrams in the file.
    pub udp_datagrams: usize,
    /// The SOCKS conversations.
    pub conversations: Vec<Conversation>,
    /// UDP datagrams to a SOCKS server's port that no association accounts for (the V2Ray bypass
    /// looks like this), and other capture-level observations.
    pub unmatched: Vec<Event>,
    /// TCP flows that are not SOCKS (targets, peers), one summary line each.
    pub other_flows: Vec<String>,
}

/// Decodes every SOCKS conversation in `flows`. `origin` is the capture's first packet time.
pub fn dissect(flows: &Flows, packets: usize, origin: Duration) -> Dissection {
    let mut conversations = Vec::new();
    let mut other_flows = Vec::new();
    let mut used_udp = BTreeSet::new();
    for flow in &flows.tcp {
        match flow.to_server.data.first() {
            Some(4 | 5) => {
                let mut d = Decoder::new(flow, origin, conversations.len() + 1);
                d.run();
                let mut conv = d.finish();
                if let Some(relay) = conv.raw.relay {
                    attach_udp(&mut conv, relay, flows, origin, &mut used_udp);
                }
                conversations.push(conv);
            }
            _ => other_flows.push(format!(
                "tcp {} -> {}: not SOCKS, {} bytes client>server, {} bytes server>client",
                flow.client,
                flow.server,
                flow.to_server.data.len(),
                flow.to_client.data.len()
            )),
        }
    }
    let socks_ports: BTreeSet<SocketAddr> = conversations.iter().map(|c| c.server).collect();
    let mut unmatched = Vec::new();
    for (i, dg) in flows.udp.iter().enumerate() {
        if used_udp.contains(&i) {
            continue;
        }
        let what = if socks_ports.iter().any(|s| same_endpoint(*s, dg.dst)) {
            "udp datagram to a SOCKS port with no association (UDP ASSOCIATE bypass)"
        } else if socks_ports.iter().any(|s| same_endpoint(*s, dg.src)) {
            "udp datagram from a SOCKS port with no association (answer to a bypass datagram)"
        } else {
            continue;
        };
        let mut fields = vec![("from".into(), dg.src.to_string()), ("to".into(), dg.dst.to_string())];
        fields.extend(udp_fields(&dg.payload));
        unmatched.push(Event {
            time: rel(dg.time, origin),
            packet: dg.packet,
            dir: Dir::Anomaly,
            what: what.into(),
            fields,
        });
    }
    Dissection {
        packets,
        tcp_flows: flows.tcp.len(),
        udp_datagrams: flows.udp.len(),
        conversations,
        unmatched,
        other_flows,
    }
}

fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn rel(t: Duration, origin: Duration) -> String {
    let d = t.saturating_sub(origin);
    format!("{}.{:06}", d.as_secs(), d.subsec_micros())
}

fn udp_fields(payload: &[u8]) -> Vec<(String, String)> {
    match UdpHeader::decode(payload) {
        Ok((h, n)) => {
            let mut f = vec![
                ("rsv".into(), format!("{:04x}", h.reserved)),
                ("frag".into(), h.frag.to_string()),
                ("addr".into(), h.address.to_string()),
            ];
            f.push(("data".into(), preview(&payload[n..])));
            f
        }
        Err(e) => vec![("undecodable".into(), e.to_string()), ("bytes".into(), preview(payload))],
    }
}

/// Datagrams between the client's host and the relay address are the association's.
fn attach_udp(conv: &mut Conversation, relay: SocketAddr, flows: &Flows, origin: Duration, used: &mut BTreeSet<usize>) {
    // A relay of 0.0.0.0 means "the server's address" (RFC 1928 leaves it to the client).
    let relay = if relay.ip().is_unspecified() { SocketAddr::new(conv.server.ip(), relay.port()) } else { relay };
    let client_ip = conv.client.ip();
    let start = conv.events.first().map(|e| e.packet).unwrap_or(0);
    // The association ends with its TCP connection (RFC 1928 §6): once both sides have closed
    // it, later datagrams to the same relay (a server with one relay port for all) are another
    // association's. A connection the capture never saw close bounds nothing.
    let closes: Vec<usize> =
        conv.events.iter().filter(|e| e.what == "fin" || e.what == "rst").map(|e| e.packet).collect();
    let end = if conv.events.iter().any(|e| e.what == "rst") || closes.len() >= 2 {
        closes.iter().max().copied().unwrap_or(usize::MAX)
    } else {
        usize::MAX
    };
    for (i, dg) in flows.udp.iter().enumerate() {
        if dg.packet < start || dg.packet > end || used.contains(&i) {
            continue;
        }
        let dir = if same_endpoint(relay, dg.dst) && same_host(dg.src.ip(), client_ip) {
            Dir::ClientToRelay
        } else if same_endpoint(relay, dg.src) && same_host(dg.dst.ip(), client_ip) {
            Dir::RelayToClient
        } else {
            continue;
        };
        used.insert(i);
        let mut fields = vec![(if dir == Dir::ClientToRelay { "from" } else { "to" }.into(), peer(dg, dir))];
        fields.extend(udp_fields(&dg.payload));
        conv.events.push(Event { time: rel(dg.time, origin), packet: dg.packet, dir, what: "udp".into(), fields });
        conv.raw.datagrams.push((dir, dg.packet, dg.payload.clone()));
    }
    conv.events.sort_by_key(|e| e.packet);
}

fn peer(dg: &Datagram, dir: Dir) -> String {
    if dir == Dir::ClientToRelay { dg.src } else { dg.dst }.to_string()
}

fn same_host(a: IpAddr, b: IpAddr) -> bool {
    a == b || (a.is_loopback() && b.is_loopback())
}

/// At most 24 bytes of payload: quoted text (escaped) when it is mostly printable, else hex.
fn preview(b: &[u8]) -> String {
    let shown = &b[..b.len().min(24)];
    let more = if b.len() > 24 { format!("… ({} bytes)", b.len()) } else { String::new() };
    let printable = shown.iter().filter(|c| c.is_ascii_graphic() || matches!(c, b' ' | b'\r' | b'\n' | b'\t')).count();
    if !shown.is_empty() && printable * 4 >= shown.len() * 3 {
        format!("\"{}\"{more}", shown.escape_ascii())
    } else {
        let mut s = String::new();
        for c in shown {
            let _ = write!(s, "{c:02x}");
        }
        format!("{s}{more}")
    }
}

/// The position of one side's stream.
struct Side<'a> {
    stream: &'a Stream,
    pos: usize,
    dir: Dir,
}

impl<'a> Side<'a> {
    fn rest(&self) -> &'a [u8] {
        &self.stream.data[self.pos..]
    }

    /// Packet number of the packet that delivered the byte at `offset`.
    fn packet_at(&self, offset: usize) -> usize {
        self.stream.time_at(offset).map(|(p, _)| p).unwrap_or(0)
    }

    fn closed(&self) -> bool {
        self.stream.fin.is_some() || self.stream.rst.is_some()
    }
}

struct Decoder<'a> {
    flow: &'a TcpFlow,
    origin: Duration,
    index: usize,
    c: Side<'a>,
    s: Side<'a>,
    events: Vec<Event>,
    raw: RawConversation,
    protocol: String,
    command: Option<String>,
}

impl<'a> Decoder<'a> {
    fn new(flow: &'a TcpFlow, origin: Duration, index: usize) -> Self {
        Self {
            flow,
            origin,
            index,
            c: Side { stream: &flow.to_server, pos: 0, dir: Dir::ClientToServer },
            s: Side { stream: &flow.to_client, pos: 0, dir: Dir::ServerToClient },
            events: Vec::new(),
            raw: RawConversation::default(),
            protocol: String::new(),
            command: None,
        }
    }

    fn finish(mut self) -> Conversation {
        for (side, who) in [(&self.c, "client"), (&self.s, "server")] {
            if side.stream.mid_flow {
                self.events
                    .insert(0, self.anomaly_ev(1, format!("capture starts mid-connection: no SYN from the {who}")));
            }
            if let Some(&(off, len)) = side.stream.gaps.first() {
                let p = side.packet_at(off);
                self.events
                    .push(self.anomaly_ev(p, format!("{who} stream: {len} bytes never captured at offset {off}")));
            }
            if side.stream.conflicts > 0 {
                let n = side.stream.conflicts;
                self.events.push(self.anomaly_ev(
                    0,
                    format!("{who} stream: {n} retransmissions disagree with the data first sent (first copy kept)"),
                ));
            }
        }
        for (side, who) in [(&self.c, "client"), (&self.s, "server")] {
            if let Some(m) = side.stream.rst {
                self.events.push(Event {
                    time: rel(m.time, self.origin),
                    packet: m.packet,
                    dir: side.dir,
                    what: "rst".into(),
                    fields: vec![("by".into(), who.into())],
                });
            } else if let Some(m) = side.stream.fin {
                self.events.push(Event {
                    time: rel(m.time, self.origin),
                    packet: m.packet,
                    dir: side.dir,
                    what: "fin".into(),
                    fields: vec![("after_bytes".into(), m.offset.to_string())],
                });
            }
        }
        self.events.sort_by_key(|e| e.packet);
        self.raw.server_closed = self.s.closed();
        Conversation {
            index: self.index,
            protocol: self.protocol,
            client: self.flow.client,
            server: self.flow.server,
            command: self.command,
            events: self.events,
            raw: self.raw,
        }
    }

    fn anomaly_ev(&self, packet: usize, what: String) -> Event {
        let time = self
            .flow
            .to_server
            .chunks
            .iter()
            .chain(&self.flow.to_client.chunks)
            .find(|c| c.packet >= packet)
            .map(|c| rel(c.time, self.origin))
            .unwrap_or_else(|| rel(self.flow.start, self.origin));
        Event { time, packet, dir: Dir::Anomaly, what: "anomaly".into(), fields: vec![("note".into(), what)] }
    }

    fn anomaly(&mut self, packet: usize, what: impl Into<String>) {
        let e = self.anomaly_ev(packet, what.into());
        self.events.push(e);
    }

    /// Decodes the next message from one side; reports a truncated or invalid message and stops.
    fn take<T>(&mut self, client: bool, what: &str, decode: impl Fn(&[u8]) -> Decoded<T>) -> Option<(T, usize)> {
        let side = if client { &self.c } else { &self.s };
        let rest = side.rest();
        let start = side.pos;
        let dir = side.dir;
        match decode(rest) {
            Ok((msg, n)) => {
                let packet = side.packet_at(start + n - 1);
                let bytes = rest[..n].to_vec();
                if client {
                    self.c.pos += n;
                } else {
                    self.s.pos += n;
                }
                self.raw.messages.push((dir, what.to_string(), bytes));
                self.raw.at.push(packet);
                Some((msg, packet))
            }
            Err(DecodeError::Incomplete) => {
                if !rest.is_empty() {
                    let p = side.packet_at(start + rest.len() - 1);
                    let who = if client { "client" } else { "server" };
                    self.anomaly(p, format!("{who} {what} is truncated: {} bytes {}", rest.len(), preview(rest)));
                }
                None
            }
            Err(DecodeError::Invalid(e)) => {
                let p = side.packet_at(start);
                let who = if client { "client" } else { "server" };
                self.anomaly(p, format!("{who} {what} is invalid: {e}; bytes {}", preview(rest)));
                None
            }
        }
    }

    fn event(&mut self, dir: Dir, packet: usize, what: &str, fields: Vec<(&str, String)>) {
        let time = if dir == Dir::ClientToServer { &self.c } else { &self.s }
            .stream
            .chunks
            .iter()
            .find(|c| c.packet == packet)
            .map(|c| rel(c.time, self.origin))
            .unwrap_or_default();
        self.events.push(Event {
            time,
            packet,
            dir,
            what: what.into(),
            fields: fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        });
    }

    /// Client bytes that arrived (by packet order) before the server's answer at `answer_packet`.
    fn check_pipelined(&mut self, answer_packet: usize, before: &str) {
        if self.c.rest().is_empty() {
            return;
        }
        let p = self.c.packet_at(self.c.pos);
        if p < answer_packet {
            let n: usize = self
                .c
                .stream
                .chunks
                .iter()
                .filter(|ch| ch.packet < answer_packet && ch.offset + ch.len > self.c.pos)
                .map(|ch| ch.offset + ch.len - self.c.pos.max(ch.offset))
                .sum();
            self.anomaly(p, format!("pipelined: client sent {n} bytes before the {before}"));
        }
    }

    /// Server bytes after a failure reply.
    fn check_after_failure(&mut self, what: &str) {
        let rest = self.s.rest();
        if !rest.is_empty() {
            let p = self.s.packet_at(self.s.pos);
            let msg = format!("server sent {} bytes after the failure {what}: {}", rest.len(), preview(rest));
            self.anomaly(p, msg);
        }
    }

    fn run(&mut self) {
        if self.c.rest().first() == Some(&4) {
            self.socks4();
        } else {
            self.protocol = "socks5".into();
            self.socks5();
        }
    }

    fn socks4(&mut self) {
        let Some((req, p)) = self.take(true, "request", |b| Socks4Request::decode(b, DEFAULT_MAX_FIELD)) else {
            self.protocol = "socks4".into();
            return;
        };
        self.protocol = if req.hostname.is_some() { "socks4a" } else { "socks4" }.into();
        let cmd = match req.command {
            Socks4Command::CONNECT => "connect",
            Socks4Command::BIND => "bind",
            _ => "unknown",
        };
        self.command = Some(cmd.into());
        let mut fields = vec![
            ("cmd", format!("{:?}", req.command)),
            ("port", req.port.to_string()),
            ("ip", req.ip.to_string()),
            ("userid", format!("{:?}", String::from_utf8_lossy(&req.user_id))),
        ];
        if let Some(h) = &req.hostname {
            fields.push(("hostname", format!("{:?}", String::from_utf8_lossy(h))));
        }
        self.event(Dir::ClientToServer, p, "socks4 request", fields);
        let replies = if req.command == Socks4Command::BIND { 2 } else { 1 };
        for i in 0..replies {
            let Some((rep, p)) = self.take(false, "reply", Socks4ReplyMsg::decode) else { return };
            if i == 0 {
                self.check_pipelined(p, "reply");
            }
            let raw_vn = self.raw.messages.last().map(|m| m.2[0]).unwrap_or(0);
            let what = if i == 0 { "socks4 reply" } else { "socks4 second reply" };
            self.event(
                Dir::ServerToClient,
                p,
                what,
                vec![
                    ("vn", raw_vn.to_string()),
                    ("cd", format!("{:?}", rep.code)),
                    ("port", rep.port.to_string()),
                    ("ip", rep.ip.to_string()),
                ],
            );
            if raw_vn != 0 {
                self.anomaly(p, format!("reply VN is {raw_vn}, the protocol says 0"));
            }
            if rep.code.name().is_none() {
                self.anomaly(p, format!("reply code {:?} is not one the protocol defines", rep.code));
            }
            if rep.code != Socks4Reply::GRANTED {
                self.check_after_failure("reply");
                return;
            }
        }
        self.relay();
    }

    fn socks5(&mut self) {
        let Some((greeting, p)) = self.take(true, "greeting", Greeting::decode) else { return };
        let offered: Vec<String> = greeting.methods.iter().map(|m| format!("{m:?}")).collect();
        self.event(Dir::ClientToServer, p, "greeting", vec![("methods", format!("[{}]", offered.join(", ")))]);
        let Some((sel, p)) = self.take(false, "method selection", MethodSelection::decode) else { return };
        self.check_pipelined(p, "method selection");
        self.event(Dir::ServerToClient, p, "method", vec![("method", format!("{:?}", sel.method))]);
        let method = sel.method;
        if method != Method::NO_ACCEPTABLE && !greeting.methods.contains(&method) {
            self.anomaly(p, format!("server selected {method:?}, which the client did not offer"));
        }
        match method {
            Method::NO_AUTH => {}
            Method::USER_PASS => {
                let Some((up, p)) = self.take(true, "RFC 1929 request", UserPassRequest::decode) else { return };
                self.event(
                    Dir::ClientToServer,
                    p,
                    "auth request",
                    vec![
                        ("user", format!("{:?}", String::from_utf8_lossy(&up.user))),
                        // Never show a password: its length is enough to see what was sent.
                        ("pass", format!("<{} bytes>", up.pass.len())),
                    ],
                );
                let Some((st, p)) = self.take(false, "RFC 1929 reply", UserPassReply::decode) else { return };
                self.check_pipelined(p, "RFC 1929 reply");
                let ok = st.status == 0;
                self.event(
                    Dir::ServerToClient,
                    p,
                    "auth reply",
                    vec![("status", format!("{:02x} ({})", st.status, if ok { "success" } else { "failure" }))],
                );
                if !ok {
                    self.check_after_failure("RFC 1929 reply");
                    return;
                }
            }
            Method::TLS | Method::TLS_AUTH => {
                let p = self.s.packet_at(self.s.pos.saturating_sub(1));
                self.event(
                    Dir::ServerToClient,
                    p,
                    "tls follows",
                    vec![
                        ("client_bytes", self.c.rest().len().to_string()),
                        ("server_bytes", self.s.rest().len().to_string()),
                    ],
                );
                return;
            }
            Method::NO_ACCEPTABLE => {
                self.check_after_failure("method selection");
                return;
            }
            other => {
                self.anomaly(p, format!("sub-negotiation of method {other:?} is not decoded"));
                return;
            }
        }
        let Some((req, p)) = self.take(true, "request", Request::decode) else { return };
        let cmd = match req.command {
            Command::CONNECT => "connect",
            Command::BIND => "bind",
            Command::UDP_ASSOCIATE => "udp-associate",
            Command::MUX_BIND => "mbind",
            Command::UDP_TUN => "udp-tun",
            Command::TOR_RESOLVE => "resolve",
            Command::TOR_RESOLVE_PTR => "resolve-ptr",
            _ => "unknown",
        };
        self.command = Some(cmd.into());
        let mut fields = vec![("cmd", format!("{:?}", req.command)), ("dst", req.address.to_string())];
        if req.reserved != 0 {
            fields.push(("rsv", format!("{:02x}", req.reserved)));
        }
        self.event(Dir::ClientToServer, p, "request", fields);
        let replies = if req.command == Command::BIND { 2 } else { 1 };
        for i in 0..replies {
            let Some((rep, p)) = self.take(false, "reply", ReplyMsg::decode) else { return };
            if i == 0 {
                self.check_pipelined(p, "reply");
            }
            self.reply_event(&rep, p, i == 1);
            if rep.reply != Reply::SUCCEEDED {
                self.check_after_failure("reply");
                return;
            }
            if req.command == Command::UDP_ASSOCIATE {
                self.raw.relay = relay_addr(&rep.address, self.flow.server);
            }
        }
        match req.command {
            Command::MUX_BIND => self.smux(),
            Command::UDP_TUN => self.udptun(),
            Command::UDP_ASSOCIATE => {
                for side in [true, false] {
                    let s = if side { &self.c } else { &self.s };
                    if !s.rest().is_empty() {
                        let p = s.packet_at(s.pos);
                        let who = if side { "client" } else { "server" };
                        let n = s.rest().len();
                        self.anomaly(p, format!("{who} sent {n} bytes on the UDP ASSOCIATE control connection"));
                    }
                }
            }
            _ => self.relay(),
        }
    }

    fn reply_event(&mut self, rep: &ReplyMsg, p: usize, second: bool) {
        let mut fields = vec![("rep", format!("{:?}", rep.reply)), ("bnd", rep.address.to_string())];
        if rep.reserved != 0 {
            fields.push(("rsv", format!("{:02x}", rep.reserved)));
        }
        self.event(Dir::ServerToClient, p, if second { "second reply" } else { "reply" }, fields);
        if rep.reserved != 0 {
            self.anomaly(p, format!("reply RSV is {:02x}, RFC 1928 says 00", rep.reserved));
        }
        if rep.reply.name().is_none() {
            self.anomaly(p, format!("reply code {:?} is not defined by RFC 1928", rep.reply));
        }
        if matches!(rep.address.host, Host::Domain(_)) && rep.reply != Reply::SUCCEEDED {
            self.anomaly(p, "failure reply carries a domain name BND");
        }
    }

    /// One summary line per direction for relayed bytes.
    fn relay(&mut self) {
        for client in [true, false] {
            let side = if client { &self.c } else { &self.s };
            let rest = side.rest();
            if rest.is_empty() {
                continue;
            }
            let first = side.packet_at(side.pos);
            let dir = side.dir;
            let fields = vec![("bytes", rest.len().to_string()), ("first", preview(rest))];
            let bytes = rest.to_vec();
            self.raw.messages.push((dir, "data".into(), bytes));
            self.raw.at.push(first);
            self.event(dir, first, "data", fields);
        }
    }

    fn smux(&mut self) {
        for client in [true, false] {
            let side = if client { &self.c } else { &self.s };
            // Both ends use one smux version; the first frame's byte tells which.
            let Some(&version) = side.rest().first() else { continue };
            let dir = side.dir;
            while let Some((fields, p)) = self.take(client, "smux frame", |b| smux_fields(b, version)) {
                self.event(dir, p, "smux", fields);
            }
        }
        self.events.sort_by_key(|e| e.packet);
    }

    fn udptun(&mut self) {
        for client in [true, false] {
            let dir = if client { Dir::ClientToServer } else { Dir::ServerToClient };
            while let Some((fields, p)) = self.take(client, "UDP-TUN frame", tun_fields) {
                self.event(dir, p, "udp-tun", fields);
            }
        }
        self.events.sort_by_key(|e| e.packet);
    }
}

type Fields = Vec<(&'static str, String)>;

fn smux_fields(b: &[u8], version: u8) -> Decoded<Fields> {
    let (f, n) = Frame::decode(b, version)?;
    let mut fl = vec![
        ("ver", f.version.to_string()),
        ("cmd", format!("{:?}", f.cmd).to_uppercase()),
        ("sid", f.sid.to_string()),
        ("len", f.payload.len().to_string()),
    ];
    match f.upd_values() {
        Some((c, w)) if f.cmd == Cmd::Upd => {
            fl.push(("consumed", c.to_string()));
            fl.push(("window", w.to_string()));
        }
        _ if !f.payload.is_empty() => fl.push(("data", preview(f.payload))),
        _ => {}
    }
    Ok((fl, n))
}

fn tun_fields(b: &[u8]) -> Decoded<Fields> {
    let (f, n) = TunFrame::decode(b)?;
    Ok((
        vec![
            ("len", f.payload.len().to_string()),
            ("frag", format!("{:02x}", f.frag)),
            ("addr", f.address.to_string()),
            ("data", preview(f.payload)),
        ],
        n,
    ))
}

fn relay_addr(a: &Address, server: SocketAddr) -> Option<SocketAddr> {
    match a.socket_addr() {
        Some(sa) => Some(sa),
        // A domain BND: assume the server's own address.
        None => Some(SocketAddr::new(server.ip(), a.port)),
    }
}

impl Dissection {
    /// The human-readable form: a header per conversation, then one line per message.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} packets, {} TCP connections, {} UDP datagrams, {} SOCKS conversations",
            self.packets,
            self.tcp_flows,
            self.udp_datagrams,
            self.conversations.len()
        );
        for c in &self.conversations {
            let _ = writeln!(
                out,
                "\n#{} {} {} -> {}{}",
                c.index,
                c.protocol,
                c.client,
                c.server,
                c.command.as_deref().map(|c| format!(" ({c})")).unwrap_or_default()
            );
            for e in &c.events {
                let _ = writeln!(out, "  {}", line(e));
            }
        }
        if !self.unmatched.is_empty() {
            let _ = writeln!(out, "\nunmatched UDP");
            for e in &self.unmatched {
                let _ = writeln!(out, "  {}", line(e));
            }
        }
        if !self.other_flows.is_empty() {
            let _ = writeln!(out, "\nother connections");
            for f in &self.other_flows {
                let _ = writeln!(out, "  {f}");
            }
        }
        out
    }
}

fn line(e: &Event) -> String {
    let fields: Vec<String> = e.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{:>12} #{:<4} {} {} {}", e.time, e.packet, e.dir.arrow(), e.what, fields.join(" ")).trim_end().to_string()
}
