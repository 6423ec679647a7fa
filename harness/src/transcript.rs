//! Typed transcripts: what a runner sent and received, when, on which connection or socket.
//!
//! Each entry keeps the normalized line that snapshots compare (ports and other run-dependent
//! values redacted, no timings) beside the raw octets and the time offset that reports show.

use std::fmt::Write as _;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::scenario::template::hex;

/// Which way an entry went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Client to server over TCP.
    ClientToServer,
    /// Server to client over TCP.
    ServerToClient,
    /// A UDP datagram sent by the runner.
    UdpOut,
    /// A UDP datagram received by the runner.
    UdpIn,
    /// Neither: a close, a silence, a check on the target fixture.
    Event,
}

/// One entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Milliseconds since the scenario started.
    pub at_ms: u64,
    /// The TCP connection (`main`, `peer`, …) or UDP socket (`udp[a]`) it happened on.
    pub on: String,
    /// Which way.
    pub dir: Direction,
    /// The octets, in hex (empty for events).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hex: String,
    /// The normalized line, as snapshots show it.
    pub line: String,
}

/// A transcript: entries in the order they happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Transcript {
    /// The entries.
    pub entries: Vec<Entry>,
}

impl Transcript {
    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The normalized lines, for snapshots.
    pub fn lines(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.line.clone()).collect()
    }

    /// A human-readable rendering with time offsets, for `-v` output.
    pub fn render(&self, indent: &str) -> String {
        let mut o = String::new();
        for e in &self.entries {
            let _ = writeln!(o, "{indent}{:>6} ms  {}", e.at_ms, e.line);
        }
        o
    }
}

/// Records a transcript against a start time.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    /// What has been recorded.
    pub transcript: Transcript,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder { start: Instant::now(), transcript: Transcript::default() }
    }
}

impl Recorder {
    /// Adds an entry; `line` is the normalized text.
    pub fn push(&mut self, on: &str, dir: Direction, octets: &[u8], line: String) {
        let at_ms = self.start.elapsed().as_millis() as u64;
        self.transcript.entries.push(Entry { at_ms, on: on.to_string(), dir, hex: hex(octets), line });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_keep_line_octets_and_order() {
        let mut r = Recorder::default();
        r.push("main", Direction::ClientToServer, &[5, 1, 0], "C→S 05 01 00".into());
        r.push("main", Direction::Event, &[], "S→C <close>".into());
        assert_eq!(r.transcript.lines(), ["C→S 05 01 00", "S→C <close>"]);
        assert_eq!(r.transcript.entries[0].hex, "050100");
        let json = serde_json::to_string(&r.transcript).unwrap();
        assert!(json.starts_with("[{") && json.contains("\"dir\":\"client-to-server\""), "{json}");
        assert!(r.transcript.render("  ").contains(" ms  C→S 05 01 00"));
    }
}
