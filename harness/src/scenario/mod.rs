//! The scenario format: schema, loading and validation.
//!
//! A scenario is one YAML file describing a conversation between a SOCKS client (C) and server (S):
//! `send` is C→S, `expect` is S→C. The runner plays either side. Everything YAML goes through
//! [`yaml`], so replacing `serde_yaml` is a one-file change.

pub mod template;
pub mod yaml;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use template::{Template, TemplateError};

use crate::coverage::Requirements;
use crate::verdict::{Cited, Grade};

/// Errors from loading scenarios and other lab data files.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML did not fit the schema; names the file, line and field.
    #[error(transparent)]
    Yaml(#[from] yaml::YamlError),
    /// The file parsed but breaks a rule that spans several fields or files.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Which side of the conversation the runner plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The runner is the client; a SOCKS server is under test.
    Client,
    /// The runner is the server; a SOCKS client (a command line) is under test.
    Server,
}

/// SOCKS protocol version a scenario speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Version {
    /// SOCKS4 (IPv4 destinations).
    Socks4,
    /// SOCKS4a (host names in the request).
    Socks4a,
    /// SOCKS5 (RFC 1928).
    Socks5,
}

/// A SOCKS command a scenario needs the server to support (or, in `disabled`, to refuse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Command {
    /// CONNECT.
    Connect,
    /// BIND.
    Bind,
    /// UDP ASSOCIATE.
    Udp,
}

/// A feature a server can be declared to refuse (`--disabled bind,udp,socks4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Feature {
    /// The BIND command.
    Bind,
    /// The UDP ASSOCIATE command.
    Udp,
    /// SOCKS4 requests.
    Socks4,
    /// SOCKS4a requests (names in SOCKS4).
    Socks4a,
}

impl Feature {
    /// Every feature, with its command-line name.
    pub const ALL: [(Feature, &'static str); 4] =
        [(Feature::Bind, "bind"), (Feature::Udp, "udp"), (Feature::Socks4, "socks4"), (Feature::Socks4a, "socks4a")];

    /// Parses a command-line name.
    pub fn from_name(n: &str) -> Option<Feature> {
        Feature::ALL.iter().find(|(_, name)| *name == n).map(|(f, _)| *f)
    }

    /// The command-line name.
    pub fn name(self) -> &'static str {
        Feature::ALL.iter().find(|(f, _)| *f == self).map(|(_, n)| *n).unwrap_or("?")
    }
}

/// A protocol extension beyond the RFCs that a scenario tests and a server may claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Extension {
    /// gost's SOCKS5 extensions: TLS methods 80/82, MBIND (F2) over smux, UDP-over-TCP (F3).
    Gost,
}

/// How the server under test is configured to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// No authentication required (method 00 accepted).
    Noauth,
    /// RFC 1929 username/password required (only method 02 accepted).
    Userpass,
}

/// The transport under SOCKS. Only plain TCP exists in this catalogue so far; TLS/WS layers are
/// declared here so scenarios can say which they need once those peers exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// Plain TCP.
    #[default]
    Tcp,
}

/// A delivery schedule: how `send` steps are cut into writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// One write per `send` step, flushed at each `;`.
    AsWritten,
    /// Every octet its own write, with a short pause between writes.
    OneByte,
    /// Consecutive sends on a connection merged into one write, ahead of the replies (pipelining).
    Coalesced,
    /// One write per template field (token), with a short pause between writes.
    FieldSplit,
}

impl Schedule {
    /// All schedules, in the order reports list them.
    pub const ALL: [Schedule; 4] = [Schedule::AsWritten, Schedule::OneByte, Schedule::Coalesced, Schedule::FieldSplit];

    /// The kebab-case name used in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Schedule::AsWritten => "as-written",
            Schedule::OneByte => "one-byte",
            Schedule::Coalesced => "coalesced",
            Schedule::FieldSplit => "field-split",
        }
    }

    /// Parses a kebab-case name.
    pub fn from_name(s: &str) -> Option<Schedule> {
        Schedule::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// The loopback target a scenario's requests point at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FixtureKind {
    /// No target.
    #[default]
    None,
    /// TCP echo; echoes until EOF, then half-closes.
    Echo,
    /// TCP echo that XORs each octet with [`template::XOR_KEY`].
    XorEcho,
    /// Minimal HTTP/1.0 server answering any request with a fixed body.
    Http,
    /// Accepts and reads, never writes.
    Discard,
    /// A port with nothing listening: connects are refused (RST).
    Refuse,
    /// A listener whose accept queue is full: SYNs go unanswered, connects time out.
    Blackhole,
    /// Sends `bye`, half-closes, then keeps reading until EOF.
    HalfClose,
    /// Speaks first: a banner dripped one octet every few milliseconds.
    SlowDrip,
    /// UDP echo that records every datagram.
    UdpEcho,
    /// UDP echo that XORs each octet with [`template::XOR_KEY`] (the lab's UDP target, so an
    /// imported capture's datagram answers can be compared as captured).
    UdpXorEcho,
}

