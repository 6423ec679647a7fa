//! Server peers: configurations (open, with password), started once per run and shared by every
//! cell that needs them. Each configuration is an instance of the peer's harness definition
//! (harness/peers/<peer>/peer.yaml, the same name): its arguments, config files, extra listeners,
//! credentials and claims come from there, so the lab and `sockslab check` cannot drift apart.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use sockslab::peers::{ExtraListener, InstanceDef, PeerDef};
use sockslab::runner::{Claims, Sut};

use super::backend::{Launcher, Running};
use crate::peers::{Feature, PeerId};

/// RFC 1929 credentials every password-protected server accepts (the lab's clients use them; the
/// servers' own come from peer.yaml, and a test holds the two equal).
pub const USER: &str = "alice";
/// See [`USER`].
pub const PASS: &str = "s3cret";
/// The SOCKS4 USERID a USERID-checking server accepts (gost's `socks4://admin@…`; peer.yaml's
/// USERID listeners name it, and a test holds them to it).
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
    /// The instance's RFC 1929 username (empty without authentication).
    pub user: String,
    /// Its password.
    pub pass: String,
}

impl Server {
    /// Where a cell of `feature` connects: its own listener when there is one, else the main one.
    pub fn addr_for(&self, feature: Feature) -> SocketAddr {
        self.extra.get(&feature).copied().unwrap_or(self.addr)
    }

