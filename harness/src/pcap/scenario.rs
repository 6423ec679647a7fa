//! A captured conversation as a catalogue scenario: the shared path of `sockslab replay` (run it
//! at once against a live server) and `sockslab import` (write it under `scenarios/captured/`).
//!
//! The client's messages become `send` steps and the server's `expect` steps. Fields that cannot
//! be the same in another run are templated: the request's destination becomes the run's target
//! fixture (`{target.addr}`, `{target.name}`...), RFC 1929 credentials become `{user}`/`{pass}`,
//! and reply addresses become `{bnd:addr}` captures. Relayed data is kept when the captured
//! target was the lab's XOR echo (the server side is the client's bytes XOR A5, which the
//! harness's `xor-echo` fixture reproduces); other data cannot be reproduced and stops the
//! scenario after the reply. Commands whose continuation needs a second party (BIND's peer, UDP,
//! MBIND, UDP-TUN, TLS) stop after the first reply too: what the server answered up to there is
//! what the scenario checks.

use std::fmt::Write as _;

use socksref::proto::v4::{Socks4Request, DEFAULT_MAX_FIELD};
use socksref::proto::v5::Request;
use socksref::proto::{Command, Host};

use super::dissect::{Conversation, Dir};

/// A conversation turned into scenario YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The scenario id.
    pub id: String,
    /// The YAML text (loads with `Scenario::load`).
    pub yaml: String,
    /// What was left out, for the user.
    pub notes: Vec<String>,
    /// A curl command line (with `check-client`'s placeholders) that makes the same request as
    /// the captured client: protocol, addressing (an IP or a name) and login. `None` when the
    /// conversation is not a CONNECT curl can make.
    pub curl: Option<String>,
}

/// Which side of the captured conversation the runner plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The runner is the client (`replay --against`): client messages are sent, server messages
    /// are what the server under test must answer.
    Client,
    /// The runner is the server (`replay --as-server`): client messages are what the client
    /// under test must send, server messages are what the runner answers. A granted CONNECT
    /// then tunnels to the target fixture so the client's own traffic completes.
    Server,
}

use testkit::hex::encode as hex;

const XOR_KEY: u8 = crate::scenario::template::XOR_KEY;

/// Builds the client-side scenario for `conv` (see [`to_scenario_for`]).
pub fn to_scenario(conv: &Conversation, id: &str, source: &str) -> Result<Imported, String> {
    to_scenario_for(conv, id, source, Side::Client)
}

/// Whether relayed client data looks like an HTTP request (what curl sends through a tunnel).
fn is_http(data: &[u8]) -> bool {
    ["GET ", "POST ", "PUT ", "HEAD ", "DELETE ", "OPTIONS ", "PATCH "].iter().any(|m| data.starts_with(m.as_bytes()))
}

/// Builds the scenario for `conv`, played from `side`. `id` names it; `source` (the capture
/// file) goes in its notes.
pub fn to_scenario_for(conv: &Conversation, id: &str, source: &str, side: Side) -> Result<Imported, String> {
    if conv.raw.messages.is_empty() {
        return Err(format!("conversation #{} has no complete message to replay", conv.index));
    }
    let mut b = Builder::new(conv, side);
    for (i, (dir, what, bytes)) in conv.raw.messages.iter().enumerate() {
        if b.message(i, *dir, what, bytes)? == Flow::Stop {
            break;
        }
    }
    Ok(b.finish(id, source))
}

/// Whether the walk over a conversation's messages goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// On to the next message.
    Next,
    /// The rest is not replayed message by message (a TLS method, a tunnel, a continuation).
    Stop,
}

/// A scenario being built from a conversation's messages, one at a time in wire order, and
/// what they showed so far.
struct Builder<'c> {
    conv: &'c Conversation,
    server: bool,
    steps: Vec<String>,
    notes: Vec<String>,
    refs: Vec<&'static str>,
    userpass: bool,
    version: &'static str,
    gost: bool,
    target: &'static str,
    stop_after_reply: bool,
    failed: bool,
    client_data: Vec<u8>,
    // Server side: whether the request was a CONNECT, whether it named a host, whether the
    // runner tunnels after the reply, and the SOCKS4 USERID for curl.
    connect: bool,
    by_name: bool,
    tunnel: bool,
    replied: bool,
    socks4_user: Vec<u8>,
    /// Where the handshake stopped at a reply the continuation plays on from (client side).
    continue_at: Option<usize>,
}

