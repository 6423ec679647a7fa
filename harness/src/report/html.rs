//! A self-contained HTML report of one run: the counts, then one row per scenario with its
//! verdict, the grade it is judged at and the requirements it cites (id, level and text), and for
//! every scenario that did not pass the failing schedules with their first failing step and the
//! transcript up to it. One file, no scripts, no external resources, so it can be attached to a
//! bug report or archived as a CI artifact.

use std::fmt::Write as _;

use super::Report;
use crate::verdict::{ScenarioResult, Verdict};

/// Escapes text for HTML (and XML) element content and attribute values; control characters
/// other than newline, tab and CR, which peers' logs may contain and XML 1.0 forbids even
/// escaped, become `?`. The interop lab's HTML uses it too.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' && c != '\r' => o.push('?'),
            c => o.push(c),
        }
    }
    o
}

/// The CSS class of a verdict's cell.
fn class(v: &Verdict) -> &'static str {
    match v {
        Verdict::Pass => "pass",
        Verdict::Fail | Verdict::Xpass { .. } => "fail",
        Verdict::Warn => "warn",
        Verdict::Policy => "policy",
        Verdict::ExpectedFailure { .. } => "xfail",
        Verdict::NotApplicable { .. } | Verdict::Unavailable { .. } => "na",
    }
}

/// Why a verdict was reached when it is not a plain pass or fail: the N/A reason, the
/// expected-failure reason, why the peer was unavailable.
fn reason(v: &Verdict) -> Option<&str> {
    match v {
        Verdict::NotApplicable { reason }
        | Verdict::ExpectedFailure { reason, .. }
        | Verdict::Xpass { reason }
        | Verdict::Unavailable { reason } => Some(reason),
        _ => None,
    }
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em}\
table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:.3em .5em;vertical-align:top;text-align:left}\
.pass{background:#dfd}.fail{background:#fbb}.warn{background:#fe9}.policy{background:#def}.xfail{background:#eee}.na{color:#777}\
pre{white-space:pre-wrap;margin:.3em 0;font-size:12px}details{margin:.2em 0}.cite{font-size:12px;color:#333}";

/// Renders `r` as one HTML page.
pub fn render(r: &Report) -> String {
    let s = &r.summary;
    let mut o = String::new();
    let _ = write!(
        o,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>sockslab: {t}</title><style>{STYLE}</style></head><body>\
         <h1>sockslab: {t}</h1><p>{} scenarios in {:.1} s: <b>{} passed</b>, {} failed (MUST), {} warn (SHOULD), \
         {} policy, {} not applicable, {} expected failures, {} xpass, {} unavailable.</p>\
         <p>FAIL is a deviation from a MUST or a message format; WARN from a SHOULD; POLICY from a MAY or from this \
         project's own decision (D-, R-, V- ids), never an RFC failure.</p>\
         <table><tr><th>verdict</th><th>judged at</th><th>scenario</th><th>requirements</th><th>details</th></tr>",
        s.total,
        s.wall_millis as f64 / 1000.0,
        s.passed,
        s.failed,
        s.warned,
        s.policy,
        s.not_applicable,
        s.expected_failures,
        s.xpass,
        s.unavailable,
        t = escape(&r.target),
    );
    for res in &r.results {
        row(&mut o, res);
    }
    o.push_str("</table></body></html>\n");
    o
}

/// One scenario's row.
fn row(o: &mut String, res: &ScenarioResult) {
    let instance = res.instance.as_deref().map(|i| format!(" <i>[{}]</i>", escape(i))).unwrap_or_default();
    let _ = write!(
        o,
        "<tr><td class=\"{}\">{}</td><td>{}</td><td><b>{}</b>{instance}<br>{}</td><td>",
        class(&res.verdict),
        res.verdict.label(),
        res.grade.label(),
        escape(&res.id),
        escape(&res.title)
    );
    for c in &res.cites {
        let _ = write!(o, "<div class=\"cite\"><b>{}</b> ({:?}): {}</div>", escape(&c.id), c.level, escape(&c.text));
    }
    o.push_str("</td><td>");
    if let Some(why) = reason(&res.verdict) {
        let _ = write!(o, "<div>{}</div>", escape(why));
    }
    for f in &res.failures {
        let step = f.step.map(|s| format!("step {s}: ")).unwrap_or_default();
        let _ = write!(o, "<details><summary>{}: {step}{}</summary><pre>", f.schedule.name(), escape(&f.message));
        for e in &f.transcript.entries {
            let _ = writeln!(o, "{:>6} ms  {}", e.at_ms, escape(&e.line));
        }
        o.push_str("</pre></details>");
    }
    o.push_str("</td></tr>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Schedule;
    use crate::verdict::{Cited, Grade, ScheduleFailure};

    fn result(id: &str, verdict: Verdict) -> ScenarioResult {
        ScenarioResult {
            id: id.into(),
            title: "a <title> & more".into(),
            grade: Grade::Must,
            cites: vec![Cited {
                id: "RFC1928-6-failure-close".into(),
                level: crate::coverage::Level::Must,
                text: "the server MUST terminate".into(),
            }],
            instance: None,
            verdict,
            schedules: vec![Schedule::AsWritten],
            failures: Vec::new(),
            millis: 3,
        }
    }

    #[test]
    fn the_page_shows_verdict_grade_requirement_and_failure_escaped() {
        let mut failed = result("x.fail", Verdict::Fail);
        failed.failures.push(ScheduleFailure {
            schedule: Schedule::AsWritten,
            step: Some(2),
            message: "expected <05 00>".into(),
            transcript: Default::default(),
        });
        let na = result("x.na", Verdict::NotApplicable { reason: "needs bind".into() });
        let page = render(&Report::new("socks5://127.0.0.1:1080", vec![failed, na]));
        assert!(page.contains("<td class=\"fail\">FAIL</td><td>MUST</td>"), "{page}");
        assert!(page.contains("RFC1928-6-failure-close</b> (Must): the server MUST terminate"), "{page}");
        assert!(page.contains("step 2: expected &lt;05 00&gt;"), "{page}");
        assert!(page.contains("a &lt;title&gt; &amp; more"), "{page}");
        assert!(page.contains("<td class=\"na\">N/A</td>") && page.contains("needs bind"), "{page}");
        assert!(page.contains("2 scenarios") && page.contains("1 failed (MUST)"), "{page}");
        assert!(page.starts_with("<!doctype html>") && page.ends_with("</html>\n"));
    }
}
