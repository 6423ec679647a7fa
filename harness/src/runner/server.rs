//! The server-role player: the runner is the SOCKS server, a client command line is under test.
//!
//! The same scenario file is read from the other side: `send` (C→S) becomes what the client must
//! send, `expect` (S→C) becomes what the runner writes (cut by the delivery schedule, which now
//! tests the client's parser), `expect_close` means the runner closes, and `tunnel` starts relaying
//! to the target fixture so the client's own traffic (curl's HTTP request) reaches it.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;
use tokio::time::Instant;

use socksref::proto::{self, v4, v5, Address, DecodeError, Host};

use super::schedule::{plan, MAX_PAUSED_WRITES, SPLIT_PAUSE};
use super::{client::base_vars, Claims, Failure, Sut};
use crate::fixtures::Fixture;
use crate::scenario::template::{encode_socks5_addr, hex_spaced, Field, Mismatch, Template, Value, Vars};
use crate::scenario::{Command, Method, Role, Scenario, Schedule, StepKind, Version};
use crate::transcript::{Direction, Recorder, Transcript};

/// How long the client under test may take to connect, and to finish after the conversation.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(10);

/// How long one step waits for the client to send or close.
const STEP_WAIT: Duration = Duration::from_secs(3);

/// Whether a scenario can be played in the server role.
pub fn playable(scn: &Scenario) -> Result<(), String> {
    if !scn.roles.contains(&Role::Server) {
        return Err("the scenario does not declare the server role".into());
    }
    for (i, s) in scn.steps.iter().enumerate() {
        match &s.kind {
            StepKind::UdpSend { to, .. } if to != "bnd" => {
                return Err(format!(
                    "steps[{i}]: a `udp_send` step cannot be played in the server role with `to: {to}` (the client sends to the runner's relay)"
                ))
            }
            StepKind::Send(_)
            | StepKind::Expect(_)
            | StepKind::ExpectOptional { .. }
            | StepKind::ExpectRefusal { .. }
            | StepKind::ExpectClose
            | StepKind::ExpectHalfClose
            | StepKind::ExpectSilence(_)
            | StepKind::HalfClose
            | StepKind::Close
            | StepKind::Sleep(_)
            | StepKind::UdpSend { .. }
            | StepKind::UdpExpect(_)
            | StepKind::UdpExpectNone(_)
            | StepKind::Tunnel => {}
            other => {
                return Err(format!(
                    "steps[{i}]: a `{}` step cannot be played in the server role (it plays only send, expect*, close, half_close, sleep_ms, udp_* and tunnel)",
                    step_name(other)
                ))
            }
        }
        if s.conn != "main" {
            return Err(format!(
                "steps[{i}] is on connection `{}`: the server role plays one connection (`main`) per scenario",
                s.conn
            ));
        }
    }
    Ok(())
}

/// The placeholders a client command line may use, with what each becomes.
pub const PLACEHOLDERS: &[(&str, &str)] = &[
    ("{proxy}", "the runner's SOCKS listener, 127.0.0.1:PORT"),
    ("{proxy.host}", "its address, 127.0.0.1"),
    ("{proxy.port}", "its port"),
    ("{target}", "the target fixture, 127.0.0.1:PORT"),
    ("{target.host}", "the target's name, localhost (so socks4a/socks5h clients send a name)"),
    ("{target.port}", "the target's port"),
    ("{user}", "the username (--user)"),
    ("{pass}", "the password (--pass)"),
    ("{port}", "a free loopback port for the command's own use (a local forwarder's listener), new for every run"),
];

/// Substitutes the [`PLACEHOLDERS`] in a client command line.
pub fn render_command(cmd: &str, proxy: SocketAddr, target: SocketAddr, user: &str, pass: &str, port: u16) -> String {
    cmd.replace("{port}", &port.to_string())
        .replace("{proxy.host}", &proxy.ip().to_string())
        .replace("{proxy.port}", &proxy.port().to_string())
        .replace("{proxy}", &proxy.to_string())
        .replace("{target.host}", "localhost")
        .replace("{target.port}", &target.port().to_string())
        .replace("{target}", &target.to_string())
        .replace("{user}", user)
        .replace("{pass}", pass)
}

/// The process group of a client command (its leader's pid), ended as a whole.
struct Group(Option<u32>);

impl Group {
    /// Sends SIGKILL to every process of the group; a group that is gone already is fine.
    fn kill(&self) {
        if let Some(pid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) takes plain integers; a negative pid names the group this runner
            // created for the command, so nothing else is signalled.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

/// Reads a child's pipe to its end in the background.
fn drain<R: tokio::io::AsyncRead + Unpin + Send + 'static>(pipe: Option<R>) -> tokio::task::JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        let mut v = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut v).await;
        }
        v
    })
}

/// How many octets of the client's stderr a failure shows.
const STDERR_TAIL: usize = 400;

