//! gost's SOCKS5 extensions (docs/gost.md) between our own client and server on loopback,
//! plus raw-byte checks of what goes on the wire: the TLS methods `80`/`82` (§3), UDP-TUN `F3`
//! (§4.7) and the forwarders built on them.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socksref::client::{Chain, Error, Hop, HopTls};
use socksref::proto::client::ClientError;
use socksref::proto::{Address, Version};
use socksref::server::{Credential, ServerConfig, Wiring};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use common::hex;

fn tls_server(config: ServerConfig) -> ServerConfig {
    ServerConfig { wiring: Wiring { tls: Some(socksref::tls::server_config().unwrap()), ..config.wiring }, ..config }
}

fn alice() -> Vec<Credential> {
    vec![Credential { user: b"alice".to_vec(), pass: b"pw".to_vec() }]
}

fn quick(hops: Vec<Hop>) -> Chain {
    Chain { handshake_timeout: Duration::from_secs(3), connect_timeout: Duration::from_secs(3), ..Chain::new(hops) }
}

fn tls_hop(proxy: SocketAddr) -> Hop {
    let mut h = Hop::new(Version::V5, proxy.into());
    h.tls = HopTls::AcceptAny;
    h
}

/// Sends bytes of every value through the tunnel and checks the XOR echo, then a larger block.
async fn xor_roundtrip<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) {
    let data: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let (mut r, mut w) = tokio::io::split(s);
    let send = async {
        w.write_all(&data).await.unwrap();
        w.flush().await.unwrap();
    };
    let recv = async {
        let mut got = vec![0u8; data.len()];
        tokio::time::timeout(Duration::from_secs(10), r.read_exact(&mut got)).await.unwrap().unwrap();
        got
    };
    let ((), got) = tokio::join!(send, recv);
    assert!(got.iter().zip(&data).all(|(g, d)| *g == d ^ 0x5a), "payload corrupted");
}

/// A raw TLS client over `s` that accepts any certificate, as gost's does.
async fn raw_tls(s: TcpStream) -> socksref::tls::Stream {
    let cfg = socksref::tls::client_config(false, rustls::RootCertStore::empty()).unwrap();
    socksref::tls::Stream::Tcp(s)
        .connect_tls(cfg, rustls::pki_types::ServerName::try_from("gost.run").unwrap())
        .await
        .unwrap()
}

async fn read_n<S: AsyncRead + Unpin>(s: &mut S, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut b)).await.unwrap().unwrap();
    b
}

// --- §3: TLS methods -------------------------------------------------------------------------

#[tokio::test]
async fn method_80_wire_trace_as_two_default_gosts() {
    // §3.7 trace 1: 05 02 00 80 → 05 80 → TLS → request/reply inside TLS → data.
    let echo = common::xor_echo().await;
    let srv = common::start(tls_server(ServerConfig::default())).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(&hex("05 02 00 80")).await.unwrap();
    assert_eq!(read_n(&mut s, 2).await, hex("05 80"));
    let mut t = raw_tls(s).await;
    t.write_all(&[&hex("05 01 00 01 7f 00 00 01")[..], &echo.port().to_be_bytes()].concat()).await.unwrap();
    t.flush().await.unwrap();
    let reply = read_n(&mut t, 10).await;
    assert_eq!(&reply[..4], &hex("05 00 00 01"));
    xor_roundtrip(&mut t).await;
}

