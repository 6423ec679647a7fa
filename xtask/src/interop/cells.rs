//! One feature cell: a client peer talks through a server peer to an XOR-echo target, and the
//! payload must come back XORed byte for byte.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use testkit::pseudo_random;

use anyhow::{bail, ensure, Context, Result};
use sockslab::peers::{ClientDef, ClientRun};
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

/// Runs one cell. `server` is the server instance the feature needs (open or with password).
/// How the client starts for the feature is its definition's (`matrix.client` in
/// harness/peers/<peer>/peer.yaml); what goes through it, and how it is checked, is the lab's.
pub async fn run(
    client: PeerId,
    launcher: &Launcher,
    server: SocketAddr,
    feature: Feature,
    targets: &Targets,
) -> Result<Outcome> {
    let def = client.client().with_context(|| format!("{client} has no `matrix.client` in its definition"))?;
    let selected = server_probe(server, feature, targets).await?;
    let fname = feature.name();
    let ready = def.features.get(fname).map(|f| f.tcp_ready).unwrap_or(true);
    match def.run {
        ClientRun::Once => one_shot(client, def, launcher, server, feature, targets, &selected).await,
        ClientRun::Listen => {
            // A new port per attempt: another process may take a free port before the client binds it.
            let mut attempt = 0;
            let (running, local, args) = loop {
                let listen = free_port()?;
                let local = SocketAddr::from(([127, 0, 0, 1], listen));
                let r = def.render(fname, &placeholders(server, feature, targets, listen)).map_err(|e| {
                    anyhow::anyhow!("{client}'s definition (harness/peers/{}/peer.yaml): {e}", client.harness_peer())
                })?;
                let files: Vec<(&str, String)> = r.files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
                match launcher.start(&r.args, &files, ready.then_some(local)).await {
                    Ok(running) => break (running, local, r.args),
                    Err(_) if attempt < 2 => attempt += 1,
                    Err(e) => return Err(e),
                }
            };
            let r = exchange(feature, local).await;
            let logs = format!("{} {}\n{}", client.name(), args.join(" "), running.logs().await);
            running.stop().await;
            let detail = r.with_context(|| format!("client log:\n{logs}"))?;
            Ok(Outcome { detail: format!("{selected}{detail}, XOR-echo verified"), logs })
        }
    }
}

/// The lab's placeholders for a client definition (see `sockslab::peers::ClientDef`).
fn placeholders(
    server: SocketAddr,
    feature: Feature,
    targets: &Targets,
    listen: u16,
) -> BTreeMap<&'static str, String> {
    // SOCKS4a must carry a host name, so the target is `localhost` there (and with a password,
    // where curl sends it with socks5h); elsewhere an IPv4 literal.
    let by_name = matches!(feature, Feature::Socks4a | Feature::Userpass);
    let host = if by_name { "localhost" } else { "127.0.0.1" };
    BTreeMap::from([
        ("listen", listen.to_string()),
        ("proxy", server.to_string()),
        ("server_host", server.ip().to_string()),
        ("server_port", server.port().to_string()),
        ("target_host", host.to_string()),
        ("echo", format!("{host}:{}", targets.echo_port)),
        ("udp_echo", format!("127.0.0.1:{}", targets.echo_port)),
        ("echo_port", targets.echo_port.to_string()),
        ("http_port", targets.http_port.to_string()),
        ("after_fin_port", targets.after_fin_port.to_string()),
        ("user", USER.to_string()),
        ("pass", PASS.to_string()),
        ("socks4_user", SOCKS4_USER.to_string()),
    ])
}

/// What goes through a listening client for `feature`, and how much came back.
async fn exchange(feature: Feature, local: SocketAddr) -> Result<String> {
    match feature {
        Feature::UdpAssociate | Feature::UdpTun | Feature::RudpTun => {
            udp_exchange(local).await.map(|n| format!("{n} bytes in 3 datagrams"))
        }
        Feature::Bind => tcp_exchange_retry(local, 5).await.map(|n| format!("{n} bytes via BIND")),
        Feature::Mbind => tcp_exchange_retry(local, 6).await.map(|n| format!("{n} bytes via MBIND")),
        Feature::HalfClose => half_close_with_retry(local).await.map(|n| format!("{n} bytes back after our FIN")),
        _ => tcp_exchange_retry(local, 4).await.map(|n| format!("{n} bytes over TCP")),
    }
}

