//! The kcp transport against itself and against real kcp-go peers (Debian's kcptun, a second
//! kcp-go + smux + snappy implementation): 64 MiB each way with a checksum, and FEC parity
//! bytes from a live kcp-go peer checked against our encoder. Skips (printing why) only when
//! kcptun is not installed.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::pseudo_random;

use sha2::{Digest, Sha256};
use socksref::transport::kcp::{self, Config};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use common::{connect_retry, gost_bin, spawn, Peer};

const MIB: usize = 1 << 20;

/// Writes `len` bytes through `s` to an echo while reading them back, checks by SHA-256 that the
/// same octets came back (failing with `what`), and returns the rate in MiB/s each way.
async fn echoes<S: AsyncRead + AsyncWrite + Send + 'static>(s: S, len: usize, what: &str) -> f64 {
    let data = pseudo_random(len as u64, len);
    let want: [u8; 32] = Sha256::digest(&data).into();
    let (mut r, mut w) = tokio::io::split(s);
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        for chunk in data.chunks(32 * 1024) {
            w.write_all(chunk).await.expect("write");
        }
        w.flush().await.expect("flush");
        w
    });
    let mut h = Sha256::new();
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while got < len {
        let n = r.read(&mut buf).await.expect("read");
        assert!(n > 0, "{what}: EOF after {got} of {len} bytes");
        h.update(&buf[..n]);
        got += n;
    }
    let secs = started.elapsed().as_secs_f64();
    drop(writer.await.expect("writer"));
    let got: [u8; 32] = h.finalize().into();
    assert_eq!(want, got, "{what}");
    (len as f64 / MIB as f64) / secs
}

