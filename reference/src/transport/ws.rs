//! The WebSocket layer of the `ws`, `wss`, `mws` and `mwss` transports (docs/transports.md).
//!
//! The HTTP upgrade is written here rather than left to tungstenite, because gost's peer
//! (gorilla/websocket behind Go's `ServeMux`) has behaviour a peer must match exactly: only the
//! configured path upgrades (anything else is a plain `404`), a request without the upgrade
//! headers gets a `400`, the `Host` header carries the node address *with* its port, and a
//! client must not send a byte before it has read the `101`. tungstenite does the framing.
//!
//! [`WsStream`] turns the message stream into a byte stream: every write is one binary message
//! (as every gost write is), and reads hand out message payloads in order, whatever their type.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Sink, Stream as _};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::WebSocketStream;

/// The largest upgrade request or response head we read. Real ones are a few hundred bytes;
/// the cap keeps a peer that never ends its head from growing our buffer.
const MAX_HEAD: usize = 16 * 1024;

/// Settings of the WebSocket layer, from the URL keys of docs/transports.md.
#[derive(Debug, Clone)]
pub struct WsOptions {
    /// The upgrade path (`path`, default `/ws`).
    pub path: String,
    /// The `Host` header a dialer sends (`host`); `None` means the node address with its port.
    pub host: Option<String>,
    /// Dialer keepalive (`keepalive=true`, interval `ttl`/`keepalive.interval`, default 15 s):
    /// a ping every interval, and the connection is dropped when no pong came for two.
    pub keepalive: Option<Duration>,
    /// tungstenite's read buffer (`readBufferSize`).
    pub read_buffer_size: Option<usize>,
    /// `writeBufferSize`: accepted for gost compatibility; writes here are never held back
    /// (each write is sent as its message at once), so it only bounds nothing.
    pub write_buffer_size: Option<usize>,
}

impl Default for WsOptions {
    fn default() -> Self {
        Self { path: "/ws".into(), host: None, keepalive: None, read_buffer_size: None, write_buffer_size: None }
    }
}

impl WsOptions {
    fn config(&self) -> WebSocketConfig {
        // write_buffer_size 0: each message goes to the socket as soon as it is written, so a
        // SOCKS reply is never held back waiting for more data (and arrives as its own message,
        // which gost's over-reading parser needs, docs/gost.md §8).
        let mut c = WebSocketConfig::default().write_buffer_size(0);
        if let Some(n) = self.read_buffer_size {
            c = c.read_buffer_size(n.max(4096));
        }
        c
    }
}

