//! Verdicts are data: pass, fail, warn, policy, not-applicable, expected-failure (with a reason),
//! xpass and unavailable.
//!
//! A scenario that does not go as written is graded by the strictest level of the requirements it
//! cites ([`Grade`]): a MUST (or a protocol rule stated without a keyword) gives `FAIL`, a SHOULD
//! gives `WARN`, and a MAY or one of the project's own decisions and safety rules gives `POLICY`.
//! So a `FAIL` is always a deviation from the specification, never from this project's taste.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::coverage::Level;
use crate::scenario::{yaml, LoadError, Schedule};
use crate::transcript::Transcript;

/// How strongly the specification demands what a scenario checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Grade {
    /// MUST / MUST NOT, or a message-format rule: a deviation is a `FAIL`.
    #[default]
    Must,
    /// SHOULD / RECOMMENDED: a deviation is a `WARN`.
    Should,
    /// MAY, or the project's own decision or safety rule (D-, R-, V- ids): a deviation is `POLICY`.
    Policy,
}

impl Grade {
    /// The grade a requirement of this level gives.
    pub fn of(level: Level) -> Grade {
        match level {
            Level::Must | Level::Spec => Grade::Must,
            Level::Should => Grade::Should,
            Level::May | Level::Project => Grade::Policy,
        }
    }

    /// Upper-case name for reports.
    pub fn label(self) -> &'static str {
        match self {
            Grade::Must => "MUST",
            Grade::Should => "SHOULD",
            Grade::Policy => "POLICY",
        }
    }
}

/// A requirement a scenario cites, as reports show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cited {
    /// Requirement id (`RFC1928-6-failure-close`, `D-06`, …).
    pub id: String,
    /// Its level.
    pub level: Level,
    /// The requirement text.
    pub text: String,
}

/// How strict a run's exit code is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Strictness {
    /// `WARN` (a SHOULD not met) fails the run too.
    pub warn: bool,
    /// `POLICY` (a project decision not followed) fails the run too.
    pub policy: bool,
}

/// The outcome of one scenario against one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "verdict")]
pub enum Verdict {
    /// Passed under every schedule it ran under.
    Pass,
    /// A MUST-level check failed, and the peer's expected results do not list it.
    Fail,
    /// A SHOULD-level check failed (not listed as expected).
    Warn,
    /// A check of a MAY or of the project's own decision failed (not listed as expected).
    Policy,
    /// The peer does not claim a capability the scenario needs; decided before running.
    NotApplicable {
        /// Which capability is missing.
        reason: String,
    },
    /// Failed, as the peer's expected results say it should.
    ExpectedFailure {
        /// Why the peer deviates, from the expected-results file.
        reason: String,
        /// Where the deviation is documented upstream (an issue or advisory), when the file gives one.
        /// Absent from the serialised form when there is none, so older reports read the same.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        link: Option<String>,
    },
    /// Listed as an expected failure but passed: the expected-results file is stale. An error.
    Xpass {
        /// The reason the file gave for the expected failure.
        reason: String,
    },
    /// The peer could not be obtained or started, so nothing ran (the interop lab).
    Unavailable {
        /// Why.
        reason: String,
    },
}

impl Verdict {
    /// Short upper-case label for terminal output.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Warn => "WARN",
            Verdict::Policy => "POLICY",
            Verdict::NotApplicable { .. } => "N/A",
            Verdict::ExpectedFailure { .. } => "XFAIL",
            Verdict::Xpass { .. } => "XPASS",
            Verdict::Unavailable { .. } => "UNAVAILABLE",
        }
    }

    /// The verdict of a scenario of this grade that did not go as written.
    pub fn deviation(grade: Grade) -> Verdict {
        match grade {
            Grade::Must => Verdict::Fail,
            Grade::Should => Verdict::Warn,
            Grade::Policy => Verdict::Policy,
        }
    }

    /// Whether this verdict makes a run fail: `FAIL` and `XPASS` always, `WARN` and `POLICY`
    /// when the run asks for it.
    pub fn is_error(&self, strict: Strictness) -> bool {
        match self {
            Verdict::Fail | Verdict::Xpass { .. } => true,
            Verdict::Warn => strict.warn,
            Verdict::Policy => strict.policy,
            _ => false,
        }
    }

    /// Whether the scenario deviated (failed at some level, expected or not).
    pub fn deviated(&self) -> bool {
        matches!(self, Verdict::Fail | Verdict::Warn | Verdict::Policy | Verdict::ExpectedFailure { .. })
    }
}

