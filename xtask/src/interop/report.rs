//! The interop reports: JSON (everything), JUnit XML (CI dashboards) and a static HTML page with
//! the pass/fail matrix, the behaviour-diff view, the UDP bypass observations and the catalogue.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::behaviour::Row;
use super::bypass::Observations;
use super::{CellResult, Kind, Verdict, CLIENTS, SERVERS, STRICT};
use crate::peers::{Backend, Feature, PeerId};
use sockslab::verdict::Summary;

/// Facts about the run.
#[derive(Debug, Serialize, Deserialize)]
pub struct Meta {
    /// Which backend ran the peers.
    pub backend: Backend,
    /// Total wall time.
    pub seconds: f64,
    /// Time spent preparing binaries and images.
    pub prepare_seconds: f64,
    /// Pinned version per peer.
    pub versions: BTreeMap<String, String>,
    /// Peers that could not be obtained, with the reason.
    pub unavailable: BTreeMap<String, String>,
}

/// Which plan a report covers and which parts of it ran, so shard reports can be merged and
/// checked against each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanInfo {
    /// Every cell id of the whole (unsharded, filtered) plan, in report order.
    pub cells: Vec<String>,
    /// Into how many shards the plan was split (1: not sharded).
    pub of: u32,
    /// The shards this report holds, with their own wall times.
    pub shards: Vec<ShardRun>,
}

/// One shard's run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardRun {
    /// Which shard (1-based).
    pub index: u32,
    /// Its wall time.
    pub seconds: f64,
    /// Of which preparing peers.
    pub prepare_seconds: f64,
    /// Wall time per phase, in run order.
    #[serde(default)]
    pub phases: Vec<Phase>,
}

/// One phase of a run and its wall time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// What ran.
    pub name: String,
    /// For how long.
    pub seconds: f64,
}

/// The whole report.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    /// Run facts.
    pub meta: Meta,
    /// The plan this report is (a part of).
    pub plan: PlanInfo,
    /// Counts per verdict (the harness's summary: the lab's cells are verdicts like scenarios).
    pub summary: Summary,
    /// Every cell.
    pub cells: Vec<CellResult>,
    /// Behaviour-diff observations per server.
    pub behaviour: BTreeMap<PeerId, Vec<Row>>,
    /// UDP bypass observations per server.
    pub udp_bypass: BTreeMap<PeerId, Observations>,
}

/// The most peer log a cell keeps: its tail. The catalogue gives every failing scenario the whole
/// server log of its run, so 50 failing scenarios made a 55 MB JSON and a 75 MB HTML page that a
/// browser can hardly open; the tail is where the failure is, and the reproducer gets the rest.
pub const LOG_TAIL: usize = 16 * 1024;

/// `logs` cut to its last [`LOG_TAIL`] bytes at a line start, saying how much was cut.
fn log_tail(logs: String) -> String {
    if logs.len() <= LOG_TAIL {
        return logs;
    }
    let mut from = logs.len() - LOG_TAIL;
    while !logs.is_char_boundary(from) {
        from += 1;
    }
    if let Some(nl) = logs[from..].find('\n') {
        from += nl + 1;
    }
    format!("[{from} earlier bytes of the log cut; run the reproducer for all of it]\n{}", &logs[from..])
}

impl Report {
    /// Builds the report and its summary, keeping only the tail of each cell's logs.
    pub fn new(
        meta: Meta,
        plan: PlanInfo,
        mut cells: Vec<CellResult>,
        behaviour: BTreeMap<PeerId, Vec<Row>>,
        udp_bypass: BTreeMap<PeerId, Observations>,
    ) -> Report {
        for c in &mut cells {
            c.logs = log_tail(std::mem::take(&mut c.logs));
        }
        let s = Summary::of_verdicts(cells.iter().map(|c| &c.status));
        Report { meta, plan, summary: s, cells, behaviour, udp_bypass }
    }
}

/// Turns a probe name read from a saved report into the `&'static str` the observation types use
/// for their fixed names. Only `interop report --merge` reads reports, once per file in a
/// short-lived process, so the leaked bytes are bounded by the input size.
pub(super) fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

use sockslab::report::html::escape as esc;

