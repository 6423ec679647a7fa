//! `sockslab replay`: each SOCKS conversation of a capture, turned into a scenario
//! ([`super::scenario`]), run against a live server through the same runner, verdicts and
//! reports as `sockslab check`.

use std::path::Path;

use anyhow::{Context, Result};

use super::scenario::to_scenario;
use crate::coverage::Requirements;
use crate::runner::{run_scenario, RunOptions, Sut};
use crate::scenario::Scenario;
use crate::verdict::{Expectations, ScenarioResult};

/// Loads the scenario of every conversation of `file` (or only conversation `only`), checked
/// against the catalogue's `requirements.yaml` in `scenarios_dir`.
pub fn scenarios(file: &Path, scenarios_dir: &Path, only: Option<usize>) -> Result<Vec<Scenario>> {
    let d = super::dissect_file(file)?;
    let reqs = Requirements::load(&scenarios_dir.join("requirements.yaml"))
        .with_context(|| format!("loading {}/requirements.yaml", scenarios_dir.display()))?;
    let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "capture".into());
    let dir = tempfile::tempdir()?;
    let mut out = Vec::new();
    for conv in d.conversations.iter().filter(|c| only.is_none_or(|n| n == c.index)) {
        let id = format!("captured.{stem}.{}", conv.index);
        let imp = match to_scenario(conv, &id, &file.display().to_string()) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!("{e}");
                continue;
            }
        };
        let path = dir.path().join(format!("{}.yaml", conv.index));
        std::fs::write(&path, &imp.yaml)?;
        let s = Scenario::load_with(&path, &reqs).map_err(|e| anyhow::anyhow!("{e}\n{}", imp.yaml))?;
        out.push(s);
    }
    anyhow::ensure!(!out.is_empty(), "{}: no SOCKS conversation to replay", file.display());
    Ok(out)
}

/// Replays every conversation of `file` against `sut`.
pub async fn replay(file: &Path, scenarios_dir: &Path, only: Option<usize>, sut: &Sut) -> Result<Vec<ScenarioResult>> {
    let scns = scenarios(file, scenarios_dir, only)?;
    let opts = RunOptions::default();
    let mut results = Vec::new();
    for s in &scns {
        results.push(run_scenario(s, sut, &opts, &Expectations::default()).await);
    }
    Ok(results)
}
