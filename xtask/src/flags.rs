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

/// The subcommands. `peers` and `interop` will join `bench` here.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Benchmark socksref against microsocks, danted and direct loopback.
    Bench(BenchArgs),
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
