//! Tier 1 for the `captures/` library: every capture is dissected and the dissection compared
//! with its snapshot (`harness/tests/snapshots/captures__<family>__<name>.snap`), so a change to
//! the reader, the reassembly or the decoders that alters what a real peer's traffic means shows
//! up as a diff. Each capture must also have its YAML sidecar.

use std::path::{Path, PathBuf};

fn captures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../captures")
}

/// Every `.pcap`/`.pcapng` file under `captures/`, sorted.
fn capture_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.filter_map(|e| e.ok()) {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if matches!(p.extension().and_then(|x| x.to_str()), Some("pcap" | "pcapng")) {
                out.push(p);
            }
        }
    }
    let mut v = Vec::new();
    walk(&captures_dir(), &mut v);
    v.sort();
    v
}

fn snapshot_name(p: &Path) -> String {
    let rel = p.strip_prefix(captures_dir()).unwrap_or(p);
    rel.with_extension("").to_string_lossy().replace('/', "__")
}

#[test]
fn every_capture_dissects_as_its_snapshot_says() {
    let files = capture_files();
    // The library has at least one capture per feature family of the lab matrix.
    for family in [
        "socks4",
        "socks4a",
        "socks5-connect",
        "userpass",
        "bind",
        "udp-associate",
        "tls-methods",
        "mbind",
        "udp-tun",
        "udp-bypass",
        "dante",
    ] {
        assert!(
            files.iter().any(|f| f.parent().and_then(|d| d.file_name()).is_some_and(|d| d == family)),
            "captures/{family}/ has no capture"
        );
    }
    let mut settings = insta::Settings::clone_current();
    settings.set_prepend_module_to_snapshot(true);
    settings.set_omit_expression(true);
    for f in &files {
        let d = sockslab::pcap::dissect_file(f).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(!d.conversations.is_empty() || !d.unmatched.is_empty(), "{}: no SOCKS conversation", f.display());
        let sidecar = f.with_extension("yaml");
        assert!(sidecar.exists(), "{} has no sidecar {}", f.display(), sidecar.display());
        settings.set_input_file(f);
        settings.bind(|| insta::assert_snapshot!(snapshot_name(f), d.to_text()));
    }
}

#[test]
fn the_json_form_carries_the_same_events() {
    let f = captures_dir().join("dante/curl-danted.pcap");
    let d = sockslab::pcap::dissect_file(&f).unwrap();
    let v: serde_json::Value = serde_json::to_value(&d).unwrap();
    let convs = v["conversations"].as_array().unwrap();
    assert_eq!(convs.len(), d.conversations.len());
    assert_eq!(convs[3]["protocol"], "socks4a");
    let last = convs[3]["events"].as_array().unwrap();
    assert!(last.iter().any(|e| e["what"] == "socks4 reply" && e["fields"][1][1] == "REJECTED(0x5b)"), "{last:?}");
}

/// Every capture's conversations, replayed against the in-process reference (one reference per
/// scenario, configured for what the scenario needs). The verdict of each is in a snapshot: a
/// capture that stops replaying as it did fails the test with the diff, and a difference between
/// a captured peer and the reference is visible there with its first failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_capture_replays_against_the_reference() {
    use sockslab::reference::{self, RefOptions};
    use sockslab::runner::{run_scenario, RunOptions};
    use sockslab::verdict::{Expectations, Verdict};
    let scenarios_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut lines = Vec::new();
    let mut replayed = 0;
    for f in capture_files() {
        let name = snapshot_name(&f);
        let scns = sockslab::pcap::replay::scenarios(&f, &scenarios_dir, None).unwrap_or_else(|e| panic!("{e:#}"));
        for scn in scns {
            let server = reference::start(&RefOptions::for_needs(&scn.needs), None).await.expect("reference starts");
            let r = run_scenario(&scn, &server.sut, &RunOptions::default(), &Expectations::default()).await;
            // The message without the received bytes, which hold ports that differ every run.
            let first = r
                .failures
                .first()
                .map(|fl| {
                    let m = fl.message.split_once("]: ").map_or(fl.message.as_str(), |(_, rest)| rest);
                    format!(": step {}: {m}", fl.step.map_or("-".to_string(), |s| s.to_string()))
                })
                .unwrap_or_default();
            let conv = scn.id.rsplit('.').next().unwrap_or_default().to_string();
            lines.push(format!("{name} #{conv} {}{first}", r.verdict.label()));
            if r.verdict == Verdict::Pass {
                replayed += 1;
            }
        }
    }
    // Most of the library replays cleanly: the reference is what every peer was checked against.
    assert!(replayed * 4 >= lines.len() * 3, "only {replayed} of {} pass:\n{}", lines.len(), lines.join("\n"));
    insta::assert_snapshot!("replay_against_reference", lines.join("\n"));
}

