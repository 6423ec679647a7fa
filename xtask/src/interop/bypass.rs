//! The UDP authentication bypass regression (docs/v2ray.md §1.10, §6; V-01): what a
//! password-protected server with UDP on does with SOCKS5 UDP datagrams from sources that never
//! authenticated. V2Ray relays them (v2fly/v2fly-github-io#104); the reference must drop them.
//!
//! The probes are the catalogue's own `regressions.v01.*` scenarios, played one after another by
//! the harness's runner against a server started for this alone, so the scenarios that open no
//! TCP connection really run before anything has authenticated. Each scenario's outcome says its
//! datagram's fate (see [`fate`]); the observations are recorded as an `insta` snapshot per server
//! peer, so any change in behaviour (a fix upstream, a regression here) shows up as a diff.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sockslab::runner::{as_played, run_scenario, RunOptions, Sut};
use sockslab::scenario::{Scenario, Schedule, StepKind};
use sockslab::verdict::{Expectations, ScenarioResult, Verdict};

use super::servers::{self, Config};
use super::{capture, tally, Cell, CellResult, Kind, Lab};
use crate::peers::PeerId;

/// The scenarios the bypass cells play: every one whose id starts with this.
pub const PREFIX: &str = "regressions.v01.";

/// The authenticated positive control: the plain UDP ASSOCIATE round trip. It must relay, or the
/// probes' "dropped" proves nothing.
pub const CONTROL: &str = "rfc1928.udp.relay-round-trip";

/// What happened to a scenario's unauthenticated datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fate {
    /// Reached the target and the reply came back to the sender.
    Relayed,
    /// Reached the target, but no reply came back.
    ForwardedNoReply,
    /// Never reached the target.
    Dropped,
}

/// One scenario's observation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// The catalogue scenario's id.
    pub scenario: String,
    /// The fate its outcome shows.
    pub fate: Fate,
}

/// All observations against one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observations {
    /// The authenticated control that relayed before the probes were judged ([`CONTROL`]).
    /// There is no fate to record: a control that does not relay fails the cell instead, since
    /// then "dropped" would prove nothing.
    pub control: String,
    /// The `regressions.v01.*` scenarios, in the order they ran.
    pub probes: Vec<Probe>,
}

impl Observations {
    /// Whether any unauthenticated datagram reached the target.
    pub fn bypassed(&self) -> bool {
        self.probes.iter().any(|p| p.fate != Fate::Dropped)
    }
}

/// Whether a scenario opens no TCP connection at all (only datagrams).
fn udp_only(scn: &Scenario) -> bool {
    scn.steps.iter().all(|s| {
        matches!(
            s.kind,
            StepKind::UdpSend { .. }
                | StepKind::UdpExpect(_)
                | StepKind::UdpExpectNone(_)
                | StepKind::TargetReceived(_)
                | StepKind::Sleep(_)
        )
    })
}

/// The scenarios to play against a server with `sut`'s claims, in playing order, each marked
/// whether it is the control: the probes that open no TCP connection first (docs/v2ray.md §6:
/// "before any TCP" must come before anything authenticated), then the control, then the other
/// probes, each group in catalogue order. Probes that do not apply to the server (as the runner
/// decides from `needs`) are left out.
pub fn plan<'a>(catalogue: &'a [Scenario], sut: &Sut) -> Result<Vec<(&'a Scenario, bool)>> {
    let Some(control) = catalogue.iter().find(|s| s.id == CONTROL) else {
        bail!("the catalogue has no scenario {CONTROL} (the bypass cells' authenticated control)");
    };
    if let Some(why) = sut.claims.not_applicable(control) {
        bail!("the control {CONTROL} does not apply to this server: {why}");
    }
    let probes: Vec<&Scenario> =
        catalogue.iter().filter(|s| s.id.starts_with(PREFIX) && sut.claims.not_applicable(s).is_none()).collect();
    if probes.is_empty() {
        bail!("no {PREFIX}* scenario applies to this server");
    }
    let (first, rest): (Vec<_>, Vec<_>) = probes.into_iter().partition(|s| udp_only(s));
    let mut order: Vec<(&Scenario, bool)> = first.into_iter().map(|s| (s, false)).collect();
    order.push((control, true));
    order.extend(rest.into_iter().map(|s| (s, false)));
    Ok(order)
}

