//! `cargo xtask` — orchestration for sockslab: benchmarks, the interop lab and tidy checks.
//!
//! This file only dispatches; every subcommand lives in its own module and its flags in [`flags`].

mod bench;
mod flags;
mod fuzz;
mod interop;
mod peers;
mod soak;
mod tidy;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let flags = flags::Xtask::parse();
    if matches!(flags.command, flags::Command::Bench(_) | flags::Command::Interop(_) | flags::Command::Capture(_)) {
        // The peers' matrix entries, read once: a broken definition is an error here, before any build.
        peers::load()?;
    }
    match flags.command {
        flags::Command::Bench(args) => bench::run(&args),
        flags::Command::Interop(args) => interop::run(&args),
        flags::Command::Capture(mut args) => {
            args.capture = true;
            if args.features.is_empty() && args.only.is_empty() {
                // Every feature family and the bypass; the catalogue cells are not captured.
                args.features = interop::CAPTURE_FEATURES.iter().map(|f| f.to_string()).collect();
            }
            interop::run(&args)
        }
        flags::Command::Tidy => tidy::run(),
        flags::Command::Fuzz(args) => fuzz::run(&args),
        flags::Command::Soak(args) => soak::run(&args),
    }
}
