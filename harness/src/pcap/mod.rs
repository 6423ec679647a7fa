//! Capture files as a first-class input: reading pcap/pcapng ([`read`]), TCP reassembly and UDP
//! collection ([`reassembly`]) and SOCKS dissection with the reference's decoders ([`dissect`]).

pub mod dissect;
pub mod read;
pub mod reassembly;
pub mod replay;
pub mod scenario;
pub mod synth;

use std::path::Path;

pub use dissect::{Conversation, Dissection};
pub use read::{read_capture, Capture, CaptureError};
pub use reassembly::{reassemble, Flows};

/// Reads, reassembles and dissects a capture held in memory.
pub fn dissect_bytes(bytes: &[u8]) -> Result<Dissection, CaptureError> {
    let cap = read_capture(bytes)?;
    let flows = reassemble(&cap.packets);
    let origin = cap.packets.iter().map(|p| p.time).min().unwrap_or_default();
    Ok(dissect::dissect(&flows, cap.total, origin))
}

/// Reads, reassembles and dissects a capture file; errors name the file.
pub fn dissect_file(path: &Path) -> anyhow::Result<Dissection> {
    use anyhow::Context;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    dissect_bytes(&bytes).with_context(|| format!("{}", path.display()))
}

#[cfg(test)]
mod tests;
