//! Loopback process helpers shared by the harness, the xtask lab and bench, and the tests.
//!
//! Every crate of the workspace starts servers (peers, the reference binary, Dante, V2Ray) on a
//! free loopback port and must wait until they accept before using them. These helpers are the
//! one copy of that: [`free_port`], [`wait_accepting`] (blocking) and
//! [`wait_accepting_async`] (tokio), which both notice a process that exited instead of waiting
//! out the deadline, and [`terminate`], which stops only the process it is given; and
//! [`pseudo_random`], the one deterministic payload generator for volume checks; and [`echo`],
//! the loopback echo targets those checks point at; and [`hex`], the one way octets are written
//! as hex (and read back) in tests, transcripts and reports.
//!
//! The crate depends on no other workspace crate, so `socksref`'s own tests can use it as a
//! dev-dependency without a cycle.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// How long one readiness probe (a TCP connect on loopback) may take before it counts as "not yet".
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);
/// The pause between two probes: short, so a test does not wait longer than the server needs.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// `len` deterministic pseudo-random octets (xorshift64 seeded by `seed`): reproducible without
/// an RNG, and poorly compressible, so a relay that drops, reorders or loops back a block (or a
/// compressing transport such as kcp's snappy layer) cannot pass a volume check by accident.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A loopback TCP port that nothing listens on right now.
///
/// Bind-and-release: another process could take the port before the caller binds it. On a lab
/// machine where only these tools pick ports that race is accepted; the caller's bind fails
/// loudly if it happens.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `127.0.0.1` with a [`free_port`].
pub fn free_addr() -> io::Result<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?)))
}

/// `127.0.0.1` with a UDP port that nothing is bound to right now (a kcp or UDP forwarder's
/// port), with the same bind-and-release race as [`free_port`].
pub fn free_udp_addr() -> io::Result<SocketAddr> {
    std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()
}

/// Why a started process did not become ready.
#[derive(Debug)]
#[non_exhaustive]
pub enum NotReady {
    /// It exited before every listener accepted.
    Exited(ExitStatus),
    /// A listener still refused connections when the deadline passed.
    Timeout {
        /// The address that never accepted.
        addr: SocketAddr,
        /// How long was waited in all.
        after: Duration,
    },
    /// Asking whether the process is still running failed.
    Io(io::Error),
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotReady::Exited(status) => write!(f, "exited during startup ({status})"),
            NotReady::Timeout { addr, after } => write!(f, "did not accept on {addr} within {after:?}"),
            NotReady::Io(e) => write!(f, "cannot tell whether it is running: {e}"),
        }
    }
}

impl std::error::Error for NotReady {}

/// A started process whose exit can be polled without blocking: `std` and `tokio` children.
pub trait Exits {
    /// `Some(status)` once the process has exited, `None` while it runs.
    fn exited(&mut self) -> io::Result<Option<ExitStatus>>;
}

impl Exits for std::process::Child {
    fn exited(&mut self) -> io::Result<Option<ExitStatus>> {
        self.try_wait()
    }
}

impl Exits for tokio::process::Child {
    fn exited(&mut self) -> io::Result<Option<ExitStatus>> {
        self.try_wait()
    }
}

/// A process that is not watched (a server in this process, a container): it never "exits".
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProcess;

impl Exits for NoProcess {
    fn exited(&mut self) -> io::Result<Option<ExitStatus>> {
        Ok(None)
    }
}

/// One round of the readiness loop: has `child` died, and does `addr` accept yet?
fn exited_or_ready(child: &mut impl Exits, accepted: bool) -> Result<bool, NotReady> {
    match child.exited().map_err(NotReady::Io)? {
        Some(status) => Err(NotReady::Exited(status)),
        None => Ok(accepted),
    }
}