/// The last `STDERR_TAIL` octets of `b`, as text on one line.
fn tail(b: &[u8]) -> String {
    let from = b.len().saturating_sub(STDERR_TAIL);
    String::from_utf8_lossy(&b[from..]).split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Plays `scn` as the server; `command` is the client under test.
///
/// Every connection the client opens is accepted. Each is played as the scenario until its request
/// shows where it goes: a CONNECT for another destination (a browser's background connection) is
/// refused and recorded, not graded; the first connection that finishes otherwise is the graded
/// one. Connections after it are refused. The client's exit code and the tail of its stderr end
/// the transcript, and failure messages carry them.
pub async fn play(
    scn: &Scenario,
    schedule: Schedule,
    command: &str,
    user: &str,
    pass: &str,
) -> Result<Transcript, Failure> {
    let rec: SharedRec = Arc::new(Mutex::new(Recorder::default()));
    let fail = |step: Option<usize>, message: String| Failure { step, message, transcript: snapshot(&rec) };
    playable(scn).map_err(|m| fail(None, m))?;
    let fixture = Fixture::start(scn.target).await.map_err(|e| fail(None, format!("fixture: {e}")))?;
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| fail(None, e.to_string()))?;
    let proxy = listener.local_addr().map_err(|e| fail(None, e.to_string()))?;
    let mut client = Client::spawn(command, proxy, fixture.addr, user, pass).map_err(|m| fail(None, m))?;
    let ctx =
        Arc::new(context(scn, schedule, &fixture, proxy, user, pass, rec.clone()).await.map_err(|m| fail(None, m))?);
    let Accepted { graded, exited, opened, mut conns } = accept_until_graded(&listener, &ctx, &mut client).await;
    let code = match exited {
        Some(c) => Ok(c),
        None => refuse_until_exit(&listener, &rec, &mut client, opened).await,
    };
    conns.abort_all();
    let (stdout, stderr) = client.finish().await;
    let line = match code {
        Ok(c) => {
            format!("client exit {}; stderr: {}", c.map_or("by a signal".to_string(), |c| c.to_string()), tail(&stderr))
        }
        Err(()) => format!(
            "client still running {} s after the conversation: killed; stderr: {}",
            CLIENT_DEADLINE.as_secs(),
            tail(&stderr)
        ),
    };
    push(&rec, "client", Direction::Event, &[], line.clone());
    if let Err((step, message)) = graded {
        return Err(fail(step, format!("{message} ({line})")));
    }
    let Ok(code) = code else {
        return Err(fail(None, format!("the client did not exit ({line})")));
    };
    if let Some(want) = &scn.client {
        judge_exit(want, code, &stdout).map_err(|why| fail(None, format!("{why} ({line})")))?;
        let how = if code == Some(0) { "success" } else { "error" };
        push(&rec, "client", Direction::Event, &[], format!("client exit: {how}"));
    }
    Ok(snapshot(&rec))
}

/// The transcript recorded so far.
fn snapshot(rec: &SharedRec) -> Transcript {
    rec.lock().unwrap_or_else(|e| e.into_inner()).transcript.clone()
}

/// The client under test: its process, its process group and the drains of its pipes.
struct Client {
    child: tokio::process::Child,
    group: Group,
    stdout: tokio::task::JoinHandle<Vec<u8>>,
    stderr: tokio::task::JoinHandle<Vec<u8>>,
}

