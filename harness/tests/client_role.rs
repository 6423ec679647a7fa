//! `sockslab check-client` against real clients: curl in its four modes and with a login,
//! socksref's own client chain behind a local forwarder, and the runner's own duties (background
//! connections, exit codes in reports, hung clients, steps it cannot play).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn sockslab<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sockslab")).args(args).output().expect("run sockslab")
}

fn summary(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn installed(prog: &str) -> bool {
    Command::new(prog).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// A JSON report file unique to this test process and `name`.
fn report_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("sockslab-client-{name}-{}.json", std::process::id()))
}

/// Runs check-client with `args` plus a JSON report, and returns the report's results.
fn run_json(name: &str, args: &[&str]) -> (Output, Vec<serde_json::Value>) {
    let path = report_path(name);
    let mut all: Vec<&str> = args.to_vec();
    let p = path.to_str().expect("utf-8 temp path");
    all.extend(["--json", p]);
    let out = sockslab(&all);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("no report ({e}): {}", summary(&out)));
    let _ = std::fs::remove_file(&path);
    let v: serde_json::Value = serde_json::from_str(&text).expect("report is JSON");
    let results = v["results"].as_array().cloned().unwrap_or_default();
    (out, results)
}

/// Asserts that every applicable `client.*` scenario passed (or failed as listed in the expected
/// results), that at least `min_ran` of them ran, and that the run exited 0.
fn assert_all_applicable_pass(out: &Output, results: &[serde_json::Value], min_ran: usize) {
    assert!(out.status.success(), "{}", summary(out));
    let client: Vec<&serde_json::Value> =
        results.iter().filter(|r| r["id"].as_str().is_some_and(|i| i.starts_with("client."))).collect();
    let mut ran = 0;
    for r in &client {
        let verdict = r["verdict"].as_str().unwrap_or("?");
        match verdict {
            "pass" | "expected-failure" => ran += 1,
            "not-applicable" => {}
            _ => panic!("{} is {verdict}: {}", r["id"], summary(out)),
        }
    }
    assert!(ran >= min_ran, "only {ran} client scenarios ran, expected at least {min_ran}: {}", summary(out));
}

#[rstest::rstest]
#[case::socks5("socks5", "--socks5 {proxy}", "{target}", false, 25)]
#[case::socks5_login("socks5", "-x socks5://{user}:{pass}@{proxy}", "{target}", true, 31)]
#[case::socks5h("socks5h", "--socks5-hostname {proxy}", "{target.host}:{target.port}", false, 3)]
#[case::socks4("socks4", "--socks4 {proxy}", "{target}", false, 6)]
#[case::socks4a("socks4a", "--socks4a {proxy}", "{target.host}:{target.port}", false, 3)]
fn curl_passes_every_applicable_client_scenario(
    #[case] speaks: &str,
    #[case] proxy: &str,
    #[case] target: &str,
    #[case] login: bool,
    #[case] min_ran: usize,
) {
    if !installed("curl") {
        return;
    }
    let command = format!("curl -sS -m 3 {proxy} http://{target}/");
    let expected = manifest().join("clients/curl/expected.yaml");
    let mut args = vec!["check-client", "--speaks", speaks, "--command", &command];
    args.extend(["--expected", expected.to_str().expect("utf-8 path")]);
    if login {
        args.push("--login");
    }
    let (out, results) = run_json(&format!("curl-{speaks}-{login}"), &args);
    assert_all_applicable_pass(&out, &results, min_ran);
}

/// socksref's binary: `CARGO_BIN_EXE_socksref` when set, else the one next to sockslab's (same
/// target directory and profile), built with this cargo when it is missing.
fn socksref_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CARGO_BIN_EXE_socksref") {
        return PathBuf::from(p);
    }
    let here = Path::new(env!("CARGO_BIN_EXE_sockslab"));
    let bin = here.with_file_name(format!("socksref{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        let release = here.parent().and_then(|d| d.file_name()).is_some_and(|n| n == "release");
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "-p", "socksref", "--bin", "socksref"]).current_dir(manifest());
        if release {
            build.arg("--release");
        }
        let st = build.status().expect("run cargo build -p socksref");
        assert!(st.success(), "cargo build -p socksref failed");
    }
    bin
}

