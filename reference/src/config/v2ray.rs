//! A V2Ray config (v4 JSON as 4.34 and 5.x read `.json` files, or v5's jsonv5 form) translated
//! into the config model (docs/config.md §4).
//!
//! Translated: `socks` inbounds (auth, accounts, udp, ip, userLevel; jsonv5: address,
//! udpEnabled), `dokodemo-door` inbounds (as tcp/udp forwarders), `socks` outbounds (servers,
//! users, version; jsonv5: address, port) as one-hop chains, `freedom` as direct, and routing
//! rules that only map `inboundTag` to `outboundTag`. Everything else is reported once, by
//! JSON path, as a note (ignored) or an error (cannot run as written), never passed over in
//! silence as V2Ray's own loader does with unknown keys.
//!
//! One V2Ray behaviour is deliberately not reproduced: a V2Ray socks inbound with `udp` relays
//! datagrams from anyone who can reach its port, whatever `auth` says (the UDP authentication
//! bypass). Here UDP needs the same authenticated association as anywhere else in socksref.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use super::{
    AuthConfig, AutherConfig, ChainConfig, Config, ConfigError, ConnectorConfig, ForwardNodeConfig, ForwarderConfig,
    HandlerConfig, HopConfig, ListenerConfig, LogConfig, MetaValue, Metadata, NodeConfig, ServiceConfig,
};

/// Which JSON schema the file was read with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The v4 schema (`routing`, `settings.servers`, `settings.accounts`…), read by 4.x and by
    /// 5.x for `.json` files.
    V4,
    /// v5's jsonv5 schema (`router`, `settings.udpEnabled`, `settings.address`…).
    V5,
}

/// The model made from a V2Ray file, with what was left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Translation {
    /// The model.
    pub config: Config,
    /// The schema the file was read with.
    pub form: Form,
    /// One line per ignored part: `JSON path: why`.
    pub notes: Vec<String>,
    /// For `config.services[i]`: the JSON path of the inbound it came from.
    pub service_origins: Vec<String>,
    /// For `config.chains[i]`: the JSON path of the outbound it came from.
    pub chain_origins: Vec<String>,
}

struct Cx<'a> {
    file: &'a Path,
    text: &'a str,
    notes: Vec<String>,
}

impl Cx<'_> {
    fn err(&self, path: &str, message: impl Into<String>) -> ConfigError {
        let message = message.into();
        match super::locate::locate(self.text, path) {
            Some((l, c)) => ConfigError::new(self.file, format!("{l}:{c}: {path}"), message),
            None => ConfigError::new(self.file, path, message),
        }
    }
    fn note(&mut self, path: &str, why: &str) {
        self.notes.push(format!("{path}: ignored: {why}"));
    }
    /// Notes a key that is honoured, but that V2Ray's own lines do not agree on.
    fn depends_on_version(&mut self, path: &str, how: &str) {
        self.notes.push(format!("{path}: depends on the V2Ray version: {how}"));
    }
    /// Notes every key of `obj` not in `known`.
    fn rest(&mut self, path: &str, obj: &Map<String, Value>, known: &[&str], why: &str) {
        for k in obj.keys().filter(|k| !known.contains(&k.as_str())) {
            self.note(&format!("{path}.{k}"), why);
        }
    }
}

fn obj<'v>(cx: &Cx, v: &'v Value, path: &str) -> Result<&'v Map<String, Value>, ConfigError> {
    v.as_object().ok_or_else(|| cx.err(path, "expected an object"))
}

fn string<'v>(cx: &Cx, o: &'v Map<String, Value>, path: &str, key: &str) -> Result<Option<&'v str>, ConfigError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(cx.err(&format!("{path}.{key}"), "expected a string")),
    }
}

fn boolean(cx: &Cx, o: &Map<String, Value>, path: &str, key: &str) -> Result<bool, ConfigError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(cx.err(&format!("{path}.{key}"), "expected true or false")),
    }
}

