//! The `socksref` binary as users run it, with real clients: Debian's curl, reqwest, chains of
//! two instances, and the forwarders.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_every_mode() {
    let target = http("curl says hi").await;
    let url = format!("http://{target}/");
    let named = format!("http://localhost:{}/", target.port());
    let open = free_port();
    let authed = free_port();
    let _s = socksref(&[
        "-L",
        &format!("socks://127.0.0.1:{open}"),
        "-L",
        &format!("socks5://alice:s%3Acret@127.0.0.1:{authed}"),
    ]);
    wait_ready(open);
    wait_ready(authed);
    let proxy = format!("127.0.0.1:{open}");
    for (flag, u) in [("--socks4", &url), ("--socks4a", &named), ("--socks5", &url), ("--socks5-hostname", &named)] {
        let (ok, body) = tokio::task::block_in_place(|| curl(&[flag, &proxy, u]));
        assert!(ok, "curl {flag} failed");
        assert_eq!(body, "curl says hi", "curl {flag}");
    }
    let proxy = format!("127.0.0.1:{authed}");
    let (ok, body) =
        tokio::task::block_in_place(|| curl(&["--socks5-hostname", &proxy, "--proxy-user", "alice:s:cret", &named]));
    assert!(ok && body == "curl says hi", "curl with --proxy-user");
    let (ok, _) = tokio::task::block_in_place(|| curl(&["--socks5", &proxy, "--proxy-user", "alice:wrong", &url]));
    assert!(!ok, "a wrong password must not get through");
    let (ok, _) = tokio::task::block_in_place(|| curl(&["--socks4", &proxy, &url]));
    assert!(!ok, "SOCKS4 on an authenticating SOCKS5-only service must fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reqwest_through_socks5h_socks5_with_auth_and_socks4a() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let target = http("reqwest says hi").await;
    let open = free_port();
    let authed = free_port();
    let _s =
        socksref(&["-L", &format!("socks://127.0.0.1:{open}"), "-L", &format!("socks5://bob:pw@127.0.0.1:{authed}")]);
    wait_ready(open);
    wait_ready(authed);
    for proxy in [
        format!("socks5h://127.0.0.1:{open}"),
        format!("socks4a://127.0.0.1:{open}"),
        format!("socks4://127.0.0.1:{open}"),
        format!("socks5h://bob:pw@127.0.0.1:{authed}"),
    ] {
        let client = reqwest::Client::builder().proxy(reqwest::Proxy::all(&proxy).unwrap()).build().unwrap();
        let body = client
            .get(format!("http://localhost:{}/", target.port()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{proxy}: {e}"))
            .text()
            .await
            .unwrap();
        assert_eq!(body, "reqwest says hi", "{proxy}");
    }
    let bad = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("socks5h://bob:nope@127.0.0.1:{authed}")).unwrap())
        .build()
        .unwrap();
    assert!(bad.get(format!("http://{target}/")).send().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_two_socksref_instances() {
    let target = http("through two hops").await;
    let (a, b) = (free_port(), free_port());
    let _b = socksref(&["-L", &format!("socks5://u:p@127.0.0.1:{b}?udp=true")]);
    let _a =
        socksref(&["-L", &format!("socks://127.0.0.1:{a}?udp=true"), "-F", &format!("socks5://u:p@127.0.0.1:{b}")]);
    wait_ready(a);
    wait_ready(b);
    let named = format!("http://localhost:{}/", target.port());
    let (ok, body) = tokio::task::block_in_place(|| curl(&["--socks5-hostname", &format!("127.0.0.1:{a}"), &named]));
    assert!(ok && body == "through two hops");

    // UDP ASSOCIATE at the first instance relays through an association at the second.
    let echo = udp_xor_echo().await;
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut control = tokio::net::TcpStream::connect(("127.0.0.1", a)).await.unwrap();
    use tokio::io::AsyncWriteExt;
    control.write_all(&[hex("05 01 00 05 03 00"), v4(udp.local_addr().unwrap())].concat()).await.unwrap();
    let r = read_n(&mut control, 12).await;
    assert_eq!(&r[..4], &hex("05 00 05 00"));
    let relay = SocketAddr::from(([127, 0, 0, 1], u16::from_be_bytes([r[10], r[11]])));
    udp.send_to(&[vec![0, 0, 0], v4(echo), b"two hops".to_vec()].concat(), relay).await.unwrap();
    let mut buf = [0u8; 100];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), udp.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[10..n], b"two hops".map(|b| b ^ 0x5a));
    assert_eq!(&buf[3..10], &v4(echo)[..], "the reply names the real source");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarders_tcp_udp_and_rtcp() {
    let target = http("forwarded").await;
    let echo = udp_xor_echo().await;
    let (proxy, tcp_port, udp_port, rtcp_port) = (free_port(), free_port(), free_port(), free_port());
    let _p = socksref(&["-L", &format!("socks5://127.0.0.1:{proxy}?udp=true&bind=true&bindAnyPeer=true")]);
    wait_ready(proxy);
    let hop = format!("socks5://127.0.0.1:{proxy}");
    let _f = socksref(&[
        "-L",
        &format!("tcp://127.0.0.1:{tcp_port}/{target}"),
        "-L",
        &format!("udp://127.0.0.1:{udp_port}/{echo}"),
        "-F",
        &hop,
    ]);
    let _r = socksref(&["-L", &format!("rtcp://:{rtcp_port}/{target}"), "-F", &hop]);
    wait_ready(tcp_port);
    let (ok, body) = tokio::task::block_in_place(|| curl(&[&format!("http://127.0.0.1:{tcp_port}/")]));
    assert!(ok && body == "forwarded", "tcp forwarder");

    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + Duration::from_secs(10);
    let n = loop {
        // The forwarder's UDP socket may not be bound yet: retry a bounded number of times.
        udp.send_to(b"dgram", ("127.0.0.1", udp_port)).await.unwrap();
        if let Ok(Ok((n, _))) = tokio::time::timeout(Duration::from_millis(500), udp.recv_from(&mut buf)).await {
            break n;
        }
        assert!(Instant::now() < deadline, "udp forwarder never answered");
    };
    assert_eq!(&buf[..n], b"dgram".map(|b| b ^ 0x5a));

    wait_ready(rtcp_port);
    for _ in 0..3 {
        let (ok, body) = tokio::task::block_in_place(|| curl(&[&format!("http://127.0.0.1:{rtcp_port}/")]));
        assert!(ok && body == "forwarded", "rtcp forwarder");
        wait_ready(rtcp_port); // the next BIND listens again
    }
}

/// gost's `socks4://admin@…` (docs/gost-peer.md §1): USERID `admin` is served, any other
/// USERID gets `00 5D` and the target is never contacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socks4_userid_is_checked_like_gost() {
    use std::io::{Read, Write};
    let target = http("userid ok").await;
    let port = free_port();
    let _p = socksref(&["-L", &format!("socks4://admin@127.0.0.1:{port}")]);
    wait_ready(port);
    let url = format!("http://{target}/");
    let (ok, body) = tokio::task::block_in_place(|| curl(&["-x", &format!("socks4://admin@127.0.0.1:{port}"), &url]));
    assert!(ok && body == "userid ok", "USERID admin must be served (got ok={ok}, body={body:?})");
    let (ok, _) = tokio::task::block_in_place(|| curl(&["-x", &format!("socks4://eve@127.0.0.1:{port}"), &url]));
    assert!(!ok, "USERID eve must be refused");
    let reply = tokio::task::block_in_place(|| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let SocketAddr::V4(t) = target else { panic!("the http target is IPv4") };
        let mut req = vec![0x04, 0x01];
        req.extend_from_slice(&t.port().to_be_bytes());
        req.extend_from_slice(&t.ip().octets());
        req.extend_from_slice(b"nobody\0");
        s.write_all(&req).unwrap();
        let mut r = Vec::new();
        s.read_to_end(&mut r).unwrap();
        r
    });
    assert_eq!(reply, [0x00, 0x5d, 0, 0, 0, 0, 0, 0], "a wrong USERID gets exactly 00 5D, then close");
}

