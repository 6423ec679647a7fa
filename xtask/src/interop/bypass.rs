//! The UDP authentication bypass regression (docs/v2ray.md §1.10, §6; V-01): what a
//! password-protected server with UDP on does with SOCKS5 UDP datagrams from sources that never
//! authenticated. V2Ray relays them (v2fly/v2fly-github-io#104); the reference must drop them.
//!
//! The observations are recorded as an `insta` snapshot per server peer, so any change in
//! behaviour (a fix upstream, a regression here) shows up as a snapshot diff.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use socksref::proto::udp::UdpHeader;
use socksref::proto::v5::{ReplyMsg, Request};
use socksref::proto::{AddrType, Address, Command, Host};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::servers::{PASS, USER};
use super::targets::{xor, Targets};

/// How long a probe waits for a reply. §6: V2Ray answers within about 2 s when it relays.
const PROBE_WAIT: Duration = Duration::from_millis(2000);

/// What happened to one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fate {
    /// Reached the target and the reply came back to the sender.
    Relayed,
    /// Reached the target, but no reply came back.
    ForwardedNoReply,
    /// Never reached the target.
    Dropped,
}

/// One probe's observation.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// What the probe does.
    pub probe: &'static str,
    /// Where the datagram went (`tcp-port`: the server's TCP port number; `bnd`: the relay
    /// address an authenticated association was given).
    pub sent_to: &'static str,
    /// Its fate.
    pub fate: Fate,
}

/// All observations against one server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Observations {
    /// The properly authenticated association's datagram (must be relayed, or the probes mean nothing).
    pub control: Fate,
    /// The unauthenticated probes.
    pub probes: Vec<Probe>,
}

impl<'de> Deserialize<'de> for Probe {
    /// From a saved report (`interop report --merge`); the names become `'static` (see `leak`).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Probe, D::Error> {
        #[derive(Deserialize)]
        struct Saved {
            probe: String,
            sent_to: String,
            fate: Fate,
        }
        let s = Saved::deserialize(d)?;
        Ok(Probe { probe: super::report::leak(s.probe), sent_to: super::report::leak(s.sent_to), fate: s.fate })
    }
}

impl Observations {
    /// Whether any unauthenticated datagram reached the target.
    pub fn bypassed(&self) -> bool {
        self.probes.iter().any(|p| p.fate != Fate::Dropped)
    }
}

/// A SOCKS5 UDP datagram: the reference codec's header for `target`, then `payload`.
fn datagram(target: &Address, payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    // The probes' targets are an IPv4 address and "localhost": both always encode.
    let _ = UdpHeader::new(target.clone()).encode(&mut d);
    d.extend_from_slice(payload);
    d
}

/// The echo target as ATYP 01 (`127.0.0.1`).
fn atyp1(port: u16) -> Address {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into()
}

/// The echo target as ATYP 03 (`localhost`).
fn atyp3_localhost(port: u16) -> Address {
    Address { host: Host::Domain(b"localhost".to_vec()), port }
}

/// Sends one datagram from `sock` and decides its fate from the reply and the echo's log.
async fn probe(sock: &UdpSocket, to: SocketAddr, target: &Address, payload: &[u8], targets: &Targets) -> Result<Fate> {
    sock.send_to(&datagram(target, payload), to).await?;
    let want = xor(payload);
    let deadline = tokio::time::Instant::now() + PROBE_WAIT;
    let mut buf = vec![0u8; 4096];
    while let Ok(Ok((n, _))) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
        // A SOCKS UDP reply ends with the XORed payload after its header.
        if n >= want.len() && buf[n - want.len()..n] == want[..] {
            return Ok(Fate::Relayed);
        }
    }
    Ok(if targets.udp_received(payload) { Fate::ForwardedNoReply } else { Fate::Dropped })
}

async fn read_n(s: &mut TcpStream, n: usize) -> Result<Vec<u8>> {
    let mut b = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut b)).await.context("timed out")??;
    Ok(b)
}

/// Greeting + RFC 1929 login; returns the stream and whether the login succeeded.
async fn login(server: SocketAddr, pass: &str) -> Result<(TcpStream, bool)> {
    let mut s = TcpStream::connect(server).await?;
    let mut m = vec![0x05, 0x01, 0x02, 0x01, USER.len() as u8];
    m.extend_from_slice(USER.as_bytes());
    m.push(pass.len() as u8);
    m.extend_from_slice(pass.as_bytes());
    s.write_all(&m[..3]).await?;
    ensure!(read_n(&mut s, 2).await? == [0x05, 0x02], "server did not choose method 02");
    s.write_all(&m[3..]).await?;
    let ok = matches!(read_n(&mut s, 2).await, Ok(r) if r[1] == 0x00);
    Ok((s, ok))
}

