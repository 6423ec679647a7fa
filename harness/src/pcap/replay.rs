//! `sockslab replay`: each SOCKS conversation of a capture, turned into a scenario
//! ([`super::scenario`]), run against a live server through the same runner, verdicts and
//! reports as `sockslab check` (`--against`), or played as the server against a client under
//! test, as `sockslab check-client` does (`--as-server`).

use std::path::Path;

use anyhow::{Context, Result};

use super::scenario::{to_scenario_for, Imported, Side};
use crate::coverage::Requirements;
use crate::runner::{run_scenario, RunOptions, Sut};
use crate::scenario::Scenario;
use crate::scenario::Schedule;
use crate::verdict::{Expectations, ScenarioResult, Verdict};

/// Loads the scenario of every conversation of `file` (or only conversation `only`), checked
/// against the catalogue's `requirements.yaml` in `scenarios_dir`.
pub fn scenarios(file: &Path, scenarios_dir: &Path, only: Option<usize>) -> Result<Vec<Scenario>> {
    Ok(scenarios_for(file, scenarios_dir, only, Side::Client)?.into_iter().map(|(s, _)| s).collect())
}

/// Loads the scenario of every conversation of `file` (or only conversation `only`) played from
/// `side`, each with the import it came from (its notes and the curl line that makes its
/// request).
pub fn scenarios_for(
    file: &Path,
    scenarios_dir: &Path,
    only: Option<usize>,
    side: Side,
) -> Result<Vec<(Scenario, Imported)>> {
    let d = super::dissect_file(file)?;
    let reqs = Requirements::load(&scenarios_dir.join("requirements.yaml"))
        .with_context(|| format!("loading {}/requirements.yaml", scenarios_dir.display()))?;
    let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "capture".into());
    let dir = tempfile::tempdir()?;
    let mut out = Vec::new();
    for conv in d.conversations.iter().filter(|c| only.is_none_or(|n| n == c.index)) {
        let id = format!("captured.{stem}.{}", conv.index);
        let imp = match to_scenario_for(conv, &id, &file.display().to_string(), side) {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!("{e}");
                continue;
            }
        };
        let path = dir.path().join(format!("{}.yaml", conv.index));
        std::fs::write(&path, &imp.yaml)?;
        let s = Scenario::load_with(&path, &reqs).map_err(|e| anyhow::anyhow!("{e}\n{}", imp.yaml))?;
        out.push((s, imp));
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

/// Plays the server side of every conversation of `file` (or only `only`) against a client
/// command line (`check-client`'s placeholders; `user`/`pass` fill `{user}`/`{pass}` and are
/// what the runner accepts). Without `client`, each conversation gets the curl line that makes
/// its request ([`Imported::curl`]); a conversation no curl line fits is unavailable then.
pub async fn replay_as_server(
    file: &Path,
    scenarios_dir: &Path,
    only: Option<usize>,
    client: Option<&str>,
    user: &str,
    pass: &str,
) -> Result<Vec<ScenarioResult>> {
    let scns = scenarios_for(file, scenarios_dir, only, Side::Server)?;
    let mut results = Vec::new();
    for (s, imp) in &scns {
        let Some(command) = client.or(imp.curl.as_deref()) else {
            let reason = "no curl line fits this conversation (not an answered CONNECT, or its tunnel carried no HTTP): give the client under test with --client".to_string();
            results.push(ScenarioResult::new(s, None, Verdict::Unavailable { reason }));
            continue;
        };
        eprintln!("{}: client `{command}`", s.id);
        results.push(crate::runner::server::grade(s, &Schedule::ALL, command, user, pass, None).await);
    }
    Ok(results)
}