fn reason(s: &Verdict) -> String {
    match s {
        Verdict::NotApplicable { reason } | Verdict::Xpass { reason } | Verdict::Unavailable { reason } => {
            reason.clone()
        }
        Verdict::ExpectedFailure { reason, link } => match link {
            Some(l) => format!("{reason} ({l})"),
            None => reason.clone(),
        },
        _ => String::new(),
    }
}

/// JUnit XML: one testsuite per kind; N/A and unavailable are `skipped` with the reason, XFAIL
/// passes with the reason as system-out, FAIL and XPASS are failures. Written by the harness's
/// JUnit writer, so both reports map outcomes alike.
pub fn junit(r: &Report) -> String {
    use sockslab::report::junit::{case, quick_junit, to_xml, Outcome};
    let mut report = quick_junit::Report::new("sockslab interop");
    for (kind, name) in [
        (Kind::Feature, "features"),
        (Kind::UdpBypass, "udp-bypass"),
        (Kind::Scenario, "catalogue"),
        (Kind::Transport, "transports"),
    ] {
        let mut suite = quick_junit::TestSuite::new(format!("interop.{name}"));
        for c in r.cells.iter().filter(|c| c.cell.kind == kind) {
            let outcome = match &c.status {
                Verdict::Pass => Outcome::Pass { note: None },
                Verdict::Fail | Verdict::Warn | Verdict::Policy | Verdict::Xpass { .. } => Outcome::Failure {
                    message: format!("{}: {}", c.status.label(), reason(&c.status)),
                    details: format!("{}\nreproduce: {}\n{}", c.detail, c.reproduce, c.logs),
                },
                Verdict::NotApplicable { .. } | Verdict::Unavailable { .. } => {
                    Outcome::Skipped { message: format!("{}: {}", c.status.label(), reason(&c.status)) }
                }
                Verdict::ExpectedFailure { .. } => {
                    Outcome::Pass { note: Some(format!("XFAIL: {}", reason(&c.status))) }
                }
            };
            let classname = format!("interop.{name}.{}", c.cell.server.name());
            suite.add_test_case(case(&c.cell.id, &classname, Duration::from_millis(c.millis), outcome));
        }
        report.add_test_suite(suite);
    }
    to_xml(&report)
}

/// The transport axis (`--transport`): per feature, transports down, client → server across.
fn transport_matrix(o: &mut String, r: &Report, by_id: &BTreeMap<&str, &CellResult>) {
    let cells: Vec<&CellResult> = r.cells.iter().filter(|c| c.cell.kind == Kind::Transport).collect();
    if cells.is_empty() {
        return;
    }
    let pairs = [
        (PeerId::Reference, PeerId::Reference),
        (PeerId::Reference, PeerId::Gost),
        (PeerId::Gost, PeerId::Reference),
        (PeerId::Gost, PeerId::Gost),
    ];
    o.push_str("<h2>Transport matrix (transport ↓ × client → server)</h2><div class=\"grid\">");
    for f in [Feature::Socks5Connect, Feature::UdpTun, Feature::Mbind] {
        let _ = write!(o, "<div><h3>{}</h3><table><tr><th></th>", f.name());
        for (c, s) in pairs {
            let _ = write!(o, "<th>{c} → {s}</th>");
        }
        o.push_str("</tr>");
        for t in super::transport::TRANSPORTS {
            if !cells.iter().any(|c| c.cell.transport.as_deref() == Some(t)) {
                continue;
            }
            let _ = write!(o, "<tr><th>{t}</th>");
            for (cl, sv) in pairs {
                matrix_cell(o, by_id.get(super::transport::cell_id(t, f, cl, sv).as_str()).copied(), false);
            }
            o.push_str("</tr>");
        }
        o.push_str("</table></div>");
    }
    o.push_str("</div><details><summary>Transport cells in detail</summary><table><tr><th>cell</th><th>verdict</th><th>detail</th></tr>");
    for c in cells {
        let _ = write!(
            o,
            "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            esc(&c.cell.id),
            class(&c.status),
            c.status.label(),
            esc(c.detail.lines().next().unwrap_or_default())
        );
    }
    o.push_str("</table></details>");
}

fn class(s: &Verdict) -> &'static str {
    match s {
        Verdict::Pass => "pass",
        // The lab holds WARN and POLICY to be errors (`STRICT`): they show as failures.
        Verdict::Fail | Verdict::Warn | Verdict::Policy => "fail",
        Verdict::NotApplicable { .. } => "na",
        Verdict::ExpectedFailure { .. } => "xfail",
        Verdict::Xpass { .. } => "xpass",
        Verdict::Unavailable { .. } => "unavail",
    }
}