/// Echoes every stream `ln` accepts back to its sender; returns the listener's UDP address.
fn echo_every_stream(ln: kcp::Listener) -> SocketAddr {
    let addr = ln.local_addr();
    tokio::spawn(async move {
        while let Ok((s, _)) = ln.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(s);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Starts kcptun's client: a local TCP port (returned) tunnelled over kcp to `remote`.
fn kcptun_client(bin: &std::path::Path, remote: SocketAddr, cfg: &Config, crypt: &str) -> (SocketAddr, Peer) {
    let local = testkit::free_addr().unwrap();
    let mut args = vec!["-l".into(), local.to_string(), "-r".into(), remote.to_string()];
    args.extend(kcptun_flags(cfg, crypt));
    (local, spawn(bin, &args))
}

/// Starts kcptun's server on a free UDP port (returned), tunnelling each kcp stream to TCP
/// `target`.
async fn kcptun_server(bin: &std::path::Path, target: SocketAddr, cfg: &Config, crypt: &str) -> (SocketAddr, Peer) {
    let kaddr = testkit::free_udp_addr().unwrap();
    let mut args = vec!["-l".into(), kaddr.to_string(), "-t".into(), target.to_string()];
    args.extend(kcptun_flags(cfg, crypt));
    let peer = spawn(bin, &args);
    tokio::time::sleep(Duration::from_millis(300)).await; // let it bind its UDP port
    (kaddr, peer)
}

/// Debian's `bin` (`kcptun-client`, `kcptun-server`) on `PATH`; `None` after printing the SKIP
/// line the test then stands for.
fn kcptun(bin: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH")
        .and_then(|path| path.to_str()?.split(':').map(|d| std::path::Path::new(d).join(bin)).find(|p| p.is_file()));
    if found.is_none() {
        println!("SKIP: {bin} not installed (apt-get install kcptun)");
    }
    found
}

/// kcptun flags equal to `cfg` (the settings gost uses when configured like kcptun).
fn kcptun_flags(cfg: &Config, crypt: &str) -> Vec<String> {
    let mut f: Vec<String> = vec![
        "--key".into(),
        cfg.key.clone(),
        "--crypt".into(),
        crypt.into(),
        "--mode".into(),
        if cfg.mode.is_empty() { "fast".into() } else { cfg.mode.clone() },
        "--mtu".into(),
        cfg.mtu.to_string(),
        "--sndwnd".into(),
        cfg.sndwnd.to_string(),
        "--rcvwnd".into(),
        cfg.rcvwnd.to_string(),
        "--ds".into(),
        cfg.datashard.to_string(),
        "--ps".into(),
        cfg.parityshard.to_string(),
        "--smuxver".into(),
        cfg.smuxver.to_string(),
        "--quiet".into(),
    ];
    if cfg.nocomp {
        f.push("--nocomp".into());
    }
    f
}

fn kcptun_cfg() -> Config {
    Config::documented()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_to_ours_16_mib_each_way() {
    let cfg = Config::from_query("kcp.key=k&kcp.mode=fast&kcp.sndwnd=1024&kcp.rcvwnd=1024").unwrap();
    let addr = echo_every_stream(kcp::Listener::bind("127.0.0.1:0".parse().unwrap(), &cfg).await.unwrap());
    let d = kcp::dial(addr, &cfg).await.unwrap();
    let rate = echoes(d.open().await.unwrap(), 16 * MIB, "16 MiB ours → ours").await;
    println!("ours↔ours: {rate:.1} MiB/s each way");
    // A second stream on the same session.
    echoes(d.open().await.unwrap(), MIB, "1 MiB on a second stream of the same session").await;
}

/// A kcp-go datagram: FEC data packet around one KCP PUSH segment, sealed with `crypt`.
fn datagram(crypt: &kcp::BlockCrypt, conv: u32, data: &[u8]) -> Vec<u8> {
    let mut seg = Vec::new();
    kcp::segment::Header {
        conv,
        cmd: kcp::segment::CMD_PUSH,
        frg: 0,
        wnd: 32,
        ts: 1,
        sn: 0,
        una: 0,
        len: data.len() as u32,
    }
    .encode(&mut seg);
    seg.extend_from_slice(data);
    let mut out = Vec::new();
    kcp::fec::Encoder::new(10, 3).unwrap().encode(&seg, kcp::crypt::HEADER_LEN, &mut out);
    let mut d = out.remove(0);
    crypt.seal(&mut d);
    d
}

/// Garbage and a datagram sealed with the wrong key are dropped without a session (and
/// without a reply); the right key right after them gets its ACK, and that is the first
/// thing the listener ever sends back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_checksum_and_wrong_key_datagrams_are_dropped() {
    let cfg = Config::default();
    let ln = kcp::Listener::bind("127.0.0.1:0".parse().unwrap(), &cfg).await.unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(ln.local_addr()).await.unwrap();
    let right = kcp::BlockCrypt::new(kcp::Cipher::Aes256, "");
    let wrong = kcp::BlockCrypt::new(kcp::Cipher::Aes256, "wrong");
    sock.send(&pseudo_random(7, 300)).await.unwrap();
    sock.send(&[0u8; 5]).await.unwrap();
    sock.send(&datagram(&wrong, 0xaaaa, b"x")).await.unwrap();
    let mut flipped = datagram(&right, 0xaaaa, b"x");
    let n = flipped.len();
    flipped[n - 1] ^= 0x80;
    sock.send(&flipped).await.unwrap();
    sock.send(&datagram(&right, 0xbbbb, b"x")).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let n = sock.recv(&mut buf).await.unwrap();
    right.open(&mut buf[..n]).expect("the reply is sealed with the right key");
    let p = &buf[kcp::crypt::HEADER_LEN..n];
    assert!(kcp::fec::is_fec(p));
    let h = kcp::segment::Header::decode(&p[kcp::fec::DATA_HEADER_LEN..]).unwrap();
    assert_eq!((h.conv, h.cmd), (0xbbbb, kcp::segment::CMD_ACK), "the first reply is the right-key session's ACK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcptun_client_to_our_listener_64_mib_each_way() {
    let Some(client) = kcptun("kcptun-client") else { return };
    let cfg = kcptun_cfg();
    let kaddr = echo_every_stream(kcp::Listener::bind("127.0.0.1:0".parse().unwrap(), &cfg).await.unwrap());
    let (local, _peer) = kcptun_client(&client, kaddr, &cfg, "aes");
    let tcp = connect_retry(local).await;
    let rate = echoes(tcp, 64 * MIB, "64 MiB through kcptun-client → our listener → echo → back").await;
    println!("kcptun-client → socksref kcp listener: {rate:.1} MiB/s each way");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_dialer_to_kcptun_server_64_mib_each_way() {
    let Some(server) = kcptun("kcptun-server") else { return };
    let cfg = kcptun_cfg();
    let (kaddr, _peer) = kcptun_server(&server, tcp_echo_server().await, &cfg, "aes").await;
    let d = kcp::dial(kaddr, &cfg).await.unwrap();
    let rate =
        echoes(d.open().await.unwrap(), 64 * MIB, "64 MiB through our dialer → kcptun-server → echo → back").await;
    println!("socksref kcp dialer → kcptun-server: {rate:.1} MiB/s each way");
}

/// A UDP relay in front of `upstream` that records every datagram coming from the client.
async fn capturing_relay(upstream: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    relay(upstream, 0).await
}

/// A UDP relay in front of `upstream` that records every datagram coming from the client and,
/// when `drop_every` is not 0, drops every `drop_every`-th datagram in each direction.
async fn relay(upstream: SocketAddr, drop_every: usize) -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(upstream).await.unwrap();
    let addr = front.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
    {
        let (front, back, seen, client) = (front.clone(), back.clone(), seen.clone(), client.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let mut count = 0usize;
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock().unwrap() = Some(from);
                seen.lock().unwrap().push(buf[..n].to_vec());
                count += 1;
                if drop_every == 0 || count % drop_every != 0 {
                    let _ = back.send(&buf[..n]).await;
                }
            }
        });
    }
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        let mut count = 0usize;
        while let Ok(n) = back.recv(&mut buf).await {
            count += 1;
            if drop_every != 0 && count % drop_every == 0 {
                continue;
            }
            let to = *client.lock().unwrap();
            if let Some(to) = to {
                let _ = front.send_to(&buf[..n], to).await;
            }
        }
    });
    (addr, seen)
}

