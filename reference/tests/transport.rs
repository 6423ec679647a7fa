//! Every transport (docs/transports.md) between our own server and client on loopback: CONNECT
//! with megabytes both ways, UDP-TUN (`F3`), MBIND (`F2`), chains that mix transports, and bad
//! input at each transport's door (a failed TLS handshake, a wrong WebSocket path, plain HTTP,
//! garbage), which must close the connection without harming the listener.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use testkit::pseudo_random;

use rstest::rstest;
use rstest_reuse::apply;
use sha2::{Digest, Sha256};
use socksref::client::{Chain, Hop};
use socksref::proto::{Address, Version};
use socksref::server::{serve_on, ServerConfig};
use socksref::transport::{split_url, Dialer, Kind, Listener, TransportSpec};
use socksref::url::ProxyUrl;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// A server with BIND/MBIND and UDP enabled on `kind`, stopped when dropped.
struct Server {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn server(spec: &TransportSpec) -> Server {
    // A TCP listener, or kcp's UDP socket.
    let listener = Listener::bind("127.0.0.1:0", spec).await.unwrap();
    let addr = listener.local_addr();
    let config = ServerConfig { allow_bind: true, allow_udp: true, ..ServerConfig::default() };
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(serve_on(listener, config, async move {
        let _ = rx.await;
    }));
    Server { addr, _stop: tx }
}

/// A SOCKS5 hop at `addr` over `kind` with its default keys.
fn hop(kind: Kind, addr: SocketAddr) -> Hop {
    hop_over(TransportSpec::new(kind), addr)
}

/// A SOCKS5 hop at `addr` dialled with `spec` (a path, a key): the one place these tests build a
/// `Hop` by hand.
fn hop_over(spec: TransportSpec, addr: SocketAddr) -> Hop {
    let mut h = Hop::new(Version::V5, addr.into());
    h.transport = Arc::new(Dialer::new(spec).unwrap());
    h
}

fn chain(hops: Vec<Hop>) -> Chain {
    Chain { handshake_timeout: Duration::from_secs(5), connect_timeout: Duration::from_secs(5), ..Chain::new(hops) }
}

/// Writes `data` and reads back as many bytes, which the XOR echo returns XORed with 0x5a;
/// compares the SHA-256 of what came back with what was expected.
async fn xor_roundtrip<S: AsyncRead + AsyncWrite + Unpin>(s: S, data: &[u8]) {
    let (mut r, mut w) = tokio::io::split(s);
    let send = async {
        w.write_all(data).await.unwrap();
        w.flush().await.unwrap();
        w
    };
    let recv = async {
        let mut got = vec![0u8; data.len()];
        tokio::time::timeout(Duration::from_secs(60), r.read_exact(&mut got)).await.expect("echo stalled").unwrap();
        got
    };
    let (_w, got) = tokio::join!(send, recv);
    let expected: Vec<u8> = data.iter().map(|b| b ^ 0x5a).collect();
    assert_eq!(Sha256::digest(&got), Sha256::digest(&expected), "payload corrupted");
}

const KINDS: [Kind; 8] = [Kind::Tcp, Kind::Tls, Kind::Ws, Kind::Wss, Kind::Mtls, Kind::Mws, Kind::Mwss, Kind::Kcp];

#[apply(testkit::tunnels)]
#[case::tcp(Kind::Tcp)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_carries_megabytes_both_ways(#[case] kind: Kind) {
    let echo = common::xor_echo().await;
    let srv = server(&TransportSpec::new(kind)).await;
    let c = chain(vec![hop(kind, srv.addr)]);
    let s = c.connect(&echo.into()).await.unwrap();
    xor_roundtrip(s, &pseudo_random(7, 4 << 20)).await;
    // A second and third conversation: for the smux kinds (and kcp) they are new streams on the
    // same session, concurrently.
    let target: Address = echo.into();
    let (a, b) = tokio::join!(c.connect(&target), c.connect(&target));
    let (pa, pb) = (pseudo_random(1, 300_000), pseudo_random(2, 300_000));
    tokio::join!(xor_roundtrip(a.unwrap(), &pa), xor_roundtrip(b.unwrap(), &pb));
}

#[apply(testkit::tunnels)]
#[tokio::test]
async fn udp_tun_over_the_transport(#[case] kind: Kind) {
    let echo = common::udp_xor_echo().await;
    let srv = server(&TransportSpec::new(kind)).await;
    let tun = chain(vec![hop(kind, srv.addr)]).udp_tun(None).await.unwrap();
    for (i, len) in [1usize, 100, 1400, 4000].into_iter().enumerate() {
        let data = pseudo_random(i as u64 + 11, len);
        tun.send_to(&data, &echo.into()).await.unwrap();
        let mut buf = vec![0u8; 8192];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), tun.recv_from(&mut buf)).await.unwrap().unwrap();
        assert_eq!(from, Address::from(echo));
        let expected: Vec<u8> = data.iter().map(|b| b ^ 0x5a).collect();
        assert_eq!(&buf[..n], &expected[..], "datagram {i} ({len} bytes)");
    }
}

