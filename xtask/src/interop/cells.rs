//! One feature cell: a client peer talks through a server peer to an XOR-echo target, and the
//! payload must come back XORed byte for byte.

use std::net::SocketAddr;
use std::time::Duration;
use testkit::pseudo_random;

use anyhow::{bail, ensure, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::backend::Launcher;
use super::servers::{free_port, PASS, SOCKS4_USER, USER};
use super::targets::{xor, Targets};
use crate::peers::{Feature, PeerId};

/// Bytes pushed through each TCP cell: big enough to cross several relay buffers.
const TCP_PAYLOAD: usize = 256 * 1024;

/// Set while the lab records captures (`--capture`): cells push a few bytes instead, so each
/// capture file stays small enough to commit.
pub static SMALL_PAYLOADS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn small() -> bool {
    SMALL_PAYLOADS.load(std::sync::atomic::Ordering::Relaxed)
}

/// The TCP payload length of a cell.
fn tcp_len() -> usize {
    if small() {
        super::capture::TCP_PAYLOAD
    } else {
        TCP_PAYLOAD
    }
}

/// What a cell observed, for the report.
pub struct Outcome {
    /// One line: what went through.
    pub detail: String,
    /// Logs of the client peer.
    pub logs: String,
}

/// Sends a payload over TCP to `addr` and checks the XORed echo, within 20 s.
async fn tcp_exchange(addr: SocketAddr, seed: u8) -> Result<usize> {
    let data = pseudo_random(u64::from(seed), tcp_len());
    let want = xor(&data);
    let run = async {
        let s = TcpStream::connect(addr).await.with_context(|| format!("connect {addr}"))?;
        let (mut r, mut w) = s.into_split();
        let writer = tokio::spawn(async move {
            w.write_all(&data).await?;
            // Keep the write side open until the echo is read: some proxies tear the tunnel down
            // on a half-close (V2Ray), which is not what this cell tests.
            Ok::<_, std::io::Error>(w)
        });
        let mut got = vec![0u8; want.len()];
        r.read_exact(&mut got).await.context("reading the echo")?;
        let _ = writer.await;
        ensure!(got == want, "echo differs from the payload XOR 0xA5");
        Ok(got.len())
    };
    tokio::time::timeout(Duration::from_secs(20), run).await.context("timed out after 20 s")?
}

/// Retries the TCP exchange while the forwarder is coming up (bounded: 10 s of connect errors).
async fn tcp_exchange_retry(addr: SocketAddr, seed: u8) -> Result<usize> {
    let mut last = None;
    for _ in 0..40 {
        match tcp_exchange(addr, seed).await {
            Ok(n) => return Ok(n),
            Err(e) => {
                let refused = e.chain().any(|c| c.to_string().starts_with("connect"));
                if !refused {
                    return Err(e);
                }
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt")))
}

/// Sends three datagrams to `addr` (each retried up to 8 times: UDP may be lost, and the relay
/// may still be setting up) and checks each XORed reply.
async fn udp_exchange(addr: SocketAddr) -> Result<usize> {
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    let mut total = 0;
    for i in 0..3u8 {
        let data = pseudo_random(u64::from(100 + i), if small() { super::capture::UDP_PAYLOAD } else { 700 });
        let want = xor(&data);
        let mut ok = false;
        'tries: for _ in 0..8 {
            sock.send_to(&data, addr).await?;
            let deadline = tokio::time::Instant::now() + Duration::from_millis(600);
            let mut buf = vec![0u8; 4096];
            while let Ok(Ok((n, _))) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
                if buf[..n] == want[..] {
                    ok = true;
                    break 'tries;
                }
            }
        }
        ensure!(ok, "datagram {i}: no XORed reply after 8 tries");
        total += data.len();
    }
    Ok(total)
}

/// The v2ray client: dokodemo-door (TCP and UDP) → socks outbound → server → target.
fn v2ray_client_config(peer: PeerId, listen: u16, server: SocketAddr, feature: Feature, target: (&str, u16)) -> String {
    let users = if feature == Feature::Userpass {
        format!(r#", "users": [{{"user": "{USER}", "pass": "{PASS}"}}]"#)
    } else {
        String::new()
    };
    // `version` exists from v4.42.2 (§2.1); 4.34 would ignore it, and it has no SOCKS4 claim anyway.
    let version = match (peer, feature) {
        (PeerId::V2ray5, Feature::Socks4) => r#", "version": "4""#,
        (PeerId::V2ray5, Feature::Socks4a) => r#", "version": "4a""#,
        _ => "",
    };
    format!(
        r#"{{"log": {{"loglevel": "warning"}},
 "inbounds": [{{"tag": "doko-in", "listen": "127.0.0.1", "port": {listen}, "protocol": "dokodemo-door",
   "settings": {{"address": "{}", "port": {}, "network": "tcp,udp"}}}}],
 "outbounds": [{{"tag": "socks-out", "protocol": "socks",
   "settings": {{"servers": [{{"address": "{}", "port": {}{users}}}]{version}}}}}]}}"#,
        target.0,
        target.1,
        server.ip(),
        server.port()
    )
}

/// Runs one cell. `server` is the server instance the feature needs (open or with password).
pub async fn run(
    client: PeerId,
    launcher: &Launcher,
    server: SocketAddr,
    feature: Feature,
    targets: &Targets,
) -> Result<Outcome> {
    // SOCKS4a must carry a host name, so the target is `localhost` there (and for curl's
    // --socks5-hostname); elsewhere an IPv4 literal.
    let by_name = matches!(feature, Feature::Socks4a | Feature::Userpass);
    let host = if by_name { "localhost" } else { "127.0.0.1" };
    match client {
        PeerId::Curl => {
            let dir = tempfile::Builder::new().prefix("sockslab-interop-curl-").tempdir()?;
            let data = pseudo_random(7, tcp_len());
            std::fs::write(dir.path().join("in"), &data)?;
            let proxy = format!("{}:{}", server.ip(), server.port());
            let mut args: Vec<String> = match feature {
                Feature::Socks4 => vec!["--socks4".into(), proxy],
                Feature::Socks4a => vec!["--socks4a".into(), proxy],
                // curl sends the proxy URL's user name as the SOCKS4 USERID.
                Feature::Socks4Userid => vec!["-x".into(), format!("socks4://{SOCKS4_USER}@{proxy}")],
                Feature::Socks5Connect => vec!["--socks5".into(), proxy],
                Feature::Userpass => {
                    vec!["--socks5-hostname".into(), proxy, "--proxy-user".into(), format!("{USER}:{PASS}")]
                }
                f => bail!("curl has no {}", f.name()),
            };
            // `Expect:` off: the target is not a full HTTP server and answers no 100-continue.
            args.extend(
                [
                    "-sS",
                    "--max-time",
                    "15",
                    "-H",
                    "Expect:",
                    "--data-binary",
                    "@{dir}/in",
                    "-o",
                    "{dir}/out",
                    &format!("http://{host}:{}/xor", targets.http_port),
                ]
                .map(String::from),
            );
            let exit = launcher.run_once(dir.path(), &args, Duration::from_secs(30)).await?;
            let logs = format!("curl {}\n{}", args.join(" "), exit.output);
            ensure!(exit.code == 0, "curl exited with {}:\n{}", exit.code, logs);
            let got = std::fs::read(dir.path().join("out")).context("no output file")?;
            ensure!(
                got == xor(&data),
                "HTTP body differs from the payload XOR 0xA5 ({} of {} bytes)",
                got.len(),
                data.len()
            );
            Ok(Outcome { detail: format!("{} bytes over HTTP POST, XOR-echo verified", data.len()), logs })
        }
        PeerId::V2ray4 | PeerId::V2ray5 => {
            // A new port per attempt: another process may take a free port before V2Ray binds it.
            let mut attempt = 0;
            let (running, local) = loop {
                let listen = free_port()?;
                let cfg = v2ray_client_config(client, listen, server, feature, (host, targets.echo_port));
                let mut args: Vec<String> =
                    if client == PeerId::V2ray5 { vec!["run".into(), "-c".into()] } else { vec!["-config".into()] };
                args.push("{dir}/client.json".into());
                let local = SocketAddr::from(([127, 0, 0, 1], listen));
                match launcher.start(&args, &[("client.json", cfg)], Some(local)).await {
                    Ok(r) => break (r, local),
                    Err(_) if attempt < 2 => attempt += 1,
                    Err(e) => return Err(e),
                }
            };
            let r = match feature {
                Feature::UdpAssociate => udp_exchange(local).await.map(|n| format!("{n} bytes in 3 datagrams")),
                _ => tcp_exchange_retry(local, 3).await.map(|n| format!("{n} bytes over TCP")),
            };
            let logs = running.logs().await;
            running.stop().await;
            let detail = r.with_context(|| format!("client log:\n{logs}"))?;
            Ok(Outcome { detail: format!("{detail}, XOR-echo verified"), logs })
        }
        PeerId::Reference | PeerId::Gost => forwarder_cell(client, launcher, server, feature, targets, host).await,
    }
}

/// Sends `payload`, half-closes, and reads until EOF; the reply-after-FIN target answers only
/// once it has seen that FIN, so a tunnel that does not carry it returns nothing.
async fn half_close_exchange(addr: SocketAddr, seed: u8) -> Result<usize> {
    let data = pseudo_random(u64::from(seed), if small() { tcp_len() } else { 64 * 1024 });
    let want = xor(&data);
    let run = async {
        let mut s = TcpStream::connect(addr).await.with_context(|| format!("connect {addr}"))?;
        s.write_all(&data).await?;
        s.shutdown().await.context("half-close (FIN)")?;
        let mut got = Vec::new();
        let r = s.read_to_end(&mut got).await;
        let end = match r {
            Ok(_) => "EOF".to_string(),
            Err(e) => format!("error {e}"),
        };
        ensure!(
            got == want,
            "after our FIN: {} of {} reply bytes, then {end} (first bytes {:02x?})",
            got.len(),
            want.len(),
            &got[..got.len().min(8)]
        );
        Ok(got.len())
    };
    tokio::time::timeout(Duration::from_secs(20), run).await.context("timed out after 20 s")?
}

/// Sends a greeting and returns the server's 2-byte method selection.
async fn select_method(server: SocketAddr, greeting: &[u8]) -> Result<[u8; 2]> {
    let mut s = TcpStream::connect(server).await?;
    s.write_all(greeting).await?;
    let mut r = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut r)).await??;
    Ok(r)
}

