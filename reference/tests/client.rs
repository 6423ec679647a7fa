//! The client (`socksref::client`) and forwarders (`socksref::forward`) against real sockets on
//! loopback: a scriptable hostile server (C-13), in-process socksref servers, and Dante and
//! microsocks when installed (skipped with a note otherwise).

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socksref::client::{handshake, Chain, Error, Hop};
use socksref::proto::client::{ClientError, ClientRequest};
use socksref::proto::{Address, Command, Host, ProtoError, Reply, Socks4Reply, Version};
use socksref::server::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use common::hex;

// ---------------------------------------------------------------------------------------------
// A scriptable server: plays fixed steps on the first connection and records what it received.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Step {
    /// Read exactly this many bytes (stop the script on EOF).
    Read(usize),
    /// Write these bytes in one call.
    Write(Vec<u8>),
    /// Write these bytes one at a time with a pause between them.
    Drip(Vec<u8>),
    /// Pause.
    Sleep(u64),
    /// Close the connection now.
    Close,
}

struct Script {
    addr: SocketAddr,
    task: JoinHandle<Transcript>,
}

#[derive(Debug, Default)]
struct Transcript {
    /// Whether any client connected at all.
    connected: bool,
    /// Every byte received, in order, including after the script ended.
    received: Vec<u8>,
}

impl Script {
    async fn start(steps: Vec<Step>) -> Script {
        Self::start_within(steps, Duration::from_secs(2)).await
    }

    /// Like [`Script::start`], giving up on a client after `accept_within` (for tests that
    /// expect no connection at all).
    async fn start_within(steps: Vec<Step>, accept_within: Duration) -> Script {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut t = Transcript::default();
            let Ok(Ok((mut s, _))) = tokio::time::timeout(accept_within, l.accept()).await else {
                return t;
            };
            t.connected = true;
            for step in steps {
                match step {
                    Step::Read(n) => {
                        let mut b = vec![0; n];
                        if s.read_exact(&mut b).await.is_err() {
                            return t;
                        }
                        t.received.extend_from_slice(&b);
                    }
                    Step::Write(b) => {
                        let _ = s.write_all(&b).await;
                    }
                    Step::Drip(b) => {
                        for byte in b {
                            let _ = s.write_all(&[byte]).await;
                            tokio::time::sleep(Duration::from_millis(3)).await;
                        }
                    }
                    Step::Sleep(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                    Step::Close => return t,
                }
            }
            // Record whatever else arrives until the client closes (bounded).
            let mut b = [0u8; 4096];
            while let Ok(Ok(n @ 1..)) = tokio::time::timeout(Duration::from_millis(500), s.read(&mut b)).await {
                t.received.extend_from_slice(&b[..n]);
            }
            t
        });
        Script { addr, task }
    }

    async fn transcript(self) -> Transcript {
        tokio::time::timeout(Duration::from_secs(10), self.task).await.expect("script finished").unwrap()
    }
}

/// A SOCKS5 proxy's side up to the request: read the 3-octet greeting, select no
/// authentication (`05 00`), read the `request_len`-octet request; then `then`.
fn no_auth(request_len: usize, then: impl IntoIterator<Item = Step>) -> Vec<Step> {
    [Step::Read(3), Step::Write(hex("05 00")), Step::Read(request_len)].into_iter().chain(then).collect()
}

/// A chain of one hop with short deadlines, so failures show up fast.
fn one_hop(version: Version, proxy: SocketAddr) -> Chain {
    quick(vec![Hop::new(version, proxy.into())])
}

/// One SOCKS5 hop to `proxy` that offers user `user` with password `sekrit`.
fn with_password(proxy: SocketAddr) -> Chain {
    quick(vec![Hop::new(Version::V5, proxy.into()).with_credentials("user", "sekrit")])
}

fn quick(hops: Vec<Hop>) -> Chain {
    Chain { handshake_timeout: Duration::from_secs(2), connect_timeout: Duration::from_secs(2), ..Chain::new(hops) }
}

fn name(n: &str, port: u16) -> Address {
    Address::domain(n.as_bytes().to_vec(), port).unwrap()
}

fn req(version: Version, command: Command, target: Address) -> ClientRequest {
    ClientRequest { version, command, target, credentials: None, extra_methods: Vec::new() }
}

/// The greeting our client sends without credentials, and the request for `example.com:80`.
const GREETING: &str = "05 01 00";
const REQ_EXAMPLE: &str = "05 01 00 03 0b 6578616d706c652e636f6d 0050";
/// A SOCKS5 success reply with BND 0.0.0.0:0.
const GRANTED: &str = "05 00 00 01 00000000 0000";