impl Client {
    /// Starts `command` (rendered with the runner's addresses and a spare port) in its own
    /// process group, both pipes drained from the start.
    fn spawn(command: &str, proxy: SocketAddr, target: SocketAddr, user: &str, pass: &str) -> Result<Client, String> {
        let spare = testkit::free_port().map_err(|e| format!("no free port for {{port}}: {e}"))?;
        let line = render_command(command, proxy, target, user, pass, spare);
        let argv = shlex::split(&line).ok_or_else(|| format!("cannot split command line `{line}`"))?;
        let Some((prog, args)) = argv.split_first() else {
            return Err("empty client command".into());
        };
        let mut child = tokio::process::Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so whatever the command line starts (a shell's forwarder) is
            // ended with it: a leftover would hold ports and answer the next run's connections.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start `{prog}`: {e}"))?;
        // Both pipes are drained from the start, so a chatty client can never block on a full
        // pipe while the runner waits for it to speak.
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let group = Group(child.id());
        Ok(Client { child, group, stdout, stderr })
    }

    /// Ends what the command left running (which also closes the pipes the drains wait on) and
    /// returns its stdout and stderr.
    async fn finish(self) -> (Vec<u8>, Vec<u8>) {
        self.group.kill();
        (self.stdout.await.unwrap_or_default(), self.stderr.await.unwrap_or_default())
    }
}

/// What every connection of one run shares: the scenario, the variables with the runner's own
/// BND (the UDP relay for a UDP scenario, the SOCKS listener otherwise) and the transcript.
async fn context(
    scn: &Scenario,
    schedule: Schedule,
    fixture: &Fixture,
    proxy: SocketAddr,
    user: &str,
    pass: &str,
    rec: SharedRec,
) -> Result<Ctx, String> {
    let sut = Sut {
        addr: proxy,
        user: user.as_bytes().to_vec(),
        pass: pass.as_bytes().to_vec(),
        claims: Claims {
            versions: [Version::Socks5].into(),
            commands: [Command::Connect].into(),
            method: Method::Noauth,
            ipv6: false,
            domain: false,
            ..Claims::default()
        },
        instance: None,
        transport: Default::default(),
    };
    let mut vars = base_vars(fixture, &sut);
    // A scenario with datagrams gets a UDP relay of the runner's own: its address is the BND of
    // the UDP ASSOCIATE reply, where the client must send (RFC 1928 §7).
    let udp = if uses_udp(scn) {
        Some(UdpSocket::bind("127.0.0.1:0").await.map_err(|e| format!("UDP relay: {e}"))?)
    } else {
        None
    };
    let bnd_at = match &udp {
        Some(u) => u.local_addr().map_err(|e| format!("UDP relay: {e}"))?,
        None => proxy,
    };
    insert_bnd(&mut vars, bnd_at);
    Ok(Ctx {
        scn: scn.clone(),
        schedule,
        target: fixture.addr,
        vars,
        rec,
        claimed: AtomicBool::new(false),
        udp,
        udp_client: Mutex::new(None),
        held: Mutex::new(Vec::new()),
    })
}

/// `{bnd}` (SOCKS5 form) and `{bnd4}` (a SOCKS4 reply's port-then-IPv4 form, so an imported
/// SOCKS4 conversation answers with the runner's own address as a SOCKS5 one does): `bnd_at`.
fn insert_bnd(vars: &mut Vars, bnd_at: SocketAddr) {
    vars.insert(
        "bnd".into(),
        Value {
            bytes: encode_socks5_addr(bnd_at),
            label: Some("{bnd=ipv4 127.0.0.1:PORT}".into()),
            addr: Some(bnd_at),
        },
    );
    let ip4 = match bnd_at.ip() {
        std::net::IpAddr::V4(a) => a.octets(),
        std::net::IpAddr::V6(_) => [0; 4],
    };
    vars.insert(
        "bnd4".into(),
        Value {
            bytes: [&bnd_at.port().to_be_bytes()[..], &ip4[..]].concat(),
            label: Some("{bnd4=127.0.0.1:PORT}".into()),
            addr: Some(bnd_at),
        },
    );
}

/// A failing step (if one) and what went wrong.
type Graded = Result<(), (Option<usize>, String)>;

/// How the accepting phase ended.
struct Accepted {
    /// The graded connection's result, or why none was graded.
    graded: Graded,
    /// The client's exit code, if it exited meanwhile (`None` inside: by a signal).
    exited: Option<Option<i32>>,
    /// Connections accepted so far (names the later ones).
    opened: usize,
    /// The connections still being played: they go on until the client exits.
    conns: JoinSet<ConnEnd>,
}

/// Accepts and plays connections until one is graded, the client exits, or it never connects.
async fn accept_until_graded(listener: &TcpListener, ctx: &Arc<Ctx>, client: &mut Client) -> Accepted {
    let mut conns: JoinSet<ConnEnd> = JoinSet::new();
    let mut opened = 0usize;
    let mut exited = None;
    let first_deadline = Instant::now() + CLIENT_DEADLINE;
    let graded = loop {
        tokio::select! {
            a = listener.accept() => match a {
                Ok((s, _)) => {
                    opened += 1;
                    conns.spawn(converse(ctx.clone(), s, conn_name(opened)));
                }
                Err(e) => break Err((None, format!("accept: {e}"))),
            },
            Some(done) = conns.join_next() => match done {
                Ok(ConnEnd::Graded(r)) => break r,
                Ok(ConnEnd::Background) => {}
                Err(e) => break Err((None, format!("connection handler: {e}"))),
            },
            st = client.child.wait(), if exited.is_none() => {
                exited = Some(st.ok().and_then(|s| s.code()));
                if conns.is_empty() {
                    let why = if opened == 0 { "the client exited without connecting" } else { "the client exited after only background connections" };
                    break Err((None, why.into()));
                }
            },
            _ = tokio::time::sleep_until(first_deadline), if opened == 0 => {
                break Err((None, format!("the client never connected within {} s", CLIENT_DEADLINE.as_secs())));
            }
        }
    };
    Accepted { graded, exited, opened, conns }
}

/// Until the client exits, later connections are refused (and recorded), never graded; a client
/// still running [`CLIENT_DEADLINE`] later is killed (`Err`).
async fn refuse_until_exit(
    listener: &TcpListener,
    rec: &SharedRec,
    client: &mut Client,
    mut opened: usize,
) -> Result<Option<i32>, ()> {
    let exit_by = Instant::now() + CLIENT_DEADLINE;
    loop {
        tokio::select! {
            st = client.child.wait() => break Ok(st.ok().and_then(|s| s.code())),
            a = listener.accept() => if let Ok((s, _)) = a {
                opened += 1;
                tokio::spawn(refuse_late(s, conn_name(opened), rec.clone()));
            },
            _ = tokio::time::sleep_until(exit_by) => {
                client.group.kill();
                let _ = client.child.start_kill();
                let _ = client.child.wait().await;
                break Err(());
            }
        }
    }
}

/// The transcript's name for the `n`th connection.
fn conn_name(n: usize) -> String {
    if n == 1 {
        "main".to_string()
    } else {
        format!("conn{n}")
    }
}

/// Checks the client's exit against the scenario's `client:` expectations.
fn judge_exit(want: &crate::scenario::ClientOutcome, code: Option<i32>, stdout: &[u8]) -> Result<(), String> {
    if want.success && code != Some(0) {
        return Err("expected the client to succeed".into());
    }
    if !want.success && code == Some(0) {
        return Err("the client exited 0, expected an error".into());
    }
    if let Some(text) = &want.stdout_contains {
        if !String::from_utf8_lossy(stdout).contains(text.as_str()) {
            return Err(format!("the client's output lacks `{text}`"));
        }
    }
    Ok(())
}
/// What one accepted connection turned out to be.
enum ConnEnd {
    /// The connection the scenario grades: `Err` holds the failing step and what went wrong.
    Graded(Result<(), (Option<usize>, String)>),
    /// A CONNECT to a destination other than the target fixture: refused, recorded, not graded.
    Background,
}

/// What a client's buffered octets say about the request it is making.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// Not a SOCKS CONNECT request (or not one the runner can read).
    Not,
    /// The start of a CONNECT request; more octets are needed.
    Incomplete,
    /// A complete CONNECT request for this destination.
    Connect { version: Version, to: Address },
}

