//! Turning outcomes into the side-by-side table and `bench.json`.
//!
//! Every row is shown as absolute values, each server's ratio to direct loopback, and socksref's
//! ratio to the best comparison peer (the best of the other servers for that row).

use std::fmt::Write as _;

use serde::Serialize;

use crate::flags::ServerName;

/// A goal socksref should meet on a row.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Target {
    /// At least this fraction of the direct-loopback value.
    AtLeastDirect(f64),
    /// At most this absolute value, in the row's unit.
    AtMost(f64),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::AtLeastDirect(r) => write!(f, "≥{} direct", format_ratio(*r)),
            Target::AtMost(v) => write!(f, "≤{}", format_value(*v)),
        }
    }
}

/// What a row measures.
#[derive(Debug, Clone, Serialize)]
pub struct RowSpec {
    /// Stable identifier for scripts reading the JSON, e.g. `connect_upload_1`.
    pub id: String,
    /// Human-readable title for the table.
    pub title: String,
    /// Unit of the values.
    pub unit: &'static str,
    /// Whether larger values are better (false for memory).
    pub higher_is_better: bool,
    /// socksref's goal on this row, if it has one.
    pub target: Option<Target>,
}

/// The result of one measurement for one subject.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Measured.
    Ok {
        /// The value in the row's unit.
        value: f64,
        /// Failures or losses seen while measuring.
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// The subject does not support what the row needs (microsocks and SOCKS4, say).
    NotApplicable,
    /// Not measured: the server is missing or was not selected or did not start.
    Skipped {
        /// Why.
        reason: String,
    },
    /// The measurement ran and failed.
    Failed {
        /// The error, with its causes.
        error: String,
    },
}

impl Outcome {
    fn value(&self) -> Option<f64> {
        match self {
            Outcome::Ok { value, .. } => Some(*value),
            _ => None,
        }
    }
}

/// One row of results: the direct baseline and each server, in column order.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub spec: RowSpec,
    /// The same measurement without a proxy.
    pub direct: Outcome,
    /// Each benchmarked server's outcome.
    pub servers: Vec<(ServerName, Outcome)>,
}

impl Row {
    fn outcome(&self, name: ServerName) -> Option<&Outcome> {
        self.servers.iter().find(|(n, _)| *n == name).map(|(_, o)| o)
    }

    /// `value / direct` for a subject's outcome, when both were measured.
    fn ratio_to_direct(&self, outcome: &Outcome) -> Option<f64> {
        ratio(outcome.value()?, self.direct.value()?)
    }

    /// The better of the comparison peers (every server except socksref) on this row.
    fn best_peer(&self) -> Option<(ServerName, f64)> {
        let peers =
            self.servers.iter().filter(|(n, _)| *n != ServerName::Socksref).filter_map(|(n, o)| Some((*n, o.value()?)));
        if self.spec.higher_is_better {
            peers.max_by(|a, b| a.1.total_cmp(&b.1))
        } else {
            peers.min_by(|a, b| a.1.total_cmp(&b.1))
        }
    }

    /// socksref's value divided by the best peer's.
    fn socksref_vs_best(&self) -> Option<f64> {
        ratio(self.outcome(ServerName::Socksref)?.value()?, self.best_peer()?.1)
    }

    /// Whether socksref met its target on this row (None: no target, or not measured).
    fn socksref_met_target(&self) -> Option<bool> {
        let outcome = self.outcome(ServerName::Socksref)?;
        match self.spec.target? {
            Target::AtLeastDirect(goal) => Some(self.ratio_to_direct(outcome)? >= goal),
            Target::AtMost(goal) => Some(outcome.value()? <= goal),
        }
    }
}

fn ratio(value: f64, base: f64) -> Option<f64> {
    (base > 0.0).then(|| value / base)
}

/// How the run was set up, for the JSON file.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    /// Seconds since the Unix epoch when the run finished.
    pub unix_time: u64,
    /// Seconds per measurement window.
    pub duration_s: f64,
    /// Idle tunnels opened for the RSS row.
    pub tunnels: usize,
    /// Whether `--quick` was given.
    pub quick: bool,
    /// CPUs available to the benchmark.
    pub cpus: usize,
    /// The kernel release, since loopback performance depends on it.
    pub kernel: String,
    /// /proc/loadavg when the run started: other work on the machine skews every number.
    pub load_average_at_start: String,
    /// Each server and what became of it ("ran", or why it did not).
    pub servers: Vec<(String, String)>,
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct Report {
    /// How the run was set up.
    pub meta: Meta,
    /// The rows, in the order measured.
    pub rows: Vec<Row>,
}

