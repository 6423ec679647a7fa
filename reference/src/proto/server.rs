//! The server side of the handshake as a state machine.
//!
//! Feed received bytes with [`ServerHandshake::handle_input`]; it consumes whole messages only
//! and leaves anything after the request (optimistic data, D-15) with the caller. Bytes to send
//! come out of [`ServerHandshake::poll_transmit`], decisions the machine cannot make alone (is
//! this password right? what to do with the request?) come out of
//! [`ServerHandshake::poll_event`].

use std::collections::VecDeque;

use super::auth::{UserPassReply, UserPassRequest, STATUS_FAILURE, STATUS_SUCCESS};
use super::codec::DecodeError;
use super::enums::{Command, Method, Reply, Socks4Command, Socks4Reply};
use super::v4::{Socks4ReplyMsg, Socks4Request};
use super::v5::{Greeting, MethodSelection, ReplyMsg, Request};
use super::{Address, Host, ProtoError, Version};

/// What the handshake may accept.
#[derive(Debug, Clone)]
pub struct HandshakeConfig {
    /// Serve SOCKS4 and SOCKS4a requests.
    pub socks4: bool,
    /// Serve SOCKS5 requests.
    pub socks5: bool,
    /// Methods in the server's order of preference (D-17); the first one the client offered is
    /// selected. A server that requires authentication lists only methods that authenticate.
    pub methods: Vec<Method>,
    /// Cap on SOCKS4 USERID and HOSTNAME.
    pub max_field: usize,
    /// Ask the driver about every SOCKS4 USERID ([`ServerEvent::CheckUserid`]) before the
    /// request is carried out: gost's `socks4://user@…` access filter (docs/gost-peer.md §1).
    pub socks4_userid_check: bool,
}

impl HandshakeConfig {
    /// Whether the configured methods demand credentials, in which case SOCKS4 (which has none)
    /// must be refused (R-66, V-02b).
    pub fn auth_required(&self) -> bool {
        !self.methods.is_empty() && self.methods.iter().all(|m| *m == Method::USER_PASS || *m == Method::TLS_AUTH)
    }
}

impl Default for HandshakeConfig {
    fn default() -> Self {
        Self {
            socks4: true,
            socks5: true,
            methods: vec![Method::NO_AUTH],
            max_field: super::v4::DEFAULT_MAX_FIELD,
            socks4_userid_check: false,
        }
    }
}

/// A complete request for the driver to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRequest {
    /// The protocol it arrived in; replies go out in the same one.
    pub version: Version,
    /// The command, SOCKS4's CD mapped into the SOCKS5 space (1 CONNECT, 2 BIND).
    pub command: Command,
    /// DST.ADDR and DST.PORT (for SOCKS4a the HOSTNAME).
    pub target: Address,
    /// The authenticated user name, or SOCKS4's USERID (which authenticates nothing, R-67).
    pub user: Option<Vec<u8>>,
}

/// Why a handshake ended without a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeFailure {
    /// The first byte is not a version this server serves.
    #[error("unsupported protocol version 0x{0:02x}")]
    UnsupportedVersion(u8),
    /// None of the offered methods is acceptable.
    #[error("no acceptable authentication method offered")]
    NoAcceptableMethod,
    /// The credentials were rejected.
    #[error("authentication failed")]
    AuthFailed,
    /// The SOCKS4 USERID is not one the server accepts; `00 5D` has been queued.
    #[error("SOCKS4 USERID not accepted")]
    UseridRejected,
    /// A message was malformed; any reply the protocol calls for has been queued.
    #[error("malformed message: {0}")]
    Malformed(ProtoError),
    /// The request was refused in the handshake itself (e.g. SOCKS4 when authentication is
    /// required, a zero-length domain, RSV≠0); the failure reply has been queued.
    #[error("request refused: {0}")]
    Refused(Reply),
}

/// What the driver must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// Check the credentials, then call [`ServerHandshake::auth_result`].
    Authenticate(UserPassRequest),
    /// Check this SOCKS4 USERID, then call [`ServerHandshake::userid_result`] (only with
    /// [`HandshakeConfig::socks4_userid_check`]).
    CheckUserid(Vec<u8>),
    /// The selected method needs the driver to act before the handshake can go on (gost's TLS
    /// methods: wrap the stream in TLS, then keep feeding the decrypted bytes).
    MethodSelected(Method),
    /// A request to carry out; reply with [`super::encode_reply`].
    Request(ProxyRequest),
    /// The handshake failed: flush what [`ServerHandshake::poll_transmit`] yields, then close.
    Failed(HandshakeFailure),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Greeting,
    /// Waiting for the driver to set up an extension method (`method_ready`).
    AwaitingMethod {
        method: Method,
    },
    Auth,
    AwaitingAuthResult,
    /// A SOCKS4 request held until the driver's verdict on its USERID.
    AwaitingUseridResult,
    Request,
    Done,
}

