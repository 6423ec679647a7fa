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
    let msgs = &conv.raw.messages;
    if msgs.is_empty() {
        return Err(format!("conversation #{} has no complete message to replay", conv.index));
    }
    let mut steps: Vec<String> = Vec::new();
    let mut notes = Vec::new();
    let mut userpass = false;
    let mut version = "socks5";
    let mut gost = false;
    let mut target = "none";
    let mut refs: Vec<&str> = Vec::new();
    let mut stop_after_reply = false;
    let mut failed = false;
    let mut client_data: Vec<u8> = Vec::new();
    // Server side: whether the request was a CONNECT, whether it named a host, and whether the
    // runner tunnels after the reply.
    let mut connect = false;
    let mut by_name = false;
    let mut tunnel = false;
    let mut replied = false;
    let mut socks4_user: Vec<u8> = Vec::new();
    let server = side == Side::Server;
    // Where the handshake stopped at a reply the continuation plays on from (client side).
    let mut continue_at: Option<usize> = None;
    for (i, (dir, what, bytes)) in msgs.iter().enumerate() {
        let send = *dir == Dir::ClientToServer;
        match (send, what.as_str()) {
            (true, "greeting") => {
                refs.push("RFC1928-3-select");
                steps.push(format!("send: \"{}\"", hex(bytes)));
            }
            (false, "method selection") => {
                if matches!(bytes.get(1), Some(0x80 | 0x82)) {
                    gost = true;
                    notes.push("the server chose a TLS method (80/82): the TLS that follows is not replayed".into());
                    steps.push(format!("expect: \"{}\"", hex(bytes)));
                    break;
                }
                if bytes.get(1) == Some(&0x02) {
                    userpass = true;
                }
                if bytes.get(1) == Some(&0xff) {
                    failed = true;
                }
                steps.push(format!("expect: \"{}\"", hex(bytes)));
            }
            (true, "RFC 1929 request") => {
                refs.push("RFC1929-2-fields");
                // Credentials that worked become the run's; ones the server refused stay as
                // captured (the point of such a capture is the refusal).
                let accepted = msgs.iter().find(|m| m.1 == "RFC 1929 reply").is_some_and(|m| m.2.get(1) == Some(&0));
                if accepted {
                    steps.push("send: \"01 {user.len} {user} {pass.len} {pass}\"".into());
                } else {
                    steps.push(format!("send: \"{}\"", hex(bytes)));
                }
            }
            (false, "RFC 1929 reply") => {
                failed = bytes.get(1) != Some(&0);
                steps.push(format!("expect: \"{}\"", hex(bytes)));
            }
            (true, "request") if bytes.first() == Some(&4) => {
                let (req, _) = Socks4Request::decode(bytes, DEFAULT_MAX_FIELD).map_err(|e| e.to_string())?;
                version = if req.hostname.is_some() { "socks4a" } else { "socks4" };
                refs.push("SOCKS4-connect");
                if req.command.0 != 1 {
                    stop_after_reply = true;
                } else {
                    connect = true;
                    by_name = req.hostname.is_some();
                    socks4_user = req.user_id.clone();
                }
                let user = hex(&req.user_id);
                let rest = if req.hostname.is_some() { "00000001 ".to_string() } else { "{target.addr} ".to_string() };
                let host = if req.hostname.is_some() { " {target.name} 00" } else { "" };
                steps.push(format!(
                    "send: \"04 {:02x} {{target.port}} {rest}{user}{}00{host}\"",
                    req.command.0,
                    if user.is_empty() { "" } else { " " }
                ));
                target = "xor-echo";
            }
            (true, "request") => {
                let (req, _) = Request::decode(bytes).map_err(|e| e.to_string())?;
                refs.push("RFC1928-4-request-format");
                // CONNECT names the target, which in a replay is the run's fixture. The others
                // name an address on the server's side (BIND's and MBIND's listen address as gost
                // and the reference read it, UDP ASSOCIATE's client side, UDP-TUN's mode): kept,
                // with port 0 (any), since the captured port is not free in another run.
                let to_target = req.command == Command::CONNECT;
                let addr = match (&req.address.host, to_target) {
                    (Host::Ip(std::net::IpAddr::V4(_)), true) => "01 {target.addr} {target.port}".to_string(),
                    (Host::Ip(std::net::IpAddr::V6(_)), true) => "04 {target.addr6} {target.port}".to_string(),
                    (Host::Domain(_), true) => "03 {target.name.len} {target.name} {target.port}".to_string(),
                    (_, false) => {
                        let mut a = req.address.clone();
                        a.port = 0;
                        let mut b = Vec::new();
                        a.encode(&mut b).map_err(|e| e.to_string())?;
                        hex(&b)
                    }
                };
                match req.command {
                    Command::CONNECT => {
                        target = "xor-echo";
                        connect = true;
                        by_name = matches!(req.address.host, Host::Domain(_));
                    }
                    Command::MUX_BIND | Command::UDP_TUN => {
                        gost = true;
                        stop_after_reply = true;
                    }
                    _ => stop_after_reply = true,
                }
                if req.command != Command::CONNECT && server {
                    notes.push(format!("{:?}: only the request and first reply are replayed", req.command));
                }
                steps.push(format!("send: \"05 {:02x} {:02x} {addr}\"", req.command.0, req.reserved));
            }
            (false, "reply") if version != "socks5" => {
                refs.push("SOCKS4-reply-cd");
                replied = true;
                let granted = bytes.get(1) == Some(&0x5a);
                failed = !granted;
                let vn = bytes.first().copied().unwrap_or(0);
                // Played by the runner, BND is its own (`bnd4`: the SOCKS4 form of its address).
                let bnd = if server { "{bnd4:addr4}" } else { "{bnd:addr4}" };
                steps.push(format!("expect: \"{vn:02x} {:02x} {bnd}\"", bytes.get(1).copied().unwrap_or(0)));
                if server && granted && connect {
                    tunnel = true;
                    break;
                }
                if stop_after_reply {
                    continue_at = (granted && !server).then_some(i + 1);
                    break;
                }
            }
            (false, "reply") => {
                refs.push("RFC1928-6-reply-format");
                replied = true;
                let rep = bytes.get(1).copied().unwrap_or(0);
                failed = rep != 0;
                steps.push(format!("expect: \"05 {rep:02x} {:02x} {{bnd:addr}}\"", bytes.get(2).copied().unwrap_or(0)));
                if server && rep == 0 && connect {
                    tunnel = true;
                    break;
                }
                if stop_after_reply {
                    continue_at = (rep == 0 && !server).then_some(i + 1);
                    break;
                }
            }
            (true, "data") => {
                client_data = bytes.clone();
            }
            (false, "data") => {
                let echo: Vec<u8> = client_data.iter().map(|b| b ^ XOR_KEY).collect();
                if !client_data.is_empty() && *bytes == echo {
                    steps.push(format!("send: \"{}\"", hex(&client_data)));
                    steps.push(format!("expect: \"xor({})\"", hex(&client_data)));
                } else {
                    notes.push("relayed data was not an XOR echo of the client's bytes: not replayed".into());
                }
                client_data.clear();
            }
            _ => {}
        }
    }
    // BIND, UDP ASSOCIATE, UDP-TUN and MBIND go on after their first reply (client side).
    let mut exact_frames = false;
    if let Some(from) = continue_at {
        let c = continuation(conv, from, version, &mut steps, &mut notes, &mut refs);
        if let Some(t) = c.target {
            target = t;
        }
        exact_frames = c.exact_frames;
    }
    if tunnel {
        // The client under test sends its own data (the runner cannot know it): the runner
        // relays it to the target fixture: an HTTP one when the captured client spoke HTTP (or
        // sent nothing), the XOR echo the lab's other clients talked to otherwise.
        steps.push("tunnel: {}".into());
        let data = msgs.iter().find(|m| m.0 == Dir::ClientToServer && m.1 == "data");
        if data.is_none_or(|m| is_http(&m.2)) {
            target = "http";
        }
    }
    if failed && conv.raw.server_closed {
        steps.push("expect_close: {}".into());
    }
    refs.dedup();
    if refs.is_empty() {
        refs.push("RFC1928-3-select");
    }
    let method = if userpass { "userpass" } else { "noauth" };
    let mut y = String::new();
    let _ = writeln!(y, "id: {id}");
    let _ = writeln!(y, "title: \"Captured {} conversation #{} from {source}\"", conv.protocol, conv.index);
    // The requirements the replayed messages exercise; an importer narrows them to the one the
    // regression is about.
    let _ = writeln!(y, "refs: [{}]", refs.join(", "));
    if server {
        let _ = writeln!(y, "roles: [server]");
    }
    let _ = writeln!(y, "needs:\n  version: {version}\n  method: {method}");
    if gost {
        let _ = writeln!(y, "  extension: gost");
    }
    if stop_after_reply {
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
    let _ = writeln!(y, "target: {target}");
    if server && connect && replied {
        // A CONNECT the server granted ends with the client's own exchange done; a refused one
        // must make the client report an error.
        let _ = writeln!(y, "client: {{success: {}}}", !failed);
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
    for n in &notes {
        note.push(' ');
        note.push_str(n);
        note.push('.');
    }
    let _ = writeln!(y, "notes: {:?}", note);
    let _ = writeln!(y, "steps:");
    for s in &steps {
        let _ = writeln!(y, "  - {s}");
    }
    // curl fits a CONNECT whose tunnel (if any) carried HTTP, as curl's does.
    let curl = (connect && replied && (!tunnel || target == "http"))
        .then(|| curl_for(version, by_name, userpass, &socks4_user));
    Ok(Imported { id: id.to_string(), yaml: y, notes, curl })
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
    use socksref::proto::smux::{Cmd, Frame};
    use socksref::proto::udp::UdpHeader;
    use socksref::proto::udptun::TunFrame;
    let raw = &conv.raw;
    // TCP messages after the reply and the datagrams, by packet number (ties keep TCP order).
    let mut rest: Vec<(usize, Dir, &str, &[u8])> = raw.messages[from..]
        .iter()
        .zip(raw.at.get(from..).unwrap_or_default())
        .map(|((d, w, b), p)| (*p, *d, w.as_str(), b.as_slice()))
        .collect();
    rest.extend(raw.datagrams.iter().map(|(d, p, b)| (*p, *d, "udp", b.as_slice())));
    rest.sort_by_key(|m| m.0);
    let command = conv.command.as_deref().unwrap_or_default();
    let mut out = Continued::default();
    let xor = |b: &[u8]| -> Vec<u8> { b.iter().map(|x| x ^ XOR_KEY).collect() };
    // Data sent and not answered yet (UDP, UDP-TUN), for matching the XOR echo's answers.
    let mut pending: Vec<Vec<u8>> = Vec::new();
    let answered = |data: &[u8], pending: &mut Vec<Vec<u8>>| -> bool {
        match pending.iter().position(|p| xor(p) == data) {
            Some(i) => {
                pending.remove(i);
                true
            }
            None => false,
        }
    };
    match command {
        "bind" => {
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
                            (
                                format!("{:02x} {:02x}", bytes.first().unwrap_or(&0), bytes.get(1).unwrap_or(&0)),
                                "{peer:addr4}",
                            )
                        };
                        steps.push(format!("expect: \"{code} {addr}\""));
                        opened = true;
                        let ok =
                            if version == "socks5" { bytes.get(1) == Some(&0) } else { bytes.get(1) == Some(&0x5a) };
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
        "udp-associate" => {
            refs.push("RFC1928-7-header");
            out.target = Some("udp-xor-echo");
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
                    pending.push(data.to_vec());
                } else if answered(data, &mut pending) {
                    steps.push(format!("udp_expect: \"{head} {}\"", hex(data)));
                } else {
                    notes.push(
                        "UDP ASSOCIATE: an answer that is not the XOR echo of a datagram sent stops the replay".into(),
                    );
                    break;
                }
            }
        }
        "udp-tun" => {
            refs.push("GOST-4.7-udp-tun-frame");
            out.target = Some("udp-xor-echo");
            for (_, dir, what, bytes) in rest {
                if what != "UDP-TUN frame" {
                    notes.push(format!("UDP-TUN: the {what} after the reply is not replayed"));
                    break;
                }
                let Ok((f, _)) = TunFrame::decode(bytes) else { break };
                let head = format!("{:04x} {:02x} {}", f.payload.len(), f.frag, target_addr(&f.address));
                if dir == Dir::ClientToServer {
                    steps.push(format!("send: \"{head} {}\"", hex(f.payload)));
                    pending.push(f.payload.to_vec());
                } else if answered(f.payload, &mut pending) {
                    steps.push(format!("expect: \"{head} {}\"", hex(f.payload)));
                } else {
                    notes.push("UDP-TUN: an answer that is not the XOR echo of a frame sent stops the replay".into());
                    break;
                }
            }
        }
        "mbind" => {
            refs.push("GOST-4.5-mbind-smux");
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
                        out.exact_frames = true;
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
        }
        _ => notes.push(format!("{command}: only the request and first reply are replayed")),
    }
    out
}