/// Reads a SOCKS5 or SOCKS4/4a CONNECT request from the start of `b`, with the reference's own
/// decoders (the workspace's one SOCKS codec).
fn parse_connect(b: &[u8]) -> Request {
    let connect = match b.first() {
        None => return Request::Incomplete,
        Some(5) => v5::Request::decode(b).map(|(r, _)| {
            (r.command == proto::Command::CONNECT && r.reserved == 0).then_some((Version::Socks5, r.address))
        }),
        // No cap on USERID or HOSTNAME here: the runner only needs to know where the client goes.
        Some(4) => v4::Socks4Request::decode(b, usize::MAX).map(|(r, _)| {
            (r.command == proto::Socks4Command::CONNECT).then(|| match r.hostname {
                Some(name) => (Version::Socks4a, Address { host: Host::Domain(name), port: r.port }),
                None => (Version::Socks4, SocketAddr::from((r.ip, r.port)).into()),
            })
        }),
        Some(_) => return Request::Not,
    };
    match connect {
        Ok(Some((version, to))) => Request::Connect { version, to },
        Ok(None) | Err(DecodeError::Invalid(_)) => Request::Not,
        Err(DecodeError::Incomplete) => Request::Incomplete,
    }
}

/// Whether `b`, octets a `send` step matched, is a SOCKS request (not a greeting or a login):
/// SOCKS5 `05 CMD 00 ATYP …` (at least 7 octets, where a greeting offering CMD methods has at
/// most 5), or SOCKS4 `04 CMD PORT IP USERID 00`.
fn is_request(b: &[u8]) -> bool {
    match b {
        [5, 1..=3, 0, _, ..] => b.len() >= 7,
        [4, 1..=2, ..] => b.len() >= 9,
        _ => false,
    }
}

/// Whether a request for `to` is one for the target fixture at `target`.
fn is_target(to: &Address, target: SocketAddr) -> bool {
    to.port == target.port()
        && match &to.host {
            Host::Ip(ip) => ip.is_loopback(),
            Host::Domain(name) => name == b"localhost",
        }
}

/// The refusal a connection that is not graded gets: REP 02 (not allowed by ruleset) or CD 5B.
fn refusal_for(version: Version) -> &'static [u8] {
    match version {
        Version::Socks5 => &[0x05, 0x02, 0x00, 0x01, 0, 0, 0, 0, 0, 0],
        Version::Socks4 | Version::Socks4a => &[0x00, 0x5b, 0, 0, 0, 0, 0, 0],
    }
}

/// The transcript shared by every connection of one run, so entries keep one clock and one order.
type SharedRec = Arc<Mutex<Recorder>>;

/// Records one entry; lines of connections other than the first say which connection they are on.
fn push(rec: &SharedRec, on: &str, dir: Direction, octets: &[u8], line: String) {
    let line = if on == "main" || on == "client" { line } else { format!("{on}: {line}") };
    rec.lock().unwrap_or_else(|e| e.into_inner()).push(on, dir, octets, line);
}