fn root_proto(e: &Error) -> Option<&ClientError> {
    match e.root() {
        Error::Proto(p) => Some(p),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// C-13: hostile and odd servers.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn reply_delivered_one_byte_at_a_time_is_parsed_and_the_banner_after_it_is_kept() {
    let mut reply = hex("05 00 00 01 7f000001 1f90");
    reply.extend_from_slice(b"HELLO");
    let script = Script::start(vec![Step::Read(3), Step::Drip(hex("05 00")), Step::Read(18), Step::Drip(reply)]).await;
    let mut s = one_hop(Version::V5, script.addr).connect(&name("example.com", 80)).await.unwrap();
    let mut banner = [0u8; 5];
    s.read_exact(&mut banner).await.unwrap();
    assert_eq!(&banner, b"HELLO", "bytes after the reply must reach the caller");
    drop(s);
    let t = script.transcript().await;
    assert_eq!(t.received, [hex(GREETING), hex(REQ_EXAMPLE)].concat(), "remote DNS: the name is sent (C-01)");
}

#[tokio::test]
async fn reply_and_banner_in_one_segment_lose_nothing() {
    // The proxy's reply and the target's first bytes arrive together: the driver must not read
    // past the reply.
    let mut seg = hex("05 00 00 04 00000000000000000000000000000001 0050");
    seg.extend_from_slice(b"220 ready\r\n");
    let script = Script::start(no_auth(18, [Step::Write(seg)])).await;
    let mut s = script_stream(script.addr).await;
    let bnd = handshake(&mut s, req(Version::V5, Command::CONNECT, name("example.com", 80))).await.unwrap();
    assert_eq!(bnd, Address { host: Host::Ip(Ipv6Addr::LOCALHOST.into()), port: 80 });
    let mut banner = [0u8; 11];
    s.read_exact(&mut banner).await.unwrap();
    assert_eq!(&banner, b"220 ready\r\n");
}

async fn script_stream(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

#[tokio::test]
async fn domainname_bnd_of_every_length_is_consumed_exactly() {
    // V-30, V-31, D-03: LEN 0 to 255, parsed by the reply's own ATYP, and exactly 5+LEN+2 bytes
    // consumed (the byte after the reply is the caller's).
    for len in [0usize, 1, 2, 127, 128, 255] {
        let mut seg = vec![0x05, 0x00, 0x00, 0x03, len as u8];
        seg.extend(std::iter::repeat_n(b'a', len));
        seg.extend_from_slice(&[0x12, 0x34, b'!']);
        let script = Script::start(no_auth(10, [Step::Write(seg)])).await;
        let mut s = script_stream(script.addr).await;
        let target: Address = "127.0.0.1:9".parse::<SocketAddr>().unwrap().into();
        let bnd = handshake(&mut s, req(Version::V5, Command::CONNECT, target)).await.unwrap();
        assert_eq!(bnd, Address { host: Host::Domain(vec![b'a'; len]), port: 0x1234 }, "LEN {len}");
        let mut next = [0u8; 1];
        s.read_exact(&mut next).await.unwrap();
        assert_eq!(next, *b"!", "LEN {len}: the driver read past the reply");
    }
}

#[tokio::test]
async fn every_failure_rep_is_reported_as_such() {
    for rep in [1u8, 2, 3, 4, 5, 6, 7, 8, 9, 0x7f, 0xff] {
        let script = Script::start(no_auth(18, [Step::Write(vec![0x05, rep, 0x00, 0x01, 0, 0, 0, 0, 0, 0])])).await;
        let e = one_hop(Version::V5, script.addr).connect(&name("example.com", 80)).await.unwrap_err();
        assert_eq!(e.hop_index(), Some(0));
        assert_eq!(root_proto(&e), Some(&ClientError::Rejected(Reply(rep))), "REP {rep:#04x}: {e}");
    }
}

#[tokio::test]
async fn a_refusal_followed_by_eof_is_an_error_not_a_hang() {
    // C-06, V-25: REP≠00 then close after 2 bytes of the reply.
    let script = Script::start(no_auth(18, [Step::Write(hex("05 01")), Step::Close])).await;
    let started = Instant::now();
    let e = one_hop(Version::V5, script.addr).connect(&name("example.com", 80)).await.unwrap_err();
    assert!(matches!(e.root(), Error::Closed { received: 2 }), "{e}");
    assert!(started.elapsed() < Duration::from_secs(1), "must not wait for a deadline");
}

#[tokio::test]
async fn eof_at_every_point_of_the_exchange_is_an_error() {
    let full = hex("05 00 00 01 7f000001 0050");
    // EOF before the method selection, inside it, and at every offset of the reply.
    let mut cases: Vec<Vec<Step>> = vec![vec![Step::Read(3), Step::Close], vec![Step::Read(3), Step::Write(hex("05"))]];
    for cut in 0..full.len() {
        cases.push(no_auth(18, [Step::Write(full[..cut].to_vec()), Step::Close]));
    }
    for (i, mut steps) in cases.into_iter().enumerate() {
        if !matches!(steps.last(), Some(Step::Close)) {
            steps.push(Step::Close);
        }
        let script = Script::start(steps).await;
        let started = Instant::now();
        let e = one_hop(Version::V5, script.addr).connect(&name("example.com", 80)).await.unwrap_err();
        assert!(matches!(e.root(), Error::Closed { .. }), "case {i}: {e}");
        assert!(started.elapsed() < Duration::from_secs(1), "case {i}: waited for a deadline");
    }
}

#[tokio::test]
async fn wrong_version_bytes_are_rejected() {
    // C-04: method reply VER must be 05; the RFC 1929 reply VER must be 01; the reply VER 05.
    let cases: Vec<(Vec<Step>, bool, u8)> = vec![
        (vec![Step::Read(3), Step::Write(hex("04 00"))], false, 0x04),
        (vec![Step::Read(3), Step::Write(hex("00 00"))], false, 0x00),
        (vec![Step::Read(4), Step::Write(hex("05 02")), Step::Read(5), Step::Write(hex("05 00"))], true, 0x05),
        (no_auth(18, [Step::Write(hex("04 00 00 01 00000000 0000"))]), false, 0x04),
    ];
    for (i, (steps, creds, got)) in cases.into_iter().enumerate() {
        let script = Script::start(steps).await;
        let mut hop = Hop::new(Version::V5, script.addr.into());
        if creds {
            hop = hop.with_credentials("u", "p");
        }
        let e = quick(vec![hop]).connect(&name("example.com", 80)).await.unwrap_err();
        match root_proto(&e) {
            Some(ClientError::Proto(ProtoError::BadVersion { got: g, .. })) => assert_eq!(*g, got, "case {i}"),
            other => panic!("case {i}: expected a version error, got {other:?} ({e})"),
        }
    }
}

#[tokio::test]
async fn socks4_reply_version_0_and_4_are_accepted_and_5_is_not() {
    // D-08.
    for (vn, ok) in [(0u8, true), (4, true), (5, false)] {
        let script = Script::start(vec![Step::Read(9), Step::Write(vec![vn, 0x5a, 0, 80, 127, 0, 0, 1])]).await;
        let r = one_hop(Version::V4, script.addr).connect(&"127.0.0.1:80".parse::<SocketAddr>().unwrap().into()).await;
        assert_eq!(r.is_ok(), ok, "VN {vn}: {r:?}");
    }
    let script = Script::start(vec![Step::Read(9), Step::Write(hex("00 5b 0000 00000000"))]).await;
    let e = one_hop(Version::V4, script.addr).connect(&"127.0.0.1:80".parse::<SocketAddr>().unwrap().into()).await;
    assert_eq!(root_proto(&e.unwrap_err()), Some(&ClientError::Rejected4(Socks4Reply::REJECTED)));
}

#[tokio::test]
async fn unknown_reply_atyp_is_an_error() {
    let script = Script::start(no_auth(18, [Step::Write(hex("05 00 00 05 00000000 0000"))])).await;
    let e = one_hop(Version::V5, script.addr).connect(&name("example.com", 80)).await.unwrap_err();
    assert!(matches!(root_proto(&e), Some(ClientError::Proto(ProtoError::UnsupportedAddrType(_)))), "{e}");
}

#[tokio::test]
async fn method_selection_outside_the_offer_is_refused() {
    for (sel, expect) in [
        ("05 ff", ClientError::NoAcceptableMethod),
        ("05 02", ClientError::UnexpectedMethod(socksref::proto::Method::USER_PASS)),
        ("05 80", ClientError::UnexpectedMethod(socksref::proto::Method(0x80))),
    ] {
        let script = Script::start(vec![Step::Read(3), Step::Write(hex(sel))]).await;
        let e = one_hop(Version::V5, script.addr).connect(&name("example.com", 80)).await.unwrap_err();
        assert_eq!(root_proto(&e), Some(&expect), "{sel}");
        let t = script.transcript().await;
        assert_eq!(t.received, hex(GREETING), "{sel}: nothing may follow a refused selection");
    }
}

#[tokio::test]
async fn credentials_go_out_only_after_the_server_selects_02() {
    // C-08: offered 00 and 02, server picks 00: the password never leaves.
    let script =
        Script::start(vec![Step::Read(4), Step::Write(hex("05 00")), Step::Read(18), Step::Write(hex(GRANTED))]).await;
    drop(with_password(script.addr).connect(&name("example.com", 80)).await.unwrap());
    let t = script.transcript().await;
    assert_eq!(t.received, [hex("05 02 00 02"), hex(REQ_EXAMPLE)].concat());
    assert!(!t.received.windows(6).any(|w| w == b"sekrit"));

    // Server picks 02: RFC 1929 request, then the SOCKS request only after status 00.
    let script = Script::start(vec![
        Step::Read(4),
        Step::Write(hex("05 02")),
        Step::Read(13),
        Step::Sleep(50),
        Step::Write(hex("01 00")),
        Step::Read(18),
        Step::Write(hex(GRANTED)),
    ])
    .await;
    drop(with_password(script.addr).connect(&name("example.com", 80)).await.unwrap());
    let t = script.transcript().await;
    assert_eq!(
        t.received,
        [hex("05 02 00 02"), hex("01 04"), b"user".to_vec(), hex("06"), b"sekrit".to_vec(), hex(REQ_EXAMPLE)].concat()
    );

    // Status ≠ 00 is an authentication failure and no request follows.
    let script =
        Script::start(vec![Step::Read(4), Step::Write(hex("05 02")), Step::Read(13), Step::Write(hex("01 01"))]).await;
    let e = with_password(script.addr).connect(&name("example.com", 80)).await.unwrap_err();
    assert_eq!(root_proto(&e), Some(&ClientError::AuthFailed(1)));
    assert_eq!(script.transcript().await.received.len(), 4 + 13);
}

#[tokio::test]
async fn an_overlong_hostname_fails_before_any_byte_is_sent() {
    // V-28 / CVE-2023-38545: a 256-byte name is an error, never truncated, never resolved
    // locally, and the slow server sees nothing at all.
    let long = Address { host: Host::Domain(vec![b'a'; 256]), port: 80 };
    for version in [Version::V5, Version::V4a, Version::V4] {
        let script =
            Script::start_within(vec![Step::Sleep(300), Step::Write(hex("05 00"))], Duration::from_millis(300)).await;
        let e = one_hop(version, script.addr).connect(&long).await.unwrap_err();
        assert_eq!(e.hop_index(), Some(0));
        assert!(matches!(root_proto(&e), Some(ClientError::Proto(ProtoError::FieldTooLong { .. }))), "{version}: {e}");
        let t = script.transcript().await;
        assert!(!t.connected, "{version}: the proxy must not even be dialled");
    }
    // Through the generic driver on an open connection: zero bytes written.
    let script = Script::start(vec![]).await;
    let mut s = script_stream(script.addr).await;
    let e = handshake(&mut s, req(Version::V5, Command::CONNECT, long)).await.unwrap_err();
    assert!(matches!(root_proto(&e), Some(ClientError::Proto(ProtoError::FieldTooLong { .. }))));
    drop(s);
    let t = script.transcript().await;
    assert!(t.connected);
    assert_eq!(t.received.len(), 0);

    // 255 is the largest name that fits: it is sent whole with LEN ff.
    let script = Script::start(no_auth(4 + 1 + 255 + 2, [Step::Write(hex(GRANTED))])).await;
    let max = Address { host: Host::Domain(vec![b'b'; 255]), port: 80 };
    drop(one_hop(Version::V5, script.addr).connect(&max).await.unwrap());
    let t = script.transcript().await;
    assert_eq!(&t.received[3..8], &hex("05 01 00 03 ff"));
}

#[tokio::test]
async fn overlong_credentials_fail_before_dialling() {
    // V-29, V-35: 255 per field is fine, 256 is refused locally.
    for (ulen, plen, ok) in [(255, 255, true), (256, 1, false), (1, 256, false), (0, 0, true)] {
        let script =
            Script::start_within(vec![Step::Read(4), Step::Write(hex("05 ff"))], Duration::from_millis(500)).await;
        let hop = Hop::new(Version::V5, script.addr.into()).with_credentials(vec![b'u'; ulen], vec![b'p'; plen]);
        let e = quick(vec![hop]).connect(&name("example.com", 80)).await.unwrap_err();
        let too_long = matches!(root_proto(&e), Some(ClientError::Proto(ProtoError::FieldTooLong { .. })));
        assert_eq!(!too_long, ok, "{ulen}/{plen}: {e}");
        assert_eq!(script.transcript().await.connected, ok, "{ulen}/{plen}");
    }
}

#[tokio::test]
async fn a_silent_server_hits_the_handshake_deadline() {
    // C-05: a server that accepts and never answers.
    let script = Script::start(vec![Step::Read(3), Step::Sleep(3_000)]).await;
    let chain = Chain { handshake_timeout: Duration::from_millis(300), ..one_hop(Version::V5, script.addr) };
    let started = Instant::now();
    let e = chain.connect(&name("example.com", 80)).await.unwrap_err();
    assert!(matches!(e.root(), Error::Timeout { .. }), "{e}");
    assert_eq!(e.hop_index(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_proxy_that_never_replies_to_the_request_hits_the_connect_deadline() {
    // The greeting goes through, then silence: the reply deadline (connect_timeout) applies.
    let script = Script::start(no_auth(18, [Step::Sleep(3_000)])).await;
    let chain = Chain { connect_timeout: Duration::from_millis(300), ..one_hop(Version::V5, script.addr) };
    let started = Instant::now();
    let e = chain.connect(&name("example.com", 80)).await.unwrap_err();
    assert!(matches!(e.root(), Error::Timeout { what: "waiting for the reply", .. }), "{e}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // A proxy whose SYNs go unanswered: the TCP connect deadline, attributed to hop 0.
    let chain =
        Chain { connect_timeout: Duration::from_millis(300), ..one_hop(Version::V5, common::blackhole().await) };
    let started = Instant::now();
    let e = chain.connect(&name("example.com", 80)).await.unwrap_err();
    assert!(matches!(e.root(), Error::Timeout { what: "TCP connect", .. }), "{e}");
    assert_eq!(e.hop_index(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn every_message_dripped_one_byte_at_a_time() {
    // C-05, C-13: the machine survives re-entry on every byte, for each message kind.
    let script = Script::start(vec![
        Step::Read(4),
        Step::Drip(hex("05 02")),
        Step::Read(5),
        Step::Drip(hex("01 00")),
        Step::Read(18),
        Step::Drip([hex("05 00 00 03 04"), b"host".to_vec(), hex("0001"), b"Z".to_vec()].concat()),
    ])
    .await;
    let chain = quick(vec![Hop::new(Version::V5, script.addr.into()).with_credentials("u", "p")]);
    let mut s = chain.connect(&name("example.com", 80)).await.unwrap();
    assert_eq!(s.read_u8().await.unwrap(), b'Z');
    let script = Script::start(vec![Step::Read(21), Step::Drip(hex("00 5a 0000 00000000 5a"))]).await;
    let mut s = one_hop(Version::V4a, script.addr).connect(&name("example.com", 80)).await.unwrap();
    assert_eq!(s.read_u8().await.unwrap(), 0x5a);
}

#[tokio::test]
async fn socks4_resolves_locally_to_ipv4_and_socks4a_sends_the_name() {
    // C-09: SOCKS4 puts the resolved IPv4 address in DSTIP.
    let script = Script::start(vec![Step::Read(9), Step::Write(hex("00 5a 0000 00000000"))]).await;
    drop(one_hop(Version::V4, script.addr).connect(&name("localhost", 80)).await.unwrap());
    assert_eq!(script.transcript().await.received, hex("04 01 0050 7f000001 00"));
    // SOCKS4a: DSTIP 0.0.0.1 and the name after the empty USERID.
    let script = Script::start(vec![Step::Read(19), Step::Write(hex("00 5a 0000 00000000"))]).await;
    drop(one_hop(Version::V4a, script.addr).connect(&name("localhost", 80)).await.unwrap());
    let mut expect = hex("04 01 0050 00000001 00");
    expect.extend_from_slice(b"localhost\0");
    assert_eq!(script.transcript().await.received, expect);
    // SOCKS4 cannot carry IPv6.
    let script = Script::start(vec![]).await;
    let v6: Address = SocketAddr::from((Ipv6Addr::LOCALHOST, 80)).into();
    let e = one_hop(Version::V4, script.addr).connect(&v6).await.unwrap_err();
    assert!(matches!(root_proto(&e), Some(ClientError::NeedsIpv4)) || matches!(e.root(), Error::Resolve { .. }), "{e}");
}

#[tokio::test]
async fn two_scripted_hops_get_connect_to_the_next_hop_then_to_the_target() {
    // One TCP connection carries hop 0's handshake, then hop 1's (hop 0 is "transparent").
    let hop1: SocketAddr = "127.0.0.2:1081".parse().unwrap();
    let script = Script::start(no_auth(
        10,
        [
            Step::Write(hex(GRANTED)),
            // Now "hop 1", SOCKS4a.
            Step::Read(9 + 12),
            Step::Write(hex("00 5a 0000 00000000")),
            Step::Write(b"T".to_vec()),
        ],
    ))
    .await;
    let chain = quick(vec![Hop::new(Version::V5, script.addr.into()), Hop::new(Version::V4a, hop1.into())]);
    let mut s = chain.connect(&name("example.com", 80)).await.unwrap();
    assert_eq!(s.read_u8().await.unwrap(), b'T');
    drop(s);
    let mut expect = [hex(GREETING), hex("05 01 00 01 7f000002 0439"), hex("04 01 0050 00000001 00")].concat();
    expect.extend_from_slice(b"example.com\0");
    assert_eq!(script.transcript().await.received, expect);

    // A refusal at hop 1 is attributed to hop 1.
    let script = Script::start(
        [
            no_auth(10, [Step::Write(hex(GRANTED))]),
            // Now "hop 1", SOCKS5 too, which refuses.
            no_auth(18, [Step::Write(hex("05 05 00 01 00000000 0000"))]),
        ]
        .concat(),
    )
    .await;
    let chain = quick(vec![Hop::new(Version::V5, script.addr.into()), Hop::new(Version::V5, hop1.into())]);
    let e = chain.connect(&name("example.com", 80)).await.unwrap_err();
    assert_eq!(e.hop_index(), Some(1), "{e}");
    assert_eq!(root_proto(&e), Some(&ClientError::Rejected(Reply::CONNECTION_REFUSED)));
}

#[tokio::test]
async fn an_unreachable_proxy_fails_closed() {
    // C-07, V-33: no direct connection to the target when the proxy is down.
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = common::closed_port().await;
    let e = one_hop(Version::V5, dead).connect(&target.local_addr().unwrap().into()).await.unwrap_err();
    assert_eq!(e.hop_index(), Some(0));
    assert!(matches!(e.root(), Error::Io(_)), "{e}");
    let direct = tokio::time::timeout(Duration::from_millis(200), target.accept()).await;
    assert!(direct.is_err(), "the client connected to the target directly");
}

#[tokio::test]
async fn scripted_bind_returns_both_replies_and_keeps_the_peers_first_bytes() {
    let mut second = hex("05 00 00 01 0a000005 d431");
    second.extend_from_slice(b"peer says hi");
    let script = Script::start(no_auth(
        10,
        [
            // BND 0.0.0.0: the proxy's own address.
            Step::Write(hex("05 00 00 01 00000000 2328")),
            Step::Sleep(100),
            Step::Write(second),
        ],
    ))
    .await;
    let peer: Address = "10.0.0.5:0".parse::<SocketAddr>().unwrap().into();
    let pending = one_hop(Version::V5, script.addr).bind(&peer).await.unwrap();
    assert_eq!(pending.bound, Address { host: Host::Ip(Ipv4Addr::LOCALHOST.into()), port: 9000 });
    let (mut s, from) = pending.accept().await.unwrap();
    assert_eq!(from, "10.0.0.5:54321".parse::<SocketAddr>().unwrap().into());
    let mut b = [0u8; 12];
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"peer says hi");
}

#[tokio::test]
async fn scripted_udp_association_filters_datagrams_as_c11_requires() {
    let relay = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let relay_port = relay.local_addr().unwrap().port();
    let mut reply = hex("05 00 00 01 00000000");
    reply.extend_from_slice(&relay_port.to_be_bytes());
    let script = Script::start(no_auth(10, [Step::Write(reply)])).await;
    let assoc = one_hop(Version::V5, script.addr).udp_associate().await.unwrap();
    // BND 0.0.0.0 means the proxy's address (C-03, D-02).
    assert_eq!(assoc.relay_addr(), relay.local_addr().unwrap());

    assoc.send_to(b"ping", &name("example.com", 53)).await.unwrap();
    let mut buf = [0u8; 2048];
    let (n, client) = relay.recv_from(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], [hex("0000 00 03 0b"), b"example.com".to_vec(), hex("0035"), b"ping".to_vec()].concat());
    assert_eq!(client, assoc.local_addr().unwrap(), "sent from the declared socket (C-11)");

    // The request declared exactly that socket's address.
    let t_req = {
        drop(assoc);
        script.transcript().await.received
    };
    let mut declared = hex("05 03 00 01 7f000001");
    declared.extend_from_slice(&client.port().to_be_bytes());
    assert_eq!(&t_req[3..], &declared[..]);
}

#[tokio::test]
async fn udp_association_drops_fragments_strangers_and_garbage_and_accepts_a_domain_source() {
    let relay = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let relay_port = relay.local_addr().unwrap().port();
    let mut reply = hex("05 00 00 03 09");
    reply.extend_from_slice(b"localhost");
    reply.extend_from_slice(&relay_port.to_be_bytes());
    let script = Script::start(no_auth(10, [Step::Write(reply)])).await;
    let assoc = one_hop(Version::V5, script.addr).udp_associate().await.unwrap();
    // A DOMAINNAME BND is resolved locally.
    assert_eq!(assoc.relay_addr().port(), relay_port);
    let me = assoc.local_addr().unwrap();
    if assoc.relay_addr() != relay.local_addr().unwrap() {
        eprintln!("note: localhost resolved to {}, skipping the filtering half", assoc.relay_addr());
        return;
    }
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    stranger.send_to(&hex("0000 00 01 01020304 0001 aa"), me).await.unwrap(); // not from the relay
    relay.send_to(&hex("0000 01 01 01020304 0001 bb"), me).await.unwrap(); // FRAG 1
    relay.send_to(&hex("0000 00 05 01020304"), me).await.unwrap(); // bad ATYP
    relay.send_to(&hex("0000 00 03 10 6162"), me).await.unwrap(); // LEN past the end
    let mut good = hex("0000 00 03 07");
    good.extend_from_slice(b"dns.lan");
    good.extend_from_slice(&hex("0035"));
    good.extend_from_slice(b"answer");
    relay.send_to(&good, me).await.unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = tokio::time::timeout(Duration::from_secs(2), assoc.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], b"answer", "only the well-formed datagram from the relay gets through");
    assert_eq!(from, name("dns.lan", 53));
}

// ---------------------------------------------------------------------------------------------
// Against in-process socksref servers.
// ---------------------------------------------------------------------------------------------

async fn xor_roundtrip<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S) {
    s.write_all(b"abc\x00\xff").await.unwrap();
    let mut b = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut b)).await.unwrap().unwrap();
    assert_eq!(b, [b'a' ^ 0x5a, b'b' ^ 0x5a, b'c' ^ 0x5a, 0x5a, 0xff ^ 0x5a]);
}

#[tokio::test]
async fn chain_through_two_socksref_servers_in_every_protocol_pair() {
    let echo = common::xor_echo().await;
    let a = common::start(ServerConfig::default()).await;
    let user = socksref::server::Credential { user: b"alice".to_vec(), pass: b"pw".to_vec() };
    let b = common::start(ServerConfig { users: vec![user], ..ServerConfig::default() }).await;
    for first in [Version::V4, Version::V4a, Version::V5] {
        let chain = quick(vec![
            Hop::new(first, a.addr.into()),
            Hop::new(Version::V5, b.addr.into()).with_credentials("alice", "pw"),
        ]);
        let mut s = chain.connect(&echo.into()).await.unwrap_or_else(|e| panic!("{first}: {e}"));
        xor_roundtrip(&mut s).await;
    }
    // Names are resolved by the last proxy (socks5h semantics).
    let c = common::start(ServerConfig::default()).await;
    let chain = quick(vec![Hop::new(Version::V5, a.addr.into()), Hop::new(Version::V4a, c.addr.into())]);
    let mut s = chain.connect(&name("localhost", echo.port())).await.unwrap();
    xor_roundtrip(&mut s).await;
    // Wrong password at hop 1.
    let chain = quick(vec![
        Hop::new(Version::V5, a.addr.into()),
        Hop::new(Version::V5, b.addr.into()).with_credentials("alice", "nope"),
    ]);
    let e = chain.connect(&echo.into()).await.unwrap_err();
    assert_eq!(e.hop_index(), Some(1));
    assert!(matches!(root_proto(&e), Some(ClientError::AuthFailed(_))), "{e}");
}

#[tokio::test]
async fn direct_chain_connects_straight_to_the_target() {
    let echo = common::xor_echo().await;
    let mut s = Chain::direct().connect(&echo.into()).await.unwrap();
    xor_roundtrip(&mut s).await;
}

/// BIND through `chain` for a peer from 127.0.0.1 (D-07: DST.ADDR names the expected peer),
/// connect that peer to the bound address, and return the accepted tunnel, the peer address the
/// proxy reported, and the peer's own connection.
async fn bind_and_connect_a_peer(chain: &Chain) -> (impl AsyncRead + AsyncWrite + Unpin, Address, TcpStream) {
    let pending = chain.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).await.unwrap();
    let bound = pending.bound.socket_addr().expect("an IP BND");
    assert_ne!(bound.port(), 0);
    let accept = tokio::spawn(pending.accept());
    let peer = TcpStream::connect(bound).await.unwrap();
    let (s, from) = tokio::time::timeout(Duration::from_secs(5), accept).await.unwrap().unwrap().unwrap();
    (s, from, peer)
}

#[tokio::test]
async fn bind_through_a_socksref_chain() {
    let a = common::start(ServerConfig::default()).await;
    let b = common::start(ServerConfig { allow_bind: true, ..ServerConfig::default() }).await;
    let chain = quick(vec![Hop::new(Version::V5, a.addr.into()), Hop::new(Version::V5, b.addr.into())]);
    let (mut s, from, mut peer) = bind_and_connect_a_peer(&chain).await;
    assert_eq!(from, peer.local_addr().unwrap().into());
    peer.write_all(b"from peer").await.unwrap();
    let mut b9 = [0u8; 9];
    s.read_exact(&mut b9).await.unwrap();
    assert_eq!(&b9, b"from peer");
    s.write_all(b"back").await.unwrap();
    let mut b4 = [0u8; 4];
    peer.read_exact(&mut b4).await.unwrap();
    assert_eq!(&b4, b"back");
}

#[tokio::test]
async fn udp_association_with_a_socksref_server() {
    let echo = common::udp_xor_echo().await;
    let srv = common::start(ServerConfig { allow_udp: true, ..ServerConfig::default() }).await;
    let assoc = one_hop(Version::V5, srv.addr).udp_associate().await.unwrap();
    assoc.send_to(b"\x01\x02\x03", &echo.into()).await.unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), assoc.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], &[1 ^ 0x5a, 2 ^ 0x5a, 3 ^ 0x5a]);
    assert_eq!(from, echo.into());
    // UDP at a SOCKS4 hop is refused locally.
    let e = one_hop(Version::V4a, srv.addr).udp_associate().await.unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
}