impl<'c> Builder<'c> {
    fn new(conv: &'c Conversation, side: Side) -> Self {
        Builder {
            conv,
            server: side == Side::Server,
            steps: Vec::new(),
            notes: Vec::new(),
            refs: Vec::new(),
            userpass: false,
            version: "socks5",
            gost: false,
            target: "none",
            stop_after_reply: false,
            failed: false,
            client_data: Vec::new(),
            connect: false,
            by_name: false,
            tunnel: false,
            replied: false,
            socks4_user: Vec::new(),
            continue_at: None,
        }
    }

    /// Message `i` of the conversation, as the dissector named it.
    fn message(&mut self, i: usize, dir: Dir, what: &str, bytes: &[u8]) -> Result<Flow, String> {
        let send = dir == Dir::ClientToServer;
        match (send, what) {
            (true, "greeting") => {
                self.refs.push("RFC1928-3-select");
                self.steps.push(format!("send: \"{}\"", hex(bytes)));
            }
            (false, "method selection") => return Ok(self.method_selection(bytes)),
            (true, "RFC 1929 request") => self.login(bytes),
            (false, "RFC 1929 reply") => {
                self.failed = bytes.get(1) != Some(&0);
                self.steps.push(format!("expect: \"{}\"", hex(bytes)));
            }
            (true, "request") if bytes.first() == Some(&4) => self.socks4_request(bytes)?,
            (true, "request") => self.socks5_request(bytes)?,
            (false, "reply") => return Ok(self.reply(i, bytes)),
            (true, "data") => self.client_data = bytes.to_vec(),
            (false, "data") => self.relayed(bytes),
            _ => {}
        }
        Ok(Flow::Next)
    }

    fn method_selection(&mut self, bytes: &[u8]) -> Flow {
        self.steps.push(format!("expect: \"{}\"", hex(bytes)));
        match bytes.get(1) {
            Some(0x80 | 0x82) => {
                self.gost = true;
                self.notes.push("the server chose a TLS method (80/82): the TLS that follows is not replayed".into());
                return Flow::Stop;
            }
            Some(0x02) => self.userpass = true,
            Some(0xff) => self.failed = true,
            _ => {}
        }
        Flow::Next
    }

    /// An RFC 1929 request: credentials that worked become the run's; ones the server refused
    /// stay as captured (the point of such a capture is the refusal).
    fn login(&mut self, bytes: &[u8]) {
        self.refs.push("RFC1929-2-fields");
        let accepted =
            self.conv.raw.messages.iter().find(|m| m.1 == "RFC 1929 reply").is_some_and(|m| m.2.get(1) == Some(&0));
        if accepted {
            self.steps.push("send: \"01 {user.len} {user} {pass.len} {pass}\"".into());
        } else {
            self.steps.push(format!("send: \"{}\"", hex(bytes)));
        }
    }

    fn socks4_request(&mut self, bytes: &[u8]) -> Result<(), String> {
        let (req, _) = Socks4Request::decode(bytes, DEFAULT_MAX_FIELD).map_err(|e| e.to_string())?;
        self.version = if req.hostname.is_some() { "socks4a" } else { "socks4" };
        self.refs.push("SOCKS4-connect");
        if req.command.0 != 1 {
            self.stop_after_reply = true;
        } else {
            self.connect = true;
            self.by_name = req.hostname.is_some();
            self.socks4_user = req.user_id.clone();
        }
        let user = hex(&req.user_id);
        let rest = if req.hostname.is_some() { "00000001 ".to_string() } else { "{target.addr} ".to_string() };
        let host = if req.hostname.is_some() { " {target.name} 00" } else { "" };
        self.steps.push(format!(
            "send: \"04 {:02x} {{target.port}} {rest}{user}{}00{host}\"",
            req.command.0,
            if user.is_empty() { "" } else { " " }
        ));
        self.target = "xor-echo";
        Ok(())
    }