/// What every connection handler needs.
struct Ctx {
    scn: Scenario,
    schedule: Schedule,
    target: SocketAddr,
    vars: Vars,
    rec: SharedRec,
    /// Set by the first connection whose request is graded; later requests are refused.
    claimed: AtomicBool,
    /// The runner's UDP relay, for scenarios with datagram steps.
    udp: Option<UdpSocket>,
    /// Where the client's first datagram came from: where the relay's datagrams go.
    udp_client: Mutex<Option<SocketAddr>>,
    /// Control connections of finished UDP conversations, kept open until the run ends: closing
    /// one ends the association (RFC 1928 §6), which would race the client's last datagram.
    held: Mutex<Vec<TcpStream>>,
}

/// Whether a scenario has datagram steps, so the runner needs a UDP relay.
fn uses_udp(scn: &Scenario) -> bool {
    scn.steps
        .iter()
        .any(|s| matches!(s.kind, StepKind::UdpSend { .. } | StepKind::UdpExpect(_) | StepKind::UdpExpectNone(_)))
}

/// Plays the scenario on one accepted connection, named `on` in the transcript.
async fn converse(ctx: Arc<Ctx>, s: TcpStream, on: String) -> ConnEnd {
    let _ = s.set_nodelay(true);
    let mut conn = Conn { ctx: ctx.clone(), s, on, buf: Vec::new() };
    for (i, step) in ctx.scn.steps.iter().enumerate() {
        let last = i + 1 == ctx.scn.steps.len();
        match conn.step(&step.kind, last).await {
            Ok(Next::Continue) => {}
            Ok(Next::Stop) => break,
            Ok(Next::End(end)) => return end,
            Err(message) => return ConnEnd::Graded(Err((Some(i), message))),
        }
    }
    if ctx.udp.is_some() {
        ctx.held.lock().unwrap_or_else(|e| e.into_inner()).push(conn.s);
    }
    ConnEnd::Graded(Ok(()))
}

/// What a played step leaves the conversation with; a step's failure is its `Err(message)`.
enum Next {
    /// Go on with the next step.
    Continue,
    /// The runner closed or tunnelled: the steps end here and the connection passes.
    Stop,
    /// The connection is decided now (a background connection, or a client that gave up).
    End(ConnEnd),
}

/// One accepted connection being played: its stream and what the client sent that no step has
/// matched yet.
struct Conn {
    ctx: Arc<Ctx>,
    s: TcpStream,
    on: String,
    buf: Vec<u8>,
}

impl Conn {
    /// Plays one step; `last` says whether it is the scenario's last.
    async fn step(&mut self, kind: &StepKind, last: bool) -> Result<Next, String> {
        let until = Instant::now() + STEP_WAIT;
        match kind {
            StepKind::Send(t) => self.receive(t, until).await,
            StepKind::Expect(t) | StepKind::ExpectOptional { pattern: t, .. } => self.answer(t).await,
            StepKind::ExpectRefusal { .. } => self.refuse().await,
            StepKind::ExpectClose => {
                self.event(&[], "S→C <close>".into());
                Ok(Next::Stop)
            }
            StepKind::ExpectHalfClose => {
                let _ = self.s.shutdown().await;
                self.event(&[], "S→C <half-close>".into());
                Ok(Next::Continue)
            }
            StepKind::Sleep(ms) => {
                tokio::time::sleep(Duration::from_millis(*ms)).await;
                Ok(Next::Continue)
            }
            StepKind::ExpectSilence(ms) => self.keep_silent(*ms, last).await,
            StepKind::HalfClose | StepKind::Close => self.await_close(until).await,
            StepKind::Tunnel => self.tunnel().await,
            StepKind::UdpSend { data, .. } => self.receive_datagram(data, until).await,
            StepKind::UdpExpect(t) => self.send_datagram(t).await,
            StepKind::UdpExpectNone(ms) => {
                // The relay stays quiet for `ms`.
                tokio::time::sleep(Duration::from_millis(*ms)).await;
                self.event(&[], format!("S→C <no datagram {ms} ms>"));
                Ok(Next::Continue)
            }
            other => Err(format!("a `{}` step cannot be played in the server role", step_name(other))),
        }
    }

    /// Records one entry of this connection.
    fn record(&self, dir: Direction, octets: &[u8], line: String) {
        push(&self.ctx.rec, &self.on, dir, octets, line);
    }

    /// Records an event (no direction) of this connection.
    fn event(&self, octets: &[u8], line: String) {
        self.record(Direction::Event, octets, line);
    }

    /// `send`: the client must send exactly this.
    async fn receive(&mut self, t: &Template, until: Instant) -> Result<Next, String> {
        let m = loop {
            match t.match_prefix(&self.buf, &self.ctx.vars) {
                Ok(Some(m)) => break m,
                Ok(None) => {
                    if let Err(why) = self.read_more(until).await {
                        return Err(format!("{why} [{}]", hex_spaced(&self.buf, 64)));
                    }
                }
                Err(mm) => return self.mismatch(mm, until).await,
            }
        };
        let got: Vec<u8> = self.buf.drain(..m.consumed).collect();
        self.record(Direction::ClientToServer, &got, format!("C→S {}", m.shown));
        if is_request(&got) && self.ctx.claimed.swap(true, Ordering::SeqCst) {
            // Another connection's request is already being graded (a client that opens its next
            // BIND while the first is still open): refuse this one.
            let version = if got[0] == 5 { Version::Socks5 } else { Version::Socks4 };
            return Ok(Next::End(self.refuse_background(version, "a request while another is graded").await));
        }
        Ok(Next::Continue)
    }