#[tokio::test]
async fn method_82_authenticates_inside_tls_and_a_wrong_password_gets_01_01_inside_tls() {
    let echo = common::xor_echo().await;
    let srv = common::start(tls_server(ServerConfig { users: alice(), ..ServerConfig::default() })).await;
    // §3.7 trace 4 with a wrong password: the status comes back through TLS, then close.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(&hex("05 04 00 02 80 82")).await.unwrap();
    assert_eq!(read_n(&mut s, 2).await, hex("05 82"));
    let mut t = raw_tls(s).await;
    t.write_all(&hex("01 05 616c696365 02 7878")).await.unwrap();
    t.flush().await.unwrap();
    assert_eq!(read_n(&mut t, 2).await, hex("01 01"));
    // And with our client: the right password works, a wrong one is AuthFailed.
    let mut hop = tls_hop(srv.addr).with_credentials("alice", "pw");
    let mut c = quick(vec![hop.clone()]).connect(&echo.into()).await.unwrap();
    assert!(matches!(c, socksref::tls::Stream::TlsClient(_)));
    xor_roundtrip(&mut c).await;
    hop.credentials = Some((b"alice".to_vec(), b"no".to_vec()));
    let e = quick(vec![hop]).connect(&echo.into()).await.unwrap_err();
    assert!(matches!(e.root(), Error::Proto(ClientError::AuthFailed(1))), "{e}");
}

#[tokio::test]
async fn selection_follows_gost_heads_rule() {
    // §3.3 HEAD: auth ⇒ 82 if offered, else 02 if offered, else FF; no auth ⇒ 80, else 00, else FF.
    let open = common::start(tls_server(ServerConfig::default())).await;
    let auth = common::start(tls_server(ServerConfig { users: alice(), ..ServerConfig::default() })).await;
    let plain_auth = common::start(ServerConfig { users: alice(), ..ServerConfig::default() }).await;
    for (srv, greeting, selected) in [
        (open.addr, "05 02 00 80", "05 80"),
        (open.addr, "05 01 00", "05 00"),
        (open.addr, "05 01 80", "05 80"),
        (open.addr, "05 01 02", "05 ff"),
        (auth.addr, "05 04 00 02 80 82", "05 82"),
        (auth.addr, "05 03 00 02 80", "05 02"), // REL would answer 82 here
        (auth.addr, "05 02 00 80", "05 ff"),    // §3.7 trace 5 (HEAD)
        (plain_auth.addr, "05 04 00 02 80 82", "05 02"), // notls server
    ] {
        let mut s = TcpStream::connect(srv).await.unwrap();
        s.write_all(&hex(greeting)).await.unwrap();
        assert_eq!(read_n(&mut s, 2).await, hex(selected), "{greeting}");
    }
}

#[tokio::test]
async fn notls_on_either_side_falls_back_to_plain_methods() {
    let echo = common::xor_echo().await;
    // Client offers 80, server is notls: 00 is selected and the tunnel is plain TCP.
    let plain = common::start(ServerConfig::default()).await;
    let mut s = quick(vec![tls_hop(plain.addr)]).connect(&echo.into()).await.unwrap();
    assert!(matches!(s, socksref::tls::Stream::Tcp(_)));
    xor_roundtrip(&mut s).await;
    // Client is notls (offers only 00), server offers TLS: 00, plain.
    let tls = common::start(tls_server(ServerConfig::default())).await;
    let mut s = quick(vec![Hop::new(Version::V5, tls.addr.into())]).connect(&echo.into()).await.unwrap();
    assert!(matches!(s, socksref::tls::Stream::Tcp(_)));
    xor_roundtrip(&mut s).await;
}