/// A port: a number or a string holding one (V2Ray also takes ranges, which socksref does not).
fn port(cx: &Cx, o: &Map<String, Value>, path: &str, key: &str) -> Result<Option<u16>, ConfigError> {
    let p = format!("{path}.{key}");
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            n.as_u64().and_then(|n| u16::try_from(n).ok()).map(Some).ok_or_else(|| cx.err(&p, "not a port (0-65535)"))
        }
        Some(Value::String(s)) => {
            s.parse().map(Some).map_err(|_| cx.err(&p, format!("{s:?}: not a port (port ranges are not supported)")))
        }
        Some(_) => Err(cx.err(&p, "expected a port number")),
    }
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn md(pairs: &[(&str, MetaValue)]) -> Metadata {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// What an inbound's traffic goes to.
#[derive(Debug, Clone)]
enum Out {
    Direct,
    Chain(String),
    Unsupported(String),
}

/// Reads and translates a V2Ray config file (`--v2ray`).
pub fn load(file: &Path) -> Result<Translation, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError::new(file, "0:0", e.to_string()))?;
    translate(file, &text)
}

/// Translates the V2Ray config `text` (the contents of `file`).
pub fn translate(file: &Path, text: &str) -> Result<Translation, ConfigError> {
    let root: Value = serde_json::from_str(text).map_err(|e| {
        let mut m = e.to_string();
        if let Some(i) = m.find(" at line ") {
            m.truncate(i);
        }
        ConfigError::new(file, format!("{}:{}", e.line(), e.column()), m)
    })?;
    let mut cx = Cx { file, text, notes: Vec::new() };
    let root = obj(&cx, &root, "$")?.clone();
    let empty = Vec::new();
    let list = |cx: &Cx, key: &str| -> Result<Vec<Value>, ConfigError> {
        match root.get(key) {
            None | Some(Value::Null) => Ok(empty.clone()),
            Some(Value::Array(a)) => Ok(a.clone()),
            Some(_) => Err(cx.err(key, "expected a list")),
        }
    };
    let inbounds = list(&cx, "inbounds")?;
    let outbounds = list(&cx, "outbounds")?;
    let form = detect(&root, &inbounds, &outbounds);
    cx.rest("$", &root, &["log", "inbounds", "outbounds", "routing", "router"], "not modelled by socksref");

    let mut config = Config::default();
    // Outbounds: socks ones become chains named by their tag.
    let (outs, chain_origins) = translate_outbounds(&mut cx, &outbounds, form, &mut config)?;
    // Routing: only inboundTag → outboundTag. V2Ray's default is the first outbound.
    let routes = translate_routes(&mut cx, &root, form, &outs)?;
    let service_origins = translate_inbounds(&mut cx, &inbounds, form, &routes, &outs, &mut config)?;
    if let Some(log) = root.get("log") {
        config.log = log_level(&mut cx, log, form)?;
    }
    Ok(Translation { config, form, notes: cx.notes, service_origins, chain_origins })
}

/// The outbounds by tag, in file order (the first is V2Ray's default route).
type Outs = Vec<(String, Out)>;