/// One schedule's failure, for reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleFailure {
    /// The schedule.
    pub schedule: Schedule,
    /// Index of the failing step, when a step failed.
    pub step: Option<usize>,
    /// What happened.
    pub message: String,
    /// What was sent and received up to the failure.
    #[serde(default, skip_serializing_if = "Transcript::is_empty")]
    pub transcript: Transcript,
}

/// A scenario's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScenarioResult {
    /// Scenario id.
    pub id: String,
    /// Scenario title.
    pub title: String,
    /// How strongly the specification demands what it checks.
    #[serde(default)]
    pub grade: Grade,
    /// The requirements it cites.
    #[serde(default)]
    pub cites: Vec<Cited>,
    /// Peer instance it ran against, if the run had several.
    pub instance: Option<String>,
    /// The verdict.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Schedules run.
    pub schedules: Vec<Schedule>,
    /// Failures, one per failing schedule.
    pub failures: Vec<ScheduleFailure>,
    /// Wall time in milliseconds.
    pub millis: u64,
}

impl ScenarioResult {
    /// A result for `scn` with `verdict` and nothing run yet.
    pub fn new(scn: &crate::scenario::Scenario, instance: Option<String>, verdict: Verdict) -> ScenarioResult {
        ScenarioResult {
            id: scn.id.clone(),
            title: scn.title.clone(),
            grade: scn.grade,
            cites: scn.cites.clone(),
            instance,
            verdict,
            schedules: Vec::new(),
            failures: Vec::new(),
            millis: 0,
        }
    }
}

/// One entry of a peer's expected-results file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedFailure {
    /// Scenario id.
    pub id: String,
    /// Why the peer deviates from the catalogue's expectation.
    pub reason: String,
    /// Where the deviation is documented upstream (an issue or advisory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Only under these schedules (all schedules when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedules: Option<Vec<Schedule>>,
    /// The deviation is a race in the peer (it shows only when the peer's timing lines up), so
    /// a pass is accepted rather than reported as xpass. The reason must say what the race is;
    /// a failure outside the listed schedules is still a new failure.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub intermittent: bool,
}

/// A peer's expected-results file (`harness/peers/<peer>/expected.yaml`): the catalogue
/// scenarios that deviate against it and, for the interop lab (`cargo xtask interop`), the lab's
/// matrix cells that involve it and fail for a known reason. Both lists hold the same entries and
/// are decided by the same [`decide`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    /// Peer name.
    #[serde(default)]
    pub peer: String,
    /// Peer version the results were recorded with.
    #[serde(default)]
    pub version: String,
    /// Scenarios that fail against this peer, each with its reason.
    #[serde(default)]
    pub expected_failures: Vec<ExpectedFailure>,
    /// Interop-lab cells (ids such as `half-close.gost.gost` or `udp-bypass.v2ray4`) that fail
    /// for a known reason when this peer is the cell's client or server. Not scenario ids: the
    /// harness's own runs never look here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cells: Vec<ExpectedFailure>,
}

