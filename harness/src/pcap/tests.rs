//! Reader, reassembly and dissector tests on captures built in code ([`super::synth`]).

use std::net::SocketAddr;
use std::time::Duration;

use super::read::{read_capture, CaptureError, Format};
use super::reassembly::reassemble;
use super::synth::{pcap, pcapng, Link, Script, Seg};
use super::{dissect_bytes, Dissection};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const GREETING: &[u8] = &[5, 1, 0];
const METHOD: &[u8] = &[5, 0];
const REQUEST: &[u8] = &[5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90];
const REPLY: &[u8] = &[5, 0, 0, 1, 127, 0, 0, 1, 0xc3, 0x50];

fn connect_script(client: &str, server: &str) -> Script {
    Script::new(addr(client), addr(server), 1000, 5000)
        .handshake()
        .client(GREETING)
        .server(METHOD)
        .client(REQUEST)
        .server(REPLY)
        .client(b"ping")
        .server(b"pong")
        .fin(true)
        .fin(false)
}

/// A connection from `client` to `server` (ISNs 1 and 2) whose SOCKS5 greeting offers only
/// no authentication and gets it: the opening most dissector cases start from.
fn no_auth(client: SocketAddr, server: SocketAddr) -> Script {
    Script::new(client, server, 1, 2).handshake().client(GREETING).server(METHOD)
}

/// Like [`no_auth`], with username/password (`02`) offered and selected.
fn user_pass(client: SocketAddr, server: SocketAddr) -> Script {
    Script::new(client, server, 1, 2).handshake().client(&[5, 1, 2]).server(&[5, 2])
}

fn whats(d: &Dissection) -> Vec<String> {
    d.conversations[0].events.iter().map(|e| format!("{} {}", e.what, fields(e))).collect()
}

