//! The server-role player: the runner is the SOCKS server, a client command line is under test.
//!
//! The same scenario file is read from the other side: `send` (C→S) becomes what the client must
//! send, `expect` (S→C) becomes what the runner writes (cut by the delivery schedule, which now
//! tests the client's parser), `expect_close` means the runner closes, and `tunnel` starts relaying
//! to the target fixture so the client's own traffic (curl's HTTP request) reaches it.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::schedule::{plan, MAX_PAUSED_WRITES, SPLIT_PAUSE};
use super::{client::base_vars, Claims, Failure, Sut};
use crate::fixtures::Fixture;
use crate::scenario::template::{encode_socks5_addr, hex_spaced, Value};
use crate::scenario::{Command, Method, Role, Scenario, Schedule, StepKind, Version};
use crate::transcript::{Direction, Recorder, Transcript};

/// How long the client under test may take to connect, and to finish after the conversation.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(10);

/// Whether a scenario can be played in the server role.
pub fn playable(scn: &Scenario) -> Result<(), String> {
    if !scn.roles.contains(&Role::Server) {
        return Err("the scenario does not declare the server role".into());
    }
    for (i, s) in scn.steps.iter().enumerate() {
        match s.kind {
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
            | StepKind::Tunnel => {}
            _ => return Err(format!("steps[{i}] cannot be played in the server role")),
        }
        if s.conn != "main" {
            return Err(format!("steps[{i}] uses a second connection, which the server role cannot play"));
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
];

/// Substitutes the [`PLACEHOLDERS`] in a client command line.
pub fn render_command(cmd: &str, proxy: SocketAddr, target: SocketAddr, user: &str, pass: &str) -> String {
    cmd.replace("{proxy.host}", &proxy.ip().to_string())
        .replace("{proxy.port}", &proxy.port().to_string())
        .replace("{proxy}", &proxy.to_string())
        .replace("{target.host}", "localhost")
        .replace("{target.port}", &target.port().to_string())
        .replace("{target}", &target.to_string())
        .replace("{user}", user)
        .replace("{pass}", pass)
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
pub async fn play(
    scn: &Scenario,
    schedule: Schedule,
    command: &str,
    user: &str,
    pass: &str,
) -> Result<Transcript, Failure> {
    let fail = |step: Option<usize>, message: String, rec: &Recorder| Failure {
        step,
        message,
        transcript: rec.transcript.clone(),
    };
    let mut rec = Recorder::default();
    playable(scn).map_err(|m| fail(None, m, &rec))?;
    let fixture = Fixture::start(scn.target).await.map_err(|e| fail(None, format!("fixture: {e}"), &rec))?;
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| fail(None, e.to_string(), &rec))?;
    let proxy = listener.local_addr().map_err(|e| fail(None, e.to_string(), &rec))?;
    let line = render_command(command, proxy, fixture.addr, user, pass);
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
        .spawn()
        .map_err(|e| fail(None, format!("cannot start `{prog}`: {e}"), &rec))?;
    // Both pipes are drained from the start, so a chatty client can never block on a full pipe
    // while the runner waits for it to speak.
    let stdout_task = drain(child.stdout.take());
    let stderr_task = drain(child.stderr.take());
    let (mut s, _) = match tokio::time::timeout(CLIENT_DEADLINE, listener.accept()).await {
        Ok(Ok(c)) => c,
        outcome => {
            let _ = child.start_kill();
            let status = child.wait().await.ok().and_then(|s| s.code());
            let err = stderr_task.await.unwrap_or_default();
            let why = match outcome {
                Ok(Err(e)) => e.to_string(),
                _ => "the client never connected".into(),
            };
            return Err(fail(None, format!("{why} (exit {status:?}; stderr: {})", tail(&err)), &rec));
        }
    };
    let _ = s.set_nodelay(true);
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
    };
    let mut vars = base_vars(&fixture, &sut);
    // What the runner reports as BND when a scenario's reply pattern captures it.
    let bnd = encode_socks5_addr(proxy);
    vars.insert("bnd".into(), Value { bytes: bnd, label: Some("{bnd=ipv4 127.0.0.1:PORT}".into()), addr: Some(proxy) });
    let mut buf: Vec<u8> = Vec::new();
    let mut tunneled = false;
    for (i, step) in scn.steps.iter().enumerate() {
        let until = Instant::now() + Duration::from_secs(3);
        match &step.kind {
            StepKind::Send(t) => {
                // The client must send exactly this.
                let m = loop {
                    match t.match_prefix(&buf, &vars) {
                        Ok(Some(m)) => break m,
                        Ok(None) => {
                            let mut tmp = [0u8; 4096];
                            match tokio::time::timeout_at(until, s.read(&mut tmp)).await {
                                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&tmp[..n]),
                                Ok(_) => {
                                    return Err(fail(
                                        Some(i),
                                        format!("the client closed after [{}]", hex_spaced(&buf, 64)),
                                        &rec,
                                    ))
                                }
                                Err(_) => {
                                    return Err(fail(
                                        Some(i),
                                        format!("the client sent only [{}]", hex_spaced(&buf, 64)),
                                        &rec,
                                    ))
                                }
                            }
                        }
                        Err(mm) => {
                            return Err(fail(
                                Some(i),
                                format!(
                                    "the client sent [{}]: at offset {}, field {}: {}",
                                    hex_spaced(&buf, 64),
                                    mm.offset,
                                    mm.expected,
                                    mm.why
                                ),
                                &rec,
                            ))
                        }
                    }
                };
                let got: Vec<u8> = buf.drain(..m.consumed).collect();
                rec.push("main", Direction::ClientToServer, &got, format!("C→S {}", m.shown));
            }
            StepKind::Expect(t) | StepKind::ExpectOptional { pattern: t, .. } => {
                let fields = t.render_pattern(&vars).map_err(|e| fail(Some(i), e.to_string(), &rec))?;
                let writes = plan(&fields, schedule);
                for (k, w) in writes.iter().enumerate() {
                    if s.write_all(w).await.is_err() {
                        break;
                    }
                    if schedule != Schedule::AsWritten && k + 1 < writes.len() && k < MAX_PAUSED_WRITES {
                        tokio::time::sleep(SPLIT_PAUSE).await;
                    }
                }
                let octets: Vec<u8> = writes.concat();
                let shown = fields.iter().map(|f| f.shown.as_str()).collect::<Vec<_>>().join(" ");
                rec.push("main", Direction::ServerToClient, &octets, format!("S→C {shown}"));
            }
            StepKind::ExpectRefusal { .. } => {
                // The runner refuses in the canonical form for the scenario's version, then closes.
                let reply: &[u8] = match scn.needs.version {
                    Version::Socks5 => &[0x05, 0x01, 0x00, 0x01, 0, 0, 0, 0, 0, 0],
                    Version::Socks4 | Version::Socks4a => &[0x00, 0x5b, 0, 0, 0, 0, 0, 0],
                };
                let _ = s.write_all(reply).await;
                rec.push("main", Direction::ServerToClient, reply, format!("S→C {} <close>", hex_spaced(reply, 16)));
                break;
            }
            StepKind::ExpectClose => {
                rec.push("main", Direction::Event, &[], "S→C <close>".into());
                break;
            }
            StepKind::ExpectHalfClose => {
                let _ = s.shutdown().await;
                rec.push("main", Direction::Event, &[], "S→C <half-close>".into());
            }
            StepKind::ExpectSilence(ms) | StepKind::Sleep(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
            StepKind::HalfClose | StepKind::Close => {
                let mut tmp = [0u8; 4096];
                match tokio::time::timeout_at(until, s.read(&mut tmp)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => rec.push("main", Direction::Event, &[], "C→S <close>".into()),
                    Ok(Ok(n)) => {
                        return Err(fail(
                            Some(i),
                            format!("expected the client to close, it sent [{}]", hex_spaced(&tmp[..n], 64)),
                            &rec,
                        ))
                    }
                    Err(_) => return Err(fail(Some(i), "the client did not close".into(), &rec)),
                }
            }
            StepKind::Tunnel => {
                rec.push("main", Direction::Event, &[], "--- tunnel ---".into());
                let mut up =
                    TcpStream::connect(fixture.addr).await.map_err(|e| fail(Some(i), format!("target: {e}"), &rec))?;
                if !buf.is_empty() {
                    let _ = up.write_all(&buf).await;
                    buf.clear();
                }
                let _ = tokio::time::timeout(CLIENT_DEADLINE, tokio::io::copy_bidirectional(&mut s, &mut up)).await;
                tunneled = true;
                break;
            }
            _ => return Err(fail(Some(i), "step not playable in the server role".into(), &rec)),
        }
    }
    if !tunneled {
        drop(s);
    }
    let status = match tokio::time::timeout(CLIENT_DEADLINE, child.wait()).await {
        Ok(s) => s,
        Err(_) => {
            let _ = child.start_kill();
            return Err(fail(None, "the client did not exit".into(), &rec));
        }
    };
    let stdout = stdout_task.await.unwrap_or_default();
    let stderr = stderr_task.await.unwrap_or_default();
    let code = status.ok().and_then(|s| s.code());
    rec.push("client", Direction::Event, &[], format!("client exit {code:?}; stderr: {}", tail(&stderr)));
    if let Some(want) = &scn.client {
        if want.success && code != Some(0) {
            return Err(fail(
                None,
                format!("the client exited with {code:?}, expected success; stderr: {}", tail(&stderr)),
                &rec,
            ));
        }
        if !want.success && code == Some(0) {
            return Err(fail(None, "the client exited 0, expected an error".into(), &rec));
        }
        if let Some(text) = &want.stdout_contains {
            if !String::from_utf8_lossy(&stdout).contains(text.as_str()) {
                return Err(fail(None, format!("the client's output lacks `{text}`"), &rec));
            }
        }
        rec.push(
            "client",
            Direction::Event,
            &[],
            format!("client exit: {}", if code == Some(0) { "success" } else { "error" }),
        );
    }
    Ok(rec.transcript)
}
