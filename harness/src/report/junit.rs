//! JUnit XML report: one testcase per scenario; fail and xpass are failures, not-applicable is
//! skipped, expected failures pass with their reason in `system-out`.
//!
//! The XML is written by the `quick-junit` crate (escaping, counts, the element order CI tools
//! expect); [`case`] maps this workspace's outcomes onto it, so the interop lab's report uses the
//! same mapping as `sockslab check`.

use std::time::Duration;

pub use quick_junit;
use quick_junit::{NonSuccessKind, Report as JunitReport, TestCase, TestCaseStatus, TestSuite};

use super::Report;
use crate::verdict::Verdict;

/// How one test case ended, in JUnit's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Passed; an optional note (a WARN, an expected failure's reason) goes to `system-out`.
    Pass {
        /// Text for `system-out`, if any.
        note: Option<String>,
    },
    /// A failure (FAIL, XPASS): `message` is the attribute, `details` the element's text.
    Failure {
        /// One line: what failed.
        message: String,
        /// Steps, logs, how to reproduce.
        details: String,
    },
    /// Not run (not applicable, unavailable), with the reason.
    Skipped {
        /// Why it did not run.
        message: String,
    },
}

/// One JUnit test case named `name` in class `classname` that took `time`.
pub fn case(name: &str, classname: &str, time: Duration, outcome: Outcome) -> TestCase {
    let (status, out) = match outcome {
        Outcome::Pass { note } => (TestCaseStatus::success(), note),
        Outcome::Failure { message, details } => {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_message(message);
            if !details.is_empty() {
                s.set_description(details);
            }
            (s, None)
        }
        Outcome::Skipped { message } => {
            let mut s = TestCaseStatus::skipped();
            s.set_message(message);
            (s, None)
        }
    };
    let mut c = TestCase::new(name, status);
    c.set_classname(classname).set_time(time);
    if let Some(out) = out {
        c.set_system_out(out);
    }
    c
}

/// Serialises a JUnit report. quick-junit only fails on a writer error, which a `String` never
/// has; should it happen anyway the document says so rather than being silently empty.
pub fn to_xml(r: &JunitReport) -> String {
    r.to_string().unwrap_or_else(|e| format!("<!-- JUnit serialisation failed: {e} -->\n"))
}

/// The outcome of one scenario.
fn outcome(t: &crate::verdict::ScenarioResult) -> Outcome {
    let cited: String =
        t.cites.iter().map(|c| format!("{} ({:?}): {}\n", c.id, c.level, c.text)).collect::<String>().to_lowercase();
    let details: String = t
        .failures
        .iter()
        .map(|f| format!("[{}] step {:?}: {}\n", f.schedule.name(), f.step, f.message))
        .collect::<String>()
        + &cited;
    match &t.verdict {
        Verdict::Pass => Outcome::Pass { note: None },
        Verdict::Fail => Outcome::Failure { message: format!("{} ({})", t.title, t.grade.label()), details },
        Verdict::Warn | Verdict::Policy => Outcome::Pass {
            note: Some(format!("{} ({} deviation, not an RFC failure)\n{details}", t.verdict.label(), t.grade.label())),
        },
        Verdict::Unavailable { reason } => Outcome::Skipped { message: format!("unavailable: {reason}") },
        Verdict::Xpass { reason } => Outcome::Failure {
            message: format!("unexpected pass (expected failure: {reason})"),
            details: String::new(),
        },
        Verdict::NotApplicable { reason } => Outcome::Skipped { message: reason.clone() },
        Verdict::ExpectedFailure { reason, link } => {
            let link = link.as_ref().map(|l| format!(" (see {l})")).unwrap_or_default();
            Outcome::Pass { note: Some(format!("expected failure: {reason}{link}\n{details}")) }
        }
    }
}

/// Renders the report as a JUnit XML document.
pub fn render(r: &Report) -> String {
    let mut suite = TestSuite::new(format!("sockslab {}", r.target));
    // Scenarios run concurrently: the suite's time is the run's wall time, not the sum.
    suite.set_time(Duration::from_millis(r.summary.wall_millis));
    for t in &r.results {
        let class = t.id.split('.').next().unwrap_or("sockslab");
        suite.add_test_case(case(&t.id, class, Duration::from_millis(t.millis), outcome(t)));
    }
    let mut report = JunitReport::new("sockslab");
    report.add_test_suite(suite);
    to_xml(&report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::ScenarioResult;

    #[test]
    fn junit_marks_fail_and_xpass_as_failures() {
        let mk = |id: &str, v: Verdict| ScenarioResult {
            id: id.into(),
            title: "t <&>".into(),
            grade: crate::verdict::Grade::Must,
            cites: vec![],
            instance: None,
            verdict: v,
            schedules: vec![],
            failures: vec![],
            millis: 5,
        };
        let r = Report::new(
            "socks5://x",
            vec![
                mk("a.1", Verdict::Pass),
                mk("a.2", Verdict::Fail),
                mk("a.3", Verdict::Xpass { reason: "r".into() }),
                mk("a.4", Verdict::NotApplicable { reason: "n".into() }),
            ],
        );
        let x = render(&r);
        let suite = x.lines().find(|l| l.contains("<testsuite ")).expect("a testsuite element");
        for count in ["tests=\"4\"", "failures=\"2\"", "skipped=\"1\""] {
            assert!(suite.contains(count), "{count} in {suite}");
        }
        assert!(x.contains("t &lt;&amp;&gt;"));
        assert_eq!(x.matches("<failure").count(), 2);
    }
}
