//! `cargo xtask fuzz`: seeds the fuzz corpora from the scenario catalogue and runs the libFuzzer
//! targets of `fuzz/` (cargo-fuzz, nightly flags through `RUSTC_BOOTSTRAP=1`).
//!
//! The corpus generator renders every scenario's `send`/`udp_send` steps (and the patterns of
//! its `expect` steps) with fixed variables and keeps the byte strings each decoder accepts, so
//! the engine starts from real protocol messages rather than from nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sockslab::scenario::{StepKind, Template};
use socksref::proto::fuzzing::TARGETS;
use socksref::proto::smux::{Frame, VERSION_1, VERSION_2};
use socksref::proto::udp::UdpHeader;
use socksref::proto::udptun::TunFrame;
use socksref::proto::v4::{Socks4ReplyMsg, Socks4Request, DEFAULT_MAX_FIELD};
use socksref::proto::v5::{Greeting, MethodSelection, ReplyMsg, Request};

use crate::flags::FuzzArgs;

#[path = "../../fuzz/src/scenario_check.rs"]
#[allow(dead_code)]
mod scenario_check;

/// Seeds kept per target: enough variety to start from, small enough to commit.
const MAX_SEEDS: usize = 40;

/// Entry point of `cargo xtask fuzz`.
pub fn run(args: &FuzzArgs) -> Result<()> {
    let root = crate::peers::root();
    if args.seed {
        return seed(&root);
    }
    let targets: Vec<&str> = match &args.target {
        Some(t) if TARGETS.contains(&t.as_str()) => vec![t.as_str()],
        Some(t) => bail!("unknown fuzz target {t:?}; targets: {}", TARGETS.join(", ")),
        None => TARGETS.to_vec(),
    };
    let mut failed = Vec::new();
    for t in &targets {
        let stats = run_target(&root, t, args.seconds)?;
        println!("{t:<18} {stats}");
        if !stats.ok {
            failed.push(*t);
        }
    }
    if !failed.is_empty() {
        bail!(
            "crashes in {}: see fuzz/artifacts/<target>/ (replayed by `cargo test -p socksref --test fuzz_corpus`)",
            failed.join(", ")
        );
    }
    Ok(())
}

/// What one engine run reported.
struct Stats {
    ok: bool,
    execs: Option<u64>,
    secs: f64,
    corpus: usize,
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let execs = self.execs.map_or("?".to_string(), |e| e.to_string());
        let verdict = if self.ok { "no crash" } else { "CRASH" };
        write!(f, "{verdict:<9} execs {execs:>10} in {:>5.1}s, corpus {} files", self.secs, self.corpus)
    }
}

fn run_target(root: &Path, target: &str, seconds: u64) -> Result<Stats> {
    let fuzz_dir = root.join("fuzz");
    let corpus = fuzz_dir.join("corpus").join(target);
    // The engine writes what it learns to a scratch directory; the committed corpus stays the small
    // seed set (new inputs that matter are crash files, kept under fuzz/artifacts/).
    let scratch = tempfile::tempdir().context("scratch corpus directory")?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| PathBuf::from(d).with_file_name("fuzz-target"))
        .unwrap_or_else(|| fuzz_dir.join("target"));
    let started = Instant::now();
    let out = Command::new("cargo")
        .current_dir(&fuzz_dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", &target_dir)
        .args(["fuzz", "run", "-O", target])
        .arg(scratch.path())
        .arg(&corpus)
        .args([
            "--",
            &format!("-max_total_time={seconds}"),
            "-max_len=4096",
            "-rss_limit_mb=1024",
            "-print_final_stats=1",
        ])
        .output()
        .context("running cargo fuzz (install it with `cargo install cargo-fuzz`)")?;
    let secs = started.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&out.stderr);
    let execs =
        log.lines().find_map(|l| l.strip_prefix("stat::number_of_executed_units:")).and_then(|v| v.trim().parse().ok());
    if !out.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!("--- {target}: engine output (last lines) ---");
        for l in tail.iter().rev() {
            eprintln!("{l}");
        }
    }
    let learned = std::fs::read_dir(scratch.path()).map(|d| d.count()).unwrap_or(0);
    Ok(Stats { ok: out.status.success(), execs, secs, corpus: learned })
}