    /// What the client sent does not fit the `send` step. A CONNECT for another destination is a
    /// background connection (a browser's, an update check): refused, and the runner keeps waiting
    /// for the one the scenario is about. Reads on until the request is complete to tell.
    async fn mismatch(&mut self, mm: Mismatch, until: Instant) -> Result<Next, String> {
        loop {
            match parse_connect(&self.buf) {
                Request::Connect { version, to } if !is_target(&to, self.ctx.target) => {
                    let why = format!("a CONNECT to {to}, not the target");
                    return Ok(Next::End(self.refuse_background(version, &why).await));
                }
                Request::Incomplete if self.read_more(until).await.is_ok() => {}
                _ => break,
            }
        }
        Err(format!(
            "the client sent [{}]: at offset {}, field {}: {}",
            hex_spaced(&self.buf, 64),
            mm.offset,
            mm.expected,
            mm.why
        ))
    }

    /// Refuses a connection that is not graded, in `version`'s form, saying `why`.
    async fn refuse_background(&mut self, version: Version, why: &str) -> ConnEnd {
        let r = refusal_for(version);
        let _ = self.s.write_all(r).await;
        self.event(r, format!("{why}: refused with [{}] and not graded", hex_spaced(r, 16)));
        ConnEnd::Background
    }

    /// `expect`: the runner writes this, cut by the delivery schedule.
    async fn answer(&mut self, t: &Template) -> Result<Next, String> {
        let fields = t.render_pattern(&self.ctx.vars).map_err(|e| e.to_string())?;
        let writes = plan(&fields, self.ctx.schedule);
        for (k, w) in writes.iter().enumerate() {
            if self.s.write_all(w).await.is_err() {
                break;
            }
            if self.ctx.schedule != Schedule::AsWritten && k + 1 < writes.len() && k < MAX_PAUSED_WRITES {
                tokio::time::sleep(SPLIT_PAUSE).await;
            }
        }
        let octets: Vec<u8> = writes.concat();
        self.record(Direction::ServerToClient, &octets, format!("S→C {}", shown(&fields)));
        Ok(Next::Continue)
    }

    /// `expect_refusal`: the runner refuses in the canonical form for the scenario's version,
    /// then closes.
    async fn refuse(&mut self) -> Result<Next, String> {
        let reply: &[u8] = match self.ctx.scn.needs.version {
            Version::Socks5 => &[0x05, 0x01, 0x00, 0x01, 0, 0, 0, 0, 0, 0],
            Version::Socks4 | Version::Socks4a => &[0x00, 0x5b, 0, 0, 0, 0, 0, 0],
        };
        let _ = self.s.write_all(reply).await;
        self.record(Direction::ServerToClient, reply, format!("S→C {} <close>", hex_spaced(reply, 16)));
        Ok(Next::Stop)
    }