/// The JSON shape of one subject's result in a row.
#[derive(Serialize)]
struct JsonCell<'a> {
    #[serde(flatten)]
    outcome: &'a Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    ratio_to_direct: Option<f64>,
}

/// The JSON shape of a row: the spec, raw outcomes and the derived comparisons.
#[derive(Serialize)]
struct JsonRow<'a> {
    #[serde(flatten)]
    spec: &'a RowSpec,
    direct: &'a Outcome,
    servers: serde_json::Map<String, serde_json::Value>,
    best_peer: Option<(&'static str, f64)>,
    socksref_vs_best_peer: Option<f64>,
    socksref_met_target: Option<bool>,
}

impl Report {
    /// The results as pretty-printed JSON.
    pub fn to_json(&self) -> serde_json::Result<String> {
        let rows = self
            .rows
            .iter()
            .map(|row| {
                let servers = row
                    .servers
                    .iter()
                    .map(|(name, outcome)| {
                        let cell = JsonCell { outcome, ratio_to_direct: row.ratio_to_direct(outcome) };
                        Ok((name.as_str().to_owned(), serde_json::to_value(cell)?))
                    })
                    .collect::<serde_json::Result<_>>()?;
                Ok(JsonRow {
                    spec: &row.spec,
                    direct: &row.direct,
                    servers,
                    best_peer: row.best_peer().map(|(n, v)| (n.as_str(), v)),
                    socksref_vs_best_peer: row.socksref_vs_best(),
                    socksref_met_target: row.socksref_met_target(),
                })
            })
            .collect::<serde_json::Result<Vec<_>>>()?;
        serde_json::to_string_pretty(&serde_json::json!({ "meta": self.meta, "rows": rows }))
    }

