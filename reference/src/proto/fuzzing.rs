//! One check function per fuzz target, shared by the libFuzzer targets in `fuzz/` and by the
//! corpus-replay test (`reference/tests/fuzz_corpus.rs`), so a crash file found by the engine is
//! a plain failing `cargo test` on a stable toolchain.
//!
//! Every function takes arbitrary bytes, must never panic on its own account, and panics (with a
//! message naming the broken invariant) when the code under test misbehaves. The invariants:
//!
//! - no panic in the decoder;
//! - a decoder never consumes more than its input, nor zero bytes for a message;
//! - `decode(encode(x)) == x` wherever an encoder exists;
//! - every strict prefix of a valid message is `Incomplete` (a datagram: `Truncated`);
//! - `Incomplete` only for inputs whose every prefix is `Incomplete` too, and `Invalid` stays
//!   `Invalid` whatever bytes follow (a decoder decides on what it has seen, never on the end of
//!   the buffer);
//! - the server handshake gives the same transmit bytes, events and consumption however its
//!   input is chunked.

use arbitrary::Unstructured;

use super::auth::{UserPassReply, UserPassRequest};
use super::codec::{DecodeError, Decoded};
use super::server::{HandshakeConfig, ServerEvent, ServerHandshake};
use super::smux::Frame;
use super::udp::UdpHeader;
use super::udptun::TunFrame;
use super::v4::{Socks4ReplyMsg, Socks4Request, DEFAULT_MAX_FIELD};
use super::v5::{Greeting, MethodSelection, ReplyMsg, Request};
use super::{Method, ProtoError};

/// Inputs longer than this are cut: the prefix checks are quadratic, and no SOCKS message is near
/// this long, so longer inputs only slow the engine down.
const MAX_INPUT: usize = 2048;

/// The names of every target, in the order `cargo xtask fuzz` runs them. The `scenario` target
/// and `pcap_reader` targets live in the harness (`fuzz/src/*_check.rs`), the rest here.
pub const TARGETS: &[&str] = &[
    "socks4_request",
    "socks4_reply",
    "socks5_greeting",
    "socks5_method",
    "socks5_request",
    "socks5_reply",
    "userpass_request",
    "userpass_reply",
    "udp_header",
    "udptun_frame",
    "smux_frame",
    "proxy_url",
    "server_handshake",
    "scenario",
    "pcap_reader",
];

/// The targets whose checks live in the harness (`fuzz/src/`), not in this crate.
pub const HARNESS_TARGETS: &[&str] = &["scenario", "pcap_reader"];

/// Runs the check of the reference target `name` on `data`; `false` when there is no such target
/// in this crate (the replay test uses this to route corpus files).
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "socks4_request" => socks4_request(data),
        "socks4_reply" => socks4_reply(data),
        "socks5_greeting" => socks5_greeting(data),
        "socks5_method" => socks5_method(data),
        "socks5_request" => socks5_request(data),
        "socks5_reply" => socks5_reply(data),
        "userpass_request" => userpass_request(data),
        "userpass_reply" => userpass_reply(data),
        "udp_header" => udp_header(data),
        "udptun_frame" => udptun_frame(data),
        "smux_frame" => smux_frame(data),
        "proxy_url" => proxy_url(data),
        "server_handshake" => server_handshake(data),
        _ => return false,
    }
    true
}

fn cap(data: &[u8]) -> &[u8] {
    &data[..data.len().min(MAX_INPUT)]
}

