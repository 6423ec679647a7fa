//! Loopback targets behind the proxies. They answer every byte XOR [`KEY`], so a proxy that
//! loops data back to the client, or corrupts or truncates it, cannot pass a cell.
//!
//! The TCP and UDP echo share one port number (V2Ray's dokodemo-door and socksref's forwarders
//! then need a single target), and TCP listeners also bind `[::1]` on the same port because a
//! proxy may resolve `localhost` to either address.

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{bail, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// The XOR key every target applies.
pub const KEY: u8 = 0xA5;

/// `data` XOR [`KEY`].
pub fn xor(data: &[u8]) -> Vec<u8> {
    data.iter().map(|b| b ^ KEY).collect()
}

/// The running targets; tasks end when dropped.
pub struct Targets {
    /// TCP and UDP XOR-echo port (127.0.0.1 and, for TCP, ::1).
    pub echo_port: u16,
    /// HTTP XOR-echo port: a POST body comes back XORed (127.0.0.1 and ::1).
    pub http_port: u16,
    /// Reply-after-FIN port: the XOR of everything comes back only after the client's FIN.
    pub after_fin_port: u16,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Targets {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Binds 127.0.0.1:0, then the same port on ::1 (and UDP on 127.0.0.1 when asked); retries a
/// bounded number of times when another process holds the second address.
async fn bind_pair(with_udp: bool) -> Result<(Vec<TcpListener>, Option<UdpSocket>, u16)> {
    for _ in 0..50 {
        let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = v4.local_addr()?.port();
        let Ok(v6) = TcpListener::bind((Ipv6Addr::LOCALHOST, port)).await else { continue };
        let udp = if with_udp {
            match UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).await {
                Ok(u) => Some(u),
                Err(_) => continue,
            }
        } else {
            None
        };
        return Ok((vec![v4, v6], udp, port));
    }
    bail!("could not bind a port on both 127.0.0.1 and ::1")
}

async fn tcp_xor(mut s: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let out = xor(&buf[..n]);
                if s.write_all(&out).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = s.shutdown().await;
}

async fn http_xor(mut s: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    // Headers, then Content-Length bytes of body; bounded by the 64 MiB guard below.
    let (head_end, len) = loop {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
                .unwrap_or(0);
            break (i + 4, len);
        }
        if buf.len() > 64 << 20 {
            return;
        }
    };
    while buf.len() < head_end + len {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = xor(&buf[head_end..head_end + len]);
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    let _ = s.write_all(head.as_bytes()).await;
    let _ = s.write_all(&body).await;
    let _ = s.shutdown().await;
}

/// The half-close target: reads until the client's FIN, and only then sends the XOR of all of
/// it and closes. A proxy that carries the FIN delivers the reply; one that tears the tunnel down
/// on a FIN delivers nothing, every time (no race with an incremental echo).
async fn tcp_xor_after_fin(mut s: TcpStream) {
    let mut all = Vec::new();
    if s.read_to_end(&mut all).await.is_err() {
        return;
    }
    let _ = s.write_all(&xor(&all)).await;
    let _ = s.shutdown().await;
}

fn serve<F, Fut>(l: TcpListener, f: F) -> JoinHandle<()>
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(f(s));
        }
    })
}

impl Targets {
    /// Starts the TCP/UDP XOR echo, the HTTP XOR echo and the reply-after-FIN target.
    pub async fn start() -> Result<Targets> {
        let (echo, udp, echo_port) = bind_pair(true).await?;
        let (http, _, http_port) = bind_pair(false).await?;
        let (after_fin, _, after_fin_port) = bind_pair(false).await?;
        let mut tasks = Vec::new();
        for l in after_fin {
            tasks.push(serve(l, tcp_xor_after_fin));
        }
        for l in echo {
            tasks.push(serve(l, tcp_xor));
        }
        for l in http {
            tasks.push(serve(l, http_xor));
        }
        let udp = udp.expect("bind_pair(true) returns a UDP socket");
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                let _ = udp.send_to(&xor(&buf[..n]), from).await;
            }
        }));
        Ok(Targets { echo_port, http_port, after_fin_port, tasks })
    }
}