/// The outbounds, by tag: a socks one becomes a chain of `config` (its origin, the outbound's
/// path, is returned beside), freedom is direct, anything else cannot be run.
fn translate_outbounds(
    cx: &mut Cx<'_>,
    outbounds: &[Value],
    form: Form,
    config: &mut Config,
) -> Result<(Outs, Vec<String>), ConfigError> {
    let mut chain_origins = Vec::new();
    let mut outs: Vec<(String, Out)> = Vec::new();
    for (i, o) in outbounds.iter().enumerate() {
        let path = format!("outbounds[{i}]");
        let o = obj(cx, o, &path)?;
        let tag = string(cx, o, &path, "tag")?.map_or_else(|| format!("outbound-{i}"), str::to_string);
        let protocol = string(cx, o, &path, "protocol")?.unwrap_or("");
        cx.rest(&path, o, &["tag", "protocol", "settings"], "outbound options are not modelled");
        let empty_settings = Value::Object(Map::new());
        let settings = obj(cx, o.get("settings").unwrap_or(&empty_settings), &format!("{path}.settings"))?;
        let spath = format!("{path}.settings");
        let out = match protocol {
            "freedom" => {
                cx.rest(&spath, settings, &[], "freedom options are not modelled (direct connections as usual)");
                Out::Direct
            }
            "socks" => {
                let node = socks_outbound(cx, settings, &spath, form)?;
                config.chains.push(ChainConfig {
                    name: tag.clone(),
                    hops: vec![HopConfig { name: "hop-0".into(), nodes: vec![node], metadata: Metadata::new() }],
                });
                chain_origins.push(path.clone());
                Out::Chain(tag.clone())
            }
            other => {
                cx.note(&path, &format!("protocol {other:?} is not supported (only socks and freedom)"));
                Out::Unsupported(format!("{path} (protocol {other:?})"))
            }
        };
        outs.push((tag, out));
    }

    Ok((outs, chain_origins))
}

/// The routing rules V2Ray's form names, as inbound tag → outbound tag: only rules that match
/// on inbound tags alone are modelled (the first that matches wins, as in V2Ray).
fn translate_routes(
    cx: &mut Cx<'_>,
    root: &Map<String, Value>,
    form: Form,
    outs: &[(String, Out)],
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut routes: BTreeMap<String, String> = BTreeMap::new();
    let (rkey, rules_key, out_key) = match form {
        Form::V4 => ("routing", "rules", "outboundTag"),
        Form::V5 => ("router", "rule", "tag"),
    };
    if let Some(r) = root.get(rkey) {
        let r = obj(cx, r, rkey)?;
        cx.rest(rkey, r, &[rules_key], "routing options are not modelled");
        if let Some(rules) = r.get(rules_key) {
            let rules = rules.as_array().ok_or_else(|| cx.err(&format!("{rkey}.{rules_key}"), "expected a list"))?;
            for (i, rule) in rules.iter().enumerate() {
                let path = format!("{rkey}.{rules_key}[{i}]");
                let rule = obj(cx, rule, &path)?;
                let extra: Vec<&String> = rule
                    .keys()
                    .filter(|k| !["type", "inboundTag", out_key, "outboundTag"].contains(&k.as_str()))
                    .collect();
                if !extra.is_empty() {
                    cx.note(&path, &format!("the whole rule: matching on {extra:?} is not modelled"));
                    continue;
                }
                let Some(to) = string(cx, rule, &path, out_key)?.or(string(cx, rule, &path, "outboundTag")?) else {
                    cx.note(&path, "a rule without an outbound tag");
                    continue;
                };
                let tags = match rule.get("inboundTag") {
                    Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
                    Some(Value::String(s)) => vec![s.clone()],
                    _ => {
                        cx.note(&path, "a rule without inboundTag matches everything: not modelled");
                        continue;
                    }
                };
                if !outs.iter().any(|(t, _)| t == to) {
                    return Err(cx.err(&format!("{path}.{out_key}"), format!("no outbound tagged {to:?}")));
                }
                for t in tags {
                    // First matching rule wins, as in V2Ray.
                    routes.entry(t).or_insert_with(|| to.to_string());
                }
            }
        }
    }

    Ok(routes)
}