    fn socks5_request(&mut self, bytes: &[u8]) -> Result<(), String> {
        let (req, _) = Request::decode(bytes).map_err(|e| e.to_string())?;
        self.refs.push("RFC1928-4-request-format");
        // CONNECT names the target, which in a replay is the run's fixture. The others name an
        // address on the server's side (BIND's and MBIND's listen address as gost and the
        // reference read it, UDP ASSOCIATE's client side, UDP-TUN's mode): kept, with port 0
        // (any), since the captured port is not free in another run.
        let addr = if req.command == Command::CONNECT {
            target_addr(&req.address)
        } else {
            let mut a = req.address.clone();
            a.port = 0;
            let mut b = Vec::new();
            a.encode(&mut b).map_err(|e| e.to_string())?;
            hex(&b)
        };
        match req.command {
            Command::CONNECT => {
                self.target = "xor-echo";
                self.connect = true;
                self.by_name = matches!(req.address.host, Host::Domain(_));
            }
            Command::MUX_BIND | Command::UDP_TUN => {
                self.gost = true;
                self.stop_after_reply = true;
            }
            _ => self.stop_after_reply = true,
        }
        if req.command != Command::CONNECT && self.server {
            self.notes.push(format!("{:?}: only the request and first reply are replayed", req.command));
        }
        self.steps.push(format!("send: \"05 {:02x} {:02x} {addr}\"", req.command.0, req.reserved));
        Ok(())
    }

    /// The server's reply (message `i`), SOCKS4 or SOCKS5. Played by the runner (server side),
    /// BND is its own address: `bnd4`, the SOCKS4 form, there.
    fn reply(&mut self, i: usize, bytes: &[u8]) -> Flow {
        self.replied = true;
        let granted = if self.version == "socks5" {
            self.refs.push("RFC1928-6-reply-format");
            let rep = bytes.get(1).copied().unwrap_or(0);
            self.steps
                .push(format!("expect: \"05 {rep:02x} {:02x} {{bnd:addr}}\"", bytes.get(2).copied().unwrap_or(0)));
            rep == 0
        } else {
            self.refs.push("SOCKS4-reply-cd");
            let vn = bytes.first().copied().unwrap_or(0);
            let bnd = if self.server { "{bnd4:addr4}" } else { "{bnd:addr4}" };
            self.steps.push(format!("expect: \"{vn:02x} {:02x} {bnd}\"", bytes.get(1).copied().unwrap_or(0)));
            bytes.get(1) == Some(&0x5a)
        };
        self.failed = !granted;
        if self.server && granted && self.connect {
            self.tunnel = true;
            return Flow::Stop;
        }
        if self.stop_after_reply {
            self.continue_at = (granted && !self.server).then_some(i + 1);
            return Flow::Stop;
        }
        Flow::Next
    }

    /// Relayed data from the server: replayed when it is the XOR echo of the client's last bytes.
    fn relayed(&mut self, bytes: &[u8]) {
        let echo: Vec<u8> = self.client_data.iter().map(|b| b ^ XOR_KEY).collect();
        if !self.client_data.is_empty() && bytes == echo {
            self.steps.push(format!("send: \"{}\"", hex(&self.client_data)));
            self.steps.push(format!("expect: \"xor({})\"", hex(&self.client_data)));
        } else {
            self.notes.push("relayed data was not an XOR echo of the client's bytes: not replayed".into());
        }
        self.client_data.clear();
    }

