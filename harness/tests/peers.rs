//! `sockslab` as users run it: against a SOCKS server by URL, against the Debian peers with their
//! expected results, against curl as a client under test, and the coverage report.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use socksref::server::{serve, Credential, ServerConfig};
use tokio::net::TcpListener;

fn sockslab<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sockslab"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run sockslab")
}

fn summary(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    format!("exit {:?}\n--- stdout (tail)\n{}\n--- stderr (tail)\n{}", out.status.code(), tail(&stdout), tail(&stderr))
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

/// Whether a peer's program is installed; under CI a missing peer is an error, not a skip,
/// because `.ci/run` installs them.
fn installed(program: &str) -> bool {
    let found =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file())).unwrap_or(false);
    if !found {
        assert!(std::env::var_os("CI").is_none(), "{program} is not installed (bash .ci/run installs it)");
        eprintln!("skipping: {program} is not installed (apt-get install it, or run bash .ci/run)");
    }
    found
}

/// The acceptance run: `sockslab check socks5://127.0.0.1:PORT` against the reference,
/// with every capability on, passes everything it applies to and writes both reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_by_url_against_the_reference_passes_and_writes_reports() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = ServerConfig {
        allow_bind: true,
        allow_udp: true,
        handshake_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        bind_accept_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    tokio::spawn(serve(listener, config, std::future::pending()));
    let dir = std::env::temp_dir().join(format!("sockslab-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, junit) = (dir.join("r.json"), dir.join("r.xml"));
    let url = format!("socks5://127.0.0.1:{port}");
    let args: Vec<String> = vec![
        "check".into(),
        url,
        "--profile".into(),
        "rfc1928-core,udp,bind".into(),
        "--handshake-timeout".into(),
        "2s".into(),
        "--connect-timeout".into(),
        "2s".into(),
        "--bind-timeout".into(),
        "2s".into(),
        "--json".into(),
        json.display().to_string(),
        "--junit".into(),
        junit.display().to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || sockslab(&args)).await.unwrap();
    assert!(out.status.success(), "{}", summary(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(" 0 failed"), "{}", summary(&out));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let results = report["results"].as_array().expect("results array");
    let summary = &report["summary"];
    assert_eq!(summary["total"].as_u64(), Some(results.len() as u64), "summary agrees with the results");
    assert_eq!(summary["failed"].as_u64(), Some(0));
    assert_eq!(summary["xpass"].as_u64(), Some(0));
    let passed = results.iter().filter(|r| r["verdict"] == "pass").count();
    assert!(passed >= 60, "the reference passes the SOCKS5 core, UDP and BIND scenarios ({passed} passed)");
    assert_eq!(summary["passed"].as_u64(), Some(passed as u64));
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_eq!(xml.matches("<testcase").count(), results.len(), "one JUnit test case per scenario");
    assert!(!xml.contains("<failure"), "no JUnit failures");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Same with a password-protected reference: RFC 1929 scenarios apply and pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_with_credentials_against_the_reference_passes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = ServerConfig {
        users: vec![Credential { user: b"alice".to_vec(), pass: b"s3cret".to_vec() }],
        handshake_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    tokio::spawn(serve(listener, config, std::future::pending()));
    let url = format!("socks5://127.0.0.1:{port}");
    let args: Vec<String> =
        ["check", &url, "--user", "alice", "--pass", "s3cret", "--handshake-timeout", "2s"].map(String::from).to_vec();
    let out = tokio::task::spawn_blocking(move || sockslab(&args)).await.unwrap();
    assert!(out.status.success(), "{}", summary(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(" 0 failed"), "{}", summary(&out));
}

/// Each installed server (Debian packages, and pproxy from PyPI; `.ci/run` installs them) matches
/// its committed expected results: every listed deviation really fails, nothing else does.
#[rstest::rstest]
#[case::danted("danted", "danted")]
#[case::microsocks("microsocks", "microsocks")]
#[case::v2ray("v2ray", "v2ray")]
#[case::openssh("openssh", "sshd")]
#[case::pproxy("pproxy", "pproxy")]
fn debian_peer_holds_its_expected_results(#[case] peer: &str, #[case] program: &str) {
    if !installed(program) {
        return;
    }
    // Every deviation, at every level, must be listed: --strict and --policy make an unlisted
    // WARN or POLICY an error too.
    let out = sockslab(&["check", "--peer", peer, "--concurrency", "4", "--strict", "--policy"]);
    assert!(out.status.success(), "{}", summary(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(" 0 failed") && stdout.contains(" 0 xpass"), "{}", summary(&out));
    assert!(
        !stdout.contains(" 0 expected failures"),
        "a Debian peer with no deviation is suspicious: {}",
        summary(&out)
    );
}

/// curl as the client under test, in each of its modes; the runner plays the server.
#[rstest::rstest]
#[case::socks5_local_dns("socks5", "--socks5")]
#[case::socks5_remote_dns("socks5h", "--socks5-hostname")]
#[case::socks4("socks4", "--socks4")]
#[case::socks4a("socks4a", "--socks4a")]
fn curl_as_a_client_under_test_passes(#[case] speaks: &str, #[case] flag: &str) {
    if !installed("curl") {
        return;
    }
    let command = format!("curl -sS -m 5 {flag} {{proxy}} http://{{target.host}}:{{target.port}}/");
    let out = sockslab(&["check-client", "--speaks", speaks, "--command", &command]);
    assert!(out.status.success(), "{}", summary(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(" 0 failed") && !stdout.contains(" 0 passed"), "{}", summary(&out));
}

#[test]
fn every_normative_statement_is_covered_or_explained() {
    let out = sockslab(&["coverage", "--strict"]);
    assert!(out.status.success(), "{}", summary(&out));
}

#[test]
fn a_malformed_scenario_names_file_line_and_field() {
    let dir = std::env::temp_dir().join(format!("sockslab-bad-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("rfc1928")).unwrap();
    std::fs::write(dir.join("requirements.yaml"), "requirements: []\n").unwrap();
    std::fs::write(dir.join("rfc1928/bad.yaml"), "id: x.y\ntitle: t\nrefs: []\nsteps:\n  - send: \"05 zz\"\n").unwrap();
    let out = sockslab(&["list", "--scenarios", dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("bad.yaml") && err.contains("steps"), "{err}");
    // A catalogue without its requirements file cannot be graded: that is an error too.
    std::fs::remove_file(dir.join("requirements.yaml")).unwrap();
    let out = sockslab(&["list", "--scenarios", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("requirements.yaml"), "{}", summary(&out));
    let _ = std::fs::remove_dir_all(&dir);
}

/// curl's definition is a client's (the interop lab's matrix entry, no server instances), and
/// `check --peer curl` says so instead of checking nothing.
#[test]
fn check_refuses_a_peer_that_is_a_client_only() {
    let out = sockslab(&["check", "--peer", "curl"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", summary(&out));
    assert!(err.contains("curl") && err.contains("no server instances") && err.contains("check-client"), "{err}");
}
