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
    /// Benchmark socksref against microsocks, danted and direct loopback.
    Bench(BenchArgs),
    /// The interop lab: curl, gost, v2ray 5 and 4.34 and socksref against each other.
    Interop(InteropArgs),
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

/// Flags of `cargo xtask interop`.
#[derive(Debug, Args)]
pub struct InteropArgs {
    /// docker (default when a daemon is usable or can be started) or process.
    #[arg(long, value_enum)]
    pub backend: Option<BackendArg>,

    /// Only cells involving this peer (repeatable): curl, gost, v2ray5, v2ray4, reference.
    #[arg(long = "peer", value_name = "NAME", value_parser = ["curl", "gost", "v2ray5", "v2ray4", "reference"])]
    pub peers: Vec<String>,

    /// Only these features (repeatable): socks4, socks4a, socks4-userid, socks5-connect,
    /// userpass, bind, udp-associate, mbind, udp-tun, rudp-tun, tls-methods, tls-auth,
    /// half-close, plus udp-bypass and scenarios.
    #[arg(long = "feature", value_name = "NAME", value_parser = [
        "socks4", "socks4a", "socks4-userid", "socks5-connect", "userpass", "bind", "udp-associate", "mbind",
        "udp-tun", "rudp-tun", "tls-methods", "tls-auth", "half-close", "udp-bypass", "scenarios"])]
    pub features: Vec<String>,

    /// Only cells whose id matches (repeatable; `*` is a wildcard), e.g. `socks4a.curl.v2ray5`.
    #[arg(long, value_name = "CELL")]
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
}

impl ServerName {
    /// Every known server, in the column order of the report.
    pub const ALL: [ServerName; 3] = [ServerName::Socksref, ServerName::Microsocks, ServerName::Danted];

    /// The name used on the command line, in progress lines and in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerName::Socksref => "socksref",
            ServerName::Microsocks => "microsocks",
            ServerName::Danted => "danted",
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