    /// The continuation, the tunnel and the close, then the scenario.
    fn finish(mut self, id: &str, source: &str) -> Imported {
        // BIND, UDP ASSOCIATE, UDP-TUN and MBIND go on after their first reply (client side).
        let mut exact_frames = false;
        if let Some(from) = self.continue_at {
            let c = continuation(self.conv, from, self.version, &mut self.steps, &mut self.notes, &mut self.refs);
            if let Some(t) = c.target {
                self.target = t;
            }
            exact_frames = c.exact_frames;
        }
        if self.tunnel {
            // The client under test sends its own data (the runner cannot know it): the runner
            // relays it to the target fixture: an HTTP one when the captured client spoke HTTP
            // (or sent nothing), the XOR echo the lab's other clients talked to otherwise.
            self.steps.push("tunnel: {}".into());
            let data = self.conv.raw.messages.iter().find(|m| m.0 == Dir::ClientToServer && m.1 == "data");
            if data.is_none_or(|m| is_http(&m.2)) {
                self.target = "http";
            }
        }
        if self.failed && self.conv.raw.server_closed {
            self.steps.push("expect_close: {}".into());
        }
        self.refs.dedup();
        if self.refs.is_empty() {
            self.refs.push("RFC1928-3-select");
        }
        let yaml = self.yaml(id, source, exact_frames);
        // curl fits a CONNECT whose tunnel (if any) carried HTTP, as curl's does.
        let curl = (self.connect && self.replied && (!self.tunnel || self.target == "http"))
            .then(|| curl_for(self.version, self.by_name, self.userpass, &self.socks4_user));
        Imported { id: id.to_string(), yaml, notes: self.notes, curl }
    }

    /// The scenario's YAML: its header from what the messages showed, then the steps.
    fn yaml(&self, id: &str, source: &str, exact_frames: bool) -> String {
        let conv = self.conv;
        let mut y = String::new();
        let _ = writeln!(y, "id: {id}");
        let _ = writeln!(y, "title: \"Captured {} conversation #{} from {source}\"", conv.protocol, conv.index);
        // The requirements the replayed messages exercise; an importer narrows them to the one
        // the regression is about.
        let _ = writeln!(y, "refs: [{}]", self.refs.join(", "));
        if self.server {
            let _ = writeln!(y, "roles: [server]");
        }
        let method = if self.userpass { "userpass" } else { "noauth" };
        let _ = writeln!(y, "needs:\n  version: {}\n  method: {method}", self.version);
        if self.gost {
            let _ = writeln!(y, "  extension: gost");
        }
        if self.stop_after_reply {
            // gost's MBIND and UDP-TUN are served where its BIND and UDP are on.
            let cmd = match conv.command.as_deref() {
                Some("bind" | "mbind") => Some("bind"),
                Some("udp-associate" | "udp-tun") => Some("udp"),
                _ => None,
            };
            if let Some(c) = cmd {
                let _ = writeln!(y, "  command: {c}");
            }
        }
        let _ = writeln!(y, "target: {}", self.target);
        if self.server && self.connect && self.replied {
            // A CONNECT the server granted ends with the client's own exchange done; a refused
            // one must make the client report an error.
            let _ = writeln!(y, "client: {{success: {}}}", !self.failed);
        }
        // The captured client waited for each answer unless the dissector saw pipelining; the
        // coalesced schedule would test pipelining, which the capture says nothing about.
        let pipelined = conv.events.iter().any(|e| e.fields.iter().any(|(_, v)| v.starts_with("pipelined")));
        if exact_frames {
            // Frames whose payload the runner's own writes fill (MBIND's peer data) are one frame
            // only when those writes are whole: split schedules legitimately give several frames.
            let _ = writeln!(y, "schedules: [as-written]");
        } else if !pipelined {
            let _ = writeln!(y, "schedules: [as-written, one-byte, field-split]");
        }
        let mut note =
            format!("Imported from {source} (conversation #{}, {} -> {}).", conv.index, conv.client, conv.server);
        for n in &self.notes {
            note.push(' ');
            note.push_str(n);
            note.push('.');
        }
        let _ = writeln!(y, "notes: {:?}", note);
        let _ = writeln!(y, "steps:");
        for s in &self.steps {
            let _ = writeln!(y, "  - {s}");
        }
        y
    }
}

