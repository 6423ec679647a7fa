//! JUnit XML report: one testcase per scenario; fail and xpass are failures, not-applicable is
//! skipped, expected failures pass with their reason in `system-out`.

use std::fmt::Write as _;

use super::Report;
use crate::verdict::Verdict;

/// Escapes text for XML attributes and character data.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            // XML 1.0 forbids most control characters even when escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => o.push('?'),
            c => o.push(c),
        }
    }
    o
}

/// Renders the report as a JUnit XML document.
pub fn render(r: &Report) -> String {
    let s = &r.summary;
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    // Scenarios run concurrently: the suite's time is the run's wall time, not the sum.
    let secs = s.wall_millis as f64 / 1000.0;
    let _ = writeln!(
        x,
        "<testsuites><testsuite name=\"sockslab {}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{secs:.3}\">",
        escape(&r.target),
        s.total,
        s.failed + s.xpass,
        s.not_applicable
    );
    for t in &r.results {
        let class = t.id.split('.').next().unwrap_or("sockslab");
        let _ = write!(
            x,
            "  <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\">",
            escape(class),
            escape(&t.id),
            t.millis as f64 / 1000.0
        );
        let cited: String = t
            .cites
            .iter()
            .map(|c| format!("{} ({:?}): {}\n", c.id, c.level, c.text))
            .collect::<String>()
            .to_lowercase();
        let details: String = t
            .failures
            .iter()
            .map(|f| format!("[{}] step {:?}: {}\n", f.schedule.name(), f.step, f.message))
            .collect::<String>()
            + &cited;
        match &t.verdict {
            Verdict::Pass => {}
            Verdict::Fail => {
                let _ = write!(
                    x,
                    "<failure message=\"{} ({})\">{}</failure>",
                    escape(&t.title),
                    t.grade.label(),
                    escape(&details)
                );
            }
            Verdict::Warn | Verdict::Policy => {
                let _ = write!(
                    x,
                    "<system-out>{} ({} deviation, not an RFC failure)\n{}</system-out>",
                    t.verdict.label(),
                    t.grade.label(),
                    escape(&details)
                );
            }
            Verdict::Unavailable { reason } => {
                let _ = write!(x, "<skipped message=\"unavailable: {}\"/>", escape(reason));
            }
            Verdict::Xpass { reason } => {
                let _ =
                    write!(x, "<failure message=\"unexpected pass (expected failure: {})\"></failure>", escape(reason));
            }
            Verdict::NotApplicable { reason } => {
                let _ = write!(x, "<skipped message=\"{}\"/>", escape(reason));
            }
            Verdict::ExpectedFailure { reason } => {
                let _ =
                    write!(x, "<system-out>expected failure: {}\n{}</system-out>", escape(reason), escape(&details));
            }
        }
        x.push_str("</testcase>\n");
    }
    x.push_str("</testsuite></testsuites>\n");
    x
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
        assert!(x.contains("tests=\"4\" failures=\"2\" skipped=\"1\""), "{x}");
        assert!(x.contains("t &lt;&amp;&gt;"));
        assert_eq!(x.matches("<failure").count(), 2);
    }
}
