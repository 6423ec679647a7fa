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

use super::schedule::{plan, MAX_PAUSED_WRITES, SPLIT_PAUSE};
use super::{client::base_vars, Claims, Failure, Sut};
use crate::fixtures::Fixture;
use crate::scenario::template::{encode_socks5_addr, hex_spaced, Value, Vars};
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
    let snapshot = |rec: &SharedRec| rec.lock().unwrap_or_else(|e| e.into_inner()).transcript.clone();
    let fail =
        |step: Option<usize>, message: String, rec: &SharedRec| Failure { step, message, transcript: snapshot(rec) };
    playable(scn).map_err(|m| fail(None, m, &rec))?;
    let fixture = Fixture::start(scn.target).await.map_err(|e| fail(None, format!("fixture: {e}"), &rec))?;
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| fail(None, e.to_string(), &rec))?;
    let proxy = listener.local_addr().map_err(|e| fail(None, e.to_string(), &rec))?;
    let spare = testkit::free_port().map_err(|e| fail(None, format!("no free port for {{port}}: {e}"), &rec))?;
    let line = render_command(command, proxy, fixture.addr, user, pass, spare);
    let argv = shlex::split(&line).ok_or_else(|| fail(None, format!("cannot split command line `{line}`"), &rec))?;
    let Some((prog, args)) = argv.split_first() else {
        return Err(fail(None, "empty client command".into(), &rec));
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
        .map_err(|e| fail(None, format!("cannot start `{prog}`: {e}"), &rec))?;
    // Both pipes are drained from the start, so a chatty client can never block on a full pipe
    // while the runner waits for it to speak.
    let stdout_task = drain(child.stdout.take());
    let stderr_task = drain(child.stderr.take());
    let group = Group(child.id());
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
    let mut vars = base_vars(&fixture, &sut);
    // A scenario with datagrams gets a UDP relay of the runner's own: its address is the BND of
    // the UDP ASSOCIATE reply, where the client must send (RFC 1928 §7).
    let udp = if uses_udp(scn) {
        Some(UdpSocket::bind("127.0.0.1:0").await.map_err(|e| fail(None, format!("UDP relay: {e}"), &rec))?)
    } else {
        None
    };
    // What the runner reports as BND when a scenario's reply pattern captures it: the relay for a
    // UDP scenario, the SOCKS listener otherwise.
    let bnd_at = match &udp {
        Some(u) => u.local_addr().map_err(|e| fail(None, format!("UDP relay: {e}"), &rec))?,
        None => proxy,
    };
    vars.insert(
        "bnd".into(),
        Value {
            bytes: encode_socks5_addr(bnd_at),
            label: Some("{bnd=ipv4 127.0.0.1:PORT}".into()),
            addr: Some(bnd_at),
        },
    );
    // The same address in a SOCKS4 reply's form (port, then IPv4), for `{bnd4:addr4}`: an
    // imported SOCKS4 conversation answers with the runner's own address, as a SOCKS5 one does.
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
    let ctx = Arc::new(Ctx {
        scn: scn.clone(),
        schedule,
        target: fixture.addr,
        vars,
        rec: rec.clone(),
        claimed: AtomicBool::new(false),
        udp,
        udp_client: Mutex::new(None),
        held: Mutex::new(Vec::new()),
    });

    // Accept and play connections until one is graded, the client exits, or it never connects.
    let mut conns: JoinSet<ConnEnd> = JoinSet::new();
    let mut opened = 0usize;
    let mut exited = None;
    let first_deadline = Instant::now() + CLIENT_DEADLINE;
    let name = |n: usize| if n == 1 { "main".to_string() } else { format!("conn{n}") };
    let graded: Result<(), (Option<usize>, String)> = loop {
        tokio::select! {
            a = listener.accept() => match a {
                Ok((s, _)) => {
                    opened += 1;
                    conns.spawn(converse(ctx.clone(), s, name(opened)));
                }
                Err(e) => break Err((None, format!("accept: {e}"))),
            },
            Some(done) = conns.join_next() => match done {
                Ok(ConnEnd::Graded(r)) => break r,
                Ok(ConnEnd::Background) => {}
                Err(e) => break Err((None, format!("connection handler: {e}"))),
            },
            st = child.wait(), if exited.is_none() => {
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

    // Until the client exits, later connections are refused (and recorded), never graded.
    let exit_by = Instant::now() + CLIENT_DEADLINE;
    let code = match exited {
        Some(c) => Ok(c),
        None => loop {
            tokio::select! {
                st = child.wait() => break Ok(st.ok().and_then(|s| s.code())),
                a = listener.accept() => if let Ok((s, _)) = a {
                    opened += 1;
                    tokio::spawn(refuse_late(s, name(opened), rec.clone()));
                },
                _ = tokio::time::sleep_until(exit_by) => {
                    group.kill();
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    break Err(());
                }
            }
        },
    };
    conns.abort_all();
    // The command has exited (or was killed); what it left running goes too, which also closes
    // the pipes the drains wait on.
    group.kill();
    let stdout = stdout_task.await.unwrap_or_default();
    let stderr = stderr_task.await.unwrap_or_default();
    let client = match code {
        Ok(c) => {
            format!("client exit {}; stderr: {}", c.map_or("by a signal".to_string(), |c| c.to_string()), tail(&stderr))
        }
        Err(()) => format!(
            "client still running {} s after the conversation: killed; stderr: {}",
            CLIENT_DEADLINE.as_secs(),
            tail(&stderr)
        ),
    };
    push(&rec, "client", Direction::Event, &[], client.clone());
    if let Err((step, message)) = graded {
        return Err(fail(step, format!("{message} ({client})"), &rec));
    }
    let Ok(code) = code else {
        return Err(fail(None, format!("the client did not exit ({client})"), &rec));
    };
    if let Some(want) = &scn.client {
        if want.success && code != Some(0) {
            return Err(fail(None, format!("expected the client to succeed ({client})"), &rec));
        }
        if !want.success && code == Some(0) {
            return Err(fail(None, format!("the client exited 0, expected an error ({client})"), &rec));
        }
        if let Some(text) = &want.stdout_contains {
            if !String::from_utf8_lossy(&stdout).contains(text.as_str()) {
                return Err(fail(None, format!("the client's output lacks `{text}` ({client})"), &rec));
            }
        }
        push(
            &rec,
            "client",
            Direction::Event,
            &[],
            format!("client exit: {}", if code == Some(0) { "success" } else { "error" }),
        );
    }
    Ok(snapshot(&rec))
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
    /// A complete CONNECT request for this host and port.
    Connect { version: Version, host: String, port: u16 },
}

/// Reads a SOCKS5 or SOCKS4/4a CONNECT request from the start of `b`.
fn parse_connect(b: &[u8]) -> Request {
    match b {
        [] => Request::Incomplete,
        [5] | [5, 1] => Request::Incomplete,
        [5, 1, 0, rest @ ..] => {
            let (host, tail) = match rest {
                [] => return Request::Incomplete,
                [1, r @ ..] if r.len() >= 4 => (std::net::Ipv4Addr::new(r[0], r[1], r[2], r[3]).to_string(), &r[4..]),
                [4, r @ ..] if r.len() >= 16 => {
                    let mut o = [0u8; 16];
                    o.copy_from_slice(&r[..16]);
                    (std::net::Ipv6Addr::from(o).to_string(), &r[16..])
                }
                [3, n, r @ ..] if r.len() >= *n as usize => {
                    (String::from_utf8_lossy(&r[..*n as usize]).into_owned(), &r[*n as usize..])
                }
                [1 | 3 | 4, ..] => return Request::Incomplete,
                _ => return Request::Not,
            };
            match tail {
                [hi, lo, ..] => {
                    Request::Connect { version: Version::Socks5, host, port: u16::from_be_bytes([*hi, *lo]) }
                }
                _ => Request::Incomplete,
            }
        }
        [4] => Request::Incomplete,
        [4, 1, rest @ ..] => {
            if rest.len() < 6 {
                return Request::Incomplete;
            }
            let port = u16::from_be_bytes([rest[0], rest[1]]);
            let ip = std::net::Ipv4Addr::new(rest[2], rest[3], rest[4], rest[5]);
            let Some(uid_end) = rest[6..].iter().position(|&c| c == 0) else {
                return Request::Incomplete;
            };
            let o = ip.octets();
            if o[0] == 0 && o[1] == 0 && o[2] == 0 && o[3] != 0 {
                // SOCKS4a: the name follows the USERID.
                let name = &rest[6 + uid_end + 1..];
                let Some(end) = name.iter().position(|&c| c == 0) else {
                    return Request::Incomplete;
                };
                let host = String::from_utf8_lossy(&name[..end]).into_owned();
                return Request::Connect { version: Version::Socks4a, host, port };
            }
            Request::Connect { version: Version::Socks4, host: ip.to_string(), port }
        }
        _ => Request::Not,
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

/// Whether a request for `host:port` is one for the target fixture at `target`.
fn is_target(host: &str, port: u16, target: SocketAddr) -> bool {
    port == target.port() && (host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()))
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
async fn converse(ctx: Arc<Ctx>, mut s: TcpStream, on: String) -> ConnEnd {
    let _ = s.set_nodelay(true);
    let rec = &ctx.rec;
    let vars = &ctx.vars;
    let mut buf: Vec<u8> = Vec::new();
    for (i, step) in ctx.scn.steps.iter().enumerate() {
        let until = Instant::now() + STEP_WAIT;
        let fail = |m: String| ConnEnd::Graded(Err((Some(i), m)));
        match &step.kind {
            StepKind::Send(t) => {
                // The client must send exactly this.
                let m = loop {
                    match t.match_prefix(&buf, vars) {
                        Ok(Some(m)) => break m,
                        Ok(None) => match read_more(&mut s, &mut buf, until).await {
                            Ok(()) => {}
                            Err(why) => return fail(format!("{why} [{}]", hex_spaced(&buf, 64))),
                        },
                        Err(mm) => {
                            // A CONNECT for another destination is a background connection (a
                            // browser's, an update check): refuse it and keep waiting for the one
                            // the scenario is about. Read on until the request is complete.
                            loop {
                                match parse_connect(&buf) {
                                    Request::Connect { version, host, port } if !is_target(&host, port, ctx.target) => {
                                        let r = refusal_for(version);
                                        let _ = s.write_all(r).await;
                                        push(
                                            rec,
                                            &on,
                                            Direction::Event,
                                            r,
                                            format!(
                                                "a CONNECT to {host}:{port}, not the target: refused with [{}] and not graded",
                                                hex_spaced(r, 16)
                                            ),
                                        );
                                        return ConnEnd::Background;
                                    }
                                    Request::Incomplete if read_more(&mut s, &mut buf, until).await.is_ok() => {}
                                    _ => break,
                                }
                            }
                            return fail(format!(
                                "the client sent [{}]: at offset {}, field {}: {}",
                                hex_spaced(&buf, 64),
                                mm.offset,
                                mm.expected,
                                mm.why
                            ));
                        }
                    }
                };
                let got: Vec<u8> = buf.drain(..m.consumed).collect();
                push(rec, &on, Direction::ClientToServer, &got, format!("C→S {}", m.shown));
                if is_request(&got) && ctx.claimed.swap(true, Ordering::SeqCst) {
                    // Another connection's request is already being graded (a client that opens
                    // its next BIND while the first is still open): refuse this one.
                    let r = refusal_for(if got[0] == 5 { Version::Socks5 } else { Version::Socks4 });
                    let _ = s.write_all(r).await;
                    push(
                        rec,
                        &on,
                        Direction::Event,
                        r,
                        format!(
                            "a request while another is graded: refused with [{}] and not graded",
                            hex_spaced(r, 16)
                        ),
                    );
                    return ConnEnd::Background;
                }
            }
            StepKind::Expect(t) | StepKind::ExpectOptional { pattern: t, .. } => {
                let fields = match t.render_pattern(vars) {
                    Ok(f) => f,
                    Err(e) => return fail(e.to_string()),
                };
                let writes = plan(&fields, ctx.schedule);
                for (k, w) in writes.iter().enumerate() {
                    if s.write_all(w).await.is_err() {
                        break;
                    }
                    if ctx.schedule != Schedule::AsWritten && k + 1 < writes.len() && k < MAX_PAUSED_WRITES {
                        tokio::time::sleep(SPLIT_PAUSE).await;
                    }
                }
                let octets: Vec<u8> = writes.concat();
                let shown = fields.iter().map(|f| f.shown.as_str()).collect::<Vec<_>>().join(" ");
                push(rec, &on, Direction::ServerToClient, &octets, format!("S→C {shown}"));
            }
            StepKind::ExpectRefusal { .. } => {
                // The runner refuses in the canonical form for the scenario's version, then closes.
                let reply: &[u8] = match ctx.scn.needs.version {
                    Version::Socks5 => &[0x05, 0x01, 0x00, 0x01, 0, 0, 0, 0, 0, 0],
                    Version::Socks4 | Version::Socks4a => &[0x00, 0x5b, 0, 0, 0, 0, 0, 0],
                };
                let _ = s.write_all(reply).await;
                push(rec, &on, Direction::ServerToClient, reply, format!("S→C {} <close>", hex_spaced(reply, 16)));
                break;
            }
            StepKind::ExpectClose => {
                push(rec, &on, Direction::Event, &[], "S→C <close>".into());
                break;
            }
            StepKind::ExpectHalfClose => {
                let _ = s.shutdown().await;
                push(rec, &on, Direction::Event, &[], "S→C <half-close>".into());
            }
            StepKind::Sleep(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
            StepKind::ExpectSilence(ms) => {
                // The runner says nothing for `ms`; a client that gives up (its own timeout)
                // closes, which ends the silence early. What it sends meanwhile is kept for the
                // next step. As the last step, the silence must end that way.
                let end = Instant::now() + Duration::from_millis(*ms);
                let started = Instant::now();
                let mut tmp = [0u8; 4096];
                loop {
                    match tokio::time::timeout_at(end, s.read(&mut tmp)).await {
                        Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&tmp[..n]),
                        Ok(_) => {
                            let waited = started.elapsed().as_millis();
                            push(rec, &on, Direction::Event, &[], format!("C→S <close> after {waited} ms of silence"));
                            return ConnEnd::Graded(Ok(()));
                        }
                        Err(_) => break,
                    }
                }
                push(rec, &on, Direction::Event, &[], format!("S→C <silence {ms} ms>"));
                if i + 1 == ctx.scn.steps.len() {
                    // A scenario that ends in silence is about a server that never answers: the
                    // client must have given up by its own deadline by now, not wait forever.
                    return fail(format!(
                        "the client was still waiting after {ms} ms of silence: it must give up by its own deadline"
                    ));
                }
            }
            StepKind::HalfClose | StepKind::Close => {
                let mut tmp = [0u8; 4096];
                match tokio::time::timeout_at(until, s.read(&mut tmp)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => push(rec, &on, Direction::Event, &[], "C→S <close>".into()),
                    Ok(Ok(n)) => {
                        return fail(format!("expected the client to close, it sent [{}]", hex_spaced(&tmp[..n], 64)))
                    }
                    Err(_) => return fail(format!("the client did not close within {} s", STEP_WAIT.as_secs())),
                }
            }
            StepKind::Tunnel => {
                push(rec, &on, Direction::Event, &[], "--- tunnel ---".into());
                let mut up = match TcpStream::connect(ctx.target).await {
                    Ok(u) => u,
                    Err(e) => return fail(format!("target: {e}")),
                };
                if !buf.is_empty() {
                    let _ = up.write_all(&buf).await;
                    buf.clear();
                }
                let _ = tokio::time::timeout(CLIENT_DEADLINE, tokio::io::copy_bidirectional(&mut s, &mut up)).await;
                break;
            }
            StepKind::UdpSend { data, .. } => {
                // The client must send exactly this datagram to the relay (BND).
                let Some(relay) = &ctx.udp else { return fail("no UDP relay".into()) };
                let mut dgram = vec![0u8; 65_536];
                let (n, from) = match tokio::time::timeout_at(until, relay.recv_from(&mut dgram)).await {
                    Ok(Ok(got)) => got,
                    Ok(Err(e)) => return fail(format!("UDP relay: {e}")),
                    Err(_) => {
                        return fail(format!(
                            "the client sent no datagram to the relay (BND) within {} s",
                            STEP_WAIT.as_secs()
                        ))
                    }
                };
                let dgram = &dgram[..n];
                *ctx.udp_client.lock().unwrap_or_else(|e| e.into_inner()) = Some(from);
                match data.match_prefix(dgram, vars) {
                    Ok(Some(m)) if m.consumed == n => {
                        push(rec, &on, Direction::ClientToServer, dgram, format!("C→S udp from {from} {}", m.shown));
                    }
                    Ok(Some(m)) => {
                        return fail(format!(
                            "the client's datagram [{}] has {} octets after what the step expects",
                            hex_spaced(dgram, 64),
                            n - m.consumed
                        ))
                    }
                    Ok(None) => return fail(format!("the client's datagram [{}] is short", hex_spaced(dgram, 64))),
                    Err(mm) => {
                        return fail(format!(
                            "the client sent the datagram [{}]: at offset {}, field {}: {}",
                            hex_spaced(dgram, 64),
                            mm.offset,
                            mm.expected,
                            mm.why
                        ))
                    }
                }
            }
            StepKind::UdpExpect(t) => {
                // The relay sends this datagram to where the client's datagrams came from.
                let Some(relay) = &ctx.udp else { return fail("no UDP relay".into()) };
                let Some(to) = *ctx.udp_client.lock().unwrap_or_else(|e| e.into_inner()) else {
                    return fail("the client has sent no datagram yet: the relay has nowhere to send".into());
                };
                let fields = match t.render_pattern(vars) {
                    Ok(f) => f,
                    Err(e) => return fail(e.to_string()),
                };
                let octets: Vec<u8> = fields.iter().flat_map(|f| f.bytes.iter().copied()).collect();
                if let Err(e) = relay.send_to(&octets, to).await {
                    return fail(format!("UDP relay: send to {to}: {e}"));
                }
                let shown = fields.iter().map(|f| f.shown.as_str()).collect::<Vec<_>>().join(" ");
                push(rec, &on, Direction::ServerToClient, &octets, format!("S→C udp to {to} {shown}"));
            }
            StepKind::UdpExpectNone(ms) => {
                // The relay stays quiet for `ms`.
                tokio::time::sleep(Duration::from_millis(*ms)).await;
                push(rec, &on, Direction::Event, &[], format!("S→C <no datagram {ms} ms>"));
            }
            other => return fail(format!("a `{}` step cannot be played in the server role", step_name(other))),
        }
    }
    if ctx.udp.is_some() {
        ctx.held.lock().unwrap_or_else(|e| e.into_inner()).push(s);
    }
    ConnEnd::Graded(Ok(()))
}

/// Reads what the client sends next into `buf`; an error says why nothing came.
async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>, until: Instant) -> Result<(), &'static str> {
    let mut tmp = [0u8; 4096];
    match tokio::time::timeout_at(until, s.read(&mut tmp)).await {
        Ok(Ok(n)) if n > 0 => {
            buf.extend_from_slice(&tmp[..n]);
            Ok(())
        }
        Ok(_) => Err("the client closed after"),
        Err(_) => Err("the client stopped sending after"),
    }
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
