//! A kcptun-style TCP ⇄ kcp tunnel over the reference's kcp transport, for measuring it against
//! kcptun and gost with the same byte source (docs/kcp.md §8):
//!
//! ```text
//! kcptun client LISTEN_TCP KCP_SERVER [QUERY]   # each TCP connection = one stream on one session
//! kcptun server LISTEN_KCP TARGET_TCP [QUERY]   # each stream = one TCP connection to TARGET
//! ```
//!
//! `QUERY` is gost's kcp keys, e.g. `kcp.key=k&kcp.mode=fast&kcp.mtu=1350`.

use std::net::SocketAddr;
use std::sync::Arc;

use socksref::transport::kcp::{self, Config};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, a, b, rest @ ..] = args.as_slice() else {
        return Err("usage: kcptun client|server LISTEN PEER [QUERY]".into());
    };
    let cfg = Config::from_query(rest.first().map(String::as_str).unwrap_or(""))?;
    let a: SocketAddr = a.parse().map_err(|e| format!("{a}: {e}"))?;
    let b: SocketAddr = b.parse().map_err(|e| format!("{b}: {e}"))?;
    match mode.as_str() {
        "client" => {
            let tcp = TcpListener::bind(a).await.map_err(|e| e.to_string())?;
            let dialer = Arc::new(kcp::Dialer::new(b, &cfg));
            loop {
                let (mut c, _) = tcp.accept().await.map_err(|e| e.to_string())?;
                let dialer = dialer.clone();
                tokio::spawn(async move {
                    match dialer.open().await {
                        Ok(mut s) => {
                            let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
                        }
                        Err(e) => eprintln!("kcp open: {e}"),
                    }
                });
            }
        }
        "server" => {
            let ln = kcp::Listener::bind(a, &cfg).await.map_err(|e| e.to_string())?;
            loop {
                let (mut s, _) = ln.accept().await.map_err(|e| e.to_string())?;
                tokio::spawn(async move {
                    match TcpStream::connect(b).await {
                        Ok(mut t) => {
                            let _ = tokio::io::copy_bidirectional(&mut s, &mut t).await;
                        }
                        Err(e) => eprintln!("connect {b}: {e}"),
                    }
                });
            }
        }
        other => Err(format!("unknown mode {other:?} (client, server)")),
    }
}