/// Rewrites `fuzz/corpus/<target>/` from the catalogue.
fn seed(root: &Path) -> Result<()> {
    let scenarios = sockslab::scenario::load_catalogue(&root.join("scenarios")).context("loading the catalogue")?;
    let vars = scenario_check::fixed_vars();
    let mut seeds: BTreeMap<&str, BTreeSet<Vec<u8>>> = BTreeMap::new();
    let mut add = |t: &'static str, b: Vec<u8>| {
        let set = seeds.entry(t).or_default();
        if set.len() < MAX_SEEDS {
            set.insert(b);
        }
    };
    for s in &scenarios {
        // Each connection's client bytes in order: the server handshake target replays them.
        let mut streams: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
        for step in &s.steps {
            let (bytes, sent) = match &step.kind {
                StepKind::Send(t) => (scenario_check::render_send(t, &vars), true),
                StepKind::UdpSend { data, .. } => {
                    if let Some(b) = scenario_check::render_send(data, &vars) {
                        if UdpHeader::decode(&b).is_ok() {
                            add("udp_header", b);
                        }
                    }
                    continue;
                }
                StepKind::Expect(p) | StepKind::ExpectOptional { pattern: p, .. } => (render_pattern(p, &vars), false),
                _ => continue,
            };
            let Some(bytes) = bytes else { continue };
            if sent {
                streams.entry(step.conn.as_str()).or_default().extend_from_slice(&bytes);
            }
            classify(&bytes, &mut add);
        }
        for (_, stream) in streams {
            if stream.len() <= 1024 {
                // config 0 (SOCKS4+5, NO AUTH), every verdict yes, no cuts; then the client bytes.
                let mut b = vec![0, 0xff, 0];
                b.extend_from_slice(&stream);
                add("server_handshake", b.clone());
                // The same with USER/PASS required and a few cuts, so chunking is exercised from the start.
                b[0] = 4;
                b[2] = 3;
                b.splice(3..3, [1, 2, 3]);
                add("server_handshake", b);
            }
        }
    }
    for url in [
        "socks5://:1080",
        "socks5://user:p%40ss@127.0.0.1:1080?bind=true&udp=true",
        "socks4a://[::1]:1080",
        "tcp://127.0.0.1:8080/example.com:80,[::1]:81",
        "socks5://:1080?allow=127.0.0.0/8,::1/128&maxHandshakes=64&readTimeout=10s",
        "rtcp://:2222/127.0.0.1:22",
        "socks5+tls://u:p@localhost:443?handshakeTimeout=500ms",
    ] {
        add("proxy_url", url.as_bytes().to_vec());
    }
    // The scenario target starts from small real scenario files and a few templates.
    let mut files = Vec::new();
    sockslab::scenario::collect_yaml(&root.join("scenarios"), &mut files)?;
    let mut files: Vec<(u64, PathBuf)> =
        files.into_iter().map(|p| (std::fs::metadata(&p).map(|m| m.len()).unwrap_or(u64::MAX), p)).collect();
    files.sort();
    for (_, p) in files.iter().take(MAX_SEEDS - 4) {
        add("scenario", std::fs::read(p)?);
    }
    for t in [
        "05 01 00 ; 05 01 00 {target.addr} {target.port}",
        "{m:methods+02} 'abc\\x00' {repeat:41:3}",
        "xor('hi') {bnd:addr}",
    ] {
        add("scenario", t.as_bytes().to_vec());
    }
    for b in pcap_seeds() {
        add("pcap_reader", b);
    }
    let corpus_root = root.join("fuzz").join("corpus");
    for t in TARGETS {
        let dir = corpus_root.join(t);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)?;
        let set = seeds.get(t).cloned().unwrap_or_default();
        if set.is_empty() {
            bail!("no seed for fuzz target {t}: the catalogue has no message it decodes");
        }
        for (i, b) in set.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:03}")), b)?;
        }
        println!("{t:<18} {} seeds", set.len());
    }
    Ok(())
}

