//! The client side of the handshake as a state machine.
//!
//! The machine never pipelines: credentials go out only after the server selected 02 (C-08) and
//! the request only after authentication, so it is safe against servers that over-read (gost,
//! docs/gost.md §8). All lengths are validated in [`ClientHandshake::new`], before a single
//! byte is produced (C-01, C-02, V-28).

use std::net::IpAddr;

use super::auth::{UserPassReply, UserPassRequest};
use super::codec::DecodeError;
use super::enums::{Command, Method, Reply, Socks4Command, Socks4Reply};
use super::v4::{Socks4ReplyMsg, Socks4Request};
use super::v5::{Greeting, MethodSelection, ReplyMsg, Request};
use super::{Address, Host, ProtoError, Version};

/// What to ask the proxy for.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientRequest {
    /// Protocol to speak.
    pub version: Version,
    /// CONNECT, BIND or UDP ASSOCIATE (SOCKS4 has only the first two).
    pub command: Command,
    /// DST.ADDR/DST.PORT.
    pub target: Address,
    /// RFC 1929 credentials for SOCKS5; for SOCKS4 the user part is the USERID.
    pub credentials: Option<(Vec<u8>, Vec<u8>)>,
    /// Extra methods to offer after 00/02, in order (gost's TLS methods).
    pub extra_methods: Vec<Method>,
}

impl std::fmt::Debug for ClientRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRequest")
            .field("version", &self.version)
            .field("command", &self.command)
            .field("target", &self.target)
            .field("credentials", &self.credentials.as_ref().map(|(u, _)| u.escape_ascii().to_string()))
            .finish()
    }
}

/// Why the proxy did not grant the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// A message could not be built or a reply could not be parsed.
    #[error("protocol error: {0}")]
    Proto(#[from] ProtoError),
    /// The server accepts none of the offered methods (`05 FF`).
    #[error("proxy accepts none of the offered authentication methods")]
    NoAcceptableMethod,
    /// The server selected a method that was not offered.
    #[error("proxy selected method {0}, which was not offered")]
    UnexpectedMethod(Method),
    /// RFC 1929 authentication failed.
    #[error("proxy rejected the credentials (status 0x{0:02x})")]
    AuthFailed(u8),
    /// A SOCKS5 reply with REP≠00.
    #[error("proxy refused the request: {0}")]
    Rejected(Reply),
    /// A SOCKS4 reply other than 5A.
    #[error("proxy refused the request: {0}")]
    Rejected4(Socks4Reply),
    /// SOCKS4 needs an IPv4 destination resolved by the caller (C-09).
    #[error("SOCKS4 needs an IPv4 destination; resolve locally or use socks4a")]
    NeedsIpv4,
    /// The command does not exist in the chosen protocol.
    #[error("{0} is not available in {1}")]
    UnsupportedCommand(Command, Version),
}

/// Progress reported to the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// The server selected an extension method: the driver must set it up (e.g. start TLS),
    /// then call [`ClientHandshake::method_ready`].
    MethodSelected(Method),
    /// The request was granted; BND as the server reported it. BIND yields this twice: the
    /// listening address, then the peer that connected.
    Granted(Address),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Selection,
    AwaitingMethod(Method),
    AuthReply,
    Reply { remaining: u8 },
    Done,
}

/// The client's handshake state machine.
#[derive(Debug)]
pub struct ClientHandshake {
    req: ClientRequest,
    state: State,
    transmit: Vec<u8>,
    event: Option<ClientEvent>,
}

impl ClientHandshake {
    /// Validates `req` and queues the first message.
    pub fn new(req: ClientRequest) -> Result<Self, ClientError> {
        let replies = if req.command == Command::BIND { 2 } else { 1 };
        let mut transmit = Vec::new();
        let state = match req.version {
            Version::V5 => {
                // Fail before sending anything if any later message could not be encoded.
                Request { command: req.command, reserved: 0, address: req.target.clone() }.encode(&mut Vec::new())?;
                if let Some((u, p)) = &req.credentials {
                    UserPassRequest { user: u.clone(), pass: p.clone() }.encode(&mut Vec::new())?;
                }
                let mut methods = vec![Method::NO_AUTH];
                if req.credentials.is_some() {
                    methods.push(Method::USER_PASS);
                }
                for m in &req.extra_methods {
                    if !methods.contains(m) {
                        methods.push(*m);
                    }
                }
                Greeting { methods }.encode(&mut transmit)?;
                State::Selection
            }
            Version::V4 | Version::V4a => {
                Self::socks4_request(&req)?.encode(&mut transmit)?;
                State::Reply { remaining: replies }
            }
        };
        Ok(Self { req, state, transmit, event: None })
    }