    /// The results as an aligned text table followed by notes and failures.
    pub fn to_table(&self) -> String {
        let columns: Vec<ServerName> =
            self.rows.first().map(|r| r.servers.iter().map(|(n, _)| *n).collect()).unwrap_or_default();
        let mut header = vec!["measurement".to_owned(), "unit".to_owned(), "direct".to_owned()];
        header.extend(columns.iter().map(|n| n.as_str().to_owned()));
        header.extend(["socksref vs best peer".to_owned(), "target".to_owned()]);
        let mut lines = vec![header];
        let mut notes = Vec::new();
        for row in &self.rows {
            let unit = if row.spec.higher_is_better {
                row.spec.unit.to_owned()
            } else {
                format!("{} (lower=better)", row.spec.unit)
            };
            let mut line = vec![row.spec.title.clone(), unit, cell(&row.direct, None)];
            collect_note(&mut notes, &row.spec.title, "direct", &row.direct);
            for (name, outcome) in &row.servers {
                line.push(cell(outcome, row.ratio_to_direct(outcome)));
                collect_note(&mut notes, &row.spec.title, name.as_str(), outcome);
            }
            line.push(match (row.socksref_vs_best(), row.best_peer()) {
                (Some(r), Some((peer, _))) => format!("{} {}", format_ratio(r), peer.as_str()),
                (None, Some((peer, _))) => format!("- ({})", peer.as_str()),
                _ => "n/a".to_owned(),
            });
            line.push(match (row.spec.target, row.socksref_met_target()) {
                (Some(t), Some(true)) => format!("{t}  met"),
                (Some(t), Some(false)) => format!("{t}  MISSED"),
                (Some(t), None) => t.to_string(),
                (None, _) => String::new(),
            });
            lines.push(line);
        }
        let widths: Vec<usize> =
            (0..lines[0].len()).map(|i| lines.iter().map(|l| l[i].chars().count()).max().unwrap_or(0)).collect();
        let mut out = String::new();
        for (i, line) in lines.iter().enumerate() {
            let mut text = String::new();
            for (j, field) in line.iter().enumerate() {
                // Names and units read best left-aligned, numbers right-aligned.
                if j < 2 || j == line.len() - 1 {
                    let _ = write!(text, "{field:<w$}  ", w = widths[j]);
                } else {
                    let _ = write!(text, "{field:>w$}  ", w = widths[j]);
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
            if i == 0 {
                out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
                out.push('\n');
            }
        }
        out.push_str(
            "\n(×) = ratio to direct loopback. socksref vs best peer = socksref ÷ the better of the other servers.\n",
        );
        if !notes.is_empty() {
            out.push_str("\nnotes:\n");
            for note in notes {
                out.push_str(&format!("  {note}\n"));
            }
        }
        out
    }
}

fn collect_note(notes: &mut Vec<String>, title: &str, who: &str, outcome: &Outcome) {
    match outcome {
        Outcome::Ok { note: Some(note), .. } => notes.push(format!("{title}, {who}: {note}")),
        Outcome::Failed { error } => notes.push(format!("{title}, {who}: FAILED: {error}")),
        _ => {}
    }
}

/// A table cell: the value with its ratio to direct, or why there is none.
fn cell(outcome: &Outcome, ratio_to_direct: Option<f64>) -> String {
    match (outcome, ratio_to_direct) {
        (Outcome::Ok { value, .. }, Some(r)) => format!("{} ({})", format_value(*value), format_ratio(r)),
        (Outcome::Ok { value, .. }, None) => format_value(*value),
        (Outcome::NotApplicable, _) => "n/a".to_owned(),
        (Outcome::Skipped { .. }, _) => "skipped".to_owned(),
        (Outcome::Failed { .. }, _) => "FAILED".to_owned(),
    }
}

/// A value with about three significant digits, never in exponent notation.
pub fn format_value(v: f64) -> String {
    let magnitude = v.abs();
    if magnitude >= 100.0 {
        format!("{v:.0}")
    } else if magnitude >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A ratio with two decimals and a multiplication sign, e.g. `0.76×`.
pub fn format_ratio(r: f64) -> String {
    format!("{r:.2}×")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(value: f64) -> Outcome {
        Outcome::Ok { value, note: None }
    }

    fn row(
        higher_is_better: bool,
        target: Option<Target>,
        direct: Outcome,
        servers: Vec<(ServerName, Outcome)>,
    ) -> Row {
        let spec = RowSpec { id: "r".into(), title: "r".into(), unit: "u", higher_is_better, target };
        Row { spec, direct, servers }
    }

    #[test]
    fn values_keep_about_three_digits() {
        assert_eq!(format_value(12345.6), "12346");
        assert_eq!(format_value(123.4), "123");
        assert_eq!(format_value(12.34), "12.3");
        assert_eq!(format_value(1.234), "1.23");
        assert_eq!(format_value(0.0), "0.00");
    }

    #[test]
    fn ratios_have_two_decimals_and_a_times_sign() {
        assert_eq!(format_ratio(0.756), "0.76×");
        assert_eq!(format_ratio(1.0), "1.00×");
    }

    #[test]
    fn best_peer_excludes_socksref_and_follows_direction() {
        let servers =
            vec![(ServerName::Socksref, ok(50.0)), (ServerName::Microsocks, ok(20.0)), (ServerName::Danted, ok(40.0))];
        let faster = row(true, None, ok(100.0), servers.clone());
        assert_eq!(faster.best_peer(), Some((ServerName::Danted, 40.0)));
        assert_eq!(faster.socksref_vs_best(), Some(1.25));
        let smaller = row(false, None, Outcome::NotApplicable, servers);
        assert_eq!(smaller.best_peer(), Some((ServerName::Microsocks, 20.0)));
    }

    #[test]
    fn targets_compare_against_direct_or_absolute() {
        let servers = vec![(ServerName::Socksref, ok(70.0)), (ServerName::Microsocks, Outcome::NotApplicable)];
        let r = row(true, Some(Target::AtLeastDirect(0.75)), ok(100.0), servers.clone());
        assert_eq!(r.socksref_met_target(), Some(false));
        assert_eq!(r.best_peer(), None);
        let r = row(false, Some(Target::AtMost(80.0)), Outcome::NotApplicable, servers);
        assert_eq!(r.socksref_met_target(), Some(true));
    }

    #[test]
    fn cells_say_why_there_is_no_number() {
        assert_eq!(cell(&ok(1500.0), Some(0.5)), "1500 (0.50×)");
        assert_eq!(cell(&Outcome::NotApplicable, None), "n/a");
        assert_eq!(cell(&Outcome::Failed { error: "x".into() }, None), "FAILED");
    }
}