/// The server's handshake state machine.
#[derive(Debug)]
pub struct ServerHandshake {
    config: HandshakeConfig,
    state: State,
    user: Option<Vec<u8>>,
    /// The SOCKS4 request waiting for [`ServerHandshake::userid_result`].
    held: Option<ProxyRequest>,
    transmit: Vec<u8>,
    events: VecDeque<ServerEvent>,
}

impl ServerHandshake {
    /// A machine waiting for the client's first byte.
    pub fn new(config: HandshakeConfig) -> Self {
        Self { config, state: State::Start, user: None, held: None, transmit: Vec::new(), events: VecDeque::new() }
    }

    /// Whether the machine has finished (with a request or a failure).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes as many whole messages from `input` as the current state allows and returns how
    /// many bytes it used. It stops after an event that needs the driver, and after the request,
    /// so bytes beyond the handshake are never consumed.
    pub fn handle_input(&mut self, input: &[u8]) -> usize {
        let mut used = 0;
        while self.events.is_empty() && used < input.len() {
            match self.step(&input[used..]) {
                Some(n) => used += n,
                None => break,
            }
        }
        used
    }

    /// Bytes to write to the client, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.transmit.is_empty()).then(|| std::mem::take(&mut self.transmit))
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// The driver's verdict on an [`ServerEvent::Authenticate`].
    pub fn auth_result(&mut self, ok: bool) {
        if self.state != State::AwaitingAuthResult {
            return;
        }
        let status = if ok { STATUS_SUCCESS } else { STATUS_FAILURE };
        UserPassReply { status }.encode(&mut self.transmit);
        if ok {
            self.state = State::Request;
        } else {
            self.user = None;
            self.fail(HandshakeFailure::AuthFailed);
        }
    }

    /// The driver's verdict on a [`ServerEvent::CheckUserid`]: the held request goes on, or
    /// `00 5D` (gost's answer to a USERID it does not accept) and the handshake fails.
    pub fn userid_result(&mut self, ok: bool) {
        if self.state != State::AwaitingUseridResult {
            return;
        }
        match self.held.take() {
            Some(request) if ok => {
                self.state = State::Done;
                self.events.push_back(ServerEvent::Request(request));
            }
            _ => {
                self.transmit.extend(Socks4ReplyMsg::new(Socks4Reply::IDENT_MISMATCH).to_bytes());
                self.fail(HandshakeFailure::UseridRejected);
            }
        }
    }

    /// The driver has finished what [`ServerEvent::MethodSelected`] asked for.
    pub fn method_ready(&mut self) {
        if let State::AwaitingMethod { method } = self.state {
            self.state = if method == Method::TLS_AUTH { State::Auth } else { State::Request };
        }
    }

    fn fail(&mut self, why: HandshakeFailure) {
        self.state = State::Done;
        self.events.push_back(ServerEvent::Failed(why));
    }

    /// Runs one message; `None` means more input is needed.
    fn step(&mut self, input: &[u8]) -> Option<usize> {
        match self.state {
            State::Start => {
                match input[0] {
                    0x05 if self.config.socks5 => self.state = State::Greeting,
                    0x04 if self.config.socks4 => return self.socks4(input),
                    v => self.fail(HandshakeFailure::UnsupportedVersion(v)),
                }
                Some(0)
            }
            State::Greeting => {
                let (greeting, n) = self.decode(Greeting::decode(input))?;
                self.select(&greeting);
                Some(n)
            }
            State::Auth => {
                let (req, n) = self.decode(UserPassRequest::decode(input))?;
                self.user = Some(req.user.clone());
                self.state = State::AwaitingAuthResult;
                self.events.push_back(ServerEvent::Authenticate(req));
                Some(n)
            }
            State::Request => {
                let (req, n) = match Request::decode(input) {
                    Ok(v) => v,
                    Err(DecodeError::Incomplete) => return None,
                    Err(DecodeError::Invalid(e)) => {
                        // A bad ATYP gets 08 (D-05), a bad version 01; either way the
                        // stream cannot be resynchronised, so close after the reply.
                        let rep = match e {
                            ProtoError::UnsupportedAddrType(_) => Reply::ADDR_TYPE_NOT_SUPPORTED,
                            _ => Reply::GENERAL_FAILURE,
                        };
                        self.transmit.extend(ReplyMsg::failure(rep).to_bytes());
                        self.fail(HandshakeFailure::Malformed(e));
                        return Some(0);
                    }
                };
                self.request_v5(req);
                Some(n)
            }
            State::AwaitingMethod { .. } | State::AwaitingAuthResult | State::AwaitingUseridResult | State::Done => {
                None
            }
        }
    }

