//! The client-role player: the runner is the SOCKS client, a server is under test.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

use super::schedule::{plan, MAX_PAUSED_WRITES, SPLIT_PAUSE};
use super::{Failure, Sut};
use crate::fixtures::Fixture;
use crate::scenario::template::{hex_spaced, Field, Template, Value, Vars};
use crate::scenario::{Deadline, NamedDeadline, Scenario, Schedule, StepKind, TargetCheck};
use crate::transcript::{Direction, Recorder, Transcript};

/// Default wait for a reply.
pub const EXPECT_DEADLINE: Duration = Duration::from_millis(2000);
/// Default wait for a close: D-13 says close within 1 s after a failure reply; allow slack.
pub const CLOSE_DEADLINE: Duration = Duration::from_millis(1500);
/// Least margin added to a server's declared timeout (half the timeout when that is more): the
/// peer's timer runs on a loaded machine too, and coarse timers (Dante ticks in seconds) fire late.
pub const TIMER_MARGIN: Duration = Duration::from_millis(2000);
/// RFC 1928 §6: after a failure reply the server closes "no more than 10 seconds after
/// detecting the condition that caused a failure".
pub const FAILURE_CLOSE: Duration = Duration::from_secs(10);

/// Connects to the server under test: TCP, then its transport's handshake (none for TCP); kcp
/// opens a stream of its own UDP session instead.
async fn connect_sut(sut: &Sut) -> std::io::Result<socksref::tls::Stream> {
    if let Some(s) = sut.transport.reuse().await {
        return Ok(s);
    }
    // kcp dials its own UDP session.
    if let Some(s) = sut.transport.open_own(&sut.addr.into()).await {
        return s;
    }
    let tcp = TcpStream::connect(sut.addr).await?;
    let _ = tcp.set_nodelay(true);
    sut.transport.establish(socksref::tls::Stream::Tcp(tcp), &sut.addr.into()).await
}

struct Conn {
    /// The connection, inside the server's transport when it has one (docs/transports.md).
    stream: socksref::tls::Stream,
    buf: Vec<u8>,
    eof: bool,
    reset: bool,
}

enum Read {
    Data,
    Eof,
    Timeout,
}

impl Conn {
    async fn read_more(&mut self, until: Instant) -> Read {
        if self.eof {
            return Read::Eof;
        }
        let mut tmp = [0u8; 16 * 1024];
        match tokio::time::timeout_at(until, self.stream.read(&mut tmp)).await {
            Err(_) => Read::Timeout,
            Ok(Ok(0)) => {
                self.eof = true;
                Read::Eof
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Read::Data
            }
            Ok(Err(_)) => {
                self.eof = true;
                self.reset = true;
                Read::Eof
            }
        }
    }

    fn ended(&self) -> &'static str {
        if self.reset {
            "was reset"
        } else {
            "was closed"
        }
    }
}

/// Plays `scn` as the client against `sut` under `schedule`; returns the transcript.
pub async fn play(scn: &Scenario, schedule: Schedule, sut: &Sut) -> Result<Transcript, Failure> {
    let fixture = Fixture::start(scn.target).await.map_err(|e| Failure {
        step: None,
        message: format!("cannot start the {:?} fixture: {e}", scn.target),
        transcript: Transcript::default(),
    })?;
    let mut p = Player {
        scn,
        schedule,
        sut,
        vars: base_vars(&fixture, sut),
        fixture,
        conns: HashMap::new(),
        closed: HashSet::new(),
        udp: HashMap::new(),
        rec: Recorder::default(),
        prewritten: HashSet::new(),
    };
    for i in 0..scn.steps.len() {
        if let Err(message) = p.step(i).await {
            return Err(Failure { step: Some(i), message, transcript: p.rec.transcript });
        }
    }
    Ok(p.rec.transcript)
}