    /// `expect_silence`: the runner says nothing for `ms`; a client that gives up (its own
    /// timeout) closes, which ends the silence early and passes. What it sends meanwhile is kept
    /// for the next step. As the last step, the silence must end that way.
    async fn keep_silent(&mut self, ms: u64, last: bool) -> Result<Next, String> {
        let end = Instant::now() + Duration::from_millis(ms);
        let started = Instant::now();
        let mut tmp = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(end, self.s.read(&mut tmp)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&tmp[..n]),
                Ok(_) => {
                    let waited = started.elapsed().as_millis();
                    self.event(&[], format!("C→S <close> after {waited} ms of silence"));
                    return Ok(Next::End(ConnEnd::Graded(Ok(()))));
                }
                Err(_) => break,
            }
        }
        self.event(&[], format!("S→C <silence {ms} ms>"));
        if last {
            // A scenario that ends in silence is about a server that never answers: the client
            // must have given up by its own deadline by now, not wait forever.
            return Err(format!(
                "the client was still waiting after {ms} ms of silence: it must give up by its own deadline"
            ));
        }
        Ok(Next::Continue)
    }

    /// `close` / `half_close`: the client must close (or half-close) now.
    async fn await_close(&mut self, until: Instant) -> Result<Next, String> {
        let mut tmp = [0u8; 4096];
        match tokio::time::timeout_at(until, self.s.read(&mut tmp)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.event(&[], "C→S <close>".into());
                Ok(Next::Continue)
            }
            Ok(Ok(n)) => Err(format!("expected the client to close, it sent [{}]", hex_spaced(&tmp[..n], 64))),
            Err(_) => Err(format!("the client did not close within {} s", STEP_WAIT.as_secs())),
        }
    }

    /// `tunnel`: relays to the target fixture, so the client's own traffic reaches it.
    async fn tunnel(&mut self) -> Result<Next, String> {
        self.event(&[], "--- tunnel ---".into());
        let mut up = TcpStream::connect(self.ctx.target).await.map_err(|e| format!("target: {e}"))?;
        if !self.buf.is_empty() {
            let _ = up.write_all(&self.buf).await;
            self.buf.clear();
        }
        let _ = tokio::time::timeout(CLIENT_DEADLINE, tokio::io::copy_bidirectional(&mut self.s, &mut up)).await;
        Ok(Next::Stop)
    }

    /// `udp_send`: the client must send exactly this datagram to the relay (BND).
    async fn receive_datagram(&mut self, data: &Template, until: Instant) -> Result<Next, String> {
        let relay = self.ctx.udp.as_ref().ok_or("no UDP relay")?;
        let mut dgram = vec![0u8; 65_536];
        let (n, from) = match tokio::time::timeout_at(until, relay.recv_from(&mut dgram)).await {
            Ok(Ok(got)) => got,
            Ok(Err(e)) => return Err(format!("UDP relay: {e}")),
            Err(_) => {
                return Err(format!("the client sent no datagram to the relay (BND) within {} s", STEP_WAIT.as_secs()))
            }
        };
        let dgram = &dgram[..n];
        *self.ctx.udp_client.lock().unwrap_or_else(|e| e.into_inner()) = Some(from);
        match data.match_prefix(dgram, &self.ctx.vars) {
            Ok(Some(m)) if m.consumed == n => {
                self.record(Direction::ClientToServer, dgram, format!("C→S udp from {from} {}", m.shown));
                Ok(Next::Continue)
            }
            Ok(Some(m)) => Err(format!(
                "the client's datagram [{}] has {} octets after what the step expects",
                hex_spaced(dgram, 64),
                n - m.consumed
            )),
            Ok(None) => Err(format!("the client's datagram [{}] is short", hex_spaced(dgram, 64))),
            Err(mm) => Err(format!(
                "the client sent the datagram [{}]: at offset {}, field {}: {}",
                hex_spaced(dgram, 64),
                mm.offset,
                mm.expected,
                mm.why
            )),
        }
    }

    /// `udp_expect`: the relay sends this datagram to where the client's datagrams came from.
    async fn send_datagram(&mut self, t: &Template) -> Result<Next, String> {
        let relay = self.ctx.udp.as_ref().ok_or("no UDP relay")?;
        let to = (*self.ctx.udp_client.lock().unwrap_or_else(|e| e.into_inner()))
            .ok_or("the client has sent no datagram yet: the relay has nowhere to send")?;
        let fields = t.render_pattern(&self.ctx.vars).map_err(|e| e.to_string())?;
        let octets: Vec<u8> = fields.iter().flat_map(|f| f.bytes.iter().copied()).collect();
        relay.send_to(&octets, to).await.map_err(|e| format!("UDP relay: send to {to}: {e}"))?;
        self.record(Direction::ServerToClient, &octets, format!("S→C udp to {to} {}", shown(&fields)));
        Ok(Next::Continue)
    }

    /// Reads what the client sends next into the buffer; an error says why nothing came.
    async fn read_more(&mut self, until: Instant) -> Result<(), &'static str> {
        let mut tmp = [0u8; 4096];
        match tokio::time::timeout_at(until, self.s.read(&mut tmp)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(())
            }
            Ok(_) => Err("the client closed after"),
            Err(_) => Err("the client stopped sending after"),
        }
    }
}

/// A rendered pattern's fields as the transcript shows them.
fn shown(fields: &[Field]) -> String {
    fields.iter().map(|f| f.shown.as_str()).collect::<Vec<_>>().join(" ")
}

/// Refuses a connection that arrives after the graded one: the first octet says which version
/// to refuse in (SOCKS5: `05 FF`, no acceptable method; SOCKS4: CD 5B).
async fn refuse_late(mut s: TcpStream, on: String, rec: SharedRec) {
    let mut first = [0u8; 1];
    let got = tokio::time::timeout(STEP_WAIT, s.read(&mut first)).await;
    let reply: &[u8] = match got {
        Ok(Ok(1)) if first[0] == 5 => &[0x05, 0xff],
        Ok(Ok(1)) => refusal_for(Version::Socks4),
        _ => &[],
    };
    let _ = s.write_all(reply).await;
    push(
        &rec,
        &on,
        Direction::Event,
        reply,
        format!("a connection after the graded one: refused with [{}] and not graded", hex_spaced(reply, 16)),
    );
}