#[tokio::test]
async fn udp_association_at_the_second_hop_declares_only_its_port() {
    let echo = common::udp_xor_echo().await;
    let a = common::start(ServerConfig::default()).await;
    let b = common::start(ServerConfig { allow_udp: true, ..ServerConfig::default() }).await;
    let chain = quick(vec![Hop::new(Version::V5, a.addr.into()), Hop::new(Version::V5, b.addr.into())]);
    let assoc = chain.udp_associate().await.unwrap();
    assoc.send_to(b"\x07", &echo.into()).await.unwrap();
    let mut buf = [0u8; 8];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), assoc.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], &[0x07 ^ 0x5a]);
}

#[tokio::test]
async fn socks4_bind_at_the_last_hop() {
    let a = common::start(ServerConfig::default()).await;
    let b = common::start(ServerConfig { allow_bind: true, ..ServerConfig::default() }).await;
    let chain = quick(vec![Hop::new(Version::V4a, a.addr.into()), Hop::new(Version::V4, b.addr.into())]);
    let (mut s, from, mut peer) = bind_and_connect_a_peer(&chain).await;
    assert_eq!(from, peer.local_addr().unwrap().into());
    s.write_all(b"v4").await.unwrap();
    let mut b2 = [0u8; 2];
    peer.read_exact(&mut b2).await.unwrap();
    assert_eq!(&b2, b"v4");
}

