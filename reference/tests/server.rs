//! The server over real loopback sockets, byte for byte.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use rstest::rstest;
use socksref::server::{Credential, ServerConfig, Stats, Wiring};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

fn cfg() -> ServerConfig {
    ServerConfig { allow_bind: true, allow_udp: true, ..Default::default() }
}

fn auth_cfg() -> ServerConfig {
    ServerConfig { users: vec![Credential { user: b"user".to_vec(), pass: b"pass".to_vec() }], ..cfg() }
}

/// Which target a reply-code case points at.
#[derive(Clone, Copy, Debug)]
enum Target {
    Echo,
    Closed,
    Blackhole,
    Literal(&'static str),
}

async fn target(t: Target) -> Vec<u8> {
    match t {
        Target::Echo => v4(xor_echo().await),
        Target::Closed => v4(closed_port().await),
        Target::Blackhole => v4(blackhole().await),
        Target::Literal(h) => hex(h),
    }
}

/// Every SOCKS5 reply code the server can produce on loopback (D-06, R-37): a greeting, then
/// `05 CMD RSV` + the target's address bytes, and the exact 10-byte reply expected. Failures must
/// be followed by a close.
#[rstest]
#[case::succeeded(0x01, 0x00, Target::Echo, 0x00)]
#[case::rsv_nonzero_d14(0x01, 0x01, Target::Echo, 0x01)]
#[case::port_zero_r31(0x01, 0x00, Target::Literal("01 7f000001 0000"), 0x02)]
#[case::zero_net_r32(0x01, 0x00, Target::Literal("01 00000000 0050"), 0x02)]
#[case::ipv6_unspecified_r32(0x01, 0x00, Target::Literal("04 00000000000000000000000000000000 0050"), 0x02)]
#[case::empty_domain_d03(0x01, 0x00, Target::Literal("03 00 0050"), 0x04)]
#[case::domain_with_nul_r28(0x01, 0x00, Target::Literal("03 0c 312e322e332e3400 6576696c 0050"), 0x04)]
#[case::connect_timeout_d06(0x01, 0x00, Target::Blackhole, 0x04)]
#[case::refused_v26(0x01, 0x00, Target::Closed, 0x05)]
#[case::tor_resolve_v27(0xf0, 0x00, Target::Echo, 0x07)]
// gost's MBIND is served where BIND is enabled, as in gost; listening on the echo target's port
// (already taken) fails with 01, gost's "listen failure" (docs/gost.md §4.5).
#[case::gost_mbind_listen_failure(0xf2, 0x00, Target::Echo, 0x01)]
#[case::unknown_command(0x7e, 0x00, Target::Echo, 0x07)]
#[case::bad_atyp_d05(0x01, 0x00, Target::Literal("05 7f000001 0050"), 0x08)]
#[tokio::test]
async fn socks5_reply_codes(#[case] cmd: u8, #[case] rsv: u8, #[case] to: Target, #[case] rep: u8) {
    let config = ServerConfig { connect_timeout: Duration::from_millis(300), ..cfg() };
    let server = start(config).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut req = vec![0x05, 0x01, 0x00, 0x05, cmd, rsv];
    req.extend(target(to).await);
    s.write_all(&req).await.unwrap();
    assert_eq!(read_n(&mut s, 2).await, hex("05 00"));
    let reply = read_n(&mut s, 10).await;
    assert_eq!(&reply[..4], &[0x05, rep, 0x00, 0x01], "reply {reply:02x?}");
    if rep == 0 {
        // BND is the outbound socket's local address: loopback, non-zero port.
        assert_eq!(&reply[4..8], &[127, 0, 0, 1]);
        assert_ne!(&reply[8..10], &[0, 0]);
    } else {
        assert_eq!(&reply[4..], &[0; 6], "failure replies carry zeros (R-34)");
        assert_eq!(read_to_eof(&mut s).await, b"", "closed after a failure, nothing more (R-35)");
    }
}

#[rstest]
#[case::disabled_bind_r45(ServerConfig::default(), 0x02)]
#[case::disabled_udp_r52(ServerConfig::default(), 0x03)]
#[tokio::test]
async fn disabled_commands_get_07(#[case] config: ServerConfig, #[case] cmd: u8) {
    let server = start(config).await;
    assert_eq!(
        answer_to(server.addr, &[&hex("05 01 00 05")[..], &[cmd, 0x00], &hex("01 7f000001 0050")].concat()).await,
        hex("05 00 05 07 00 01 00000000 0000")
    );
}

#[tokio::test]
async fn self_connect_is_refused_v22() {
    let server = start(cfg()).await;
    assert_eq!(
        answer_to(server.addr, &[&hex("05 01 00 05 01 00")[..], &v4(server.addr)].concat()).await,
        hex("05 00 05 02 00 01 00000000 0000")
    );
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let name = format!("localhost:{}", server.addr.port());
    let _ = name; // the same check applies after resolution; "localhost" resolves to loopback
    let mut req = hex("05 01 00 05 01 00 03 09");
    req.extend_from_slice(b"localhost");
    req.extend_from_slice(&server.addr.port().to_be_bytes());
    s.write_all(&req).await.unwrap();
    assert_eq!(read_to_eof(&mut s).await, hex("05 00 05 02 00 01 00000000 0000"));
}

#[rstest]
#[case::granted("04 01", Target::Echo, "5a")]
#[case::refused_target("04 01", Target::Closed, "5b")]
#[case::dstip_zero_r69("04 01", Target::Literal("0050 00000000"), "5b")]
#[case::port_zero_r69("04 01", Target::Literal("0000 7f000001"), "5b")]
#[case::bad_cd_r71("04 09", Target::Echo, "5b")]
#[tokio::test]
async fn socks4_replies(#[case] head: &str, #[case] to: Target, #[case] cd: &str) {
    let server = start(cfg()).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    // SOCKS4 puts the port before the address: reorder the ATYP-form bytes.
    let dst = match to {
        Target::Literal(h) => hex(h),
        other => {
            let a = target(other).await;
            [&a[5..7], &a[1..5]].concat()
        }
    };
    s.write_all(&[hex(head), dst, vec![0x00]].concat()).await.unwrap();
    let reply = read_n(&mut s, 8).await;
    assert_eq!(reply[0], 0x00, "VN is 0 (D-08)");
    assert_eq!(reply[1], hex(cd)[0]);
    if cd == "5a" {
        s.write_all(b"ping").await.unwrap();
        assert_eq!(read_n(&mut s, 4).await, b"ping".map(|b| b ^ 0x5a));
    } else {
        assert_eq!(read_to_eof(&mut s).await, b"");
    }
}

#[tokio::test]
async fn socks4a_resolves_the_hostname_and_rejects_long_userids_v11() {
    let server = start(cfg()).await;
    let echo = xor_echo().await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut req = hex("04 01");
    req.extend_from_slice(&echo.port().to_be_bytes());
    req.extend(hex("00000001 00"));
    req.extend_from_slice(b"localhost\0");
    s.write_all(&req).await.unwrap();
    assert_eq!(read_n(&mut s, 2).await, hex("00 5a"));

    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut req = hex("04 01 0050 00000001");
    req.extend(vec![0x41; 10_000]);
    s.write_all(&req).await.unwrap();
    assert_eq!(read_to_eof(&mut s).await, hex("00 5b 0000 00000000"));
}

#[tokio::test]
async fn socks4_is_refused_when_auth_is_required_v02b() {
    let server = start(auth_cfg()).await;
    let echo = xor_echo().await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let a = v4(echo);
    s.write_all(&[&hex("04 01")[..], &a[5..7], &a[1..5], &[0]].concat()).await.unwrap();
    assert_eq!(read_to_eof(&mut s).await, hex("00 5b 0000 00000000"));
}

#[tokio::test]
async fn wrong_password_closes_and_ignores_the_pipelined_request_v02a() {
    let server = start(auth_cfg()).await;
    let sink = read_all_then_answer().await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut msg = hex("05 01 02 01 04 75736572 04 6e6f7065 05 01 00");
    msg.extend(v4(sink));
    s.write_all(&msg).await.unwrap();
    assert_eq!(read_to_eof(&mut s).await, hex("05 02 01 01"));
}

#[tokio::test]
async fn auth_required_and_only_noauth_offered_gets_ff_and_nothing_else_v04() {
    let server = start(auth_cfg()).await;
    assert_eq!(answer_to(server.addr, &hex("05 01 00")).await, hex("05 ff"));
}

#[tokio::test]
async fn coalesced_greeting_auth_request_and_payload_are_all_delivered_r03() {
    let server = start(auth_cfg()).await;
    let echo = xor_echo().await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut msg = hex("05 02 00 02 01 04 75736572 04 70617373 05 01 00");
    msg.extend(v4(echo));
    msg.extend_from_slice(b"optimistic");
    s.write_all(&msg).await.unwrap();
    assert_eq!(read_n(&mut s, 4).await, hex("05 02 01 00"));
    assert_eq!(read_n(&mut s, 4).await, hex("05 00 00 01"));
    read_n(&mut s, 6).await;
    assert_eq!(read_n(&mut s, 10).await, b"optimistic".map(|b| b ^ 0x5a), "payload reached the target once");
}

#[tokio::test]
async fn one_byte_per_write_works_r01() {
    let server = start(cfg()).await;
    let echo = xor_echo().await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let msg = [hex("05 01 00 05 01 00"), v4(echo)].concat();
    for b in msg {
        s.write_all(&[b]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(read_n(&mut s, 2).await, hex("05 00"));
    assert_eq!(read_n(&mut s, 2).await, hex("05 00"));
}

#[tokio::test]
async fn half_close_from_the_client_still_gets_the_whole_answer_r39() {
    let server = start(cfg()).await;
    let target = read_all_then_answer().await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(&[hex("05 01 00 05 01 00"), v4(target)].concat()).await.unwrap();
    read_n(&mut s, 12).await;
    s.write_all(&[7u8; 1000]).await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(read_to_eof(&mut s).await, b"got 1000 bytes");
}

#[tokio::test]
async fn a_target_that_speaks_first_never_overtakes_the_reply_r38() {
    let server = start(cfg()).await;
    let target = banner(b"HELLO").await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(&[hex("05 01 00 05 01 00"), v4(target)].concat()).await.unwrap();
    let all = read_n(&mut s, 2 + 10 + 5).await;
    assert_eq!(&all[2..4], &hex("05 00"));
    assert_eq!(&all[12..], b"HELLO");
}

#[tokio::test]
async fn a_silent_client_is_closed_at_the_handshake_deadline_r02_v18() {
    let server = start(ServerConfig { handshake_timeout: Duration::from_millis(300), ..cfg() }).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    silent.write_all(&hex("05 01")).await.unwrap(); // a strict prefix of a greeting
                                                    // Meanwhile a fresh client is served normally.
    let echo = xor_echo().await;
    let mut fresh = TcpStream::connect(server.addr).await.unwrap();
    fresh.write_all(&[hex("05 01 00 05 01 00"), v4(echo)].concat()).await.unwrap();
    assert_eq!(read_n(&mut fresh, 4).await, hex("05 00 05 00"));
    assert_eq!(read_to_eof(&mut silent).await, b"", "no partial reply, just a close");
}

// On a paused clock: the 500 ms pass by auto-advance, and the handshake deadline's timer would
// have fired in them had it still been armed.
#[tokio::test(start_paused = true)]
async fn an_established_tunnel_outlives_the_handshake_deadline_v20() {
    let server = start(ServerConfig { handshake_timeout: Duration::from_millis(200), ..cfg() }).await;
    let echo = xor_echo().await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(&[hex("05 01 00 05 01 00"), v4(echo)].concat()).await.unwrap();
    read_n(&mut s, 12).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.write_all(b"still here").await.unwrap();
    assert_eq!(read_n(&mut s, 10).await, b"still here".map(|b| b ^ 0x5a));
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_at_the_idle_timeout_r83() {
    let server = start(ServerConfig { idle_timeout: Duration::from_millis(300), ..cfg() }).await;
    let echo = xor_echo().await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(&[hex("05 01 00 05 01 00"), v4(echo)].concat()).await.unwrap();
    read_n(&mut s, 12).await;
    assert_eq!(read_to_eof(&mut s).await, b"");
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once_r85() {
    // Idle connections fill the cap here, so the handshake cap (which would shed them first,
    // see tests/hardening.rs) is set to the connection cap to test the connection cap alone.
    let (server, stats) = start_counted(ServerConfig { max_connections: 2, max_handshakes: Some(2), ..cfg() }).await;
    let _a = TcpStream::connect(server.addr).await.unwrap();
    let _b = TcpStream::connect(server.addr).await.unwrap();
    // Both hold their permits once the server has accepted them (its gauge, not a guessed pause).
    until("both connections accepted", || Stats::get(&stats.accepted) == 2).await;
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(read_to_eof(&mut c).await, b"");
    assert_eq!(Stats::get(&stats.over_cap), 1);
}

// ---- BIND ----

async fn bind_request(server: SocketAddr, expect_peer: &str) -> (TcpStream, SocketAddr) {
    let mut s = TcpStream::connect(server).await.unwrap();
    s.write_all(&[hex("05 01 00 05 02 00"), hex(expect_peer)].concat()).await.unwrap();
    assert_eq!(read_n(&mut s, 2).await, hex("05 00"));
    let first = read_n(&mut s, 10).await;
    assert_eq!(&first[..4], &hex("05 00 00 01"), "first BIND reply {first:02x?}");
    assert_eq!(&first[4..8], &[127, 0, 0, 1], "BND is the address the client reached (R-46)");
    let port = u16::from_be_bytes([first[8], first[9]]);
    (s, SocketAddr::from(([127, 0, 0, 1], port)))
}

#[tokio::test]
async fn bind_accepts_the_expected_peer_and_relays_r47() {
    let server = start(cfg()).await;
    let (mut control, listen) = bind_request(server.addr, "01 7f000001 0000").await;
    control.write_all(b"early").await.unwrap(); // held until the peer arrives
    let mut peer = TcpStream::connect(listen).await.unwrap();
    let second = read_n(&mut control, 10).await;
    assert_eq!(&second[..8], &hex("05 00 00 01 7f000001"));
    assert_eq!(u16::from_be_bytes([second[8], second[9]]), peer.local_addr().unwrap().port());
    assert_eq!(read_n(&mut peer, 5).await, b"early");
    peer.write_all(b"back").await.unwrap();
    assert_eq!(read_n(&mut control, 4).await, b"back");
    // Exactly one accept.
    assert!(TcpStream::connect(listen).await.is_err());
}

#[tokio::test]
async fn bind_refuses_a_peer_from_another_address_r48() {
    let server = start(cfg()).await;
    let (mut control, listen) = bind_request(server.addr, "01 7f000002 0000").await;
    let _peer = TcpStream::connect(listen).await.unwrap(); // comes from 127.0.0.1, not .2
    assert_eq!(read_to_eof(&mut control).await, hex("05 02 00 01 00000000 0000"));
}

#[tokio::test]
async fn bind_times_out_without_a_peer_r49() {
    let server = start(ServerConfig { bind_accept_timeout: Duration::from_millis(200), ..cfg() }).await;
    let (mut control, listen) = bind_request(server.addr, "01 7f000001 0000").await;
    assert_eq!(read_to_eof(&mut control).await, hex("05 04 00 01 00000000 0000"));
    // The reply is written before the listener is dropped: wait for the refusal, do not guess.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(listen).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "listener still open 5 s after the timeout");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn bind_to_any_peer_needs_configuration_d07() {
    let server = start(cfg()).await;
    assert_eq!(
        answer_to(server.addr, &hex("05 01 00 05 02 00 01 00000000 0000")).await,
        hex("05 00 05 02 00 01 00000000 0000")
    );
    let server = start(ServerConfig { bind_any_peer: true, ..cfg() }).await;
    let (_control, listen) = bind_request(server.addr, "01 00000000 0000").await;
    assert!(TcpStream::connect(listen).await.is_ok());
}

#[tokio::test]
async fn socks4_bind_gets_two_replies() {
    let server = start(cfg()).await;
    let mut control = TcpStream::connect(server.addr).await.unwrap();
    control.write_all(&hex("04 02 0000 7f000001 00")).await.unwrap();
    let first = read_n(&mut control, 8).await;
    assert_eq!(&first[..2], &hex("00 5a"));
    let port = u16::from_be_bytes([first[2], first[3]]);
    let _peer = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert_eq!(&read_n(&mut control, 8).await[..2], &hex("00 5a"));
}

// ---- UDP ASSOCIATE ----

/// Associates from `client` (declaring its address) and returns the control stream and the
/// relay address from the reply.
async fn associate(server: SocketAddr, client: &UdpSocket) -> (TcpStream, SocketAddr) {
    let mut s = TcpStream::connect(server).await.unwrap();
    s.write_all(&[hex("05 01 00 05 03 00"), v4(client.local_addr().unwrap())].concat()).await.unwrap();
    assert_eq!(read_n(&mut s, 2).await, hex("05 00"));
    let r = read_n(&mut s, 10).await;
    assert_eq!(&r[..8], &hex("05 00 00 01 7f000001"), "a concrete BND.ADDR (D-02), loopback (V-07)");
    (s, SocketAddr::from(([127, 0, 0, 1], u16::from_be_bytes([r[8], r[9]]))))
}

/// A fresh loopback client socket with a UDP association at `server` declaring it: the client,
/// the control connection that keeps the association alive, and the relay's address.
async fn associated(server: SocketAddr) -> (UdpSocket, TcpStream, SocketAddr) {
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (control, relay) = associate(server, &client).await;
    (client, control, relay)
}

fn datagram(frag: u8, to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    [vec![0, 0, frag], v4(to), payload.to_vec()].concat()
}

async fn recv(s: &UdpSocket) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 70_000];
    match tokio::time::timeout(Duration::from_millis(300), s.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

#[tokio::test]
async fn udp_round_trip_carries_the_real_source_r61() {
    let server = start(cfg()).await;
    let echo = udp_xor_echo().await;
    let (client, _control, relay) = associated(server.addr).await;
    client.send_to(&datagram(0, echo, b"ping"), relay).await.unwrap();
    let back = recv(&client).await.expect("echo");
    assert_eq!(back, datagram(0, echo, &b"ping".map(|b| b ^ 0x5a)));
    // A large datagram is not truncated.
    let big = vec![0x11u8; 60_000];
    client.send_to(&datagram(0, echo, &big), relay).await.unwrap();
    assert_eq!(recv(&client).await.expect("big echo").len(), 10 + 60_000);
}

#[tokio::test]
async fn udp_from_sources_that_never_authenticated_is_dropped_v01() {
    let (server, stats) = start_counted(auth_cfg()).await;
    let echo = udp_xor_echo().await;
    // 1. Before any TCP: to the TCP port number (nothing listens on UDP there) — nothing back.
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    stranger.send_to(&datagram(0, echo, b"x"), server.addr).await.unwrap();
    assert_eq!(recv(&stranger).await, None);
    // 2. A legitimate client associates after authenticating …
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut msg = hex("05 01 02 01 04 75736572 04 70617373 05 03 00");
    msg.extend(v4(client.local_addr().unwrap()));
    s.write_all(&msg).await.unwrap();
    let r = read_n(&mut s, 4 + 10).await;
    assert_eq!(&r[..8], &hex("05 02 01 00 05 00 00 01"));
    let relay = SocketAddr::from(([127, 0, 0, 1], u16::from_be_bytes([r[12], r[13]])));
    // … and a stranger sending to that relay from another port is dropped, not relayed.
    stranger.send_to(&datagram(0, echo, b"sneak"), relay).await.unwrap();
    assert_eq!(recv(&stranger).await, None);
    client.send_to(&datagram(0, echo, b"ok"), relay).await.unwrap();
    assert!(recv(&client).await.is_some());
    assert_eq!(Stats::get(&stats.udp_dropped_foreign), 1);
    assert_eq!(Stats::get(&stats.udp_relayed_out), 1, "only the legitimate datagram left the relay");
    // 3. After the association's TCP closes, even the client gets nothing through.
    drop(s);
    until("the association ended", || Stats::get(&stats.live_udp_associations) == 0).await;
    client.send_to(&datagram(0, echo, b"late"), relay).await.unwrap();
    assert_eq!(recv(&client).await, None);
    assert_eq!(Stats::get(&stats.udp_relayed_out), 1);
}

#[tokio::test]
async fn udp_after_a_failed_login_there_is_no_relay_at_all() {
    let server = start(auth_cfg()).await;
    assert_eq!(
        answer_to(server.addr, &hex("05 01 02 01 04 75736572 04 6e6f7065 05 03 00 01 00000000 0000")).await,
        hex("05 02 01 01")
    );
}

#[tokio::test]
async fn udp_frag_nonzero_and_malformed_headers_are_dropped_d12_r58() {
    let (server, stats) = start_counted(cfg()).await;
    let echo = udp_xor_echo().await;
    let (client, _control, relay) = associated(server.addr).await;
    client.send_to(&datagram(1, echo, b"frag"), relay).await.unwrap();
    client.send_to(&hex("0000 00 01 7f00"), relay).await.unwrap();
    client.send_to(&hex("0000 00 09 7f000001 0035"), relay).await.unwrap();
    assert_eq!(recv(&client).await, None);
    assert_eq!(Stats::get(&stats.udp_dropped_frag), 1);
    assert_eq!(Stats::get(&stats.udp_dropped_malformed), 2);
    client.send_to(&datagram(0, echo, b"fine"), relay).await.unwrap();
    assert!(recv(&client).await.is_some(), "the association survives bad datagrams");
}

#[tokio::test]
async fn udp_port_is_locked_to_the_declared_port_r54() {
    let server = start(cfg()).await;
    let echo = udp_xor_echo().await;
    let (_client, _control, relay) = associated(server.addr).await;
    let other_port = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    other_port.send_to(&datagram(0, echo, b"x"), relay).await.unwrap();
    assert_eq!(recv(&other_port).await, None);
}

#[tokio::test]
async fn udp_associate_declaring_a_foreign_address_is_refused_r55() {
    let server = start(cfg()).await;
    assert_eq!(
        answer_to(server.addr, &hex("05 01 00 05 03 00 01 7f000002 1234")).await,
        hex("05 00 05 02 00 01 00000000 0000")
    );
}

#[tokio::test]
async fn udp_from_remotes_never_contacted_is_dropped_d16() {
    let (server, stats) = start_counted(cfg()).await;
    let (client, _control, relay) = associated(server.addr).await;
    let echo = udp_xor_echo().await;
    client.send_to(&datagram(0, echo, b"hi"), relay).await.unwrap();
    assert!(recv(&client).await.is_some());
    // Learn the outbound address from the echo's view by asking a recording socket to reply.
    let recorder = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.send_to(&datagram(0, recorder.local_addr().unwrap(), b"who"), relay).await.unwrap();
    let mut buf = [0u8; 16];
    let (_, outbound) = recorder.recv_from(&mut buf).await.unwrap();
    let unsolicited = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    unsolicited.send_to(b"spam", outbound).await.unwrap();
    assert_eq!(recv(&client).await, None);
    assert_eq!(Stats::get(&stats.udp_dropped_unsolicited), 1);
}

// ---- volume ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_each_way_arrive_intact_r44() {
    use sha2::{Digest, Sha256};
    let server = start(cfg()).await;
    let echo = xor_echo().await;
    let s = TcpStream::connect(server.addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    wr.write_all(&[hex("05 01 00 05 01 00"), v4(echo)].concat()).await.unwrap();
    let mut reply = [0u8; 12];
    rd.read_exact(&mut reply).await.unwrap();
    const TOTAL: usize = 64 << 20;
    let writer = tokio::spawn(async move {
        let mut hash = Sha256::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut chunk = vec![0u8; 1 << 16];
        let mut sent = 0;
        while sent < TOTAL {
            for b in chunk.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            // Varying chunk sizes exercise partial reads and writes.
            let n = (1 + (x as usize % chunk.len())).min(TOTAL - sent);
            hash.update(chunk[..n].iter().map(|b| b ^ 0x5a).collect::<Vec<_>>());
            wr.write_all(&chunk[..n]).await.unwrap();
            sent += n;
        }
        wr.shutdown().await.unwrap();
        hash.finalize()
    });
    let mut hash = Sha256::new();
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(60), rd.read(&mut buf)).await.unwrap().unwrap();
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        got += n;
    }
    assert_eq!(got, TOTAL);
    assert_eq!(hash.finalize(), writer.await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_tunnels() {
    let (server, stats) = start_counted(cfg()).await;
    let echo = xor_echo().await;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(200));
    let tasks: Vec<_> = (0..200u32)
        .map(|i| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let mut s = TcpStream::connect(server.addr).await.unwrap();
                s.write_all(&[hex("05 01 00 05 01 00"), v4(echo)].concat()).await.unwrap();
                read_n(&mut s, 12).await;
                // All 200 tunnels are open at the same time here.
                barrier.wait().await;
                let msg = i.to_be_bytes().repeat(256);
                s.write_all(&msg).await.unwrap();
                let back = read_n(&mut s, msg.len()).await;
                assert_eq!(back, msg.iter().map(|b| b ^ 0x5a).collect::<Vec<_>>());
            })
        })
        .collect();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t).await.unwrap().unwrap();
    }
    assert_eq!(stats.accepted.load(Ordering::Relaxed), 200);
}

