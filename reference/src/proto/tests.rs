//! Table tests for the codec: exact bytes from the RFCs, every strict prefix is incomplete,
//! encode→decode round trips, and every malformed form gives a typed error.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rstest::rstest;

use super::auth::{UserPassReply, UserPassRequest};
use super::client::{ClientError, ClientEvent, ClientHandshake, ClientRequest};
use super::server::{HandshakeConfig, HandshakeFailure, ServerEvent, ServerHandshake};
use super::udp::UdpHeader;
use super::v4::{Socks4ReplyMsg, Socks4Request};
use super::v5::{Greeting, MethodSelection, ReplyMsg, Request};
use super::*;

/// Decodes `hex` with `decode`, checks it consumes exactly the message, that every strict prefix
/// is `Incomplete`, that trailing bytes are left alone, and that re-encoding gives the same bytes.
fn check<T: std::fmt::Debug + PartialEq>(
    hex: &str,
    decode: impl Fn(&[u8]) -> Decoded<T>,
    encode: impl Fn(&T) -> Vec<u8>,
    expect: T,
) {
    let bytes = unhex(hex);
    for cut in 0..bytes.len() {
        assert_eq!(decode(&bytes[..cut]), Err(DecodeError::Incomplete), "prefix of {cut} bytes of {hex}");
    }
    let (msg, n) = decode(&bytes).expect("valid message");
    assert_eq!(n, bytes.len());
    assert_eq!(msg, expect);
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"PAYLOAD");
    assert_eq!(decode(&longer).map(|(_, n)| n), Ok(bytes.len()), "never reads past the message");
    assert_eq!(encode(&msg), bytes, "round trip");
}

use testkit::hex::decode as unhex;

fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> Address {
    Address { host: Host::Ip(IpAddr::V4(Ipv4Addr::new(a, b, c, d))), port }
}

#[rstest]
#[case::no_auth("05 01 00", &[0x00])]
#[case::no_auth_and_userpass("05 02 00 02", &[0x00, 0x02])]
#[case::gost_offer("05 04 00 02 80 82", &[0x00, 0x02, 0x80, 0x82])]
#[case::nmethods_zero("05 00", &[])]
#[case::duplicates_and_ff("05 04 ff 00 00 ff", &[0xff, 0x00, 0x00, 0xff])]
fn greeting(#[case] hex: &str, #[case] methods: &[u8]) {
    let expect = Greeting { methods: methods.iter().copied().map(Method).collect() };
    check(hex, Greeting::decode, |g| enc(|o| g.encode(o)), expect);
}

fn enc(f: impl FnOnce(&mut Vec<u8>) -> Result<(), ProtoError>) -> Vec<u8> {
    let mut v = Vec::new();
    f(&mut v).expect("encodes");
    v
}

#[rstest]
#[case::selected("05 02", Method::USER_PASS)]
#[case::none_acceptable("05 ff", Method::NO_ACCEPTABLE)]
#[case::unknown_kept("05 7f", Method(0x7f))]
fn method_selection(#[case] hex: &str, #[case] method: Method) {
    check(
        hex,
        MethodSelection::decode,
        |m| {
            enc(|o| {
                m.encode(o);
                Ok(())
            })
        },
        MethodSelection { method },
    );
}

#[rstest]
#[case::connect_ipv4("05 01 00 01 7f000001 0050", Command::CONNECT, v4(127, 0, 0, 1, 80))]
#[case::connect_domain(
    "05 01 00 03 0b 6578616d706c652e636f6d 01bb",
    Command::CONNECT,
    Address::domain("example.com", 443).unwrap()
)]
#[case::connect_ipv6(
    "05 01 00 04 00000000000000000000000000000001 1f90",
    Command::CONNECT,
    Address { host: Host::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)), port: 8080 }
)]
#[case::bind("05 02 00 01 0a000001 0015", Command::BIND, v4(10, 0, 0, 1, 21))]
#[case::udp_zero("05 03 00 01 00000000 0000", Command::UDP_ASSOCIATE, v4(0, 0, 0, 0, 0))]
#[case::gost_mbind("05 f2 00 01 00000000 0000", Command::MUX_BIND, v4(0, 0, 0, 0, 0))]
#[case::unknown_command_kept("05 7e 00 01 01020304 0001", Command(0x7e), v4(1, 2, 3, 4, 1))]
#[case::empty_domain("05 01 00 03 00 0050", Command::CONNECT, Address::domain("", 80).unwrap())]
fn request(#[case] hex: &str, #[case] command: Command, #[case] address: Address) {
    check(hex, Request::decode, |r| enc(|o| r.encode(o)), Request { command, reserved: 0, address });
}

