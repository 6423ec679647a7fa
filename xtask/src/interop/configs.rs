//! `cargo xtask interop --configs`: every example config file under docker/configs/ run twice,
//! once by the real program it was written for (gost `-C`, V2Ray 4.34 `-config`, V2Ray 5
//! `run -c`) and once by `socksref -C` / `socksref --v2ray`, with the same client cells against
//! both. Verdicts must agree, except for the listed, reasoned expected differences.
//!
//! A file's fixed ports (1080, 2080, 9000, …) are replaced by free ones for each run, so runs never
//! collide; a file that needs an upstream (a chain, a forwarder) starts with its upstream file,
//! run by the same program.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use socksref::client::{Chain, Hop};
use socksref::proto::{Address, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::backend::{Launcher, Running};
use crate::peers::PeerId;

/// The ports the example files use; each run maps them to free ones.
const FILE_PORTS: [u16; 8] = [1080, 2080, 1053, 2000, 2053, 2222, 2054, 9053];
/// The TCP target port of the files (the UDP one is 9053, except dokodemo's, which is 9000 for both).
const TARGET_PORT: u16 = 9000;

/// A client check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Check {
    /// curl through the SOCKS port (`--socks4`, `--socks4a`, `--socks5-hostname`, optional `-U`).
    Curl { port: u16, proto: &'static str, user: Option<&'static str> },
    /// socksref as a client: a `tcp://` forwarder through the SOCKS port, then an echo.
    SocksrefTcp { port: u16, user: Option<&'static str> },
    /// Raw SOCKS5 UDP ASSOCIATE (with RFC 1929 when `user`), one datagram to the UDP echo.
    UdpAssociate { port: u16, user: Option<&'static str> },
    /// A SOCKS5 datagram sent straight to the TCP port's UDP twin with no association (V2Ray's
    /// UDP authentication bypass): passes when it is relayed.
    UdpUnassociated { port: u16 },
    /// socksref's client does a SOCKS5 BIND (with RFC 1929 when `user`) naming the peer
    /// (127.0.0.1, or all-zero when `any_peer`: "whoever connects"), a loopback peer connects
    /// to BND, and bytes go both ways.
    Bind { port: u16, user: Option<&'static str>, any_peer: bool },
    /// The same with gost's MBIND (`F2`): the peer's connection arrives as an smux stream.
    Mbind { port: u16, user: Option<&'static str> },
    /// A TCP echo through a local forwarder port.
    TcpForward { port: u16 },
    /// A UDP echo through a local forwarder port.
    UdpForward { port: u16 },
}

/// One example file and what it runs on.
struct Suite {
    /// The file under docker/configs/.
    file: &'static str,
    /// Files started first (upstreams), by the same program.
    needs: &'static [&'static str],
    /// The real programs for this file.
    peers: &'static [PeerId],
    /// The checks.
    checks: Vec<(&'static str, Check)>,
}

/// The prefix of a configs row's id in a peer's expected results (`cells:` in
/// harness/peers/<peer>/expected.yaml, the one expected-results format): a listed row is a check
/// whose verdict differs between the real program and socksref on purpose, with the reason.
pub const ID_PREFIX: &str = "configs.";

/// The id of the row for `check` of `file`, as expected results name it.
pub fn row_id(file: &str, check: &str) -> String {
    format!("{ID_PREFIX}{file}.{check}")
}

fn suites() -> Vec<Suite> {
    use Check::*;
    let gost = &[PeerId::Gost][..];
    let v4 = &[PeerId::V2ray4, PeerId::V2ray5][..];
    let v5 = &[PeerId::V2ray5][..];
    let up = Some("user:pass");
    let alice = Some("alice:s3cret");
    vec![
        Suite {
            file: "gost-socks4.yaml",
            needs: &[],
            peers: gost,
            checks: vec![
                ("curl-socks4", Curl { port: 1080, proto: "--socks4", user: None }),
                ("curl-socks4a", Curl { port: 1080, proto: "--socks4a", user: None }),
                ("curl-socks5", Curl { port: 1080, proto: "--socks5-hostname", user: None }),
            ],
        },
        Suite {
            file: "gost-socks5-auth.yaml",
            needs: &[],
            peers: gost,
            checks: vec![
                ("curl-userpass", Curl { port: 1080, proto: "--socks5-hostname", user: up }),
                ("curl-no-auth", Curl { port: 1080, proto: "--socks5-hostname", user: None }),
                ("curl-wrong-pass", Curl { port: 1080, proto: "--socks5-hostname", user: Some("user:nope") }),
                ("socksref-userpass", SocksrefTcp { port: 1080, user: up }),
                ("udp-associate", UdpAssociate { port: 1080, user: up }),
            ],
        },
        Suite {
            file: "gost-socks5-bind.yaml",
            needs: &[],
            peers: gost,
            checks: vec![
                ("curl-userpass", Curl { port: 1080, proto: "--socks5-hostname", user: up }),
                ("udp-associate", UdpAssociate { port: 1080, user: up }),
                ("bind", Bind { port: 1080, user: up, any_peer: false }),
                ("bind-any-peer", Bind { port: 1080, user: up, any_peer: true }),
                ("mbind", Mbind { port: 1080, user: up }),
            ],
        },
        Suite {
            file: "gost-socks5-udp.yaml",
            needs: &[],
            peers: gost,
            checks: vec![
                ("curl-socks5", Curl { port: 1080, proto: "--socks5-hostname", user: None }),
                ("socksref-connect", SocksrefTcp { port: 1080, user: None }),
                ("udp-associate", UdpAssociate { port: 1080, user: None }),
            ],
        },
        Suite {
            file: "gost-udp-client-relay.yaml",
            needs: &["gost-socks5-udp.yaml"],
            peers: gost,
            checks: vec![("udp-forward", UdpForward { port: 1053 })],
        },
        Suite {
            file: "gost-chain.yaml",
            needs: &["gost-socks5-udp.yaml"],
            peers: gost,
            checks: vec![
                ("curl-via-chain", Curl { port: 2080, proto: "--socks5-hostname", user: None }),
                ("socksref-via-chain", SocksrefTcp { port: 2080, user: None }),
            ],
        },
        Suite {
            file: "gost-forwarders.yaml",
            needs: &["gost-socks5-server-full.yaml"],
            peers: gost,
            checks: vec![
                ("tcp-forward", TcpForward { port: 2000 }),
                ("udp-forward", UdpForward { port: 2053 }),
                ("rtcp-forward", TcpForward { port: 2222 }),
                ("rudp-forward", UdpForward { port: 2054 }),
            ],
        },
        Suite {
            file: "gost-socks5-server-full.yaml",
            needs: &[],
            peers: gost,
            checks: vec![
                ("curl-userpass", Curl { port: 1080, proto: "--socks5-hostname", user: up }),
                ("udp-associate", UdpAssociate { port: 1080, user: up }),
                ("bind", Bind { port: 1080, user: up, any_peer: false }),
                ("mbind", Mbind { port: 1080, user: up }),
            ],
        },
        Suite {
            file: "v2ray4-socks-server.json",
            needs: &[],
            peers: v4,
            checks: vec![
                ("curl-userpass", Curl { port: 1080, proto: "--socks5-hostname", user: alice }),
                ("curl-no-auth", Curl { port: 1080, proto: "--socks5-hostname", user: None }),
                ("curl-socks4a", Curl { port: 1080, proto: "--socks4a", user: None }),
                ("socksref-userpass", SocksrefTcp { port: 1080, user: alice }),
                ("udp-associate", UdpAssociate { port: 1080, user: alice }),
                ("udp-unassociated", UdpUnassociated { port: 1080 }),
                // V2Ray has no BIND: both must refuse it (a pass would be a difference).
                ("bind", Bind { port: 1080, user: alice, any_peer: false }),
            ],
        },
        Suite {
            file: "v2ray4-socks-noauth.json",
            needs: &[],
            peers: v4,
            checks: vec![
                ("curl-socks5", Curl { port: 1080, proto: "--socks5-hostname", user: None }),
                ("curl-socks4a", Curl { port: 1080, proto: "--socks4a", user: None }),
                ("curl-socks4", Curl { port: 1080, proto: "--socks4", user: None }),
                ("udp-associate", UdpAssociate { port: 1080, user: None }),
            ],
        },
        Suite {
            file: "v2ray4-socks-chain.json",
            needs: &["v2ray4-socks-server.json"],
            peers: v4,
            checks: vec![
                ("curl-via-chain", Curl { port: 2080, proto: "--socks5-hostname", user: None }),
                ("socksref-via-chain", SocksrefTcp { port: 2080, user: None }),
            ],
        },
        Suite {
            file: "v2ray4-dokodemo-via-socks.json",
            needs: &["v2ray4-socks-server.json"],
            peers: v4,
            checks: vec![("tcp-forward", TcpForward { port: 2000 }), ("udp-forward", UdpForward { port: 2000 })],
        },
        Suite {
            file: "v2ray5-socks-server.json",
            needs: &[],
            peers: v5,
            checks: vec![
                ("curl-socks5", Curl { port: 1080, proto: "--socks5-hostname", user: None }),
                ("udp-associate", UdpAssociate { port: 1080, user: None }),
                ("udp-unassociated", UdpUnassociated { port: 1080 }),
            ],
        },
        Suite {
            file: "v2ray5-socks-chain.json",
            needs: &["v2ray5-socks-server.json"],
            peers: v5,
            checks: vec![("curl-via-chain", Curl { port: 2080, proto: "--socks5-hostname", user: None })],
        },
    ]
}

/// One check's verdicts.
#[derive(Debug, Serialize)]
pub struct Row {
    file: String,
    peer: String,
    check: String,
    real: bool,
    socksref: bool,
    verdict: String,
}

/// The loopback targets every run points at: HTTP (for curl), TCP echo, UDP echo.
struct Targets {
    http: SocketAddr,
    echo: SocketAddr,
    udp: SocketAddr,
}

async fn targets() -> Result<Targets> {
    let http = TcpListener::bind("127.0.0.1:0").await?;
    let echo = TcpListener::bind("127.0.0.1:0").await?;
    let udp = UdpSocket::bind("127.0.0.1:0").await?;
    let t = Targets { http: http.local_addr()?, echo: echo.local_addr()?, udp: udp.local_addr()? };
    tokio::spawn(async move {
        while let Ok((mut s, _)) = http.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nconfigs").await;
            });
        }
    });
    testkit::echo::tcp(echo);
    testkit::echo::udp(udp, |_| {});
    Ok(t)
}

/// A TCP and UDP port both free a moment ago.
fn free_pair() -> Result<u16> {
    for _ in 0..50 {
        let t = std::net::TcpListener::bind("127.0.0.1:0")?;
        let p = t.local_addr()?.port();
        if std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return Ok(p);
        }
    }
    anyhow::bail!("no free TCP+UDP port pair")
}