/// A curl command line that makes the request of a captured CONNECT: `--socks5` (an IP
/// address), `--socks5-hostname` (a name), `--socks4`, `--socks4a`, with `--proxy-user` for a
/// login and the SOCKS4 user id in the proxy URL. Placeholders as for `check-client`.
fn curl_for(version: &str, by_name: bool, userpass: bool, socks4_user: &[u8]) -> String {
    let userid = String::from_utf8_lossy(socks4_user);
    let (proxy, url) = match (version, by_name) {
        ("socks4", _) if !userid.is_empty() => (format!("-x socks4://{userid}@{{proxy}}"), "{target}"),
        ("socks4", _) => ("--socks4 {proxy}".to_string(), "{target}"),
        ("socks4a", _) if !userid.is_empty() => {
            (format!("-x socks4a://{userid}@{{proxy}}"), "{target.host}:{target.port}")
        }
        ("socks4a", _) => ("--socks4a {proxy}".to_string(), "{target.host}:{target.port}"),
        (_, true) => ("--socks5-hostname {proxy}".to_string(), "{target.host}:{target.port}"),
        (_, false) => ("--socks5 {proxy}".to_string(), "{target}"),
    };
    let login = if userpass { " --proxy-user {user}:{pass}" } else { "" };
    format!("curl -sS -m 5 {proxy}{login} http://{url}/")
}

/// The address of a datagram or UDP-TUN frame, templated as the run's target fixture (the lab's
/// captures send to its UDP target; a replay sends to the fixture), in the form captured.
fn target_addr(a: &socksref::proto::Address) -> String {
    match &a.host {
        Host::Ip(std::net::IpAddr::V4(_)) => "01 {target.addr} {target.port}".into(),
        Host::Ip(std::net::IpAddr::V6(_)) => "04 {target.addr6} {target.port}".into(),
        Host::Domain(_) => "03 {target.name.len} {target.name} {target.port}".into(),
    }
}

/// What the continuation of a conversation needs from the scenario around it.
#[derive(Default)]
struct Continued {
    /// The target fixture it sends to, when it has one.
    target: Option<&'static str>,
    /// Whether it holds frames that split schedules cannot reproduce (see the caller).
    exact_frames: bool,
}

/// Steps for what follows the first reply of a BIND, UDP ASSOCIATE, UDP-TUN or MBIND (client
/// side): BIND's peer connects to BND and its second reply and relayed data are compared; the
/// association's datagrams go to the relay of the live reply and their answers are compared;
/// UDP-TUN frames go over the stream; MBIND's smux SYN and PSH frames are compared while the
/// runner plays the peer. Everything is in wire order (`at`, the datagrams' packet numbers).
/// Relayed answers must be the XOR echo of what was sent, which the fixture reproduces; the
/// continuation stops, with a note, at anything it cannot reproduce.
fn continuation(
    conv: &Conversation,
    from: usize,
    version: &str,
    steps: &mut Vec<String>,
    notes: &mut Vec<String>,
    refs: &mut Vec<&'static str>,
) -> Continued {
    let raw = &conv.raw;
    // TCP messages after the reply and the datagrams, by packet number (ties keep TCP order).
    let mut rest: Rest<'_> = raw.messages[from..]
        .iter()
        .zip(raw.at.get(from..).unwrap_or_default())
        .map(|((d, w, b), p)| (*p, *d, w.as_str(), b.as_slice()))
        .collect();
    rest.extend(raw.datagrams.iter().map(|(d, p, b)| (*p, *d, "udp", b.as_slice())));
    rest.sort_by_key(|m| m.0);
    let command = conv.command.as_deref().unwrap_or_default();
    let mut out = Continued::default();
    match command {
        "bind" => continue_bind(rest, version, steps, notes, refs),
        "udp-associate" => {
            refs.push("RFC1928-7-header");
            out.target = Some("udp-xor-echo");
            continue_udp(rest, steps, notes);
        }
        "udp-tun" => {
            refs.push("GOST-4.7-udp-tun-frame");
            out.target = Some("udp-xor-echo");
            continue_udp_tun(rest, steps, notes);
        }
        "mbind" => {
            refs.push("GOST-4.5-mbind-smux");
            out.exact_frames = continue_mbind(rest, steps, notes);
        }
        _ => notes.push(format!("{command}: only the request and first reply are replayed")),
    }
    out
}