#[rstest]
#[case::success_ipv4("05 00 00 01 7f000001 1f90", Reply::SUCCEEDED, v4(127, 0, 0, 1, 8080))]
#[case::refused("05 05 00 01 00000000 0000", Reply::CONNECTION_REFUSED, Address::UNSPECIFIED)]
#[case::domain_bnd_len0("05 00 00 03 00 0050", Reply::SUCCEEDED, Address::domain("", 80).unwrap())]
#[case::domain_bnd_len255(
    &format!("05 00 00 03 ff {} 0050", "61".repeat(255)),
    Reply::SUCCEEDED,
    Address::domain(vec![b'a'; 255], 80).unwrap()
)]
fn reply_msg(#[case] hex: &str, #[case] reply: Reply, #[case] address: Address) {
    check(hex, ReplyMsg::decode, |r| enc(|o| r.encode(o)), ReplyMsg::new(reply, address));
}

#[rstest]
#[case::user_a_pass_b("01 01 61 01 62", b"a", b"b")]
#[case::empty_fields("01 00 00", b"", b"")]
#[case::max_fields(&format!("01 ff {} ff {}", "75".repeat(255), "70".repeat(255)), &[b'u'; 255], &[b'p'; 255])]
fn userpass(#[case] hex: &str, #[case] user: &[u8], #[case] pass: &[u8]) {
    let expect = UserPassRequest { user: user.to_vec(), pass: pass.to_vec() };
    check(hex, UserPassRequest::decode, |r| enc(|o| r.encode(o)), expect);
}

#[rstest]
#[case::ok("01 00", 0)]
#[case::fail("01 01", 1)]
fn userpass_reply(#[case] hex: &str, #[case] status: u8) {
    check(
        hex,
        UserPassReply::decode,
        |r| {
            enc(|o| {
                r.encode(o);
                Ok(())
            })
        },
        UserPassReply { status },
    );
}

#[rstest]
#[case::connect_empty_user("04 01 0050 7f000001 00", 1, 80, [127, 0, 0, 1], b"", None)]
#[case::connect_with_user("04 01 0050 c0a80001 62 6f 62 00", 1, 80, [192, 168, 0, 1], b"bob", None)]
#[case::bind("04 02 0015 0a000001 00", 2, 21, [10, 0, 0, 1], b"", None)]
#[case::socks4a("04 01 0050 00000001 00 6578616d706c652e636f6d 00", 1, 80, [0, 0, 0, 1], b"", Some(&b"example.com"[..]))]
#[case::socks4a_x255("04 01 0050 000000ff 75 00 68 00", 1, 80, [0, 0, 0, 255], b"u", Some(&b"h"[..]))]
#[case::not_4a_when_0000("04 01 0050 00000000 00", 1, 80, [0, 0, 0, 0], b"", None)]
#[case::not_4a_when_first_octet_only("04 01 0050 00000100 00", 1, 80, [0, 0, 1, 0], b"", None)]
fn socks4_request(
    #[case] hex: &str,
    #[case] cd: u8,
    #[case] port: u16,
    #[case] ip: [u8; 4],
    #[case] user: &[u8],
    #[case] host: Option<&[u8]>,
) {
    let expect = Socks4Request {
        command: Socks4Command(cd),
        port,
        ip: Ipv4Addr::from(ip),
        user_id: user.to_vec(),
        hostname: host.map(<[u8]>::to_vec),
    };
    check(hex, |b| Socks4Request::decode(b, 255), |r| enc(|o| r.encode(o)), expect);
}

#[rstest]
#[case::granted("00 5a 0050 7f000001", Socks4Reply::GRANTED, 80, [127, 0, 0, 1])]
#[case::rejected("00 5b 0000 00000000", Socks4Reply::REJECTED, 0, [0, 0, 0, 0])]
fn socks4_reply(#[case] hex: &str, #[case] code: Socks4Reply, #[case] port: u16, #[case] ip: [u8; 4]) {
    let expect = Socks4ReplyMsg { code, port, ip: Ipv4Addr::from(ip) };
    check(
        hex,
        Socks4ReplyMsg::decode,
        |r| {
            enc(|o| {
                r.encode(o);
                Ok(())
            })
        },
        expect,
    );
}

