//! Target fixtures: small loopback servers a scenario's requests point at.
//!
//! Each fixture records what it saw (connections, octets, datagrams) so scenarios can assert on the
//! target's side too — e.g. V-01 passes only if the UDP echo received nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use crate::scenario::template::XOR_KEY;
use crate::scenario::FixtureKind;

/// The body the HTTP fixture serves.
pub const HTTP_BODY: &[u8] = b"sockslab http fixture\n";
/// The banner the slow-drip fixture sends first, one octet at a time.
pub const DRIP_BANNER: &[u8] = b"DRIP-BANNER\r\n";
/// What the half-close fixture sends before shutting down its sending side.
pub const HALF_CLOSE_GREETING: &[u8] = b"bye";
/// The prefix the UDP echo puts before each payload it returns, so a relay that bounces the
/// client's own datagram back cannot pass.
pub const UDP_ECHO_PREFIX: &[u8] = b"echo:";

/// What a fixture has observed so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// TCP connections accepted.
    pub connections: usize,
    /// Octets received over TCP, all connections in arrival order.
    pub bytes: Vec<u8>,
    /// UDP datagrams received: source and payload.
    pub datagrams: Vec<(SocketAddr, Vec<u8>)>,
}

/// A running fixture; its tasks stop when it is dropped.
pub struct Fixture {
    /// Which fixture this is.
    pub kind: FixtureKind,
    /// IPv4 loopback address (TCP or UDP, depending on the kind).
    pub addr: SocketAddr,
    /// The same port on `::1`, when it could be bound there too.
    pub addr6: Option<SocketAddr>,
    record: Arc<Mutex<Record>>,
    tasks: Vec<JoinHandle<()>>,
    // Sockets held open for the fixture's lifetime (the refuse port, the blackhole's queue fillers).
    _held: Vec<HeldSocket>,
}

