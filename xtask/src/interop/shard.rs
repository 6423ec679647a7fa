//! Splitting the interop plan across machines (`--shard K/N`) and merging the parts back into one
//! report (`interop report --merge`).
//!
//! A cell belongs to shard `1 + fnv1a(id) mod N`: a function of its id alone, so every machine
//! computes the same split without talking to the others, and adding or removing a cell never
//! moves another one to a different shard (a CI history stays comparable shard by shard).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::report::{Meta, PlanInfo, Report};
use crate::flags::Shard;

/// 64-bit FNV-1a: tiny, dependency-free, and fixed by its definition (unlike `DefaultHasher`,
/// whose output may change between Rust releases, which would reshuffle shards).
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The shard (1-based) a cell id belongs to when the plan is split into `of` parts.
pub fn shard_of(id: &str, of: u32) -> u32 {
    1 + (fnv1a(id) % u64::from(of.max(1))) as u32
}

/// Whether `shard` runs the cell (or other per-id work, such as a server's behaviour probes).
pub fn owns(shard: Shard, id: &str) -> bool {
    shard_of(id, shard.of) == shard.index
}

/// Reads shard reports and merges them into one, refusing inputs that do not fit together:
/// different plans, a different number of shards, different backends or peer versions, a cell
/// (or a server's observations) in two inputs, a cell outside the plan, or planned cells that no
/// input holds (a shard that did not report).
pub fn merge(paths: &[PathBuf]) -> Result<Report> {
    let mut parts = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let r: Report = serde_json::from_str(&text)
            .with_context(|| format!("{}: not an interop report of this version of the lab", p.display()))?;
        parts.push((p.as_path(), r));
    }
    merge_reports(parts)
}

/// [`merge`] on reports already read; `Path`s only name the inputs in errors.
pub fn merge_reports(parts: Vec<(&Path, Report)>) -> Result<Report> {
    let Some((first_path, first)) = parts.first() else { bail!("nothing to merge: give at least one report") };
    let (first_path, plan, backend, versions) =
        (first_path.display().to_string(), first.plan.clone(), first.meta.backend, first.meta.versions.clone());
    for (p, r) in &parts[1..] {
        if r.plan.cells != plan.cells {
            let a: BTreeSet<&String> = plan.cells.iter().collect();
            let b: BTreeSet<&String> = r.plan.cells.iter().collect();
            let example = a.symmetric_difference(&b).next().map(|s| format!(" (e.g. `{s}`)")).unwrap_or_default();
            bail!(
                "{} and {first_path} come from different plans: {} vs {} planned cells{example}; \
                 run every shard with the same filters and the same checkout",
                p.display(),
                r.plan.cells.len(),
                plan.cells.len()
            );
        }
        if r.plan.of != plan.of {
            bail!(
                "{} was split into {} shards but {first_path} into {}: merge shards of one split",
                p.display(),
                r.plan.of,
                plan.of
            );
        }
        if r.meta.backend != backend {
            bail!("{} ran on the {:?} backend but {first_path} on {:?}", p.display(), r.meta.backend, backend);
        }
        if r.meta.versions != versions {
            bail!("{} and {first_path} pin different peer versions (different checkouts)", p.display());
        }
    }

    let planned: BTreeMap<&str, usize> = plan.cells.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    let mut seen_cell: BTreeMap<String, String> = BTreeMap::new();
    let mut seen_shard: BTreeMap<u32, String> = BTreeMap::new();
    let mut shards = Vec::new();
    let mut cells = Vec::new();
    let mut behaviour = BTreeMap::new();
    let mut udp_bypass = BTreeMap::new();
    let mut unavailable = BTreeMap::new();
    let (mut seconds, mut prepare_seconds) = (0f64, 0f64);
    for (p, r) in parts {
        let name = p.display().to_string();
        for s in &r.plan.shards {
            if let Some(other) = seen_shard.insert(s.index, name.clone()) {
                bail!("shard {}/{} is in both {other} and {name}", s.index, plan.of);
            }
            shards.push(s.clone());
        }
        for c in r.cells {
            if !planned.contains_key(c.cell.id.as_str()) {
                bail!("{name} holds cell `{}`, which its plan does not list", c.cell.id);
            }
            if let Some(other) = seen_cell.insert(c.cell.id.clone(), name.clone()) {
                bail!("cell `{}` is in both {other} and {name}: overlapping shards", c.cell.id);
            }
            cells.push(c);
        }
        for (peer, rows) in r.behaviour {
            if behaviour.insert(peer, rows).is_some() {
                bail!("{name} repeats the behaviour probes of {peer}: overlapping shards");
            }
        }
        for (peer, obs) in r.udp_bypass {
            if udp_bypass.insert(peer, obs).is_some() {
                bail!("{name} repeats the UDP bypass observations of {peer}: overlapping shards");
            }
        }
        unavailable.extend(r.meta.unavailable);
        // Shards run side by side: the merged run took as long as the slowest one.
        seconds = seconds.max(r.meta.seconds);
        prepare_seconds = prepare_seconds.max(r.meta.prepare_seconds);
    }
    let missing: Vec<&str> = plan.cells.iter().map(String::as_str).filter(|c| !seen_cell.contains_key(*c)).collect();
    if !missing.is_empty() {
        let absent: Vec<String> =
            (1..=plan.of).filter(|k| !seen_shard.contains_key(k)).map(|k| format!("{k}/{}", plan.of)).collect();
        bail!(
            "{} planned cell(s) are in no input (e.g. `{}`); shard(s) not given: {}",
            missing.len(),
            missing[0],
            if absent.is_empty() { "none (a shard report is incomplete)".to_string() } else { absent.join(", ") }
        );
    }
    cells.sort_by_key(|c| planned[c.cell.id.as_str()]);
    shards.sort_by_key(|s| s.index);
    let meta = Meta { backend, seconds, prepare_seconds, versions, unavailable };
    Ok(Report::new(meta, PlanInfo { cells: plan.cells, of: plan.of, shards }, cells, behaviour, udp_bypass))
}