// ---------------------------------------------------------------------------------------------
// Forwarders.
// ---------------------------------------------------------------------------------------------

/// A shutdown future and the handle that fires it (also on drop).
fn shutdown() -> (oneshot::Sender<()>, impl std::future::Future<Output = ()>) {
    let (tx, rx) = oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

#[tokio::test]
async fn forward_tcp_end_to_end_direct_and_through_a_proxy() {
    let echo = common::xor_echo().await;
    let srv = common::start(ServerConfig::default()).await;
    for chain in [Chain::direct(), one_hop(Version::V5, srv.addr)] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        let (stop, on_stop) = shutdown();
        let listener = socksref::transport::Listener::tcp(listener).unwrap();
        let fwd = tokio::spawn(socksref::forward::tcp(listener, echo.into(), Arc::new(chain), on_stop));
        for _ in 0..3 {
            let mut s = TcpStream::connect(local).await.unwrap();
            xor_roundtrip(&mut s).await;
        }
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(2), fwd).await.unwrap().unwrap().unwrap();
        // Stopped: the listener is gone.
        assert!(TcpStream::connect(local).await.is_err());
    }
}

#[tokio::test]
async fn forward_tcp_with_a_dead_proxy_closes_the_client_without_a_direct_connection() {
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    let (_stop, on_stop) = shutdown();
    let chain = one_hop(Version::V5, common::closed_port().await);
    let listener = socksref::transport::Listener::tcp(listener).unwrap();
    tokio::spawn(socksref::forward::tcp(listener, target.local_addr().unwrap().into(), Arc::new(chain), on_stop));
    let mut s = TcpStream::connect(local).await.unwrap();
    let mut b = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut b)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "the client is closed");
    assert!(tokio::time::timeout(Duration::from_millis(100), target.accept()).await.is_err());
}