#[rstest::rstest]
#[case::socks5("socks5", "{target}", "socks5://{proxy}?timeout=2s", false, 25)]
#[case::socks5_login("socks5", "{target}", "socks5://{user}:{pass}@{proxy}?timeout=2s", true, 31)]
#[case::socks5h("socks5h", "{target.host}:{target.port}", "socks5://{proxy}?timeout=2s", false, 3)]
#[case::socks4("socks4", "{target}", "socks4://{proxy}?timeout=2s", false, 6)]
#[case::socks4a("socks4a", "{target.host}:{target.port}", "socks4a://{proxy}?timeout=2s", false, 3)]
fn socksref_client_passes_every_applicable_client_scenario(
    #[case] speaks: &str,
    #[case] target: &str,
    #[case] hop: &str,
    #[case] login: bool,
    #[case] min_ran: usize,
) {
    if !installed("curl") {
        return;
    }
    let bin = socksref_bin();
    let script = manifest().join("clients/socksref/forward.sh");
    let command = format!("sh {} {} {{port}} {target} {hop}", script.display(), bin.display());
    // The hop's `timeout` is socksref's own handshake deadline (as curl's -m): without it the
    // chain waits out its default, longer than the silent-server scenarios. Two schedules keep
    // the run short: as written, and every octet on its own.
    let expected = manifest().join("clients/socksref/expected.yaml");
    let mut args = vec!["check-client", "--speaks", speaks, "--schedule", "as-written,one-byte", "--command", &command];
    args.extend(["--expected", expected.to_str().expect("utf-8 path")]);
    if login {
        args.push("--login");
    }
    let (out, results) = run_json(&format!("socksref-{speaks}-{login}"), &args);
    assert_all_applicable_pass(&out, &results, min_ran);
}

#[test]
fn background_connections_are_refused_recorded_and_not_graded() {
    if !installed("curl") {
        return;
    }
    // A first connection for another destination (as a browser's background request), then the
    // real one; the trailing `exit 3` makes the run fail so the report carries its transcript.
    let script = "curl -s -m 3 --socks5 {proxy} http://127.0.0.1:9/; curl -sS -m 3 --socks5 {proxy} http://{target}/; echo finished >&2";
    let failing = format!("sh -c '{script}; exit 3'");
    let args = ["check-client", "--only", "client.socks5.connect", "--schedule", "as-written", "--command"];
    let (out, results) = run_json("background-fail", &[&args[..], &[failing.as_str()]].concat());
    assert!(!out.status.success(), "{}", summary(&out));
    let r = &results[0];
    let f = &r["failures"][0];
    let msg = f["message"].as_str().unwrap_or_default();
    assert!(msg.contains("client exit 3") && msg.contains("finished"), "{msg}");
    let lines: Vec<&str> = f["transcript"].as_array().unwrap().iter().filter_map(|e| e["line"].as_str()).collect();
    assert!(lines.iter().any(|l| l.contains("a CONNECT to 127.0.0.1:9, not the target: refused")), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("conn2: ") && l.contains("--- tunnel ---")), "{lines:?}");
    assert!(
        lines.last().is_some_and(|l| l.starts_with("client exit 3; stderr: ") && l.contains("finished")),
        "{lines:?}"
    );
    // The same client without the forced failure passes: the background connection is not graded.
    let passing = format!("sh -c '{script}'");
    let (out, results) = run_json("background-pass", &[&args[..], &[passing.as_str()]].concat());
    assert!(out.status.success(), "{}", summary(&out));
    assert_eq!(results[0]["verdict"], "pass", "{}", summary(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("client exit 0"), "{}", summary(&out));
}