fn curl_installed() -> bool {
    std::process::Command::new("curl").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// `sockslab replay FILE --as-server ARGS --json REPORT`: the exit code, the report's
/// `(id, verdict)` pairs and the whole output for assertion messages.
fn replay_as_server(file: &str, args: &[&str]) -> (Option<i32>, Vec<(String, String)>, String) {
    let report =
        std::env::temp_dir().join(format!("sockslab-as-server-{}-{}.json", std::process::id(), file.replace('/', "_")));
    let path = captures_dir().join(file);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sockslab"));
    cmd.arg("replay").arg(&path).arg("--as-server").args(args).arg("--json").arg(&report);
    let out = cmd.output().expect("run sockslab");
    let text = format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let json = std::fs::read_to_string(&report).unwrap_or_else(|e| panic!("no report ({e}): {text}"));
    let _ = std::fs::remove_file(&report);
    let v: serde_json::Value = serde_json::from_str(&json).expect("the report is JSON");
    let verdicts = v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| (r["id"].as_str().unwrap_or("?").to_string(), r["verdict"].as_str().unwrap_or("?").to_string()))
        .collect();
    (out.status.code(), verdicts, text)
}

/// The captured Dante side of curl's four modes, played by the runner against real curl with the
/// curl line each conversation calls for: --socks5 (an IP), --socks4, --socks5-hostname (a
/// name), and --socks4a, which Dante refused, so curl must fail there.
#[test]
fn replay_as_server_plays_dantes_side_to_curl_in_four_modes() {
    if !curl_installed() {
        return;
    }
    let (code, verdicts, text) = replay_as_server("dante/curl-danted.pcap", &[]);
    assert_eq!(code, Some(0), "{text}");
    let want: Vec<(String, String)> =
        (1..=4).map(|n| (format!("captured.curl-danted.{n}"), "pass".to_string())).collect();
    assert_eq!(verdicts, want, "{text}");
    for mode in ["--socks5 ", "--socks4 ", "--socks5-hostname ", "--socks4a "] {
        assert!(text.contains(&format!("client `curl -sS -m 5 {mode}")), "no curl {mode}run: {text}");
    }
    // The refused SOCKS4a conversation made curl report the refusal.
    assert!(text.contains("captured.curl-danted.4 [as-written]: client exit 97"), "{text}");
}

