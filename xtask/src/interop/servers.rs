//! Server peers: configurations (open, with password), started once per run and shared by every
//! cell that needs them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use anyhow::Result;
use sockslab::runner::{Claims, Sut};
use sockslab::scenario::{Command, Extension, Feature as Refused, Method, Version};

use super::backend::{Launcher, Running};
use crate::peers::{Feature, PeerId};

/// RFC 1929 credentials every password-protected server accepts.
pub const USER: &str = "alice";
/// See [`USER`].
pub const PASS: &str = "s3cret";
/// The SOCKS4 USERID a USERID-checking server accepts (gost's `socks4://admin@…`).
pub const SOCKS4_USER: &str = "admin";

/// A free loopback TCP port (the workspace's one rule, [`testkit::free_port`]).
pub fn free_port() -> Result<u16> {
    Ok(testkit::free_port()?)
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
    /// The command line it was started with (for capture sidecars).
    pub command: String,
    /// Further listeners of the same process for features the main one does not serve (gost's
    /// SOCKS4 handler is a separate service from its SOCKS5 one; USERID and TLS-method variants).
    pub extra: BTreeMap<Feature, SocketAddr>,
}

impl Server {
    /// Where a cell of `feature` connects: its own listener when there is one, else the main one.
    pub fn addr_for(&self, feature: Feature) -> SocketAddr {
        self.extra.get(&feature).copied().unwrap_or(self.addr)
    }

    /// The catalogue's view of this server.
    pub fn sut(&self) -> Sut {
        let auth = matches!(self.config, Config::Auth | Config::Catalogue("auth-plain"));
        Sut {
            addr: self.addr,
            user: if auth { USER.into() } else { Vec::new() },
            pass: if auth { PASS.into() } else { Vec::new() },
            claims: self.claims.clone(),
            instance: Some(self.config.name().to_string()),
            transport: Default::default(),
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
    let mut extra = BTreeMap::new();
    // A further listener on a fresh port, for `features`; returns its port.
    let mut add_extra = |features: &[Feature]| -> Result<u16> {
        let p = free_port()?;
        for f in features {
            extra.insert(*f, SocketAddr::from(([127, 0, 0, 1], p)));
        }
        Ok(p)
    };
    let (args, files, claims): (Vec<String>, Vec<(&str, String)>, Claims) = match peer {
        PeerId::V2ray4 | PeerId::V2ray5 => {
            let auth = config == Config::Auth;
            let mut args: Vec<String> =
                if peer == PeerId::V2ray5 { vec!["run".into(), "-c".into()] } else { vec!["-config".into()] };
            args.push("{dir}/config.json".into());
            let claims = Claims {
                versions: all,
                commands: set(&[Command::Connect, Command::Udp]),
                // As harness/peers/v2ray5 declares (one expected-results list for both): V2Ray 5's
                // refusal of BIND is tested there; harness/peers/v2ray (4.34) does not declare it.
                disabled: if peer == PeerId::V2ray5 { [Refused::Bind].into() } else { BTreeSet::new() },
                method: if auth { Method::Userpass } else { Method::Noauth },
                handshake_timeout_ms: Some(4000),
                ipv6: true,
                domain: true,
                ..Claims::default()
            };
            let json = crate::peers::v2ray_socks_server_config(port, auth.then_some((USER, PASS)), false);
            (args, vec![("config.json", json)], claims)
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
            for (c, f) in [(Command::Bind, Refused::Bind), (Command::Udp, Refused::Udp)] {
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
            let mut args = vec!["-L".into(), url];
            match config {
                Config::Open => {
                    let p = add_extra(&[Feature::Socks4Userid])?;
                    args.extend(["-L".into(), format!("socks4://{SOCKS4_USER}@127.0.0.1:{p}?{t}")]);
                }
                Config::Auth => {
                    // The auth instance is RFC-only (notls) for the catalogue; 82 gets its own.
                    let p = add_extra(&[Feature::TlsAuth])?;
                    args.extend(["-L".into(), format!("socks://{USER}:{PASS}@127.0.0.1:{p}?udp=true&{t}")]);
                }
                Config::Catalogue(_) => {}
            }
            (args, Vec::new(), claims)
        }
        PeerId::Gost => {
            // gost 3.2.6's handlers (docs/gost-peer.md §3): `socks5` serves SOCKS5
            // only, `socks4` SOCKS4 and 4a (no BIND). `readTimeout` is the handshake deadline
            // (greeting to parsed request, §3.5) and `dialTimeout` the outgoing connect timeout
            // (service metadata, default 15 s), short so the catalogue's timing scenarios stay fast;
            // the same as harness/peers/gost, whose expected results the lab's catalogue uses.
            let t = "readTimeout=2s&dialTimeout=2s";
            let (args, versions, cmds, method): (Vec<String>, Vec<Version>, Vec<Command>, Method) = match config {
                Config::Open => {
                    let p4 = add_extra(&[Feature::Socks4, Feature::Socks4a])?;
                    let pu = add_extra(&[Feature::Socks4Userid])?;
                    (
                        vec![
                            "-L".into(),
                            format!("socks5://127.0.0.1:{port}?udp=true&bind=true&{t}"),
                            "-L".into(),
                            format!("socks4://127.0.0.1:{p4}?{t}"),
                            "-L".into(),
                            format!("socks4://{SOCKS4_USER}@127.0.0.1:{pu}?{t}"),
                        ],
                        vec![Version::Socks5],
                        vec![Command::Connect, Command::Bind, Command::Udp],
                        Method::Noauth,
                    )
                }
                Config::Auth => {
                    let p = add_extra(&[Feature::TlsAuth])?;
                    (
                        vec![
                            "-L".into(),
                            format!("socks5://{USER}:{PASS}@127.0.0.1:{port}?udp=true&bind=true&notls=true&{t}"),
                            "-L".into(),
                            format!("socks5://{USER}:{PASS}@127.0.0.1:{p}?udp=true&bind=true&{t}"),
                        ],
                        vec![Version::Socks5],
                        vec![Command::Connect, Command::Bind, Command::Udp],
                        Method::Userpass,
                    )
                }
                // The catalogue's SOCKS4 instance: gost's SOCKS4 handler is a service of its own.
                Config::Catalogue(_) => (
                    vec!["-L".into(), format!("socks4://127.0.0.1:{port}?{t}")],
                    vec![Version::Socks4, Version::Socks4a],
                    vec![Command::Connect],
                    Method::Noauth,
                ),
            };
            let commands = set(&cmds);
            // gost's MBIND and UDP-TUN are served wherever its bind/udp are on.
            let gost = commands.contains(&Command::Bind) || commands.contains(&Command::Udp);
            // gost's SOCKS4 handler has no BIND: declared refused, as harness/peers/gost does.
            let disabled = if versions.contains(&Version::Socks5) { BTreeSet::new() } else { [Refused::Bind].into() };
            let claims = Claims {
                versions: set(&versions),
                commands,
                disabled,
                method,
                handshake_timeout_ms: Some(2000),
                connect_timeout_ms: Some(2000),
                ipv6: true,
                domain: true,
                extensions: if gost { [Extension::Gost].into() } else { BTreeSet::new() },
                ..Claims::default()
            };
            (args, Vec::new(), claims)
        }
        PeerId::Curl => anyhow::bail!("{peer} has no server adapter"),
    };
    let command = format!("{} {}", peer.name(), args.join(" "));
    let running = launcher.start(&args, &files, Some(addr)).await?;
    Ok(Server { config, addr, running, claims, extra, command })
}
