//! The runner: decides applicability, plays scenarios under every schedule, assigns verdicts.

pub mod client;
pub mod schedule;
pub mod server;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::scenario::{Command, Extension, Feature, Method, Role, Scenario, Schedule, StepKind, Version};
use crate::transcript::Transcript;
use crate::verdict::{decide, Expectations, ScenarioResult, ScheduleFailure, Verdict};

/// Upper bound for one scenario under one schedule, so a wedged peer cannot stall a run.
pub const SCENARIO_TIMEOUT: Duration = Duration::from_secs(30);

/// What a server under test offers, and the facts declared about it. Scenarios needing more are
/// not applicable: a fact that is not declared is never assumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Versions it speaks.
    pub versions: BTreeSet<Version>,
    /// Commands enabled.
    pub commands: BTreeSet<Command>,
    /// Features declared refused by its configuration (scenarios about refusals need this).
    #[serde(default)]
    pub disabled: BTreeSet<Feature>,
    /// How it is configured to authenticate.
    pub method: Method,
    /// Its handshake deadline, if declared (scenarios that wait for it need this).
    #[serde(default)]
    pub handshake_timeout_ms: Option<u64>,
    /// Its outgoing connect timeout, if declared.
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    /// Its BIND accept timeout, if declared.
    #[serde(default)]
    pub bind_timeout_ms: Option<u64>,
    /// Its UDP association idle timeout, if declared.
    #[serde(default)]
    pub udp_idle_timeout_ms: Option<u64>,
    /// It can reach IPv6 loopback targets.
    #[serde(default)]
    pub ipv6: bool,
    /// It resolves names such as `localhost`.
    #[serde(default)]
    pub domain: bool,
    /// Protocol extensions it claims (gost's).
    #[serde(default)]
    pub extensions: BTreeSet<Extension>,
}

impl Default for Claims {
    fn default() -> Self {
        Claims {
            versions: [Version::Socks5].into(),
            commands: [Command::Connect].into(),
            disabled: BTreeSet::new(),
            method: Method::Noauth,
            handshake_timeout_ms: None,
            connect_timeout_ms: None,
            bind_timeout_ms: None,
            udp_idle_timeout_ms: None,
            ipv6: false,
            domain: false,
            extensions: BTreeSet::new(),
        }
    }
}

impl Claims {
    /// Why `scn` does not apply to a server with these claims, or `None` if it does.
    pub fn not_applicable(&self, scn: &Scenario) -> Option<String> {
        let n = &scn.needs;
        if !scn.roles.contains(&Role::Client) {
            return Some("the scenario tests clients only".into());
        }
        if let Some(f) = n.disabled.iter().find(|f| !self.disabled.contains(f)) {
            return Some(format!("tests a refused {}; declare it with --disabled {}", f.name(), f.name()));
        }
        let version_refused = match n.version {
            Version::Socks4 => n.disabled.contains(&Feature::Socks4),
            Version::Socks4a => n.disabled.contains(&Feature::Socks4a),
            Version::Socks5 => false,
        };
        if !version_refused && !self.versions.contains(&n.version) {
            return Some(format!("{:?} not claimed", n.version).to_lowercase());
        }
        if !self.commands.contains(&n.command) {
            return Some(format!("command {:?} not claimed", n.command).to_lowercase());
        }
        if let Some(x) = n.extension.filter(|x| !self.extensions.contains(x)) {
            return Some(format!("{x:?} extensions not claimed (profile gost, or --claims gost)").to_lowercase());
        }
        let login = self.method == Method::Userpass && n.method == Method::Noauth && scn.with_login().is_some();
        if n.method != self.method && !login {
            return Some(
                format!("needs a server configured for {:?}, this one uses {:?}", n.method, self.method).to_lowercase(),
            );
        }
        let facts = [
            (n.handshake_timeout, self.handshake_timeout_ms, "--handshake-timeout"),
            (n.connect_timeout, self.connect_timeout_ms, "--connect-timeout"),
            (n.bind_timeout, self.bind_timeout_ms, "--bind-timeout"),
            (n.udp_idle_timeout, self.udp_idle_timeout_ms, "--udp-idle-timeout"),
        ];
        if let Some((_, _, flag)) = facts.iter().find(|(needed, have, _)| *needed && have.is_none()) {
            return Some(format!("waits for a server timeout that is not declared ({flag})"));
        }
        if n.ipv6 && !self.ipv6 {
            return Some("ipv6 targets not claimed".into());
        }
        if n.domain && !self.domain {
            return Some("name resolution not claimed".into());
        }
        None
    }
}