    fn decode<T>(&mut self, r: Result<(T, usize), DecodeError>) -> Option<(T, usize)> {
        match r {
            Ok(v) => Some(v),
            Err(DecodeError::Incomplete) => None,
            Err(DecodeError::Invalid(e)) => {
                self.fail(HandshakeFailure::Malformed(e));
                None
            }
        }
    }

    fn select(&mut self, greeting: &Greeting) {
        let chosen = self.config.methods.iter().copied().find(|m| greeting.methods.contains(m));
        let method = chosen.unwrap_or(Method::NO_ACCEPTABLE);
        MethodSelection { method }.encode(&mut self.transmit);
        match chosen {
            None => self.fail(HandshakeFailure::NoAcceptableMethod),
            Some(Method::NO_AUTH) => self.state = State::Request,
            Some(Method::USER_PASS) => self.state = State::Auth,
            Some(m) => {
                // Extension methods (gost's TLS): the driver acts, then calls `method_ready`
                // (for 0x80) or keeps feeding bytes that now hold RFC 1929 (for 0x82).
                self.state = State::AwaitingMethod { method: m };
                self.events.push_back(ServerEvent::MethodSelected(m));
            }
        }
    }

    fn request_v5(&mut self, req: Request) {
        let refuse = if req.reserved != 0 {
            Some(Reply::GENERAL_FAILURE) // D-14
        } else if matches!(&req.address.host, Host::Domain(d) if d.is_empty()) {
            Some(Reply::HOST_UNREACHABLE) // D-03: never resolve an empty name
        } else {
            None
        };
        if let Some(rep) = refuse {
            self.transmit.extend(ReplyMsg::failure(rep).to_bytes());
            self.fail(HandshakeFailure::Refused(rep));
            return;
        }
        self.state = State::Done;
        self.events.push_back(ServerEvent::Request(ProxyRequest {
            version: Version::V5,
            command: req.command,
            target: req.address,
            user: self.user.take(),
        }));
    }

    fn socks4(&mut self, input: &[u8]) -> Option<usize> {
        let (req, n) = match Socks4Request::decode(input, self.config.max_field) {
            Ok(v) => v,
            Err(DecodeError::Incomplete) => return None,
            Err(DecodeError::Invalid(e)) => {
                // Over-long USERID/HOSTNAME: the 8-byte rejection, then close (R-05, V-11).
                self.transmit.extend(Socks4ReplyMsg::new(Socks4Reply::REJECTED).to_bytes());
                self.fail(HandshakeFailure::Malformed(e));
                return Some(0);
            }
        };
        let (version, host) = match req.hostname {
            Some(h) => (Version::V4a, Host::Domain(h)),
            None => (Version::V4, Host::Ip(req.ip.into())),
        };
        let command = match req.command {
            Socks4Command::CONNECT => Some(Command::CONNECT),
            Socks4Command::BIND => Some(Command::BIND),
            _ => None,
        };
        let empty_name = matches!(&host, Host::Domain(d) if d.is_empty());
        match command {
            Some(command) if !self.config.auth_required() && !empty_name => {
                let request = ProxyRequest {
                    version,
                    command,
                    target: Address { host, port: req.port },
                    user: Some(req.user_id),
                };
                if self.config.socks4_userid_check {
                    self.state = State::AwaitingUseridResult;
                    self.events.push_back(ServerEvent::CheckUserid(request.user.clone().unwrap_or_default()));
                    self.held = Some(request);
                } else {
                    self.state = State::Done;
                    self.events.push_back(ServerEvent::Request(request));
                }
            }
            _ => {
                self.transmit.extend(Socks4ReplyMsg::new(Socks4Reply::REJECTED).to_bytes());
                self.fail(HandshakeFailure::Refused(Reply::NOT_ALLOWED));
            }
        }
        Some(n)
    }
}
