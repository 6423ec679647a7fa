//! One configuration model for every way `socksref` is configured.
//!
//! The model is gost v3's own (docs/config.md): `services[]` with a handler, a listener and an
//! optional forwarder, `chains[]` of `hops[]` of `nodes[]`, `authers[]` and `log`. Three spellings
//! produce it:
//! - `-L`/`-F` URLs ([`cli::from_urls`]), mapped the way gost's command line maps them, so
//!   `socksref -L … -O yaml` prints what `gost -L … -O yaml` prints for the same flags;
//! - a gost YAML or JSON file (`-C`, [`load`]);
//! - a V2Ray JSON file (`--v2ray`, [`v2ray::load`]), translated into the same model.
//!
//! [`plan::plan`] then turns the model into the service and node URLs the binary runs, so each
//! spelling ends in the same code path.

pub mod cli;
pub mod locate;
pub mod plan;
pub mod v2ray;

pub mod yaml;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The handler types a `services[].handler.type` may name.
pub const HANDLER_TYPES: &[&str] = &["socks5", "socks4", "socks4a", "socks", "tcp", "forward", "udp", "rtcp", "rudp"];
/// The listener types a `services[].listener.type` may name. Transports other than plain TCP/UDP
/// are added here when the binary can run them.
pub const LISTENER_TYPES: &[&str] = &["tcp", "udp", "rtcp", "rudp", "tls", "ws", "wss", "mtls", "mws", "mwss", "kcp"];
/// The connector types a `chains[].hops[].nodes[].connector.type` may name.
pub const CONNECTOR_TYPES: &[&str] = &["socks5", "socks4", "socks4a", "socks", "forward", "tcp"];
/// The dialer types a node's `dialer.type` may name (see [`LISTENER_TYPES`]).
pub const DIALER_TYPES: &[&str] = &["tcp", "tls", "ws", "wss", "mtls", "mws", "mwss", "kcp"];

/// A whole configuration: what `-C` reads and `-O` prints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The listening services.
    pub services: Vec<ServiceConfig>,
    /// Named chains of upstream proxies, referenced by `handler.chain` / `listener.chain`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chains: Vec<ChainConfig>,
    /// Named credential sets, referenced by `handler.auther` / `handler.authers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authers: Vec<AutherConfig>,
    /// Logging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<LogConfig>,
}

/// One listening service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// A name, unique in the file (gost's command line numbers them `service-N`).
    pub name: String,
    /// `host:port` to listen on; an empty host means 127.0.0.1 here (gost: all interfaces).
    pub addr: String,
    /// What is spoken on accepted connections.
    pub handler: HandlerConfig,
    /// How connections are accepted; absent means plain TCP, as in gost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Option<ListenerConfig>,
    /// Forward targets, for the `tcp`/`udp`/`rtcp`/`rudp` handlers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarder: Option<ForwarderConfig>,
    /// Service metadata; one namespace with the handler's and listener's here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: Metadata,
}

/// `services[].handler`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerConfig {
    /// One of [`HANDLER_TYPES`].
    #[serde(rename = "type", deserialize_with = "de_handler_type")]
    pub kind: String,
    /// The chain outbound connections go through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    /// The one accepted user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
    /// A named set of accepted users from `authers[]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auther: Option<String>,
    /// Several named sets of accepted users.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authers: Vec<String>,
    /// Handler settings (`udp`, `bind`, `notls`, `readTimeout`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: Metadata,
}

/// `services[].listener`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// One of [`LISTENER_TYPES`].
    #[serde(rename = "type", deserialize_with = "de_listener_type")]
    pub kind: String,
    /// The chain at whose last hop `rtcp`/`rudp` listen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    /// Certificate files for TLS listeners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Listener settings (`ttl`, `keepalive`, transport keys).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: Metadata,
}

/// `services[].forwarder`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwarderConfig {
    /// The targets (socksref forwards to exactly one).
    pub nodes: Vec<ForwardNodeConfig>,
}

/// One forward target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardNodeConfig {
    /// A name (gost's command line numbers them `target-N`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `host:port`.
    pub addr: String,
}

/// `chains[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// The name services refer to.
    pub name: String,
    /// The hops, first hop first.
    pub hops: Vec<HopConfig>,
}

/// `chains[].hops[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HopConfig {
    /// A name (gost's command line numbers them `hop-N`).
    pub name: String,
    /// The proxies of this hop (socksref uses exactly one per hop).
    pub nodes: Vec<NodeConfig>,
    /// Hop settings; one namespace with the node's, connector's and dialer's here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: Metadata,
}

/// `chains[].hops[].nodes[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// A name (gost's command line numbers them `node-N`).
    pub name: String,
    /// The proxy's `host:port`.
    pub addr: String,
    /// The protocol spoken to the proxy.
    pub connector: ConnectorConfig,
    /// How the proxy is reached; absent means plain TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dialer: Option<DialerConfig>,
    /// Node settings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: Metadata,
}

/// A node's `connector`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    /// One of [`CONNECTOR_TYPES`].
    #[serde(rename = "type", deserialize_with = "de_connector_type")]
    pub kind: String,
    /// Credentials offered to the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
    /// Connector settings (`notls`, `relay`, `timeout`, `disable4a`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: Metadata,
}