#[test]
fn socks4_reply_accepts_vn_4_d08() {
    assert!(Socks4ReplyMsg::decode(&unhex("04 5a 0000 00000000")).is_ok());
}

#[rstest]
#[case::greeting_v4(Greeting::decode(&unhex("04 01 00")).map(drop), ProtoError::BadVersion { expected: 5, got: 4 })]
#[case::selection_v4(MethodSelection::decode(&unhex("04 00")).map(drop), ProtoError::BadVersion { expected: 5, got: 4 })]
#[case::request_bad_atyp(
    Request::decode(&unhex("05 01 00 05 00")).map(drop),
    ProtoError::UnsupportedAddrType(AddrType(5))
)]
#[case::request_v4(Request::decode(&unhex("04 01 00 01")).map(drop), ProtoError::BadVersion { expected: 5, got: 4 })]
#[case::reply_bad_atyp(ReplyMsg::decode(&unhex("05 00 00 02")).map(drop), ProtoError::UnsupportedAddrType(AddrType(2)))]
#[case::auth_bad_version(
    UserPassRequest::decode(&unhex("05 01 61 01 62")).map(drop),
    ProtoError::BadVersion { expected: 1, got: 5 }
)]
#[case::auth_reply_v5(UserPassReply::decode(&unhex("05 00")).map(drop), ProtoError::BadVersion { expected: 1, got: 5 })]
#[case::socks4_long_userid(
    Socks4Request::decode(&[&unhex("04 01 0050 7f000001")[..], &[0x41; 256]].concat(), 255).map(drop),
    ProtoError::FieldTooLong { field: "USERID", max: 255 }
)]
#[case::socks4a_long_hostname(
    Socks4Request::decode(&[&unhex("04 01 0050 00000001 00")[..], &[0x41; 300]].concat(), 255).map(drop),
    ProtoError::FieldTooLong { field: "HOSTNAME", max: 255 }
)]
#[case::socks4_reply_bad_vn(
    Socks4ReplyMsg::decode(&unhex("05 5a 0000 00000000")).map(drop),
    ProtoError::BadVersion { expected: 0, got: 5 }
)]
fn malformed(#[case] got: Result<(), DecodeError>, #[case] expect: ProtoError) {
    assert_eq!(got, Err(DecodeError::Invalid(expect)));
}

#[test]
fn socks4_userid_of_exactly_255_parses_and_256_without_nul_is_invalid_not_incomplete() {
    let ok = [&unhex("04 01 0050 7f000001")[..], &[0x41; 255], &[0]].concat();
    assert!(Socks4Request::decode(&ok, 255).is_ok());
    let over = [&unhex("04 01 0050 7f000001")[..], &[0x41; 256]].concat();
    assert!(matches!(Socks4Request::decode(&over, 255), Err(DecodeError::Invalid(_))));
}

#[rstest]
#[case::long_domain(Address::domain(vec![b'a'; 256], 80).map(drop), ProtoError::FieldTooLong { field: "DOMAINNAME", max: 255 })]
#[case::long_user(
    UserPassRequest { user: vec![1; 256], pass: vec![] }.encode(&mut Vec::new()),
    ProtoError::FieldTooLong { field: "UNAME", max: 255 }
)]
#[case::long_pass(
    UserPassRequest { user: vec![], pass: vec![1; 256] }.encode(&mut Vec::new()),
    ProtoError::FieldTooLong { field: "PASSWD", max: 255 }
)]
#[case::nul_in_userid(
    Socks4Request { command: Socks4Command::CONNECT, port: 1, ip: Ipv4Addr::LOCALHOST, user_id: b"a\0b".to_vec(), hostname: None }.encode(&mut Vec::new()),
    ProtoError::EmbeddedNul { field: "USERID" }
)]
fn encode_refuses_what_the_wire_cannot_carry(#[case] got: Result<(), ProtoError>, #[case] expect: ProtoError) {
    assert_eq!(got, Err(expect));
}

