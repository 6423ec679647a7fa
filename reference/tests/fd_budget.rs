//! Idle tunnels cost two descriptors each in the server: the splice relay borrows pipes from a
//! shared pool per chunk instead of keeping a pipe per direction (issue 13, soak at the
//! descriptor limit), and every pipe is closed again once no tunnel is left. Its own test binary,
//! since it counts the descriptors of the whole process.

mod common;

use common::*;
use socksref::server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Descriptors open in this process now.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

const TUNNELS: usize = 200;

#[tokio::test]
async fn relayed_tunnels_hold_no_pipes_when_idle_and_none_remain_after() {
    let server = start(ServerConfig::default()).await;
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = open_fds();
    let mut tunnels = Vec::new();
    for _ in 0..TUNNELS {
        let mut client = TcpStream::connect(server.addr).await.unwrap();
        client.write_all(&[&hex("05 01 00 05 01 00")[..], &v4(target.local_addr().unwrap())].concat()).await.unwrap();
        let (mut far, _) = target.accept().await.unwrap();
        assert_eq!(&read_n(&mut client, 12).await[..4], &hex("05 00 05 00"));
        // Data both ways: before the pool, each direction now kept a pipe of its own.
        client.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        far.read_exact(&mut b).await.unwrap();
        far.write_all(b"pong").await.unwrap();
        assert_eq!(read_n(&mut client, 4).await, b"pong");
        tunnels.push((client, far));
    }
    // Per tunnel in this process: the client and the far end (ours), the server's two sockets.
    // Pipes: at most the pool's idle reserve (64 pipes, two descriptors each), not four per tunnel.
    let held = open_fds() - base;
    assert!(held <= 4 * TUNNELS + 2 * 64 + 8, "{held} descriptors for {TUNNELS} idle tunnels");
    drop(tunnels);
    // The server notices the closes asynchronously: wait for the count, bounded.
    let mut now = open_fds();
    for _ in 0..200 {
        if now <= base {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        now = open_fds();
    }
    assert!(now <= base, "{} descriptors left over after every tunnel closed", now - base);
}