/// A server under test.
#[derive(Debug, Clone)]
pub struct Sut {
    /// Where it listens.
    pub addr: SocketAddr,
    /// RFC 1929 username scenarios send as `{user}`.
    pub user: Vec<u8>,
    /// RFC 1929 password scenarios send as `{pass}`.
    pub pass: Vec<u8>,
    /// What it offers.
    pub claims: Claims,
    /// Instance name, when a peer runs several configurations.
    pub instance: Option<String>,
    /// The transport to reach it over (tls, ws, …; plain TCP by default): every connection to
    /// the server runs through this dialer, so the catalogue plays the same bytes inside the
    /// transport (docs/transports.md).
    pub transport: std::sync::Arc<socksref::transport::Dialer>,
}

/// A scenario that did not go as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Index of the failing step (none when the setup failed).
    pub step: Option<usize>,
    /// What happened.
    pub message: String,
    /// The transcript up to the failure.
    pub transcript: Transcript,
}

/// Options for a run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Schedules to use (intersected with each scenario's own list).
    pub schedules: Vec<Schedule>,
    /// Scenarios run at once.
    pub concurrency: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { schedules: Schedule::ALL.to_vec(), concurrency: 8 }
    }
}

/// How long one schedule of `scn` may take: [`SCENARIO_TIMEOUT`], plus twice each declared
/// server timeout the scenario waits for (a BIND accept timeout can be minutes).
pub fn scenario_limit(scn: &Scenario, c: &Claims) -> Duration {
    let n = &scn.needs;
    let waits = [
        (n.handshake_timeout, c.handshake_timeout_ms),
        (n.connect_timeout, c.connect_timeout_ms),
        (n.bind_timeout, c.bind_timeout_ms),
        (n.udp_idle_timeout, c.udp_idle_timeout_ms),
    ];
    let extra: u64 = waits.iter().filter(|(needed, _)| *needed).filter_map(|(_, ms)| *ms).sum();
    SCENARIO_TIMEOUT + Duration::from_millis(extra * 2)
}

/// Why `scn` cannot be judged over the transport `sut` is reached by, if it cannot: a
/// WebSocket and an smux stream (kcp's too) close as a whole, so a scenario that half-closes the
/// SOCKS connection, or expects the server to, would judge the transport rather than the server
/// (docs/transports.md). Over kcp the server listens on UDP, so a scenario that CONNECTs to the
/// proxy's own port (`{proxy.port}`, a loop over TCP) names a TCP port that is not the server.
pub fn transport_not_applicable(scn: &Scenario, sut: &Sut) -> Option<String> {
    use socksref::transport::Kind;
    let kind = sut.transport.kind();
    if matches!(kind, Kind::Tcp | Kind::Tls) {
        return None;
    }
    if kind.is_udp() {
        let own_port = scn.steps.iter().any(|s| match &s.kind {
            StepKind::Send(t) => {
                t.tokens.iter().any(|tok| matches!(tok, crate::scenario::template::Token::Var(v) if v == "proxy.port"))
            }
            _ => false,
        });
        if own_port {
            return Some(format!(
                "targets the proxy's own port over TCP, which the {kind} transport cannot carry: over {kind} \
                 the proxy listens on UDP there, so that TCP port is not the proxy"
            ));
        }
    }
    let half = scn.steps.iter().any(|s| matches!(s.kind, StepKind::HalfClose | StepKind::ExpectHalfClose));
    half.then(|| format!("needs a TCP half-close of the SOCKS connection, which the {kind} transport cannot carry"))
}

/// The scenario as it is played against a server with `claims`: a server that requires a
/// password gets every post-greeting scenario with a login in front. A failure's step index
/// counts the steps of this scenario, so whoever reads a failing step looks it up here.
pub fn as_played<'a>(scn: &'a Scenario, claims: &Claims) -> std::borrow::Cow<'a, Scenario> {
    let login =
        (claims.method == Method::Userpass && scn.needs.method == Method::Noauth).then(|| scn.with_login()).flatten();
    match login {
        Some(l) => std::borrow::Cow::Owned(l),
        None => std::borrow::Cow::Borrowed(scn),
    }
}

