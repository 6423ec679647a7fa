//! The runner: decides applicability, plays scenarios under every schedule, assigns verdicts.

pub mod client;
pub mod schedule;
pub mod server;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::scenario::{Command, Method, Role, Scenario, Schedule, Version};
use crate::verdict::{decide, Expectations, ScenarioResult, ScheduleFailure, Verdict};

/// Upper bound for one scenario under one schedule, so a wedged peer cannot stall a run.
pub const SCENARIO_TIMEOUT: Duration = Duration::from_secs(30);

/// What a server under test offers. Scenarios needing more are not applicable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Versions it speaks.
    pub versions: BTreeSet<Version>,
    /// Commands enabled.
    pub commands: BTreeSet<Command>,
    /// How it is configured to authenticate.
    pub method: Method,
    /// Its handshake deadline, if it has one (scenarios that wait for it need this).
    #[serde(default)]
    pub handshake_timeout_ms: Option<u64>,
    /// It can reach IPv6 loopback targets.
    #[serde(default)]
    pub ipv6: bool,
    /// It resolves names such as `localhost`.
    #[serde(default)]
    pub domain: bool,
}

impl Claims {
    /// Why `scn` does not apply to a server with these claims, or `None` if it does.
    pub fn not_applicable(&self, scn: &Scenario) -> Option<String> {
        let n = &scn.needs;
        if !scn.roles.contains(&Role::Client) {
            return Some("the scenario tests clients only".into());
        }
        if !self.versions.contains(&n.version) {
            return Some(format!("{:?} not claimed", n.version).to_lowercase());
        }
        if !self.commands.contains(&n.command) {
            return Some(format!("command {:?} not claimed", n.command).to_lowercase());
        }
        if let Some(c) = n.disabled.iter().find(|c| self.commands.contains(c)) {
            return Some(format!("needs command {c:?} disabled, but it is enabled").to_lowercase());
        }
        if n.method != self.method {
            return Some(
                format!("needs a server configured for {:?}, this one uses {:?}", n.method, self.method).to_lowercase(),
            );
        }
        if n.handshake_timeout && self.handshake_timeout_ms.is_none() {
            return Some("no handshake timeout declared".into());
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
}

/// A scenario that did not go as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Index of the failing step (none when the setup failed).
    pub step: Option<usize>,
    /// What happened.
    pub message: String,
    /// The transcript up to the failure.
    pub transcript: Vec<String>,
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

/// Plays one scenario under each schedule against `sut` and decides its verdict.
pub async fn run_scenario(scn: &Scenario, sut: &Sut, opts: &RunOptions, expected: &Expectations) -> ScenarioResult {
    let started = Instant::now();
    let mut result = ScenarioResult {
        id: scn.id.clone(),
        title: scn.title.clone(),
        instance: sut.instance.clone(),
        verdict: Verdict::Pass,
        schedules: Vec::new(),
        failures: Vec::new(),
        millis: 0,
    };
    if let Some(reason) = sut.claims.not_applicable(scn) {
        result.verdict = Verdict::NotApplicable { reason };
        return result;
    }
    let schedules: Vec<Schedule> = scn.schedules().into_iter().filter(|s| opts.schedules.contains(s)).collect();
    for s in &schedules {
        let outcome = match tokio::time::timeout(SCENARIO_TIMEOUT, client::play(scn, *s, sut)).await {
            Ok(r) => r,
            Err(_) => Err(Failure {
                step: None,
                message: format!("gave up after {SCENARIO_TIMEOUT:?}"),
                transcript: Vec::new(),
            }),
        };
        if let Err(f) = outcome {
            result.failures.push(ScheduleFailure { schedule: *s, step: f.step, message: f.message });
        }
    }
    result.verdict = decide(&schedules, &result.failures, expected.get(&scn.id));
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
    for (idx, scn) in scenarios.iter().enumerate() {
        let scn = scn.clone();
        // Prefer the first instance the scenario applies to; otherwise report why the first one fails.
        let sut = suts.iter().find(|s| s.claims.not_applicable(&scn).is_none()).or(suts.first()).cloned();
        let opts = opts.clone();
        let expected = expected.clone();
        let sem = sem.clone();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let r = match sut {
                Some(sut) => run_scenario(&scn, &sut, &opts, &expected).await,
                None => ScenarioResult {
                    id: scn.id.clone(),
                    title: scn.title.clone(),
                    instance: None,
                    verdict: Verdict::NotApplicable { reason: "no server under test".into() },
                    schedules: Vec::new(),
                    failures: Vec::new(),
                    millis: 0,
                },
            };
            (idx, r)
        });
    }
    let total = scenarios.len();
    let mut out: Vec<Option<ScenarioResult>> = vec![None; total];
    let mut done = 0;
    while let Some(j) = set.join_next().await {
        if let Ok((idx, r)) = j {
            done += 1;
            progress(done, total, &r);
            out[idx] = Some(r);
        }
    }
    out.into_iter().flatten().collect()
}