/// What the server under test must offer for a scenario to apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Needs {
    /// Protocol version spoken.
    pub version: Version,
    /// Command that must be enabled.
    pub command: Command,
    /// How the server must be configured to authenticate.
    pub method: Method,
    /// Transport under SOCKS.
    pub transport: Transport,
    /// Features that must be declared disabled (for "a disabled feature is refused" checks).
    pub disabled: Vec<Feature>,
    /// The scenario waits for the server's handshake deadline, which must be declared.
    pub handshake_timeout: bool,
    /// The scenario waits for the server's outgoing connect timeout, which must be declared.
    pub connect_timeout: bool,
    /// The scenario waits for the server's BIND accept timeout, which must be declared.
    pub bind_timeout: bool,
    /// The scenario waits for the server's UDP association idle timeout, which must be declared.
    pub udp_idle_timeout: bool,
    /// A protocol extension the server must claim.
    pub extension: Option<Extension>,
    /// The server must reach IPv6 loopback targets.
    pub ipv6: bool,
    /// The server must resolve names (`localhost`).
    pub domain: bool,
}

impl Default for Needs {
    fn default() -> Self {
        Needs {
            version: Version::Socks5,
            command: Command::Connect,
            method: Method::Noauth,
            transport: Transport::Tcp,
            disabled: Vec::new(),
            handshake_timeout: false,
            connect_timeout: false,
            bind_timeout: false,
            udp_idle_timeout: false,
            extension: None,
            ipv6: false,
            domain: false,
        }
    }
}

/// A step deadline: milliseconds, or one of the server's declared timeouts plus a margin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Deadline {
    /// Milliseconds.
    Ms(u64),
    /// A declared timeout plus a margin, or the RFC's own limit.
    Named(NamedDeadline),
}

/// Named deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NamedDeadline {
    /// The server's handshake timeout plus a margin (`needs.handshake_timeout`).
    Handshake,
    /// The server's outgoing connect timeout plus a margin (`needs.connect_timeout`).
    Connect,
    /// The server's BIND accept timeout plus a margin (`needs.bind_timeout`).
    Bind,
    /// The server's UDP idle timeout plus a margin (`needs.udp_idle_timeout`).
    UdpIdle,
    /// RFC 1928 §6: a server closes "no more than 10 seconds" after a failure; plus a margin.
    FailureClose,
}

/// Assertions on what the target fixture recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TargetCheck {
    /// Number of TCP connections the target accepted.
    pub connections: Option<usize>,
    /// The octets the target received over TCP, all connections concatenated.
    pub bytes: Option<String>,
    /// Number of UDP datagrams the target received.
    pub datagrams: Option<usize>,
}

