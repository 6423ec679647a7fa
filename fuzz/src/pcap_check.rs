//! The `pcap_reader` fuzz target's check: the harness's capture reader, TCP reassembly and SOCKS
//! dissector on arbitrary bytes.
//!
//! Compiled into the fuzz crate and, through `#[path]`, into the harness's corpus replay test,
//! so the engine and `cargo test` run one function. It only calls the harness's public API.
//!
//! Invariants: nothing panics; an error names a packet (1 or later); packet numbers rise and
//! stay within the file's count; a reassembled stream never holds more bytes than its segments
//! carried; every dissected event names a packet of the file.

use sockslab::pcap::read::{read_capture, CaptureError, Transport};
use sockslab::pcap::{dissect_bytes, reassemble};

/// Inputs are cut here: captures larger than this only slow the engine down.
const MAX_INPUT: usize = 1 << 16;

/// Runs the reader on `data` and panics if an invariant breaks.
pub fn check(data: &[u8]) {
    let data = &data[..data.len().min(MAX_INPUT)];
    let cap = match read_capture(data) {
        Ok(c) => c,
        Err(CaptureError::Packet { packet, what }) => {
            assert!(packet >= 1 && !what.is_empty(), "error names packet {packet}: {what:?}");
            return;
        }
        Err(_) => return,
    };
    assert!(cap.packets.len() + cap.skipped == cap.total, "packets + skipped != total");
    let mut last = 0;
    let mut tcp_bytes = 0usize;
    for p in &cap.packets {
        assert!(p.number > last && p.number <= cap.total, "packet numbers out of order");
        last = p.number;
        if let Transport::Tcp(seg) = &p.transport {
            tcp_bytes += seg.payload.len();
        }
    }
    let flows = reassemble(&cap.packets);
    let held: usize = flows.tcp.iter().map(|f| f.to_server.data.len() + f.to_client.data.len()).sum();
    assert!(held <= tcp_bytes, "streams hold {held} bytes, segments carried {tcp_bytes}");
    let d = dissect_bytes(data).expect("a file that reads once reads twice");
    for c in &d.conversations {
        for e in &c.events {
            assert!(e.packet <= cap.total, "event names packet {} of {}", e.packet, cap.total);
        }
    }
    let _ = d.to_text();
}
