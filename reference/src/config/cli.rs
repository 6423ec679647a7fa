//! `-L`/`-F` URLs into the config model, following gost's own mapping (docs/config.md §2):
//! `-F` URLs become the hops of one chain `chain-0`; every query key is metadata of the handler,
//! the listener and the service (or of one of them with a `handler.` / `listener.` / `service.`
//! prefix) for `-L`, and of the connector, the dialer, the node and the hop for `-F`; the chain is
//! attached to the listener for `rtcp`/`rudp` and to the handler otherwise.

use super::{
    AuthConfig, ChainConfig, Config, ConnectorConfig, DialerConfig, ForwardNodeConfig, ForwarderConfig, HandlerConfig,
    HopConfig, ListenerConfig, MetaValue, Metadata, NodeConfig, ServiceConfig, TlsConfig,
};
use crate::url::{ProxyUrl, UrlError};

/// Listener names gost knows; a one-word scheme that is one of them names the listener too
/// (`udp://` is handler udp on listener udp), any other word gets a TCP listener (`socks5://`).
const KNOWN_LISTENERS: &[&str] =
    &["tcp", "udp", "rtcp", "rudp", "tls", "mtls", "ws", "mws", "wss", "mwss", "kcp", "quic", "h2", "grpc"];

/// Listener names with which a forward path makes the handler the listener's name (as gost).
const FORWARD_LISTENERS: &[&str] = &["tcp", "udp", "rtcp", "rudp"];

/// The name gost's command line gives the one chain built from `-F`.
pub const CLI_CHAIN: &str = "chain-0";

/// Builds the model for `socksref -L … -F …`.
pub fn from_urls(listen: &[String], forward: &[String]) -> Result<Config, UrlError> {
    let mut config = Config::default();
    // Services first: the binary names the flag of an error by whether some -L fails to parse.
    let mut services = Vec::with_capacity(listen.len());
    for (i, l) in listen.iter().enumerate() {
        let mut service = service(l)?;
        service.name = format!("service-{i}");
        if !forward.is_empty() {
            let listener = service.listener.as_mut().expect("built with a listener");
            if matches!(listener.kind.as_str(), "rtcp" | "rudp") {
                listener.chain = Some(CLI_CHAIN.into());
            } else {
                service.handler.chain = Some(CLI_CHAIN.into());
            }
        }
        services.push(service);
    }
    if !forward.is_empty() {
        let hops = forward.iter().enumerate().map(|(i, f)| hop(i, f)).collect::<Result<Vec<_>, _>>()?;
        config.chains.push(ChainConfig { name: CLI_CHAIN.into(), hops });
    }
    config.services = services;
    Ok(config)
}

/// `scheme` as gost splits it: `handler+listener`, or one word for both.
fn split_scheme(scheme: &str) -> (String, Option<String>) {
    match scheme.split_once('+') {
        Some((a, b)) => (a.to_string(), Some(b.to_string())),
        None => (scheme.to_string(), None),
    }
}

fn auth(url: &ProxyUrl) -> Option<AuthConfig> {
    url.auth.as_ref().map(|(u, p)| AuthConfig { username: u.clone(), password: p.clone() })
}

fn service(raw: &str) -> Result<ServiceConfig, UrlError> {
    let url = ProxyUrl::parse(raw)?;
    let (mut handler, listener) = split_scheme(&url.scheme);
    let listener = listener.unwrap_or_else(|| {
        if KNOWN_LISTENERS.contains(&handler.as_str()) {
            handler.clone()
        } else {
            "tcp".into()
        }
    });
    if !url.targets.is_empty() && FORWARD_LISTENERS.contains(&listener.as_str()) {
        handler = listener.clone();
    } else if !url.targets.is_empty() && (handler == "tcp" || handler == listener) {
        // A forward target on any other listener (`tcp+tls://:p/host:80`, `mws://:p/host:80`):
        // gost's forward handler on that listener.
        handler = "forward".into();
    }
    let mut params = url.params.clone();
    // Certificate files belong to the listener's TLS, not to the metadata (as gost).
    let take = |p: &mut std::collections::BTreeMap<String, String>, keys: &[&str]| {
        keys.iter().filter_map(|k| p.remove(*k)).last().unwrap_or_default()
    };
    // On kcp, a bare `key` is kcp's pre-shared key (the transport has no TLS).
    let key_keys: &[&str] =
        if listener == "kcp" { &["keyFile", "tls.keyFile"] } else { &["key", "keyFile", "tls.keyFile"] };
    let tls = TlsConfig {
        cert_file: take(&mut params, &["cert", "certFile", "tls.certFile"]),
        key_file: take(&mut params, key_keys),
        ca_file: take(&mut params, &["ca", "caFile", "tls.caFile"]),
        ..Default::default()
    };
    let tls = (!tls.cert_file.is_empty()).then_some(tls);
    let (mut service_md, mut handler_md, mut listener_md) = (Metadata::new(), Metadata::new(), Metadata::new());
    for (k, v) in params {
        let v = MetaValue::Str(v);
        if let Some(k) = k.strip_prefix("service.") {
            service_md.insert(k.into(), v);
        } else if let Some(k) = k.strip_prefix("handler.") {
            handler_md.insert(k.into(), v);
        } else if let Some(k) = k.strip_prefix("listener.") {
            listener_md.insert(k.into(), v);
        } else {
            service_md.insert(k.clone(), v.clone());
            handler_md.insert(k.clone(), v.clone());
            listener_md.insert(k, v);
        }
    }
    let forwarder = (!url.targets.is_empty()).then(|| ForwarderConfig {
        nodes: url
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| ForwardNodeConfig { name: format!("target-{i}"), addr: t.clone() })
            .collect(),
    });
    Ok(ServiceConfig {
        name: String::new(),
        addr: url.host_port(""),
        handler: HandlerConfig { kind: handler, auth: auth(&url), metadata: handler_md, ..Default::default() },
        listener: Some(ListenerConfig { kind: listener, tls, metadata: listener_md, ..Default::default() }),
        forwarder,
        metadata: service_md,
    })
}