fn fields(e: &super::dissect::Event) -> String {
    e.fields.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

const CONNECT_EVENTS: &[&str] = &[
    "greeting methods=[NO_AUTH(0x00)]",
    "method method=NO_AUTH(0x00)",
    "request cmd=CONNECT(0x01) dst=127.0.0.1:8080",
    "reply rep=SUCCEEDED(0x00) bnd=127.0.0.1:50000",
    "data bytes=4 first=\"ping\"",
    "data bytes=4 first=\"pong\"",
    "fin after_bytes=17",
    "fin after_bytes=16",
];

#[test]
fn every_link_type_in_pcap_and_pcapng_gives_the_same_conversation() {
    for (client, server) in [("127.0.0.1:40000", "127.0.0.1:1080"), ("[::1]:40000", "[::1]:1080")] {
        let segs = connect_script(client, server).segs;
        for link in Link::ALL {
            for (format, bytes) in [
                (Format::Pcap, pcap(link, &segs)),
                (Format::PcapNg, pcapng(link, &segs, false)),
                (Format::PcapNg, pcapng(link, &segs, true)),
            ] {
                let cap = read_capture(&bytes).unwrap_or_else(|e| panic!("{link:?} {format:?}: {e}"));
                assert_eq!((cap.format, cap.total, cap.packets.len()), (format, segs.len(), segs.len()), "{link:?}");
                assert_eq!(cap.packets[0].src, addr(client));
                let d = dissect_bytes(&bytes).unwrap();
                assert_eq!(d.conversations.len(), 1, "{link:?} {format:?}");
                assert_eq!(whats(&d), CONNECT_EVENTS, "{link:?} {format:?} {client}");
            }
        }
    }
}

#[test]
fn pcapng_nanosecond_and_pcap_microsecond_timestamps_are_exact() {
    let mut segs = connect_script("127.0.0.1:40000", "127.0.0.1:1080").segs;
    segs[1].time = Duration::new(1_700_000_000, 123_456_789);
    let ng = read_capture(&pcapng(Link::Raw, &segs, true)).unwrap();
    assert_eq!(ng.packets[1].time, Duration::new(1_700_000_000, 123_456_789));
    let us = read_capture(&pcapng(Link::Raw, &segs, false)).unwrap();
    assert_eq!(us.packets[1].time, Duration::new(1_700_000_000, 123_456_000));
    let classic = read_capture(&pcap(Link::Raw, &segs)).unwrap();
    assert_eq!(classic.packets[1].time, Duration::new(1_700_000_000, 123_456_000));
}

fn streams(segs: &[Seg]) -> (Vec<u8>, Vec<u8>, super::reassembly::Flows) {
    let cap = read_capture(&pcap(Link::Raw, segs)).unwrap();
    let flows = reassemble(&cap.packets);
    assert_eq!(flows.tcp.len(), 1);
    (flows.tcp[0].to_server.data.clone(), flows.tcp[0].to_client.data.clone(), flows)
}

#[test]
fn retransmitted_segments_are_delivered_once() {
    let mut s = Script::new(addr("10.0.0.1:1"), addr("10.0.0.2:2"), 7, 9).handshake().client(b"hello").server(b"ok");
    let dup = s.segs[3].clone();
    s.segs.push(dup.clone());
    s.segs.push(dup);
    let s = s.client(b" world");
    let (c, srv, flows) = streams(&s.segs);
    assert_eq!((c.as_slice(), srv.as_slice()), (&b"hello world"[..], &b"ok"[..]));
    assert_eq!(flows.tcp[0].to_server.retransmissions, 2);
    assert_eq!(flows.tcp[0].to_server.conflicts, 0);
}

#[test]
fn out_of_order_segments_wait_for_the_hole_to_fill() {
    let mut s = Script::new(addr("10.0.0.1:1"), addr("10.0.0.2:2"), 7, 9)
        .handshake()
        .client(b"one ")
        .client(b"two ")
        .client(b"three");
    s.segs.swap(3, 5); // "three" first, then "two ", then "one "
    let (c, _, flows) = streams(&s.segs);
    assert_eq!(c, b"one two three");
    assert_eq!(flows.tcp[0].to_server.out_of_order, 2);
    // The chunk list tells which packet delivered each byte: "one " came in packet 6.
    assert_eq!(flows.tcp[0].to_server.time_at(0).map(|t| t.0), Some(6));
    assert_eq!(flows.tcp[0].to_server.time_at(12).map(|t| t.0), Some(4));
}

#[test]
fn overlapping_segments_keep_the_new_bytes_and_flag_disagreement() {
    let base = Script::new(addr("10.0.0.1:1"), addr("10.0.0.2:2"), 100, 9).handshake().client(b"abcdef");
    // A segment that repeats "def" and adds "ghi".
    let mut s = base.clone();
    let mut over = s.segs[3].clone();
    over.tcp.as_mut().unwrap().seq = 101 + 3;
    over.payload = b"defghi".to_vec();
    s.segs.push(over.clone());
    let (c, _, flows) = streams(&s.segs);
    assert_eq!(c, b"abcdefghi");
    assert_eq!(flows.tcp[0].to_server.conflicts, 0);
    // The same overlap with different old bytes: the first copy wins and the conflict is counted.
    let mut s = base;
    over.payload = b"XYZghi".to_vec();
    s.segs.push(over);
    let (c, _, flows) = streams(&s.segs);
    assert_eq!(c, b"abcdefghi");
    assert_eq!(flows.tcp[0].to_server.conflicts, 1);
}

#[test]
fn syn_fin_rst_are_recorded_and_a_reused_port_pair_is_a_new_connection() {
    let a = Script::new(addr("10.0.0.1:1"), addr("10.0.0.2:2"), 1, 2).handshake().client(b"x").rst(false);
    let mut b = Script::new(addr("10.0.0.1:1"), addr("10.0.0.2:2"), 9000, 9500).handshake().client(b"yy").fin(true);
    let mut segs = a.segs;
    segs.append(&mut b.segs);
    let cap = read_capture(&pcap(Link::Ethernet, &segs)).unwrap();
    let flows = reassemble(&cap.packets);
    assert_eq!(flows.tcp.len(), 2);
    assert_eq!(flows.tcp[0].to_server.data, b"x");
    assert_eq!(flows.tcp[0].to_client.rst.map(|m| m.packet), Some(5));
    assert_eq!(flows.tcp[1].to_server.data, b"yy");
    assert_eq!(flows.tcp[1].to_server.fin.map(|m| (m.packet, m.offset)), Some((10, 2)));
    assert!(!flows.tcp[1].client_guessed && !flows.tcp[1].to_server.mid_flow);
}

#[test]
fn a_capture_that_starts_mid_flow_starts_at_the_first_byte_it_has() {
    let s = connect_script("127.0.0.1:40000", "127.0.0.1:1080");
    // Drop the handshake and the greeting/method: the capture begins at the request.
    let segs: Vec<Seg> = s.segs[7..].to_vec();
    let cap = read_capture(&pcap(Link::Sll, &segs)).unwrap();
    let flows = reassemble(&cap.packets);
    assert!(flows.tcp[0].to_client.mid_flow && flows.tcp[0].client_guessed);
    assert_eq!(flows.tcp[0].to_server.data, b"ping");
    // The server side's first packet carries "pong": no SOCKS greeting, so it is not a conversation.
    let d = dissect_bytes(&pcap(Link::Sll, &segs)).unwrap();
    assert!(d.conversations.is_empty());
    assert_eq!(d.other_flows.len(), 1);
}

#[test]
fn a_missing_segment_is_a_gap_and_decoding_stops_there() {
    let mut s = connect_script("127.0.0.1:40000", "127.0.0.1:1080").segs;
    s.remove(5); // the client's request
    let bytes = pcap(Link::Raw, &s);
    let flows = reassemble(&read_capture(&bytes).unwrap().packets);
    assert_eq!(flows.tcp[0].to_server.gaps, vec![(3, 10)]);
    let d = dissect_bytes(&bytes).unwrap();
    let text = d.to_text();
    assert!(text.contains("client stream: 10 bytes never captured at offset 3"), "{text}");
    assert!(!text.contains("request cmd"), "{text}");
}

#[test]
fn truncated_and_corrupt_files_name_the_packet() {
    let segs = connect_script("127.0.0.1:40000", "127.0.0.1:1080").segs;
    for bytes in [pcap(Link::Ethernet, &segs), pcapng(Link::Ethernet, &segs, false)] {
        let cap = read_capture(&bytes).unwrap();
        assert_eq!(cap.total, 11);
        // Cut inside the last packet, then somewhere in the middle.
        match read_capture(&bytes[..bytes.len() - 3]) {
            Err(CaptureError::Packet { packet: 11, what }) => assert!(what.contains("ends inside"), "{what}"),
            other => panic!("{other:?}"),
        }
        match read_capture(&bytes[..bytes.len() / 2]) {
            Err(CaptureError::Packet { packet, what }) => {
                assert!((2..11).contains(&packet) && what.contains("ends inside"), "{packet} {what}")
            }
            other => panic!("{other:?}"),
        }
    }
    // A packet whose IP header is garbage.
    let mut seg = segs[0].clone();
    seg.payload = vec![];
    let mut bytes = pcap(Link::Raw, &[seg.clone(), seg]);
    let n = bytes.len();
    bytes[n - 40] = 0x47; // version 4, IHL 7: the header claims options the packet lacks
    bytes[n - 39..n - 20].fill(0xff);
    match read_capture(&bytes) {
        Err(CaptureError::Packet { packet: 2, what }) => assert!(!what.is_empty()),
        other => panic!("{other:?}"),
    }
    assert!(matches!(read_capture(b"hello world"), Err(CaptureError::UnknownFormat(_))));
    assert!(matches!(read_capture(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0]), Err(CaptureError::Header(_))));
    assert!(matches!(read_capture(b""), Err(CaptureError::UnknownFormat(_))));
}