/// Small synthetic captures: a SOCKS5 CONNECT in every link type, pcap and pcapng, over IPv4 and
/// IPv6, and a UDP ASSOCIATE with its datagrams, so the engine starts inside the dissector.
fn pcap_seeds() -> Vec<Vec<u8>> {
    use sockslab::pcap::synth::{pcap, pcapng, Link, Script};
    let mut out = Vec::new();
    for (c, s) in [("127.0.0.1:40000", "127.0.0.1:1080"), ("[::1]:40000", "[::1]:1080")] {
        let (Ok(c), Ok(s)) = (c.parse(), s.parse()) else { continue };
        let script = Script::new(c, s, 1000, 5000)
            .handshake()
            .client(&[5, 2, 0, 2])
            .server(&[5, 0])
            .client(&[5, 1, 0, 3, 9, b'l', b'o', b'c', b'a', b'l', b'h', b'o', b's', b't', 0, 80])
            .server(&[5, 0, 0, 1, 127, 0, 0, 1, 0xc3, 0x50])
            .client(b"GET /")
            .fin(true);
        for link in Link::ALL {
            out.push(pcap(link, &script.segs));
            out.push(pcapng(link, &script.segs, link == Link::Raw));
        }
    }
    let (Ok(c), Ok(s), Ok(u), Ok(r)) =
        ("127.0.0.1:40000".parse(), "127.0.0.1:1080".parse(), "127.0.0.1:45000".parse(), "127.0.0.1:1081".parse())
    else {
        return out;
    };
    let udp = Script::new(c, s, 1, 2)
        .handshake()
        .client(&[5, 1, 0])
        .server(&[5, 0])
        .client(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0])
        .server(&[5, 0, 0, 1, 127, 0, 0, 1, 0x04, 0x39])
        .udp(u, r, &[0, 0, 0, 1, 127, 0, 0, 1, 0, 53, b'q'])
        .udp(r, u, &[0, 0, 0, 1, 127, 0, 0, 1, 0, 53, b'a'])
        .rst(false);
    out.push(pcap(Link::Ethernet, &udp.segs));
    out.push(pcapng(Link::Sll2, &udp.segs, true));
    out
}

fn render_pattern(p: &Template, vars: &sockslab::scenario::template::Vars) -> Option<Vec<u8>> {
    if p.min_len(vars) > 1 << 16 {
        return None;
    }
    Some(p.render_pattern(vars).ok()?.into_iter().flat_map(|f| f.bytes).collect())
}

/// Files `bytes` under every decoder target that accepts a message at its start.
fn classify(bytes: &[u8], add: &mut impl FnMut(&'static str, Vec<u8>)) {
    let mut offer = |t: &'static str, n: Option<usize>| {
        if let Some(n) = n {
            add(t, bytes[..n].to_vec());
        }
    };
    offer("socks4_request", Socks4Request::decode(bytes, DEFAULT_MAX_FIELD).ok().map(|m| m.1));
    offer(
        "socks4_reply",
        (bytes.first() == Some(&0)).then(|| Socks4ReplyMsg::decode(bytes).ok().map(|m| m.1)).flatten(),
    );
    offer("socks5_greeting", Greeting::decode(bytes).ok().map(|m| m.1));
    offer("socks5_method", (bytes.len() == 2).then(|| MethodSelection::decode(bytes).ok().map(|m| m.1)).flatten());
    offer("socks5_request", Request::decode(bytes).ok().map(|m| m.1));
    offer("socks5_reply", ReplyMsg::decode(bytes).ok().map(|m| m.1));
    offer("userpass_request", socksref::proto::auth::UserPassRequest::decode(bytes).ok().map(|m| m.1));
    offer(
        "userpass_reply",
        (bytes.len() == 2).then(|| socksref::proto::auth::UserPassReply::decode(bytes).ok().map(|m| m.1)).flatten(),
    );
    offer("udptun_frame", TunFrame::decode(bytes).ok().map(|m| m.1));
    offer("smux_frame", Frame::decode(bytes, VERSION_1).or_else(|_| Frame::decode(bytes, VERSION_2)).ok().map(|m| m.1));
    // Invalid and truncated forms are seeds too: the Invalid/Incomplete invariants need them.
    if bytes.len() > 1 {
        offer("socks5_request", (bytes[0] == 5).then_some(bytes.len() - 1));
        offer("socks4_request", (bytes[0] == 4).then_some(bytes.len() - 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_files_a_socks5_connect_under_request_and_not_under_socks4() {
        let mut got = Vec::new();
        classify(&[5, 1, 0, 1, 127, 0, 0, 1, 0, 7], &mut |t, b| got.push((t, b.len())));
        assert!(got.contains(&("socks5_request", 10)), "{got:?}");
        assert!(!got.iter().any(|(t, _)| *t == "socks4_request" && got.len() == 10));
    }
}