#[test]
fn a_client_without_its_own_deadline_fails_the_silent_server_scenario() {
    if !installed("curl") {
        return;
    }
    // No -m: curl waits for the reply forever, past the scenario's 12 s of silence.
    let args = [
        "check-client",
        "--only",
        "client.socks5.reply-never",
        "--command",
        "curl -sS --socks5 {proxy} http://{target}/",
    ];
    let (_, results) = run_json("hang", &args);
    // C-05 is a project rule, so the deviation is graded POLICY (reported, exit 0 unless --policy).
    assert_eq!(results[0]["verdict"], "policy", "{results:?}");
    let msg = results[0]["failures"][0]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("still waiting after 12000 ms of silence"), "{msg}");
}

#[test]
fn a_step_the_server_role_cannot_play_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("sockslab-client-unplayable-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("client")).unwrap();
    std::fs::write(
        dir.join("requirements.yaml"),
        "requirements:\n  - id: X-1\n    doc: t\n    section: \"1\"\n    level: must\n    text: t\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("client/two.yaml"),
        "id: client.two\ntitle: t\nrefs: [X-1]\nroles: [server]\nsteps:\n  - send: \"05 01 00\"\n  - udp_send: \"00\"\n    to: target\n",
    )
    .unwrap();
    let out = sockslab(&["check-client", "--scenarios", dir.to_str().unwrap(), "--command", "true"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("UNAVAIL client.two") && stdout.contains("steps[1]: a `udp_send` step cannot be played"),
        "{}",
        summary(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_server_role_scenario_of_the_catalogue_is_playable() {
    let all = sockslab::scenario::load_catalogue(&manifest().join("../scenarios")).expect("catalogue loads");
    let server: Vec<_> = all.iter().filter(|s| s.roles.contains(&sockslab::scenario::Role::Server)).collect();
    assert!(server.len() >= 35, "{} server-role scenarios", server.len());
    for s in server {
        sockslab::runner::server::playable(s).unwrap_or_else(|e| panic!("{}: {e}", s.id));
        assert!(s.client.is_some() || !s.id.starts_with("client."), "{} states no client outcome", s.id);
    }
}

#[test]
fn a_client_that_never_exits_is_killed_with_its_children_and_fails() {
    if !installed("curl") {
        return;
    }
    // The fetch succeeds, then the command lingers (a background sleep keeps the group alive).
    let command = "sh -c 'sleep 300 & curl -sS -m 3 --socks5 {proxy} http://{target}/ && sleep 300'";
    let args = ["check-client", "--only", "client.socks5.connect", "--schedule", "as-written", "--command", command];
    let (out, results) = run_json("linger", &args);
    assert!(!out.status.success(), "{}", summary(&out));
    let msg = results[0]["failures"][0]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("did not exit") && msg.contains("killed"), "{msg}");
}

#[test]
fn socksref_client_passes_the_bind_scenarios() {
    if !installed("python3") {
        return;
    }
    let bin = socksref_bin();
    let script = manifest().join("clients/socksref/rtcp.sh");
    let command = format!("sh {} {} {{port}} socks5://{{proxy}}", script.display(), bin.display());
    let args = ["check-client", "--request", "bind", "--speaks", "socks5", "--command", &command];
    let (out, results) = run_json("socksref-bind", &args);
    // The success scenario, a failed second reply and a refused first reply.
    assert_all_applicable_pass(&out, &results, 3);
}

#[test]
fn socksref_client_passes_the_udp_associate_scenarios() {
    if !installed("python3") {
        return;
    }
    let bin = socksref_bin();
    let script = manifest().join("clients/socksref/udp.sh");
    let command =
        format!("sh {} {} {{port}} {{target}} 'socks5://{{proxy}}?relay=udp'", script.display(), bin.display());
    let args = ["check-client", "--request", "udp", "--speaks", "socks5", "--command", &command];
    let (out, results) = run_json("socksref-udp", &args);
    // The round trip, a fragment that must be dropped and a refused association.
    assert_all_applicable_pass(&out, &results, 3);
}
