//! Reports: JSON (the whole result set), JUnit XML (for CI dashboards) and one HTML page (for people).

pub mod html;
pub mod json;
pub mod junit;

use serde::{Deserialize, Serialize};

use crate::verdict::{ScenarioResult, Summary};

/// A finished run against one server under test.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// What was checked (URL or peer name).
    pub target: String,
    /// Counts.
    pub summary: Summary,
    /// One entry per scenario, in catalogue order.
    pub results: Vec<ScenarioResult>,
}

impl Report {
    /// Builds a report from results.
    pub fn new(target: impl Into<String>, results: Vec<ScenarioResult>) -> Report {
        Report { target: target.into(), summary: Summary::of(&results), results }
    }

    /// Records the run's wall time (scenarios run concurrently, so it is not their sum).
    pub fn with_wall(mut self, wall: std::time::Duration) -> Report {
        self.summary.wall_millis = wall.as_millis() as u64;
        self
    }
}