/// The text of a file with its ports mapped.
fn mapped(text: &str, ports: &BTreeMap<u16, u16>) -> String {
    let mut out = text.to_string();
    for (from, to) in ports {
        out = out
            .replace(&format!(":{from}"), &format!(":{to}"))
            .replace(&format!("\"port\": {from}"), &format!("\"port\": {to}"));
    }
    out
}

/// How a program runs a file.
fn argv(peer: PeerId, file: &str) -> Vec<String> {
    let path = format!("{{dir}}/{file}");
    match (peer, file.ends_with(".json")) {
        (PeerId::Gost, _) => vec!["-C".into(), path],
        (PeerId::V2ray4, _) => vec!["-config".into(), path],
        (PeerId::V2ray5, _) if file.starts_with("v2ray5-") => {
            vec!["run".into(), "-c".into(), path, "-format".into(), "jsonv5".into()]
        }
        (PeerId::V2ray5, _) => vec!["run".into(), "-c".into(), path],
        (_, true) => vec!["--v2ray".into(), path],
        (_, false) => vec!["-C".into(), path],
    }
}

/// The TCP port that shows a file is up (before mapping); `None` for the UDP-only client.
fn ready_port(file: &str) -> Option<u16> {
    match file {
        "gost-udp-client-relay.yaml" => None,
        "gost-forwarders.yaml" | "v2ray4-dokodemo-via-socks.json" => Some(2000),
        f if f.contains("chain") => Some(2080),
        _ => Some(1080),
    }
}