#[tokio::test]
async fn forward_udp_sessions_per_source_direct_and_through_a_proxy() {
    let echo = common::udp_xor_echo().await;
    let srv = common::start(ServerConfig { allow_udp: true, ..ServerConfig::default() }).await;
    for chain in [Chain::direct(), one_hop(Version::V5, srv.addr)] {
        let hops = chain.hops.len();
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = sock.local_addr().unwrap();
        let (stop, on_stop) = shutdown();
        let fwd =
            tokio::spawn(socksref::forward::udp(sock, echo.into(), Arc::new(chain), Duration::from_secs(5), on_stop));
        // Two client sources, each gets its own answers.
        let c1 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let c2 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for (i, c) in [&c1, &c2].into_iter().enumerate() {
            for round in 0..3u8 {
                c.send_to(&[i as u8, round], local).await.unwrap();
                let mut b = [0u8; 16];
                let (n, from) = tokio::time::timeout(Duration::from_secs(5), c.recv_from(&mut b))
                    .await
                    .unwrap_or_else(|_| panic!("hops {hops}: no answer for client {i} round {round}"))
                    .unwrap();
                assert_eq!(from, local);
                assert_eq!(&b[..n], &[i as u8 ^ 0x5a, round ^ 0x5a], "hops {hops}");
            }
        }
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(2), fwd).await.unwrap().unwrap().unwrap();
    }
}

