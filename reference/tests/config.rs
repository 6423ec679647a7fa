//! `-C` (gost YAML/JSON), `-O yaml|json` and the one model behind them and `-L`/`-F`: round trips
//! of every README command line, one-line errors with positions, per-service chains.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_socksref")).args(args).stdin(Stdio::null()).output().expect("run socksref")
}

/// A scratch directory for this test process.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("socksref-config-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The `socksref -L …` command lines of README.md, as argument lists (shell quotes and trailing
/// comments removed).
fn readme_examples() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let mut out = Vec::new();
    for line in readme.lines() {
        let line = line.trim();
        let rest = if let Some(r) = line.strip_prefix("socksref ") {
            r
        } else if let Some(i) = line.find("-p socksref -- ") {
            &line[i + "-p socksref -- ".len()..]
        } else {
            continue;
        };
        let rest = rest.split(" #").next().unwrap().trim_end_matches('&').trim();
        if !rest.contains("-L ") {
            continue;
        }
        let words: Vec<String> = rest.split_whitespace().map(|w| w.trim_matches('\'').to_string()).collect();
        // An example that already prints (`… -O yaml`) is checked without its -O.
        let words = match words.iter().position(|w| w == "-O") {
            Some(i) => words[..i].to_vec(),
            None => words,
        };
        out.push(words);
    }
    out
}

#[test]
fn every_readme_command_line_round_trips_through_o_yaml_and_c() {
    let examples = readme_examples();
    assert!(examples.len() >= 8, "README examples not found: {examples:?}");
    let dir = scratch("readme");
    for (i, args) in examples.iter().enumerate() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let yaml = run(&[&args[..], &["-O", "yaml"]].concat());
        assert!(yaml.status.success(), "{args:?}: {}", String::from_utf8_lossy(&yaml.stderr));
        let yaml = String::from_utf8(yaml.stdout).unwrap();
        assert!(yaml.contains("services:") && yaml.contains("handler:"), "{yaml}");
        let file = write(&dir, &format!("ex{i}.yaml"), &yaml);
        let again = run(&["-C", file.to_str().unwrap(), "-O", "yaml"]);
        assert!(again.status.success(), "{args:?}: {}", String::from_utf8_lossy(&again.stderr));
        assert_eq!(String::from_utf8(again.stdout).unwrap(), yaml, "{args:?}: -C of -O yaml is not the same model");
        // The JSON spelling is the same model too.
        let json = run(&[&args[..], &["-O", "json"]].concat());
        assert!(json.status.success());
        let file = write(&dir, &format!("ex{i}.json"), &String::from_utf8(json.stdout).unwrap());
        let from_json = run(&["-C", file.to_str().unwrap(), "-O", "yaml"]);
        assert_eq!(String::from_utf8(from_json.stdout).unwrap(), yaml, "{args:?}: JSON differs");
    }
}