impl Expectations {
    /// Loads an expected-results file; ids must be unique.
    pub fn load(path: &Path) -> Result<Expectations, LoadError> {
        let e: Expectations = yaml::from_file(path)?;
        let mut seen = BTreeMap::new();
        for f in e.expected_failures.iter().chain(&e.cells) {
            if seen.insert(f.id.clone(), ()).is_some() {
                return Err(LoadError::Invalid {
                    path: path.to_path_buf(),
                    message: format!("`{}` is listed twice", f.id),
                });
            }
        }
        Ok(e)
    }

    /// The entry for a scenario id.
    pub fn get(&self, id: &str) -> Option<&ExpectedFailure> {
        self.expected_failures.iter().find(|f| f.id == id)
    }

    /// The entry for an interop-lab cell id.
    pub fn cell(&self, id: &str) -> Option<&ExpectedFailure> {
        self.cells.iter().find(|f| f.id == id)
    }
}

/// The grade a run's failures are judged at. The coalesced schedule pipelines the client's
/// messages (and its first payload) ahead of the server's replies; RFC 1928 describes the
/// exchange as request, reply, then data and says nothing of octets sent early, and accepting
/// them is the project's rule (D-15, V-23). So a scenario that fails only when pipelined is a
/// POLICY deviation whatever its grade.
pub fn effective_grade(grade: Grade, failures: &[ScheduleFailure]) -> Grade {
    if !failures.is_empty() && failures.iter().all(|f| f.schedule == Schedule::Coalesced) {
        Grade::Policy
    } else {
        grade
    }
}

/// Decides the verdict of a scenario of `grade` that ran, from its per-schedule failures and the
/// expectation.
pub fn decide(
    grade: Grade,
    ran: &[Schedule],
    failures: &[ScheduleFailure],
    expected: Option<&ExpectedFailure>,
) -> Verdict {
    let failed: Vec<Schedule> = failures.iter().map(|f| f.schedule).collect();
    // The coalesced schedule pipelines the client's messages (and its first payload) ahead of the
    // server's replies. RFC 1928 describes the exchange as request, reply, then data and says
    // nothing of octets sent early; accepting them is the project's rule (D-15, V-23). So a
    // scenario that fails only when pipelined is a POLICY deviation whatever its grade.
    let grade =
        if !failed.is_empty() && failed.iter().all(|s| *s == Schedule::Coalesced) { Grade::Policy } else { grade };
    match expected {
        None if failed.is_empty() => Verdict::Pass,
        None => Verdict::deviation(grade),
        Some(e) => {
            let listed: Vec<Schedule> = e.schedules.clone().unwrap_or_else(|| ran.to_vec());
            let listed_ran: Vec<Schedule> = listed.iter().copied().filter(|s| ran.contains(s)).collect();
            // A failure under a schedule the file does not list is a new failure.
            if failed.iter().any(|s| !listed.contains(s)) {
                return Verdict::deviation(grade);
            }
            if failed.is_empty() && e.intermittent {
                return Verdict::Pass;
            }
            if !e.intermittent
                && (failed.is_empty() || (e.schedules.is_some() && listed_ran.iter().any(|s| !failed.contains(s))))
            {
                return Verdict::Xpass { reason: e.reason.clone() };
            }
            Verdict::ExpectedFailure { reason: e.reason.clone(), link: e.link.clone() }
        }
    }
}

/// Decides the verdict of a check that runs once, with no delivery schedules (an interop-lab
/// cell: a real client through a real server), from whether it passed and the expectation. The
/// same rules as [`decide`]: a MUST-grade check run once as written.
pub fn decide_check(passed: bool, message: &str, expected: Option<&ExpectedFailure>) -> Verdict {
    let failures: Vec<ScheduleFailure> = if passed {
        Vec::new()
    } else {
        vec![ScheduleFailure {
            schedule: Schedule::AsWritten,
            step: None,
            message: message.to_string(),
            transcript: Transcript::default(),
        }]
    };
    decide(Grade::Must, &[Schedule::AsWritten], &failures, expected)
}