/// Blocks until every address in `addrs` accepts a TCP connection, `child` exits, or `within`
/// has passed. A process that exits is reported at once, with its status.
pub fn wait_accepting(child: &mut impl Exits, addrs: &[SocketAddr], within: Duration) -> Result<(), NotReady> {
    let start = Instant::now();
    for &addr in addrs {
        while !exited_or_ready(child, TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).is_ok())? {
            if start.elapsed() >= within {
                return Err(NotReady::Timeout { addr, after: within });
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
    }
    Ok(())
}

/// [`wait_accepting`] for tokio callers: the same rule, without blocking the runtime.
pub async fn wait_accepting_async(
    child: &mut impl Exits,
    addrs: &[SocketAddr],
    within: Duration,
) -> Result<(), NotReady> {
    let start = Instant::now();
    for &addr in addrs {
        loop {
            let connect = tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await;
            if exited_or_ready(child, matches!(connect, Ok(Ok(_))))? {
                break;
            }
            if start.elapsed() >= within {
                return Err(NotReady::Timeout { addr, after: within });
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }
    Ok(())
}

/// Waits until something has bound UDP `addr` (a kcp server has no TCP port to probe): binding
/// it ourselves fails with `AddrInUse` once it is taken. Gives up after `within`.
pub async fn wait_udp_bound(addr: SocketAddr, within: Duration) -> Result<(), NotReady> {
    let start = Instant::now();
    loop {
        match std::net::UdpSocket::bind(addr) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Ok(()),
            Err(e) => return Err(NotReady::Io(e)),
            Ok(probe) => drop(probe),
        }
        if start.elapsed() >= within {
            return Err(NotReady::Timeout { addr, after: within });
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// Stops the process we started: SIGTERM to its pid (a daemon such as danted then stops the
/// helpers it forked), then SIGKILL if it has not exited within `grace`. Reaps it either way.
pub fn terminate(child: &mut std::process::Child, grace: Duration) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) takes plain integers; `pid` is the child this process spawned and has
        // not reaped yet, so the number cannot name another process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let start = Instant::now();
    while start.elapsed() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(PROBE_INTERVAL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Octets as hex, the workspace's one copy (the `hex` crate underneath): plain lower-case for
/// transcripts and captures, spaced for messages, and spaced or run-together hex read back in
/// tests.
pub mod hex {
    /// Lower-case hex without separators: `05 01 00` → `"050100"`.
    pub fn encode(b: &[u8]) -> String {
        ::hex::encode(b)
    }

    /// Hex with a space between octets, cut after `max` octets with the total said
    /// (`usize::MAX`: never cut).
    pub fn spaced(b: &[u8], max: usize) -> String {
        let mut s: Vec<String> = b.iter().take(max).map(|x| format!("{x:02x}")).collect();
        if b.len() > max {
            s.push(format!("… ({} octets)", b.len()));
        }
        s.join(" ")
    }

    /// Reads hex with any whitespace between digits (`"05 01 00"`, `"050100"`). For fixed test
    /// data: malformed input panics with the input in the message.
    pub fn decode(text: &str) -> Vec<u8> {
        let digits: String = text.split_whitespace().collect();
        ::hex::decode(&digits).unwrap_or_else(|e| panic!("bad hex {text:?}: {e}"))
    }
}

/// Loopback echo targets: what a tunnel under test is pointed at, so every byte that goes out
/// must come back. The one copy of the loops the lab, the soak, the configs section and the tests
/// each wrote before.
pub mod echo {
    use tokio::net::{TcpListener, UdpSocket};
    use tokio::task::JoinHandle;

    /// Echoes every connection accepted on `l` back to itself until `l` fails (the task is
    /// aborted or dropped with the runtime).
    pub fn tcp(l: TcpListener) -> JoinHandle<()> {
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        })
    }

    /// Answers every datagram on `s` to its sender with the same octets after `transform`
    /// (identity, or a XOR that proves the answer passed the echo and is not a reflection).
    pub fn udp(s: UdpSocket, transform: impl Fn(&mut [u8]) + Send + 'static) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                transform(&mut buf[..n]);
                let _ = s.send_to(&buf[..n], from).await;
            }
        })
    }

    /// A `transform` for [`udp`]: XOR with `key`.
    pub fn xor(key: u8) -> impl Fn(&mut [u8]) + Send + 'static {
        move |b: &mut [u8]| b.iter_mut().for_each(|x| *x ^= key)
    }
}

