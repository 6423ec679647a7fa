//! Coverage: every normative statement of the covered specs, with the scenarios that test it.
//!
//! The statements live in `scenarios/requirements.yaml`; scenarios point at them with `refs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::scenario::{yaml, LoadError, Scenario};

/// Strength of a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    /// MUST / REQUIRED / SHALL (and their negations).
    Must,
    /// SHOULD / RECOMMENDED.
    Should,
    /// MAY / OPTIONAL.
    May,
    /// A protocol rule stated without a keyword (message formats, SOCKS4 texts).
    Spec,
    /// A project decision on an ambiguity (security catalogue D-xx) or a black-box test (V-xx, R-xx).
    Project,
}

/// One normative statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    /// Stable id, e.g. `RFC1928-6-reply-after-connect`.
    pub id: String,
    /// Document: `RFC 1928`, `RFC 1929`, `SOCKS4`, `SOCKS4A`, `security-catalog`.
    pub doc: String,
    /// Section.
    pub section: String,
    /// Strength.
    pub level: Level,
    /// The requirement, quoted (RFC sentences) or summarized (catalogue rows).
    pub text: String,
    /// Statements about clients or other roles that no server-side scenario can test.
    #[serde(default)]
    pub role: Option<String>,
}

/// The requirements file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirements {
    /// All statements.
    pub requirements: Vec<Requirement>,
}

impl Requirements {
    /// Loads the file and checks ids are unique.
    pub fn load(path: &Path) -> Result<Requirements, LoadError> {
        let r: Requirements = yaml::from_file(path)?;
        let mut seen = BTreeSet::new();
        for q in &r.requirements {
            if !seen.insert(q.id.clone()) {
                return Err(LoadError::Invalid {
                    path: path.to_path_buf(),
                    message: format!("requirement id `{}` appears twice", q.id),
                });
            }
        }
        Ok(r)
    }
}

/// Requirements with the scenarios that test them.
#[derive(Debug, Clone, Serialize)]
pub struct Coverage {
    /// Each requirement and the scenario ids referring to it.
    pub rows: Vec<(Requirement, Vec<String>)>,
    /// Scenario references to ids that are not in the requirements file: (scenario, ref).
    pub dangling: Vec<(String, String)>,
}

impl Coverage {
    /// Joins requirements with scenarios' `refs`.
    pub fn compute(reqs: &Requirements, scenarios: &[Scenario]) -> Coverage {
        let ids: BTreeSet<&str> = reqs.requirements.iter().map(|r| r.id.as_str()).collect();
        let mut by: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut dangling = Vec::new();
        for s in scenarios {
            for r in &s.refs {
                if ids.contains(r.as_str()) {
                    by.entry(r.as_str()).or_default().push(s.id.clone());
                } else {
                    dangling.push((s.id.clone(), r.clone()));
                }
            }
        }
        let rows =
            reqs.requirements.iter().map(|r| (r.clone(), by.remove(r.id.as_str()).unwrap_or_default())).collect();
        Coverage { rows, dangling }
    }

    /// Requirements no scenario refers to.
    pub fn uncovered(&self) -> Vec<&Requirement> {
        self.rows.iter().filter(|(_, s)| s.is_empty()).map(|(r, _)| r).collect()
    }

    /// A readable report: per document, each statement and its scenarios, then the uncovered list.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let mut doc = "";
        for (r, s) in &self.rows {
            if r.doc != doc {
                doc = &r.doc;
                let n = self.rows.iter().filter(|(q, _)| q.doc == doc).count();
                let c = self.rows.iter().filter(|(q, s)| q.doc == doc && !s.is_empty()).count();
                let _ = writeln!(o, "\n== {doc}: {c}/{n} statements covered");
            }
            let mark = if s.is_empty() { "  -- " } else { "  ok " };
            let _ = writeln!(o, "{mark}{} [§{} {:?}] {}", r.id, r.section, r.level, one_line(&r.text, 100));
            for id in s {
                let _ = writeln!(o, "       ↳ {id}");
            }
        }
        let unc = self.uncovered();
        let _ = writeln!(
            o,
            "\n{} of {} statements covered; {} uncovered",
            self.rows.len() - unc.len(),
            self.rows.len(),
            unc.len()
        );
        for r in unc {
            let why = r.role.as_deref().map(|x| format!(" ({x})")).unwrap_or_default();
            let _ = writeln!(o, "  uncovered: {} [{} §{}]{why}", r.id, r.doc, r.section);
        }
        for (s, r) in &self.dangling {
            let _ = writeln!(o, "  dangling reference: {s} → {r}");
        }
        o
    }
}

fn one_line(s: &str, max: usize) -> String {
    let t: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if t.chars().count() > max {
        format!("{}…", t.chars().take(max).collect::<String>())
    } else {
        t
    }
}