/// kcp-go's Reed–Solomon parity, from a live kcptun with `crypt none`, equals ours for every
/// complete group it sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcptun_fec_parity_bytes_equal_ours() {
    let Some(client) = kcptun("kcptun-client") else { return };
    let mut cfg = kcptun_cfg();
    cfg.crypt = kcp::Cipher::None;
    let kaddr = echo_every_stream(kcp::Listener::bind("127.0.0.1:0".parse().unwrap(), &cfg).await.unwrap());
    let (relay, seen) = capturing_relay(kaddr).await;
    let (local, _peer) = kcptun_client(&client, relay, &cfg, "none");
    echoes(connect_retry(local).await, 2 * MIB, "2 MiB kcptun-client → relay → our listener → echo → back").await;

    // Index what kcptun sent by FEC seqid (crypt none: payload after the 20-byte header).
    let seen = seen.lock().unwrap().clone();
    let mut by_seq = std::collections::BTreeMap::new();
    for d in &seen {
        let p = &d[20..];
        if kcp::fec::is_fec(p) {
            by_seq.insert(u32::from_le_bytes([p[0], p[1], p[2], p[3]]), p.to_vec());
        }
    }
    let mut groups = 0;
    for (&seq, _) in by_seq.iter().filter(|(s, _)| *s % 13 == 0) {
        let members: Option<Vec<&Vec<u8>>> = (seq..seq + 13).map(|s| by_seq.get(&s)).collect();
        let Some(members) = members else { continue };
        let mut enc = kcp::fec::Encoder::new(10, 3).unwrap();
        let mut ours = Vec::new();
        for m in &members[..10] {
            assert_eq!(u16::from_le_bytes([m[4], m[5]]), kcp::fec::TYPE_DATA);
            let size = u16::from_le_bytes([m[6], m[7]]) as usize;
            enc.encode(&m[8..6 + size], 0, &mut ours);
        }
        assert_eq!(ours.len(), 13);
        for k in 0..3 {
            let theirs = members[10 + k];
            assert_eq!(u16::from_le_bytes([theirs[4], theirs[5]]), kcp::fec::TYPE_PARITY);
            assert_eq!(&ours[10 + k][6..], &theirs[6..], "parity shard {k} of group {seq}");
        }
        groups += 1;
    }
    assert!(groups >= 10, "only {groups} complete FEC groups captured from {} datagrams", seen.len());
    println!("kcptun FEC parity equal to ours in {groups} groups");
}