/// What follows a conversation's first reply, in wire order: (packet number, direction, what
/// the dissector named it, bytes).
type Rest<'a> = Vec<(usize, Dir, &'a str, &'a [u8])>;

/// Data sent and not answered yet (UDP, UDP-TUN), for matching the XOR echo's answers.
#[derive(Default)]
struct Pending(Vec<Vec<u8>>);

impl Pending {
    fn sent(&mut self, data: &[u8]) {
        self.0.push(data.to_vec());
    }

    /// Whether `data` answers a datagram sent (its XOR echo); that one is no longer pending.
    fn answered(&mut self, data: &[u8]) -> bool {
        let xor = |b: &[u8]| -> Vec<u8> { b.iter().map(|x| x ^ XOR_KEY).collect() };
        match self.0.iter().position(|p| xor(p) == data) {
            Some(i) => {
                self.0.remove(i);
                true
            }
            None => false,
        }
    }
}

/// BIND: the peer connects to BND as the captured one did, the second reply names it, and the
/// relayed data goes both ways (the runner plays both ends).
fn continue_bind(
    rest: Rest<'_>,
    version: &str,
    steps: &mut Vec<String>,
    notes: &mut Vec<String>,
    refs: &mut Vec<&'static str>,
) {
    let mut opened = false;
    for (_, dir, what, bytes) in rest {
        match (dir, what) {
            (Dir::ServerToClient, "reply") if !opened => {
                // The peer connects to BND as the captured one did; the second reply
                // names it.
                refs.push(if version == "socks5" { "RFC1928-6-bind-second" } else { "SOCKS4-reply-cd" });
                steps.push("open: peer\n    to: bnd".into());
                let (code, addr) = if version == "socks5" {
                    (
                        format!("05 {:02x} {:02x}", bytes.get(1).unwrap_or(&0), bytes.get(2).unwrap_or(&0)),
                        "{peer:ipaddr}",
                    )
                } else {
                    (format!("{:02x} {:02x}", bytes.first().unwrap_or(&0), bytes.get(1).unwrap_or(&0)), "{peer:addr4}")
                };
                steps.push(format!("expect: \"{code} {addr}\""));
                opened = true;
                let ok = if version == "socks5" { bytes.get(1) == Some(&0) } else { bytes.get(1) == Some(&0x5a) };
                if !ok {
                    break;
                }
            }
            // The server relays what the peer sent to the client, and the client's bytes
            // to the peer: the runner plays both ends.
            (Dir::ServerToClient, "data") if opened => {
                steps.push(format!("send: \"{}\"\n    conn: peer", hex(bytes)));
                steps.push(format!("expect: \"{}\"", hex(bytes)));
            }
            (Dir::ClientToServer, "data") if opened => {
                steps.push(format!("send: \"{}\"", hex(bytes)));
                steps.push(format!("expect: \"{}\"\n    conn: peer", hex(bytes)));
            }
            _ => {
                notes.push(format!("BIND: the {what} after the first reply is not replayed"));
                break;
            }
        }
    }
    if !opened {
        notes.push("BIND: no peer connected in the capture; only the first reply is replayed".into());
    }
}

/// UDP ASSOCIATE: the datagrams go to the relay of the live reply and their answers are compared.
fn continue_udp(rest: Rest<'_>, steps: &mut Vec<String>, notes: &mut Vec<String>) {
    use socksref::proto::udp::UdpHeader;
    let mut pending = Pending::default();
    for (_, dir, what, bytes) in rest {
        if what != "udp" {
            continue;
        }
        let Ok((h, n)) = UdpHeader::decode(bytes) else {
            notes.push("UDP ASSOCIATE: a datagram without a valid header stops the replay".into());
            break;
        };
        let head = format!("{:04x} {:02x} {}", h.reserved, h.frag, target_addr(&h.address));
        let data = &bytes[n..];
        if dir == Dir::ClientToRelay {
            steps.push(format!("udp_send: \"{head} {}\"\n    to: bnd", hex(data)));
            pending.sent(data);
        } else if pending.answered(data) {
            steps.push(format!("udp_expect: \"{head} {}\"", hex(data)));
        } else {
            notes.push("UDP ASSOCIATE: an answer that is not the XOR echo of a datagram sent stops the replay".into());
            break;
        }
    }
}

