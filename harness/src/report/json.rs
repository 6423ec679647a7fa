//! JSON report.

use super::Report;

/// Renders the report as pretty-printed JSON.
pub fn render(r: &Report) -> String {
    // Serializing plain data with string keys cannot fail.
    serde_json::to_string_pretty(r).expect("report is plain data")
}