#[test]
fn the_cli_mapping_is_gosts() {
    // The shape `gost -L … -F … -O yaml` prints (gost 3.2.6): query keys on handler, listener and
    // service; the chain on the listener for rtcp, on the handler otherwise; the dialer's TLS
    // server name is the node's host.
    let out = run(&[
        "-L",
        "socks5://u:p@127.0.0.1:1080?udp=true&handler.bind=true",
        "-L",
        "rtcp://:2222/127.0.0.1:22",
        "-F",
        "socks5://127.0.0.1:1081?relay=udp",
        "-O",
        "json",
    ]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s0 = &v["services"][0];
    assert_eq!(s0["name"], "service-0");
    assert_eq!(s0["handler"]["type"], "socks5");
    assert_eq!(s0["handler"]["chain"], "chain-0");
    assert_eq!(s0["handler"]["auth"]["username"], "u");
    assert_eq!(s0["handler"]["metadata"]["udp"], "true");
    assert_eq!(s0["handler"]["metadata"]["bind"], "true");
    assert_eq!(s0["listener"]["metadata"]["udp"], "true");
    assert!(s0["listener"]["metadata"].get("bind").is_none(), "handler. prefix: handler only");
    assert_eq!(s0["metadata"]["udp"], "true");
    let s1 = &v["services"][1];
    assert_eq!(s1["handler"]["type"], "rtcp");
    assert!(s1["handler"].get("chain").is_none());
    assert_eq!(s1["listener"]["chain"], "chain-0");
    assert_eq!(s1["forwarder"]["nodes"][0]["addr"], "127.0.0.1:22");
    let node = &v["chains"][0]["hops"][0]["nodes"][0];
    assert_eq!(node["connector"]["metadata"]["relay"], "udp");
    assert_eq!(node["dialer"]["tls"]["serverName"], "127.0.0.1");
    assert_eq!(v["chains"][0]["hops"][0]["metadata"]["relay"], "udp");
}

/// Runs `-C` on `text` and returns the one stderr line (asserting exit 2 and one line).
fn config_error(dir: &Path, name: &str, text: &str) -> String {
    let file = write(dir, name, text);
    let out = run(&["-C", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{name}: {err}");
    assert_eq!(err.lines().count(), 1, "{name}: {err}");
    err
}

#[test]
fn bad_files_get_one_line_with_file_position_and_key() {
    let dir = scratch("errors");
    let head = "services:\n- name: s\n  addr: 127.0.0.1:1\n";
    let cases: &[(&str, String, &str, &[&str])] = &[
        ("unknown-key.yaml", format!("{head}  handler:\n    type: socks5\n    tpye: x\n"), ":6:5:", &["tpye"]),
        ("wrong-type.yaml", format!("{head}  handler:\n    type: socks5\n    metadata:\n      udp: [1]\n"), ":7:", &["metadata.udp", "sequence"]),
        ("missing.yaml", "services:\n- name: s\n  handler: {type: socks5}\n".into(), ":2:3:", &["missing field `addr`"]),
        ("handler.yaml", format!("{head}  handler:\n    type: http\n"), ":5:", &["\"http\" is not supported"]),
        ("listener.yaml", format!("{head}  handler: {{type: socks5}}\n  listener:\n    type: quic\n"), ":6:", &["listener type \"quic\" is not supported"]),
        ("connector.yaml", format!("{head}  handler: {{type: socks5}}\nchains:\n- name: c\n  hops:\n  - name: h\n    nodes:\n    - name: n\n      addr: 127.0.0.1:2\n      connector: {{type: http}}\n"), ":12:", &["connector type \"http\""]),
        ("metadata-key.yaml", format!("{head}  handler:\n    type: socks5\n    metadata:\n      bnd: true\n"), ":7:", &["services[0].handler.metadata.bnd", "unknown key"]),
        ("metadata-value.yaml", format!("{head}  handler:\n    type: socks5\n    metadata:\n      udp: maybe\n"), ":7:", &["services[0].handler.metadata.udp", "not true/false"]),
        ("chain-ref.yaml", format!("{head}  handler: {{type: socks5, chain: nowhere}}\n"), ":4:", &["services[0].handler.chain", "no chain named \"nowhere\""]),
        ("node-key.yaml", format!("{head}  handler: {{type: socks5, chain: c}}\nchains:\n- name: c\n  hops:\n  - name: h\n    nodes:\n    - name: n\n      addr: 127.0.0.1:2\n      connector:\n        type: socks5\n        metadata: {{relay: tcp}}\n"), ":14:", &["chains[0].hops[0].nodes[0].connector.metadata.relay"]),
        ("json.json", "{\"services\": [{\"name\": \"s\", \"addr\": \":1\", \"handler\": {\"type\": \"socks5\", \"chain\": 3}}]}".into(), ":1:", &["invalid type: integer `3`"]),
        ("syntax.yaml", "services: [\n".into(), ":2:1:", &["expected"]),
    ];
    for (name, text, pos, needles) in cases {
        let err = config_error(&dir, name, text);
        let file = dir.join(name);
        assert!(err.starts_with(&format!("socksref: {}{pos}", file.display())), "{name}: {err}");
        for n in *needles {
            assert!(err.contains(n), "{name}: {err:?} lacks {n:?}");
        }
    }
    // -C with -L is one or the other.
    let out = run(&["-C", "x.yaml", "-L", "socks5://:1"]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_uses_its_own_chain() {
    // Two upstreams: `open` relays to 127.0.0.1, `closed` refuses every loopback destination.
    // A front with one service per chain must reach the target through the first only; with
    // one global chain both services would behave alike.
    let target = http("chain one").await;
    let (open, closed, s1, s2) = (free_port(), free_port(), free_port(), free_port());
    let _open = socksref(&["-L", &format!("socks5://127.0.0.1:{open}?notls=true")]);
    let _closed = socksref(&["-L", &format!("socks5://127.0.0.1:{closed}?notls=true&deny=127.0.0.0/8")]);
    let dir = scratch("chains");
    let file = write(
        &dir,
        "two-chains.yaml",
        &format!(
            "services:
- name: via-open
  addr: 127.0.0.1:{s1}
  handler: {{type: socks5, chain: to-open}}
- name: via-closed
  addr: 127.0.0.1:{s2}
  handler: {{type: socks5, chain: to-closed}}
chains:
- name: to-open
  hops:
  - name: hop-0
    nodes:
    - name: open
      addr: 127.0.0.1:{open}
      connector: {{type: socks5, metadata: {{notls: true}}}}
- name: to-closed
  hops:
  - name: hop-0
    nodes:
    - name: closed
      addr: 127.0.0.1:{closed}
      connector: {{type: socks5, metadata: {{notls: true}}}}
log:
  level: warn
"
        ),
    );
    let _front = socksref(&["-C", file.to_str().unwrap()]);
    for p in [open, closed, s1, s2] {
        wait_ready(p);
    }
    let url = format!("http://{target}/");
    let through = |port: u16| curl(&["--socks5-hostname", &format!("127.0.0.1:{port}"), &url]);
    let (ok1, body1) = tokio::task::block_in_place(|| through(s1));
    assert!(ok1 && body1 == "chain one", "{ok1} {body1}");
    let (ok2, _) = tokio::task::block_in_place(|| through(s2));
    assert!(!ok2, "the second service went through the first service's chain");
}

#[test]
fn authers_add_users_and_log_level_is_read() {
    let dir = scratch("authers");
    let port = free_port();
    let file = write(
        &dir,
        "authers.yaml",
        &format!(
            "services:
- name: s
  addr: 127.0.0.1:{port}
  handler: {{type: socks5, auther: users, metadata: {{notls: true}}}}
authers:
- name: users
  auths:
  - {{username: alice, password: a1}}
  - {{username: bob, password: b2}}
log: {{level: nonsense}}
"
        ),
    );
    let out = run(&["-C", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("log.level"));
    let text = std::fs::read_to_string(&file).unwrap().replace("nonsense", "error");
    let file = write(&dir, "authers.yaml", &text);
    let _p = socksref(&["-C", file.to_str().unwrap()]);
    wait_ready(port);
    // Both users of the auther authenticate (RFC 1929), a third does not.
    for (user, pass, ok) in [("alice", "a1", true), ("bob", "b2", true), ("eve", "x", false)] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        use std::io::{Read, Write};
        s.write_all(&hex("05 01 02")).unwrap();
        let mut r = [0u8; 2];
        s.read_exact(&mut r).unwrap();
        assert_eq!(r, [5, 2]);
        let msg = [&[1u8, user.len() as u8][..], user.as_bytes(), &[pass.len() as u8], pass.as_bytes()].concat();
        s.write_all(&msg).unwrap();
        s.read_exact(&mut r).unwrap();
        assert_eq!(r[1] == 0, ok, "{user}");
    }
}

fn configs_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../docker/configs"))
}

#[test]
fn every_example_config_file_loads_and_gost_ones_round_trip() {
    let mut seen = (0, 0);
    let dir = scratch("examples");
    for entry in std::fs::read_dir(configs_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let p = path.to_str().unwrap();
        if name.starts_with("gost-") {
            seen.0 += 1;
            let out = run(&["-C", p, "-O", "yaml"]);
            assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
            let yaml = String::from_utf8(out.stdout).unwrap();
            let file = write(&dir, &name, &yaml);
            let again = run(&["-C", file.to_str().unwrap(), "-O", "yaml"]);
            assert_eq!(String::from_utf8(again.stdout).unwrap(), yaml, "{name}");
            starts_and_listens(&name, &["-C"], &dir);
        } else if name.starts_with("v2ray") {
            seen.1 += 1;
            let out = run(&["--v2ray", p, "-O", "yaml"]);
            assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
            let yaml = String::from_utf8(out.stdout).unwrap();
            // The translation is an ordinary gost config: -C runs it too.
            let file = write(&dir, &format!("{name}.yaml"), &yaml);
            let again = run(&["-C", file.to_str().unwrap(), "-O", "yaml"]);
            assert_eq!(String::from_utf8(again.stdout).unwrap(), yaml, "{name}");
            starts_and_listens(&name, &["--v2ray"], &dir);
        }
    }
    assert!(seen.0 >= 8 && seen.1 >= 6, "{seen:?}");
}

/// Runs docker/configs/`name` (read with `flag`) with its listening ports moved to free ones,
/// and waits until every TCP listener of its services accepts: every key was understood and
/// every service started. A service that cannot start exits the process, which fails here.
fn starts_and_listens(name: &str, flag: &[&str], dir: &Path) {
    let original = configs_dir().join(name);
    let out = run(&[flag, &[original.to_str().unwrap(), "-O", "json"]].concat());
    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let services = plan["services"].as_array().cloned().unwrap_or_default();
    // (port in the file, free port, accepts TCP): rtcp/rudp listeners listen on the far side of a
    // chain, which is not running here, so only their process is checked.
    let mut ports = Vec::new();
    for s in &services {
        let addr = s["addr"].as_str().unwrap_or_default();
        let Some(port) = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()) else { continue };
        let tcp = s["listener"]["type"].as_str().is_none_or(|t| t == "tcp");
        ports.push((port, free_port(), tcp));
    }
    assert!(!ports.is_empty(), "{name}: no service with a port");
    let moved: Vec<(u16, u16)> = ports.iter().map(|(from, to, _)| (*from, *to)).collect();
    let copy = example_on(name, &moved, dir);
    // Errors only: probing a forwarder's port makes it dial a chain that is not running here.
    let child = Command::new(env!("CARGO_BIN_EXE_socksref"))
        .args([flag, &[copy.to_str().unwrap(), "--log-level", "error"]].concat())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn socksref");
    let mut child = Peer(child);
    for (_, port, tcp) in &ports {
        if *tcp {
            wait_ready(*port);
        }
    }
    assert!(child.0.try_wait().unwrap().is_none(), "{name}: socksref exited after its listeners opened");
}

/// A copy of docker/configs/`name` with every `from` port replaced by `to`.
fn example_on(name: &str, ports: &[(u16, u16)], dir: &Path) -> PathBuf {
    let mut text = std::fs::read_to_string(configs_dir().join(name)).unwrap();
    for (from, to) in ports {
        text = text
            .replace(&format!(":{from}"), &format!(":{to}"))
            .replace(&format!("\"port\": {from}"), &format!("\"port\": {to}"));
    }
    write(dir, name, &text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2ray_socks_inbound_with_password_and_a_chain_through_it() {
    let target = http("v2ray says hi").await;
    let (server, front) = (free_port(), free_port());
    let dir = scratch("v2ray");
    let s = example_on("v2ray4-socks-server.json", &[(1080, server)], &dir);
    let f = example_on("v2ray4-socks-chain.json", &[(1080, server), (2080, front)], &dir);
    let _s = socksref(&["--v2ray", s.to_str().unwrap()]);
    let _f = socksref(&["--v2ray", f.to_str().unwrap()]);
    wait_ready(server);
    wait_ready(front);
    let url = format!("http://{target}/");
    let fetch = |args: &[&str]| curl(&[args, &[url.as_str()]].concat());
    let srv = format!("127.0.0.1:{server}");
    let (ok, body) = tokio::task::block_in_place(|| fetch(&["--socks5-hostname", &srv, "-U", "alice:s3cret"]));
    assert!(ok && body == "v2ray says hi", "{ok} {body}");
    let (ok, _) = tokio::task::block_in_place(|| fetch(&["--socks5-hostname", &srv, "-U", "alice:wrong"]));
    assert!(!ok, "a wrong password was accepted");
    let (ok, _) = tokio::task::block_in_place(|| fetch(&["--socks5-hostname", &srv]));
    assert!(!ok, "no authentication was accepted by a password inbound");
    // The noauth front routes to the socks outbound, which logs in as alice.
    let (ok, body) = tokio::task::block_in_place(|| fetch(&["--socks5-hostname", &format!("127.0.0.1:{front}")]));
    assert!(ok && body == "v2ray says hi", "{ok} {body}");
    let (ok, body) = tokio::task::block_in_place(|| fetch(&["--socks4a", &format!("127.0.0.1:{front}")]));
    assert!(ok && body == "v2ray says hi", "SOCKS4a on a noauth socks inbound: {ok} {body}");
}

#[test]
fn v2ray_leftovers_are_listed_and_bad_settings_named_by_json_path() {
    let dir = scratch("v2ray-errors");
    let file = write(
        &dir,
        "extra.json",
        r#"{
  "policy": {"levels": {"0": {"handshake": 4}}},
  "inbounds": [
    {"tag": "in", "listen": "127.0.0.1", "port": 1, "protocol": "socks",
     "settings": {"auth": "noauth", "udp": false, "foo": 1},
     "streamSettings": {"network": "tcp"}},
    {"tag": "web", "listen": "127.0.0.1", "port": 2, "protocol": "http", "settings": {}}
  ],
  "outbounds": [{"tag": "direct", "protocol": "freedom"}]
}"#,
    );
    let out = run(&["--v2ray", file.to_str().unwrap(), "-O", "json"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for path in ["$.policy", "inbounds[0].settings.foo", "inbounds[0].streamSettings", "inbounds[1]: ignored"] {
        assert_eq!(err.matches(path).count(), 1, "{path} not reported once: {err}");
    }
    // `version` is honoured, and the file says that V2Ray's lines disagree on it.
    let v4a = write(
        &dir,
        "v4a.json",
        r#"{"inbounds": [{"tag": "in", "listen": "127.0.0.1", "port": 1, "protocol": "socks"}],
  "outbounds": [{"protocol": "socks", "settings": {"version": "4a", "servers": [{"address": "127.0.0.1", "port": 9}]}}]}"#,
    );
    let out = run(&["--v2ray", v4a.to_str().unwrap(), "-O", "json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches("outbounds[0].settings.version: depends on the V2Ray version").count(), 1, "{err}");
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["chains"][0]["hops"][0]["nodes"][0]["connector"]["type"], "socks4a", "{plan}");
    let cases = [
        (
            "auth.json",
            r#"{"inbounds": [{"port": 1, "listen": "127.0.0.1", "protocol": "socks", "settings": {"auth": "pasword"}}]}"#,
            "inbounds[0].settings.auth",
        ),
        (
            "route.json",
            r#"{"inbounds": [{"tag": "a", "port": 1, "listen": "127.0.0.1", "protocol": "socks"}], "outbounds": [{"tag": "x", "protocol": "blackhole"}]}"#,
            "inbounds[0]",
        ),
        ("port.json", r#"{"inbounds": [{"port": "1000-2000", "protocol": "socks"}]}"#, "inbounds[0].port"),
        (
            "rule.json",
            r#"{"inbounds": [], "routing": {"rules": [{"type": "field", "inboundTag": ["a"], "outboundTag": "nowhere"}]}}"#,
            "routing.rules[0].outboundTag",
        ),
        (
            "v4pass.json",
            r#"{"outbounds": [{"protocol": "socks", "settings": {"version": "4", "servers": [{"address": "127.0.0.1", "port": 1, "users": [{"user": "u", "pass": "p"}]}]}}]}"#,
            "outbounds[0].settings.servers[0].users[0].pass",
        ),
    ];
    for (name, text, path) in cases {
        let file = write(&dir, name, text);
        let out = run(&["--v2ray", file.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(
            err.contains(&format!(": {path}: ")) && err.contains(&format!("{}:1:", file.display())),
            "{name}: {err}"
        );
    }
}