/// The socks and dokodemo-door inbounds as services of `config`, each on the chain its route
/// (or the first outbound) names; returns each service's origin (the inbound's path).
fn translate_inbounds(
    cx: &mut Cx<'_>,
    inbounds: &[Value],
    form: Form,
    routes: &BTreeMap<String, String>,
    outs: &[(String, Out)],
    config: &mut Config,
) -> Result<Vec<String>, ConfigError> {
    let mut service_origins = Vec::new();
    for (i, inb) in inbounds.iter().enumerate() {
        let path = format!("inbounds[{i}]");
        let inb = obj(cx, inb, &path)?;
        let tag = string(cx, inb, &path, "tag")?.map_or_else(|| format!("inbound-{i}"), str::to_string);
        let protocol = string(cx, inb, &path, "protocol")?.unwrap_or("");
        if !matches!(protocol, "socks" | "dokodemo-door") {
            cx.note(&path, &format!("protocol {protocol:?} is not supported (only socks and dokodemo-door)"));
            continue;
        }
        cx.rest(&path, inb, &["tag", "protocol", "settings", "listen", "port"], "inbound options are not modelled");
        // V2Ray listens on every interface when `listen` is omitted.
        let listen = string(cx, inb, &path, "listen")?.unwrap_or("0.0.0.0");
        let port = port(cx, inb, &path, "port")?.ok_or_else(|| cx.err(&path, "missing port"))?;
        let addr = host_port(listen, port);
        let empty_settings = Value::Object(Map::new());
        let spath = format!("{path}.settings");
        let settings = obj(cx, inb.get("settings").unwrap_or(&empty_settings), &spath)?;
        let out = match routes.get(&tag) {
            Some(t) => outs.iter().find(|(o, _)| o == t).map(|(_, o)| o.clone()),
            None => outs.first().map(|(_, o)| o.clone()),
        }
        .unwrap_or(Out::Direct);
        let chain = match out {
            Out::Direct => None,
            Out::Chain(c) => Some(c),
            Out::Unsupported(what) => {
                return Err(cx.err(&path, format!("routed to {what}, which socksref cannot run")));
            }
        };
        if protocol == "socks" {
            let (handler, auther) = socks_inbound(cx, settings, &spath, form, &tag, listen, chain)?;
            config.authers.extend(auther);
            config.services.push(ServiceConfig {
                name: tag.clone(),
                addr,
                handler,
                listener: Some(ListenerConfig { kind: "tcp".into(), ..Default::default() }),
                forwarder: None,
                metadata: Metadata::new(),
            });
            service_origins.push(path.clone());
        } else {
            for s in dokodemo(cx, settings, &spath, form, &tag, &addr, chain)? {
                config.services.push(s);
                service_origins.push(path.clone());
            }
        }
    }

    Ok(service_origins)
}

/// jsonv5 spells some things differently; the first such spelling decides.
fn detect(root: &Map<String, Value>, inbounds: &[Value], outbounds: &[Value]) -> Form {
    if root.contains_key("router") {
        return Form::V5;
    }
    if let Some(Value::Object(log)) = root.get("log") {
        if log.values().any(Value::is_object) {
            return Form::V5;
        }
    }
    let settings_have = |list: &[Value], proto: &str, keys: &[&str]| {
        list.iter().any(|v| {
            v.get("protocol").and_then(Value::as_str) == Some(proto)
                && v.get("settings").and_then(Value::as_object).is_some_and(|s| keys.iter().any(|k| s.contains_key(*k)))
        })
    };
    if settings_have(inbounds, "socks", &["udpEnabled", "address", "packetEncoding", "deferLastReply"])
        || settings_have(outbounds, "socks", &["address", "port"])
        || settings_have(inbounds, "dokodemo-door", &["networks"])
    {
        return Form::V5;
    }
    Form::V4
}