async fn start(l: &Launcher, peer: PeerId, file: &str, dir: &Path, ports: &BTreeMap<u16, u16>) -> Result<Running> {
    let text = std::fs::read_to_string(dir.join(file)).with_context(|| file.to_string())?;
    let text = mapped(&text, ports);
    let ready = ready_port(file).and_then(|p| ports.get(&p)).map(|p| SocketAddr::from(([127, 0, 0, 1], *p)));
    let r = l.start(&argv(peer, file), &[(file, text)], ready).await?;
    if ready.is_none() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(r)
}

/// Runs the configs section; returns the rows and whether every verdict agreed or was expected.
pub async fn run(
    launchers: &BTreeMap<PeerId, Launcher>,
    unavailable: &BTreeMap<PeerId, String>,
    out: &Path,
) -> Result<bool> {
    let dir = crate::peers::root().join("docker/configs");
    let t = targets().await?;
    let curl = launchers.get(&PeerId::Curl).context("curl is needed")?;
    let reference = launchers.get(&PeerId::Reference).context("socksref is needed")?;
    let mut rows = Vec::new();
    for suite in suites() {
        for &peer in suite.peers {
            let expected = peer.expectations()?;
            let Some(real) = launchers.get(&peer) else {
                eprintln!(
                    "configs: {} on {peer}: unavailable ({})",
                    suite.file,
                    unavailable.get(&peer).map_or("", |s| s)
                );
                continue;
            };
            let mut results: [Vec<bool>; 2] = [Vec::new(), Vec::new()];
            for (i, (launcher, as_peer)) in [(real, peer), (reference, PeerId::Reference)].into_iter().enumerate() {
                let mut ports: BTreeMap<u16, u16> = BTreeMap::new();
                for p in FILE_PORTS {
                    ports.insert(p, free_pair()?);
                }
                // Targets: 9000 is the TCP echo (HTTP for curl goes by URL), 9053 the UDP echo;
                // dokodemo's 9000 serves both, so a UDP echo is forwarded there too.
                ports.insert(TARGET_PORT, t.echo.port());
                ports.insert(9053, t.udp.port());
                let dokodemo_udp =
                    if suite.file.contains("dokodemo") { Some(udp_twin(t.echo.port()).await?) } else { None };
                let mut running = Vec::new();
                for f in suite.needs.iter().chain(std::iter::once(&suite.file)) {
                    match start(launcher, as_peer, f, &dir, &ports).await {
                        Ok(r) => running.push(r),
                        Err(e) => eprintln!("configs: {f} on {as_peer}: {e:#}"),
                    }
                }
                // Remote listens (rtcp/rudp) are set up once the forwarder has reached its server.
                tokio::time::sleep(Duration::from_millis(500)).await;
                for (name, check) in &suite.checks {
                    let ok = if running.len() == suite.needs.len() + 1 {
                        run_check(*check, &ports, &t, curl, reference).await.unwrap_or(false)
                    } else {
                        false
                    };
                    eprintln!("configs: {} {name} on {as_peer}: {}", suite.file, if ok { "pass" } else { "fail" });
                    results[i].push(ok);
                }
                for r in running {
                    r.stop().await;
                }
                if let Some(h) = dokodemo_udp {
                    h.abort();
                    let _ = h.await;
                }
            }
            for (k, (name, _)) in suite.checks.iter().enumerate() {
                let (a, b) = (results[0][k], results[1][k]);
                let listed = expected.cell(&row_id(suite.file, name));
                let verdict = match (a == b, listed) {
                    (true, None) => "same".to_string(),
                    (false, Some(e)) => format!("expected difference: {}", e.reason),
                    (true, Some(_)) => "listed difference did not show (stale list)".to_string(),
                    (false, None) => "DIFFERENT".to_string(),
                };
                rows.push(Row {
                    file: suite.file.into(),
                    peer: peer.to_string(),
                    check: (*name).into(),
                    real: a,
                    socksref: b,
                    verdict,
                });
            }
        }
    }
    println!("{:<32} {:<8} {:<20} {:<6} {:<8} verdict", "file", "peer", "check", "real", "socksref");
    for r in &rows {
        println!(
            "{:<32} {:<8} {:<20} {:<6} {:<8} {}",
            r.file,
            r.peer,
            r.check,
            if r.real { "pass" } else { "fail" },
            if r.socksref { "pass" } else { "fail" },
            r.verdict
        );
    }
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("configs.json"), serde_json::to_string_pretty(&rows)?)?;
    eprintln!("configs: {} rows, report {}", rows.len(), out.join("configs.json").display());
    Ok(rows.iter().all(|r| r.verdict == "same" || r.verdict.starts_with("expected difference")))
}