#[rstest]
#[case::ipv4("0000 00 01 7f000001 0035 68656c6c6f", 0, v4(127, 0, 0, 1, 53), b"hello")]
#[case::domain("0000 00 03 01 61 0035 ", 0, Address::domain("a", 53).unwrap(), b"")]
#[case::frag("0000 01 01 7f000001 0035 00", 1, v4(127, 0, 0, 1, 53), b"\0")]
fn udp_header(#[case] hex: &str, #[case] frag: u8, #[case] address: Address, #[case] payload: &[u8]) {
    let bytes = unhex(hex);
    let (h, off) = UdpHeader::decode(&bytes).unwrap();
    assert_eq!(h, UdpHeader { reserved: 0, frag, address });
    assert_eq!(&bytes[off..], payload);
    assert_eq!(off, h.encoded_len());
    let mut out = Vec::new();
    h.encode(&mut out).unwrap();
    assert_eq!(out, &bytes[..off]);
    for cut in 0..off {
        assert_eq!(UdpHeader::decode(&bytes[..cut]), Err(ProtoError::Truncated));
    }
}

#[test]
fn udp_header_ipv6_overhead_is_22_bytes_d11() {
    let h = UdpHeader::new(Address { host: Host::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)), port: 1 });
    assert_eq!(h.encoded_len(), 22);
}

#[test]
fn decoders_never_panic_on_arbitrary_bytes() {
    // A cheap deterministic sweep; the libFuzzer targets in fuzz/ (checks in proto::fuzzing,
    // run with `cargo xtask fuzz`) go further.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..20_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 40) as usize;
        let bytes: Vec<u8> = (0..len).map(|i| (seed >> (i % 8 * 8)) as u8 ^ i as u8).collect();
        let _ = Greeting::decode(&bytes);
        let _ = Request::decode(&bytes);
        let _ = ReplyMsg::decode(&bytes);
        let _ = UserPassRequest::decode(&bytes);
        let _ = Socks4Request::decode(&bytes, 8);
        let _ = UdpHeader::decode(&bytes);
        let mut hs = ServerHandshake::new(HandshakeConfig::default());
        hs.handle_input(&bytes);
    }
}

// ---- server state machine ----

/// Feeds `input` to a fresh server machine and returns (bytes consumed, bytes transmitted,
/// events), answering any authentication with `password_ok`.
fn serve(config: HandshakeConfig, input: &str, password_ok: bool) -> (usize, String, Vec<ServerEvent>) {
    let input = unhex(input);
    let mut hs = ServerHandshake::new(config);
    let mut used = 0;
    let mut out = Vec::new();
    let mut events = Vec::new();
    loop {
        let n = hs.handle_input(&input[used..]);
        used += n;
        let mut progressed = n > 0;
        while let Some(ev) = hs.poll_event() {
            progressed = true;
            if matches!(ev, ServerEvent::Authenticate(_)) {
                hs.auth_result(password_ok);
            }
            events.push(ev);
        }
        if let Some(t) = hs.poll_transmit() {
            out.extend(t);
        }
        if !progressed || hs.is_done() {
            break;
        }
    }
    let hex = out.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
    (used, hex, events)
}

fn auth_config() -> HandshakeConfig {
    HandshakeConfig { methods: vec![Method::USER_PASS], ..Default::default() }
}

#[test]
fn server_connect_leaves_optimistic_payload_unconsumed_d15() {
    let (used, out, ev) = serve(HandshakeConfig::default(), "05 01 00  05 01 00 01 7f000001 0050  474554", true);
    assert_eq!(used, 3 + 10);
    assert_eq!(out, "05 00");
    assert!(matches!(&ev[..], [ServerEvent::Request(r)] if r.target == v4(127,0,0,1,80) && r.version == Version::V5));
}

#[rstest]
#[case::only_noauth_offered_to_auth_server("05 01 00", "05 ff", HandshakeFailure::NoAcceptableMethod)]
#[case::nmethods_zero_r08("05 00", "05 ff", HandshakeFailure::NoAcceptableMethod)]
#[case::gssapi_only_d10("05 01 01", "05 ff", HandshakeFailure::NoAcceptableMethod)]
#[case::wrong_password_then_request_is_ignored_v02(
    "05 01 02 01 01 61 01 62 05 01 00 01 7f000001 0050",
    "05 02 01 01",
    HandshakeFailure::AuthFailed
)]
#[case::socks4_when_auth_required_r66(
    "04 01 0050 7f000001 00",
    "00 5b 00 00 00 00 00 00",
    HandshakeFailure::Refused(Reply::NOT_ALLOWED)
)]
fn server_auth_failures(#[case] input: &str, #[case] out: &str, #[case] why: HandshakeFailure) {
    let (_, got, ev) = serve(auth_config(), input, false);
    assert_eq!(got, out);
    assert_eq!(ev.last(), Some(&ServerEvent::Failed(why)));
}