/// One step, after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// C→S octets.
    Send(Template),
    /// S→C octets matching a pattern.
    Expect(Template),
    /// Octets matching the pattern, or a close with nothing (where the catalogue allows either,
    /// e.g. R-15 "close, optionally after `01 FF`"), or, when `silence_ms` is set, nothing at
    /// all for that long. Follow it with `expect_close` where a close is required.
    ExpectOptional {
        /// The pattern.
        pattern: Template,
        /// Silence for this long is accepted too.
        silence_ms: Option<u64>,
    },
    /// The server refuses the request in any of the ways the RFCs allow: a failure reply (SOCKS5:
    /// `05`, REP other than `00`, `00`, any address; SOCKS4: 8 octets with CD other than `5A`)
    /// followed by a close within RFC 1928's 10 seconds, or a close with no reply, or (when
    /// `silence_ms` is set) silence for that long. A success reply, or anything else, fails.
    /// This is the MUST-level check; which REP a server should pick is a separate policy scenario.
    ExpectRefusal {
        /// Silence for this long also counts as a refusal (the request cannot be parsed, so the
        /// server may wait for more octets).
        silence_ms: Option<u64>,
    },
    /// The server closes (EOF or reset) with no further octets.
    ExpectClose,
    /// The server half-closes: a clean EOF, the connection stays writable.
    ExpectHalfClose,
    /// Nothing arrives and the connection stays open for `ms`.
    ExpectSilence(u64),
    /// The client shuts down its sending direction.
    HalfClose,
    /// The client closes the connection.
    Close,
    /// The client opens another TCP connection, to the proxy or to a captured address.
    Open {
        /// Where to connect: `proxy` or the name of an address capture.
        to: String,
    },
    /// Pause.
    Sleep(u64),
    /// Send a UDP datagram from a named socket (`fresh` makes a new socket each time).
    UdpSend {
        /// Payload (including the SOCKS UDP header, when there is one).
        data: Template,
        /// Destination: an address capture (e.g. `bnd`), `proxy` (the TCP listen address) or `target`.
        to: String,
    },
    /// A datagram arrives on the socket, matching the pattern.
    UdpExpect(Template),
    /// No datagram arrives on the socket for `ms`.
    UdpExpectNone(u64),
    /// Assertions on the target fixture's records.
    TargetReceived(TargetCheck),
    /// From here the connection is a tunnel to the target (server role: start relaying).
    Tunnel,
}

/// One step of a scenario.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawStep")]
pub struct Step {
    /// What to do.
    pub kind: StepKind,
    /// The TCP connection the step applies to (`main` unless named).
    pub conn: String,
    /// The UDP socket the step applies to (`a` unless named).
    pub socket: String,
    /// How long the step may wait.
    pub deadline: Option<Deadline>,
}

/// The literal YAML shape of a step: one key naming the kind, plus optional modifiers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    send: Option<String>,
    expect: Option<String>,
    expect_optional: Option<String>,
    expect_close: Option<Flag>,
    expect_refusal: Option<Flag>,
    expect_half_close: Option<Flag>,
    expect_silence: Option<Flag>,
    half_close: Option<Flag>,
    close: Option<Flag>,
    open: Option<String>,
    sleep_ms: Option<u64>,
    udp_send: Option<String>,
    udp_expect: Option<String>,
    udp_expect_none: Option<Flag>,
    target_received: Option<TargetCheck>,
    tunnel: Option<Flag>,
    conn: Option<String>,
    socket: Option<String>,
    to: Option<String>,
    deadline_ms: Option<Deadline>,
    ms: Option<u64>,
}

/// A step key whose value carries nothing: `{}` or `true`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Flag {
    Bool(bool),
    Map(BTreeMap<String, u8>),
}

impl TryFrom<RawStep> for Step {
    type Error = String;