/// The invariants every stream decoder shares. `encode` re-encodes a decoded message (`None`
/// when the message cannot be encoded, which must then be explained by the caller's rules).
fn stream_decoder<T: std::fmt::Debug + PartialEq>(
    what: &str,
    data: &[u8],
    decode: impl Fn(&[u8]) -> Decoded<T>,
    encode: impl Fn(&T) -> Option<Vec<u8>>,
) {
    let data = cap(data);
    match decode(data) {
        Ok((msg, n)) => {
            assert!(n > 0 && n <= data.len(), "{what}: consumed {n} of {} bytes", data.len());
            for cut in 0..n {
                assert_eq!(decode(&data[..cut]), Err(DecodeError::Incomplete), "{what}: strict prefix of {cut} bytes");
            }
            match decode(&data[..n]) {
                Ok((m2, n2)) => assert!(m2 == msg && n2 == n, "{what}: decoding only the message bytes differs"),
                Err(e) => panic!("{what}: the message alone does not decode: {e}"),
            }
            if let Some(bytes) = encode(&msg) {
                let again = decode(&bytes);
                assert_eq!(again, Ok((msg, bytes.len())), "{what}: decode(encode(x)) != x");
            }
        }
        Err(DecodeError::Incomplete) => {
            for cut in 0..data.len() {
                assert_eq!(decode(&data[..cut]), Err(DecodeError::Incomplete), "{what}: prefix of an incomplete input");
            }
        }
        Err(DecodeError::Invalid(e)) => {
            for tail in [&[0u8; 300][..], &[0xff; 300][..]] {
                let mut longer = data.to_vec();
                longer.extend_from_slice(tail);
                assert!(
                    matches!(decode(&longer), Err(DecodeError::Invalid(_))),
                    "{what}: invalid input ({e}) became decodable with more bytes"
                );
            }
        }
    }
}

/// SOCKS4/4a request (`VN CD DSTPORT DSTIP USERID 00 [HOSTNAME 00]`).
pub fn socks4_request(data: &[u8]) {
    stream_decoder(
        "socks4 request",
        data,
        |b| Socks4Request::decode(b, DEFAULT_MAX_FIELD),
        |m| {
            let mut out = Vec::new();
            // A decoded request always re-encodes: its fields are capped and NUL-free by construction.
            m.encode(&mut out).expect("a decoded SOCKS4 request re-encodes");
            Some(out)
        },
    );
}

/// SOCKS4 reply (8 bytes; VN 00 or 04 accepted, 00 written).
pub fn socks4_reply(data: &[u8]) {
    stream_decoder("socks4 reply", data, Socks4ReplyMsg::decode, |m| Some(m.to_bytes().to_vec()));
}

/// SOCKS5 greeting (`VER NMETHODS METHODS`).
pub fn socks5_greeting(data: &[u8]) {
    stream_decoder("socks5 greeting", data, Greeting::decode, |m| {
        let mut out = Vec::new();
        m.encode(&mut out).expect("a decoded greeting has at most 255 methods");
        Some(out)
    });
}

/// SOCKS5 method selection (`VER METHOD`).
pub fn socks5_method(data: &[u8]) {
    stream_decoder("socks5 method selection", data, MethodSelection::decode, |m| {
        let mut out = Vec::new();
        m.encode(&mut out);
        Some(out)
    });
}

/// SOCKS5 request (`VER CMD RSV ATYP DST.ADDR DST.PORT`).
pub fn socks5_request(data: &[u8]) {
    stream_decoder("socks5 request", data, Request::decode, |m| {
        let mut out = Vec::new();
        m.encode(&mut out).expect("a decoded request's domain fits a length byte");
        Some(out)
    });
}

/// SOCKS5 reply (`VER REP RSV ATYP BND.ADDR BND.PORT`).
pub fn socks5_reply(data: &[u8]) {
    stream_decoder("socks5 reply", data, ReplyMsg::decode, |m| {
        let mut out = Vec::new();
        m.encode(&mut out).expect("a decoded reply's domain fits a length byte");
        Some(out)
    });
}

/// RFC 1929 request (`VER ULEN UNAME PLEN PASSWD`).
pub fn userpass_request(data: &[u8]) {
    stream_decoder("rfc1929 request", data, UserPassRequest::decode, |m| {
        let mut out = Vec::new();
        m.encode(&mut out).expect("decoded RFC 1929 fields fit their length bytes");
        Some(out)
    });
}

/// RFC 1929 reply (`VER STATUS`).
pub fn userpass_reply(data: &[u8]) {
    stream_decoder("rfc1929 reply", data, UserPassReply::decode, |m| {
        let mut out = Vec::new();
        m.encode(&mut out);
        Some(out)
    });
}

