//! The behaviour-diff view: the same raw requests sent to every server peer, recording which reply
//! code, which BND form and which close behaviour each one chose. Not pass/fail: RFC 1928 leaves
//! several of these open, and the point is to see the peers side by side.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use socksref::proto::codec::Reader;
use socksref::proto::v5::Request;
use socksref::proto::{AddrType, Address, Command, Host};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::servers::{PASS, USER};

/// One row of the view: a probe and what the server did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// Probe name.
    pub probe: &'static str,
    /// What was sent, in words.
    pub request: &'static str,
    /// What came back.
    pub observed: String,
}

impl<'de> serde::Deserialize<'de> for Row {
    /// From a saved report (`interop report --merge`); the names become `'static` (see `leak`).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Row, D::Error> {
        #[derive(serde::Deserialize)]
        struct Saved {
            probe: String,
            request: String,
            observed: String,
        }
        let s = <Saved as serde::Deserialize>::deserialize(d)?;
        Ok(Row { probe: super::report::leak(s.probe), request: super::report::leak(s.request), observed: s.observed })
    }
}

fn hex(b: &[u8]) -> String {
    testkit::hex::spaced(b, usize::MAX)
}

/// Reads what the server sends within `wait`, then tells whether it closed.
async fn collect(s: &mut TcpStream, wait: Duration) -> (Vec<u8>, &'static str) {
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (got, "stays open"),
            Ok(Ok(0)) => return (got, "closes (FIN)"),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, "closes (RST)"),
            Ok(Err(_)) => return (got, "closes (error)"),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Describes a SOCKS5 reply: REP and the BND form.
fn socks5_reply(b: &[u8]) -> String {
    if b.len() < 4 {
        return if b.is_empty() { "no reply".into() } else { format!("short reply {}", hex(b)) };
    }
    // The BND form as the reference codec reads it; a truncated one is named by its ATYP.
    let bnd = match Address::decode(&mut Reader::new(&b[3..])) {
        Ok(Address { host: Host::Ip(IpAddr::V4(ip)), port }) => {
            if ip.is_unspecified() && port == 0 {
                "BND 0.0.0.0:0".to_string()
            } else if ip.is_unspecified() {
                format!("BND 0.0.0.0:{port}")
            } else {
                format!("BND {ip}:{}", if port == 0 { "0" } else { "port" })
            }
        }
        Ok(Address { host: Host::Ip(IpAddr::V6(_)), .. }) => "BND IPv6".into(),
        Ok(Address { host: Host::Domain(_), .. }) => "BND domain".into(),
        Err(_) => match AddrType(b[3]) {
            AddrType::DOMAIN => "BND domain".into(),
            AddrType::IPV6 => "BND IPv6".into(),
            t => format!("BND ATYP {:02x}", t.0),
        },
    };
    format!("REP {:02x}, {bnd}", b[1])
}

async fn exchange(server: SocketAddr, msgs: &[&[u8]], wait: Duration) -> (Vec<u8>, &'static str) {
    let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(server)).await else {
        return (Vec::new(), "connect failed");
    };
    for m in msgs {
        if s.write_all(m).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    collect(&mut s, wait).await
}

/// Runs the probes against an open server (`open`) and a password one (`auth`).
pub async fn probe(open: SocketAddr, auth: Option<SocketAddr>, echo_port: u16, closed_port: u16) -> Vec<Row> {
    let wait = Duration::from_millis(1200);
    let mut rows = Vec::new();
    let req = |cmd: u8, port: u16| {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into();
        let mut v = Vec::new();
        // An IPv4 address always encodes (only an over-long name can fail), so the result is unused.
        let _ = Request { command: Command(cmd), reserved: 0, address }.encode(&mut v);
        v
    };
    let five = |reply: &[u8], close: &str, skip: usize| {
        let r = reply.get(skip..).unwrap_or_default();
        format!("{}; then {close}", socks5_reply(r))
    };

    let r = req(0x01, echo_port);
    let (b, c) = exchange(open, &[&[0x05, 0x01, 0x00], &r], wait).await;
    rows.push(Row { probe: "connect-ok", request: "CONNECT 127.0.0.1:echo", observed: five(&b, c, 2) });

    let r = req(0x01, closed_port);
    let (b, c) = exchange(open, &[&[0x05, 0x01, 0x00], &r], wait).await;
    rows.push(Row { probe: "connect-refused", request: "CONNECT to a closed port", observed: five(&b, c, 2) });

    let r = req(0xF0, echo_port);
    let (b, c) = exchange(open, &[&[0x05, 0x01, 0x00], &r], wait).await;
    rows.push(Row { probe: "unknown-command", request: "CMD F0", observed: five(&b, c, 2) });

    let mut r = req(0x01, echo_port);
    r[3] = 0x05;
    let (b, c) = exchange(open, &[&[0x05, 0x01, 0x00], &r], wait).await;
    rows.push(Row { probe: "unknown-atyp", request: "ATYP 05", observed: five(&b, c, 2) });

    let r = req(0x03, 0);
    let (b, c) = exchange(open, &[&[0x05, 0x01, 0x00], &r], wait).await;
    rows.push(Row { probe: "udp-associate", request: "UDP ASSOCIATE 127.0.0.1:0", observed: five(&b, c, 2) });

    let r = req(0x02, 0);
    let (b, c) = exchange(open, &[&[0x05, 0x01, 0x00], &r], Duration::from_millis(600)).await;
    rows.push(Row { probe: "bind", request: "BIND 127.0.0.1:0", observed: five(&b, c, 2) });

    let (b, c) = exchange(open, &[&[0x05, 0x01, 0x02]], wait).await;
    rows.push(Row {
        probe: "no-acceptable-method",
        request: "greeting offering only 02 to a no-auth server",
        observed: format!("{}; then {c}", if b.is_empty() { "no reply".into() } else { hex(&b) }),
    });

    let mut s4 = vec![0x04, 0x01];
    s4.extend_from_slice(&closed_port.to_be_bytes());
    s4.extend_from_slice(&[127, 0, 0, 1, 0]);
    let (b, c) = exchange(open, &[&s4], wait).await;
    rows.push(Row {
        probe: "socks4-refused",
        request: "SOCKS4 CONNECT to a closed port",
        observed: format!("{}; then {c}", if b.len() >= 2 { format!("CD {:02x}", b[1]) } else { "no reply".into() }),
    });

    if let Some(auth) = auth {
        let mut m = vec![0x01, USER.len() as u8];
        m.extend_from_slice(USER.as_bytes());
        m.push(5);
        m.extend_from_slice(b"wrong");
        let (b, c) = exchange(auth, &[&[0x05, 0x01, 0x02], &m], wait).await;
        let status = if b.len() >= 4 { format!("status {:02x}", b[3]) } else { "no status".into() };
        rows.push(Row {
            probe: "bad-password",
            request: "RFC 1929 with a wrong password",
            observed: format!("{status}; then {c}"),
        });
        let mut m = vec![0x01, USER.len() as u8];
        m.extend_from_slice(USER.as_bytes());
        m.push(PASS.len() as u8);
        m.extend_from_slice(PASS.as_bytes());
        let r = req(0x01, echo_port);
        let (b, c) = exchange(auth, &[&[0x05, 0x01, 0x02], &m, &r], wait).await;
        rows.push(Row { probe: "auth-connect-ok", request: "login, CONNECT 127.0.0.1:echo", observed: five(&b, c, 4) });
    }
    rows
}