/// The YAML key of a step kind, for errors.
fn step_name(k: &StepKind) -> &'static str {
    match k {
        StepKind::Send(_) => "send",
        StepKind::Expect(_) => "expect",
        StepKind::ExpectOptional { .. } => "expect_optional",
        StepKind::ExpectRefusal { .. } => "expect_refusal",
        StepKind::ExpectClose => "expect_close",
        StepKind::ExpectHalfClose => "expect_half_close",
        StepKind::ExpectSilence(_) => "expect_silence",
        StepKind::HalfClose => "half_close",
        StepKind::Close => "close",
        StepKind::Open { .. } => "open",
        StepKind::Sleep(_) => "sleep_ms",
        StepKind::UdpSend { .. } => "udp_send",
        StepKind::UdpExpect(_) => "udp_expect",
        StepKind::UdpExpectNone(_) => "udp_expect_none",
        StepKind::TargetReceived(_) => "target_received",
        StepKind::Tunnel => "tunnel",
    }
}

/// Plays `scn` in the server role under each of `schedules` (those the scenario runs) against
/// the client `command`, and grades it as `check-client` does: the verdict from the failures,
/// the scenario's grade and `expected` (a known failure of this client), with the schedules run
/// and the failures recorded. Each schedule's outcome is logged on stderr (the client's exit
/// line for a pass, the failure otherwise), so a text log shows passing runs too.
pub async fn grade(
    scn: &Scenario,
    schedules: &[Schedule],
    command: &str,
    user: &str,
    pass: &str,
    expected: Option<&crate::verdict::ExpectedFailure>,
) -> crate::verdict::ScenarioResult {
    use crate::verdict::{decide, ScenarioResult, ScheduleFailure, Verdict};
    let t0 = std::time::Instant::now();
    if let Err(why) = playable(scn) {
        // A catalogue error, not the client's: say so instead of grading it.
        return ScenarioResult::new(scn, None, Verdict::Unavailable { reason: why });
    }
    let mut failures = Vec::new();
    let ran: Vec<Schedule> = scn.schedules().into_iter().filter(|x| schedules.contains(x)).collect();
    for sch in &ran {
        match play(scn, *sch, command, user, pass).await {
            Ok(t) => {
                if let Some(e) = t.entries.iter().rev().find(|e| e.line.starts_with("client exit ")) {
                    eprintln!("{} [{}]: {}", scn.id, sch.name(), e.line);
                }
            }
            Err(f) => {
                eprintln!("{} [{}]: {}", scn.id, sch.name(), f.message);
                failures.push(ScheduleFailure {
                    schedule: *sch,
                    step: f.step,
                    message: f.message,
                    transcript: f.transcript,
                })
            }
        }
    }
    let mut r = ScenarioResult::new(scn, None, decide(scn.grade, &ran, &failures, expected));
    r.schedules = ran;
    r.failures = failures;
    r.millis = t0.elapsed().as_millis() as u64;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(name: &str, port: u16) -> Address {
        Address { host: Host::Domain(name.as_bytes().to_vec()), port }
    }

    #[test]
    fn connect_requests_are_read_in_every_version_and_cut_anywhere() {
        let mut v5 = vec![5, 1, 0, 3, 9];
        v5.extend(b"localhost");
        v5.extend([0x1f, 0x90]);
        let mut v4a = vec![4, 1, 0x1f, 0x90, 0, 0, 0, 1];
        v4a.extend(b"uid\0example.org\0");
        let v4 = [4, 1, 0, 80, 10, 0, 0, 1, 0];
        let cases = [
            (&v5[..], Version::Socks5, domain("localhost", 8080)),
            (&v4a[..], Version::Socks4a, domain("example.org", 8080)),
            (&v4[..], Version::Socks4, SocketAddr::from(([10, 0, 0, 1], 80)).into()),
        ];
        for (bytes, version, to) in cases {
            assert_eq!(parse_connect(bytes), Request::Connect { version, to });
            for cut in 0..bytes.len() {
                assert_eq!(parse_connect(&bytes[..cut]), Request::Incomplete, "{bytes:02x?} cut at {cut}");
            }
        }
    }

    #[test]
    fn other_requests_are_not_connects() {
        // SOCKS5 BIND, SOCKS5 CONNECT with RSV set, an unknown ATYP, SOCKS4 BIND, TLS.
        for b in [
            &[5u8, 2, 0, 1, 127, 0, 0, 1, 0, 80][..],
            &[5, 1, 1, 1, 127, 0, 0, 1, 0, 80],
            &[5, 1, 0, 9],
            &[4, 2, 0, 80, 1, 2, 3, 4, 0],
            &[0x16, 3, 1],
        ] {
            assert_eq!(parse_connect(b), Request::Not, "{b:02x?}");
        }
    }

    #[test]
    fn only_loopback_or_localhost_on_the_fixture_port_is_the_target() {
        let target = SocketAddr::from(([127, 0, 0, 1], 4000));
        assert!(is_target(&domain("localhost", 4000), target));
        assert!(is_target(&SocketAddr::from(([127, 0, 0, 2], 4000)).into(), target));
        assert!(is_target(&"[::1]:4000".parse::<SocketAddr>().unwrap().into(), target));
        assert!(!is_target(&domain("localhost", 4001), target));
        assert!(!is_target(&domain("example.org", 4000), target));
        assert!(!is_target(&SocketAddr::from(([10, 0, 0, 1], 4000)).into(), target));
    }
}