/// A client that makes the exchange itself (curl): the payload in `{dir}/in`, its answer in
/// `{dir}/out`, which must be the payload XORed.
#[allow(clippy::too_many_arguments)]
async fn one_shot(
    client: PeerId,
    def: &ClientDef,
    launcher: &Launcher,
    server: SocketAddr,
    feature: Feature,
    targets: &Targets,
    selected: &str,
) -> Result<Outcome> {
    let dir = tempfile::Builder::new().prefix("sockslab-interop-client-").tempdir()?;
    let data = pseudo_random(7, tcp_len());
    std::fs::write(dir.path().join("in"), &data)?;
    let r = def.render(feature.name(), &placeholders(server, feature, targets, 0)).map_err(|e| {
        anyhow::anyhow!("{client}'s definition (harness/peers/{}/peer.yaml): {e}", client.harness_peer())
    })?;
    for (name, body) in &r.files {
        std::fs::write(dir.path().join(name), body)?;
    }
    let exit = launcher.run_once(dir.path(), &r.args, Duration::from_secs(30)).await?;
    let logs = format!("{} {}\n{}", client.name(), r.args.join(" "), exit.output);
    ensure!(exit.code == 0, "{client} exited with {}:\n{}", exit.code, logs);
    let got = std::fs::read(dir.path().join("out")).context("no output file")?;
    ensure!(got == xor(&data), "the answer differs from the payload XOR 0xA5 ({} of {} bytes)", got.len(), data.len());
    Ok(Outcome { detail: format!("{selected}{} bytes over HTTP POST, XOR-echo verified", data.len()), logs })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every client definition renders for every feature it claims with the lab's placeholders
    /// (a misspelt one is an error), and the command lines say what the cells rely on.
    #[tokio::test]
    async fn every_client_definition_renders_for_every_claimed_feature() {
        crate::peers::load().unwrap();
        let targets = Targets::start().await.unwrap();
        let server = SocketAddr::from(([127, 0, 0, 1], 1080));
        let mut rendered = BTreeMap::new();
        for peer in PeerId::ALL {
            for &f in &peer.caps().client {
                let def = peer.client().expect("a peer with client features has a client definition");
                let r = def
                    .render(f.name(), &placeholders(server, f, &targets, 5000))
                    .unwrap_or_else(|e| panic!("{peer} {}: {e}", f.name()));
                let text =
                    format!("{} {}", r.args.join(" "), r.files.iter().map(|(_, b)| b.as_str()).collect::<String>());
                rendered.insert((peer, f), text);
            }
        }
        let at = |p, f| rendered[&(p, f)].as_str();
        assert!(at(PeerId::Curl, Feature::Userpass).contains("-x socks5h://alice:s3cret@127.0.0.1:1080"));
        assert!(at(PeerId::Curl, Feature::Socks4Userid).contains(&format!("socks4://{SOCKS4_USER}@127.0.0.1:1080")));
        assert!(at(PeerId::Reference, Feature::Bind).starts_with("-L rtcp://127.0.0.1:5000/"));
        assert!(at(PeerId::Reference, Feature::Bind).contains("mbind=false"));
        assert!(at(PeerId::Gost, Feature::UdpAssociate).contains("relay=udp"));
        assert!(at(PeerId::Gost, Feature::TlsMethods).ends_with("-F socks5://127.0.0.1:1080 "));
        let v5 = at(PeerId::V2ray5, Feature::Socks4a);
        assert!(v5.contains(r#""version": "4a""#) && v5.contains(r#""address": "localhost""#), "{v5}");
        let v4 = at(PeerId::V2ray4, Feature::Userpass);
        assert!(v4.contains(r#""users": [{"user": "alice", "pass": "s3cret"}]"#) && !v4.contains("version"), "{v4}");
        let json = v4.trim_start_matches("-config {dir}/client.json ");
        serde_json::from_str::<serde_json::Value>(json).unwrap_or_else(|e| panic!("{e}: {json}"));
        assert!(!PeerId::Gost.client().unwrap().features["mbind"].tcp_ready);
    }
}