#[cfg(test)]
mod tests {
    use super::super::report::{fixture, ShardRun};
    use super::*;

    /// The fixture split the way `--shard K/N` runs would split it, one report per shard.
    fn split(of: u32) -> Vec<(PathBuf, Report)> {
        let whole = fixture::report();
        (1..=of)
            .map(|k| {
                let sh = Shard { index: k, of };
                let cells: Vec<_> = whole.cells.iter().filter(|c| owns(sh, &c.cell.id)).cloned().collect();
                let mine = |id: String| owns(sh, &id);
                let behaviour = whole
                    .behaviour
                    .iter()
                    .filter(|(p, _)| mine(format!("behaviour.{}", p.name())))
                    .map(|(p, r)| (*p, r.clone()))
                    .collect();
                let bypass = whole
                    .udp_bypass
                    .iter()
                    .filter(|(p, _)| mine(format!("udp-bypass.{}", p.name())))
                    .map(|(p, o)| (*p, o.clone()))
                    .collect();
                let meta = Meta {
                    seconds: f64::from(k),
                    ..serde_json::from_value(serde_json::to_value(&whole.meta).unwrap()).unwrap()
                };
                let plan = PlanInfo {
                    cells: whole.plan.cells.clone(),
                    of,
                    shards: vec![ShardRun {
                        index: k,
                        seconds: f64::from(k),
                        prepare_seconds: 0.5,
                        phases: Vec::new(),
                    }],
                };
                // Through JSON, as the real merge reads them.
                let r = Report::new(meta, plan, cells, behaviour, bypass);
                let r: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
                (PathBuf::from(format!("shard-{k}/interop.json")), r)
            })
            .collect()
    }

    fn merged(parts: Vec<(PathBuf, Report)>) -> Result<Report> {
        merge_reports(parts.iter().map(|(p, r)| (p.as_path(), clone(r))).collect())
    }

    fn clone(r: &Report) -> Report {
        serde_json::from_value(serde_json::to_value(r).unwrap()).unwrap()
    }

    #[test]
    fn the_hash_is_pinned_so_shards_do_not_move_between_releases() {
        // FNV-1a test vectors: a changed hash would silently reshuffle every CI shard.
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(shard_of("anything", 1), 1);
        for n in 1..=5 {
            assert!((1..=n).contains(&shard_of("socks5-connect.gost.v2ray5", n)));
        }
    }