/// The step a result's failure is at, looked up in the scenario as it was played.
fn failing_step<'a>(played: &'a Scenario, r: &ScenarioResult) -> Result<Option<(usize, &'a StepKind)>, String> {
    match r.failures.first() {
        None => Ok(None),
        Some(f) => match f.step.and_then(|i| played.steps.get(i).map(|s| (i, &s.kind))) {
            Some(at) => Ok(Some(at)),
            None => Err(format!("{}: {}", r.id, f.message)),
        },
    }
}

/// A probe scenario's fate, from its outcome: it passes when nothing came back and the target
/// saw only what the scenario's own authenticated datagrams sent (dropped); a reply where
/// `udp_expect_none` wanted none means the datagram was relayed; a pass up to `target_received`
/// alone means it reached the target without an answer. Any other failure (the login, the
/// association, the scenario's own control datagram) decides nothing: it is an error, with the
/// runner's message.
pub fn fate(played: &Scenario, r: &ScenarioResult) -> Result<Fate, String> {
    if let Verdict::NotApplicable { reason } = &r.verdict {
        return Err(format!("{}: not applicable: {reason}", r.id));
    }
    let message = || r.failures.first().map(|f| f.message.clone()).unwrap_or_default();
    match failing_step(played, r)? {
        None => Ok(Fate::Dropped),
        Some((_, StepKind::UdpExpectNone(_))) => Ok(Fate::Relayed),
        Some((_, StepKind::TargetReceived(_))) => Ok(Fate::ForwardedNoReply),
        Some((i, _)) => Err(format!("{} failed before its probe could tell, at step {i}: {}", r.id, message())),
    }
}

/// Plays one scenario under the as-written schedule (the probes are about datagrams, not about
/// how TCP octets are cut) with no expected failures, so the outcome is the server's own.
async fn play(scn: &Scenario, sut: &Sut) -> ScenarioResult {
    let opts = RunOptions { schedules: vec![Schedule::AsWritten], concurrency: 1 };
    run_scenario(scn, sut, &opts, &Expectations::default()).await
}