enum HeldSocket {
    Raw(#[allow(dead_code)] TcpSocket),
    Stream(#[allow(dead_code)] TcpStream),
    Listener(#[allow(dead_code)] TcpListener),
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

impl Fixture {
    /// Starts a fixture of `kind` on loopback. `FixtureKind::None` gives a placeholder whose address
    /// is a refused port, so templates referring to the target still render.
    pub async fn start(kind: FixtureKind) -> std::io::Result<Fixture> {
        let record = Arc::new(Mutex::new(Record::default()));
        let mut f = Fixture {
            kind,
            addr: SocketAddr::new(V4, 0),
            addr6: None,
            record: record.clone(),
            tasks: Vec::new(),
            _held: Vec::new(),
        };
        match kind {
            FixtureKind::None | FixtureKind::Refuse => {
                // Bound but not listening: the port stays ours and every connect gets a RST.
                let s = TcpSocket::new_v4()?;
                s.bind(SocketAddr::new(V4, 0))?;
                f.addr = s.local_addr()?;
                f._held.push(HeldSocket::Raw(s));
            }
            FixtureKind::Blackhole => {
                let s = TcpSocket::new_v4()?;
                s.bind(SocketAddr::new(V4, 0))?;
                let l = s.listen(0)?;
                f.addr = l.local_addr()?;
                // Fill the accept queue (never accepted): Linux then drops further SYNs, so a
                // connect through the proxy hangs like one to an unreachable host.
                for _ in 0..3 {
                    if let Ok(Ok(c)) =
                        tokio::time::timeout(Duration::from_millis(150), TcpStream::connect(f.addr)).await
                    {
                        f._held.push(HeldSocket::Stream(c));
                    }
                }
                f._held.push(HeldSocket::Listener(l));
            }
            FixtureKind::UdpEcho | FixtureKind::UdpXorEcho => {
                let (s4, s6) = bind_pair(|a| async move { UdpSocket::bind(a).await }, |s| s.local_addr()).await?;
                f.addr = s4.local_addr()?;
                f.addr6 = s6.as_ref().and_then(|s| s.local_addr().ok());
                let xor = kind == FixtureKind::UdpXorEcho;
                for s in std::iter::once(s4).chain(s6) {
                    f.tasks.push(tokio::spawn(udp_echo(s, record.clone(), xor)));
                }
            }
            _ => {
                let (l4, l6) = bind_pair(|a| async move { TcpListener::bind(a).await }, |l| l.local_addr()).await?;
                f.addr = l4.local_addr()?;
                f.addr6 = l6.as_ref().and_then(|l| l.local_addr().ok());
                for l in std::iter::once(l4).chain(l6) {
                    f.tasks.push(tokio::spawn(accept_loop(l, kind, record.clone())));
                }
            }
        }
        Ok(f)
    }

    /// A copy of what the fixture has recorded.
    pub fn record(&self) -> Record {
        self.record.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// Binds 127.0.0.1:0, then the same port on ::1 so one `{target.port}` serves both families;
/// retries a few times when the v6 port is taken, and gives up on v6 (not on the fixture) after that.
async fn bind_pair<T, F, Fut>(
    bind: F,
    local: impl Fn(&T) -> std::io::Result<SocketAddr>,
) -> std::io::Result<(T, Option<T>)>
where
    F: Fn(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<T>>,
{
    let mut last = None;
    for _ in 0..8 {
        let a = bind(SocketAddr::new(V4, 0)).await?;
        let port = local(&a)?.port();
        match bind(SocketAddr::new(V6, port)).await {
            Ok(b) => return Ok((a, Some(b))),
            Err(_) => last = Some(a),
        }
    }
    // `last` is always set here: the loop ran at least once and only falls through on v6 failure.
    Ok((last.expect("loop ran"), None))
}

async fn accept_loop(l: TcpListener, kind: FixtureKind, record: Arc<Mutex<Record>>) {
    // Bounded: a scenario opens a handful of connections; a runaway peer cannot make this spin forever.
    for _ in 0..10_000 {
        let Ok((s, _)) = l.accept().await else { continue };
        if let Ok(mut r) = record.lock() {
            r.connections += 1;
        }
        tokio::spawn(serve_conn(s, kind, record.clone()));
    }
}

fn note(record: &Arc<Mutex<Record>>, data: &[u8]) {
    if let Ok(mut r) = record.lock() {
        r.bytes.extend_from_slice(data);
    }
}

async fn serve_conn(mut s: TcpStream, kind: FixtureKind, record: Arc<Mutex<Record>>) {
    let _ = s.set_nodelay(true);
    let mut buf = vec![0u8; 16 * 1024];
    match kind {
        FixtureKind::Echo | FixtureKind::XorEcho => {
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    let _ = s.shutdown().await;
                    break;
                }
                note(&record, &buf[..n]);
                if kind == FixtureKind::XorEcho {
                    buf[..n].iter_mut().for_each(|b| *b ^= XOR_KEY);
                }
                if s.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
        FixtureKind::Http => {
            let mut req = Vec::new();
            while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 64 * 1024 {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        note(&record, &buf[..n]);
                        req.extend_from_slice(&buf[..n]);
                    }
                }
            }
            let head = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                HTTP_BODY.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(HTTP_BODY).await;
            let _ = s.shutdown().await;
        }
        FixtureKind::HalfClose => {
            let _ = s.write_all(HALF_CLOSE_GREETING).await;
            let _ = s.shutdown().await;
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                note(&record, &buf[..n]);
            }
        }
        FixtureKind::SlowDrip => {
            for b in DRIP_BANNER {
                if s.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    let _ = s.shutdown().await;
                    break;
                }
                note(&record, &buf[..n]);
                if s.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
        // Discard (and anything else accepted): read and record, never write.
        _ => {
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                note(&record, &buf[..n]);
            }
        }
    }
}

async fn udp_echo(s: UdpSocket, record: Arc<Mutex<Record>>, xor: bool) {
    let mut buf = vec![0u8; 65_536];
    for _ in 0..100_000 {
        let Ok((n, from)) = s.recv_from(&mut buf).await else { continue };
        if let Ok(mut r) = record.lock() {
            r.datagrams.push((from, buf[..n].to_vec()));
        }
        // The XOR echo answers with the datagram XOR the key and nothing else, as the lab's UDP
        // target does; the plain echo prefixes `echo:`.
        let reply = if xor {
            buf[..n].iter().map(|b| b ^ XOR_KEY).collect()
        } else {
            let mut r = UDP_ECHO_PREFIX.to_vec();
            r.extend_from_slice(&buf[..n]);
            r
        };
        let _ = s.send_to(&reply, from).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn xor_echo_transforms_and_records() {
        let f = Fixture::start(FixtureKind::XorEcho).await.unwrap();
        let mut c = TcpStream::connect(f.addr).await.unwrap();
        c.write_all(b"\x00\xff").await.unwrap();
        let mut b = [0u8; 2];
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(b, [XOR_KEY, 0xff ^ XOR_KEY]);
        assert_eq!(f.record().bytes, b"\x00\xff");
        assert_eq!(f.record().connections, 1);
    }

    #[tokio::test]
    async fn refuse_refuses_and_blackhole_hangs() {
        let f = Fixture::start(FixtureKind::Refuse).await.unwrap();
        let e = TcpStream::connect(f.addr).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
        let f = Fixture::start(FixtureKind::Blackhole).await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(f.addr)).await;
        assert!(r.is_err(), "connect to the blackhole completed: {r:?}");
    }

    #[tokio::test]
    async fn udp_xor_echo_transforms_and_records() {
        let f = Fixture::start(FixtureKind::UdpXorEcho).await.unwrap();
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        c.send_to(b"\x00\xff", f.addr).await.unwrap();
        let mut b = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(2), c.recv(&mut b)).await.unwrap().unwrap();
        assert_eq!(&b[..n], [XOR_KEY, 0xff ^ XOR_KEY]);
        assert_eq!(f.record().datagrams.len(), 1);
    }

    #[tokio::test]
    async fn udp_echo_prefixes_and_records() {
        let f = Fixture::start(FixtureKind::UdpEcho).await.unwrap();
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        c.send_to(b"x", f.addr).await.unwrap();
        let mut b = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(2), c.recv(&mut b)).await.unwrap().unwrap();
        assert_eq!(&b[..n], b"echo:x");
        assert_eq!(f.record().datagrams.len(), 1);
    }
}