/// A SOCKS4 CONNECT to `target` with `userid`; returns the 8-byte reply (or what came before EOF).
async fn socks4_request(server: SocketAddr, target: SocketAddr, userid: &str) -> Result<Vec<u8>> {
    let SocketAddr::V4(t) = target else { bail!("SOCKS4 needs an IPv4 target") };
    let mut s = TcpStream::connect(server).await?;
    let mut req = vec![0x04, 0x01];
    req.extend_from_slice(&t.port().to_be_bytes());
    req.extend_from_slice(&t.ip().octets());
    req.extend_from_slice(userid.as_bytes());
    req.push(0);
    s.write_all(&req).await?;
    let mut r = vec![0u8; 8];
    let mut n = 0;
    while n < 8 {
        match tokio::time::timeout(Duration::from_secs(3), s.read(&mut r[n..])).await?? {
            0 => break,
            k => n += k,
        }
    }
    r.truncate(n);
    Ok(r)
}

/// The server-side checks a cell makes before its client runs, shown in its detail: the
/// method a TLS-method server selects, and that a USERID server refuses a wrong USERID.
async fn server_probe(server: SocketAddr, feature: Feature, targets: &Targets) -> Result<String> {
    Ok(match feature {
        Feature::TlsMethods => {
            let r = select_method(server, &[0x05, 0x02, 0x80, 0x00]).await?;
            ensure!(r == [0x05, 0x80], "server answered {r:02x?} to a greeting offering 80 and 00");
            "server selects 80 (TLS); ".into()
        }
        Feature::TlsAuth => {
            // gost's own greeting with credentials (docs/gost-peer.md §2).
            let r = select_method(server, &[0x05, 0x04, 0x00, 0x02, 0x80, 0x82]).await?;
            ensure!(r == [0x05, 0x82], "server answered {r:02x?} to a greeting offering 00 02 80 82");
            "server selects 82 (TLS, then RFC 1929 inside); ".into()
        }
        Feature::Socks4Userid => {
            let target = SocketAddr::from(([127, 0, 0, 1], targets.echo_port));
            let r = socks4_request(server, target, "nobody").await?;
            ensure!(
                r.get(..2) == Some(&[0x00, 0x5D][..]),
                "server answered {r:02x?} to USERID \"nobody\" (want 00 5d: USERID rejected)"
            );
            format!("USERID \"nobody\" refused with 00 5d, {SOCKS4_USER:?} accepted; ")
        }
        _ => String::new(),
    })
}