    fn try_from(r: RawStep) -> Result<Step, String> {
        let tpl = |s: &str| Template::parse(s).map_err(|e| e.to_string());
        let flag = |f: &Option<Flag>, key: &str| -> Result<bool, String> {
            match f {
                None => Ok(false),
                Some(Flag::Bool(b)) => Ok(*b),
                Some(Flag::Map(m)) if m.is_empty() => Ok(true),
                Some(Flag::Map(_)) => Err(format!("`{key}` takes `{{}}`; put modifiers beside it")),
            }
        };
        let mut kinds: Vec<(&str, StepKind)> = Vec::new();
        if let Some(s) = &r.send {
            kinds.push(("send", StepKind::Send(tpl(s)?)));
        }
        if let Some(s) = &r.expect {
            kinds.push(("expect", StepKind::Expect(tpl(s)?)));
        }
        if let Some(s) = &r.expect_optional {
            kinds.push(("expect_optional", StepKind::ExpectOptional { pattern: tpl(s)?, silence_ms: r.ms }));
        }
        if flag(&r.expect_close, "expect_close")? {
            kinds.push(("expect_close", StepKind::ExpectClose));
        }
        if flag(&r.expect_refusal, "expect_refusal")? {
            kinds.push(("expect_refusal", StepKind::ExpectRefusal { silence_ms: r.ms }));
        }
        if flag(&r.expect_half_close, "expect_half_close")? {
            kinds.push(("expect_half_close", StepKind::ExpectHalfClose));
        }
        if flag(&r.expect_silence, "expect_silence")? {
            kinds.push(("expect_silence", StepKind::ExpectSilence(r.ms.unwrap_or(300))));
        }
        if flag(&r.half_close, "half_close")? {
            kinds.push(("half_close", StepKind::HalfClose));
        }
        if flag(&r.close, "close")? {
            kinds.push(("close", StepKind::Close));
        }
        if let Some(ms) = r.sleep_ms {
            kinds.push(("sleep_ms", StepKind::Sleep(ms)));
        }
        if let Some(s) = &r.udp_send {
            kinds.push((
                "udp_send",
                StepKind::UdpSend { data: tpl(s)?, to: r.to.clone().unwrap_or_else(|| "bnd".into()) },
            ));
        }
        if let Some(s) = &r.udp_expect {
            kinds.push(("udp_expect", StepKind::UdpExpect(tpl(s)?)));
        }
        if flag(&r.udp_expect_none, "udp_expect_none")? {
            kinds.push(("udp_expect_none", StepKind::UdpExpectNone(r.ms.unwrap_or(500))));
        }
        if let Some(c) = &r.target_received {
            if let Some(b) = &c.bytes {
                tpl(b)?;
            }
            kinds.push(("target_received", StepKind::TargetReceived(c.clone())));
        }
        if flag(&r.tunnel, "tunnel")? {
            kinds.push(("tunnel", StepKind::Tunnel));
        }
        if let Some(name) = &r.open {
            kinds.push(("open", StepKind::Open { to: r.to.clone().unwrap_or_else(|| "proxy".into()) }));
            if r.conn.is_some() {
                return Err("`open` names the connection itself; drop `conn`".into());
            }
            if r.socket.is_some() || r.ms.is_some() {
                return Err("`open` takes only `to` and `deadline_ms` beside it".into());
            }
            return finish(kinds, r.deadline_ms, name.clone(), None);
        }
        if r.to.is_some() && !matches!(kinds.first(), Some((_, StepKind::UdpSend { .. }))) {
            return Err("`to` applies only to `open` and `udp_send`".into());
        }
        let takes_ms = matches!(
            kinds.first(),
            Some((
                _,
                StepKind::ExpectSilence(_)
                    | StepKind::UdpExpectNone(_)
                    | StepKind::ExpectRefusal { .. }
                    | StepKind::ExpectOptional { .. }
            ))
        );
        if r.ms.is_some() && !takes_ms {
            return Err(
                "`ms` applies only to expect_silence, udp_expect_none, expect_refusal and expect_optional".into()
            );
        }
        finish(kinds, r.deadline_ms, r.conn.unwrap_or_else(|| "main".into()), r.socket)
    }
}

fn finish(
    mut kinds: Vec<(&str, StepKind)>,
    deadline: Option<Deadline>,
    conn: String,
    socket: Option<String>,
) -> Result<Step, String> {
    match kinds.len() {
        0 => Err("a step needs one of send, expect, expect_optional, expect_refusal, expect_close, expect_half_close, expect_silence, half_close, close, open, sleep_ms, udp_send, udp_expect, udp_expect_none, target_received, tunnel".into()),
        1 => {
            let (_, kind) = kinds.remove(0);
            Ok(Step {
                kind,
                conn,
                socket: socket.unwrap_or_else(|| "a".into()),
                deadline,
            })
        }
        _ => Err(format!(
            "a step does one thing, this one has {}",
            kinds.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(" and ")
        )),
    }
}

/// What the client under test must do when the runner plays the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ClientOutcome {
    /// Whether the client command must exit with status 0.
    #[serde(default)]
    pub success: bool,
    /// Text its standard output must contain.
    pub stdout_contains: Option<String>,
}

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Stable identifier, e.g. `rfc1928.method.no-acceptable`.
    pub id: String,
    /// A behaviour sentence.
    pub title: String,
    /// Requirement ids (from `scenarios/requirements.yaml`) this scenario tests.
    #[serde(default)]
    pub refs: Vec<String>,
    /// Sides the runner can play.
    #[serde(default = "default_roles")]
    pub roles: Vec<Role>,
    /// Capabilities the server under test must have.
    #[serde(default)]
    pub needs: Needs,
    /// The target fixture.
    #[serde(default)]
    pub target: FixtureKind,
    /// Schedules this scenario is meaningful under (all unless restricted, with a reason in `notes`).
    #[serde(default)]
    pub schedules: Option<Vec<Schedule>>,
    /// Free-form rationale, e.g. which decision (D-xx) the expectation encodes.
    #[serde(default)]
    pub notes: Option<String>,
    /// Tags for profile selection, besides those derived from `needs`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Outcome required from a client under test (server role only).
    #[serde(default)]
    pub client: Option<ClientOutcome>,
    /// The conversation.
    pub steps: Vec<Step>,
    /// The file the scenario came from.
    #[serde(skip)]
    pub path: PathBuf,
    /// The strictest level among the cited requirements (set on load).
    #[serde(skip)]
    pub grade: Grade,
    /// The cited requirements, resolved against `requirements.yaml` (set on load).
    #[serde(skip)]
    pub cites: Vec<Cited>,
}