fn socks_inbound(
    cx: &mut Cx,
    s: &Map<String, Value>,
    path: &str,
    form: Form,
    tag: &str,
    listen: &str,
    chain: Option<String>,
) -> Result<(HandlerConfig, Option<AutherConfig>), ConfigError> {
    // V2Ray's socks inbound never selects gost's TLS methods, so neither does the translation.
    let mut metadata = md(&[("notls", MetaValue::Bool(true))]);
    let (udp, ip, mut users) = match form {
        Form::V4 => {
            cx.rest(path, s, &["auth", "accounts", "udp", "ip", "userLevel", "timeout"], "not a V2Ray socks setting");
            let mut users = Vec::new();
            match string(cx, s, path, "auth")?.unwrap_or("noauth") {
                "noauth" => {
                    if s.contains_key("accounts") {
                        cx.note(&format!("{path}.accounts"), "used only with \"auth\": \"password\"");
                    }
                }
                "password" => {
                    let accounts = match s.get("accounts") {
                        Some(Value::Array(a)) => a.clone(),
                        None => Vec::new(),
                        Some(_) => return Err(cx.err(&format!("{path}.accounts"), "expected a list")),
                    };
                    for (i, a) in accounts.iter().enumerate() {
                        let apath = format!("{path}.accounts[{i}]");
                        let a = obj(cx, a, &apath)?;
                        cx.rest(&apath, a, &["user", "pass"], "not an account field");
                        let user = string(cx, a, &apath, "user")?.unwrap_or("").to_string();
                        let pass = string(cx, a, &apath, "pass")?.unwrap_or("").to_string();
                        users.push(AuthConfig { username: user, password: pass });
                    }
                    if users.is_empty() {
                        return Err(cx.err(&format!("{path}.accounts"), "\"auth\": \"password\" needs accounts"));
                    }
                }
                other => {
                    // V2Ray reads any other word as noauth; say so rather than guess.
                    return Err(
                        cx.err(&format!("{path}.auth"), format!("{other:?}: expected \"noauth\" or \"password\""))
                    );
                }
            }
            if let Some(level) = s.get("userLevel") {
                if !level.is_u64() {
                    return Err(cx.err(&format!("{path}.userLevel"), "expected a number"));
                }
                // Without a policy block every level has V2Ray's default timeouts; the
                // translation keeps socksref's (policy blocks are reported at the top level).
                cx.note(&format!("{path}.userLevel"), "policy levels are not modelled; socksref's timeouts apply");
            }
            if s.contains_key("timeout") {
                cx.note(&format!("{path}.timeout"), "deprecated in V2Ray; socksref's idle timeout applies");
            }
            (boolean(cx, s, path, "udp")?, string(cx, s, path, "ip")?.map(str::to_string), users)
        }
        Form::V5 => {
            cx.rest(
                path,
                s,
                &["address", "udpEnabled", "packetEncoding", "deferLastReply"],
                "not a jsonv5 socks setting",
            );
            if let Some(p) = string(cx, s, path, "packetEncoding")? {
                if p != "None" {
                    cx.note(&format!("{path}.packetEncoding"), "only \"None\" (port-restricted UDP) is modelled");
                }
            }
            if s.contains_key("deferLastReply") {
                cx.note(&format!("{path}.deferLastReply"), "socksref always replies after the outcome is known");
            }
            (boolean(cx, s, path, "udpEnabled")?, string(cx, s, path, "address")?.map(str::to_string), Vec::new())
        }
    };
    if udp {
        metadata.insert("udp".into(), MetaValue::Bool(true));
    }
    if let Some(ip) = ip {
        // socksref announces the address the client reached, which is V2Ray 4.34's default for
        // loopback clients and its `ip` whenever `ip` names the listen address.
        let listen_loopback = listen.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback());
        if ip != listen && !(listen_loopback && ip == "127.0.0.1") {
            let key = if form == Form::V4 { "ip" } else { "address" };
            return Err(cx.err(
                &format!("{path}.{key}"),
                format!("announcing {ip:?} while listening on {listen:?} is not supported"),
            ));
        }
    }
    let mut handler = HandlerConfig { kind: "socks".into(), chain, metadata, ..Default::default() };
    let auther = if users.len() > 1 {
        let name = format!("{tag}-accounts");
        handler.auther = Some(name.clone());
        Some(AutherConfig { name, auths: std::mem::take(&mut users) })
    } else {
        handler.auth = users.pop();
        None
    };
    Ok((handler, auther))
}