/// SOCKS5 CONNECT (no auth) to `target` on `s`; the reply is read whole before any data
/// goes out (gost's reply reader over-reads).
async fn socks5_connect<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, target: SocketAddr) {
    s.write_all(&[5, 1, 0]).await.unwrap();
    let mut sel = [0u8; 2];
    s.read_exact(&mut sel).await.unwrap();
    assert_eq!(sel, [5, 0], "method selection");
    let SocketAddr::V4(t) = target else { panic!("v4 target") };
    let mut req = vec![5, 1, 0, 1];
    req.extend_from_slice(&t.ip().octets());
    req.extend_from_slice(&t.port().to_be_bytes());
    s.write_all(&req).await.unwrap();
    let mut rep = [0u8; 10];
    s.read_exact(&mut rep).await.unwrap();
    assert_eq!(&rep[..2], &[5, 0], "CONNECT reply {rep:?}");
}

/// A loopback TCP echo target.
async fn tcp_echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    testkit::echo::tcp(l);
    a
}

/// The query gost takes for `cfg` (explicit `kcp.*` keys: gost discards its documented
/// defaults when they are absent, docs/kcp.md).
fn gost_query(cfg: &Config) -> String {
    let mut q = format!(
        "kcp.key={}&kcp.mode={}&kcp.mtu={}&kcp.sndwnd={}&kcp.rcvwnd={}&kcp.smuxver={}",
        cfg.key.replace('\'', "%27").replace(' ', "%20"),
        cfg.mode,
        cfg.mtu,
        cfg.sndwnd,
        cfg.rcvwnd,
        cfg.smuxver
    );
    if cfg.nocomp {
        q.push_str("&kcp.nocomp=true");
    }
    q
}

async fn our_dialer_through_gost_server(cfg: Config, query: Option<String>, len: usize) -> Option<f64> {
    let gost = gost_bin()?;
    let target = tcp_echo_server().await;
    let kaddr = testkit::free_udp_addr().unwrap();
    let url = match query {
        Some(q) => format!("socks5+kcp://{kaddr}?{q}"),
        None => format!("socks5+kcp://{kaddr}"),
    };
    let _peer = spawn(&gost, &["-L".into(), url]);
    tokio::time::sleep(Duration::from_millis(500)).await; // let gost bind its UDP port
    let d = kcp::dial(kaddr, &cfg).await.unwrap();
    let mut s = d.open().await.unwrap();
    socks5_connect(&mut s, target).await;
    let rate = echoes(s, len, &format!("{len} bytes through our kcp dialer → gost socks5+kcp → echo → back")).await;
    Some(rate)
}

/// gost with no `kcp.*` keys at all and our `Config::default()` interoperate: this is the
/// check that gost's effective defaults are what docs/kcp.md says (empty key, …).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gost_default_kcp_server_takes_our_default_dialer() {
    if let Some(rate) = our_dialer_through_gost_server(Config::default(), None, 4 * MIB).await {
        println!("socksref kcp dialer (defaults) → gost socks5+kcp (defaults): {rate:.1} MiB/s each way");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_dialer_socks5_connect_through_gost_kcp_server_64_mib_each_way() {
    let cfg = kcptun_cfg();
    if let Some(rate) = our_dialer_through_gost_server(cfg.clone(), Some(gost_query(&cfg)), 64 * MIB).await {
        println!("socksref kcp dialer → gost socks5+kcp: {rate:.1} MiB/s each way");
    }
}

/// gost as a SOCKS5-over-kcp client (`-F socks5+kcp://`) of our kcp listener, behind which
/// the reference SOCKS server runs. The composition is test-only (the generic
/// `socks5+kcp` wiring lives in the transport layer): each kcp stream is spliced to the
/// reference server over loopback TCP, so the SOCKS bytes gost sends reach it unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gost_kcp_client_through_our_listener_and_reference_socks_server_64_mib_each_way() {
    let Some(gost) = gost_bin() else { return };
    let socks = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let socks_addr = socks.local_addr().unwrap();
    tokio::spawn(socksref::server::serve(socks, socksref::server::ServerConfig::default(), std::future::pending()));
    let cfg = kcptun_cfg();
    let ln = kcp::Listener::bind("127.0.0.1:0".parse().unwrap(), &cfg).await.unwrap();
    let kaddr = ln.local_addr();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = ln.accept().await {
            tokio::spawn(async move {
                let mut t = TcpStream::connect(socks_addr).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut s, &mut t).await;
            });
        }
    });
    let target = tcp_echo_server().await;
    let fwd = testkit::free_addr().unwrap();
    let _peer = spawn(
        &gost,
        &[
            "-L".into(),
            format!("tcp://{fwd}/{target}"),
            "-F".into(),
            format!("socks5+kcp://{kaddr}?{}", gost_query(&cfg)),
        ],
    );
    let tcp = connect_retry(fwd).await;
    let rate = echoes(tcp, 64 * MIB, "64 MiB through gost -F socks5+kcp → our listener → reference SOCKS → echo").await;
    println!("gost socks5+kcp client → socksref kcp listener: {rate:.1} MiB/s each way");
}