/// Why an upgrade failed, as an i/o error with a readable message.
fn refused(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Reads an HTTP head (up to and including the blank line) and returns it with any bytes that
/// followed it in the same reads.
async fn read_head<S: AsyncRead + Unpin>(io: &mut S) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(refused(format!("websocket: HTTP head longer than {MAX_HEAD} bytes")));
        }
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "websocket: connection closed during the upgrade",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Whether a comma-separated header value holds `token` (case-insensitive), as gorilla checks
/// `Connection` and `Upgrade`.
fn has_token(value: &[u8], token: &str) -> bool {
    String::from_utf8_lossy(value).split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// An HTTP error response like Go's `http.Error`, then the connection is closed by the caller.
async fn http_error<S: AsyncWrite + Unpin>(io: &mut S, status: &str, body: &str) {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = io.write_all(response.as_bytes()).await;
    let _ = io.flush().await;
    let _ = io.shutdown().await;
}

/// The server side of the upgrade on `io`: only `GET <path>` with the WebSocket headers
/// upgrades; anything else gets gorilla's/Go's HTTP error and an error here (the caller closes).
pub async fn accept<S>(mut io: S, opts: &WsOptions) -> io::Result<WsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (head, early) = read_head(&mut io).await?;
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => {
            http_error(&mut io, "400 Bad Request", "400 Bad Request").await;
            return Err(refused("websocket: malformed HTTP request"));
        }
    }
    let target = req.path.unwrap_or("");
    let path = target.split('?').next().unwrap_or("");
    // Go's ServeMux with one exact pattern: every other path is a 404.
    if path != opts.path {
        http_error(&mut io, "404 Not Found", "404 page not found\n").await;
        return Err(refused(format!("websocket: request for {path:?}, not the upgrade path {:?}", opts.path)));
    }
    let header = |name: &str| req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    let bad = |why: &str| format!("websocket: the client is not using the websocket protocol: {why}");
    let problem = if !header("Connection").is_some_and(|v| has_token(v, "upgrade")) {
        Some(bad("'upgrade' token not found in 'Connection' header"))
    } else if !header("Upgrade").is_some_and(|v| has_token(v, "websocket")) {
        Some(bad("'websocket' token not found in 'Upgrade' header"))
    } else if req.method != Some("GET") {
        Some(bad("request method is not GET"))
    } else if header("Sec-WebSocket-Version") != Some(b"13") {
        Some("websocket: unsupported version: 13 not found in 'Sec-Websocket-Version' header".into())
    } else {
        None
    };
    if let Some(why) = problem {
        let status = if req.method != Some("GET") { "405 Method Not Allowed" } else { "400 Bad Request" };
        http_error(&mut io, status, &format!("{}\n", &why["websocket: ".len()..])).await;
        return Err(refused(why));
    }
    let key = match header("Sec-WebSocket-Key") {
        // base64 of 16 bytes is 24 characters ending in "==".
        Some(k) if k.len() == 24 && k.ends_with(b"==") => k.to_vec(),
        _ => {
            http_error(&mut io, "400 Bad Request", "websocket: not a websocket handshake: 'Sec-WebSocket-Key' header must be Base64 encoded value of 16-byte in length\n").await;
            return Err(refused("websocket: bad Sec-WebSocket-Key"));
        }
    };
    if !early.is_empty() {
        // gorilla refuses a client that did not wait for the 101 (docs/gost.md §7.4); so do we,
        // so that a client that works with us also works with gost.
        return Err(refused("websocket: client sent data before handshake is complete"));
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    io.write_all(response.as_bytes()).await?;
    io.flush().await?;
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(opts.config())).await;
    Ok(WsStream::new(ws, None))
}

/// The client side of the upgrade on `io`: `GET <path>` with `Host: host` (the node address
/// with its port, as gost sends, unless `host` is set), then the `101` and its accept key are
/// checked. Nothing is sent after the request until the response has been read.
pub async fn connect<S>(mut io: S, host: &str, opts: &WsOptions) -> io::Result<WsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
    let host = opts.host.as_deref().unwrap_or(host);
    // Go's request writer: request line, Host, User-Agent, then the headers gorilla sets.
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Go-http-client/1.1\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n\r\n",
        opts.path
    );
    io.write_all(request.as_bytes()).await?;
    io.flush().await?;
    let (head, early) = read_head(&mut io).await?;
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    if !matches!(resp.parse(&head), Ok(httparse::Status::Complete(_))) {
        return Err(refused("websocket: malformed HTTP response to the upgrade"));
    }
    if resp.code != Some(101) {
        return Err(refused(format!(
            "websocket: bad handshake: HTTP {} {} (path {:?})",
            resp.code.unwrap_or(0),
            resp.reason.unwrap_or(""),
            opts.path
        )));
    }
    let header = |name: &str| resp.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    let expected = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    if !header("Upgrade").is_some_and(|v| has_token(v, "websocket"))
        || !header("Connection").is_some_and(|v| has_token(v, "upgrade"))
        || header("Sec-WebSocket-Accept") != Some(expected.as_bytes())
    {
        return Err(refused("websocket: bad handshake: missing upgrade headers or wrong Sec-WebSocket-Accept"));
    }
    let ws = if early.is_empty() {
        WebSocketStream::from_raw_socket(io, Role::Client, Some(opts.config())).await
    } else {
        WebSocketStream::from_partially_read(io, early, Role::Client, Some(opts.config())).await
    };
    Ok(WsStream::new(ws, opts.keepalive))
}

/// Ping state of a dialer with `keepalive=true`.
#[derive(Debug)]
struct Keepalive {
    tick: tokio::time::Interval,
    interval: Duration,
    last_pong: tokio::time::Instant,
}