fn dokodemo(
    cx: &mut Cx,
    s: &Map<String, Value>,
    path: &str,
    form: Form,
    tag: &str,
    addr: &str,
    chain: Option<String>,
) -> Result<Vec<ServiceConfig>, ConfigError> {
    let net_key = if form == Form::V4 { "network" } else { "networks" };
    cx.rest(path, s, &["address", "port", net_key, "timeout", "userLevel", "followRedirect"], "not a dokodemo setting");
    let host = string(cx, s, path, "address")?.ok_or_else(|| cx.err(path, "missing address (the fixed target)"))?;
    let port = port(cx, s, path, "port")?.ok_or_else(|| cx.err(path, "missing port (the fixed target)"))?;
    if boolean(cx, s, path, "followRedirect")? {
        return Err(cx.err(&format!("{path}.followRedirect"), "transparent proxying is not supported"));
    }
    for k in ["timeout", "userLevel"] {
        if s.contains_key(k) {
            cx.note(&format!("{path}.{k}"), "socksref's timeouts apply");
        }
    }
    let networks: Vec<String> = match s.get(net_key) {
        None => vec!["tcp".into()],
        Some(Value::String(n)) => n.split(',').map(|x| x.trim().to_ascii_lowercase()).collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_ascii_lowercase).collect(),
        Some(_) => return Err(cx.err(&format!("{path}.{net_key}"), "expected \"tcp\", \"udp\" or \"tcp,udp\"")),
    };
    let mut out = Vec::new();
    for n in networks {
        if !matches!(n.as_str(), "tcp" | "udp") {
            return Err(cx.err(&format!("{path}.{net_key}"), format!("{n:?}: only tcp and udp")));
        }
        out.push(ServiceConfig {
            name: format!("{tag}-{n}"),
            addr: addr.to_string(),
            handler: HandlerConfig { kind: n.clone(), chain: chain.clone(), ..Default::default() },
            listener: Some(ListenerConfig { kind: n.clone(), ..Default::default() }),
            forwarder: Some(ForwarderConfig {
                nodes: vec![ForwardNodeConfig { name: "target-0".into(), addr: host_port(host, port) }],
            }),
            metadata: Metadata::new(),
        });
    }
    Ok(out)
}