    #[test]
    fn merging_every_shard_gives_back_the_whole_report() {
        let whole = fixture::report();
        for of in 1..=5 {
            let m = merged(split(of)).unwrap();
            let ids: Vec<&str> = m.cells.iter().map(|c| c.cell.id.as_str()).collect();
            let want: Vec<&str> = whole.cells.iter().map(|c| c.cell.id.as_str()).collect();
            assert_eq!(ids, want, "{of} shards");
            let statuses: Vec<&Verdict> = m.cells.iter().map(|c| &c.status).collect();
            assert_eq!(statuses, whole.cells.iter().map(|c| &c.status).collect::<Vec<_>>());
            assert_eq!(m.behaviour.len(), whole.behaviour.len());
            assert_eq!(m.udp_bypass.len(), whole.udp_bypass.len());
            assert_eq!(m.summary.failed, whole.summary.failed);
            assert_eq!(m.summary.total, whole.summary.total);
            assert_eq!(m.plan.shards.iter().map(|s| s.index).collect::<Vec<_>>(), (1..=of).collect::<Vec<_>>());
            // The slowest shard's wall time: shard k took k seconds in `split`.
            assert_eq!(m.meta.seconds, f64::from(of));
        }
    }

    use super::super::Verdict;

    #[test]
    fn a_cell_in_two_inputs_is_refused() {
        let mut parts = split(3);
        let stolen = parts[0].1.cells[0].clone();
        parts[1].1.cells.push(stolen.clone());
        let e = merged(parts).unwrap_err().to_string();
        assert!(e.contains(&stolen.cell.id) && e.contains("overlapping"), "{e}");
        // The same shard given twice.
        let mut parts = split(2);
        parts.push((PathBuf::from("again.json"), clone(&parts[0].1)));
        let e = merged(parts).unwrap_err().to_string();
        assert!(e.contains("shard 1/2 is in both"), "{e}");
    }

    #[test]
    fn reports_of_different_plans_or_splits_are_refused() {
        let mut parts = split(2);
        parts[1].1.plan.cells.push("socks4.curl.gost".into());
        let e = merged(parts).unwrap_err().to_string();
        assert!(e.contains("different plans") && e.contains("socks4.curl.gost"), "{e}");

        let mut parts = split(3);
        let other = split(2).remove(1);
        parts[2] = other;
        let e = merged(parts).unwrap_err().to_string();
        assert!(e.contains("shards") && e.contains("merge shards of one split"), "{e}");

        let mut parts = split(2);
        parts[1].1.meta.backend = crate::peers::Backend::Process;
        assert!(merged(parts).unwrap_err().to_string().contains("backend"));
    }

    #[test]
    fn a_missing_shard_is_named() {
        let mut parts = split(4);
        let gone = parts.remove(2);
        assert!(!gone.1.cells.is_empty(), "the fixture gives every one of 4 shards some cells");
        let e = merged(parts).unwrap_err().to_string();
        assert!(e.contains("shard(s) not given: 3/4"), "{e}");
        assert!(merge_reports(Vec::new()).is_err());
    }

    #[test]
    fn shard_files_on_disk_merge_into_one_report() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for (i, (_, r)) in split(3).into_iter().enumerate() {
            let p = dir.path().join(format!("shard-{}.json", i + 1));
            std::fs::write(&p, serde_json::to_string_pretty(&r).unwrap()).unwrap();
            paths.push(p);
        }
        // Given in any order.
        paths.reverse();
        let m = merge(&paths).unwrap();
        assert_eq!(m.summary.total, fixture::report().summary.total);
        assert_eq!(m.plan.of, 3);
        let html = super::super::report::html(&m);
        assert!(html.contains("Merged from 3 of 3 shards"), "the page says it was merged");
        let one = super::super::report::html(&split(3).remove(1).1);
        assert!(one.contains("Shard 2/3: ") && !one.contains("Merged"), "a shard's page says it is one part");
    }

    #[test]
    fn a_missing_file_or_a_foreign_json_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = format!("{:#}", merge(&[dir.path().join("nope.json")]).unwrap_err());
        assert!(e.contains("reading") && e.contains("nope.json"), "{e}");
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, r#"{"cells": []}"#).unwrap();
        let e = format!("{:#}", merge(&[bad]).unwrap_err());
        assert!(e.contains("not an interop report"), "{e}");
    }
}
