//! `cargo xtask interop --capture` / `cargo xtask capture`: the loopback traffic of each green
//! cell, recorded by Debian's tcpdump with a port filter, kept as
//! `captures/<family>/<client>-<server>.pcapng` with a YAML sidecar saying what it shows.
//!
//! Cells run one at a time while capturing (the filter is the server's port plus UDP, so a
//! concurrent cell's packets would land in the wrong file), and push short payloads so each
//! file stays a few KB. tcpdump writes classic pcap; the file is rewritten as pcapng by the
//! harness (`sockslab::pcap::synth::pcap_to_pcapng`) and dissected once before it is kept, so a
//! capture the dissector cannot read is never committed.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::peers::{Feature, PeerId};

/// TCP payload of a capturing cell: enough to see the data flow, small enough to commit.
pub const TCP_PAYLOAD: usize = 64;
/// UDP payload of each datagram of a capturing cell.
pub const UDP_PAYLOAD: usize = 32;

/// A running tcpdump.
pub struct Recorder {
    child: tokio::process::Child,
    file: PathBuf,
    _dir: tempfile::TempDir,
    /// The tcpdump command line, for the sidecar.
    pub command: String,
}

/// The BPF filter of a cell: the server's SOCKS port(s) and every UDP datagram on loopback.
pub fn filter(ports: &[u16]) -> String {
    let tcp: Vec<String> = ports.iter().map(|p| format!("tcp port {p}")).collect();
    format!("{} or udp", tcp.join(" or "))
}

impl Recorder {
    /// Starts tcpdump on `lo` with `filter` and returns once it is listening (it says so on
    /// stderr), so no packet of the cell is missed.
    pub async fn start(filter: &str) -> Result<Recorder> {
        let dir = tempfile::Builder::new().prefix("sockslab-capture-").tempdir()?;
        let file = dir.path().join("raw.pcap");
        let tcpdump = ["/usr/bin/tcpdump", "/usr/sbin/tcpdump"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .context("tcpdump is not installed (apt-get install -y tcpdump)")?;
        // --immediate-mode and -U: take and write each packet at once (libpcap otherwise hands
        // packets over in blocks, and a stop within a second loses them); -Z root: stay root so the file
        // in our private directory can be written; -s 0: whole packets.
        let args = ["-i", "lo", "--immediate-mode", "-n", "-U", "-s", "0", "-Z", "root", "-w"];
        let mut cmd = tokio::process::Command::new(tcpdump);
        cmd.args(args).arg(&file).arg(filter).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        cmd.kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("starting {tcpdump}"))?;
        let stderr = child.stderr.take().context("tcpdump stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let mut said = Vec::new();
        let listening = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while let Some(l) = lines.next_line().await? {
                let ok = l.contains("listening on");
                said.push(l);
                if ok {
                    return Ok::<bool, std::io::Error>(true);
                }
            }
            Ok(false)
        })
        .await;
        if !matches!(listening, Ok(Ok(true))) {
            let _ = child.kill().await;
            bail!("tcpdump did not start listening: {}", said.join(" / "));
        }
        // Keep draining stderr so tcpdump never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let command = format!("tcpdump {} <file> '{filter}'", args.join(" "));
        Ok(Recorder { child, file, _dir: dir, command })
    }

    /// Stops tcpdump (SIGINT, so it closes the file properly) and returns the pcap bytes.
    pub async fn stop(mut self) -> Result<Vec<u8>> {
        // Let the last FIN/ACK packets of the cell reach the capture before stopping it.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on the pid of the child this recorder started.
            unsafe {
                libc::kill(pid as i32, libc::SIGINT);
            }
        }
        let _ = self.child.wait().await;
        std::fs::read(&self.file).with_context(|| format!("reading {}", self.file.display()))
    }
}

/// The directory under `captures/` for a feature.
pub fn family(feature: Feature) -> &'static str {
    feature.name()
}

/// The sidecar written next to each capture.
#[derive(Debug, Serialize)]
pub struct Sidecar {
    /// The lab cell id.
    pub cell: String,
    /// The feature family.
    pub family: String,
    /// When it was recorded (UTC, RFC 3339).
    pub date: String,
    /// The client peer and its version.
    pub client: Peer,
    /// The server peer and its version.
    pub server: Peer,
    /// The capture command.
    pub tcpdump: String,
    /// What the capture shows (the cell's own detail line and the dissection summary).
    pub shows: String,
    /// The dissection's first lines, so a reader knows what is inside without the tool.
    pub dissection: Vec<String>,
}

/// A peer in a sidecar.
#[derive(Debug, Serialize)]
pub struct Peer {
    /// Its lab name.
    pub name: String,
    /// Its pinned version.
    pub version: String,
    /// The command line it ran with.
    pub command: String,
}

impl Peer {
    /// The sidecar entry of `peer` run as `command`.
    pub fn new(peer: PeerId, command: String) -> Peer {
        Peer { name: peer.name().into(), version: peer.version().into(), command }
    }
}

/// Rewrites tcpdump's pcap as pcapng keeping only the cell's own packets (TCP on one of
/// `ports`; UDP on one of them or on a relay port the capture's UDP ASSOCIATE replies announce,
/// so other UDP on a shared loopback stays out), checks that it dissects to at least one SOCKS
/// conversation (or, for the bypass, one unmatched datagram), and writes it with its sidecar.
/// Returns the file written.
pub fn save(root: &Path, name: &str, raw: &[u8], ports: &[u16], mut sidecar: Sidecar) -> Result<PathBuf> {
    use sockslab::pcap::read::Transport;
    let on_port =
        |p: &sockslab::pcap::read::Packet, set: &[u16]| set.contains(&p.src.port()) || set.contains(&p.dst.port());
    let tcp_only = sockslab::pcap::synth::pcap_to_pcapng_filtered(raw, |p| {
        matches!(p.transport, Transport::Tcp(_)) && on_port(p, ports)
    })
    .context("reading the capture")?;
    let first = sockslab::pcap::dissect_bytes(&tcp_only).context("dissecting the capture")?;
    let mut udp_ports: Vec<u16> = ports.to_vec();
    udp_ports.extend(first.conversations.iter().filter_map(|c| c.raw.relay.map(|r| r.port())));
    let ng = sockslab::pcap::synth::pcap_to_pcapng_filtered(raw, |p| match p.transport {
        Transport::Tcp(_) => on_port(p, ports),
        Transport::Udp(_) => on_port(p, &udp_ports),
    })
    .context("converting the capture to pcapng")?;
    let d = sockslab::pcap::dissect_bytes(&ng).context("dissecting the capture")?;
    if d.conversations.is_empty() && d.unmatched.is_empty() {
        if let Ok(keep) = std::env::var("SOCKSLAB_CAPTURE_DEBUG") {
            let _ = std::fs::write(Path::new(&keep).join(format!("{name}.pcap")), raw);
        }
        bail!("the capture holds no SOCKS conversation ({} packets)", d.packets);
    }
    let text = d.to_text();
    sidecar.dissection = text.lines().filter(|l| !l.trim().is_empty()).take(40).map(str::to_string).collect();
    let dir = root.join("captures").join(&sidecar.family);
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!("{name}.pcapng"));
    std::fs::write(&file, &ng)?;
    std::fs::write(dir.join(format!("{name}.yaml")), serde_yaml::to_string(&sidecar)?)?;
    Ok(file)
}

/// The current UTC time as RFC 3339 (seconds), without a date crate: `date` is on every machine
/// the lab runs on.
pub fn now() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
