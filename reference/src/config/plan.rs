//! The model into what the binary runs: one URL per service and per chain node, in the syntax
//! of `-L`/`-F` (`handler+listener://user:pass@addr/target?metadata`), so a file and a command line
//! go through the same service code, and each URL part remembers where in the model it came from
//! (for errors that name the config key, not a URL the user never wrote).

use std::collections::BTreeMap;

use super::{Config, Metadata};

/// Something in the model that cannot run, named by its path (`services[0].handler.chain`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PlanError {
    /// Where in the model.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

fn err(path: impl Into<String>, message: impl Into<String>) -> PlanError {
    PlanError { path: path.into(), message: message.into() }
}

/// What the binary runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Every chain of the model, by name, in file order.
    pub chains: Vec<PlannedChain>,
    /// Every service, in file order.
    pub services: Vec<PlannedService>,
    /// `log.level`, as a tracing filter, when the model sets one.
    pub log_level: Option<String>,
}

/// One chain as `-F` URLs.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedChain {
    /// `chains[].name`.
    pub name: String,
    /// One URL per hop, first hop first.
    pub hops: Vec<Origin>,
}

/// One service as a `-L` URL.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedService {
    /// `services[].name`.
    pub name: String,
    /// The URL and where its parts came from.
    pub url: Origin,
    /// Index into [`Plan::chains`] of the chain this service uses.
    pub chain: Option<usize>,
    /// Users beyond the one in the URL (from `authers`).
    pub extra_users: Vec<(String, String)>,
}

/// A URL built from the model, with the model path of each of its parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    /// The URL.
    pub url: String,
    /// The model path of the whole object (`services[0]`).
    pub path: String,
    /// For a URL error's `part` (`scheme`, `host`, `port`, `path`, `target`, `user`, `query K`):
    /// the model path it came from.
    pub parts: BTreeMap<String, String>,
}

impl Origin {
    /// The model path a URL error's `part` points at (the object itself when unknown).
    pub fn path_of(&self, part: &str) -> String {
        if let Some(p) = self.parts.get(part) {
            return p.clone();
        }
        // `target "x" port` and the like: the first word names the part.
        let head = part.split(' ').next().unwrap_or(part);
        self.parts.get(head).cloned().unwrap_or_else(|| self.path.clone())
    }
}