/// Plays one scenario under each schedule against `sut` and decides its verdict.
pub async fn run_scenario(scn: &Scenario, sut: &Sut, opts: &RunOptions, expected: &Expectations) -> ScenarioResult {
    let started = Instant::now();
    let mut result = ScenarioResult::new(scn, sut.instance.clone(), Verdict::Pass);
    if let Some(reason) = sut.claims.not_applicable(scn).or_else(|| transport_not_applicable(scn, sut)) {
        result.verdict = Verdict::NotApplicable { reason };
        return result;
    }
    let scn = &*as_played(scn, &sut.claims);
    let schedules: Vec<Schedule> = scn.schedules().into_iter().filter(|s| opts.schedules.contains(s)).collect();
    let limit = scenario_limit(scn, &sut.claims);
    for s in &schedules {
        let outcome = match tokio::time::timeout(limit, client::play(scn, *s, sut)).await {
            Ok(r) => r,
            Err(_) => Err(Failure {
                step: None,
                message: format!("gave up after {limit:?}"),
                transcript: Transcript::default(),
            }),
        };
        if let Err(f) = outcome {
            result.failures.push(ScheduleFailure {
                schedule: *s,
                step: f.step,
                message: f.message,
                transcript: f.transcript,
            });
        }
    }
    result.verdict = decide(scn.grade, &schedules, &result.failures, expected.get(&scn.id));
    result.grade = crate::verdict::effective_grade(scn.grade, &result.failures);
    result.schedules = schedules;
    result.millis = started.elapsed().as_millis() as u64;
    result
}

/// Runs many scenarios concurrently against the first of `suts` each applies to; `progress` is
/// called after each scenario with (done, total, result). Results come back in catalogue order.
pub async fn run_all(
    scenarios: &[Scenario],
    suts: &[Sut],
    opts: &RunOptions,
    expected: &Expectations,
    progress: impl Fn(usize, usize, &ScenarioResult),
) -> Vec<ScenarioResult> {
    let sem = Arc::new(tokio::sync::Semaphore::new(opts.concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let mut task_index = std::collections::HashMap::new();
    for (idx, scn) in scenarios.iter().enumerate() {
        let scn = scn.clone();
        // Prefer the first instance the scenario applies to; otherwise report why the first one fails.
        let sut = suts.iter().find(|s| s.claims.not_applicable(&scn).is_none()).or(suts.first()).cloned();
        let opts = opts.clone();
        let expected = expected.clone();
        let sem = sem.clone();
        let handle = set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let r = match sut {
                Some(sut) => run_scenario(&scn, &sut, &opts, &expected).await,
                None => {
                    ScenarioResult::new(&scn, None, Verdict::NotApplicable { reason: "no server under test".into() })
                }
            };
            (idx, r)
        });
        task_index.insert(handle.id(), idx);
    }
    let total = scenarios.len();
    let mut out: Vec<Option<ScenarioResult>> = vec![None; total];
    let mut done = 0;
    while let Some(j) = set.join_next_with_id().await {
        let (idx, r) = match j {
            Ok((_, (idx, r))) => (idx, r),
            // A scenario whose task panicked is a failure of that scenario, with the panic's
            // message: it must not vanish from the results.
            Err(e) => {
                let idx = task_index.get(&e.id()).copied().unwrap_or_default();
                let message = match e.try_into_panic() {
                    Ok(p) => p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panicked".into()),
                    Err(e) => e.to_string(),
                };
                let mut r = ScenarioResult::new(&scenarios[idx], None, Verdict::Fail);
                r.failures.push(ScheduleFailure {
                    schedule: Schedule::AsWritten,
                    step: None,
                    message: format!("the runner panicked: {message}"),
                    transcript: Transcript::default(),
                });
                (idx, r)
            }
        };
        done += 1;
        progress(done, total, &r);
        out[idx] = Some(r);
    }
    out.into_iter().flatten().collect()
}