    fn socks4_request(req: &ClientRequest) -> Result<Socks4Request, ClientError> {
        let command = match req.command {
            Command::CONNECT => Socks4Command::CONNECT,
            Command::BIND => Socks4Command::BIND,
            other => return Err(ClientError::UnsupportedCommand(other, req.version)),
        };
        let user_id = req.credentials.as_ref().map(|(u, _)| u.clone()).unwrap_or_default();
        let (ip, hostname) = match (&req.target.host, req.version) {
            (Host::Ip(IpAddr::V4(ip)), _) => (*ip, None),
            (Host::Domain(d), Version::V4a) => (std::net::Ipv4Addr::new(0, 0, 0, 1), Some(d.clone())),
            _ => return Err(ClientError::NeedsIpv4),
        };
        Ok(Socks4Request { command, port: req.target.port, ip, user_id, hostname })
    }

    /// Bytes to write to the server, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.transmit.is_empty()).then(|| std::mem::take(&mut self.transmit))
    }

    /// The next progress event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.event.take()
    }

    /// Whether the final reply has been received.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The driver has set up the extension method announced by [`ClientEvent::MethodSelected`].
    pub fn method_ready(&mut self) -> Result<(), ClientError> {
        if let State::AwaitingMethod(m) = self.state {
            if m == Method::TLS_AUTH {
                self.send_credentials()?;
            } else {
                self.send_request()?;
            }
        }
        Ok(())
    }

    /// Consumes at most one message from `input` and returns how many bytes it used; 0 means
    /// more input is needed (or an event is waiting to be polled). Bytes after the final reply
    /// (e.g. a banner from the target) are never consumed.
    pub fn handle_input(&mut self, input: &[u8]) -> Result<usize, ClientError> {
        if self.event.is_some() || input.is_empty() {
            return Ok(0);
        }
        match self.state {
            State::Selection => {
                let Some((sel, n)) = done(MethodSelection::decode(input))? else { return Ok(0) };
                self.on_selection(sel.method)?;
                Ok(n)
            }
            State::AuthReply => {
                let Some((r, n)) = done(UserPassReply::decode(input))? else { return Ok(0) };
                if r.status != 0 {
                    self.state = State::Done;
                    return Err(ClientError::AuthFailed(r.status));
                }
                self.send_request()?;
                Ok(n)
            }
            State::Reply { remaining } => {
                let (addr, n) = match self.req.version {
                    Version::V5 => {
                        let Some((r, n)) = done(ReplyMsg::decode(input))? else { return Ok(0) };
                        if r.reply != Reply::SUCCEEDED {
                            self.state = State::Done;
                            return Err(ClientError::Rejected(r.reply));
                        }
                        (r.address, n)
                    }
                    Version::V4 | Version::V4a => {
                        let Some((r, n)) = done(Socks4ReplyMsg::decode(input))? else { return Ok(0) };
                        if r.code != Socks4Reply::GRANTED {
                            self.state = State::Done;
                            return Err(ClientError::Rejected4(r.code));
                        }
                        (Address { host: Host::Ip(r.ip.into()), port: r.port }, n)
                    }
                };
                self.state = if remaining > 1 { State::Reply { remaining: remaining - 1 } } else { State::Done };
                self.event = Some(ClientEvent::Granted(addr));
                Ok(n)
            }
            State::AwaitingMethod(_) | State::Done => Ok(0),
        }
    }

    fn on_selection(&mut self, method: Method) -> Result<(), ClientError> {
        let offered_auth = self.req.credentials.is_some();
        match method {
            Method::NO_AUTH => self.send_request(),
            Method::USER_PASS if offered_auth => self.send_credentials(),
            Method::NO_ACCEPTABLE => {
                self.state = State::Done;
                Err(ClientError::NoAcceptableMethod)
            }
            m if self.req.extra_methods.contains(&m) => {
                self.state = State::AwaitingMethod(m);
                self.event = Some(ClientEvent::MethodSelected(m));
                Ok(())
            }
            m => {
                self.state = State::Done;
                Err(ClientError::UnexpectedMethod(m))
            }
        }
    }

    fn send_credentials(&mut self) -> Result<(), ClientError> {
        let (user, pass) = self.req.credentials.clone().unwrap_or_default();
        UserPassRequest { user, pass }.encode(&mut self.transmit)?;
        self.state = State::AuthReply;
        Ok(())
    }

    fn send_request(&mut self) -> Result<(), ClientError> {
        Request { command: self.req.command, reserved: 0, address: self.req.target.clone() }
            .encode(&mut self.transmit)?;
        let remaining = if self.req.command == Command::BIND { 2 } else { 1 };
        self.state = State::Reply { remaining };
        Ok(())
    }
}

/// Maps a decode result to "message", "need more" or a client error.
fn done<T>(r: Result<(T, usize), DecodeError>) -> Result<Option<(T, usize)>, ClientError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(DecodeError::Incomplete) => Ok(None),
        Err(DecodeError::Invalid(e)) => Err(ClientError::Proto(e)),
    }
}