#[tokio::test]
async fn tls_inside_tls_through_two_hops_and_bind_and_udp_over_tls_control() {
    let echo = common::xor_echo().await;
    let a = common::start(tls_server(ServerConfig::default())).await;
    let b = common::start(tls_server(ServerConfig {
        users: alice(),
        allow_bind: true,
        allow_udp: true,
        ..ServerConfig::default()
    }))
    .await;
    let chain = quick(vec![tls_hop(a.addr), tls_hop(b.addr).with_credentials("alice", "pw")]);
    let mut s = chain.connect(&echo.into()).await.unwrap();
    xor_roundtrip(&mut s).await;

    // BIND at a TLS hop: both replies come through TLS, then the peer's bytes.
    let one = quick(vec![tls_hop(b.addr).with_credentials("alice", "pw")]);
    let pending = one.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).await.unwrap();
    let bound = pending.bound.socket_addr().unwrap();
    let accept = tokio::spawn(pending.accept());
    let mut peer = TcpStream::connect(bound).await.unwrap();
    peer.write_all(b"hello").await.unwrap();
    let (mut s, _) = accept.await.unwrap().unwrap();
    assert_eq!(read_n(&mut s, 5).await, b"hello");
    s.write_all(b"back").await.unwrap();
    s.flush().await.unwrap();
    assert_eq!(read_n(&mut peer, 4).await, b"back");

    // UDP ASSOCIATE whose control connection is TLS.
    let uecho = common::udp_xor_echo().await;
    let assoc = one.udp_associate().await.unwrap();
    assoc.send_to(b"\x01\x02", &uecho.into()).await.unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), assoc.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], &[1 ^ 0x5a, 2 ^ 0x5a]);
}

#[tokio::test]
async fn bytes_pipelined_before_the_tls_selection_are_refused() {
    let srv = common::start(tls_server(ServerConfig::default())).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    // A client cannot know 80 will be selected, so anything after its greeting is not TLS.
    s.write_all(&hex("05 01 80 05 01 00 01 7f 00 00 01 00 50")).await.unwrap();
    assert_eq!(read_n(&mut s, 2).await, hex("05 80"));
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut rest)).await.unwrap();
    assert!(r.is_err() || rest.is_empty(), "{rest:?}");
}

// --- §4.7: UDP-TUN ---------------------------------------------------------------------------

#[tokio::test]
async fn udp_tun_relay_mode_wire_bytes_and_payload_integrity() {
    let uecho = common::udp_xor_echo().await;
    let srv = common::start(ServerConfig { allow_udp: true, ..ServerConfig::default() }).await;
    // Raw: gost's request, then a frame exactly as gost writes it (three writes).
    let mut s = common::greeted(srv.addr).await;
    s.write_all(&hex("05 f3 00 01 00000000 0000")).await.unwrap();
    let reply = read_n(&mut s, 10).await;
    assert_eq!(&reply[..4], &hex("05 00 00 01"));
    let port = uecho.port().to_be_bytes();
    s.write_all(&hex("00 05 ff")).await.unwrap();
    s.write_all(&[&hex("01 7f000001")[..], &port].concat()).await.unwrap();
    s.write_all(b"hello").await.unwrap();
    let back = read_n(&mut s, 15).await;
    let xored: Vec<u8> = b"hello".iter().map(|b| b ^ 0x5a).collect();
    assert_eq!(back, [&hex("00 05 ff 01 7f000001")[..], &port, &xored].concat());

    // Our client: sizes up to the frame maximum survive intact; empty datagrams are not sent.
    let tun = quick(vec![Hop::new(Version::V5, srv.addr.into())]).udp_tun(None).await.unwrap();
    assert_eq!(tun.send_to(b"", &uecho.into()).await.unwrap(), 0);
    for n in [1usize, 100, 1400, 4097, 65_000] {
        let data: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
        tun.send_to(&data, &uecho.into()).await.unwrap();
        let mut buf = vec![0u8; 70_000];
        let (got, from) = tokio::time::timeout(Duration::from_secs(5), tun.recv_from(&mut buf)).await.unwrap().unwrap();
        assert_eq!(got, n);
        assert_eq!(from, uecho.into());
        assert!(buf[..n].iter().zip(&data).all(|(g, d)| *g == d ^ 0x5a), "size {n}");
    }
}