/// SOCKS5 UDP request header. A datagram is whole, so strict prefixes of a header are
/// `Truncated`, and the payload offset never passes the datagram's end.
pub fn udp_header(data: &[u8]) {
    let data = cap(data);
    match UdpHeader::decode(data) {
        Ok((h, off)) => {
            assert!(off <= data.len() && off == h.encoded_len(), "udp header: offset {off} of {}", data.len());
            for cut in 0..off {
                assert_eq!(UdpHeader::decode(&data[..cut]), Err(ProtoError::Truncated), "udp header: prefix of {cut}");
            }
            let mut out = Vec::new();
            h.encode(&mut out).expect("a decoded UDP header re-encodes");
            assert_eq!(out, data[..off], "udp header: encode(decode(x)) differs from the header bytes");
            out.extend_from_slice(b"payload");
            assert_eq!(UdpHeader::decode(&out), Ok((h, off)), "udp header: decode(encode(x)) != x");
        }
        Err(ProtoError::Truncated) => {
            for cut in 0..data.len() {
                assert_eq!(UdpHeader::decode(&data[..cut]), Err(ProtoError::Truncated), "udp header: prefix of {cut}");
            }
        }
        Err(_) => {}
    }
}

/// gost UDP-TUN frame. FRAG is read as anything and written as `FF`; an empty payload decodes
/// (RSV 0) but is never encoded.
pub fn udptun_frame(data: &[u8]) {
    stream_decoder(
        "udp-tun frame",
        data,
        |b| TunFrame::decode(b).map(|(f, n)| ((f.frag, f.address, f.payload.to_vec()), n)),
        |(_, addr, payload)| {
            let mut out = Vec::new();
            match TunFrame::encode(addr, payload, &mut out) {
                Ok(()) => {
                    // The encoder writes FRAG FF; compare the rest by decoding with that FRAG.
                    let (f, n) = TunFrame::decode(&out).expect("an encoded frame decodes");
                    assert!(f.frag == super::udptun::FRAG_TUN && &f.address == addr && f.payload == &payload[..]);
                    assert_eq!(n, out.len(), "udp-tun: an encoded frame is consumed whole");
                    None
                }
                Err(e) => {
                    assert!(payload.is_empty(), "udp-tun: a decoded non-empty frame does not re-encode: {e}");
                    None
                }
            }
        },
    );
}

/// xtaci/smux frame, on a version 1 and a version 2 session.
pub fn smux_frame(data: &[u8]) {
    for version in [super::smux::VERSION_1, super::smux::VERSION_2] {
        stream_decoder(
            "smux frame",
            data,
            |b| Frame::decode(b, version).map(|(f, n)| ((f.cmd, f.sid, f.payload.to_vec()), n)),
            |(cmd, sid, payload)| {
                let mut out = Vec::new();
                Frame::encode(version, *cmd, *sid, payload, &mut out).expect("a decoded payload fits LEN");
                let (f, n) = Frame::decode(&out, version).expect("an encoded frame decodes");
                assert!((f.cmd, f.sid, f.payload, n) == (*cmd, *sid, &payload[..], out.len()), "smux round trip");
                None
            },
        );
    }
}

/// gost service/node URL. A parsed URL without credentials prints (its query dropped) as a URL
/// that parses back to the same scheme, host, port and targets.
pub fn proxy_url(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(cap(data)) else { return };
    let _ = crate::url::parse_duration(s);
    let _ = crate::url::split_host_port(s);
    let Ok(u) = crate::url::ProxyUrl::parse(s) else { return };
    for k in u.params.keys() {
        let _ = u.bool_param(k, false);
        let _ = u.duration_param(k);
    }
    if u.auth.is_none() {
        let printed = u.to_string();
        match crate::url::ProxyUrl::parse(&printed) {
            Ok(v) => assert!(
                (&v.scheme, &v.host, v.port, &v.targets) == (&u.scheme, &u.host, u.port, &u.targets),
                "url: {s:?} printed as {printed:?} parses differently: {v:?} vs {u:?}"
            ),
            Err(e) => panic!("url: {s:?} printed as {printed:?} does not parse: {e}"),
        }
    }
}

/// What one run of the handshake driver saw.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    consumed: usize,
    transmitted: Vec<u8>,
    events: Vec<ServerEvent>,
    done: bool,
}