#[apply(testkit::tunnels)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mbind_over_the_transport(#[case] kind: Kind) {
    let srv = server(&TransportSpec::new(kind)).await;
    let mux =
        chain(vec![hop(kind, srv.addr)]).mbind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).await.unwrap();
    let bound = mux.bound.socket_addr().expect("an IP BND");
    for round in 0..2u64 {
        let mut peer = TcpStream::connect(bound).await.unwrap();
        let (mut inbound, from) = tokio::time::timeout(Duration::from_secs(5), mux.accept()).await.unwrap().unwrap();
        assert_eq!(from.socket_addr(), Some(peer.local_addr().unwrap()));
        let up = pseudo_random(round + 20, 1 << 20);
        let down = pseudo_random(round + 30, 1 << 20);
        let (up2, down2) = (up.clone(), down.clone());
        let peer_side = async {
            peer.write_all(&up2).await.unwrap();
            let mut got = vec![0u8; down2.len()];
            peer.read_exact(&mut got).await.unwrap();
            got
        };
        let our_side = async {
            let mut got = vec![0u8; up.len()];
            inbound.read_exact(&mut got).await.unwrap();
            inbound.write_all(&down).await.unwrap();
            inbound.flush().await.unwrap();
            got
        };
        let (at_peer, at_us) =
            tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(peer_side, our_side) })
                .await
                .expect("mbind stalled");
        assert_eq!(Sha256::digest(&at_us), Sha256::digest(&up));
        assert_eq!(Sha256::digest(&at_peer), Sha256::digest(&down));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_runs_each_hops_transport_inside_the_previous_tunnel() {
    // hop 0 over wss, hop 1 over mtls reached through hop 0, hop 2 over ws through both.
    let echo = common::xor_echo().await;
    let (wss, mtls, ws) = (TransportSpec::new(Kind::Wss), TransportSpec::new(Kind::Mtls), TransportSpec::new(Kind::Ws));
    let (a, b, c) = tokio::join!(server(&wss), server(&mtls), server(&ws));
    let ch = chain(vec![hop(Kind::Wss, a.addr), hop(Kind::Mtls, b.addr), hop(Kind::Ws, c.addr)]);
    xor_roundtrip(ch.connect(&echo.into()).await.unwrap(), &pseudo_random(5, 1 << 20)).await;
    // The mtls session at hop 1 is reused: the next connect starts from it.
    xor_roundtrip(ch.connect(&echo.into()).await.unwrap(), &pseudo_random(6, 100_000)).await;
}