#[test]
fn udp_associate_datagrams_are_matched_to_the_association_and_strays_reported() {
    let relay = addr("127.0.0.1:1081");
    let cudp = addr("127.0.0.1:45000");
    let dg = [&[0u8, 0, 0, 1, 127, 0, 0, 1, 0, 53][..], b"query"].concat();
    let s = no_auth(addr("127.0.0.1:40000"), addr("127.0.0.1:1080"))
        .client(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0])
        .server(&[5, 0, 0, 1, 127, 0, 0, 1, 0x04, 0x39])
        .udp(cudp, relay, &dg)
        .udp(relay, cudp, &dg)
        .udp(addr("127.0.0.1:46000"), addr("127.0.0.1:1080"), &dg);
    let d = dissect_bytes(&pcap(Link::Ethernet, &s.segs)).unwrap();
    let text = d.to_text();
    assert!(text.contains("C>R udp from=127.0.0.1:45000 rsv=0000 frag=0 addr=127.0.0.1:53 data=\"query\""), "{text}");
    assert!(text.contains("R>C udp to=127.0.0.1:45000"), "{text}");
    assert_eq!(d.unmatched.len(), 1, "{text}");
    assert!(d.unmatched[0].what.contains("bypass"));
}

#[test]
fn anomalies_bytes_after_failure_pipelining_and_bad_replies() {
    // Pipelined greeting+request before the method selection; server fails and then sends more.
    let s = Script::new(addr("127.0.0.1:40000"), addr("127.0.0.1:1080"), 1, 2)
        .handshake()
        .client(&[GREETING, REQUEST].concat())
        .server(METHOD)
        .server(&[5, 5, 1, 1, 0, 0, 0, 0, 0, 0])
        .server(b"junk");
    let d = dissect_bytes(&pcap(Link::Raw, &s.segs)).unwrap();
    let text = d.to_text();
    for want in [
        "pipelined: client sent 10 bytes before the method selection",
        "reply rep=CONNECTION_REFUSED(0x05) bnd=0.0.0.0:0 rsv=01",
        "reply RSV is 01, RFC 1928 says 00",
        "server sent 4 bytes after the failure reply",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // A method the client did not offer.
    let s =
        Script::new(addr("127.0.0.1:40000"), addr("127.0.0.1:1080"), 1, 2).handshake().client(GREETING).server(&[5, 2]);
    let text = dissect_bytes(&pcap(Link::Raw, &s.segs)).unwrap().to_text();
    assert!(text.contains("server selected USER_PASS(0x02), which the client did not offer"), "{text}");
}

#[test]
fn socks4_bind_userpass_tls_mbind_and_udptun_are_decoded() {
    let c = addr("127.0.0.1:40000");
    let srv = addr("127.0.0.1:1080");
    let cases: Vec<(Script, &[&str])> = vec![
        (
            Script::new(c, srv, 1, 2)
                .handshake()
                .client(&[4, 2, 0, 80, 127, 0, 0, 1, b'u', 0])
                .server(&[0, 0x5a, 0x30, 0x39, 127, 0, 0, 1])
                .server(&[0, 0x5a, 0x30, 0x39, 127, 0, 0, 1]),
            &[
                "socks4 request cmd=BIND(0x02) port=80 ip=127.0.0.1 userid=\"u\"",
                "socks4 second reply vn=0 cd=GRANTED(0x5a) port=12345",
            ],
        ),
        (
            user_pass(c, srv).client(&[1, 1, b'a', 2, b'p', b'w']).server(&[1, 1]),
            &["auth request user=\"a\" pass=<2 bytes>", "auth reply status=01 (failure)"],
        ),
        (
            Script::new(c, srv, 1, 2)
                .handshake()
                .client(&[5, 2, 0x80, 0x82])
                .server(&[5, 0x80])
                .client(&[0x16, 3, 1, 0, 5]),
            &["method method=TLS(0x80)", "tls follows client_bytes=5 server_bytes=0"],
        ),
        (
            no_auth(c, srv)
                .client(&[5, 0xf2, 0, 1, 0, 0, 0, 0, 0x1f, 0x90])
                .server(&[5, 0, 0, 1, 127, 0, 0, 1, 0x1f, 0x90])
                .server(&[1, 0, 0, 0, 3, 0, 0, 0, 1, 2, 2, 0, 3, 0, 0, 0, b'h', b'i']),
            &[
                "request cmd=MUX_BIND(0xf2)",
                "smux ver=1 cmd=SYN sid=3 len=0",
                "smux ver=1 cmd=PSH sid=3 len=2 data=\"hi\"",
            ],
        ),
        (
            no_auth(c, srv)
                .client(&[5, 0xf3, 0, 1, 0, 0, 0, 0, 0, 0])
                .server(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 0])
                .client(&[0, 2, 0xff, 1, 127, 0, 0, 1, 0, 53, b'h', b'i']),
            &["request cmd=UDP_TUN(0xf3)", "udp-tun len=2 frag=ff addr=127.0.0.1:53 data=\"hi\""],
        ),
    ];
    for (script, wants) in cases {
        let text = dissect_bytes(&pcap(Link::Raw, &script.segs)).unwrap().to_text();
        for w in wants {
            assert!(text.contains(w), "missing {w:?} in\n{text}");
        }
    }
}

