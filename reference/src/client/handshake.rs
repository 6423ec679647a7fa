//! The async driver over the sans-IO [`ClientHandshake`], generic over the byte stream.
//!
//! Reads are sized exactly: the driver asks for no more bytes than the message it is waiting for
//! can contain, so nothing after the final reply (a server banner, the first bytes of a BIND peer)
//! is ever read into a private buffer and lost. The stream handed back to the caller therefore
//! needs no "leftover" wrapper: it is positioned exactly after the reply.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Error;
use crate::proto::client::{ClientEvent, ClientHandshake, ClientRequest};
use crate::proto::{Address, Method, Version};

/// Upper bound on the bytes a proxy may send during one handshake: method selection (2), RFC 1929
/// status (2) and two replies of at most 262 bytes each (BIND) is 528. A valid exchange never
/// comes close; the cap is a second line of defence should a decoder ever stop bounding itself
/// (C-05).
pub const MAX_HANDSHAKE_BYTES: usize = 1024;

/// Which message the driver waits for. The sans-IO machine keeps its state private, so the driver
/// mirrors just enough of it, from what the machine asks to transmit, to size its reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// `VER METHOD`.
    Selection,
    /// `VER STATUS` of RFC 1929.
    Auth,
    /// A SOCKS5 reply, 7 to 262 bytes depending on its own ATYP.
    Reply5,
    /// An 8-byte SOCKS4 reply.
    Reply4,
}

/// Where [`Handshake::drive`] stopped.
#[derive(Debug)]
enum Progress {
    /// Nothing more to do for the caller's goal (request written, or every reply received).
    Idle,
    /// A reply granted the request; its BND.
    Reply(Address),
    /// The proxy selected an extension method the caller must set up.
    Method(Method),
}

/// One client handshake in progress on some stream.
///
/// [`handshake`] covers the common single-reply case. BIND needs this type directly, because its
/// second reply arrives much later on the same stream:
///
/// ```no_run
/// # async fn f(mut s: tokio::net::TcpStream, req: socksref::proto::client::ClientRequest) -> Result<(), socksref::client::Error> {
/// let mut hs = socksref::client::Handshake::new(req)?;
/// let bound = hs.next_reply(&mut s).await?; // tell the peer where to connect
/// let peer = hs.next_reply(&mut s).await?;  // the peer connected; `s` now carries its bytes
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Handshake {
    machine: ClientHandshake,
    version: Version,
    expect: Expect,
    /// Bytes of the message being assembled; never more than that message's length.
    buf: Vec<u8>,
    /// Bytes read from the proxy so far, for [`MAX_HANDSHAKE_BYTES`].
    received: usize,
    /// Whether the first transmission (the greeting or the SOCKS4 request) went out.
    started: bool,
}

impl Handshake {
    /// Validates `req` (every length ≤ 255, SOCKS4 needs IPv4, …) before anything is sent: an
    /// over-long name is an error here, never a silent switch to local DNS (C-01, C-02, V-28).
    pub fn new(req: ClientRequest) -> Result<Self, Error> {
        let version = req.version;
        let machine = ClientHandshake::new(req)?;
        let expect = if version == Version::V5 { Expect::Selection } else { Expect::Reply4 };
        Ok(Self { machine, version, expect, buf: Vec::new(), received: 0, started: false })
    }

    /// Whether the request itself has been written, i.e. the greeting and any authentication are
    /// over and only replies remain. The chain uses this to switch from the handshake deadline to
    /// the (longer) connect deadline, since the proxy answers a CONNECT only once it has connected.
    pub fn request_sent(&self) -> bool {
        matches!(self.expect, Expect::Reply4 | Expect::Reply5) && self.started
    }

    /// Writes the greeting and runs authentication until the request has been written.
    pub async fn send_request<S>(&mut self, stream: &mut S) -> Result<(), Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + ?Sized,
    {
        match self.drive(stream, true).await? {
            Progress::Method(m) => Err(Error::UnsupportedMethod(m)),
            _ => Ok(()),
        }
    }

    /// Like [`Handshake::send_request`], but stops when the proxy selects an extension method
    /// the request offered (gost's TLS methods `80`/`82`) and returns it: the caller sets the
    /// method up (e.g. wraps the stream in TLS), calls [`Handshake::method_ready`], and calls
    /// this again on the new stream. `None` means the request has been written.
    pub async fn send_request_or_method<S>(&mut self, stream: &mut S) -> Result<Option<Method>, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + ?Sized,
    {
        match self.drive(stream, true).await? {
            Progress::Method(m) => Ok(Some(m)),
            _ => Ok(None),
        }
    }