// On a paused clock: the idle timeout passes by `advance`, not by waiting (loopback I/O between
// tasks of this one runtime is ready before the runtime would let time move on by itself).
#[tokio::test(start_paused = true)]
async fn forward_udp_session_expires_after_idle_and_a_new_one_takes_over() {
    // The target answers with the source port it saw, so a new session (new upstream socket)
    // shows up as a new port.
    let target = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target_addr = target.local_addr().unwrap();
    tokio::spawn(async move {
        let mut b = [0u8; 64];
        while let Ok((_, from)) = target.recv_from(&mut b).await {
            let _ = target.send_to(&from.port().to_be_bytes(), from).await;
        }
    });
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = sock.local_addr().unwrap();
    let (_stop, on_stop) = shutdown();
    let idle = Duration::from_millis(200);
    tokio::spawn(socksref::forward::udp(sock, target_addr.into(), Arc::new(Chain::direct()), idle, on_stop));
    let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ask = || async {
        c.send_to(b"?", local).await.unwrap();
        let mut b = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(2), c.recv_from(&mut b)).await.unwrap().unwrap();
        u16::from_be_bytes(b)
    };
    let first = ask().await;
    assert_eq!(ask().await, first, "same session while active");
    tokio::time::advance(idle * 3).await;
    // Let the session, woken by its idle timer, end before the next datagram reaches it.
    tokio::task::yield_now().await;
    assert_ne!(ask().await, first, "the idle session should have ended");
}