fn hop(index: usize, raw: &str) -> Result<HopConfig, UrlError> {
    let url = ProxyUrl::parse(raw)?;
    let (connector, dialer) = split_scheme(&url.scheme);
    let dialer = dialer.unwrap_or_else(|| {
        if KNOWN_LISTENERS.contains(&connector.as_str()) {
            connector.clone()
        } else {
            "tcp".into()
        }
    });
    let mut params = url.params.clone();
    // The hop sees every key but the node's, connector's and dialer's own (gost takes the hop's
    // copy before it moves the TLS keys to the dialer).
    let mut hop_md = Metadata::new();
    for (k, v) in &url.params {
        if k.starts_with("node.") || k.starts_with("connector.") || k.starts_with("dialer.") {
            continue;
        }
        hop_md.insert(k.strip_prefix("hop.").unwrap_or(k).to_string(), MetaValue::Str(v.clone()));
    }
    let take = |p: &mut std::collections::BTreeMap<String, String>, keys: &[&str]| {
        keys.iter().filter_map(|k| p.remove(*k)).last().unwrap_or_default()
    };
    // TLS verification settings go to the dialer (as gost); gost names the node's host as the
    // server name when none is given.
    let key_keys: &[&str] =
        if dialer == "kcp" { &["keyFile", "tls.keyFile"] } else { &["key", "keyFile", "tls.keyFile"] };
    let mut tls = TlsConfig {
        cert_file: take(&mut params, &["cert", "certFile", "tls.certFile"]),
        key_file: take(&mut params, key_keys),
        ca_file: take(&mut params, &["ca", "caFile", "tls.caFile"]),
        server_name: take(&mut params, &["serverName", "tls.servername"]),
        secure: false,
    };
    let secure = take(&mut params, &["secure", "tls.secure"]);
    tls.secure = match secure.as_str() {
        "" | "false" | "0" | "no" => false,
        "true" | "1" | "yes" => true,
        v => return Err(url.param_error("secure", format!("{v:?} is not true/false"))),
    };
    if tls.server_name.is_empty() {
        tls.server_name = url.host.clone();
    }
    let tls = (tls != TlsConfig::default()).then_some(tls);
    let (mut node_md, mut connector_md, mut dialer_md) = (Metadata::new(), Metadata::new(), Metadata::new());
    for (k, v) in params {
        let v = MetaValue::Str(v);
        if k.starts_with("hop.") {
            continue;
        } else if let Some(k) = k.strip_prefix("node.") {
            node_md.insert(k.into(), v);
        } else if let Some(k) = k.strip_prefix("connector.") {
            connector_md.insert(k.into(), v);
        } else if let Some(k) = k.strip_prefix("dialer.") {
            dialer_md.insert(k.into(), v);
        } else {
            node_md.insert(k.clone(), v.clone());
            connector_md.insert(k.clone(), v.clone());
            dialer_md.insert(k, v);
        }
    }
    let node = NodeConfig {
        name: "node-0".into(),
        addr: url.host_port(""),
        connector: ConnectorConfig { kind: connector, auth: auth(&url), metadata: connector_md },
        dialer: Some(DialerConfig { kind: dialer, tls, metadata: dialer_md }),
        metadata: node_md,
    };
    Ok(HopConfig { name: format!("hop-{index}"), nodes: vec![node], metadata: hop_md })
}
