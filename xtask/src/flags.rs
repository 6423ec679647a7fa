//! Command-line flags of every `cargo xtask` subcommand, in one place so `main.rs` stays dispatch-only.

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `cargo xtask`: sockslab's project automation.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "sockslab project automation")]
pub struct Xtask {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Benchmark socksref against microsocks, danted, gost and V2Ray 5 and direct loopback.
    Bench(BenchArgs),
    /// The interop lab: curl, gost, v2ray 5 and 4.34 and socksref against each other.
    Interop(InteropArgs),
    /// Record the lab's green cells with tcpdump into captures/<family>/<client>-<server>.pcapng
    /// (the same as `interop --capture`; by default every feature cell and the UDP bypass).
    Capture(InteropArgs),
    /// Check the tree: scenario names, doc comments, catalogue ids, citations, unwraps, README commands.
    Tidy,
    /// Run the libFuzzer targets of fuzz/ (all in turn by default), or reseed their corpora.
    Fuzz(FuzzArgs),
    /// Soak socksref on loopback: thousands of tunnels, slowloris, resets, backpressure, fd exhaustion, SIGTERM.
    Soak(SoakArgs),
}

/// How `cargo xtask interop` runs peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// Containers from locally built images (testcontainers), host networking.
    Docker,
    /// The same binaries as plain processes.
    Process,
}

/// `--shard K/N`: the K-th (1-based) of N disjoint parts of the planned cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Which part, 1..=`of`.
    pub index: u32,
    /// How many parts.
    pub of: u32,
}

impl Shard {
    /// The whole plan as one part.
    pub const WHOLE: Shard = Shard { index: 1, of: 1 };
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.of)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("`{s}`: expected K/N with 1 <= K <= N, e.g. 2/4");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, of) = (k.trim().parse::<u32>().map_err(|_| bad())?, n.trim().parse::<u32>().map_err(|_| bad())?);
        if index == 0 || index > of {
            return Err(bad());
        }
        Ok(Shard { index, of })
    }
}

/// Flags of `cargo xtask interop`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct InteropArgs {
    /// `report --merge`: build one report from shard reports instead of running cells.
    #[command(subcommand)]
    pub action: Option<InteropAction>,

    /// docker (default when a daemon is usable or can be started) or process.
    #[arg(long, value_enum)]
    pub backend: Option<BackendArg>,

    /// Only cells involving this peer (repeatable or comma-separated): curl, gost, v2ray5,
    /// v2ray4, reference.
    #[arg(long = "peer", value_name = "NAME", value_delimiter = ',', value_parser = peer_names())]
    pub peers: Vec<String>,

    /// Only these features (repeatable or comma-separated): socks4, socks4a, socks4-userid,
    /// socks5-connect, userpass, bind, udp-associate, mbind, udp-tun, rudp-tun, tls-methods,
    /// tls-auth, half-close, plus udp-bypass and scenarios.
    #[arg(long = "feature", value_name = "NAME", value_delimiter = ',', value_parser = feature_names())]
    pub features: Vec<String>,

    /// Only cell ids matching this glob (repeatable), e.g. `socks4a.curl.v2ray5` or `*.curl.*`:
    /// `*` any run of characters (dots too), `?` one, `[abc]` a class, `{a,b}` alternatives;
    /// without wildcards the whole id exactly (the harness's `--only` syntax).
    #[arg(long, value_name = "GLOB")]
    pub only: Vec<String>,

    /// Print the planned cells (and which are not applicable) and exit.
    #[arg(long)]
    pub list: bool,

    /// Feature cells run at once.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,

    /// Catalogue delivery schedules (repeatable; default all four).
    #[arg(long = "schedule", value_name = "NAME")]
    pub schedules: Option<Vec<String>>,

    /// Report directory (default target/interop/report).
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,

    /// Run the config-file section instead of the matrix: every docker/configs/ file by its real
    /// program and by socksref -C/--v2ray, the same client checks, verdicts compared.
    #[arg(long)]
    pub configs: bool,

    /// Run only the K-th of N parts of the planned cells (1-based), assigned by a hash of each
    /// cell id, so every machine agrees and a new cell does not move the others.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<Shard>,

    /// Record each green feature cell (and the UDP bypass probe) with tcpdump into
    /// `captures/<family>/<client>-<server>.pcapng` plus a YAML sidecar; cells then run one at a
    /// time with short payloads, and the behaviour diff is skipped.
    #[arg(long)]
    pub capture: bool,

    /// Run the transport family instead of the matrix: {reference, gost} × {reference, gost} ×
    /// these transports × {connect, udp-tun, mbind}, 64 MiB each way (docs/transports.md).
    #[arg(long = "transport", value_name = "LIST", value_delimiter = ',',
          value_parser = ["tcp", "tls", "ws", "wss", "mtls", "mws", "mwss", "kcp"])]
    pub transports: Vec<String>,
}