#[tokio::test]
async fn udp_tun_over_tls_and_gated_like_gost() {
    let uecho = common::udp_xor_echo().await;
    let srv = common::start(tls_server(ServerConfig { allow_udp: true, ..ServerConfig::default() })).await;
    let tun = quick(vec![tls_hop(srv.addr)]).udp_tun(None).await.unwrap();
    tun.send_to(b"\x01\x02\x03", &uecho.into()).await.unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), tun.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], &[1 ^ 0x5a, 2 ^ 0x5a, 3 ^ 0x5a]);
    // §4.2: relay mode needs udp, bind mode needs bind: 02 otherwise; neither enabled: 07.
    let bind_only = common::start(ServerConfig { allow_bind: true, ..ServerConfig::default() }).await;
    let udp_only = common::start(ServerConfig { allow_udp: true, ..ServerConfig::default() }).await;
    let neither = common::start(ServerConfig::default()).await;
    for (srv, req, rep) in [
        (bind_only.addr, "05 f3 00 01 00000000 0000", 0x02),
        (udp_only.addr, "05 f3 00 01 7f000001 4e20", 0x02),
        (neither.addr, "05 f3 00 01 00000000 0000", 0x07),
        (bind_only.addr, "05 f3 00 01 7f000001 0035", 0x02), // privileged port
    ] {
        let mut s = common::greeted(srv).await;
        s.write_all(&hex(req)).await.unwrap();
        assert_eq!(read_n(&mut s, 10).await, [&[0x05, rep][..], &hex("00 01 00000000 0000")].concat(), "{req}");
    }
}

#[tokio::test]
async fn udp_tun_bind_mode_passes_peer_datagrams_both_ways() {
    let srv = common::start(ServerConfig { allow_bind: true, ..ServerConfig::default() }).await;
    let port = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let tun = quick(vec![Hop::new(Version::V5, srv.addr.into())]).udp_tun(Some(&listen.into())).await.unwrap();
    assert_eq!(tun.bound(), &listen.into());
    let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    peer.send_to(b"ping", listen).await.unwrap();
    let mut buf = [0u8; 16];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), tun.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!((&buf[..n], from.clone()), (&b"ping"[..], peer.local_addr().unwrap().into()));
    tun.send_to(b"pong", &from).await.unwrap();
    let (n, src) = tokio::time::timeout(Duration::from_secs(5), peer.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!((&buf[..n], src), (&b"pong"[..], listen));
}

fn shutdown() -> (tokio::sync::oneshot::Sender<()>, impl std::future::Future<Output = ()>) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

async fn udp_roundtrip(to: SocketAddr) {
    let c = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for n in [1usize, 512, 8000] {
        let data: Vec<u8> = (0..n).map(|i| i as u8).collect();
        let mut buf = vec![0u8; 9000];
        // The first datagram may race the forwarder's setup; retry a few times.
        let mut got = None;
        for _ in 0..5 {
            c.send_to(&data, to).await.unwrap();
            if let Ok(Ok((m, _))) = tokio::time::timeout(Duration::from_secs(1), c.recv_from(&mut buf)).await {
                got = Some(m);
                break;
            }
        }
        let m = got.expect("an answer");
        assert_eq!(m, n);
        assert!(buf[..n].iter().zip(&data).all(|(g, d)| *g == d ^ 0x5a), "size {n}");
    }
}

#[tokio::test]
async fn udp_forwarder_via_udp_tun_and_via_associate() {
    use socksref::forward::{udp_via, UdpVia};
    let uecho = common::udp_xor_echo().await;
    let srv = common::start(tls_server(ServerConfig { allow_udp: true, ..ServerConfig::default() })).await;
    for via in [UdpVia::Tun, UdpVia::Associate] {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = sock.local_addr().unwrap();
        let chain = Arc::new(quick(vec![tls_hop(srv.addr)]));
        let (_stop, sd) = shutdown();
        tokio::spawn(udp_via(sock, uecho.into(), chain, Duration::from_secs(5), via, sd));
        udp_roundtrip(local).await;
    }
}