/// Counts per verdict, for the summary line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Scenarios considered.
    pub total: usize,
    /// Passed.
    pub passed: usize,
    /// Failed a MUST.
    pub failed: usize,
    /// Failed a SHOULD.
    #[serde(default)]
    pub warned: usize,
    /// Failed a MAY or a project decision.
    #[serde(default)]
    pub policy: usize,
    /// Not applicable.
    pub not_applicable: usize,
    /// Expected failures.
    pub expected_failures: usize,
    /// Unexpected passes (errors).
    pub xpass: usize,
    /// Peer unavailable.
    #[serde(default)]
    pub unavailable: usize,
    /// Wall time of the whole run, in milliseconds.
    #[serde(default)]
    pub wall_millis: u64,
}

impl Summary {
    /// Tallies results.
    pub fn of(results: &[ScenarioResult]) -> Summary {
        Summary::of_verdicts(results.iter().map(|r| &r.verdict))
    }

    /// Tallies verdicts of any kind of check (the interop lab's cells as well as scenarios).
    pub fn of_verdicts<'a>(verdicts: impl IntoIterator<Item = &'a Verdict>) -> Summary {
        let mut s = Summary::default();
        for v in verdicts {
            s.total += 1;
            match v {
                Verdict::Pass => s.passed += 1,
                Verdict::Fail => s.failed += 1,
                Verdict::Warn => s.warned += 1,
                Verdict::Policy => s.policy += 1,
                Verdict::NotApplicable { .. } => s.not_applicable += 1,
                Verdict::ExpectedFailure { .. } => s.expected_failures += 1,
                Verdict::Xpass { .. } => s.xpass += 1,
                Verdict::Unavailable { .. } => s.unavailable += 1,
            }
        }
        s
    }

    /// Whether the run succeeded: no failure, no xpass, and no warn/policy when `strict` asks.
    pub fn ok(&self, strict: Strictness) -> bool {
        self.failed == 0 && self.xpass == 0 && !(strict.warn && self.warned > 0) && !(strict.policy && self.policy > 0)
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} scenarios: {} passed, {} failed (MUST), {} warn (SHOULD), {} policy, {} not applicable, {} expected failures, {} xpass",
            self.total,
            self.passed,
            self.failed,
            self.warned,
            self.policy,
            self.not_applicable,
            self.expected_failures,
            self.xpass
        )?;
        if self.unavailable > 0 {
            write!(f, ", {} unavailable", self.unavailable)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(s: Schedule) -> ScheduleFailure {
        ScheduleFailure { schedule: s, step: Some(0), message: "x".into(), transcript: Transcript::default() }
    }

    #[test]
    fn verdicts_follow_expectations() {
        let all = Schedule::ALL.to_vec();
        let e =
            ExpectedFailure { id: "a".into(), reason: "r".into(), link: None, schedules: None, intermittent: false };
        let must = Grade::Must;
        assert_eq!(decide(must, &all, &[], None), Verdict::Pass);
        assert_eq!(decide(must, &all, &[fail(Schedule::OneByte)], None), Verdict::Fail);
        assert!(matches!(decide(must, &all, &[fail(Schedule::OneByte)], Some(&e)), Verdict::ExpectedFailure { .. }));
        assert!(matches!(decide(must, &all, &[], Some(&e)), Verdict::Xpass { .. }));
        let only = ExpectedFailure { schedules: Some(vec![Schedule::OneByte]), ..e.clone() };
        assert!(matches!(decide(must, &all, &[fail(Schedule::OneByte)], Some(&only)), Verdict::ExpectedFailure { .. }));
        assert_eq!(decide(must, &all, &[fail(Schedule::AsWritten)], Some(&only)), Verdict::Fail);
        assert!(matches!(decide(must, &all, &[], Some(&only)), Verdict::Xpass { .. }));
        let racy = ExpectedFailure { intermittent: true, ..e.clone() };
        assert_eq!(decide(must, &all, &[], Some(&racy)), Verdict::Pass, "an intermittent deviation may pass");
    }

    #[test]
    fn a_check_run_once_follows_the_same_rules_and_keeps_the_link() {
        let e = ExpectedFailure {
            id: "udp-bypass.x".into(),
            reason: "r".into(),
            link: Some("https://example.invalid/1".into()),
            schedules: None,
            intermittent: false,
        };
        assert_eq!(decide_check(true, "", None), Verdict::Pass);
        assert_eq!(decide_check(false, "boom", None), Verdict::Fail);
        assert_eq!(
            decide_check(false, "boom", Some(&e)),
            Verdict::ExpectedFailure { reason: "r".into(), link: Some("https://example.invalid/1".into()) }
        );
        assert_eq!(decide_check(true, "", Some(&e)), Verdict::Xpass { reason: "r".into() });
        let racy = ExpectedFailure { intermittent: true, ..e };
        assert_eq!(decide_check(true, "", Some(&racy)), Verdict::Pass, "an intermittent cell may pass");
        // The serialised form without a link is the one older reports have.
        let old = serde_json::to_value(Verdict::ExpectedFailure { reason: "r".into(), link: None }).unwrap();
        assert_eq!(old, serde_json::json!({"verdict": "expected-failure", "reason": "r"}));
    }

    #[test]
    fn lab_cells_load_beside_the_scenarios_and_ids_stay_unique() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("expected.yaml");
        let entry = "  - id: udp-bypass.x\n    reason: relays\n    link: https://example.invalid/1\n";
        std::fs::write(&p, format!("peer: x\nexpected_failures: []\ncells:\n{entry}")).unwrap();
        let e = Expectations::load(&p).unwrap();
        assert_eq!(e.cell("udp-bypass.x").and_then(|c| c.link.as_deref()), Some("https://example.invalid/1"));
        assert!(e.get("udp-bypass.x").is_none(), "a cell entry is not a scenario entry");
        std::fs::write(&p, format!("peer: x\ncells:\n{entry}{entry}")).unwrap();
        assert!(Expectations::load(&p).unwrap_err().to_string().contains("listed twice"));
    }

    #[test]
    fn a_deviation_is_graded_by_the_level_it_breaks() {
        let all = Schedule::ALL.to_vec();
        let f = [fail(Schedule::AsWritten)];
        assert_eq!(decide(Grade::Should, &all, &f, None), Verdict::Warn);
        assert_eq!(decide(Grade::Policy, &all, &f, None), Verdict::Policy);
        assert_eq!(
            decide(Grade::Must, &all, &[fail(Schedule::Coalesced)], None),
            Verdict::Policy,
            "a failure only when pipelined is the project's rule (D-15), not the RFC's"
        );
        assert_eq!(
            decide(Grade::Must, &all, &[fail(Schedule::Coalesced), fail(Schedule::OneByte)], None),
            Verdict::Fail
        );
        assert_eq!(Grade::of(Level::Spec), Grade::Must);
        assert_eq!(Grade::of(Level::May), Grade::Policy);
        assert_eq!(Grade::of(Level::Project), Grade::Policy);
        let lax = Strictness::default();
        assert!(Verdict::Fail.is_error(lax) && !Verdict::Warn.is_error(lax) && !Verdict::Policy.is_error(lax));
        assert!(Verdict::Warn.is_error(Strictness { warn: true, policy: false }));
        assert!(Verdict::Policy.is_error(Strictness { warn: false, policy: true }));
        let s = Summary::of(&[ScenarioResult {
            id: "a".into(),
            title: "t".into(),
            grade: Grade::Policy,
            cites: vec![],
            instance: None,
            verdict: Verdict::Policy,
            schedules: all.clone(),
            failures: f.to_vec(),
            millis: 1,
        }]);
        assert!(s.ok(lax) && !s.ok(Strictness { warn: false, policy: true }));
    }
}