#[test]
fn server_prefers_configured_order_d17() {
    let (_, out, ev) = serve(auth_config(), "05 02 00 02 01 01 61 01 62 05 01 00 01 7f000001 0050", true);
    assert_eq!(out, "05 02 01 00");
    assert!(matches!(&ev[1], ServerEvent::Request(r) if r.user.as_deref() == Some(&b"a"[..])));
}

#[rstest]
#[case::rsv_nonzero_d14("05 01 00 05 01 01 01 7f000001 0050", "05 00 05 01 00 01 00 00 00 00 00 00")]
#[case::bad_atyp_d05("05 01 00 05 01 00 09 7f000001 0050", "05 00 05 08 00 01 00 00 00 00 00 00")]
#[case::empty_domain_d03("05 01 00 05 01 00 03 00 0050", "05 00 05 04 00 01 00 00 00 00 00 00")]
#[case::request_version_4_r23("05 01 00 04 01 00 01 7f000001 0050", "05 00 05 01 00 01 00 00 00 00 00 00")]
#[case::socks4_bad_cd_r71("04 03 0050 7f000001 00", "00 5b 00 00 00 00 00 00")]
#[case::socks4a_empty_host("04 01 0050 00000001 00 00", "00 5b 00 00 00 00 00 00")]
fn server_refusals_in_handshake(#[case] input: &str, #[case] out: &str) {
    let (_, got, ev) = serve(HandshakeConfig::default(), input, true);
    assert_eq!(got, out);
    assert!(matches!(ev.last(), Some(ServerEvent::Failed(_))));
}

#[rstest]
#[case::not_a_socks_version("47 45 54 20")]
#[case::auth_before_negotiation_r14("01 02 6d 65 02 6d 65")]
#[case::tls_record("16 03 01 00")]
fn server_closes_silently_on_foreign_protocols(#[case] input: &str) {
    let (_, got, ev) = serve(HandshakeConfig::default(), input, true);
    assert_eq!(got, "");
    assert!(matches!(ev[..], [ServerEvent::Failed(HandshakeFailure::UnsupportedVersion(_))]));
}

#[test]
fn server_socks4a_request() {
    let (used, out, ev) = serve(HandshakeConfig::default(), "04 01 0050 00000007 61 00 6c 6f 00 ff", true);
    assert_eq!(used, 8 + 2 + 3);
    assert_eq!(out, "");
    let ServerEvent::Request(r) = &ev[0] else { panic!("{ev:?}") };
    assert_eq!((r.version, &r.target), (Version::V4a, &Address::domain("lo", 80).unwrap()));
}

#[test]
fn server_one_byte_at_a_time_matches_one_write_r01() {
    let input = unhex("05 02 00 02 01 01 61 01 62 05 01 00 03 02 6c 6f 0050");
    let mut hs = ServerHandshake::new(auth_config());
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut request = None;
    for b in input {
        buf.push(b);
        let n = hs.handle_input(&buf);
        buf.drain(..n);
        while let Some(ev) = hs.poll_event() {
            match ev {
                ServerEvent::Authenticate(c) => hs.auth_result(c.user == b"a" && c.pass == b"b"),
                ServerEvent::Request(r) => request = Some(r),
                other => panic!("{other:?}"),
            }
        }
        out.extend(hs.poll_transmit().unwrap_or_default());
    }
    assert_eq!(out, unhex("05 02 01 00"));
    assert_eq!(request.unwrap().target, Address::domain("lo", 80).unwrap());
    assert!(buf.is_empty());
}

#[test]
fn every_socks5_reply_is_ten_bytes_on_failure_and_socks4_eight_r34() {
    for rep in 1..=8u8 {
        assert_eq!(encode_reply(Version::V5, Reply(rep), &Address::UNSPECIFIED).len(), 10);
        assert_eq!(encode_reply(Version::V4, Reply(rep), &v4(1, 2, 3, 4, 5)), unhex("00 5b 0000 00000000"));
    }
    assert_eq!(encode_reply(Version::V4a, Reply::SUCCEEDED, &v4(1, 2, 3, 4, 5)), unhex("00 5a 0005 01020304"));
}

// ---- client state machine ----