/// A UDP socket on `port` (the TCP echo's port) that answers like the UDP echo, for dokodemo's
/// one target port serving both.
async fn udp_twin(port: u16) -> Result<tokio::task::JoinHandle<()>> {
    let s = UdpSocket::bind(("127.0.0.1", port)).await.context("UDP twin of the TCP echo port")?;
    Ok(testkit::echo::udp(s, |_| {}))
}

const LIMIT: Duration = Duration::from_secs(5);
/// Between tries of a forwarder check whose remote listen may not be open yet.
const RETRY: Duration = Duration::from_millis(300);

async fn run_check(
    check: Check,
    ports: &BTreeMap<u16, u16>,
    t: &Targets,
    curl: &Launcher,
    reference: &Launcher,
) -> Result<bool> {
    let port = |p: u16| ports.get(&p).copied().unwrap_or(p);
    match check {
        Check::Curl { port: p, proto, user } => {
            let tmp = tempfile::tempdir()?;
            let mut args =
                vec!["-s".to_string(), "-m".into(), "5".into(), proto.into(), format!("127.0.0.1:{}", port(p))];
            if let Some(u) = user {
                args.extend(["-U".into(), u.into()]);
            }
            args.push(format!("http://{}/", t.http));
            let exit = curl.run_once(tmp.path(), &args, Duration::from_secs(10)).await?;
            Ok(exit.code == 0 && exit.output.contains("configs"))
        }
        Check::SocksrefTcp { port: p, user } => {
            let local = free_pair()?;
            let auth = user.map(|u| format!("{u}@")).unwrap_or_default();
            let args = vec![
                "-L".to_string(),
                format!("tcp://127.0.0.1:{local}/{}", t.echo),
                "-F".into(),
                format!("socks5://{auth}127.0.0.1:{}?notls=true", port(p)),
            ];
            let r = reference.start(&args, &[], Some(SocketAddr::from(([127, 0, 0, 1], local)))).await?;
            let ok = tcp_echo(local).await.unwrap_or(false);
            r.stop().await;
            Ok(ok)
        }
        Check::Bind { port: p, user, any_peer } => {
            let chain = one_hop(port(p), user);
            let peer = if any_peer { Address::UNSPECIFIED } else { SocketAddr::from(([127, 0, 0, 1], 0)).into() };
            let work = async {
                let pending = chain.bind(&peer).await?;
                let bound = pending.bound.socket_addr().context("BND is not an IP address")?;
                let mut peer = TcpStream::connect(bound).await?;
                let (mut s, _) = pending.accept().await?;
                anyhow::Ok(both_ways(&mut s, &mut peer).await?)
            };
            Ok(tokio::time::timeout(LIMIT, work).await.is_ok_and(|r| r.unwrap_or(false)))
        }
        Check::Mbind { port: p, user } => {
            let chain = one_hop(port(p), user);
            let work = async {
                let mux = chain.mbind(&Address::from(SocketAddr::from(([127, 0, 0, 1], 0)))).await?;
                let bound = mux.bound.socket_addr().context("BND is not an IP address")?;
                let mut peer = TcpStream::connect(bound).await?;
                let (mut s, _) = mux.accept().await?;
                anyhow::Ok(both_ways(&mut s, &mut peer).await?)
            };
            Ok(tokio::time::timeout(LIMIT, work).await.is_ok_and(|r| r.unwrap_or(false)))
        }
        // A remote listen (rtcp/rudp) opens only once the forwarder has reached its server, which
        // takes longer on a busy machine: a refused connect or an unanswered datagram is tried
        // again until LIMIT; a wrong echo is an answer.
        Check::TcpForward { port: p } => {
            let until = tokio::time::Instant::now() + LIMIT;
            loop {
                match tcp_echo(port(p)).await {
                    Err(_) if tokio::time::Instant::now() < until => tokio::time::sleep(RETRY).await,
                    r => return r,
                }
            }
        }
        Check::UdpForward { port: p } => {
            let s = UdpSocket::bind("127.0.0.1:0").await?;
            let mut buf = [0u8; 2048];
            let until = tokio::time::Instant::now() + LIMIT;
            while tokio::time::Instant::now() < until {
                let _ = s.send_to(b"configs-udp", ("127.0.0.1", port(p))).await;
                if let Ok(Ok((n, _))) = tokio::time::timeout(RETRY, s.recv_from(&mut buf)).await {
                    return Ok(&buf[..n] == b"configs-udp");
                }
            }
            Ok(false)
        }
        Check::UdpAssociate { port: p, user } => udp_associate(port(p), user, t.udp).await,
        Check::UdpUnassociated { port: p } => {
            let s = UdpSocket::bind("127.0.0.1:0").await?;
            s.send_to(&datagram(t.udp, b"bypass"), ("127.0.0.1", port(p))).await?;
            let mut buf = [0u8; 2048];
            match tokio::time::timeout(Duration::from_secs(2), s.recv_from(&mut buf)).await {
                Ok(Ok((n, _))) => Ok(buf[..n].ends_with(b"bypass")),
                _ => Ok(false),
            }
        }
    }
}