#[test]
fn tcpdump_pcap_converts_to_pcapng_with_the_same_packets() {
    let segs = connect_script("127.0.0.1:40000", "127.0.0.1:1080").segs;
    let classic = pcap(Link::Ethernet, &segs);
    let ng = super::synth::pcap_to_pcapng(&classic).unwrap();
    let (a, b) = (read_capture(&classic).unwrap(), read_capture(&ng).unwrap());
    assert_eq!(b.format, Format::PcapNg);
    assert_eq!(a.packets, b.packets);
    assert!(super::synth::pcap_to_pcapng(&classic[..classic.len() - 2]).is_err());
}

#[test]
fn a_conversation_becomes_a_scenario_that_loads_with_templated_fields() {
    let dir = tempfile::tempdir().unwrap();
    let scenarios = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let reqs = crate::coverage::Requirements::load(&scenarios.join("requirements.yaml")).unwrap();
    let cases: Vec<(Script, &[&str], &[&str])> = vec![
        (
            connect_script("127.0.0.1:40000", "127.0.0.1:1080"),
            // "ping" and "pong" are not an XOR echo of each other: the data is left out.
            &["send: \"05 01 00 01 {target.addr} {target.port}\"", "expect: \"05 00 00 {bnd:addr}\""],
            &["ping", "70696e67"],
        ),
        (
            user_pass(addr("127.0.0.1:40000"), addr("127.0.0.1:1080"))
                .client(&[1, 1, b'a', 1, b'b'])
                .server(&[1, 0])
                .client(&[5, 1, 0, 3, 1, b'h', 0, 80])
                .server(REPLY)
                .client(b"hi")
                .server(&[b'h' ^ 0xa5, b'i' ^ 0xa5]),
            &[
                "send: \"01 {user.len} {user} {pass.len} {pass}\"",
                "send: \"05 01 00 03 {target.name.len} {target.name} {target.port}\"",
                "expect: \"xor(6869)\"",
                "method: userpass",
            ],
            &[],
        ),
        (
            user_pass(addr("127.0.0.1:40000"), addr("127.0.0.1:1080"))
                .client(&[1, 1, b'a', 1, b'b'])
                .server(&[1, 1])
                .fin(false),
            // Refused credentials stay as captured, and the close after the failure is expected.
            &["send: \"0101610162\"", "expect: \"0101\"", "expect_close: {}"],
            &["{user}"],
        ),
    ];
    for (i, (script, wants, absent)) in cases.into_iter().enumerate() {
        let d = dissect_bytes(&pcap(Link::Raw, &script.segs)).unwrap();
        let imp = super::scenario::to_scenario(&d.conversations[0], &format!("captured.test.{i}"), "test").unwrap();
        for w in wants {
            assert!(imp.yaml.contains(w), "case {i}: missing {w:?} in\n{}", imp.yaml);
        }
        for a in absent {
            assert!(!imp.yaml.contains(a), "case {i}: unexpected {a:?} in\n{}", imp.yaml);
        }
        let path = dir.path().join(format!("{i}.yaml"));
        std::fs::write(&path, &imp.yaml).unwrap();
        crate::scenario::Scenario::load_with(&path, &reqs).unwrap_or_else(|e| panic!("case {i}: {e}\n{}", imp.yaml));
    }
}
