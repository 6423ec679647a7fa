//! A tunnel that is already up keeps working when the process runs out of file descriptors:
//! the splice relay borrows a pipe per chunk and must fall back to copying when none can be
//! made (issue 13, defect 2). Its own test binary, since it lowers the descriptor limit of the
//! whole process.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use socksref::server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Lowers the soft descriptor limit so exhausting it is quick.
fn limit_descriptors(n: u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = n.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

#[tokio::test]
async fn an_established_tunnel_survives_descriptor_exhaustion() {
    limit_descriptors(512);
    let server = start(ServerConfig::default()).await;
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    client.write_all(&[&hex("05 01 00 05 01 00")[..], &v4(target.local_addr().unwrap())].concat()).await.unwrap();
    let (mut far, _) = target.accept().await.unwrap();
    assert_eq!(&read_n(&mut client, 12).await[..4], &hex("05 00 05 00"));

    // Take every descriptor left: no pipe can be created from here on.
    let mut hog = Vec::new();
    let err = loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => hog.push(f),
            Err(e) => break e,
        }
    };
    assert_eq!(err.raw_os_error(), Some(libc::EMFILE), "{err}");
    let fallbacks = socksref::relay::SPLICE_FALLBACKS.load(Ordering::Relaxed);

    // Both directions carry data for the first time now.
    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    far.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    far.write_all(b"pong").await.unwrap();
    assert_eq!(read_n(&mut client, 4).await, b"pong");
    assert_eq!(
        socksref::relay::SPLICE_FALLBACKS.load(Ordering::Relaxed) - fallbacks,
        2,
        "one chunk each way, both copied"
    );
    drop(hog);

    // Half-close still passes through the copy fallback.
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    far.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}