/// The command byte of the first SOCKS5 request a scripted proxy on `listener` receives (it
/// selects `00`, reads the request head, then refuses with `07` and closes).
async fn first_command(listener: tokio::net::TcpListener) -> u8 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut s, _) = listener.accept().await.unwrap();
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await.unwrap();
    let mut methods = vec![0u8; usize::from(head[1])];
    s.read_exact(&mut methods).await.unwrap();
    s.write_all(&[0x05, 0x00]).await.unwrap();
    let mut req = [0u8; 4];
    s.read_exact(&mut req).await.unwrap();
    let _ = s.write_all(&[0x05, 0x07, 0x00, 0x01, 0, 0, 0, 0, 0, 0]).await;
    req[1]
}

/// `rtcp://` asks the last hop for MBIND (`F2`, as gost) by default and, with `mbind=false`,
/// for one RFC 1928 BIND (`02`) per peer; `mbind` on another forwarder is a URL error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtcp_asks_for_mbind_unless_mbind_false() {
    for (query, want) in [("", 0xF2u8), ("?mbind=false", 0x02)] {
        let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hop = format!("socks5://{}?notls=true", proxy.local_addr().unwrap());
        let _r = socksref(&["-L", &format!("rtcp://:{}/127.0.0.1:9{query}", free_port()), "-F", &hop]);
        let cmd = tokio::time::timeout(Duration::from_secs(10), first_command(proxy)).await.expect("no request");
        assert_eq!(cmd, want, "rtcp{query}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_socksref"))
        .args(["-L", "tcp://127.0.0.1:1/127.0.0.1:2?mbind=false", "-F", "socks5://127.0.0.1:3"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "mbind is only for rtcp://");
    assert!(String::from_utf8_lossy(&out.stderr).contains("mbind"));
}

