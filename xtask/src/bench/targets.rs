//! The far end of every measurement: TCP sink, TCP source, accept-and-close, UDP sink.
//!
//! They run on their own small tokio runtime so the measurement client's scheduling does not
//! starve them (and vice versa); they are the same for direct loopback and for every server.

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::runtime::Runtime;
use tokio::sync::Notify;

/// Size of one read or write in the throughput loops: big enough that syscalls don't dominate.
pub const CHUNK: usize = 256 * 1024;
/// Zeros to send; the content is irrelevant to a relay.
static ZEROS: [u8; CHUNK] = [0; CHUNK];
/// Upper bound on the life of one target connection, so no serving loop outlives a benchmark.
const CONN_LIFETIME: Duration = Duration::from_secs(600);
/// Upper bound on chunks the source writes into one connection (256 TiB: a count bound only).
const SOURCE_MAX_CHUNKS: u64 = 1 << 30;

/// What the targets observed, read by the measurement client.
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes received by the TCP sink, over all connections.
    pub sink_bytes: AtomicU64,
    /// Datagrams received by the UDP sink.
    pub udp_datagrams: AtomicU64,
    /// Signalled on every datagram the UDP sink receives, so the sender can refill its window.
    pub udp_arrived: Notify,
}

/// Where the targets listen, and their counters; cheap to clone into measurement tasks.
#[derive(Debug, Clone)]
pub struct TargetInfo {
    /// Reads and discards everything (upload throughput, idle tunnels).
    pub sink: SocketAddrV4,
    /// Writes zeros as fast as the connection takes them (download throughput).
    pub source: SocketAddrV4,
    /// Accepts, then closes at once (handshakes per second).
    pub accept_close: SocketAddrV4,
    /// Counts the datagrams it receives (UDP packets per second).
    pub udp_sink: SocketAddrV4,
    /// What the targets observed.
    pub counters: Arc<Counters>,
}

/// The running targets. Drop this outside any async context: it owns a runtime.
pub struct Targets {
    /// Keeps the serving tasks alive; dropping it stops them.
    _runtime: Runtime,
    /// Addresses and counters.
    pub info: TargetInfo,
}

impl Targets {
    /// Binds every target on 127.0.0.1 with an ephemeral port and starts serving.
    pub fn start() -> Result<Targets> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bench-target")
            .enable_all()
            .build()
            .context("building the targets' runtime")?;
        let counters = Arc::new(Counters::default());
        let info = runtime.block_on(async {
            let sink = TcpListener::bind("127.0.0.1:0").await?;
            let source = TcpListener::bind("127.0.0.1:0").await?;
            let accept_close = TcpListener::bind("127.0.0.1:0").await?;
            let udp_sink = UdpSocket::bind("127.0.0.1:0").await?;
            let info = TargetInfo {
                sink: v4(&sink)?,
                source: v4(&source)?,
                accept_close: v4(&accept_close)?,
                udp_sink: match udp_sink.local_addr()? {
                    std::net::SocketAddr::V4(a) => a,
                    std::net::SocketAddr::V6(_) => anyhow::bail!("bound 127.0.0.1 but got IPv6"),
                },
                counters: counters.clone(),
            };
            let c = counters.clone();
            tokio::spawn(serve_tcp(sink, move |s| serve_sink(s, c.clone())));
            tokio::spawn(serve_tcp(source, serve_source));
            // Dropping the stream right away is the whole job: accept, then close.
            tokio::spawn(serve_tcp(accept_close, |s| async move { drop(s) }));
            tokio::spawn(serve_udp_sink(udp_sink, counters.clone()));
            anyhow::Ok(info)
        })?;
        Ok(Targets { _runtime: runtime, info })
    }
}

fn v4(listener: &TcpListener) -> Result<SocketAddrV4> {
    match listener.local_addr()? {
        std::net::SocketAddr::V4(a) => Ok(a),
        std::net::SocketAddr::V6(_) => anyhow::bail!("bound 127.0.0.1 but got IPv6"),
    }
}

/// Accepts forever (until the runtime is dropped), handling each connection in its own task
/// bounded by [`CONN_LIFETIME`].
async fn serve_tcp<F, Fut>(listener: TcpListener, handle: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(tokio::time::timeout(CONN_LIFETIME, handle(stream)));
            }
            // Out of descriptors or a connection reset before accept: back off, keep serving.
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

async fn serve_sink(mut stream: TcpStream, counters: Arc<Counters>) {
    // Idle tunnels park here for seconds; allocate the big buffer only once data arrives so
    // thousands of them cost the benchmark process little.
    if stream.readable().await.is_err() {
        return;
    }
    let mut buf = vec![0u8; CHUNK];
    while let Ok(n @ 1..) = stream.read(&mut buf).await {
        counters.sink_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}

async fn serve_source(mut stream: TcpStream) {
    for _ in 0..SOURCE_MAX_CHUNKS {
        // The client closing its end is the normal way this loop ends.
        if stream.write_all(&ZEROS).await.is_err() {
            return;
        }
    }
}

async fn serve_udp_sink(socket: UdpSocket, counters: Arc<Counters>) {
    let mut buf = vec![0u8; 65536];
    loop {
        if socket.recv_from(&mut buf).await.is_ok() {
            counters.udp_datagrams.fetch_add(1, Ordering::Relaxed);
            counters.udp_arrived.notify_one();
        }
    }
}
