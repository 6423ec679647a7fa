//! The preflight: one short conversation with a server before the catalogue runs, so that a
//! server that is not there, wants a password, or refuses the one given gets one clear error
//! instead of a page of failures under every schedule.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::scenario::template::hex_spaced;
use crate::scenario::Method;

/// How long the preflight waits for each answer.
pub const PREFLIGHT_DEADLINE: Duration = Duration::from_secs(5);

/// Why the catalogue cannot run against a server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PreflightError {
    /// No TCP listener at the address.
    #[error("nothing listens on {addr}: {why}")]
    NothingListens {
        /// The address tried.
        addr: SocketAddr,
        /// The connect error.
        why: String,
    },
    /// The server selected USERNAME/PASSWORD but no credentials were given.
    #[error("the server at {addr} wants a username and password (it selected method 02): pass --user and --pass")]
    PasswordWanted {
        /// The server.
        addr: SocketAddr,
    },
    /// RFC 1929 refused the credentials.
    #[error("the server at {addr} refused the username/password: wrong password (RFC 1929 status {status:02x})")]
    WrongPassword {
        /// The server.
        addr: SocketAddr,
        /// The status octet.
        status: u8,
    },
    /// The server accepted none of the offered methods.
    #[error("the server at {addr} accepts none of the methods offered ({offered}): it answered 05 FF")]
    NoAcceptableMethod {
        /// The server.
        addr: SocketAddr,
        /// What was offered.
        offered: String,
    },
    /// The answer was not SOCKS5.
    #[error("the server at {addr} does not speak SOCKS5 here: to the greeting [{sent}] it answered [{got}]")]
    NotSocks5 {
        /// The server.
        addr: SocketAddr,
        /// The greeting.
        sent: String,
        /// What came back (or `nothing` and how the connection ended).
        got: String,
    },
}

/// What the preflight learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preflight {
    /// How the server authenticates, as it showed.
    pub method: Method,
    /// A note for the user (credentials given but not asked for), if any.
    pub note: Option<String>,
}

/// Connects to `addr` and, for SOCKS5, runs the greeting (and RFC 1929 when `creds` are given).
pub async fn run(addr: SocketAddr, socks5: bool, creds: Option<(&[u8], &[u8])>) -> Result<Preflight, PreflightError> {
    run_via(addr, &socksref::transport::Dialer::default(), socks5, creds).await
}

/// [`run`] through a transport (tls, ws, …): the TCP connect, then the transport's handshake,
/// then the same greeting inside it. A failed transport handshake counts as nothing listening
/// there, with the reason (a wrong path, a TLS error).
pub async fn run_via(
    addr: SocketAddr,
    transport: &socksref::transport::Dialer,
    socks5: bool,
    creds: Option<(&[u8], &[u8])>,
) -> Result<Preflight, PreflightError> {
    let connect = async {
        // kcp dials its own UDP session.
        if let Some(s) = transport.open_own(&addr.into()).await {
            return s;
        }
        let tcp = TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        transport.establish(socksref::tls::Stream::Tcp(tcp), &addr.into()).await
    };
    let mut s = tokio::time::timeout(PREFLIGHT_DEADLINE, connect)
        .await
        .map_err(|_| PreflightError::NothingListens { addr, why: "connect timed out".into() })?
        .map_err(|e| PreflightError::NothingListens { addr, why: e.to_string() })?;
    if !socks5 {
        return Ok(Preflight { method: Method::Noauth, note: None });
    }
    // Both methods are offered either way, so a server that wants a password says so (02)
    // rather than refusing outright (FF).
    let greeting: &[u8] = &[5, 2, 0, 2];
    let offered = "00 NO AUTH, 02 USERNAME/PASSWORD";
    let not5 = |got: String| PreflightError::NotSocks5 { addr, sent: hex_spaced(greeting, 8), got };
    let _ = s.write_all(greeting).await;
    let reply = read_exact(&mut s, 2).await.map_err(not5)?;
    match (reply[0], reply[1]) {
        (5, 0) => Ok(Preflight {
            method: Method::Noauth,
            note: creds.map(|_| {
                "the server selected NO AUTH although credentials were given: checking it as an open server".into()
            }),
        }),
        (5, 2) => {
            let Some((user, pass)) = creds else {
                return Err(PreflightError::PasswordWanted { addr });
            };
            let mut msg = vec![1, user.len() as u8];
            msg.extend_from_slice(user);
            msg.push(pass.len() as u8);
            msg.extend_from_slice(pass);
            let _ = s.write_all(&msg).await;
            let status = read_exact(&mut s, 2).await.map_err(|got| PreflightError::NotSocks5 {
                addr,
                sent: "01 ULEN UNAME PLEN PASSWD".into(),
                got,
            })?;
            if status[1] != 0 {
                return Err(PreflightError::WrongPassword { addr, status: status[1] });
            }
            Ok(Preflight { method: Method::Userpass, note: None })
        }
        (5, 0xff) => Err(PreflightError::NoAcceptableMethod { addr, offered: offered.into() }),
        _ => Err(not5(hex_spaced(&reply, 8))),
    }
}

async fn read_exact<S: tokio::io::AsyncRead + Unpin>(s: &mut S, n: usize) -> Result<Vec<u8>, String> {
    let mut buf = Vec::with_capacity(n);
    let until = tokio::time::Instant::now() + PREFLIGHT_DEADLINE;
    while buf.len() < n {
        let mut tmp = [0u8; 64];
        match tokio::time::timeout_at(until, s.read(&mut tmp)).await {
            Err(_) => return Err(format!("{} then nothing for {PREFLIGHT_DEADLINE:?}", shown(&buf))),
            Ok(Ok(0)) => return Err(format!("{} then a close", shown(&buf))),
            Ok(Err(e)) => return Err(format!("{} then {e}", shown(&buf))),
            Ok(Ok(k)) => buf.extend_from_slice(&tmp[..k]),
        }
    }
    Ok(buf)
}

fn shown(b: &[u8]) -> String {
    if b.is_empty() {
        "nothing".into()
    } else {
        hex_spaced(b, 16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socksref::server::{serve, Credential, ServerConfig};
    use tokio::net::TcpListener;

    async fn server(users: Vec<Credential>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        tokio::spawn(serve(l, ServerConfig { users, ..Default::default() }, std::future::pending()));
        a
    }

    #[tokio::test]
    async fn each_setup_problem_gets_its_own_error() {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        assert!(matches!(run(closed, true, None).await, Err(PreflightError::NothingListens { .. })));
        let alice = vec![Credential { user: b"alice".to_vec(), pass: b"s3cret".to_vec() }];
        let auth = server(alice).await;
        assert_eq!(run(auth, true, None).await, Err(PreflightError::PasswordWanted { addr: auth }));
        assert!(matches!(
            run(auth, true, Some((b"alice", b"nope"))).await,
            Err(PreflightError::WrongPassword { status, .. }) if status != 0
        ));
        assert_eq!(run(auth, true, Some((b"alice", b"s3cret"))).await.unwrap().method, Method::Userpass);
        let open = server(Vec::new()).await;
        let p = run(open, true, Some((b"alice", b"s3cret"))).await.unwrap();
        assert_eq!(p.method, Method::Noauth);
        assert!(p.note.is_some(), "credentials that were not asked for are mentioned");
    }
}