fn default_roles() -> Vec<Role> {
    vec![Role::Client]
}

impl Scenario {
    /// Loads and validates one scenario file, resolving its references against the
    /// `requirements.yaml` of the nearest folder above it that has one.
    pub fn load(path: &Path) -> Result<Scenario, LoadError> {
        let reqs =
            path.ancestors().skip(1).map(|d| d.join("requirements.yaml")).find(|p| p.exists()).ok_or_else(|| {
                LoadError::Invalid {
                    path: path.to_path_buf(),
                    message: "no requirements.yaml in any folder above the scenario".into(),
                }
            })?;
        Scenario::load_with(path, &Requirements::load(&reqs)?)
    }

    /// Loads and validates one scenario file against already loaded requirements.
    pub fn load_with(path: &Path, reqs: &Requirements) -> Result<Scenario, LoadError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| LoadError::Io { path: path.to_path_buf(), source })?;
        let mut s: Scenario = yaml::from_str(path, &text)?;
        s.path = path.to_path_buf();
        s.validate()?;
        s.resolve(reqs)?;
        Ok(s)
    }

    /// Grades the scenario by the strictest requirement it cites; every reference must resolve.
    fn resolve(&mut self, reqs: &Requirements) -> Result<(), LoadError> {
        if self.refs.is_empty() {
            return Err(LoadError::Invalid {
                path: self.path.clone(),
                message: "refs: cite at least one requirement".into(),
            });
        }
        self.cites.clear();
        for r in &self.refs {
            let q = reqs.requirements.iter().find(|q| &q.id == r).ok_or_else(|| LoadError::Invalid {
                path: self.path.clone(),
                message: format!("refs: `{r}` is not in requirements.yaml"),
            })?;
            self.cites.push(Cited { id: q.id.clone(), level: q.level, text: q.text.clone() });
        }
        self.grade = self.cites.iter().map(|c| Grade::of(c.level)).min().unwrap_or_default();
        Ok(())
    }

    /// The same scenario for a server that requires RFC 1929 username/password: every connection
    /// that opens with the NO AUTH greeting (`05 01 00`, answered `05 00`) logs in instead
    /// (`05 01 02`, `05 02`, `01 ULEN UNAME PLEN PASSWD`, `01 00`) and goes on as written. `None`
    /// when the scenario is not about what follows the greeting (it sends another greeting, or
    /// needs a particular method already).
    pub fn with_login(&self) -> Option<Scenario> {
        if self.needs.method != Method::Noauth || self.needs.version != Version::Socks5 {
            return None;
        }
        let greeting = Template::parse("05 01 00").ok()?;
        let selected = Template::parse("05 00").ok()?;
        let mut seen: HashSet<&str> = HashSet::new();
        let mut out = Vec::with_capacity(self.steps.len() + 4);
        let mut i = 0;
        let mut changed = false;
        while i < self.steps.len() {
            let st = &self.steps[i];
            if let StepKind::Send(t) = &st.kind {
                if seen.insert(st.conn.as_str()) {
                    if *t != greeting {
                        return None;
                    }
                    let next = self.steps[i + 1..].iter().find(|n| n.conn == st.conn)?;
                    if next.kind != StepKind::Expect(selected.clone()) {
                        return None;
                    }
                    let on = |kind: StepKind| Step {
                        kind,
                        conn: st.conn.clone(),
                        socket: st.socket.clone(),
                        deadline: None,
                    };
                    out.push(on(StepKind::Send(Template::parse("05 01 02").ok()?)));
                    out.push(on(StepKind::Expect(Template::parse("05 02").ok()?)));
                    out.push(on(StepKind::Send(Template::parse("01 {user.len} {user} {pass.len} {pass}").ok()?)));
                    out.push(on(StepKind::Expect(Template::parse("01 00").ok()?)));
                    // Drop the original selection step: the login replaced it.
                    let skip = i + 1 + self.steps[i + 1..].iter().position(|n| n.conn == st.conn)?;
                    out.extend(self.steps[i + 1..skip].iter().cloned());
                    i = skip + 1;
                    changed = true;
                    continue;
                }
            }
            out.push(st.clone());
            i += 1;
        }
        if !changed {
            return None;
        }
        let mut s = self.clone();
        s.steps = out;
        s.needs.method = Method::Userpass;
        Some(s)
    }

    /// Schedules to run: the declared subset, or all.
    pub fn schedules(&self) -> Vec<Schedule> {
        self.schedules.clone().unwrap_or_else(|| Schedule::ALL.to_vec())
    }

    /// Folder-derived group (`rfc1928`, `socks4`, …), used by profiles.
    pub fn group(&self) -> String {
        self.path.parent().and_then(|p| p.file_name()).map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
    }

    /// Checks rules that span fields: references resolve in order, captures exist before use.
    fn validate(&self) -> Result<(), LoadError> {
        let bad = |message: String| LoadError::Invalid { path: self.path.clone(), message };
        if self.id.is_empty() || !self.id.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
            return Err(bad(format!("id `{}` must be non-empty [A-Za-z0-9._-]", self.id)));
        }
        if self.steps.is_empty() {
            return Err(bad("steps: a scenario needs at least one step".into()));
        }
        let mut known: HashSet<String> = BUILTIN_VARS.iter().map(|s| s.to_string()).collect();
        for (i, step) in self.steps.iter().enumerate() {
            let check = |t: &Template, known: &HashSet<String>| -> Result<(), LoadError> {
                for r in t.references() {
                    let udp_var = r.starts_with("udp.") && (r.ends_with(".port") || r.ends_with(".addr"));
                    if !known.contains(r) && !udp_var {
                        return Err(bad(format!(
                            "steps[{i}]: `{{{r}}}` is neither a built-in variable nor captured by an earlier step"
                        )));
                    }
                }
                Ok(())
            };
            match &step.kind {
                StepKind::Send(t) | StepKind::UdpSend { data: t, .. } if !self.roles.contains(&Role::Client) => {
                    // Played only in the server role, a send is what the client under test must
                    // send: a pattern, never rendered, so it may capture what the client chooses
                    // (the address it announces in a UDP ASSOCIATE).
                    check(t, &known)?;
                    known.extend(t.captures().into_iter().map(String::from));
                }
                StepKind::Send(t) | StepKind::UdpSend { data: t, .. } => {
                    // A method list is the one capture a send may hold (see `Template::render`).
                    let sendable = |tok: &crate::scenario::template::Token| {
                        matches!(
                            tok,
                            crate::scenario::template::Token::Capture {
                                kind: crate::scenario::template::CaptureKind::Methods { .. },
                                ..
                            }
                        )
                    };
                    let bad_capture = t.tokens.iter().find_map(|tok| match tok {
                        crate::scenario::template::Token::Capture { name, .. } if !sendable(tok) => Some(name),
                        _ => None,
                    });
                    if let Some(c) = bad_capture {
                        return Err(bad(format!("steps[{i}]: capture `{c}` in a send")));
                    }
                    check(t, &known)?
                }
                StepKind::Expect(t) | StepKind::UdpExpect(t) | StepKind::ExpectOptional { pattern: t, .. } => {
                    check(t, &known)?;
                    known.extend(t.captures().into_iter().map(String::from));
                }
                _ => {}
            }
            if let StepKind::UdpSend { to, .. } | StepKind::Open { to } = &step.kind {
                if !["proxy", "target"].contains(&to.as_str()) && !known.contains(to) {
                    return Err(bad(format!("steps[{i}]: destination `{to}` is not captured by an earlier step")));
                }
            }
        }
        Ok(())
    }
}

