//! Server peers: configurations (open, with password), started once per run and shared by every
//! cell that needs them.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener as StdListener};

use anyhow::Result;
use sockslab::runner::{Claims, Sut};
use sockslab::scenario::{Command, Extension, Feature, Method, Version};

use super::backend::{Launcher, Running};
use crate::peers::PeerId;

/// RFC 1929 credentials every password-protected server accepts.
pub const USER: &str = "alice";
/// See [`USER`].
pub const PASS: &str = "s3cret";

/// A free loopback TCP port (bind-and-release: a small race, acceptable on a lab machine).
pub fn free_port() -> Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Which configuration of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Config {
    /// No authentication; UDP (and BIND where the peer has it) on.
    Open,
    /// RFC 1929 with [`USER`]/[`PASS`]; UDP on.
    Auth,
    /// The reference's catalogue instances need narrower configurations (UDP off, BIND off, …)
    /// so "disabled" scenarios apply; the string names one (`plain`, `auth-plain`, `bind`).
    Catalogue(&'static str),
}

/// A started server.
pub struct Server {
    /// The configuration.
    pub config: Config,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The process or container.
    pub running: Running,
    /// What the catalogue may assume about it.
    pub claims: Claims,
}

impl Server {
    /// The catalogue's view of this server.
    pub fn sut(&self) -> Sut {
        let auth = matches!(self.config, Config::Auth | Config::Catalogue("auth-plain"));
        Sut {
            addr: self.addr,
            user: if auth { USER.into() } else { Vec::new() },
            pass: if auth { PASS.into() } else { Vec::new() },
            claims: self.claims.clone(),
            instance: Some(self.config.name().to_string()),
        }
    }
}

impl Config {
    /// Instance name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Config::Open => "open",
            Config::Auth => "auth",
            Config::Catalogue(n) => n,
        }
    }
}

/// V2Ray's SOCKS inbound (specs/v2ray-socks.md §3.1 (a)); `handshake` 4 s as in
/// harness/peers/v2ray so the catalogue's handshake-timeout scenarios apply.
fn v2ray_server_config(port: u16, auth: bool) -> String {
    let settings = if auth {
        format!(
            r#"{{"auth": "password", "accounts": [{{"user": "{USER}", "pass": "{PASS}"}}], "udp": true, "ip": "127.0.0.1"}}"#
        )
    } else {
        r#"{"auth": "noauth", "udp": true, "ip": "127.0.0.1"}"#.to_string()
    };
    format!(
        r#"{{"log": {{"loglevel": "warning"}},
 "policy": {{"levels": {{"0": {{"handshake": 4}}}}}},
 "inbounds": [{{"tag": "socks-in", "listen": "127.0.0.1", "port": {port}, "protocol": "socks", "settings": {settings}}}],
 "outbounds": [{{"tag": "direct", "protocol": "freedom", "settings": {{}}}}]}}"#
    )
}

fn set<T: Ord + Copy>(items: &[T]) -> BTreeSet<T> {
    items.iter().copied().collect()
}

/// Starts `peer` as a server in `config`. A free port can be taken by another process between
/// our check and the server's bind (other test suites share the machine), so a failed start is
/// retried on a new port, at most three times in all.
pub async fn start(peer: PeerId, launcher: &Launcher, config: Config) -> Result<Server> {
    let mut last = None;
    for _ in 0..3 {
        match start_once(peer, launcher, config).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt")))
}

async fn start_once(peer: PeerId, launcher: &Launcher, config: Config) -> Result<Server> {
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let all = set(&[Version::Socks4, Version::Socks4a, Version::Socks5]);
    let (args, files, claims): (Vec<String>, Vec<(&str, String)>, Claims) = match peer {
        PeerId::V2ray4 | PeerId::V2ray5 => {
            let auth = config == Config::Auth;
            let mut args: Vec<String> =
                if peer == PeerId::V2ray5 { vec!["run".into(), "-c".into()] } else { vec!["-config".into()] };
            args.push("{dir}/config.json".into());
            let claims = Claims {
                versions: all,
                commands: set(&[Command::Connect, Command::Udp]),
                method: if auth { Method::Userpass } else { Method::Noauth },
                handshake_timeout_ms: Some(4000),
                ipv6: true,
                domain: true,
                ..Claims::default()
            };
            (args, vec![("config.json", v2ray_server_config(port, auth))], claims)
        }
        PeerId::Reference => {
            // The same short timeouts as the harness's in-process reference (harness/peers/socksref),
            // so the catalogue's timing scenarios stay fast.
            let t = "readTimeout=800ms&connectTimeout=800ms&bindTimeout=800ms";
            // The catalogue encodes RFC 1928 without gost's extensions, like the harness's
            // in-process reference: no TLS methods there. `open` keeps them for the tls-methods cell.
            let t_plain = format!("{t}&notls=true");
            let t_plain = t_plain.as_str();
            let (url, cmds, method) = match config {
                Config::Open => (
                    format!("socks://127.0.0.1:{port}?udp=true&bind=true&bindAnyPeer=true&{t}"),
                    vec![Command::Connect, Command::Bind, Command::Udp],
                    Method::Noauth,
                ),
                Config::Auth => (
                    format!("socks://{USER}:{PASS}@127.0.0.1:{port}?udp=true&{t_plain}"),
                    vec![Command::Connect, Command::Udp],
                    Method::Userpass,
                ),
                Config::Catalogue("auth-plain") => (
                    format!("socks://{USER}:{PASS}@127.0.0.1:{port}?{t_plain}"),
                    vec![Command::Connect],
                    Method::Userpass,
                ),
                Config::Catalogue("bind") => (
                    format!("socks://127.0.0.1:{port}?bind=true&{t_plain}"),
                    vec![Command::Connect, Command::Bind],
                    Method::Noauth,
                ),
                Config::Catalogue(_) => {
                    (format!("socks://127.0.0.1:{port}?{t_plain}"), vec![Command::Connect], Method::Noauth)
                }
            };
            let commands = set(&cmds);
            let mut disabled = BTreeSet::new();
            for (c, f) in [(Command::Bind, Feature::Bind), (Command::Udp, Feature::Udp)] {
                if !commands.contains(&c) {
                    disabled.insert(f);
                }
            }
            let claims = Claims {
                versions: all,
                commands,
                disabled,
                method,
                handshake_timeout_ms: Some(800),
                connect_timeout_ms: Some(800),
                bind_timeout_ms: Some(800),
                ipv6: true,
                domain: true,
                // MBIND and UDP-TUN ride on bind/udp; the reference speaks them whenever those are on.
                extensions: [Extension::Gost].into(),
                ..Claims::default()
            };
            (vec!["-L".into(), url], Vec::new(), claims)
        }
        PeerId::Curl | PeerId::Gost => anyhow::bail!("{peer} has no server adapter"),
    };
    let running = launcher.start(&args, &files, Some(addr)).await?;
    Ok(Server { config, addr, running, claims })
}
