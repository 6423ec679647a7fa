//! gost's SOCKS5 extensions (specs/gost-socks.md) between our own client and server on loopback,
//! plus raw-byte checks of what goes on the wire: the TLS methods `80`/`82` (§3), UDP-TUN `F3`
//! (§4.7) and the forwarders built on them.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use socksref::client::{Chain, Error, Hop, HopTls};
use socksref::proto::client::ClientError;
use socksref::proto::Version;
use socksref::server::{Credential, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use common::hex;

fn tls_server(config: ServerConfig) -> ServerConfig {
    ServerConfig { tls: Some(socksref::tls::server_config().unwrap()), ..config }
}

fn alice() -> Vec<Credential> {
    vec![Credential { user: b"alice".to_vec(), pass: b"pw".to_vec() }]
}

fn quick(hops: Vec<Hop>) -> Chain {
    Chain { hops, handshake_timeout: Duration::from_secs(3), connect_timeout: Duration::from_secs(3) }
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