/// A one-hop SOCKS5 chain of socksref's client to 127.0.0.1:`port`, offering no TLS methods.
fn one_hop(port: u16, user: Option<&str>) -> Chain {
    let mut hop = Hop::new(Version::V5, Address::from(SocketAddr::from(([127, 0, 0, 1], port))));
    if let Some((name, pass)) = user.map(|u| u.split_once(':').unwrap_or((u, ""))) {
        hop = hop.with_credentials(name, pass);
    }
    Chain::new(vec![hop])
}

/// Bytes from `a` reach `b` and the other way round.
async fn both_ways<A, B>(a: &mut A, b: &mut B) -> std::io::Result<bool>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (there, back) = (b"configs-there", b"configs-back");
    a.write_all(there).await?;
    let mut got = [0u8; 13];
    b.read_exact(&mut got).await?;
    b.write_all(back).await?;
    let mut got_back = [0u8; 12];
    a.read_exact(&mut got_back).await?;
    Ok(&got == there && &got_back == back)
}

async fn tcp_echo(port: u16) -> Result<bool> {
    let mut s = tokio::time::timeout(LIMIT, TcpStream::connect(("127.0.0.1", port))).await??;
    s.write_all(b"configs-tcp").await?;
    let mut buf = [0u8; 11];
    Ok(matches!(tokio::time::timeout(LIMIT, s.read_exact(&mut buf)).await, Ok(Ok(_))) && &buf == b"configs-tcp")
}