#[tokio::test]
async fn forward_rtcp_through_a_socksref_server() {
    let echo = common::xor_echo().await;
    let srv = common::start(ServerConfig { allow_bind: true, bind_any_peer: true, ..ServerConfig::default() }).await;
    // A port that is free now, for the server to listen on (> 1024, as the server requires).
    let port = common::free_port();
    let listen = Address { host: Host::Ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), port };
    let (stop, on_stop) = shutdown();
    let fwd =
        tokio::spawn(socksref::forward::rtcp(listen, echo.into(), Arc::new(one_hop(Version::V5, srv.addr)), on_stop));
    // Two connections in a row: each needs a fresh BIND.
    for i in 0..2 {
        let mut s = None;
        for _ in 0..100 {
            if let Ok(c) = TcpStream::connect(("127.0.0.1", port)).await {
                s = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut s = s.unwrap_or_else(|| panic!("connection {i}: the proxy never listened on {port}"));
        xor_roundtrip(&mut s).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(2), fwd).await.unwrap().unwrap().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Against Dante and microsocks, when installed.
// ---------------------------------------------------------------------------------------------

/// A child process stopped with SIGTERM (by pid) when dropped: Dante's main process then stops
/// the helper processes it forked.
struct Peer {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: Option<std::path::PathBuf>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        testkit::terminate(&mut self.child, Duration::from_secs(1));
        if let Some(d) = &self._dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn find(bin: &str) -> Option<std::path::PathBuf> {
    ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"]
        .iter()
        .map(|d| std::path::Path::new(d).join(bin))
        .find(|p| p.exists())
}

/// Waits until `peer` accepts; a peer that exited first fails at once with its status.
async fn wait_listening(peer: &mut Peer) -> Result<(), testkit::NotReady> {
    testkit::wait_accepting_async(&mut peer.child, &[peer.addr], Duration::from_secs(3)).await
}

/// Writes the harness peer's Dante configuration (harness/peers/danted/peer.yaml, instance
/// `open`: the one place it is written) into `dir` for `port`, and returns its command line.
/// Only `{port}` and `{dir}` occur in that instance; the harness fills in the same two.
fn dante_open_instance(port: u16, dir: &std::path::Path) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../harness/peers/danted/peer.yaml");
    let text = std::fs::read_to_string(&path).expect("harness/peers/danted/peer.yaml is readable");
    let def: serde_yaml::Value = serde_yaml::from_str(&text).expect("danted's peer.yaml is YAML");
    let inst = def["instances"]
        .as_sequence()
        .and_then(|all| all.iter().find(|i| i["name"].as_str() == Some("open")))
        .expect("danted's peer.yaml has an `open` instance");
    let fill = |s: &str| s.replace("{port}", &port.to_string()).replace("{dir}", &dir.to_string_lossy());
    for (name, body) in inst["files"].as_mapping().expect("the instance has files") {
        let (name, body) = (name.as_str().expect("file name"), body.as_str().expect("file body"));
        std::fs::write(dir.join(name), fill(body)).expect("writing danted's config");
    }
    let argv: Vec<String> = inst["command"]
        .as_sequence()
        .expect("the instance has a command")
        .iter()
        .map(|a| fill(a.as_str().expect("a command argument")))
        .collect();
    assert!(argv.iter().all(|a| !a.contains('{')), "an unfilled placeholder in {argv:?}");
    argv
}

async fn dante() -> Option<Peer> {
    let Some(bin) = find("danted") else {
        eprintln!("note: danted not installed (apt-get install dante-server); skipping");
        return None;
    };
    let port = common::free_port();
    let dir = std::env::temp_dir().join(format!("sockslab-dante-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let argv = dante_open_instance(port, &dir);
    let child =
        std::process::Command::new(bin).args(&argv[1..]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let mut peer = Peer { child, addr: ([127, 0, 0, 1], port).into(), _dir: Some(dir) };
    if let Err(e) = wait_listening(&mut peer).await {
        panic!("danted did not start on {}: {e}", peer.addr);
    }
    Some(peer)
}

async fn microsocks(auth: Option<(&str, &str)>) -> Option<Peer> {
    let Some(bin) = find("microsocks") else {
        eprintln!("note: microsocks not installed (apt-get install microsocks); skipping");
        return None;
    };
    let port = common::free_port();
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
    if let Some((u, p)) = auth {
        cmd.args(["-u", u, "-P", p]);
    }
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let mut peer = Peer { child, addr: ([127, 0, 0, 1], port).into(), _dir: None };
    if let Err(e) = wait_listening(&mut peer).await {
        panic!("microsocks did not start on {}: {e}", peer.addr);
    }
    Some(peer)
}

#[tokio::test]
async fn dante_connect_in_socks4_4a_and_5() {
    let Some(d) = dante().await else { return };
    let echo = common::xor_echo().await;
    for v in [Version::V4, Version::V4a, Version::V5] {
        let mut s = one_hop(v, d.addr).connect(&echo.into()).await.unwrap_or_else(|e| panic!("{v}: {e}"));
        xor_roundtrip(&mut s).await;
    }
    let mut s = one_hop(Version::V5, d.addr).connect(&name("localhost", echo.port())).await.unwrap();
    xor_roundtrip(&mut s).await;
    // A closed port: Dante refuses, and the client reports it with the hop.
    let e = one_hop(Version::V5, d.addr).connect(&common::closed_port().await.into()).await.unwrap_err();
    assert_eq!(e.hop_index(), Some(0));
    assert!(matches!(root_proto(&e), Some(ClientError::Rejected(_))), "{e}");
}

#[tokio::test]
async fn microsocks_with_credentials() {
    let Some(m) = microsocks(Some(("bob", "hunter2"))).await else { return };
    let echo = common::xor_echo().await;
    let hop = Hop::new(Version::V5, m.addr.into()).with_credentials("bob", "hunter2");
    let mut s = quick(vec![hop]).connect(&echo.into()).await.unwrap();
    xor_roundtrip(&mut s).await;
    let hop = Hop::new(Version::V5, m.addr.into()).with_credentials("bob", "wrong");
    let e = quick(vec![hop]).connect(&echo.into()).await.unwrap_err();
    assert!(matches!(root_proto(&e), Some(ClientError::AuthFailed(_))), "{e}");
}

#[tokio::test]
async fn chain_dante_then_microsocks_then_socksref() {
    let Some(d) = dante().await else { return };
    let Some(m) = microsocks(None).await else { return };
    let r = common::start(ServerConfig::default()).await;
    let echo = common::xor_echo().await;
    let chain = quick(vec![
        Hop::new(Version::V5, d.addr.into()),
        Hop::new(Version::V5, m.addr.into()),
        Hop::new(Version::V4a, r.addr.into()),
    ]);
    let mut s = chain.connect(&name("localhost", echo.port())).await.unwrap();
    xor_roundtrip(&mut s).await;
}

#[tokio::test]
async fn dante_udp_association_echo() {
    let Some(d) = dante().await else { return };
    let echo = common::udp_xor_echo().await;
    let assoc = one_hop(Version::V5, d.addr).udp_associate().await.unwrap();
    let mut buf = [0u8; 64];
    // UDP may be lost even on loopback while Dante sets up; retry a few times.
    let mut got = None;
    for _ in 0..5 {
        assoc.send_to(b"\x10\x20", &echo.into()).await.unwrap();
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(500), assoc.recv_from(&mut buf)).await {
            got = Some(r.unwrap());
            break;
        }
    }
    let (n, from) = got.expect("no echo through Dante");
    assert_eq!(&buf[..n], &[0x10 ^ 0x5a, 0x20 ^ 0x5a]);
    assert_eq!(from, echo.into());
}

#[tokio::test]
async fn dante_bind() {
    let Some(d) = dante().await else { return };
    let (mut s, _from, mut peer) = bind_and_connect_a_peer(&one_hop(Version::V5, d.addr)).await;
    peer.write_all(b"xyz").await.unwrap();
    let mut b = [0u8; 3];
    s.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"xyz");
}