// ---- upstream chain ----

fn via(upstreams: &[SocketAddr]) -> ServerConfig {
    use socksref::client::{Chain, Hop};
    use socksref::proto::{Address, Version};
    let hops = upstreams.iter().map(|a| Hop::new(Version::V5, Address::from(*a))).collect();
    ServerConfig {
        wiring: Wiring { upstream: Some(std::sync::Arc::new(Chain::new(hops))), ..Wiring::default() },
        ..cfg()
    }
}

#[tokio::test]
async fn through_a_chain_the_last_hops_refusal_is_passed_on_and_a_dead_hop_is_01() {
    let last = start(cfg()).await;
    let front = start(via(&[last.addr])).await;
    let echo = xor_echo().await;
    let mut s = TcpStream::connect(front.addr).await.unwrap();
    s.write_all(&[hex("05 01 00 05 01 00"), v4(echo)].concat()).await.unwrap();
    assert_eq!(&read_n(&mut s, 12).await[..4], &hex("05 00 05 00"));
    s.write_all(b"chained").await.unwrap();
    assert_eq!(read_n(&mut s, 7).await, b"chained".map(|b| b ^ 0x5a));

    assert_eq!(
        answer_to(front.addr, &[hex("05 01 00 05 01 00"), v4(closed_port().await)].concat()).await,
        hex("05 00 05 05 00 01 00000000 0000"),
        "the last hop's 05"
    );

    let dead = start(via(&[closed_port().await])).await;
    assert_eq!(
        answer_to(dead.addr, &[hex("05 01 00 05 01 00"), v4(echo)].concat()).await,
        hex("05 00 05 01 00 01 00000000 0000"),
        "a dead hop is not 'refused'"
    );
}