/// Percent-encodes everything but unreserved characters and the few a value commonly holds.
fn encode(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Merges metadata maps that are one namespace here; the first map's path wins for errors.
fn merge(
    maps: &[(&Metadata, String)],
    parts: &mut BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, PlanError> {
    let mut out: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (map, path) in maps {
        for (k, v) in map.iter() {
            if k.is_empty() || k.contains(['&', '=', '?', '#', '%']) || k.chars().any(char::is_whitespace) {
                return Err(err(format!("{path}.{k}"), "not a metadata key"));
            }
            let v = v.to_string();
            let here = format!("{path}.{k}");
            match out.get(k) {
                Some((old, at)) if *old != v => {
                    return Err(err(
                        here,
                        format!(
                            "{v:?} differs from {old:?} at {at}: socksref has one metadata namespace per service/node"
                        ),
                    ))
                }
                Some(_) => {}
                None => {
                    parts.insert(format!("query {k}"), here.clone());
                    out.insert(k.clone(), (v, here));
                }
            }
        }
    }
    Ok(out.into_iter().map(|(k, (v, _))| (k, v)).collect())
}

fn query(pairs: &[(String, String)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let q: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={}", encode(v, b":/,*@"))).collect();
    format!("?{}", q.join("&"))
}

fn userinfo(user: &str, pass: &str) -> String {
    if pass.is_empty() {
        format!("{}@", encode(user, b""))
    } else {
        format!("{}:{}@", encode(user, b""), encode(pass, b""))
    }
}

/// Turns the model into URLs, checking everything that is not a URL's business: references
/// between services, chains and authers, and the shape socksref supports (one node per hop, one
/// forward target).
pub fn plan(config: &Config) -> Result<Plan, PlanError> {
    let mut chains: Vec<PlannedChain> = Vec::with_capacity(config.chains.len());
    for (ci, chain) in config.chains.iter().enumerate() {
        let cpath = format!("chains[{ci}]");
        if chains.iter().any(|c| c.name == chain.name) {
            return Err(err(format!("{cpath}.name"), format!("{:?} is defined twice", chain.name)));
        }
        if chain.hops.is_empty() {
            return Err(err(format!("{cpath}.hops"), "a chain needs at least one hop"));
        }
        let hops = chain.hops.iter().enumerate().map(|(hi, hop)| plan_hop(&format!("{cpath}.hops[{hi}]"), hop));
        chains.push(PlannedChain { name: chain.name.clone(), hops: hops.collect::<Result<_, _>>()? });
    }
    let mut services: Vec<PlannedService> = Vec::with_capacity(config.services.len());
    for (si, s) in config.services.iter().enumerate() {
        let spath = format!("services[{si}]");
        if services.iter().any(|p| p.name == s.name) {
            return Err(err(format!("{spath}.name"), format!("{:?} is defined twice", s.name)));
        }
        services.push(plan_service(spath, s, config, &chains)?);
    }
    Ok(Plan { chains, services, log_level: log_level(config)? })
}

/// One hop of a chain (at `hpath`) as a `-F` URL: its one node's connector, dialer and metadata.
fn plan_hop(hpath: &str, hop: &super::HopConfig) -> Result<Origin, PlanError> {
    let node = match hop.nodes.as_slice() {
        [one] => one,
        [] => return Err(err(format!("{hpath}.nodes"), "a hop needs a node")),
        _ => {
            return Err(err(format!("{hpath}.nodes"), "socksref uses one node per hop (no node selection or failover)"))
        }
    };
    let npath = format!("{hpath}.nodes[0]");
    let mut parts = BTreeMap::new();
    let dialer = node.dialer.clone().unwrap_or_default();
    let dialer_kind = if dialer.kind.is_empty() { "tcp" } else { dialer.kind.as_str() };
    let scheme = if dialer_kind == "tcp" || dialer_kind == node.connector.kind {
        node.connector.kind.clone()
    } else {
        format!("{}+{dialer_kind}", node.connector.kind)
    };
    parts.insert("scheme".into(), format!("{npath}.connector.type"));
    parts.insert("host".into(), format!("{npath}.addr"));
    parts.insert("port".into(), format!("{npath}.addr"));
    parts.insert("user".into(), format!("{npath}.connector.auth"));
    let mut pairs = merge(
        &[
            (&node.connector.metadata, format!("{npath}.connector.metadata")),
            (&dialer.metadata, format!("{npath}.dialer.metadata")),
            (&node.metadata, format!("{npath}.metadata")),
            (&hop.metadata, format!("{hpath}.metadata")),
        ],
        &mut parts,
    )?;
    if let Some(tls) = &dialer.tls {
        let tpath = format!("{npath}.dialer.tls");
        // gost's command line names the node's host; only another name means anything.
        let host = crate::url::split_host_port(&node.addr).map(|(h, _)| h).unwrap_or_default();
        let server_name = if tls.server_name == host { "" } else { tls.server_name.as_str() };
        let secure = if tls.secure { "true" } else { "" };
        for (k, v) in [
            ("secure", secure),
            ("caFile", tls.ca_file.as_str()),
            ("serverName", server_name),
            ("certFile", tls.cert_file.as_str()),
            ("keyFile", tls.key_file.as_str()),
        ] {
            if v.is_empty() {
                continue;
            }
            // gost's command line also leaves these keys in the hop's metadata.
            match pairs.iter().find(|(pk, _)| pk == k) {
                Some((_, old)) if old == v => {}
                Some((_, old)) => {
                    return Err(err(format!("{tpath}.{k}"), format!("{v:?} differs from the metadata's {old:?}")))
                }
                None => {
                    pairs.push((k.into(), v.into()));
                    parts.insert(format!("query {k}"), format!("{tpath}.{k}"));
                }
            }
        }
    }
    let auth = node.connector.auth.as_ref().map(|a| userinfo(&a.username, &a.password)).unwrap_or_default();
    let url = format!("{scheme}://{auth}{}{}", node.addr, query(&pairs));
    Ok(Origin { url, path: npath, parts })
}

/// One service (at `spath`) as a `-L` URL, with the chain it dials through and the users
/// beyond the URL's own.
fn plan_service(
    spath: String,
    s: &super::ServiceConfig,
    config: &Config,
    chains: &[PlannedChain],
) -> Result<PlannedService, PlanError> {
    let listener =
        s.listener.clone().unwrap_or_else(|| super::ListenerConfig { kind: "tcp".into(), ..Default::default() });
    let handler = &s.handler;
    // gost's `forward` handler is its `tcp` one: the TCP forwarder, on whatever listener.
    let kind = if handler.kind == "forward" { "tcp" } else { handler.kind.as_str() };
    let forwarding = matches!(kind, "tcp" | "udp" | "rtcp" | "rudp");
    let remote = matches!(kind, "rtcp" | "rudp");
    let mut parts = BTreeMap::new();
    let scheme = if kind == "tcp" && listener.kind != "tcp" {
        // A TCP forwarder on a transport listener (`tcp+tls://:p/host:80`).
        parts.insert("scheme".into(), format!("{spath}.listener.type"));
        format!("tcp+{}", listener.kind)
    } else if forwarding {
        if listener.kind != kind {
            return Err(err(
                format!("{spath}.listener.type"),
                format!("a {kind} handler needs a {kind} listener (not {:?})", listener.kind),
            ));
        }
        parts.insert("scheme".into(), format!("{spath}.handler.type"));
        kind.to_string()
    } else if listener.kind == "tcp" {
        parts.insert("scheme".into(), format!("{spath}.handler.type"));
        handler.kind.clone()
    } else {
        parts.insert("scheme".into(), format!("{spath}.listener.type"));
        format!("{}+{}", handler.kind, listener.kind)
    };
    let chain = service_chain(&spath, handler, &listener, remote, chains)?;
    let users = service_users(&spath, handler, config)?;
    parts.insert("user".into(), format!("{spath}.handler.auth"));
    parts.insert("password".into(), format!("{spath}.handler.auth"));
    parts.insert("host".into(), format!("{spath}.addr"));
    parts.insert("port".into(), format!("{spath}.addr"));
    parts.insert("path".into(), format!("{spath}.forwarder"));
    parts.insert("target".into(), format!("{spath}.forwarder.nodes"));
    let mut pairs = merge(
        &[
            (&handler.metadata, format!("{spath}.handler.metadata")),
            (&listener.metadata, format!("{spath}.listener.metadata")),
            (&s.metadata, format!("{spath}.metadata")),
        ],
        &mut parts,
    )?;
    if let Some(tls) = &listener.tls {
        let tpath = format!("{spath}.listener.tls");
        for (v, k) in [(&tls.cert_file, "certFile"), (&tls.key_file, "keyFile"), (&tls.ca_file, "caFile")] {
            if !v.is_empty() {
                pairs.push((k.into(), v.clone()));
                parts.insert(format!("query {k}"), format!("{tpath}.{k}"));
            }
        }
        if tls.secure || !tls.server_name.is_empty() {
            return Err(err(tpath, "secure/serverName are dialer settings, not listener settings"));
        }
    }
    let targets = match &s.forwarder {
        None => String::new(),
        Some(f) => {
            for (i, n) in f.nodes.iter().enumerate() {
                if n.addr.contains([',', '/', '?']) {
                    return Err(err(
                        format!("{spath}.forwarder.nodes[{i}].addr"),
                        format!("{:?} is not host:port", n.addr),
                    ));
                }
            }
            let list: Vec<&str> = f.nodes.iter().map(|n| n.addr.as_str()).collect();
            format!("/{}", list.join(","))
        }
    };
    let mut rest = users.into_iter();
    let auth = rest.next().map(|(u, p)| userinfo(&u, &p)).unwrap_or_default();
    let url = format!("{scheme}://{auth}{}{targets}{}", s.addr, query(&pairs));
    Ok(PlannedService {
        name: s.name.clone(),
        url: Origin { url, path: spath, parts },
        chain,
        extra_users: rest.collect(),
    })
}

/// The chain a service dials through, by its index in `chains`: the listener's for remote
/// listens (it is where the listen happens), the handler's for everything else (it is where
/// connections go), as gost's command line; a chain named on the other side is an error.
fn service_chain(
    spath: &str,
    handler: &super::HandlerConfig,
    listener: &super::ListenerConfig,
    remote: bool,
    chains: &[PlannedChain],
) -> Result<Option<usize>, PlanError> {
    let (chain_name, chain_path, wrong) = if remote {
        (
            &listener.chain,
            format!("{spath}.listener.chain"),
            (&handler.chain, "handler", "rtcp/rudp targets are dialled directly"),
        )
    } else {
        (
            &handler.chain,
            format!("{spath}.handler.chain"),
            (&listener.chain, "listener", "listeners are not dialled through a chain"),
        )
    };
    if let Some(name) = wrong.0 {
        return Err(err(format!("{spath}.{}.chain", wrong.1), format!("{name:?}: not supported here ({})", wrong.2)));
    }
    Ok(match chain_name {
        None => None,
        Some(name) => Some(
            chains
                .iter()
                .position(|c| &c.name == name)
                .ok_or_else(|| err(chain_path.clone(), format!("no chain named {name:?}")))?,
        ),
    })
}

/// A service's users: `handler.auth`, then every user of the authers it names.
fn service_users(
    spath: &str,
    handler: &super::HandlerConfig,
    config: &Config,
) -> Result<Vec<(String, String)>, PlanError> {
    let mut users: Vec<(String, String)> = Vec::new();
    if let Some(a) = &handler.auth {
        users.push((a.username.clone(), a.password.clone()));
    }
    let auther_names: Vec<(String, String)> = handler
        .auther
        .iter()
        .map(|n| (n.clone(), format!("{spath}.handler.auther")))
        .chain(handler.authers.iter().enumerate().map(|(i, n)| (n.clone(), format!("{spath}.handler.authers[{i}]"))))
        .collect();
    for (name, path) in auther_names {
        let auther = config
            .authers
            .iter()
            .find(|a| a.name == name)
            .ok_or_else(|| err(path, format!("no auther named {name:?}")))?;
        users.extend(auther.auths.iter().map(|a| (a.username.clone(), a.password.clone())));
    }
    Ok(users)
}

/// The `log:` section as socksref's log level (text logs to stderr only).
fn log_level(config: &Config) -> Result<Option<String>, PlanError> {
    Ok(match &config.log {
        None => None,
        Some(log) => {
            if !matches!(log.format.as_str(), "" | "text") {
                return Err(err("log.format", format!("{:?}: only text logs are supported", log.format)));
            }
            if !matches!(log.output.as_str(), "" | "stderr") {
                return Err(err("log.output", format!("{:?}: socksref logs to stderr only", log.output)));
            }
            match log.level.as_str() {
                "" => None,
                "trace" | "debug" | "info" | "warn" | "error" => Some(log.level.clone()),
                "fatal" => Some("error".into()),
                other => return Err(err("log.level", format!("{other:?} (trace, debug, info, warn, error, fatal)"))),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::url::ProxyUrl;

    #[test]
    fn urls_carry_every_character_of_users_passwords_and_values() {
        let yaml = "services:
- name: s
  addr: 127.0.0.1:1080
  handler:
    type: socks5
    auth: {username: 'a:b@c', password: 'p/?&=%#x'}
    metadata: {allow: '127.0.0.1/8,*:80', readTimeout: 5s, udp: true, udpBufferSize: 512}
";
        let config = crate::config::Config::parse(std::path::Path::new("t.yaml"), yaml).unwrap();
        let plan = plan(&config).unwrap();
        let url = ProxyUrl::parse(&plan.services[0].url.url).unwrap();
        assert_eq!(url.auth, Some(("a:b@c".into(), "p/?&=%#x".into())));
        assert_eq!(url.params["allow"], "127.0.0.1/8,*:80");
        assert_eq!(url.params["readTimeout"], "5s");
        assert_eq!(url.params["udp"], "true");
        assert_eq!(url.params["udpBufferSize"], "512");
        assert_eq!(plan.services[0].url.path_of("query udp"), "services[0].handler.metadata.udp");
    }

    #[test]
    fn one_namespace_per_service_refuses_conflicting_values() {
        let yaml = "services:
- name: s
  addr: :1
  handler: {type: socks5, metadata: {udp: true}}
  listener: {type: tcp, metadata: {udp: false}}
";
        let config = crate::config::Config::parse(std::path::Path::new("t.yaml"), yaml).unwrap();
        let e = plan(&config).unwrap_err();
        assert_eq!(e.path, "services[0].listener.metadata.udp");
    }

    #[test]
    fn parse_print_parse_is_the_identity() {
        let yaml = "services:
- name: s
  addr: :1
  handler: {type: socks5, chain: c, metadata: {udp: true, bind: 'true', udpBufferSize: 4096, x: 1.5}}
chains:
- name: c
  hops:
  - name: h
    nodes:
    - name: n
      addr: 127.0.0.1:2
      connector: {type: socks5, auth: {username: u, password: p}}
      dialer: {type: tcp, tls: {secure: true, caFile: ca.pem}}
log: {level: debug}
";
        let path = std::path::Path::new("t.yaml");
        let config = crate::config::Config::parse(path, yaml).unwrap();
        for format in [crate::config::Format::Yaml, crate::config::Format::Json] {
            let text = config.print(format).unwrap();
            assert_eq!(crate::config::Config::parse(path, &text).unwrap(), config, "{text}");
        }
    }
}