/// A SOCKS5 UDP request header for an IPv4 `to`, then `data`.
fn datagram(to: SocketAddr, data: &[u8]) -> Vec<u8> {
    let SocketAddr::V4(v4) = to else { return Vec::new() };
    let mut d = vec![0, 0, 0, 1];
    d.extend(v4.ip().octets());
    d.extend(v4.port().to_be_bytes());
    d.extend(data);
    d
}

async fn udp_associate(port: u16, user: Option<&str>, echo: SocketAddr) -> Result<bool> {
    let work = async {
        let mut c = TcpStream::connect(("127.0.0.1", port)).await?;
        let method = if user.is_some() { 2u8 } else { 0 };
        c.write_all(&[5, 1, method]).await?;
        let mut r = [0u8; 2];
        c.read_exact(&mut r).await?;
        if r != [5, method] {
            return Ok(false);
        }
        if let Some(u) = user {
            let (name, pass) = u.split_once(':').unwrap_or((u, ""));
            let mut m = vec![1, name.len() as u8];
            m.extend(name.as_bytes());
            m.push(pass.len() as u8);
            m.extend(pass.as_bytes());
            c.write_all(&m).await?;
            c.read_exact(&mut r).await?;
            if r[1] != 0 {
                return Ok(false);
            }
        }
        let udp = UdpSocket::bind("127.0.0.1:0").await?;
        let SocketAddr::V4(me) = udp.local_addr()? else { return Ok(false) };
        let mut req = vec![5, 3, 0, 1];
        req.extend(me.ip().octets());
        req.extend(me.port().to_be_bytes());
        c.write_all(&req).await?;
        let mut rep = [0u8; 10];
        c.read_exact(&mut rep).await?;
        if rep[1] != 0 || rep[3] != 1 {
            return Ok(false);
        }
        let mut ip = [rep[4], rep[5], rep[6], rep[7]];
        if ip == [0, 0, 0, 0] {
            ip = [127, 0, 0, 1];
        }
        let relay = SocketAddr::from((ip, u16::from_be_bytes([rep[8], rep[9]])));
        udp.send_to(&datagram(echo, b"configs-assoc"), relay).await?;
        let mut buf = [0u8; 2048];
        let (n, _) = udp.recv_from(&mut buf).await?;
        drop(c);
        anyhow::Ok(buf[..n].ends_with(b"configs-assoc"))
    };
    Ok(tokio::time::timeout(LIMIT, work).await.unwrap_or(Ok(false)).unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configs entry in a peer's expected results must name a check of a file that peer runs,
    /// or it would never be compared (and never show as stale).
    #[test]
    fn every_listed_configs_difference_names_a_check_its_peer_runs() {
        let suites = suites();
        let mut entries = 0;
        for peer in PeerId::ALL {
            for e in peer.expectations().unwrap().cells.iter().filter(|e| e.id.starts_with(ID_PREFIX)) {
                let known = suites
                    .iter()
                    .any(|s| s.peers.contains(&peer) && s.checks.iter().any(|(name, _)| row_id(s.file, name) == e.id));
                assert!(known, "{peer}: `{}` is no check of a file {peer} runs", e.id);
                assert!(!e.reason.trim().is_empty(), "{peer}: `{}` has no reason", e.id);
                entries += 1;
            }
        }
        assert_eq!(entries, 4, "the bind-any-peer difference and V2Ray's UDP bypass on three rows");
    }
}