fn anchor(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect()
}

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ccc}
h3{font-size:15px;margin:16px 0 6px}
table{border-collapse:collapse;margin:4px 0 12px} th,td{border:1px solid #bbb;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0} td.pass{background:#c8efc8} td.fail,td.xpass{background:#f5b3b3;font-weight:bold}
td.xfail{background:#f7e3a1} td.na{background:#eee;color:#888} td.unavail{background:#d8d8f0;color:#446}
td.diff{background:#fff3cd} .small{font-size:12px;color:#555} pre{background:#f7f7f7;padding:8px;overflow:auto;max-height:320px;font-size:12px}
.grid{display:flex;flex-wrap:wrap;gap:18px} .legend span{display:inline-block;padding:1px 8px;margin-right:6px;border:1px solid #bbb}
code{background:#f3f3f3;padding:0 3px} td a{color:inherit}
"#;

/// The static HTML page: the run's facts, then one section per view, each written by its own
/// function in page order.
pub fn html(r: &Report) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>sockslab interop</title><style>{STYLE}</style></head><body>"
    );
    run_summary(&mut o, r);
    peers_and_phases(&mut o, r);
    let by_id: BTreeMap<&str, &CellResult> = r.cells.iter().map(|c| (c.cell.id.as_str(), c)).collect();
    feature_matrix(&mut o, r, &by_id);
    transport_matrix(&mut o, r, &by_id);
    udp_bypass_section(&mut o, r);
    behaviour_section(&mut o, r);
    catalogue_section(&mut o, r);
    failing_cells(&mut o, r);
    o.push_str("</body></html>\n");
    o
}

/// The counts per verdict, in the one wording the summary line and the page share.
pub fn counts(s: &Summary) -> String {
    format!(
        "{} pass, {} fail, {} warn, {} policy, {} xfail, {} xpass, {} n/a, {} unavailable",
        s.passed, s.failed, s.warned, s.policy, s.expected_failures, s.xpass, s.not_applicable, s.unavailable
    )
}

/// The heading: backend, wall time, counts per verdict, the shard note and the legend.
fn run_summary(o: &mut String, r: &Report) {
    let s = &r.summary;
    let _ = write!(
        o,
        "<h1>sockslab interop matrix</h1><p class=\"small\">backend <b>{:?}</b>, {:.1} s (of which preparing peers {:.1} s). \
         {} cells: {}.</p>",
        r.meta.backend,
        r.meta.seconds,
        r.meta.prepare_seconds,
        s.total,
        counts(s)
    );
    if let [only] = &r.plan.shards[..] {
        if r.plan.of > 1 {
            let _ = write!(
                o,
                "<p class=\"small\">Shard {}/{}: {} of the plan's {} cells. <code>cargo xtask interop report --merge</code> \
                 with the other shards' <code>interop.json</code> gives the whole matrix.</p>",
                only.index,
                r.plan.of,
                r.cells.len(),
                r.plan.cells.len()
            );
        }
    } else if r.plan.of > 1 {
        let parts: Vec<String> =
            r.plan.shards.iter().map(|x| format!("{}/{} in {:.1} s", x.index, r.plan.of, x.seconds)).collect();
        let _ = write!(
            o,
            "<p class=\"small\">Merged from {} of {} shards ({}); the time above is the slowest shard's.</p>",
            r.plan.shards.len(),
            r.plan.of,
            esc(&parts.join(", "))
        );
    }
    o.push_str(
        "<p class=\"legend\"><span style=\"background:#c8efc8\">PASS</span><span style=\"background:#f5b3b3\">FAIL / XPASS</span>\
         <span style=\"background:#f7e3a1\">XFAIL (expected, with reason)</span><span style=\"background:#eee\">N/A (not claimed)</span>\
         <span style=\"background:#d8d8f0\">UNAVAILABLE (peer not obtainable)</span></p>",
    );
}

/// The peers with their versions and availability, and where the time went per shard.
fn peers_and_phases(o: &mut String, r: &Report) {
    o.push_str("<h3>Peers</h3><table><tr><th>peer</th><th>version</th><th>availability</th></tr>");
    for p in PeerId::ALL {
        let avail = r.meta.unavailable.get(p.name()).cloned().unwrap_or_else(|| "ready".into());
        let version = r.meta.versions.get(p.name()).map(String::as_str).unwrap_or("");
        let _ = write!(o, "<tr><td>{p}</td><td>{}</td><td>{}</td></tr>", esc(version), esc(&avail));
    }
    o.push_str("</table>");

    // Where the time went, per shard.
    if r.plan.shards.iter().any(|x| !x.phases.is_empty()) {
        o.push_str(
            "<details><summary>Time by phase</summary><table><tr><th>shard</th><th>phase</th><th>seconds</th></tr>",
        );
        for x in &r.plan.shards {
            for p in &x.phases {
                let _ = write!(
                    o,
                    "<tr><td>{}/{}</td><td>{}</td><td>{:.1}</td></tr>",
                    x.index,
                    r.plan.of,
                    esc(&p.name),
                    p.seconds
                );
            }
        }
        o.push_str("</table></details>");
    }
}

/// The pass/fail view: one table per feature, clients down, servers across.
fn feature_matrix(o: &mut String, r: &Report, by_id: &BTreeMap<&str, &CellResult>) {
    // Pass/fail view: one table per feature, clients down, servers across.
    o.push_str("<h2>Feature matrix (client ↓ × server →)</h2><div class=\"grid\">");
    for f in Feature::ALL {
        if !r.cells.iter().any(|c| c.cell.kind == Kind::Feature && c.cell.feature == Some(f)) {
            continue;
        }
        let _ = write!(o, "<div><h3>{}</h3><table><tr><th></th>", f.name());
        for sv in SERVERS {
            let _ = write!(o, "<th>{sv}</th>");
        }
        o.push_str("</tr>");
        for cl in CLIENTS {
            let _ = write!(o, "<tr><th>{cl}</th>");
            for sv in SERVERS {
                let id = format!("{}.{}.{}", f.name(), cl.name(), sv.name());
                matrix_cell(o, by_id.get(id.as_str()).copied(), true);
            }
            o.push_str("</tr>");
        }
        o.push_str("</table></div>");
    }
    o.push_str("</div>");
}

/// The UDP authentication bypass observations per server, and the bypass cells' verdicts.
fn udp_bypass_section(o: &mut String, r: &Report) {
    // UDP bypass.
    if !r.udp_bypass.is_empty() || r.cells.iter().any(|c| c.cell.kind == Kind::UdpBypass) {
        o.push_str(
            "<h2>UDP authentication bypass (V-01, <a href=\"https://github.com/v2fly/v2fly-github-io/issues/104\">v2fly/v2fly-github-io#104</a>)</h2>\
             <p class=\"small\">Password-protected server with UDP on, started for these alone. Each row is a catalogue scenario \
             (<code>regressions.v01.*</code>, played by the runner in this order) whose probe is a SOCKS5 UDP datagram from a source that never \
             authenticated; <i>Relayed</i> = a reply came back where the scenario expected none, <i>ForwardedNoReply</i> = only the \
             echo target saw it, <i>Dropped</i> = the scenario passed.</p><table><tr><th>scenario</th>",
        );
        let servers: Vec<PeerId> = r.udp_bypass.keys().copied().collect();
        for sv in &servers {
            let _ = write!(o, "<th>{sv}</th>");
        }
        o.push_str("</tr><tr><td>control (authenticated): ");
        // Every server's control is the same scenario; the first names it.
        if let Some(obs) = r.udp_bypass.values().next() {
            o.push_str(&esc(&obs.control));
        }
        o.push_str("</td>");
        // A server whose control did not relay has a failed cell and no observations here.
        for _ in &servers {
            o.push_str("<td>Relayed</td>");
        }
        o.push_str("</tr>");
        let mut rows: Vec<&str> = Vec::new();
        for obs in r.udp_bypass.values() {
            for p in &obs.probes {
                if !rows.contains(&p.scenario.as_str()) {
                    rows.push(&p.scenario);
                }
            }
        }
        for scenario in rows {
            let _ = write!(o, "<tr><td>{}</td>", esc(scenario));
            for sv in &servers {
                match r.udp_bypass[sv].probes.iter().find(|p| p.scenario == scenario) {
                    Some(p) => {
                        let c = if p.fate == super::bypass::Fate::Dropped { "pass" } else { "xfail" };
                        let _ = write!(o, "<td class=\"{c}\">{:?}</td>", p.fate);
                    }
                    None => o.push_str("<td class=\"na\">—</td>"),
                }
            }
            o.push_str("</tr>");
        }
        o.push_str("</table><table><tr><th>cell</th><th>verdict</th><th>why</th></tr>");
        for c in r.cells.iter().filter(|c| c.cell.kind == Kind::UdpBypass) {
            let _ = write!(
                o,
                "<tr><td>{}</td><td class=\"{}\" data-cell=\"{}\" data-verdict=\"{}\">{}</td><td>{} {}</td></tr>",
                c.cell.id,
                class(&c.status),
                esc(&c.cell.id),
                c.status.label(),
                c.status.label(),
                esc(&c.detail),
                esc(&reason(&c.status))
            );
        }
        o.push_str("</table>");
    }
}

/// The behaviour diff: the same raw requests to every server, disagreements highlighted.
fn behaviour_section(o: &mut String, r: &Report) {
    // Behaviour diff.
    if !r.behaviour.is_empty() {
        o.push_str(
            "<h2>Behaviour diff</h2><p class=\"small\">The same raw requests to every server (open instance; the last two rows: the password instance). \
             Rows where the peers disagree are highlighted. Ports in BND are shown as <code>port</code>.</p><table><tr><th>probe</th><th>request</th>",
        );
        let servers: Vec<PeerId> = r.behaviour.keys().copied().collect();
        for sv in &servers {
            let _ = write!(o, "<th>{sv}</th>");
        }
        o.push_str("</tr>");
        let probes: Vec<(&str, &str)> =
            r.behaviour.values().next().map(|v| v.iter().map(|x| (x.probe, x.request)).collect()).unwrap_or_default();
        for (probe, request) in probes {
            let vals: Vec<String> = servers
                .iter()
                .map(|s| {
                    r.behaviour[s].iter().find(|x| x.probe == probe).map(|x| x.observed.clone()).unwrap_or_default()
                })
                .collect();
            let differ = vals.windows(2).any(|w| w[0] != w[1]);
            let _ = write!(o, "<tr><td>{probe}</td><td>{}</td>", esc(request));
            for v in vals {
                let _ = write!(o, "<td{}>{}</td>", if differ { " class=\"diff\"" } else { "" }, esc(&v));
            }
            o.push_str("</tr>");
        }
        o.push_str("</table>");
    }
}

/// The catalogue's counts per server and its expected failures with their reasons.
fn catalogue_section(o: &mut String, r: &Report) {
    // Catalogue summary.
    let cat: Vec<&CellResult> = r.cells.iter().filter(|c| c.cell.kind == Kind::Scenario).collect();
    if !cat.is_empty() {
        o.push_str("<h2>Scenario catalogue per server</h2><table><tr><th>server</th><th>pass</th><th>fail</th><th>xfail</th><th>xpass</th><th>n/a</th><th>unavailable</th></tr>");
        for sv in SERVERS {
            let mine: Vec<&&CellResult> = cat.iter().filter(|c| c.cell.server == sv).collect();
            if mine.is_empty() {
                continue;
            }
            // A count is coloured only when non-zero, so the eye goes to what happened.
            let _ = write!(o, "<tr><th>{sv}</th>");
            for k in ["pass", "fail", "xfail", "xpass", "na", "unavail"] {
                let n = mine.iter().filter(|c| class(&c.status) == k).count();
                let _ = write!(o, "<td class=\"{}\">{n}</td>", if n > 0 { k } else { "" });
            }
            o.push_str("</tr>");
        }
        o.push_str("</table><details><summary>Expected failures of the catalogue (with reasons)</summary><table><tr><th>cell</th><th>reason</th></tr>");
        for c in cat.iter().filter(|c| matches!(c.status, Verdict::ExpectedFailure { .. })) {
            let _ = write!(o, "<tr><td>{}</td><td>{}</td></tr>", esc(&c.cell.id), esc(&reason(&c.status)));
        }
        o.push_str("</table></details>");
    }
}

/// Failing cells with reproducer and logs; expected failures (outside the catalogue) with their reason.
fn failing_cells(o: &mut String, r: &Report) {
    // Failing cells, with reproducer and logs; expected failures with their reason.
    let bad: Vec<&CellResult> = r
        .cells
        .iter()
        .filter(|c| {
            c.status.is_error(STRICT)
                || (matches!(c.status, Verdict::ExpectedFailure { .. }) && c.cell.kind != Kind::Scenario)
        })
        .collect();
    o.push_str("<h2>Failing and expected-failing cells</h2>");
    if bad.is_empty() {
        o.push_str("<p>None.</p>");
    }
    for c in bad {
        let _ = write!(
            o,
            "<h3 id=\"{}\">{} — {}</h3><p>{}</p><p>Reproduce: <code class=\"reproduce\" data-cell=\"{}\">{}</code></p>",
            anchor(&c.cell.id),
            esc(&c.cell.id),
            c.status.label(),
            esc(&reason(&c.status)),
            esc(&c.cell.id),
            esc(&c.reproduce),
        );
        if !c.detail.is_empty() {
            let _ = write!(o, "<pre>{}</pre>", esc(&c.detail));
        }
        if !c.logs.is_empty() {
            let _ = write!(o, "<details><summary>logs</summary><pre>{}</pre></details>", esc(&c.logs));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_logs_keep_their_tail_and_say_what_was_cut() {
        let mut cells = fixture::cells();
        let long: String = (0..100_000).map(|i| format!("line {i} é\n")).collect();
        let at = cells.iter().position(|c| c.status.is_error(STRICT)).unwrap();
        cells[at].logs = long.clone();
        let whole = fixture::report();
        let r = Report::new(whole.meta, whole.plan, cells, BTreeMap::new(), BTreeMap::new());
        let kept = &r.cells[at].logs;
        assert!(kept.len() < LOG_TAIL + 100, "{}", kept.len());
        assert!(kept.starts_with('[') && kept.contains("earlier bytes of the log cut"), "{}", &kept[..80]);
        assert!(kept.ends_with("line 99999 é\n"));
        // Cut at a line start, and the count is right.
        let cut: usize = kept[1..].split(' ').next().unwrap().parse().unwrap();
        assert!(long[..cut].ends_with('\n'));
        assert_eq!(&long[cut..], kept.split_once('\n').unwrap().1);
        // Short logs are left alone.
        assert_eq!(log_tail("a\nb".into()), "a\nb");
    }

    #[test]
    fn the_bypass_table_has_a_row_per_scenario_and_survives_a_saved_report() {
        let r = fixture::report();
        let page = html(&r);
        assert!(page.contains("control (authenticated): rfc1928.udp.relay-round-trip"), "no control row");
        let row = page
            .split("<tr>")
            .find(|t| t.starts_with("<td>regressions.v01.udp-without-any-tcp</td>"))
            .expect("a row for the scenario");
        // SERVERS order: the V2Ray columns relay, gost and the reference drop.
        assert_eq!(row.matches("class=\"xfail\">Relayed").count(), 2, "{row}");
        assert_eq!(row.matches("class=\"pass\">Dropped").count(), 2, "{row}");
        // `interop report --merge` reads the observations back from the JSON.
        let saved: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(saved.udp_bypass, r.udp_bypass);
    }
}

/// A small, fixed result set shaped like a real run (every client and server of the matrix, gost's
/// extensions, a failing cell, an expected failure, an unavailable peer, the UDP bypass and
/// behaviour views and a few catalogue cells), for tests of the report code without the lab.
#[cfg(test)]
pub(super) mod fixture {
    use super::super::bypass::{Fate, Observations, Probe};
    use super::super::{not_applicable, reproduce, Cell, CellResult, Verdict, CLIENTS, SERVERS, STRICT};
    use super::*;

    /// The one unexpected failure.
    pub const FAIL_ID: &str = "mbind.gost.reference";
    /// The one expected failure of a feature cell.
    pub const XFAIL_ID: &str = "udp-associate.gost.v2ray5";

    fn result(cell: Cell) -> CellResult {
        let status = if let Some(reason) = not_applicable(&cell) {
            Verdict::NotApplicable { reason }
        } else if cell.id == FAIL_ID {
            Verdict::Fail
        } else if cell.id == XFAIL_ID {
            Verdict::ExpectedFailure {
                reason: "answers from the wrong port".into(),
                link: Some("https://example.invalid/issue/1".into()),
            }
        } else if cell.client == Some(PeerId::V2ray4) && cell.feature == Some(Feature::Userpass) {
            Verdict::Unavailable { reason: "v2ray4: /usr/bin/v2ray missing".into() }
        } else {
            Verdict::Pass
        };
        let failing = status.is_error(STRICT);
        CellResult {
            reproduce: reproduce(&cell.id, Backend::Docker),
            detail: if failing { "MBIND: reply 0x01 <general failure> & closed".into() } else { String::new() },
            logs: if failing { "server: session 1 reset".into() } else { String::new() },
            cell,
            status,
            millis: 12,
        }
    }

    /// The fixture's cells in plan order, each with its verdict.
    pub fn cells() -> Vec<CellResult> {
        let mut cells = Vec::new();
        for f in [Feature::Socks5Connect, Feature::Userpass, Feature::UdpAssociate, Feature::Mbind] {
            for c in CLIENTS {
                for s in SERVERS {
                    cells.push(result(Cell::feature(f, c, s)));
                }
            }
        }
        for s in SERVERS {
            let mut r = result(Cell::bypass(s));
            if matches!(s, PeerId::V2ray5 | PeerId::V2ray4) {
                r.status =
                    Verdict::ExpectedFailure { reason: "V-01: relays unauthenticated datagrams".into(), link: None };
            }
            cells.push(r);
        }
        for s in SERVERS {
            for id in ["rfc1928.connect.ok", "gost.mbind.open"] {
                cells.push(result(Cell::scenario(s, id)));
            }
        }
        cells
    }

    /// The whole fixture as one unsharded report.
    pub fn report() -> Report {
        let cells = cells();
        let bypass = |relayed: bool| Observations {
            control: "rfc1928.udp.relay-round-trip".into(),
            probes: vec![Probe {
                scenario: "regressions.v01.udp-without-any-tcp".into(),
                fate: if relayed { Fate::Relayed } else { Fate::Dropped },
            }],
        };
        let udp_bypass = SERVERS.iter().map(|s| (*s, bypass(matches!(s, PeerId::V2ray5 | PeerId::V2ray4)))).collect();
        let behaviour = SERVERS
            .iter()
            .map(|s| {
                let observed = if *s == PeerId::Gost { "05 07 00 01 port" } else { "05 07 00 01 0.0.0.0:0" };
                (*s, vec![Row { probe: "unknown-command", request: "CMD F0", observed: observed.into() }])
            })
            .collect();
        let meta = Meta {
            backend: Backend::Docker,
            seconds: 3.5,
            prepare_seconds: 1.0,
            versions: PeerId::ALL.iter().map(|p| (p.name().to_string(), p.version().to_string())).collect(),
            unavailable: BTreeMap::from([("v2ray4".to_string(), "/usr/bin/v2ray missing".to_string())]),
        };
        let plan = PlanInfo {
            cells: cells.iter().map(|c| c.cell.id.clone()).collect(),
            of: 1,
            shards: vec![ShardRun {
                index: 1,
                seconds: 3.5,
                prepare_seconds: 1.0,
                phases: vec![Phase { name: "prepare peers".into(), seconds: 1.0 }],
            }],
        };
        Report::new(meta, plan, cells, behaviour, udp_bypass)
    }
}

/// One `<td>` of a matrix: the verdict, the cell's id, reason and detail as its title, and a link
/// to the failing-cells section for errors (and, with `link_xfail`, for expected failures).
fn matrix_cell(o: &mut String, cell: Option<&CellResult>, link_xfail: bool) {
    let Some(c) = cell else {
        o.push_str("<td></td>");
        return;
    };
    let title = esc(&format!("{}\n{}\n{}", c.cell.id, reason(&c.status), c.detail));
    let linked = c.status.is_error(STRICT) || (link_xfail && matches!(c.status, Verdict::ExpectedFailure { .. }));
    let label = if linked {
        format!("<a href=\"#{}\">{}</a>", anchor(&c.cell.id), c.status.label())
    } else {
        c.status.label().to_string()
    };
    let _ = write!(
        o,
        "<td class=\"{}\" data-cell=\"{}\" data-verdict=\"{}\" title=\"{title}\">{label}</td>",
        class(&c.status),
        esc(&c.cell.id),
        c.status.label()
    );
}