    /// The catalogue's view of this server.
    pub fn sut(&self) -> Sut {
        Sut {
            addr: self.addr,
            user: self.user.clone().into_bytes(),
            pass: self.pass.clone().into_bytes(),
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

/// The instance of `def` the lab starts for `config` (the one of the same name).
pub fn instance(def: &PeerDef, config: Config) -> Result<&InstanceDef> {
    def.instance(config.name()).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The lab's features an extra listener serves, from its `features` names in peer.yaml.
pub fn extra_features(x: &ExtraListener) -> Result<Vec<Feature>> {
    x.features
        .iter()
        .map(|f| {
            Feature::ALL
                .into_iter()
                .find(|x| x.name() == f)
                .with_context(|| format!("`{f}` (extra listener) is no lab feature"))
        })
        .collect()
}

async fn start_once(peer: PeerId, launcher: &Launcher, config: Config) -> Result<Server> {
    let def = peer.definition()?;
    let inst = instance(&def, config)?;
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut extra = BTreeMap::new();
    let mut extra_ports = Vec::new();
    for x in &inst.extra {
        let p = free_port()?;
        for f in extra_features(x)? {
            extra.insert(f, SocketAddr::from(([127, 0, 0, 1], p)));
        }
        extra_ports.push(p);
    }
    // `{dir}` stays a placeholder: the launcher makes the directory (bind-mounted at the same
    // path in a container) and substitutes it. The program is the launcher's, not command[0].
    let r = inst
        .render(port, Some(&extra_ports), Path::new("{dir}"))
        .map_err(|e| anyhow::anyhow!("{}/{}: {e}", def.name, inst.name))?;
    if !r.env.is_empty() {
        bail!("{}/{}: the lab cannot pass `env` to a container; the lab's instances set none", def.name, inst.name);
    }
    let claims = inst.claims.clone().with_context(|| format!("{}/{} has no claims", def.name, inst.name))?;
    let files: Vec<(&str, String)> = r.files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let command = format!("{} {}", peer.name(), r.args.join(" "));
    let running = launcher.start(&r.args, &files, Some(addr)).await?;
    Ok(Server {
        config,
        addr,
        running,
        claims,
        extra,
        command,
        user: inst.user.clone().unwrap_or_default(),
        pass: inst.pass.clone().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockslab::scenario::{Command, Method};

    /// Every configuration the lab starts: the matrix's open/auth of each server peer, and the
    /// catalogue's instances.
    fn lab_configs() -> Vec<(PeerId, Config)> {
        let mut out = Vec::new();
        for peer in PeerId::ALL.into_iter().filter(|p| !p.caps().server.is_empty()) {
            let mut configs = vec![Config::Open, Config::Auth];
            configs.extend(super::super::catalogue::catalogue_configs(peer));
            configs.dedup();
            configs.sort();
            configs.dedup();
            out.extend(configs.into_iter().map(|c| (peer, c)));
        }
        out
    }

    /// Each lab configuration is a process instance of its peer's definition, with claims, and
    /// its extra listeners name lab features; the credentials it is started with are the ones the
    /// lab's clients send.
    #[test]
    fn every_lab_configuration_is_a_peer_yaml_instance_with_the_labs_credentials() {
        let configs = lab_configs();
        assert!(configs.len() >= 11, "gost, both V2Rays and the reference: {configs:?}");
        for (peer, config) in configs {
            let def = peer.definition().unwrap();
            let inst = instance(&def, config).unwrap_or_else(|e| panic!("{peer} {config:?}: {e:#}"));
            let claims = inst.claims.as_ref().unwrap_or_else(|| panic!("{peer}/{}: no claims", inst.name));
            match claims.method {
                Method::Userpass => {
                    assert_eq!(inst.user.as_deref(), Some(USER), "{peer}/{}", inst.name);
                    assert_eq!(inst.pass.as_deref(), Some(PASS), "{peer}/{}", inst.name);
                }
                _ => assert!(inst.user.is_none() && inst.pass.is_none(), "{peer}/{}", inst.name),
            }
            for x in &inst.extra {
                let features = extra_features(x).unwrap();
                assert!(!features.is_empty(), "{peer}/{}: an extra listener for nothing", inst.name);
                assert!(x.args.iter().any(|a| a.contains("{port}")), "{peer}/{}: {:?} has no port", inst.name, x.args);
                if features.contains(&Feature::Socks4Userid) {
                    let userid = format!("socks4://{SOCKS4_USER}@");
                    assert!(x.args.iter().any(|a| a.starts_with(&userid)), "{peer}/{}: {:?}", inst.name, x.args);
                }
            }
            // The lab passes no environment to containers (see `start_once`).
            assert!(inst.env.is_empty(), "{peer}/{}", inst.name);
        }
    }

    /// One source for the lab's and the harness's claims: where `sockslab check` starts a process
    /// instance of the same name, the lab starts that very instance (a `lab:` entry must not
    /// shadow it with another command or other claims).
    #[test]
    fn the_labs_instance_is_the_harness_instance_of_the_same_name() {
        let mut shared = 0;
        for (peer, config) in lab_configs() {
            let def = peer.definition().unwrap();
            let lab = instance(&def, config).unwrap();
            let harness = def.instances.iter().find(|i| i.name == config.name());
            if let Some(h) = harness.filter(|h| h.kind == sockslab::peers::Kind::Process) {
                assert_eq!(lab.claims, h.claims, "{peer}/{}", h.name);
                assert_eq!(lab.command, h.command, "{peer}/{}", h.name);
                assert_eq!(lab.files, h.files, "{peer}/{}", h.name);
                shared += 1;
            }
        }
        // gost's open/auth/socks4 and both V2Rays' open/auth.
        assert_eq!(shared, 7);
    }

    /// The value of `key` in the query of the `-L` URL of `args`, if any.
    fn query<'a>(url: &'a str, key: &str) -> Option<&'a str> {
        let (_, q) = url.split_once('?')?;
        q.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    }

    /// The reference runs as a program in the lab and in-process in the harness; the lab's claims
    /// for it are what the in-process reference claims for the same options, read from the `-L`
    /// URL the program is given (UDP, BIND, a password, the 800 ms timeouts), so a URL edited
    /// without its claims (or the other way round) fails here.
    #[test]
    fn the_labs_reference_claims_what_its_command_line_configures() {
        let def = PeerId::Reference.definition().unwrap();
        for config in super::super::catalogue::catalogue_configs(PeerId::Reference) {
            let inst = instance(&def, config).unwrap();
            let args = inst.render(1080, Some(&vec![1081; inst.extra.len()]), Path::new("/d")).unwrap().args;
            assert_eq!(args[0], "-L", "{}", inst.name);
            let url = &args[1];
            let opts = sockslab::reference::RefOptions {
                auth: url.contains('@'),
                bind: query(url, "bind") == Some("true"),
                udp: query(url, "udp") == Some("true"),
                handshake_timeout_ms: query(url, "readTimeout")
                    .and_then(|v| v.strip_suffix("ms")?.parse().ok())
                    .unwrap(),
                connect_timeout_ms: query(url, "connectTimeout")
                    .and_then(|v| v.strip_suffix("ms")?.parse().ok())
                    .unwrap(),
                bind_accept_timeout_ms: query(url, "bindTimeout")
                    .and_then(|v| v.strip_suffix("ms")?.parse().ok())
                    .unwrap(),
                ..Default::default()
            };
            assert_eq!(inst.claims.as_ref(), Some(&opts.claims()), "{}: {url}", inst.name);
            if opts.auth {
                assert!(url.starts_with(&format!("socks://{USER}:{PASS}@")), "{url}");
            }
        }
        // The control: the open instance really has everything on.
        let open = instance(&def, Config::Open).unwrap().claims.clone().unwrap();
        assert!(open.commands.contains(&Command::Bind) && open.commands.contains(&Command::Udp));
    }

    /// The rendered command of gost's open instance: main listener first, then each extra one on
    /// its own port, in order; `{dir}` left for the launcher.
    #[test]
    fn extra_listeners_get_their_own_ports() {
        let def = PeerId::Gost.definition().unwrap();
        let inst = instance(&def, Config::Open).unwrap();
        let r = inst.render(2000, Some(&[2001, 2002]), Path::new("{dir}")).unwrap();
        assert_eq!(r.args.len(), 6, "{:?}", r.args);
        assert!(r.args[1].starts_with("socks5://127.0.0.1:2000?"), "{:?}", r.args);
        assert!(r.args[3].starts_with("socks4://127.0.0.1:2001?"), "{:?}", r.args);
        assert!(r.args[5].starts_with("socks4://admin@127.0.0.1:2002?"), "{:?}", r.args);
        assert!(inst.render(2000, Some(&[2001]), Path::new("{dir}")).is_err(), "one port per extra listener");
        let v2 = PeerId::V2ray4.definition().unwrap();
        let r = instance(&v2, Config::Open).unwrap().render(3000, Some(&[]), Path::new("{dir}")).unwrap();
        assert_eq!(r.args, ["-config", "{dir}/config.json"]);
    }
}