/// Subcommands of `cargo xtask interop`.
#[derive(Debug, Subcommand)]
pub enum InteropAction {
    /// Work on reports already written.
    Report(ReportArgs),
}

/// Flags of `cargo xtask interop report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Shard reports (`interop.json` of `--shard K/N` runs) to merge into one JSON/JUnit/HTML report.
    #[arg(long, value_name = "JSON", num_args = 1.., required = true)]
    pub merge: Vec<std::path::PathBuf>,

    /// Report directory (default target/interop/report).
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,
}

/// Flags of `cargo xtask bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Seconds per measurement window (default 3, or 0.5 with --quick).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Short windows and fewer idle tunnels: a smoke test, not a measurement.
    #[arg(long)]
    pub quick: bool,

    /// Benchmark only these servers (repeatable); direct loopback always runs.
    #[arg(long = "peer", value_name = "NAME", value_enum)]
    pub peers: Vec<ServerName>,

    /// Never run apt-get to install missing comparison peers.
    #[arg(long)]
    pub no_install: bool,

    /// Idle tunnels for the RSS measurement (default 2000, or 200 with --quick).
    #[arg(long, value_name = "N")]
    pub tunnels: Option<usize>,

    /// Only the transport rows (tls, wss and kcp throughput and handshakes/s, socksref vs gost).
    #[arg(long)]
    pub transports_only: bool,
}

/// A SOCKS server the benchmark knows how to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum ServerName {
    /// The reference implementation in this workspace.
    Socksref,
    /// microsocks (Debian `microsocks`): SOCKS5 CONNECT only.
    Microsocks,
    /// Dante (Debian `dante-server`): SOCKS4 and SOCKS5 with UDP ASSOCIATE.
    Danted,
    /// gost 3.2.6 (the interop lab's build, docker/gost): SOCKS5 with UDP, SOCKS4 on a second port.
    Gost,
    /// V2Ray 5.52.0 (the interop lab's build): a SOCKS inbound (4, 4a, 5) with UDP.
    V2ray5,
}

impl ServerName {
    /// Every known server, in the column order of the report.
    pub const ALL: [ServerName; 5] =
        [ServerName::Socksref, ServerName::Microsocks, ServerName::Danted, ServerName::Gost, ServerName::V2ray5];

    /// The name used on the command line, in progress lines and in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerName::Socksref => "socksref",
            ServerName::Microsocks => "microsocks",
            ServerName::Danted => "danted",
            ServerName::Gost => "gost",
            ServerName::V2ray5 => "v2ray5",
        }
    }
}

/// Flags of `cargo xtask fuzz`.
#[derive(Debug, Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,

    /// Rewrite fuzz/corpus/<target>/ from the scenario catalogue instead of fuzzing.
    #[arg(long)]
    pub seed: bool,

    /// Only this target (default: every target in turn).
    pub target: Option<String>,
}

/// Flags of `cargo xtask soak`.
#[derive(Debug, Args)]
pub struct SoakArgs {
    /// Smoke mode: 200 tunnels.
    #[arg(long)]
    pub quick: bool,

    /// Concurrent tunnels (default 10000, capped by the descriptor limit at 2 per tunnel).
    #[arg(long, value_name = "N")]
    pub tunnels: Option<usize>,

    /// Give up (and fail) once this many seconds have passed before the last phase.
    #[arg(long, default_value_t = 600)]
    pub max_seconds: u64,

    /// Internal: run as the soak's target process (echo, sink, reset listeners).
    #[arg(long, hide = true)]
    pub targets_child: bool,
}

/// `--peer`'s values: the lab's peers, by the names cells use.
fn peer_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(crate::peers::PeerId::ALL.map(|p| p.name()))
}

/// `--feature`'s values: the matrix's feature columns, then the two sections that are not one.
fn feature_names() -> clap::builder::PossibleValuesParser {
    let columns = crate::peers::Feature::ALL.map(|f| f.name());
    clap::builder::PossibleValuesParser::new(columns.into_iter().chain(["udp-bypass", "scenarios"]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The README's `--peer gost --feature mbind,udp-tun` parses; an unknown name is refused
    /// with the known ones listed.
    #[test]
    fn peer_and_feature_take_lists_and_refuse_unknown_names() {
        let x = Xtask::try_parse_from(["xtask", "interop", "--peer", "gost", "--feature", "mbind,udp-tun"]).unwrap();
        let Command::Interop(a) = x.command else { panic!("not interop") };
        assert_eq!(a.peers, ["gost"]);
        assert_eq!(a.features, ["mbind", "udp-tun"]);
        let Err(e) = Xtask::try_parse_from(["xtask", "interop", "--feature", "udp"]) else { panic!("accepted") };
        let e = e.to_string();
        assert!(e.contains("udp-associate") && e.contains("scenarios"), "{e}");
        assert!(Xtask::try_parse_from(["xtask", "interop", "--peer", "dante"]).is_err());
    }
}