/// Variables every scenario can use.
pub const BUILTIN_VARS: &[&str] = &[
    "target.addr",
    "target.addr6",
    "target.port",
    "target.port.dec",
    "target.name",
    "target.name.len",
    "proxy.addr",
    "proxy.port",
    "user",
    "user.len",
    "pass",
    "pass.len",
];

/// All scenarios under a directory, sorted by id; ids must be unique, and every reference must
/// name a requirement of the directory's `requirements.yaml`.
pub fn load_catalogue(dir: &Path) -> Result<Vec<Scenario>, LoadError> {
    let reqs = Requirements::load(&dir.join("requirements.yaml"))?;
    let mut files = Vec::new();
    collect_yaml(dir, &mut files).map_err(|source| LoadError::Io { path: dir.to_path_buf(), source })?;
    let mut out: Vec<Scenario> = Vec::new();
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    for f in files {
        let s = Scenario::load_with(&f, &reqs)?;
        if let Some(prev) = seen.insert(s.id.clone(), f.clone()) {
            return Err(LoadError::Invalid {
                path: f,
                message: format!("id `{}` is also used by {}", s.id, prev.display()),
            });
        }
        out.push(s);
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Scenario files: `*.yaml` below `dir`, except data files such as `requirements.yaml` at its top.
pub fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            collect_yaml(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "yaml") && p.file_name().is_some_and(|n| n != "requirements.yaml")
        {
            out.push(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, LoadError> {
        let path = Path::new("scenarios/x/t.yaml");
        let mut s: Scenario = yaml::from_str(path, text)?;
        s.path = path.into();
        s.validate()?;
        Ok(s)
    }

    #[test]
    fn natural_yaml_parses() {
        let s = parse(
            "id: a.b\ntitle: t\nsteps:\n  - send: \"05 01 00\"\n  - expect: \"05 00\"\n    deadline_ms: 500\n  - expect_close: {}\n  - expect_close: {}\n    deadline_ms: handshake\n",
        )
        .unwrap();
        assert_eq!(s.steps.len(), 4);
        assert_eq!(s.steps[1].deadline, Some(Deadline::Ms(500)));
        assert_eq!(s.steps[3].deadline, Some(Deadline::Named(NamedDeadline::Handshake)));
        assert_eq!(s.steps[2].kind, StepKind::ExpectClose);
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let e = parse("id: a\ntitle: t\nsteps:\n  - send: \"05\"\n  - sned: \"05\"\n").unwrap_err().to_string();
        assert!(e.starts_with("scenarios/x/t.yaml:5:"), "{e}");
        assert!(e.contains("sned"), "{e}");
        let e = parse("id: a\ntitle: t\nsteps:\n  - send: \"0g\"\n").unwrap_err().to_string();
        assert!(e.contains("scenarios/x/t.yaml:4:") && e.contains("steps") && e.contains("0g"), "{e}");
        let e = parse("id: a\ntitle: t\nneeds: {version: socks6}\nsteps:\n  - send: \"05\"\n").unwrap_err().to_string();
        assert!(e.contains(":3:") && e.contains("needs.version"), "{e}");
    }

    #[test]
    fn captures_must_precede_use() {
        let e = parse("id: a\ntitle: t\nsteps:\n  - send: \"{bnd}\"\n").unwrap_err().to_string();
        assert!(e.contains("steps[0]") && e.contains("bnd"), "{e}");
        parse("id: a\ntitle: t\nsteps:\n  - expect: \"05 00 00 {bnd:addr}\"\n  - udp_send: \"00\"\n    to: bnd\n")
            .unwrap();
    }

    #[test]
    fn login_variant_replaces_each_noauth_greeting() {
        let s = parse(
            "id: a\ntitle: t\nsteps:\n  - open: idle\n  - send: \"05 01 00\"\n  - expect: \"05 00\"\n  - send: \"05 01 00 01 7f000001 0050\"\n  - expect: \"05 00 00 {bnd:addr}\"\n",
        )
        .unwrap();
        let l = s.with_login().expect("transposable");
        assert_eq!(l.needs.method, Method::Userpass);
        assert_eq!(l.steps.len(), s.steps.len() + 2);
        assert_eq!(l.steps[1].kind, StepKind::Send(Template::parse("05 01 02").unwrap()));
        assert_eq!(l.steps[4].kind, StepKind::Expect(Template::parse("01 00").unwrap()));
        assert_eq!(l.steps[5], s.steps[3]);
        let greeting_test =
            parse("id: a\ntitle: t\nsteps:\n  - send: \"05 02 00 01\"\n  - expect: \"05 00\"\n").unwrap();
        assert!(greeting_test.with_login().is_none(), "a scenario about the greeting itself is not transposed");
    }

    #[test]
    fn a_step_does_one_thing() {
        let e = parse("id: a\ntitle: t\nsteps:\n  - send: \"05\"\n    expect: \"05\"\n").unwrap_err().to_string();
        assert!(e.contains("send and expect"), "{e}");
    }
}