fn client(version: Version, target: Address, creds: Option<(&str, &str)>) -> Result<ClientHandshake, ClientError> {
    ClientHandshake::new(ClientRequest {
        version,
        command: Command::CONNECT,
        target,
        credentials: creds.map(|(u, p)| (u.as_bytes().to_vec(), p.as_bytes().to_vec())),
        extra_methods: vec![],
    })
}

#[test]
fn client_sends_credentials_only_after_02_is_selected_c08() {
    let mut c = client(Version::V5, v4(127, 0, 0, 1, 80), Some(("a", "b"))).unwrap();
    assert_eq!(c.poll_transmit().unwrap(), unhex("05 02 00 02"));
    assert_eq!(c.handle_input(&unhex("05 02")), Ok(2));
    assert_eq!(c.poll_transmit().unwrap(), unhex("01 01 61 01 62"));
    assert_eq!(c.handle_input(&unhex("01 00")), Ok(2));
    assert_eq!(c.poll_transmit().unwrap(), unhex("05 01 00 01 7f000001 0050"));
    // The reply's own ATYP decides its length (C-03), and a trailing banner is not consumed.
    assert_eq!(c.handle_input(&unhex("05 00 00 03 00 0050 48 49")), Ok(7));
    assert_eq!(c.poll_event(), Some(ClientEvent::Granted(Address::domain("", 80).unwrap())));
    assert!(c.is_done());
}

#[test]
fn client_refuses_names_over_255_bytes_before_sending_anything_c01_v28() {
    let long = Address { host: Host::Domain(vec![b'a'; 256]), port: 80 };
    assert!(matches!(client(Version::V5, long.clone(), None), Err(ClientError::Proto(_))));
    assert!(matches!(client(Version::V4a, long, None), Err(ClientError::Proto(_))));
    let user256 = "u".repeat(256);
    assert!(client(Version::V5, v4(1, 1, 1, 1, 1), Some((&user256, "p"))).is_err());
}

#[rstest]
#[case::rejected(
    "05 01 00 01 7f000001 0050",
    "05 00",
    "05 05 00 01 00000000 0000",
    ClientError::Rejected(Reply::CONNECTION_REFUSED)
)]
#[case::no_acceptable("05 01 00", "05 ff", "", ClientError::NoAcceptableMethod)]
#[case::unoffered_method("05 01 00", "05 02", "", ClientError::UnexpectedMethod(Method::USER_PASS))]
#[case::bad_selection_version("05 01 00", "04 00", "", ClientError::Proto(ProtoError::BadVersion { expected: 5, got: 4 }))]
fn client_failures(#[case] _greeting: &str, #[case] sel: &str, #[case] reply: &str, #[case] expect: ClientError) {
    let mut c = client(Version::V5, v4(127, 0, 0, 1, 80), None).unwrap();
    c.poll_transmit();
    let r = c.handle_input(&unhex(sel));
    let r = if reply.is_empty() { r } else { c.handle_input(&unhex(reply)) };
    assert_eq!(r, Err(expect));
}

#[test]
fn client_socks4_needs_ipv4_and_socks4a_sends_the_name_c09() {
    assert_eq!(client(Version::V4, Address::domain("x", 1).unwrap(), None).unwrap_err(), ClientError::NeedsIpv4);
    let mut c = client(Version::V4a, Address::domain("lo", 80).unwrap(), Some(("id", ""))).unwrap();
    assert_eq!(c.poll_transmit().unwrap(), unhex("04 01 0050 00000001 69 64 00 6c 6f 00"));
    assert_eq!(c.handle_input(&unhex("00 5b 0000 00000000")), Err(ClientError::Rejected4(Socks4Reply::REJECTED)));
}

#[test]
fn client_bind_yields_two_grants() {
    let mut c = ClientHandshake::new(ClientRequest {
        version: Version::V5,
        command: Command::BIND,
        target: v4(127, 0, 0, 2, 0),
        credentials: None,
        extra_methods: vec![],
    })
    .unwrap();
    c.poll_transmit();
    c.handle_input(&unhex("05 00")).unwrap();
    c.poll_transmit();
    let both = unhex("05 00 00 01 7f000001 1000 05 00 00 01 7f000002 2000");
    let n = c.handle_input(&both).unwrap();
    assert_eq!(c.poll_event(), Some(ClientEvent::Granted(v4(127, 0, 0, 1, 0x1000))));
    assert!(!c.is_done());
    c.handle_input(&both[n..]).unwrap();
    assert_eq!(c.poll_event(), Some(ClientEvent::Granted(v4(127, 0, 0, 2, 0x2000))));
    assert!(c.is_done());
}

