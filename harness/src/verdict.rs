//! Verdicts are data: pass, fail, not-applicable, expected-failure (with a reason) and xpass.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::scenario::{yaml, LoadError, Schedule};

/// The outcome of one scenario against one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "verdict")]
pub enum Verdict {
    /// Passed under every schedule it ran under.
    Pass,
    /// Failed, and the peer's expected results do not list it.
    Fail,
    /// The peer does not claim a capability the scenario needs; decided before running.
    NotApplicable {
        /// Which capability is missing.
        reason: String,
    },
    /// Failed, as the peer's expected results say it should.
    ExpectedFailure {
        /// Why the peer deviates, from the expected-results file.
        reason: String,
    },
    /// Listed as an expected failure but passed: the expected-results file is stale. An error.
    Xpass {
        /// The reason the file gave for the expected failure.
        reason: String,
    },
}

impl Verdict {
    /// Short upper-case label for terminal output.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::NotApplicable { .. } => "N/A",
            Verdict::ExpectedFailure { .. } => "XFAIL",
            Verdict::Xpass { .. } => "XPASS",
        }
    }

    /// Whether this verdict makes a run fail (exit code 1).
    pub fn is_error(&self) -> bool {
        matches!(self, Verdict::Fail | Verdict::Xpass { .. })
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
}

/// A scenario's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScenarioResult {
    /// Scenario id.
    pub id: String,
    /// Scenario title.
    pub title: String,
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

/// One entry of a peer's expected-results file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedFailure {
    /// Scenario id.
    pub id: String,
    /// Why the peer deviates from the catalogue's expectation.
    pub reason: String,
    /// Only under these schedules (all schedules when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedules: Option<Vec<Schedule>>,
    /// The deviation is a race in the peer (it shows only when the peer's timing lines up), so
    /// a pass is accepted rather than reported as xpass. The reason must say what the race is;
    /// a failure outside the listed schedules is still a new failure.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub intermittent: bool,
}

/// A peer's expected-results file (`harness/peers/<peer>/expected.yaml`).
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
}

impl Expectations {
    /// Loads an expected-results file; ids must be unique.
    pub fn load(path: &Path) -> Result<Expectations, LoadError> {
        let e: Expectations = yaml::from_file(path)?;
        let mut seen = BTreeMap::new();
        for f in &e.expected_failures {
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
}

/// Decides the verdict of a scenario that ran, from its per-schedule failures and the expectation.
pub fn decide(ran: &[Schedule], failures: &[ScheduleFailure], expected: Option<&ExpectedFailure>) -> Verdict {
    let failed: Vec<Schedule> = failures.iter().map(|f| f.schedule).collect();
    match expected {
        None if failed.is_empty() => Verdict::Pass,
        None => Verdict::Fail,
        Some(e) => {
            let listed: Vec<Schedule> = e.schedules.clone().unwrap_or_else(|| ran.to_vec());
            let listed_ran: Vec<Schedule> = listed.iter().copied().filter(|s| ran.contains(s)).collect();
            // A failure under a schedule the file does not list is a new failure.
            if failed.iter().any(|s| !listed.contains(s)) {
                return Verdict::Fail;
            }
            if failed.is_empty() && e.intermittent {
                return Verdict::Pass;
            }
            if !e.intermittent
                && (failed.is_empty() || (e.schedules.is_some() && listed_ran.iter().any(|s| !failed.contains(s))))
            {
                return Verdict::Xpass { reason: e.reason.clone() };
            }
            Verdict::ExpectedFailure { reason: e.reason.clone() }
        }
    }
}

/// Counts per verdict, for the summary line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Scenarios considered.
    pub total: usize,
    /// Passed.
    pub passed: usize,
    /// Failed.
    pub failed: usize,
    /// Not applicable.
    pub not_applicable: usize,
    /// Expected failures.
    pub expected_failures: usize,
    /// Unexpected passes (errors).
    pub xpass: usize,
}

impl Summary {
    /// Tallies results.
    pub fn of(results: &[ScenarioResult]) -> Summary {
        let mut s = Summary { total: results.len(), ..Summary::default() };
        for r in results {
            match r.verdict {
                Verdict::Pass => s.passed += 1,
                Verdict::Fail => s.failed += 1,
                Verdict::NotApplicable { .. } => s.not_applicable += 1,
                Verdict::ExpectedFailure { .. } => s.expected_failures += 1,
                Verdict::Xpass { .. } => s.xpass += 1,
            }
        }
        s
    }

    /// Whether the run succeeded (no failure, no xpass).
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.xpass == 0
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} scenarios: {} passed, {} failed, {} not applicable, {} expected failures, {} xpass",
            self.total, self.passed, self.failed, self.not_applicable, self.expected_failures, self.xpass
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(s: Schedule) -> ScheduleFailure {
        ScheduleFailure { schedule: s, step: Some(0), message: "x".into() }
    }

    #[test]
    fn verdicts_follow_expectations() {
        let all = Schedule::ALL.to_vec();
        let e = ExpectedFailure { id: "a".into(), reason: "r".into(), schedules: None, intermittent: false };
        assert_eq!(decide(&all, &[], None), Verdict::Pass);
        assert_eq!(decide(&all, &[fail(Schedule::OneByte)], None), Verdict::Fail);
        assert!(matches!(decide(&all, &[fail(Schedule::OneByte)], Some(&e)), Verdict::ExpectedFailure { .. }));
        assert!(matches!(decide(&all, &[], Some(&e)), Verdict::Xpass { .. }));
        let only = ExpectedFailure { schedules: Some(vec![Schedule::OneByte]), ..e.clone() };
        assert!(matches!(decide(&all, &[fail(Schedule::OneByte)], Some(&only)), Verdict::ExpectedFailure { .. }));
        assert_eq!(decide(&all, &[fail(Schedule::AsWritten)], Some(&only)), Verdict::Fail);
        assert!(matches!(decide(&all, &[], Some(&only)), Verdict::Xpass { .. }));
        let racy = ExpectedFailure { intermittent: true, ..e.clone() };
        assert_eq!(decide(&all, &[], Some(&racy)), Verdict::Pass, "an intermittent deviation may pass");
    }
}