/// The rstest cases of every transport that wraps the SOCKS stream (all of socksref's but plain
/// TCP), one case per transport named after it: the list that the transport tests of socksref
/// and the catalogue-over-transports tests of sockslab each wrote out before. Apply it with
/// `#[rstest_reuse::apply(testkit::tunnels)]` to an `async fn` whose argument is
/// `kind: socksref::transport::Kind` (more cases, such as plain TCP, may follow the `apply`).
///
/// The cases name `socksref::transport::Kind` as tokens only: they are checked where the template
/// is applied (a crate that depends on socksref), so this crate still depends on no workspace
/// crate.
#[rstest_reuse::template]
#[export]
#[rstest]
#[case::tls(socksref::transport::Kind::Tls)]
#[case::ws(socksref::transport::Kind::Ws)]
#[case::wss(socksref::transport::Kind::Wss)]
#[case::mtls(socksref::transport::Kind::Mtls)]
#[case::mws(socksref::transport::Kind::Mws)]
#[case::mwss(socksref::transport::Kind::Mwss)]
#[case::kcp(socksref::transport::Kind::Kcp)]
fn tunnels(#[case] kind: socksref::transport::Kind) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_free_port_can_be_bound() {
        let port = free_port().expect("a port");
        assert_ne!(port, 0);
        TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
    }

    #[test]
    fn a_free_udp_port_can_be_bound() {
        let addr = free_udp_addr().expect("a port");
        assert_ne!(addr.port(), 0);
        std::net::UdpSocket::bind(addr).expect("the port is free");
    }

    #[test]
    fn an_accepting_listener_is_ready() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        wait_accepting(&mut NoProcess, &[addr], Duration::from_secs(5)).expect("ready");
    }

    #[test]
    fn a_process_that_exits_is_reported_with_its_status_not_a_timeout() {
        let mut child = Command::new("sh").args(["-c", "exit 3"]).spawn().expect("sh");
        let addr = free_addr().unwrap();
        // A generous deadline: the exit must end the wait long before it.
        match wait_accepting(&mut child, &[addr], Duration::from_secs(600)) {
            Err(NotReady::Exited(status)) => assert_eq!(status.code(), Some(3)),
            other => panic!("expected Exited, got {other:?}"),
        }
    }

    #[test]
    fn a_closed_port_times_out_naming_the_address() {
        let addr = free_addr().unwrap();
        match wait_accepting(&mut NoProcess, &[addr], Duration::ZERO) {
            Err(NotReady::Timeout { addr: a, .. }) => assert_eq!(a, addr),
            other => panic!("expected Timeout, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_async_wait_notices_an_exit_too() {
        let mut child = tokio::process::Command::new("sh").args(["-c", "exit 4"]).spawn().expect("sh");
        let addr = free_addr().unwrap();
        match wait_accepting_async(&mut child, &[addr], Duration::from_secs(600)).await {
            Err(NotReady::Exited(status)) => assert_eq!(status.code(), Some(4)),
            other => panic!("expected Exited, got {other:?}"),
        }
    }

    #[test]
    fn terminate_stops_and_reaps_the_process() {
        let mut child = Command::new("sleep").arg("600").spawn().expect("sleep");
        terminate(&mut child, Duration::from_secs(5));
        let status = child.try_wait().expect("reaped").expect("exited");
        assert!(!status.success(), "ended by a signal, not by finishing: {status}");
    }

    #[tokio::test]
    async fn echoes_answer_tcp_and_udp_with_their_transform() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = l.local_addr().unwrap();
        let _tcp = echo::tcp(l);
        let mut c = tokio::net::TcpStream::connect(at).await.unwrap();
        c.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");

        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let at = s.local_addr().unwrap();
        let _udp = echo::udp(s, echo::xor(0x5a));
        let c = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        c.send_to(&[0x00, 0x5a], at).await.unwrap();
        let mut buf = [0u8; 8];
        let n = c.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], &[0x5a, 0x00]);
    }

    #[test]
    fn hex_round_trips_and_cuts_where_asked() {
        assert_eq!(hex::encode(&[5, 1, 0xff]), "0501ff");
        assert_eq!(hex::decode("05 01\nff"), vec![5, 1, 0xff]);
        assert_eq!(hex::spaced(&[5, 1, 0xff], usize::MAX), "05 01 ff");
        assert_eq!(hex::spaced(&[5, 1, 0xff], 2), "05 01 … (3 octets)");
    }
}
