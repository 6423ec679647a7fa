//! Loopback fixtures shared by the integration tests: an in-process server and small targets.
#![allow(dead_code)] // each test file uses a different subset

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socksref::server::{serve, ServerConfig, Stats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;

/// A server on 127.0.0.1:0 that stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

pub async fn start(config: ServerConfig) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, config, async move {
        let _ = rx.await;
    }));
    TestServer { addr, _stop: tx }
}

/// [`start`], keeping the server's counters: the events a test waits for and asserts on.
pub async fn start_counted(config: ServerConfig) -> (TestServer, Arc<Stats>) {
    let stats = config.wiring.stats.clone();
    (start(config).await, stats)
}

/// A TCP echo target that XORs every byte with 0x5a, so a relay that loops data back or
/// corrupts it cannot pass as working.
pub async fn xor_echo() -> SocketAddr {
    target(|mut s| async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf[..n].iter_mut().for_each(|b| *b ^= 0x5a);
            if s.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = s.shutdown().await;
    })
    .await
}

/// A loopback TCP target that runs `serve` on every connection it accepts, each in a task of its
/// own, until the runtime ends.
async fn target<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve(s));
        }
    });
    addr
}

/// A target that reads until the client half-closes, then answers with the byte count and the
/// given banner, then closes: the shape of an HTTP/1.0 exchange.
pub async fn read_all_then_answer() -> SocketAddr {
    target(|mut s| async move {
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all).await;
        let _ = s.write_all(format!("got {} bytes", all.len()).as_bytes()).await;
    })
    .await
}

/// A target that speaks first.
pub async fn banner(text: &'static [u8]) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.write_all(text).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    addr
}

/// A port with nothing listening (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// A loopback address whose SYNs go unanswered: a listener with a full accept queue that never
/// accepts (Linux drops SYNs while the queue is full). The sockets are kept alive by the task.
pub async fn blackhole() -> SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let l = socket.listen(1).unwrap();
    let addr = l.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            fillers.push(s);
        }
    }
    tokio::spawn(async move {
        let _keep = (l, fillers);
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    addr
}

/// A UDP echo target that XORs payloads with 0x5a.
pub async fn udp_xor_echo() -> SocketAddr {
    udp_xor_echo_on("127.0.0.1:0").await
}

/// [`udp_xor_echo`] bound to `bind` (an IPv6 target, say).
pub async fn udp_xor_echo_on(bind: &str) -> SocketAddr {
    let s = UdpSocket::bind(bind).await.unwrap();
    let addr = s.local_addr().unwrap();
    testkit::echo::udp(s, testkit::echo::xor(0x5a));
    addr
}

/// A minimal HTTP/1.x server answering every request with `body`.
pub async fn http(body: &'static str) -> SocketAddr {
    target(move |mut s| async move {
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}", body.len(), body);
        let _ = s.write_all(resp.as_bytes()).await;
        let _ = s.shutdown().await;
    })
    .await
}

/// Decodes spaced hex.
#[allow(unused_imports)] // each test file uses a different subset
pub use testkit::hex::decode as hex;

/// `ATYP 01 addr port` bytes for a v4 socket address.
pub fn v4(addr: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(a) = addr else { panic!("v4 only") };
    let mut v = vec![0x01];
    v.extend_from_slice(&a.ip().octets());
    v.extend_from_slice(&a.port().to_be_bytes());
    v
}

/// Reads exactly `n` bytes within 5 s.
pub async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await.expect("timed out").expect("read");
    buf
}

/// Waits until `done()` holds: an event the server reports (a gauge in its stats), not a guess
/// at how long it takes. The 5 s bound only turns a hang into a failure naming `what`.
pub async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: still not the case after 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Connects to a SOCKS5 server and completes the no-auth greeting (`05 01 00` → `05 00`).
pub async fn greeted(server: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(server).await.unwrap();
    s.write_all(&hex("05 01 00")).await.unwrap();
    assert_eq!(read_n(&mut s, 2).await, hex("05 00"));
    s
}

/// Connects to `server`, sends `bytes` and returns everything it answers until it closes (5 s
/// bound): for requests the server must refuse and hang up on.
pub async fn answer_to(server: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(server).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_to_eof(&mut s).await
}

/// Reads until EOF (bounded by 5 s) and returns what came before it.
pub async fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.expect("no EOF").ok();
    out
}

/// A peer process a test started, killed through its own handle when the test ends.
pub struct Peer(pub std::process::Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bin` with `args`, its output discarded.
pub fn spawn(bin: &std::path::Path, args: &[String]) -> Peer {
    let child = std::process::Command::new(bin)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    Peer(child)
}

/// The `socksref` binary of this build, started with `args` (warnings and errors only on
/// stderr, which the test inherits so a failure shows them), killed when the [`Peer`] drops.
pub fn socksref(args: &[&str]) -> Peer {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_socksref"))
        .args(args)
        .args(["--log-level", "warn"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("spawn socksref");
    Peer(child)
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    testkit::free_port().expect("a free loopback port")
}

/// Blocks until something accepts on `127.0.0.1:port`; fails the test naming the port after
/// 10 s (a bound that only turns a hang into a failure).
pub fn wait_ready(port: u16) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    if let Err(e) = testkit::wait_accepting(&mut testkit::NoProcess, &[addr], Duration::from_secs(10)) {
        panic!("port {port} never opened: {e}");
    }
}

/// Runs Debian's curl quietly with a 10 s limit: whether it succeeded, and what it printed.
pub fn curl(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-m", "10"])
        .args(args)
        .output()
        .expect("curl is required for these tests: apt-get install curl (bash .ci/run installs it)");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Connects to a TCP port that a just-started peer will open (5 s at most).
pub async fn connect_retry(addr: SocketAddr) -> TcpStream {
    for _ in 0..200 {
        if let Ok(s) = TcpStream::connect(addr).await {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nothing listens on {addr}");
}

/// The lab's gost peer binary: `SOCKSLAB_GOST`, else the newest `gost-*` the lab built into
/// this target directory's `interop/bin`. `None` after printing the SKIP line the test then
/// stands for (`.ci/run` builds gost before the tests, so CI always has it).
pub fn gost_bin() -> Option<std::path::PathBuf> {
    let found = find_gost();
    if found.is_none() {
        println!("SKIP: no gost peer binary (run `cargo xtask interop` once, or set SOCKSLAB_GOST)");
    }
    found
}

fn find_gost() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("SOCKSLAB_GOST") {
        return Some(p.into());
    }
    // The test binary is target/<profile>/deps/<name>-…; the lab builds into target/interop/bin.
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?.parent()?.join("interop/bin");
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("gost-"))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}
