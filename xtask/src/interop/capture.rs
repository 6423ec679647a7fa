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

use super::Cell;
use crate::peers::{self, Feature, PeerId};

/// TCP payload of a capturing cell: enough to see the data flow, small enough to commit.
pub const TCP_PAYLOAD: usize = 64;
/// UDP payload of each datagram of a capturing cell.
pub const UDP_PAYLOAD: usize = 32;

/// A running tcpdump.
pub struct Recorder {
    child: tokio::process::Child,
    file: PathBuf,
    /// What tcpdump says on stderr after it started (its closing statistics).
    said: tokio::task::JoinHandle<Vec<String>>,
    _dir: tempfile::TempDir,
    /// The tcpdump command line, for the sidecar.
    pub command: String,
}

/// The BPF filter of a cell: the server's SOCKS port(s), and every UDP datagram on loopback
/// only for a cell whose SOCKS traffic has datagrams (`udp`: UDP ASSOCIATE, whose relay ports
/// are not known before the reply). UDP is not taken otherwise: another program's UDP on the
/// shared loopback (a kcp transport run, a bench) can fill tcpdump's buffer faster than it is
/// read, and the kernel then drops packets of the cell itself, which is how SOCKS4a captures
/// came out with connections missing their start (no SYN, so the flow's direction was guessed
/// from a server packet) or holding no conversation at all.
pub fn filter(ports: &[u16], udp: bool) -> String {
    let tcp: Vec<String> = ports.iter().map(|p| format!("tcp port {p}")).collect();
    if udp {
        format!("{} or udp", tcp.join(" or "))
    } else {
        tcp.join(" or ")
    }
}

/// The number in tcpdump's closing `N packets dropped by kernel` line, if it printed one.
pub fn dropped(stderr: &[String]) -> Option<u64> {
    stderr.iter().find_map(|l| l.strip_suffix("packets dropped by kernel")?.trim().parse().ok())
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
        // in our private directory can be written; -s 0: whole packets; -B: a 16 MiB kernel
        // buffer (the default 2 MiB holds only a few whole-size loopback packets).
        let args = ["-i", "lo", "--immediate-mode", "-n", "-U", "-s", "0", "-B", "16384", "-Z", "root", "-w"];
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
        // Keep draining stderr so tcpdump never blocks on a full pipe, and keep what it says:
        // its closing lines count the packets the kernel dropped.
        let said = tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Ok(Some(l)) = lines.next_line().await {
                kept.push(l);
            }
            kept
        });
        let command = format!("tcpdump {} <file> '{filter}'", args.join(" "));
        Ok(Recorder { child, file, said, _dir: dir, command })
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
        // A capture with dropped packets is missing part of the cell (often a connection's
        // start): never keep it, say why instead.
        let said = self.said.await.unwrap_or_default();
        if let Some(n) = dropped(&said).filter(|&n| n > 0) {
            bail!("tcpdump dropped {n} packets (loopback busy with other traffic): run the cell again");
        }
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

/// Stops a cell's capture and, for a green cell, keeps it under `captures/` with its sidecar.
/// Returns a note for the cell's detail line.
pub(super) async fn record_cell(
    c: &Cell,
    rec: Result<Recorder>,
    port: u16,
    green: bool,
    detail: &str,
    client_logs: &str,
    server_command: String,
) -> String {
    let rec = match rec {
        Ok(r) => r,
        Err(e) => return format!("not captured: {e:#}"),
    };
    let tcpdump = rec.command.clone();
    let raw = match rec.stop().await {
        Ok(r) => r,
        Err(e) => return format!("not captured: {e:#}"),
    };
    if !green {
        return "not captured (the cell is not green)".into();
    }
    let family = match c.feature {
        Some(f) => family(f).to_string(),
        None => "udp-bypass".to_string(),
    };
    let (name, client) = match c.client {
        Some(p) => {
            // The first log line is the client's command line (curl and the forwarders print it).
            let cmd = match p {
                PeerId::V2ray4 | PeerId::V2ray5 => {
                    "v2ray with a dokodemo-door inbound and a socks outbound to the server (matrix.client in its harness/peers definition)"
                        .to_string()
                }
                _ => client_logs.lines().next().unwrap_or_default().to_string(),
            };
            (format!("{}-{}", p.name(), c.server.name()), Peer::new(p, cmd))
        }
        None => (
            format!("probe-{}", c.server.name()),
            Peer {
                name: "probe".into(),
                version: "sockslab runner (xtask/src/interop/bypass.rs: scenarios/regressions/v01-*)".into(),
                command: String::new(),
            },
        ),
    };
    let sidecar = Sidecar {
        cell: c.id.clone(),
        family,
        date: now(),
        client,
        server: Peer::new(c.server, server_command),
        tcpdump,
        shows: detail.to_string(),
        dissection: Vec::new(),
    };
    match save(&peers::root(), &name, &raw, &[port], sidecar) {
        Ok(f) => format!("captured to {}", f.strip_prefix(peers::root()).unwrap_or(&f).display()),
        Err(e) => format!("not captured: {e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_is_captured_only_for_cells_with_datagrams() {
        assert_eq!(filter(&[1080], false), "tcp port 1080");
        assert_eq!(filter(&[1080, 1081], true), "tcp port 1080 or tcp port 1081 or udp");
    }

    #[test]
    fn the_kernel_drop_count_is_read_from_tcpdumps_closing_lines() {
        let said = |ls: &[&str]| ls.iter().map(|l| l.to_string()).collect::<Vec<_>>();
        let ok = said(&[
            "listening on lo",
            "17 packets captured",
            "40 packets received by filter",
            "0 packets dropped by kernel",
        ]);
        assert_eq!(dropped(&ok), Some(0));
        let lost =
            said(&["2231 packets captured", "9000 packets received by filter", "6769 packets dropped by kernel"]);
        assert_eq!(dropped(&lost), Some(6769));
        assert_eq!(dropped(&said(&["tcpdump: killed"])), None);
    }
}