/// gost's USERID filter (docs/gost-peer.md §1): the request waits for the driver's verdict;
/// accepted it goes on with its USERID, refused it gets exactly `00 5D`.
#[rstest]
#[case::accepted(true, "", true)]
#[case::refused(false, "00 5d 00 00 00 00 00 00", false)]
fn socks4_userid_check_waits_for_the_driver(#[case] ok: bool, #[case] out: &str, #[case] served: bool) {
    let mut hs = ServerHandshake::new(HandshakeConfig { socks4_userid_check: true, ..Default::default() });
    let input = unhex("04 01 0050 7f000001 61646d696e 00");
    assert_eq!(hs.handle_input(&input), input.len());
    assert_eq!(hs.poll_event(), Some(ServerEvent::CheckUserid(b"admin".to_vec())));
    assert!(!hs.is_done(), "nothing is decided before the verdict");
    hs.userid_result(ok);
    let ev = hs.poll_event().expect("an event after the verdict");
    if served {
        assert!(matches!(&ev, ServerEvent::Request(r) if r.user.as_deref() == Some(&b"admin"[..])), "{ev:?}");
        assert_eq!(hs.poll_transmit(), None);
    } else {
        assert_eq!(ev, ServerEvent::Failed(HandshakeFailure::UseridRejected));
        let hex = hs.poll_transmit().unwrap().iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
        assert_eq!(hex, out);
    }
}

#[rstest]
#[case::ipv4("01 7f000001 0050")]
#[case::ipv6("04 00000000000000000000000000000001 0050")]
#[case::domain("03 09 6c6f63616c686f7374 0050")]
#[case::empty_domain("03 00 0050")]
fn wire_len_is_known_from_the_first_octets_and_matches_decode(#[case] hex: &str) {
    let bytes = unhex(hex);
    let known_from = if bytes[0] == 0x03 { 2 } else { 1 };
    for cut in 0..known_from {
        assert_eq!(Address::wire_len(&bytes[..cut]), Ok(None), "{cut} octets of {hex}");
    }
    for cut in known_from..=bytes.len() {
        assert_eq!(Address::wire_len(&bytes[..cut]), Ok(Some(bytes.len())), "{cut} octets of {hex}");
    }
    let a = Address::decode_exact(&bytes).expect("one whole address");
    assert_eq!(a.to_bytes().unwrap(), bytes);
    assert_eq!(Address::decode_exact(&bytes[..bytes.len() - 1]), None, "short by one");
    let mut long = bytes.clone();
    long.push(0);
    assert_eq!(Address::decode_exact(&long), None, "one octet too many");
}

#[test]
fn wire_len_refuses_an_unknown_atyp_at_once() {
    assert_eq!(Address::wire_len(&[0x05]), Err(ProtoError::UnsupportedAddrType(AddrType(5))));
}

#[test]
fn smux_and_udp_tun_errors_are_typed_not_free_text() {
    use super::smux::{Frame, VERSION_1};
    use super::udptun::TunFrame;
    // VER 01, CMD 09 (no such command), LEN 0, SID 1.
    let unknown = Frame::decode(&unhex("01 09 0000 01000000"), VERSION_1).map(drop);
    assert_eq!(unknown, Err(DecodeError::Invalid(ProtoError::UnknownSmuxCommand(9))));
    // SYN (00) with a one-octet payload: SYN carries none.
    let syn = Frame::decode(&unhex("01 00 0100 01000000 ff"), VERSION_1).map(drop);
    assert_eq!(syn, Err(DecodeError::Invalid(ProtoError::SmuxLength { cmd: 0, len: 1 })));
    let mut out = Vec::new();
    assert_eq!(TunFrame::encode(&v4(127, 0, 0, 1, 53), b"", &mut out), Err(ProtoError::EmptyTunDatagram));
    assert!(out.is_empty(), "nothing is written for a refused frame");
    let bad4a = Socks4Request {
        command: Socks4Command::CONNECT,
        port: 80,
        ip: Ipv4Addr::new(1, 2, 3, 4),
        user_id: vec![],
        hostname: Some(b"example.org".to_vec()),
    };
    assert_eq!(bad4a.encode(&mut Vec::new()), Err(ProtoError::Socks4aWithoutMarker(Ipv4Addr::new(1, 2, 3, 4))));
}