fn socks_outbound(cx: &mut Cx, s: &Map<String, Value>, path: &str, form: Form) -> Result<NodeConfig, ConfigError> {
    // V2Ray's socks outbound offers no gost TLS methods and carries UDP in UDP ASSOCIATE.
    let mut metadata = md(&[("notls", MetaValue::Bool(true)), ("relay", MetaValue::Str("udp".into()))]);
    let (addr, auth, kind) = match form {
        Form::V5 => {
            cx.rest(path, s, &["address", "port"], "not a jsonv5 socks outbound setting");
            let host = string(cx, s, path, "address")?.ok_or_else(|| cx.err(path, "missing address"))?;
            let port = port(cx, s, path, "port")?.ok_or_else(|| cx.err(path, "missing port"))?;
            (host_port(host, port), None, "socks5")
        }
        Form::V4 => {
            cx.rest(path, s, &["servers", "version"], "not a socks outbound setting");
            let servers = match s.get("servers") {
                Some(Value::Array(a)) if !a.is_empty() => a.clone(),
                _ => return Err(cx.err(path, "missing servers (a list of {address, port, users})")),
            };
            if servers.len() > 1 {
                cx.note(&format!("{path}.servers[1]"), "only the first server is used (no round robin)");
            }
            let spath = format!("{path}.servers[0]");
            let server = obj(cx, &servers[0], &spath)?;
            cx.rest(&spath, server, &["address", "port", "users"], "not a server field");
            let host = string(cx, server, &spath, "address")?.ok_or_else(|| cx.err(&spath, "missing address"))?;
            let port = port(cx, server, &spath, "port")?.ok_or_else(|| cx.err(&spath, "missing port"))?;
            let users = match server.get("users") {
                None => Vec::new(),
                Some(Value::Array(a)) => a.clone(),
                Some(_) => return Err(cx.err(&format!("{spath}.users"), "expected a list")),
            };
            if users.len() > 1 {
                cx.note(&format!("{spath}.users[1]"), "only the first user is used (V2Ray picks one at random)");
            }
            let auth = match users.first() {
                None => None,
                Some(u) => {
                    let upath = format!("{spath}.users[0]");
                    let u = obj(cx, u, &upath)?;
                    cx.rest(&upath, u, &["user", "pass", "level", "email"], "not a user field");
                    for k in ["level", "email"] {
                        if u.contains_key(k) {
                            cx.note(&format!("{upath}.{k}"), "policy levels and statistics are not modelled");
                        }
                    }
                    Some(AuthConfig {
                        username: string(cx, u, &upath, "user")?.unwrap_or("").to_string(),
                        password: string(cx, u, &upath, "pass")?.unwrap_or("").to_string(),
                    })
                }
            };
            // As V2Ray from 5.2.0 (4.34 ignores `version` and always speaks SOCKS5; docs/v2ray.md §2.3).
            let version = string(cx, s, path, "version")?.unwrap_or("5").to_ascii_lowercase();
            let kind = match version.as_str() {
                "" | "5" => "socks5",
                "4a" => "socks4a",
                "4" => {
                    metadata.insert("disable4a".into(), MetaValue::Bool(true));
                    "socks4"
                }
                other => {
                    return Err(
                        cx.err(&format!("{path}.version"), format!("{other:?}: expected \"5\", \"4a\" or \"4\""))
                    )
                }
            };
            if kind != "socks5" {
                metadata.remove("notls");
                metadata.remove("relay");
                if auth.as_ref().is_some_and(|a| !a.password.is_empty()) {
                    return Err(cx.err(&format!("{spath}.users[0].pass"), "a password needs SOCKS5 (as V2Ray)"));
                }
                // The same file means two things to two V2Ray lines: said once, by path.
                cx.depends_on_version(
                    &format!("{path}.version"),
                    "speaks SOCKS4/4a as V2Ray from 5.2.0; V2Ray 4.34 (and up to 5.1.x) ignores it and speaks SOCKS5",
                );
            }
            (host_port(host, port), auth, kind)
        }
    };
    Ok(NodeConfig {
        name: "node-0".into(),
        addr,
        connector: ConnectorConfig { kind: kind.into(), auth, metadata },
        dialer: None,
        metadata: Metadata::new(),
    })
}

fn log_level(cx: &mut Cx, log: &Value, form: Form) -> Result<Option<LogConfig>, ConfigError> {
    let log = obj(cx, log, "log")?;
    let level = match form {
        Form::V4 => {
            cx.rest("log", log, &["loglevel"], "socksref logs to stderr");
            string(cx, log, "log", "loglevel")?.map(str::to_string)
        }
        Form::V5 => {
            cx.rest("log", log, &["error"], "socksref has no access log");
            match log.get("error") {
                Some(Value::Object(e)) => {
                    cx.rest("log.error", e, &["level", "type"], "socksref logs to stderr");
                    string(cx, e, "log.error", "level")?.map(str::to_ascii_lowercase)
                }
                _ => None,
            }
        }
    };
    let level = match level.as_deref() {
        None => return Ok(None),
        Some("debug") => "debug",
        Some("info") => "info",
        Some("warning") => "warn",
        Some("error") | Some("none") => "error",
        Some(other) => return Err(cx.err("log", format!("level {other:?} (debug, info, warning, error, none)"))),
    };
    Ok(Some(LogConfig { level: level.into(), ..Default::default() }))
}