/// Given explicitly, the client line is the one under test: the right curl passes a captured
/// SOCKS5 and a captured RFC 1929 login conversation, and curl speaking SOCKS4 to the SOCKS5
/// capture fails at the greeting (the check can fail).
#[test]
fn replay_as_server_grades_the_given_client() {
    if !curl_installed() {
        return;
    }
    let ok = "curl -sS -m 3 --socks5 {proxy} http://{target}/";
    let (code, verdicts, text) = replay_as_server("socks5-connect/curl-reference.pcapng", &["--client", ok]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(verdicts, [("captured.curl-reference.1".to_string(), "pass".to_string())], "{text}");

    let login =
        "curl -sS -m 3 --socks5-hostname {proxy} --proxy-user {user}:{pass} http://{target.host}:{target.port}/";
    let (code, verdicts, text) = replay_as_server("userpass/curl-reference.pcapng", &["--client", login]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(verdicts, [("captured.curl-reference.1".to_string(), "pass".to_string())], "{text}");
    // A password other than the one the runner accepts is a different conversation.
    let bad = "curl -sS -m 3 --socks5-hostname {proxy} --proxy-user {user}:nope http://{target.host}:{target.port}/";
    let (code, verdicts, text) = replay_as_server("userpass/curl-reference.pcapng", &["--client", bad]);
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(verdicts[0].1, "fail", "{text}");

    let wrong = "curl -sS -m 3 --socks4 {proxy} http://{target}/";
    let (code, verdicts, text) = replay_as_server("socks5-connect/curl-reference.pcapng", &["--client", wrong]);
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(verdicts, [("captured.curl-reference.1".to_string(), "fail".to_string())], "{text}");
    assert!(text.contains("step 0: the client sent [04 01"), "the failure names the SOCKS4 request: {text}");
}

/// A conversation no curl line fits (gost's forwarder relaying binary data) is unavailable
/// without --client, not graded against the wrong client.
#[test]
fn replay_as_server_without_a_fitting_curl_line_is_unavailable() {
    let (code, verdicts, text) = replay_as_server("socks4a/gost-gost.pcapng", &["--conversation", "2"]);
    assert_eq!(verdicts, [("captured.gost-gost.2".to_string(), "unavailable".to_string())], "{text}");
    assert!(text.contains("--client"), "{text}");
    assert_ne!(code, Some(2), "{text}");
}

/// Flips the last hex digit of the last `expect`/`udp_expect` pattern of a scenario's YAML: the
/// captured answer the replay compares against, made wrong.
fn tamper_last_answer(yaml: &str) -> String {
    let mut lines: Vec<String> = yaml.lines().map(str::to_string).collect();
    let i = lines.iter().rposition(|l| l.contains("expect: \"")).expect("an expect step");
    let l = &lines[i];
    let close = l.rfind('"').expect("a closing quote");
    let digit = l[..close].chars().last().expect("a pattern");
    assert!(digit.is_ascii_hexdigit(), "the last answer ends in hex: {l}");
    let flipped = if digit == '0' { '1' } else { '0' };
    lines[i] = format!("{}{flipped}{}", &l[..close - 1], &l[close..]);
    lines.join("\n") + "\n"
}

/// BIND, UDP ASSOCIATE, UDP-TUN and MBIND conversations replay past their first reply: BIND's
/// peer connects to BND and the second reply and both directions of data are compared, the
/// association's datagrams go to the live reply's relay, UDP-TUN's frames go over the stream,
/// MBIND's smux SYN and PSH frames are compared while the runner plays the peer. Each passes
/// against the in-process reference, and fails once its last captured answer is changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_udp_and_gost_conversations_replay_past_the_first_reply() {
    use sockslab::coverage::Requirements;
    use sockslab::pcap::scenario::Side;
    use sockslab::reference::{self, RefOptions};
    use sockslab::runner::{run_scenario, RunOptions};
    use sockslab::scenario::Scenario;
    use sockslab::verdict::{Expectations, Verdict};
    let scenarios_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let reqs = Requirements::load(&scenarios_dir.join("requirements.yaml")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    // (capture, conversation, what its continuation must contain, how many times)
    let cases: [(&str, usize, &str, usize); 5] = [
        ("bind/reference-gost.pcapng", 1, "open: peer", 1),
        ("udp-associate/v2ray5-reference.pcapng", 2, "udp_send:", 3),
        ("udp-associate/gost-v2ray5.pcapng", 2, "udp_expect:", 1),
        ("udp-tun/gost-reference.pcapng", 1, "send: \"0020 ff 01 {target.addr}", 1),
        ("mbind/reference-gost.pcapng", 1, "expect: \"01020a0003000000 050000 {peer:ipaddr}\"", 1),
    ];
    for (file, conv, needle, times) in cases {
        let path = captures_dir().join(file);
        let mut got = sockslab::pcap::replay::scenarios_for(&path, &scenarios_dir, Some(conv), Side::Client)
            .unwrap_or_else(|e| panic!("{file}: {e:#}"));
        assert_eq!(got.len(), 1, "{file} #{conv}");
        let (scn, imp) = got.remove(0);
        assert_eq!(imp.yaml.matches(needle).count(), times, "{file} #{conv}: `{needle}` in\n{}", imp.yaml);
        let server = reference::start(&RefOptions::for_needs(&scn.needs), None).await.expect("reference starts");
        let r = run_scenario(&scn, &server.sut, &RunOptions::default(), &Expectations::default()).await;
        assert_eq!(
            r.verdict,
            Verdict::Pass,
            "{file} #{conv}: {:?}\n{}",
            r.failures.first().map(|f| &f.message),
            imp.yaml
        );

        let bad = tmp.path().join(format!("{}.yaml", file.replace('/', "_")));
        std::fs::write(&bad, tamper_last_answer(&imp.yaml)).unwrap();
        let tampered = Scenario::load_with(&bad, &reqs).unwrap_or_else(|e| panic!("{file}: {e}"));
        let r = run_scenario(&tampered, &server.sut, &RunOptions::default(), &Expectations::default()).await;
        assert_eq!(r.verdict, Verdict::Fail, "{file} #{conv}: a wrong captured answer must fail");
    }
}