/// Every cipher we implement, and nocomp, against kcptun-server (a kcp-go that has them all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcptun_server_agrees_on_every_cipher_and_nocomp() {
    let Some(server) = kcptun("kcptun-server") else { return };
    let target = tcp_echo_server().await;
    for (crypt, nocomp) in [
        ("aes-128", false),
        ("aes-192", false),
        ("salsa20", false),
        ("xor", false),
        ("sm4", false),
        ("twofish", false),
        ("blowfish", false),
        ("cast5", false),
        ("3des", false),
        ("none", false),
        ("aes", true),
    ] {
        let mut cfg = kcptun_cfg();
        cfg.crypt = kcp::Cipher::parse(crypt).unwrap();
        cfg.nocomp = nocomp;
        let (kaddr, _peer) = kcptun_server(&server, target, &cfg, crypt).await;
        let d = kcp::dial(kaddr, &cfg).await.unwrap();
        echoes(d.open().await.unwrap(), MIB, &format!("crypt {crypt} nocomp {nocomp}")).await;
    }
}

/// With every 7th datagram lost in each direction (FEC recovers some, the ARQ resends the
/// rest), kcptun and our listener still move 8 MiB each way intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcptun_client_through_a_lossy_link_to_our_listener() {
    let Some(client) = kcptun("kcptun-client") else { return };
    let cfg = kcptun_cfg();
    let kaddr = echo_every_stream(kcp::Listener::bind("127.0.0.1:0".parse().unwrap(), &cfg).await.unwrap());
    let (lossy, _) = relay(kaddr, 7).await;
    let (local, _peer) = kcptun_client(&client, lossy, &cfg, "aes");
    let rate = echoes(connect_retry(local).await, 8 * MIB, "8 MiB over a link losing 1 datagram in 7").await;
    println!("kcptun-client → lossy link → socksref kcp listener: {rate:.1} MiB/s each way");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcptun_client_carries_socks5_to_the_socksref_binary_over_socks5_kcp() {
    // kcptun is a plain kcp tunnel: its client hands our `-L socks5+kcp://` service the bytes of
    // a SOCKS5 client, so this is a second kcp-go implementation against the whole binary.
    let Some(client) = kcptun("kcptun-client") else { return };
    let cfg = Config { key: "sockslab".into(), ..kcptun_cfg() };
    let kaddr = testkit::free_udp_addr().unwrap();
    let query = format!(
        "kcp.key={}&kcp.mode={}&kcp.mtu={}&kcp.sndwnd={}&kcp.rcvwnd={}",
        cfg.key, cfg.mode, cfg.mtu, cfg.sndwnd, cfg.rcvwnd
    );
    let _server = common::socksref(&["-L", &format!("socks5+kcp://{kaddr}?{query}")]);
    let (local, _peer) = kcptun_client(&client, kaddr, &cfg, "aes");
    let target = tcp_echo_server().await;
    // kcp has no handshake: kcptun's first datagrams may reach the port before socksref binds
    // it, and KCP resends them, so the first CONNECT needs no readiness probe.
    let mut tcp = connect_retry(local).await;
    socks5_connect(&mut tcp, target).await;
    let rate = echoes(tcp, 16 * MIB, "16 MiB through kcptun-client → socksref -L socks5+kcp → echo → back").await;
    println!("kcptun-client → socksref -L socks5+kcp: {rate:.1} MiB/s each way");
}