    /// The extension method returned by [`Handshake::send_request_or_method`] is set up: queue
    /// the next message (RFC 1929 for `82`, the request for `80`), to be sent on the new stream.
    pub fn method_ready(&mut self) -> Result<(), Error> {
        // The selection message has been consumed; from here on the replies are read afresh.
        self.buf.clear();
        self.machine.method_ready().map_err(Error::from)
    }

    /// Drives the exchange until the next successful reply and returns its BND. A refusal, a
    /// malformed reply or an EOF is an error (C-06); calling it after the final reply is an error.
    pub async fn next_reply<S>(&mut self, stream: &mut S) -> Result<Address, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + ?Sized,
    {
        match self.drive(stream, false).await? {
            Progress::Reply(addr) => Ok(addr),
            Progress::Method(m) => Err(Error::UnsupportedMethod(m)),
            Progress::Idle => Err(Error::Unsupported("no further reply expected on this handshake")),
        }
    }

    /// Whether every reply has been received.
    pub fn is_done(&self) -> bool {
        self.machine.is_done()
    }

    async fn drive<S>(&mut self, stream: &mut S, until_request: bool) -> Result<Progress, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + ?Sized,
    {
        loop {
            if let Some(bytes) = self.machine.poll_transmit() {
                self.note_transmit(&bytes);
                // `write_all` resumes short writes at the right offset (C-12).
                stream.write_all(&bytes).await?;
                stream.flush().await?;
            }
            if until_request && self.request_sent() {
                return Ok(Progress::Idle);
            }
            if self.machine.is_done() && self.buf.is_empty() {
                return Ok(Progress::Idle);
            }
            let used = self.machine.handle_input(&self.buf)?;
            self.buf.drain(..used);
            match self.machine.poll_event() {
                Some(ClientEvent::Granted(addr)) => return Ok(Progress::Reply(addr)),
                Some(ClientEvent::MethodSelected(m)) => return Ok(Progress::Method(m)),
                None => {}
            }
            if used > 0 {
                // The machine moved on and may have queued the next message (credentials or
                // request): transmit it before reading anything (never pipeline, C-08).
                continue;
            }
            let want = self.needed().saturating_sub(self.buf.len()).max(1);
            if self.received + want > MAX_HANDSHAKE_BYTES {
                return Err(Error::TooLong(MAX_HANDSHAKE_BYTES));
            }
            let start = self.buf.len();
            self.buf.resize(start + want, 0);
            let mut got = 0;
            while got < want {
                match stream.read(&mut self.buf[start + got..]).await {
                    Ok(0) => {
                        // C-06: a reply cut short is a failure, whatever REP said so far.
                        self.buf.truncate(start + got);
                        return Err(Error::Closed { received: self.buf.len() });
                    }
                    Ok(n) => got += n,
                    Err(e) => return Err(e.into()),
                }
            }
            self.received += want;
        }
    }

    /// Updates [`Expect`] from the message the machine is about to send.
    fn note_transmit(&mut self, bytes: &[u8]) {
        if !self.started {
            self.started = true;
            return;
        }
        // After the greeting, a SOCKS5 client sends either RFC 1929 credentials (VER 01) or the
        // request (VER 05).
        if self.version == Version::V5 {
            self.expect =
                if bytes.first() == Some(&crate::proto::auth::VERSION) { Expect::Auth } else { Expect::Reply5 };
        }
    }

    /// A lower bound on the length of the message being waited for, given the bytes already
    /// here. It must never exceed the real length, or the driver would read past the message.
    fn needed(&self) -> usize {
        match self.expect {
            Expect::Selection | Expect::Auth => 2,
            Expect::Reply4 => 8,
            // VER REP RSV ATYP, then the first address byte, which for a DOMAINNAME is its length.
            Expect::Reply5 if self.buf.len() < 5 => 5,
            Expect::Reply5 => match Address::wire_len(&self.buf[3..]) {
                Ok(Some(len)) => 3 + len,
                // Unknown ATYP: the decoder rejects it as soon as it sees it; one more byte is
                // always safe.
                Ok(None) | Err(_) => self.buf.len() + 1,
            },
        }
    }
}

/// Runs a whole single-reply handshake (CONNECT, UDP ASSOCIATE) on `stream` and returns BND.
///
/// Nothing is read past the reply, so `stream` continues exactly where the proxy's reply ended.
/// There is no deadline here: the caller wraps the call in `tokio::time::timeout` (C-05), as
/// [`Chain`](super::Chain) does. For BIND this returns the first reply; use [`Handshake`] to read
/// the second.
pub async fn handshake<S>(stream: &mut S, req: ClientRequest) -> Result<Address, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    Handshake::new(req)?.next_reply(stream).await
}
