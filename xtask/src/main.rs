//! `cargo xtask` — orchestration for sockslab: benchmarks now, peers and interop later.
//!
//! This file only dispatches; every subcommand lives in its own module and its flags in [`flags`].

mod bench;
mod flags;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let flags = flags::Xtask::parse();
    match flags.command {
        flags::Command::Bench(args) => bench::run(&args),
    }
}