#[tokio::test]
async fn rudp_forwarder_listens_at_the_proxy() {
    let uecho = common::udp_xor_echo().await;
    let srv = common::start(ServerConfig { allow_bind: true, ..ServerConfig::default() }).await;
    let port = testkit::free_udp_addr().unwrap().port();
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let chain = Arc::new(quick(vec![Hop::new(Version::V5, srv.addr.into())]));
    let (_stop, sd) = shutdown();
    tokio::spawn(socksref::forward::rudp(listen.into(), uecho.into(), chain, Duration::from_secs(5), sd));
    udp_roundtrip(listen).await;
}

// --- §4.5: MBIND over smux -------------------------------------------------------------------

#[tokio::test]
async fn mbind_wire_bytes_first_stream_is_sid_3_with_its_own_reply_frame() {
    let srv = common::start(ServerConfig { allow_bind: true, ..ServerConfig::default() }).await;
    let mut s = common::greeted(srv.addr).await;
    s.write_all(&hex("05 f2 00 01 7f000001 0000")).await.unwrap();
    let reply = read_n(&mut s, 10).await;
    assert_eq!(&reply[..8], &hex("05 00 00 01 7f000001"));
    let port = u16::from_be_bytes([reply[8], reply[9]]);
    let mut peer = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let pa = peer.local_addr().unwrap();
    let syn = read_n(&mut s, 8).await;
    assert_eq!(syn, hex("01 00 00 00 03 00 00 00"));
    let psh = read_n(&mut s, 18).await;
    let want = [&hex("01 02 0a 00 03 00 00 00 05 00 00 01 7f000001")[..], &pa.port().to_be_bytes()].concat();
    assert_eq!(psh, want);
    peer.write_all(b"data").await.unwrap();
    assert_eq!(read_n(&mut s, 12).await, [&hex("01 02 04 00 03 00 00 00")[..], b"data"].concat());
    // Data back on sid 3, then FIN closes the peer's connection.
    s.write_all(&[&hex("01 02 02 00 03 00 00 00")[..], b"ok", &hex("01 01 00 00 03 00 00 00")].concat()).await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), peer.read_to_end(&mut back)).await.unwrap().unwrap();
    assert_eq!(back, b"ok");
}

#[tokio::test]
async fn mbind_client_and_server_over_tls_with_many_peers() {
    let srv = common::start(tls_server(ServerConfig { allow_bind: true, ..ServerConfig::default() })).await;
    let chain = quick(vec![tls_hop(srv.addr)]);
    let mux = chain.mbind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).await.unwrap();
    let bound = mux.bound.socket_addr().unwrap();
    let mut peers = Vec::new();
    for _ in 0..3 {
        peers.push(TcpStream::connect(bound).await.unwrap());
    }
    for _ in 0..3 {
        let (mut s, from) = tokio::time::timeout(Duration::from_secs(5), mux.accept()).await.unwrap().unwrap();
        let p = peers.iter_mut().find(|p| Address::from(p.local_addr().unwrap()) == from).expect("a known peer");
        p.write_all(b"x").await.unwrap();
        assert_eq!(read_n(&mut s, 1).await, b"x");
        s.write_all(b"yz").await.unwrap();
        assert_eq!(read_n(p, 2).await, b"yz");
    }
}

#[tokio::test]
async fn rtcp_forwarder_via_mbind_relays_large_payloads() {
    let echo = common::xor_echo().await;
    let srv = common::start(ServerConfig { allow_bind: true, ..ServerConfig::default() }).await;
    let port = common::free_port();
    let listen: SocketAddr = ([127, 0, 0, 1], port).into();
    let chain = Arc::new(quick(vec![Hop::new(Version::V5, srv.addr.into())]));
    let (_stop, sd) = shutdown();
    tokio::spawn(socksref::forward::rtcp_mux(listen.into(), echo.into(), chain, sd));
    let mut c = None;
    for _ in 0..50 {
        if let Ok(s) = TcpStream::connect(listen).await {
            c = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut c = c.expect("rtcp listening at the proxy");
    xor_roundtrip(&mut c).await;
    let mut c2 = TcpStream::connect(listen).await.unwrap();
    xor_roundtrip(&mut c2).await;
}