/// A WebSocket as a byte stream: one binary message per write; reads return message payloads
/// in order (text messages too, as gost's reader ignores the type); a close frame or the end of
/// the connection is EOF. Pings are answered by tungstenite.
#[derive(Debug)]
pub struct WsStream<S> {
    ws: WebSocketStream<S>,
    pending: Bytes,
    keepalive: Option<Keepalive>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    fn new(ws: WebSocketStream<S>, keepalive: Option<Duration>) -> Self {
        let keepalive = keepalive.map(|interval| {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            Keepalive { tick, interval, last_pong: tokio::time::Instant::now() }
        });
        Self { ws, pending: Bytes::new(), keepalive }
    }

    /// Sends a ping when the keepalive interval has passed; fails when the peer has not answered
    /// for two intervals (gost's dialer keepalive, docs/gost.md §7.4).
    fn poll_keepalive(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(k) = &mut self.keepalive else { return Ok(()) };
        while k.tick.poll_tick(cx).is_ready() {
            if k.last_pong.elapsed() > 2 * k.interval {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "websocket: no pong within two keepalive intervals",
                ));
            }
            if let Poll::Ready(Ok(())) = Pin::new(&mut self.ws).poll_ready(cx) {
                Pin::new(&mut self.ws).start_send(Message::Ping(Bytes::new())).map_err(io::Error::other)?;
                let _ = Pin::new(&mut self.ws).poll_flush(cx);
            }
        }
        Ok(())
    }
}

fn ws_error(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    match e {
        tokio_tungstenite::tungstenite::Error::Io(e) => e,
        e => io::Error::new(io::ErrorKind::InvalidData, format!("websocket: {e}")),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.poll_keepalive(cx)?;
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending.split_to(n));
                return Poll::Ready(Ok(()));
            }
            match std::task::ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(b))) => this.pending = b,
                Some(Ok(Message::Text(t))) => this.pending = Bytes::from(t),
                Some(Ok(Message::Pong(_))) => {
                    if let Some(k) = &mut this.keepalive {
                        k.last_pong = tokio::time::Instant::now();
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(ws_error(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        std::task::ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(ws_error)?;
        Pin::new(&mut this.ws).start_send(Message::Binary(Bytes::copy_from_slice(buf))).map_err(ws_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws).poll_flush(cx).map_err(ws_error)
    }

    /// A WebSocket has no half-close: shutting down sends a close frame, after which the peer
    /// (gost) ends the whole connection. What it sent before still arrives in full.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws).poll_close(cx).map_err(ws_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_carry_bytes_both_ways() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let opts = WsOptions::default();
        let (server, client) = tokio::join!(accept(a, &opts), connect(b, "127.0.0.1:1", &opts));
        let (mut server, mut client) = (server.unwrap(), client.unwrap());
        client.write_all(b"hello").await.unwrap();
        client.flush().await.unwrap();
        let mut got = [0u8; 5];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        server.write_all(b"world!").await.unwrap();
        server.flush().await.unwrap();
        let mut got = [0u8; 6];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"world!");
    }

    #[tokio::test]
    async fn wrong_path_gets_404_and_the_client_an_error() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let server_opts = WsOptions::default();
        let client_opts = WsOptions { path: "/other".into(), ..WsOptions::default() };
        let (server, client) = tokio::join!(accept(a, &server_opts), connect(b, "h:1", &client_opts));
        assert!(server.unwrap_err().to_string().contains("not the upgrade path"));
        assert!(client.unwrap_err().to_string().contains("404"));
    }

    #[tokio::test]
    async fn plain_http_gets_400() {
        let (a, mut b) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move { accept(a, &WsOptions::default()).await.map(drop) });
        b.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut resp = String::new();
        b.read_to_string(&mut resp).await.unwrap();
        assert!(resp.starts_with("HTTP/1.1 400 Bad Request"), "{resp}");
        assert!(server.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn garbage_head_is_refused_without_panic() {
        let (a, mut b) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move { accept(a, &WsOptions::default()).await.map(drop) });
        b.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, b'\r', b'\n', b'\r', b'\n']).await.unwrap();
        let mut resp = Vec::new();
        let _ = b.read_to_end(&mut resp).await;
        assert!(resp.starts_with(b"HTTP/1.1 400"), "{:?}", String::from_utf8_lossy(&resp));
        assert!(server.await.unwrap().is_err());
    }
}