/// Feeds `input` to a fresh machine in chunks that end at `cuts` (absolute offsets, ascending),
/// answering authentication and USERID checks from `verdicts` bits and finishing extension
/// methods at once, the way the tokio driver does.
fn drive(config: &HandshakeConfig, input: &[u8], cuts: &[usize], verdicts: u8) -> Outcome {
    let mut hs = ServerHandshake::new(config.clone());
    let mut out = Outcome { consumed: 0, transmitted: Vec::new(), events: Vec::new(), done: false };
    let mut answers = 0u32;
    let ends = cuts.iter().copied().chain(std::iter::once(input.len()));
    for end in ends {
        loop {
            let avail = &input[out.consumed..end];
            let n = hs.handle_input(avail);
            assert!(n <= avail.len(), "server handshake consumed {n} of {} bytes", avail.len());
            out.consumed += n;
            let mut acted = false;
            while let Some(ev) = hs.poll_event() {
                acted = true;
                let ok = verdicts >> (answers % 8) & 1 == 1;
                match &ev {
                    ServerEvent::Authenticate(_) => {
                        answers += 1;
                        hs.auth_result(ok);
                    }
                    ServerEvent::CheckUserid(_) => {
                        answers += 1;
                        hs.userid_result(ok);
                    }
                    ServerEvent::MethodSelected(_) => hs.method_ready(),
                    ServerEvent::Request(_) | ServerEvent::Failed(_) => {}
                }
                out.events.push(ev);
            }
            if let Some(t) = hs.poll_transmit() {
                out.transmitted.extend(t);
            }
            if hs.is_done() || (n == 0 && !acted) {
                break;
            }
        }
        if hs.is_done() {
            break;
        }
    }
    out.done = hs.is_done();
    out
}

/// Structure-aware target for the server handshake state machine: a configuration, driver
/// verdicts and a chunking are taken from the front of the input, the client's bytes are the
/// rest. The outcome fed in chunks must equal the outcome fed at once, and once a request or a
/// failure is out the machine consumes nothing more (optimistic data stays with the caller).
///
/// Layout (what the corpus generator writes): `config` byte, `verdicts` byte, cut count `k`,
/// `k` chunk lengths, then the input.
pub fn server_handshake(data: &[u8]) {
    let mut u = Unstructured::new(cap(data));
    let (Ok(flags), Ok(verdicts), Ok(k)) = (u.arbitrary::<u8>(), u.arbitrary::<u8>(), u.arbitrary::<u8>()) else {
        return;
    };
    let mut lens = Vec::new();
    for _ in 0..k % 32 {
        match u.arbitrary::<u8>() {
            Ok(l) => lens.push(usize::from(l)),
            Err(_) => return,
        }
    }
    let input = u.take_rest();
    let mut cuts = Vec::new();
    let mut at = 0;
    for l in lens {
        at = (at + l).min(input.len());
        cuts.push(at);
    }
    let methods = match flags >> 2 & 3 {
        0 => vec![Method::NO_AUTH],
        1 => vec![Method::USER_PASS],
        2 => vec![Method::USER_PASS, Method::NO_AUTH],
        _ => vec![Method::TLS, Method::TLS_AUTH, Method::NO_AUTH],
    };
    let config = HandshakeConfig {
        socks4: flags & 1 == 0,
        socks5: flags & 2 == 0,
        methods,
        max_field: if flags & 16 == 0 { DEFAULT_MAX_FIELD } else { 8 },
        socks4_userid_check: flags & 32 != 0,
    };
    let whole = drive(&config, input, &[], verdicts);
    let chunked = drive(&config, input, &cuts, verdicts);
    assert_eq!(chunked, whole, "server handshake: chunking {cuts:?} changes the outcome");
    // One byte at a time is the harshest chunking (quadratic, so only for handshake-sized input).
    if input.len() <= 600 {
        let bytewise: Vec<usize> = (1..input.len()).collect();
        assert_eq!(drive(&config, input, &bytewise, verdicts), whole, "server handshake: byte-at-a-time differs");
    }
    if whole.done {
        let last = whole.events.last().expect("a finished handshake has an event");
        assert!(matches!(last, ServerEvent::Request(_) | ServerEvent::Failed(_)), "finished on {last:?}");
    }
}