/// Plays the control and every applicable `regressions.v01.*` scenario, one at a time in
/// [`plan`]'s order, against `sut`: a server started for this alone, with a password and UDP.
/// Each scenario starts its own echo target, so a datagram "reached the target" only when this
/// scenario's target saw it.
pub async fn observe(catalogue: &[Scenario], sut: &Sut) -> Result<Observations> {
    let order = plan(catalogue, sut)?;
    let mut errors = Vec::new();
    let mut observed = Vec::new();
    let mut control_relayed = false;
    for (scn, is_control) in order {
        let r = play(scn, sut).await;
        let played = as_played(scn, &sut.claims);
        if is_control {
            match failing_step(&played, &r) {
                Ok(None) if r.verdict == Verdict::Pass => control_relayed = true,
                Ok(_) | Err(_) => errors.push(format!(
                    "the authenticated control {CONTROL} did not relay ({}): the probes prove nothing",
                    r.failures.first().map(|f| f.message.as_str()).unwrap_or("not run")
                )),
            }
            continue;
        }
        match fate(&played, &r) {
            Ok(fate) => observed.push(Probe { scenario: scn.id.clone(), fate }),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    if !control_relayed {
        bail!("the control {CONTROL} was not played");
    }
    Ok(Observations { control: CONTROL.into(), probes: observed })
}

/// The UDP bypass cells: the catalogue's `regressions.v01.*` scenarios per server (bypass.rs),
/// their observations compared with the snapshots.
pub(super) async fn run_bypass_cells(
    lab: &Arc<Lab>,
    catalogue: &[sockslab::scenario::Scenario],
    to_run: &[Cell],
    capture: bool,
    done: &mut usize,
    total: usize,
) -> Result<(Vec<CellResult>, BTreeMap<PeerId, Observations>)> {
    let mut results = Vec::new();
    // UDP bypass: a fresh password+UDP server per peer, so "before any TCP" really is first.
    // The servers are probed at once (every scenario has its own echo target, so one server's
    // datagrams never count for another); the snapshot comparisons then run one by one, because
    // they swap the process-wide panic hook.
    let mut bypass_obs = BTreeMap::new();
    let mut probes = tokio::task::JoinSet::new();
    let catalogue = Arc::new(catalogue.to_vec());
    for c in to_run.iter().filter(|c| c.kind == Kind::UdpBypass) {
        let (lab, c, catalogue) = (lab.clone(), c.clone(), catalogue.clone());
        probes.spawn(async move {
            let t = Instant::now();
            let r = observe_bypass(&lab, &catalogue, c.server, capture).await;
            (c, t, r)
        });
    }
    let mut observed = Vec::new();
    while let Some(j) = probes.join_next().await {
        observed.push(j.context("a bypass probe panicked")?);
    }
    observed.sort_by_key(|(c, _, _)| c.server);
    for (c, t, r) in observed {
        let c = &c;
        let r = r.map(|(obs, logs)| {
            let err = compare_bypass_snapshot(c.server, &obs);
            (obs, err, logs)
        });
        let (status, detail, logs) = match r {
            Ok((obs, snap_err, logs)) => {
                let status = if let Some(e) = &snap_err {
                    (Verdict::Fail, format!("snapshot differs: {e}"))
                } else {
                    let bypassed = obs.bypassed();
                    let d = if bypassed {
                        "unauthenticated datagrams reach the target (see the snapshot)".to_string()
                    } else {
                        "every unauthenticated datagram dropped; the authenticated control relayed".to_string()
                    };
                    (lab.decide(c, !bypassed), d)
                };
                bypass_obs.insert(c.server, obs);
                (status.0, status.1, logs)
            }
            Err(e) => (lab.decide(c, false), format!("{e:#}"), String::new()),
        };
        tally(&mut results, CellResult::finished(c.clone(), status, detail, logs, t, lab.backend), done, total);
    }
    Ok((results, bypass_obs))
}

/// Starts a fresh password+UDP server and plays the bypass scenarios against it; returns the
/// observations and its logs.
async fn observe_bypass(
    lab: &Lab,
    catalogue: &[sockslab::scenario::Scenario],
    peer: PeerId,
    capture: bool,
) -> Result<(Observations, String)> {
    let server = servers::start(peer, &lab.launchers[&peer], Config::Auth).await?;
    // Only the server's own port: bypass probes of several servers run at once.
    let recorder =
        if capture { Some(capture::Recorder::start(&format!("port {}", server.addr.port())).await) } else { None };
    let obs = observe(catalogue, &server.sut()).await;
    let logs = server.running.logs().await;
    server.running.stop().await;
    let mut logs = logs;
    if let Some(rec) = recorder {
        let cell = Cell::bypass(peer);
        let shows = "RFC 1929 server with UDP on, the catalogue's regressions.v01.* scenarios and the \
                     rfc1928.udp.relay-round-trip control played by the sockslab runner: datagrams sent straight to \
                     the SOCKS port with no TCP handshake and no UDP ASSOCIATE (the dissector lists them as \
                     unmatched), the logins and associations, and what came back (the capture keeps the SOCKS \
                     port only, so datagrams to a separate relay port are not in it)";
        let note =
            capture::record_cell(&cell, rec, server.addr.port(), obs.is_ok(), shows, "", server.command.clone()).await;
        logs = format!("{note}\n{logs}");
    }
    let obs = obs.with_context(|| format!("server log:\n{logs}"))?;
    Ok((obs, logs))
}

/// Compares the observations with `xtask/src/interop/snapshots/udp_bypass_<peer>.snap`; returns
/// what to say when they differ.
fn compare_bypass_snapshot(peer: PeerId, obs: &Observations) -> Option<String> {
    let name = format!("udp_bypass_{}", peer.name());
    // insta panics on a mismatch (and, outside CI, writes a `.snap.new` to review with
    // `cargo insta review`); turn that into a failing cell rather than aborting the run.
    // insta has already printed the diff; the panic message and backtrace would only add noise.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        insta::with_settings!({snapshot_path => "snapshots", prepend_module_to_snapshot => false, omit_expression => true}, {
            insta::assert_yaml_snapshot!(name.as_str(), obs);
        });
    }));
    std::panic::set_hook(hook);
    r.err().map(|_| {
        format!("see xtask/src/interop/snapshots/{name}.snap (a .snap.new holds the new observations outside CI)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockslab::verdict::ScheduleFailure;

    fn catalogue() -> Vec<Scenario> {
        sockslab::scenario::load_catalogue(&crate::peers::root().join("scenarios")).expect("the catalogue loads")
    }

    /// A server's view with a password and UDP on, as the lab's `auth` instance claims.
    fn auth_sut() -> Sut {
        use sockslab::scenario::{Command, Method, Version};
        Sut {
            addr: "127.0.0.1:1".parse().expect("a literal address"),
            user: b"u".to_vec(),
            pass: b"p".to_vec(),
            claims: sockslab::runner::Claims {
                versions: [Version::Socks5].into(),
                commands: [Command::Connect, Command::Udp].into(),
                method: Method::Userpass,
                ..Default::default()
            },
            instance: None,
            transport: Default::default(),
        }
    }

    fn failed_at(scn: &Scenario, step: usize) -> ScenarioResult {
        let mut r = ScenarioResult::new(scn, None, Verdict::Fail);
        r.failures.push(ScheduleFailure {
            schedule: Schedule::AsWritten,
            step: Some(step),
            message: "boom".into(),
            transcript: Default::default(),
        });
        r
    }

    fn position(scn: &Scenario, want: impl Fn(&StepKind) -> bool) -> usize {
        scn.steps.iter().position(|s| want(&s.kind)).expect("the scenario has that step")
    }

    #[test]
    fn plan_puts_the_scenarios_without_tcp_first_and_the_control_is_the_relay_round_trip() {
        let cat = catalogue();
        let order = plan(&cat, &auth_sut()).expect("the catalogue has the scenarios");
        let controls: Vec<usize> = order.iter().enumerate().filter(|(_, (_, c))| *c).map(|(i, _)| i).collect();
        assert_eq!(controls.len(), 1, "one control");
        let (control, _) = order[controls[0]];
        assert_eq!(control.id, CONTROL);
        // The control comes right after the probes that open no TCP connection.
        assert!(order[..controls[0]].iter().all(|(s, _)| udp_only(s)));
        assert!(!udp_only(order[controls[0] + 1].0), "a probe that logs in follows the control");
        let probes: Vec<&Scenario> = order.iter().filter(|(_, c)| !*c).map(|(s, _)| *s).collect();
        let ids: Vec<&str> = probes.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids.first(), Some(&"regressions.v01.udp-without-any-tcp"), "{ids:?}");
        assert!(ids.iter().all(|i| i.starts_with(PREFIX)), "{ids:?}");
        // The open-listener scenario needs a server without authentication: filtered by `needs`.
        assert!(!ids.contains(&"regressions.v01.udp-without-tcp-open-listener"), "{ids:?}");
        for id in ["regressions.v01.udp-after-failed-login", "regressions.v01.udp-from-unassociated-socket-to-tcp-port"]
        {
            assert!(ids.contains(&id), "{id} missing from {ids:?}");
        }
        let first_tcp = probes.iter().position(|s| !udp_only(s)).expect("some probes log in");
        assert!(probes[first_tcp..].iter().all(|s| !udp_only(s)), "{ids:?}");
    }

    #[test]
    fn the_failing_step_decides_the_fate() {
        let cat = catalogue();
        let scn =
            cat.iter().find(|s| s.id == "regressions.v01.udp-from-unassociated-socket").expect("in the catalogue");
        let pass = ScenarioResult::new(scn, None, Verdict::Pass);
        assert_eq!(fate(scn, &pass), Ok(Fate::Dropped));
        let none = position(scn, |k| matches!(k, StepKind::UdpExpectNone(_)));
        assert_eq!(fate(scn, &failed_at(scn, none)), Ok(Fate::Relayed));
        let target = position(scn, |k| matches!(k, StepKind::TargetReceived(_)));
        assert_eq!(fate(scn, &failed_at(scn, target)), Ok(Fate::ForwardedNoReply));
        // The scenario's own authenticated datagram unanswered: nothing is decided.
        let control = position(scn, |k| matches!(k, StepKind::UdpExpect(_)));
        let e = fate(scn, &failed_at(scn, control)).expect_err("a failed control step decides nothing");
        assert!(e.contains("boom"), "{e}");
        let mut setup = failed_at(scn, 0);
        setup.failures[0].step = None;
        assert!(fate(scn, &setup).is_err());
    }

    #[test]
    fn a_login_in_front_shifts_the_failing_step_of_the_control() {
        // The control needs no authentication: against a password server the runner plays it
        // with a login in front, and a failure's index counts those steps.
        let cat = catalogue();
        let control = cat.iter().find(|s| s.id == CONTROL).expect("in the catalogue");
        let played = as_played(control, &auth_sut().claims);
        assert!(played.steps.len() > control.steps.len());
        let i = position(&played, |k| matches!(k, StepKind::UdpExpect(_)));
        let at = failing_step(&played, &failed_at(control, i)).expect("in range");
        assert!(matches!(at, Some((_, StepKind::UdpExpect(_)))));
    }
}