/// UDP ASSOCIATE on an authenticated connection; returns the relay address (0.0.0.0 → server IP).
async fn associate(s: &mut TcpStream, server: SocketAddr, client: SocketAddr) -> Result<SocketAddr> {
    // DST = the address the client will send from (RFC 1928 §7; the reference checks it). An IPv6
    // source is declared as 0.0.0.0 with its port, as the probes always did.
    let dst = match client {
        SocketAddr::V4(_) => client,
        SocketAddr::V6(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, client.port())),
    };
    let mut req = Vec::new();
    // An IPv4 address always encodes (only an over-long name can fail), so the result is unused.
    let _ = Request { command: Command::UDP_ASSOCIATE, reserved: 0, address: dst.into() }.encode(&mut req);
    s.write_all(&req).await?;
    let mut reply = read_n(s, 4).await?;
    ensure!(reply[1] == 0x00, "UDP ASSOCIATE refused with REP {:02x}", reply[1]);
    ensure!(reply[3] == AddrType::IPV4.0, "BND ATYP {:02x} (only 01 handled)", reply[3]);
    reply.extend(read_n(s, 6).await?);
    let (msg, _) = ReplyMsg::decode(&reply).map_err(|e| anyhow::anyhow!("UDP ASSOCIATE reply: {e}"))?;
    let bnd = msg.address.socket_addr().context("BND is not an IP address")?;
    let ip = if bnd.ip().is_unspecified() { server.ip() } else { bnd.ip() };
    Ok(SocketAddr::new(ip, bnd.port()))
}

/// Runs every probe against a freshly started password+UDP server, in §6's order (the "no TCP at
/// all" probe first, before anything has authenticated).
///
/// `tag` makes every payload unique to this run and server: the echo's log is shared by all cells,
/// and "reached the target" must not be confused with an earlier server's probe.
pub async fn observe(server: SocketAddr, targets: &Targets, tag: &str) -> Result<Observations> {
    let p = |name: &str| format!("{name}-{tag}").into_bytes();
    let t1 = atyp1(targets.echo_port);
    let t3 = atyp3_localhost(targets.echo_port);
    let fresh = || UdpSocket::bind("127.0.0.1:0");
    let mut probes = Vec::new();

    // (a) No TCP connection ever made, ATYP 01 and ATYP 03.
    let s = fresh().await?;
    probes.push(Probe {
        probe: "before-any-tcp",
        sent_to: "tcp-port",
        fate: probe(&s, server, &t1, &p("PROBE-a-before-any-tcp"), targets).await?,
    });
    let s = fresh().await?;
    probes.push(Probe {
        probe: "before-any-tcp-atyp-domain",
        sent_to: "tcp-port",
        fate: probe(&s, server, &t3, &p("PROBE-a-domain"), targets).await?,
    });

    // (b) After a login with a wrong password.
    let (bad, ok) = login(server, "wrong-password").await?;
    ensure!(!ok, "a wrong password was accepted");
    let s = fresh().await?;
    probes.push(Probe {
        probe: "after-failed-login",
        sent_to: "tcp-port",
        fate: probe(&s, server, &t1, &p("PROBE-b-after-failed-login"), targets).await?,
    });
    drop(bad);

    // Positive control: a proper association relays.
    let (mut tcp, ok) = login(server, PASS).await?;
    ensure!(ok, "the right password was refused");
    let assoc = fresh().await?;
    let relay = associate(&mut tcp, server, assoc.local_addr()?).await?;
    let control = probe(&assoc, relay, &t1, &p("CONTROL-authenticated"), targets).await?;

    // (c) Another source port while the association is alive: to its relay and to the TCP port.
    let s = fresh().await?;
    probes.push(Probe {
        probe: "other-port-during-association",
        sent_to: "bnd",
        fate: probe(&s, relay, &t1, &p("PROBE-c-other-port-bnd"), targets).await?,
    });
    if relay != server {
        let s = fresh().await?;
        probes.push(Probe {
            probe: "other-port-during-association",
            sent_to: "tcp-port",
            fate: probe(&s, server, &t1, &p("PROBE-c-other-port-tcp"), targets).await?,
        });
    }

    // (c') After the association's TCP connection closed, from the very socket that associated.
    drop(tcp);
    tokio::time::sleep(Duration::from_millis(300)).await;
    probes.push(Probe {
        probe: "after-association-closed",
        sent_to: "bnd",
        fate: probe(&assoc, relay, &t1, &p("PROBE-c-after-close"), targets).await?,
    });
    Ok(Observations { control, probes })
}