#[tokio::test]
async fn a_dead_smux_session_is_replaced() {
    let echo = common::xor_echo().await;
    let first = server(&TransportSpec::new(Kind::Mws)).await;
    let addr = first.addr;
    let c = chain(vec![hop(Kind::Mws, addr)]);
    xor_roundtrip(c.connect(&echo.into()).await.unwrap(), b"before").await;
    drop(first); // the server goes away, and with it the session
                 // A new server on the same port (the old listener is gone once its task stopped).
    let tcp = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let listener = Listener::new(tcp, &TransportSpec::new(Kind::Mws)).unwrap();
    let (_tx, rx) = oneshot::channel::<()>();
    tokio::spawn(serve_on(listener, ServerConfig::default(), async move {
        let _ = rx.await;
    }));
    // The old session may still look alive for a moment; the attempt after it noticed works.
    let mut ok = false;
    for _ in 0..50 {
        if let Ok(s) = c.connect(&echo.into()).await {
            xor_roundtrip(s, b"after").await;
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "no working session after the server came back");
}

/// Reads until EOF or error; fails the test if the server keeps the connection open.
async fn closed_by_server(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.expect("connection left open") {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[rstest]
#[case::tls(Kind::Tls)]
#[case::wss(Kind::Wss)]
#[case::mtls(Kind::Mtls)]
#[case::mwss(Kind::Mwss)]
#[tokio::test]
async fn failed_tls_handshakes_close_and_the_listener_lives_on(#[case] kind: Kind) {
    let echo = common::xor_echo().await;
    let srv = server(&TransportSpec::new(kind)).await;
    // A SOCKS5 greeting where a ClientHello belongs, then a ClientHello-shaped record of junk.
    for junk in [&b"\x05\x01\x00"[..], &b"\x16\x03\x01\x00\x05hello"[..], &[0u8; 600][..]] {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(junk).await.unwrap();
        let got = closed_by_server(&mut s).await;
        assert!(!got.starts_with(b"\x05"), "a SOCKS answer outside TLS: {got:?}");
    }
    xor_roundtrip(chain(vec![hop(kind, srv.addr)]).connect(&echo.into()).await.unwrap(), b"still serving").await;
}

#[rstest]
#[case::ws(Kind::Ws)]
#[case::mws(Kind::Mws)]
#[tokio::test]
async fn wrong_ws_path_plain_http_and_garbage_are_refused(#[case] kind: Kind) {
    let echo = common::xor_echo().await;
    let srv = server(&TransportSpec::new(kind)).await;
    let upgrade = |path: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    };
    let cases: [(String, &str); 4] = [
        (upgrade("/wrong"), "HTTP/1.1 404"),
        (upgrade("/ws/"), "HTTP/1.1 404"),
        ("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n".into(), "HTTP/1.1 400"),
        ("\u{5}\u{1}\u{0}\r\n\r\n".into(), "HTTP/1.1 400"),
    ];
    for (request, status) in cases {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let got = String::from_utf8_lossy(&closed_by_server(&mut s).await).into_owned();
        assert!(got.starts_with(status), "{request:?} → {got:?}");
    }
    // Bytes sent before the 101 (gorilla refuses those too): closed without an upgrade.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(format!("{}\x05\x01\x00", upgrade("/ws")).as_bytes()).await.unwrap();
    assert!(!String::from_utf8_lossy(&closed_by_server(&mut s).await).contains("101"));
    // A client that hangs up mid-request leaves no task behind that blocks the next one.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET /ws HTT").await.unwrap();
    drop(s);
    xor_roundtrip(chain(vec![hop(kind, srv.addr)]).connect(&echo.into()).await.unwrap(), b"still serving").await;
}

#[tokio::test]
async fn a_dialer_on_the_wrong_path_gets_a_clear_error() {
    let srv = server(&TransportSpec::new(Kind::Ws)).await;
    let mut spec = TransportSpec::new(Kind::Ws);
    spec.ws.path = "/other".into();
    let e = chain(vec![hop_over(spec, srv.addr)])
        .connect(&"127.0.0.1:9".parse::<SocketAddr>().unwrap().into())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("404"), "{e}");
}

#[tokio::test]
async fn urls_pick_the_transport_and_its_keys() {
    for kind in KINDS {
        let url = ProxyUrl::parse(&format!("socks5+{kind}://127.0.0.1:1080?bind=true")).unwrap();
        let (url, spec) = split_url(url).unwrap();
        assert_eq!((url.scheme.as_str(), spec.kind), ("socks5", kind));
    }
    let (_, spec) = split_url(ProxyUrl::parse("socks5+ws://h:1?path=/tunnel&host=example.com").unwrap()).unwrap();
    assert_eq!((spec.ws.path.as_str(), spec.ws.host.as_deref()), ("/tunnel", Some("example.com")));
}

#[tokio::test]
async fn ws_path_and_host_reach_the_server() {
    // The server on /tunnel accepts only a dialer on /tunnel.
    let echo = common::xor_echo().await;
    let (_, spec) = split_url(ProxyUrl::parse("socks5+ws://127.0.0.1:0?path=/tunnel").unwrap()).unwrap();
    let srv = server(&spec).await;
    xor_roundtrip(chain(vec![hop_over(spec, srv.addr)]).connect(&echo.into()).await.unwrap(), b"on /tunnel").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcp_garbage_and_wrong_keys_are_dropped_and_the_listener_lives_on() {
    let echo = common::xor_echo().await;
    let (_, spec) =
        split_url(ProxyUrl::parse("socks5+kcp://127.0.0.1:0?kcp.key=right&kcp.mode=fast").unwrap()).unwrap();
    let srv = server(&spec).await;
    // Garbage of every length, then a whole kcp session under the wrong key (its datagrams fail
    // the CRC after decryption): all dropped with a debug line, nothing answered.
    let junk = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for len in [0usize, 1, 19, 20, 24, 52, 300, 1400, 1500, 9000] {
        junk.send_to(&pseudo_random(len as u64, len), srv.addr).await.unwrap();
    }
    let mut wrong_spec = spec.clone();
    wrong_spec.kcp.key = "wrong".into();
    let wrong = Chain {
        handshake_timeout: Duration::from_millis(1500),
        connect_timeout: Duration::from_millis(1500),
        ..Chain::new(vec![hop_over(wrong_spec, srv.addr)])
    };
    let e = wrong.connect(&echo.into()).await.expect_err("a wrong key gets no reply");
    assert!(e.to_string().contains("timed out") || e.to_string().contains("deadline"), "{e}");
    let mut buf = [0u8; 64];
    let silent = tokio::time::timeout(Duration::from_millis(300), junk.recv_from(&mut buf)).await;
    assert!(silent.is_err(), "the listener answered garbage");
    // The right key still gets a tunnel.
    xor_roundtrip(
        chain(vec![hop_over(spec, srv.addr)]).connect(&echo.into()).await.unwrap(),
        &pseudo_random(3, 200_000),
    )
    .await;
}

#[tokio::test]
async fn kcp_urls_take_gosts_keys_and_refuse_bad_values() {
    let url = "socks5+kcp://127.0.0.1:1080?kcp.key=k&kcp.mode=fast3&nocomp=true&kcp.datashard=0&bind=true";
    let (url, spec) = split_url(ProxyUrl::parse(url).unwrap()).unwrap();
    assert_eq!((url.scheme.as_str(), spec.kind), ("socks5", Kind::Kcp));
    assert_eq!((spec.kcp.key.as_str(), spec.kcp.interval, spec.kcp.nocomp, spec.kcp.datashard), ("k", 10, true, 0));
    // kcp's keys are gone, the handler's stay; smux inside: gost's TLS methods are off.
    assert!(url.params.keys().all(|k| !k.starts_with("kcp.") && k != "nocomp"), "{url}");
    assert!(url.params.contains_key("bind"));
    assert_eq!(url.params.get("notls").map(String::as_str), Some("true"));
    let e = split_url(ProxyUrl::parse("socks5+kcp://:1?kcp.key=k&kcp.sndwnd=lots").unwrap()).unwrap_err();
    assert_eq!(e.part, "query kcp.sndwnd", "{e}");
    let e = split_url(ProxyUrl::parse("socks5+kcp://:1?kcp.crypt=tea").unwrap()).unwrap_err();
    assert_eq!(e.part, "query kcp.crypt", "{e}");
}

#[tokio::test]
async fn a_kcp_hop_behind_another_hop_is_a_clear_error() {
    let first = server(&TransportSpec::tcp()).await;
    let second = server(&TransportSpec::new(Kind::Kcp)).await;
    let c = chain(vec![hop(Kind::Tcp, first.addr), hop(Kind::Kcp, second.addr)]);
    let e = c.connect(&"127.0.0.1:9".parse::<SocketAddr>().unwrap().into()).await.unwrap_err();
    assert!(e.to_string().contains("first hop"), "{e}");
}

/// A free loopback port for `transport`'s listener: UDP for kcp, TCP otherwise.
fn free_port_for(transport: &str) -> u16 {
    if transport == "kcp" {
        testkit::free_udp_addr().unwrap().port()
    } else {
        testkit::free_port().unwrap()
    }
}

/// Waits until the forwarder's server side listens on `port`.
async fn wait_listening(transport: &str, port: u16) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    if transport == "kcp" {
        testkit::wait_udp_bound(addr, Duration::from_secs(10)).await.unwrap();
    } else {
        drop(common::connect_retry(addr).await);
    }
}

/// gost's port forwarding over a transport, both ways with real gost: the server side is a TCP
/// forwarder on the transport's listener (`-L tcp+T://:p/target`, gost's forward handler), the
/// client side a plain forwarder through a forward node (`-L tcp://:a -F forward+T://host:p`,
/// gost's pass-through connector), 4 MiB each way with a checksum through the XOR echo.
#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_forwarding_over_a_transport_with_gost_both_ways(
    #[values("tls", "ws", "wss", "mtls", "mws", "mwss", "kcp")] transport: &str,
) {
    let Some(gost) = common::gost_bin() else { return };
    let socksref = std::path::PathBuf::from(env!("CARGO_BIN_EXE_socksref"));
    let echo = common::xor_echo().await;
    let data = pseudo_random(7, 4 << 20);
    for (server, client) in [(&socksref, &gost), (&gost, &socksref)] {
        let port = free_port_for(transport);
        let local = testkit::free_port().unwrap();
        let _server = common::spawn(server, &["-L".into(), format!("tcp+{transport}://127.0.0.1:{port}/{echo}")]);
        wait_listening(transport, port).await;
        let _client = common::spawn(
            client,
            &[
                "-L".into(),
                format!("tcp://127.0.0.1:{local}"),
                "-F".into(),
                format!("forward+{transport}://127.0.0.1:{port}"),
            ],
        );
        let s = common::connect_retry(SocketAddr::from(([127, 0, 0, 1], local))).await;
        let who = if server == &socksref { "gost → socksref" } else { "socksref → gost" };
        println!("{transport}: {who}");
        xor_roundtrip(s, &data).await;
    }
}