/// UDP-TUN: the frames go over the stream and their answers are compared.
fn continue_udp_tun(rest: Rest<'_>, steps: &mut Vec<String>, notes: &mut Vec<String>) {
    use socksref::proto::udptun::TunFrame;
    let mut pending = Pending::default();
    for (_, dir, what, bytes) in rest {
        if what != "UDP-TUN frame" {
            notes.push(format!("UDP-TUN: the {what} after the reply is not replayed"));
            break;
        }
        let Ok((f, _)) = TunFrame::decode(bytes) else { break };
        let head = format!("{:04x} {:02x} {}", f.payload.len(), f.frag, target_addr(&f.address));
        if dir == Dir::ClientToServer {
            steps.push(format!("send: \"{head} {}\"", hex(f.payload)));
            pending.sent(f.payload);
        } else if pending.answered(f.payload) {
            steps.push(format!("expect: \"{head} {}\"", hex(f.payload)));
        } else {
            notes.push("UDP-TUN: an answer that is not the XOR echo of a frame sent stops the replay".into());
            break;
        }
    }
}

/// MBIND: the smux SYN and PSH frames are compared while the runner plays the peer. Returns
/// whether it holds frames whose payload the runner's own writes fill ([`Continued::exact_frames`]).
fn continue_mbind(rest: Rest<'_>, steps: &mut Vec<String>, notes: &mut Vec<String>) -> bool {
    use socksref::proto::smux::{Cmd, Frame};
    let mut exact_frames = false;
    let mut stream: Option<u32> = None;
    let mut replied = false;
    for (_, dir, what, bytes) in rest {
        let version = bytes.first().copied().unwrap_or(1);
        let frame = if what == "smux frame" { Frame::decode(bytes, version).ok() } else { None };
        let Some((f, _)) = frame else {
            notes.push(format!("MBIND: the {what} after the reply is not replayed"));
            break;
        };
        let header = hex(&bytes[..bytes.len() - f.payload.len()]);
        match (dir, f.cmd, stream) {
            (_, Cmd::Nop, _) => {}
            (Dir::ServerToClient, Cmd::Syn, None) => {
                // The peer's connection to BND is what opens the stream.
                steps.push("open: peer\n    to: bnd".into());
                steps.push(format!("expect: \"{}\"", hex(bytes)));
                stream = Some(f.sid);
            }
            (Dir::ServerToClient, Cmd::Psh, Some(sid)) if sid == f.sid && !replied => {
                // The stream's first frame is a SOCKS5 reply naming the peer.
                let p = f.payload;
                if p.len() < 4 || p[0] != 5 {
                    notes.push("MBIND: the stream's first frame is not a SOCKS5 reply: not replayed".into());
                    break;
                }
                steps.push(format!("expect: \"{header} {} {{peer:ipaddr}}\"", hex(&p[..3])));
                replied = true;
            }
            (Dir::ServerToClient, Cmd::Psh, Some(sid)) if sid == f.sid => {
                steps.push(format!("send: \"{}\"\n    conn: peer", hex(f.payload)));
                steps.push(format!("expect: \"{}\"", hex(bytes)));
                exact_frames = true;
            }
            (Dir::ClientToServer, Cmd::Psh, Some(sid)) if sid == f.sid && replied => {
                steps.push(format!("send: \"{}\"", hex(bytes)));
                steps.push(format!("expect: \"{}\"\n    conn: peer", hex(f.payload)));
            }
            _ => {
                notes.push(format!("MBIND: smux {:?} on stream {} is not replayed", f.cmd, f.sid));
                break;
            }
        }
    }
    exact_frames
}