/// Variables every scenario can use, from the fixture and the server under test.
pub fn base_vars(f: &Fixture, sut: &Sut) -> Vars {
    let mut v = Vars::new();
    let mut put = |k: &str, bytes: Vec<u8>, label: Option<&str>, addr: Option<SocketAddr>| {
        v.insert(k.to_string(), Value { bytes, label: label.map(String::from), addr });
    };
    let ip4 = match f.addr.ip() {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    put("target.addr", ip4, None, Some(f.addr));
    put("target.addr6", Ipv6Addr::LOCALHOST.octets().to_vec(), None, f.addr6);
    put("target.port", f.addr.port().to_be_bytes().to_vec(), Some("{target.port}"), None);
    put("target.port.dec", f.addr.port().to_string().into_bytes(), Some("{target.port.dec}"), None);
    put("target.name", b"localhost".to_vec(), None, None);
    put("target.name.len", vec![9], None, None);
    let pip = match sut.addr.ip() {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    put("proxy.addr", pip, None, Some(sut.addr));
    put("proxy.port", sut.addr.port().to_be_bytes().to_vec(), Some("{proxy.port}"), None);
    put("user", sut.user.clone(), None, None);
    put("user.len", vec![sut.user.len() as u8], None, None);
    put("pass", sut.pass.clone(), None, None);
    put("pass.len", vec![sut.pass.len() as u8], None, None);
    v
}

struct Player<'a> {
    scn: &'a Scenario,
    schedule: Schedule,
    sut: &'a Sut,
    fixture: Fixture,
    vars: Vars,
    conns: HashMap<String, Conn>,
    closed: HashSet<String>,
    udp: HashMap<String, UdpSocket>,
    rec: Recorder,
    prewritten: HashSet<usize>,
}

impl Player<'_> {
    fn deadline(&self, i: usize, default: Duration) -> Duration {
        let c = &self.sut.claims;
        let declared = |ms: Option<u64>| {
            // Scenarios that wait for a timeout are not applicable unless it is declared, so the
            // fallback is only reached by a hand-written scenario that forgot its `needs`.
            let d = Duration::from_millis(ms.unwrap_or(10_000));
            d + (d / 2).max(TIMER_MARGIN)
        };
        match self.scn.steps[i].deadline {
            Some(Deadline::Ms(ms)) => Duration::from_millis(ms),
            Some(Deadline::Named(NamedDeadline::Handshake)) => declared(c.handshake_timeout_ms),
            Some(Deadline::Named(NamedDeadline::Connect)) => declared(c.connect_timeout_ms),
            Some(Deadline::Named(NamedDeadline::Bind)) => declared(c.bind_timeout_ms),
            Some(Deadline::Named(NamedDeadline::UdpIdle)) => declared(c.udp_idle_timeout_ms),
            Some(Deadline::Named(NamedDeadline::FailureClose)) => FAILURE_CLOSE + TIMER_MARGIN,
            None => default,
        }
    }

    fn say(&mut self, conn: &str, dir: Direction, octets: &[u8], line: String) {
        let line = if conn == "main" { line } else { format!("[{conn}] {line}") };
        self.rec.push(conn, dir, octets, line);
    }

    fn event(&mut self, on: &str, line: String) {
        self.rec.push(on, Direction::Event, &[], line);
    }

    /// Resolves an address name: `proxy`, `target`, or a captured address. An unspecified IP
    /// means "the proxy's own address" (D-02, client side).
    fn resolve(&self, to: &str) -> Result<SocketAddr, String> {
        let a = match to {
            "proxy" => self.sut.addr,
            "target" => self.fixture.addr,
            name => self
                .vars
                .get(name)
                .and_then(|v| v.addr)
                .ok_or_else(|| format!("`{name}` is not an IP address capture"))?,
        };
        if a.ip().is_unspecified() {
            return Ok(SocketAddr::new(self.sut.addr.ip(), a.port()));
        }
        Ok(a)
    }

    async fn udp_socket(&mut self, name: &str, fresh: bool) -> Result<&UdpSocket, String> {
        if fresh || !self.udp.contains_key(name) {
            // A socket named `foreign…` sends from another loopback address (127.0.0.2), so a
            // scenario can show a datagram from a source IP other than the client's.
            let ip = if name.starts_with("foreign") { "127.0.0.2:0" } else { "127.0.0.1:0" };
            let s = UdpSocket::bind(ip).await.map_err(|e| format!("udp bind: {e}"))?;
            let a = s.local_addr().map_err(|e| e.to_string())?;
            self.vars.insert(
                format!("udp.{name}.port"),
                Value {
                    bytes: a.port().to_be_bytes().to_vec(),
                    label: Some(format!("{{udp.{name}.port}}")),
                    addr: None,
                },
            );
            let ip4 = match a.ip() {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            self.vars.insert(format!("udp.{name}.addr"), Value { bytes: ip4, label: None, addr: Some(a) });
            self.udp.insert(name.to_string(), s);
        }
        Ok(&self.udp[name])
    }

    /// Creates UDP sockets a template refers to (`{udp.NAME.port}`) before it is rendered.
    async fn prepare(&mut self, t: &Template) -> Result<(), String> {
        for r in t.references() {
            if let Some(name) = r.strip_prefix("udp.").and_then(|r| r.rsplit_once('.')).map(|(n, _)| n.to_string()) {
                self.udp_socket(&name, false).await?;
            }
        }
        Ok(())
    }

    async fn conn(&mut self, name: &str) -> Result<&mut Conn, String> {
        if !self.conns.contains_key(name) {
            if self.closed.contains(name) {
                return Err(format!("connection `{name}` was closed by an earlier step"));
            }
            let stream = connect_sut(self.sut)
                .await
                .map_err(|e| format!("cannot connect to the server under test at {}: {e}", self.sut.addr))?;
            self.conns.insert(name.to_string(), Conn { stream, buf: Vec::new(), eof: false, reset: false });
        }
        Ok(self.conns.get_mut(name).expect("inserted above"))
    }

    async fn step(&mut self, i: usize) -> Result<(), String> {
        let step = &self.scn.steps[i];
        let cname = step.conn.clone();
        match &step.kind {
            StepKind::Send(t) => self.send(i, &cname, t).await?,
            StepKind::Expect(pat) => self.expect(i, &cname, pat).await?,
            StepKind::ExpectOptional { pattern, silence_ms } => {
                self.expect_optional(i, &cname, pattern, *silence_ms).await?
            }
            StepKind::ExpectRefusal { silence_ms } => {
                let wait = match silence_ms {
                    Some(ms) => self.deadline(i, Duration::from_millis(*ms)),
                    None => self.deadline(i, FAILURE_CLOSE + TIMER_MARGIN),
                };
                let line = self.refusal(&cname, wait, silence_ms.is_some()).await?;
                self.event(&cname, line);
            }
            StepKind::ExpectClose => self.expect_close(i, &cname, false).await?,
            StepKind::ExpectHalfClose => self.expect_close(i, &cname, true).await?,
            StepKind::ExpectSilence(ms) => self.expect_silence(i, &cname, *ms, step.deadline.as_ref()).await?,
            StepKind::HalfClose => {
                let conn = self.conn(&cname).await?;
                let _ = conn.stream.shutdown().await;
                self.event(&cname, "C→S <half-close>".into());
            }
            StepKind::Close => {
                self.conns.remove(&cname);
                self.closed.insert(cname.clone());
                self.event(&cname, "C→S <close>".into());
            }
            StepKind::Open { to } => self.open(i, &cname, to).await?,
            StepKind::Sleep(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
            StepKind::UdpSend { data, to } => self.udp_send(&step.socket, data, to).await?,
            StepKind::UdpExpect(pat) => self.udp_expect(i, &step.socket, pat).await?,
            StepKind::UdpExpectNone(ms) => self.udp_expect_none(&step.socket, *ms).await?,
            StepKind::TargetReceived(check) => {
                let until = Instant::now() + self.deadline(i, Duration::from_millis(1000));
                self.target_check(check, until).await?;
            }
            StepKind::Tunnel => self.event("main", "--- tunnel ---".into()),
        }
        Ok(())
    }

    /// `send`: renders the template and writes it under the run's delivery schedule.
    async fn send(&mut self, i: usize, cname: &str, t: &Template) -> Result<(), String> {
        self.prepare(t).await?;
        let fields = t.render(&self.vars).map_err(|e| e.to_string())?;
        let octets: Vec<u8> = fields.iter().flat_map(|f| f.bytes.iter().copied()).collect();
        self.say(cname, Direction::ClientToServer, &octets, format!("C→S {}", show(&fields)));
        if self.prewritten.contains(&i) {
            return Ok(());
        }
        let (writes, paused) = if self.schedule == Schedule::Coalesced {
            (vec![self.coalesce(i, fields).await?], false)
        } else {
            (
                plan(&fields, self.schedule),
                self.schedule != Schedule::AsWritten || fields.iter().any(|f| f.boundary_after),
            )
        };
        let conn = self.conn(cname).await?;
        for (k, w) in writes.iter().enumerate() {
            // A write can fail once the server has closed; the steps that follow say whether
            // that close was the expected behaviour, so the error is not a verdict by itself.
            if conn.stream.write_all(w).await.is_err() {
                break;
            }
            if paused && k + 1 < writes.len() && k < MAX_PAUSED_WRITES {
                tokio::time::sleep(SPLIT_PAUSE).await;
            }
        }
        // Over TLS the last writes may sit in rustls until flushed (see the
        // one-byte test in harness/tests/catalogue_transports.rs).
        let _ = conn.stream.flush().await;
        Ok(())
    }

    /// `expect`: reads until the pattern matches (its captures become variables), the connection ends or the deadline passes.
    async fn expect(&mut self, i: usize, cname: &str, pat: &Template) -> Result<(), String> {
        let until = Instant::now() + self.deadline(i, EXPECT_DEADLINE);
        let vars = self.vars.clone();
        let conn = self.conn(cname).await?;
        let m = loop {
            match pat.match_prefix(&conn.buf, &vars) {
                Ok(Some(m)) => break m,
                Ok(None) => match conn.read_more(until).await {
                    Read::Data => {}
                    Read::Eof => {
                        return Err(format!(
                            "connection {} after [{}]; expected {}",
                            conn.ended(),
                            hex_spaced(&conn.buf, 64),
                            show_pattern(pat)
                        ))
                    }
                    Read::Timeout => {
                        return Err(format!(
                            "no complete reply in time: received [{}]; expected {}",
                            hex_spaced(&conn.buf, 64),
                            show_pattern(pat)
                        ))
                    }
                },
                Err(mm) => return Err(mismatch("received", &conn.buf, &mm)),
            }
        };
        let got: Vec<u8> = conn.buf.drain(..m.consumed).collect();
        for (k, v) in m.captures {
            self.vars.insert(k, v);
        }
        self.say(cname, Direction::ServerToClient, &got, format!("S→C {}", m.shown));
        Ok(())
    }

    /// `expect_optional`: the pattern, or a close with nothing, or (when allowed) silence.
    async fn expect_optional(
        &mut self,
        i: usize,
        cname: &str,
        pat: &Template,
        silence_ms: Option<u64>,
    ) -> Result<(), String> {
        // Either the pattern arrives, or the connection ends with nothing (the following
        // expect_close then confirms it), or silence where that is allowed; anything else
        // is a failure.
        let wait = match silence_ms {
            Some(ms) => Duration::from_millis(ms),
            None => self.deadline(i, CLOSE_DEADLINE),
        };
        let silence_ok = silence_ms.is_some();
        let until = Instant::now() + wait;
        let vars = self.vars.clone();
        let conn = self.conn(cname).await?;
        loop {
            if conn.buf.is_empty() && conn.eof {
                return Ok(());
            }
            match pat.match_prefix(&conn.buf, &vars) {
                Ok(Some(m)) => {
                    let got: Vec<u8> = conn.buf.drain(..m.consumed).collect();
                    for (k, v) in m.captures {
                        self.vars.insert(k, v);
                    }
                    self.say(cname, Direction::ServerToClient, &got, format!("S→C {}", m.shown));
                    return Ok(());
                }
                Ok(None) => match conn.read_more(until).await {
                    Read::Data => {}
                    Read::Eof if conn.buf.is_empty() => return Ok(()),
                    Read::Eof => {
                        return Err(format!(
                            "connection {} after a partial reply [{}]",
                            conn.ended(),
                            hex_spaced(&conn.buf, 64)
                        ))
                    }
                    Read::Timeout if silence_ok && conn.buf.is_empty() => {
                        self.event(cname, format!("S→C <no reply {} ms>", wait.as_millis()));
                        return Ok(());
                    }
                    Read::Timeout => return Err(format!("neither {} nor a close in time", show_pattern(pat))),
                },
                Err(mm) => return Err(mismatch("received", &conn.buf, &mm)),
            }
        }
    }

    /// `expect_close` / `expect_half_close`: nothing more arrives and the connection ends (a reset is not a half-close).
    async fn expect_close(&mut self, i: usize, cname: &str, half: bool) -> Result<(), String> {
        let until = Instant::now() + self.deadline(i, CLOSE_DEADLINE);
        let conn = self.conn(cname).await?;
        loop {
            if !conn.buf.is_empty() {
                return Err(format!("expected a close, received [{}]", hex_spaced(&conn.buf, 64)));
            }
            match conn.read_more(until).await {
                Read::Data => {}
                Read::Eof if half && conn.reset => return Err("connection was reset, not half-closed".into()),
                Read::Eof => break,
                Read::Timeout => return Err("the connection stayed open".into()),
            }
        }
        self.event(cname, format!("S→C <{}>", if half { "half-close" } else { "close" }));
        Ok(())
    }

    /// `expect_silence`: nothing arrives, and the connection stays open, for the step's time.
    async fn expect_silence(
        &mut self,
        i: usize,
        cname: &str,
        ms: u64,
        deadline: Option<&Deadline>,
    ) -> Result<(), String> {
        let wait = self.deadline(i, Duration::from_millis(ms));
        let ms = wait.as_millis();
        let until = Instant::now() + wait;
        let conn = self.conn(cname).await?;
        if !conn.buf.is_empty() {
            return Err(format!("expected silence, received [{}]", hex_spaced(&conn.buf, 64)));
        }
        match conn.read_more(until).await {
            Read::Timeout => {}
            Read::Data => return Err(format!("expected silence, received [{}]", hex_spaced(&conn.buf, 64))),
            Read::Eof => return Err(format!("expected silence, connection {}", conn.ended())),
        }
        let shown = match deadline {
            Some(Deadline::Named(NamedDeadline::Handshake)) => "beyond the handshake timeout".to_string(),
            _ => format!("{ms} ms"),
        };
        self.event(cname, format!("S→C <silence {shown}>"));
        Ok(())
    }

    /// `open`: a new named connection, through the transport when it goes to the server under test.
    async fn open(&mut self, i: usize, cname: &str, to: &str) -> Result<(), String> {
        let addr = self.resolve(to)?;
        // Plain TCP to fixtures; through the transport when it is the server under test.
        let connect = async {
            if addr == self.sut.addr {
                connect_sut(self.sut).await
            } else {
                let s = TcpStream::connect(addr).await?;
                let _ = s.set_nodelay(true);
                Ok(socksref::tls::Stream::Tcp(s))
            }
        };
        let stream = tokio::time::timeout(self.deadline(i, EXPECT_DEADLINE), connect)
            .await
            .map_err(|_| format!("connect to {to} timed out"))?
            .map_err(|e| format!("connect to {to}: {e}"))?;
        self.conns.insert(cname.to_string(), Conn { stream, buf: Vec::new(), eof: false, reset: false });
        self.event(cname, format!("open → {to}"));
        Ok(())
    }

    /// `udp_send`: one datagram from the step's socket.
    async fn udp_send(&mut self, sock: &str, data: &Template, to: &str) -> Result<(), String> {
        self.prepare(data).await?;
        let dest = self.resolve(to)?;
        let fields = data.render(&self.vars).map_err(|e| e.to_string())?;
        let payload: Vec<u8> = fields.iter().flat_map(|f| f.bytes.iter().copied()).collect();
        let s = self.udp_socket(sock, sock == "fresh").await?;
        s.send_to(&payload, dest).await.map_err(|e| format!("udp send to {to}: {e}"))?;
        let on = format!("udp[{sock}]");
        self.rec.push(&on, Direction::UdpOut, &payload, format!("{on} C→{to} {}", show(&fields)));
        Ok(())
    }

    /// `udp_expect`: one datagram on the step's socket, matching the pattern exactly.
    async fn udp_expect(&mut self, i: usize, sock: &str, pat: &Template) -> Result<(), String> {
        let wait = self.deadline(i, EXPECT_DEADLINE);
        let vars = self.vars.clone();
        let s = self.udp_socket(sock, false).await?;
        let mut buf = vec![0u8; 65_536];
        let (n, _from) = tokio::time::timeout(wait, s.recv_from(&mut buf))
            .await
            .map_err(|_| format!("no datagram on udp[{sock}] in time; expected {}", show_pattern(pat)))?
            .map_err(|e| format!("udp recv: {e}"))?;
        let got = &buf[..n];
        let m = match pat.match_prefix(got, &vars) {
            Ok(Some(m)) if m.consumed == n => m,
            Ok(Some(m)) => {
                return Err(format!(
                    "datagram [{}] has {} octets past the pattern",
                    hex_spaced(got, 64),
                    n - m.consumed
                ))
            }
            Ok(None) => {
                return Err(format!("datagram [{}] is shorter than {}", hex_spaced(got, 64), show_pattern(pat)))
            }
            Err(mm) => return Err(mismatch("datagram", got, &mm)),
        };
        for (k, v) in m.captures {
            self.vars.insert(k, v);
        }
        let on = format!("udp[{sock}]");
        self.rec.push(&on, Direction::UdpIn, got, format!("{on} ←S {}", m.shown));
        Ok(())
    }

    /// `udp_expect_none`: no datagram on the step's socket for `ms`.
    async fn udp_expect_none(&mut self, sock: &str, ms: u64) -> Result<(), String> {
        let s = self.udp_socket(sock, false).await?;
        let mut buf = vec![0u8; 65_536];
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(ms), s.recv_from(&mut buf)).await {
            let (n, from) = r.map_err(|e| format!("udp recv: {e}"))?;
            return Err(format!("a datagram arrived on udp[{sock}] from {from}: [{}]", hex_spaced(&buf[..n], 64)));
        }
        self.event(&format!("udp[{sock}]"), format!("udp[{sock}] <no datagram {ms} ms>"));
        Ok(())
    }

    /// Waits for a refusal on `cname` (see [`StepKind::ExpectRefusal`]); returns the transcript line.
    async fn refusal(&mut self, cname: &str, wait: Duration, silence_ok: bool) -> Result<String, String> {
        let until = Instant::now() + wait;
        let conn = self.conn(cname).await?;
        loop {
            match refusal_reply(&conn.buf) {
                Refusal::Need => {}
                Refusal::Reply(n) => {
                    let reply = hex_spaced(&conn.buf[..n], 32);
                    conn.buf.drain(..n);
                    let close_by = Instant::now() + FAILURE_CLOSE + TIMER_MARGIN;
                    loop {
                        if !conn.buf.is_empty() {
                            return Err(format!(
                                "after the failure reply [{reply}] the server sent [{}] instead of closing",
                                hex_spaced(&conn.buf, 64)
                            ));
                        }
                        match conn.read_more(close_by).await {
                            Read::Data => {}
                            Read::Eof => return Ok(format!("S→C <refused: {reply}, close>")),
                            Read::Timeout => {
                                return Err(format!(
                                    "the failure reply [{reply}] was not followed by a close within {FAILURE_CLOSE:?} (RFC 1928 §6)"
                                ))
                            }
                        }
                    }
                }
                Refusal::Bad(why) => return Err(format!("received [{}]: {why}", hex_spaced(&conn.buf, 64))),
            }
            match conn.read_more(until).await {
                Read::Data => {}
                Read::Eof if conn.buf.is_empty() => return Ok("S→C <refused: close without a reply>".into()),
                Read::Eof => {
                    return Err(format!(
                        "connection {} after a partial reply [{}]",
                        conn.ended(),
                        hex_spaced(&conn.buf, 64)
                    ))
                }
                Read::Timeout if conn.buf.is_empty() && silence_ok => {
                    return Ok("S→C <refused: no reply, connection held>".into())
                }
                Read::Timeout => {
                    return Err(format!(
                        "neither a failure reply nor a close within {wait:?}: received [{}]",
                        hex_spaced(&conn.buf, 64)
                    ))
                }
            }
        }
    }

    /// Coalesced schedule: the sends that follow on the same connection, separated only by expects,
    /// and renderable now (they use no capture from those expects), go out in this one write.
    async fn coalesce(&mut self, i: usize, first: Vec<Field>) -> Result<Vec<u8>, String> {
        let cname = self.scn.steps[i].conn.clone();
        let mut out: Vec<u8> = first.iter().flat_map(|f| f.bytes.iter().copied()).collect();
        for j in i + 1..self.scn.steps.len() {
            let s = &self.scn.steps[j];
            if s.conn != cname {
                break;
            }
            match &s.kind {
                StepKind::Expect(_) => continue,
                StepKind::Send(t) => {
                    let ready = t.references().iter().all(|r| self.vars.contains_key(*r));
                    if !ready {
                        break;
                    }
                    let fields = t.render(&self.vars).map_err(|e| e.to_string())?;
                    out.extend(fields.iter().flat_map(|f| f.bytes.iter().copied()));
                    self.prewritten.insert(j);
                }
                _ => break,
            }
        }
        Ok(out)
    }

    async fn target_check(&mut self, c: &TargetCheck, until: Instant) -> Result<(), String> {
        let want_bytes = match &c.bytes {
            Some(b) => {
                let t = Template::parse(b).map_err(|e| e.to_string())?;
                let f = t.render(&self.vars).map_err(|e| e.to_string())?;
                Some((f.iter().flat_map(|f| f.bytes.iter().copied()).collect::<Vec<u8>>(), show(&f)))
            }
            None => None,
        };
        loop {
            let r = self.fixture.record();
            let mut bad = Vec::new();
            if let Some(n) = c.connections {
                if r.connections != n {
                    bad.push(format!("{} connections (expected {n})", r.connections));
                }
            }
            if let Some(n) = c.datagrams {
                if r.datagrams.len() != n {
                    bad.push(format!("{} datagrams (expected {n})", r.datagrams.len()));
                }
            }
            if let Some((b, _)) = &want_bytes {
                if &r.bytes != b {
                    bad.push(format!("octets [{}] (expected [{}])", hex_spaced(&r.bytes, 48), hex_spaced(b, 48)));
                }
            }
            if bad.is_empty() {
                let mut parts = Vec::new();
                if let Some(n) = c.connections {
                    parts.push(format!("connections={n}"));
                }
                if let Some(n) = c.datagrams {
                    parts.push(format!("datagrams={n}"));
                }
                if let Some((_, shown)) = want_bytes {
                    parts.push(format!("bytes={shown}"));
                }
                self.event("target", format!("target: {}", parts.join(" ")));
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(format!("the target recorded {}", bad.join(", ")));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// How far a buffer is a refusal reply.
enum Refusal {
    /// Not enough octets to tell.
    Need,
    /// A complete failure reply of this many octets.
    Reply(usize),
    /// Not a failure reply.
    Bad(String),
}

/// Classifies `b` as a SOCKS5 failure reply (`05 REP≠00 00 ATYP ADDR PORT`) or a SOCKS4 one
/// (`VN CD≠5A PORT IP`, 8 octets; VN is 00, some servers write 04).
fn refusal_reply(b: &[u8]) -> Refusal {
    match b.first() {
        None => Refusal::Need,
        Some(0x05) => {
            if b.len() < 2 {
                return Refusal::Need;
            }
            if b[1] == 0x00 {
                return Refusal::Bad("a success reply (REP 00) where a refusal is required".into());
            }
            if b.len() < 3 {
                return Refusal::Need;
            }
            if b[2] != 0x00 {
                return Refusal::Bad(format!("RSV is {:02x}; RFC 1928 §6 says it must be 00", b[2]));
            }
            use socksref::proto::codec::{DecodeError, Reader};
            let mut r = Reader::new(&b[3..]);
            match socksref::proto::addr::Address::decode(&mut r) {
                Ok(_) => Refusal::Reply(3 + r.consumed()),
                Err(DecodeError::Incomplete) => Refusal::Need,
                Err(e) => Refusal::Bad(format!("the reply's address does not parse: {e}")),
            }
        }
        Some(0x00 | 0x04) => {
            if b.len() < 2 {
                return Refusal::Need;
            }
            if b[1] == 0x5a {
                return Refusal::Bad("a SOCKS4 grant (CD 5A) where a refusal is required".into());
            }
            if b.len() < 8 {
                return Refusal::Need;
            }
            Refusal::Reply(8)
        }
        Some(v) => Refusal::Bad(format!("a reply starting {v:02x} is neither SOCKS5 (05) nor SOCKS4 (00)")),
    }
}

fn show(fields: &[Field]) -> String {
    fields.iter().map(|f| f.shown.as_str()).collect::<Vec<_>>().join(" ")
}

fn show_pattern(t: &Template) -> String {
    use crate::scenario::template::{CaptureKind, Token};
    t.tokens
        .iter()
        .filter_map(|tok| match tok {
            Token::Bytes { text, .. } | Token::Xor { text, .. } => Some(text.clone()),
            Token::Var(n) => Some(format!("{{{n}}}")),
            Token::Repeat { byte, count } => Some(format!("{{repeat:{byte:02x}:{count}}}")),
            Token::Capture { name, kind } => Some(match kind {
                CaptureKind::Fixed(n) => format!("{{{name}:{n}}}"),
                CaptureKind::Socks5Addr => format!("{{{name}:addr}}"),
                CaptureKind::Socks4Addr => format!("{{{name}:addr4}}"),
                CaptureKind::IpAddr => format!("{{{name}:ipaddr}}"),
                CaptureKind::NonZero => format!("{{{name}:nonzero}}"),
                CaptureKind::Methods { required: None } => format!("{{{name}:methods}}"),
                CaptureKind::Methods { required: Some(m) } => format!("{{{name}:methods+{m:02x}}}"),
            }),
            Token::Boundary => None,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a failed match says: what arrived, and where and why it stops fitting the pattern.
fn mismatch(what: &str, got: &[u8], mm: &crate::scenario::template::Mismatch) -> String {
    format!("{what} [{}]: at offset {}, field {}: {}", hex_spaced(got, 64), mm.offset, mm.expected, mm.why)
}