/// A node's `dialer`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialerConfig {
    /// One of [`DIALER_TYPES`].
    #[serde(rename = "type", deserialize_with = "de_dialer_type")]
    pub kind: String,
    /// TLS verification settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Dialer settings (transport keys).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: Metadata,
}

/// A user name and password.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// User name (for SOCKS4, the USERID).
    pub username: String,
    /// Password; empty for a SOCKS4 USERID.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password: String,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password stays out of logs and error output.
        f.debug_struct("AuthConfig").field("username", &self.username).finish_non_exhaustive()
    }
}

/// `authers[]`: a named list of users.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutherConfig {
    /// The name handlers refer to.
    pub name: String,
    /// The users.
    pub auths: Vec<AuthConfig>,
}

/// TLS file and verification settings (of a listener or a dialer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsConfig {
    /// Certificate (listener).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cert_file: String,
    /// Private key (listener).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_file: String,
    /// Trusted roots (dialer with `secure`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_file: String,
    /// Verify the server certificate (dialer).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secure: bool,
    /// The name to verify (dialer); gost's command line sets the node's host.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub server_name: String,
}

/// `log`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `trace`, `debug`, `info`, `warn`, `error` (gost's `fatal` reads as `error`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub level: String,
    /// Only `text` (the default) is supported.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub format: String,
    /// Only `stderr` (the default) is supported.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output: String,
}

/// A metadata map: string keys, scalar values.
pub type Metadata = BTreeMap<String, MetaValue>;

/// A metadata value. gost's command line gives strings (`bind: "true"`); files often give real
/// booleans and numbers. Both read the same (`true` and `"true"` enable a flag).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum MetaValue {
    /// `true` / `false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A number with a fraction.
    Float(f64),
    /// Anything else, e.g. `10s` or `udp`.
    Str(String),
}

impl fmt::Display for MetaValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaValue::Bool(b) => write!(f, "{b}"),
            MetaValue::Int(n) => write!(f, "{n}"),
            MetaValue::Float(x) => write!(f, "{x}"),
            MetaValue::Str(s) => f.write_str(s),
        }
    }
}

impl<'de> Deserialize<'de> for MetaValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = MetaValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_bool<E>(self, v: bool) -> Result<MetaValue, E> {
                Ok(MetaValue::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<MetaValue, E> {
                Ok(MetaValue::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<MetaValue, E> {
                i64::try_from(v).map(MetaValue::Int).map_err(|_| E::custom(format!("{v} is too large")))
            }
            fn visit_f64<E>(self, v: f64) -> Result<MetaValue, E> {
                Ok(MetaValue::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<MetaValue, E> {
                Ok(MetaValue::Str(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

fn de_kind<'de, D: serde::Deserializer<'de>>(d: D, what: &str, known: &[&str]) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if known.contains(&s.as_str()) {
        Ok(s)
    } else {
        Err(serde::de::Error::custom(format!(
            "{what} type {s:?} is not supported by socksref (supported: {})",
            known.join(", ")
        )))
    }
}

fn de_handler_type<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    de_kind(d, "handler", HANDLER_TYPES)
}
fn de_listener_type<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    de_kind(d, "listener", LISTENER_TYPES)
}
fn de_connector_type<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    de_kind(d, "connector", CONNECTOR_TYPES)
}
fn de_dialer_type<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    de_kind(d, "dialer", DIALER_TYPES)
}

/// A config file that cannot be used: one line naming the file, the place and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{where_}: {message}", file.display())]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// `line:column` (YAML, JSON syntax) or a path such as `services[0].handler.metadata.bnd`.
    pub where_: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error about `file` at `where_`.
    pub fn new(file: &Path, where_: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { file: file.to_path_buf(), where_: where_.into(), message: message.into() }
    }
}

/// Output formats of `-O`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML, as `gost -O yaml`.
    Yaml,
    /// JSON (two-space indent), as `gost -O json`.
    Json,
}

impl Config {
    /// Parses a gost config, YAML or JSON: like gost, a file whose first non-blank character is
    /// `{` is read as JSON (YAML would accept most of it too, but JSON errors read better).
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| {
                let mut message = e.to_string();
                if let Some(i) = message.find(" at line ") {
                    message.truncate(i);
                }
                ConfigError::new(file, format!("{}:{}", e.line(), e.column()), message)
            })
        } else {
            yaml::from_str(text).map_err(|e| ConfigError::new(file, format!("{}:{}", e.line, e.column), e.message))
        }
    }

    /// Prints the config in `format`.
    pub fn print(&self, format: Format) -> Result<String, String> {
        match format {
            Format::Yaml => yaml::to_string(self),
            Format::Json => serde_json::to_string_pretty(self).map(|s| s + "\n").map_err(|e| e.to_string()),
        }
    }
}

/// One line for an error found after parsing, at model `path`: `FILE:LINE:COL: path: message`
/// when the path can be found in `text`, else `FILE: path: message`.
pub fn error_at(file: &Path, text: &str, path: &str, message: &str) -> String {
    match locate::locate(text, path) {
        Some((line, column)) => format!("{}:{line}:{column}: {path}: {message}", file.display()),
        None => format!("{}: {path}: {message}", file.display()),
    }
}

/// Reads and parses a gost config file (`-C`).
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError::new(file, "0:0", e.to_string()))?;
    Config::parse(file, &text)
}