#[test]
fn malformed_urls_get_one_line_naming_the_bad_part_and_exit_2() {
    for (args, part) in [
        (vec!["-L", "socks5://:99999"], "port"),
        (vec!["-L", "socks5://:1080?bnd=true"], "query bnd"),
        (vec!["-L", "socks5://:1080?bind=maybe"], "query bind"),
        (vec!["-L", "ftp://:21"], "scheme"),
        (vec!["-L", "tcp://:8080"], "path"),
        (vec!["-L", "rtcp://:2222/127.0.0.1:22"], "scheme"),
        (vec!["-L", "socks5://0.0.0.0:1080"], "host"),
        (vec!["-L", "socks5://:1080", "-F", "http://127.0.0.1:3128"], "scheme"),
        (vec!["-L", "socks5://:1080", "-F", "socks5://:1081"], "host"),
        (vec!["-L", "socks5://:1080?allow=10.0.0.1/8"], "query allow"),
        (vec!["-L", "socks5://:1080?deny=*:70000"], "query deny"),
        (vec!["-L", "socks5://:1080?maxHandshakes=0"], "query maxHandshakes"),
        // A transport only on the TCP forwarder; a forward node only as the last hop.
        (vec!["-L", "udp+tls://:5353/127.0.0.1:53"], "services[0].listener.type"),
        (vec!["-L", "tcp://:8080", "-F", "forward+tls://127.0.0.1:8443", "-F", "socks5://127.0.0.1:1080"], "scheme"),
        (vec!["-L", "rtcp://:2222/127.0.0.1:22", "-F", "forward+tls://127.0.0.1:8443"], "scheme"),
        (vec!["-L", "udp://:5353/127.0.0.1:53", "-F", "forward+mws://127.0.0.1:8443"], "scheme"),
        // Without a forward node, a forwarder still needs its target.
        (vec!["-L", "tcp+tls://:8443"], "path"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_socksref")).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(&format!(": {part}: ")), "{args:?}: {err}");
    }
}

#[test]
fn loops_through_our_own_listeners_are_refused_at_start() {
    let (p, q) = (free_port(), free_port());
    let cases: Vec<Vec<String>> = vec![
        vec!["-L".into(), format!("tcp://127.0.0.1:{p}/127.0.0.1:{p}")],
        vec!["-L".into(), format!("tcp://127.0.0.1:{p}/localhost:{p}")],
        vec!["-L".into(), format!("udp://127.0.0.1:{p}/127.0.0.1:{p}")],
        vec!["-L".into(), format!("socks5://127.0.0.1:{p}"), "-F".into(), format!("socks5://127.0.0.1:{p}")],
        vec!["-L".into(), format!("socks5://127.0.0.1:{p}"), "-L".into(), format!("tcp://127.0.0.1:{q}/127.0.0.1:{p}")],
    ];
    for args in cases {
        let out =
            Command::new(env!("CARGO_BIN_EXE_socksref")).args(&args).args(["--log-level", "info"]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("own listeners: that is a loop"), "{args:?}: {err}");
    }
    // Not a loop: a forwarder to something else starts (and logs the caps of socks services).
    let mut child = Command::new(env!("CARGO_BIN_EXE_socksref"))
        .args(["-L", &format!("socks5://127.0.0.1:{p}"), "-L", &format!("tcp://127.0.0.1:{q}/127.0.0.1:9")])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(q);
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("connection caps") && err.contains("max_conns="), "{err}");
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let port = free_port();
    let mut p = socksref(&["-L", &format!("socks5://127.0.0.1:{port}")]);
    wait_ready(port);
    let pid = p.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = p.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "socksref ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "clean exit after SIGTERM: {status}");
}