/// The chain hop (`-F`) a forwarder client uses for `feature`. socksref and gost share the
/// URL dialect (docs/gost-peer.md §3); both offer the TLS methods 80/82 by default, so every
/// cell but the TLS ones says `notls=true` to test what its name says.
fn hop(feature: Feature, server: SocketAddr) -> String {
    let auth = format!("{USER}:{PASS}@");
    match feature {
        Feature::Socks4 => format!("socks4://{server}?disable4a=true"),
        Feature::Socks4a => format!("socks4a://{server}"),
        Feature::Socks4Userid => format!("socks4://{SOCKS4_USER}@{server}?disable4a=true"),
        Feature::TlsMethods => format!("socks5://{server}"),
        Feature::TlsAuth => format!("socks5://{auth}{server}"),
        Feature::Userpass => format!("socks5://{auth}{server}?notls=true"),
        // `udp://` forwarders use gost's UDP-over-TCP (0xF3) unless the last hop says
        // `relay=udp`; the udp-associate cell wants the RFC 1928 UDP ASSOCIATE.
        Feature::UdpAssociate => format!("socks5://{server}?notls=true&relay=udp"),
        _ => format!("socks5://{server}?notls=true"),
    }
}

/// A client made of gost-style forwarders (socksref or gost): `-L` forwarders on a local port,
/// `-F` the server, and the payload through them.
async fn forwarder_cell(
    client: PeerId,
    launcher: &Launcher,
    server: SocketAddr,
    feature: Feature,
    targets: &Targets,
    host: &str,
) -> Result<Outcome> {
    let selected = server_probe(server, feature, targets).await?;
    let hop = hop(feature, server);
    let echo = format!("{host}:{}", targets.echo_port);
    let udp_echo = format!("127.0.0.1:{}", targets.echo_port);
    // A new port per attempt: another process may take a free port before the client binds it.
    let mut attempt = 0;
    let (running, local, args) = loop {
        let listen = free_port()?;
        let local = SocketAddr::from(([127, 0, 0, 1], listen));
        // (forwarders, TCP readiness probe). rtcp/rudp listen at the proxy, so there is nothing
        // local to probe: the first exchange that gets through is the test itself.
        let (listeners, ready): (Vec<String>, Option<SocketAddr>) = match feature {
            // socksref's rtcp is MBIND unless told `mbind=false` (one RFC 1928 BIND per peer).
            Feature::Bind => (vec![format!("rtcp://127.0.0.1:{listen}/{echo}?mbind=false")], None),
            // gost's and socksref's rtcp through a SOCKS5 hop: MBIND (docs/gost-peer.md §3).
            Feature::Mbind => (vec![format!("rtcp://127.0.0.1:{listen}/{echo}")], None),
            Feature::RudpTun => (vec![format!("rudp://127.0.0.1:{listen}/{udp_echo}")], None),
            Feature::UdpAssociate | Feature::UdpTun => (vec![format!("udp://127.0.0.1:{listen}/{udp_echo}")], None),
            Feature::HalfClose => {
                (vec![format!("tcp://127.0.0.1:{listen}/127.0.0.1:{}", targets.after_fin_port)], Some(local))
            }
            _ => (vec![format!("tcp://127.0.0.1:{listen}/{echo}")], Some(local)),
        };
        let mut args: Vec<String> = Vec::new();
        for l in listeners {
            args.extend(["-L".into(), l]);
        }
        args.extend(["-F".into(), hop.clone()]);
        match launcher.start(&args, &[], ready).await {
            Ok(r) => break (r, local, args),
            Err(_) if attempt < 2 => attempt += 1,
            Err(e) => return Err(e),
        }
    };
    let r = match feature {
        Feature::UdpAssociate | Feature::UdpTun | Feature::RudpTun => {
            udp_exchange(local).await.map(|n| format!("{n} bytes in 3 datagrams"))
        }
        Feature::Bind => tcp_exchange_retry(local, 5).await.map(|n| format!("{n} bytes via BIND")),
        Feature::Mbind => tcp_exchange_retry(local, 6).await.map(|n| format!("{n} bytes via MBIND")),
        Feature::HalfClose => half_close_with_retry(local).await.map(|n| format!("{n} bytes back after our FIN")),
        _ => tcp_exchange_retry(local, 4).await.map(|n| format!("{n} bytes over TCP")),
    };
    let logs = format!("{} {}\n{}", client.name(), args.join(" "), running.logs().await);
    running.stop().await;
    let detail = r.with_context(|| format!("client log:\n{logs}"))?;
    Ok(Outcome { detail: format!("{selected}{detail}, XOR-echo verified"), logs })
}

/// [`half_close_exchange`], retried only while the forwarder refuses connections.
async fn half_close_with_retry(addr: SocketAddr) -> Result<usize> {
    let mut last = None;
    for _ in 0..40 {
        match half_close_exchange(addr, 9).await {
            Ok(n) => return Ok(n),
            Err(e) if e.chain().any(|c| c.to_string().starts_with("connect")) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt")))
}
