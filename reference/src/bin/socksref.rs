//! `socksref`: the reference SOCKS server, client chains and forwarders, with gost's `-L`/`-F`
//! URL syntax.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use std::sync::Arc;

use socksref::client::{Chain, Connector, Hop, HopTls};
use socksref::config;
use socksref::forward::UdpVia;
use socksref::policy::{DestRules, LocalListeners, Transport};
use socksref::proto::{Address, Version};
use socksref::server::{Credential, ServerConfig, Wiring};
use socksref::transport::TransportSpec;
use socksref::url::{ProxyUrl, UrlError};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

#[derive(Parser, Debug)]
#[command(name = "socksref", version, about = "Reference SOCKS4/4a/5 server, client chains and forwarders")]
#[command(after_help = "\
SERVICES (-L, repeatable):
  socks5://[user:pass@][host]:port[?bind=true&udp=true]   SOCKS5
  socks4://[userid@][host]:port   socks4a://…              SOCKS4 / SOCKS4a (userid@: as gost, only that USERID
                                                           is served, others get 00 5D; a filter, not authentication)
  socks://[host]:port                                      SOCKS4, 4a and 5 on one port
  tcp://[host]:port/target:port                            forward TCP through the chain
  udp://[host]:port/target:port                            forward UDP through the chain (gost's UDP-TUN F3;
                                                           UDP ASSOCIATE when the last -F has relay=udp)
  rtcp://[host]:port/target:port                           remote listen at the last hop (gost's MBIND), to target;
                                                           ?mbind=false: one RFC 1928 BIND per peer instead
  rudp://[host]:port/target:port                           remote UDP listen at the last hop (UDP-TUN bind mode)
An empty host means 127.0.0.1 (for rtcp: any address at the last hop). Query keys for socks services: bind, udp, readTimeout,
connectTimeout, idleTimeout, udpIdleTimeout, bindTimeout, bindAnyPeer, denyPrivate, maxConns,
hideBnd, udpAllowPortChange, udpFullCone, open, notls (as gost, socks5 services select the TLS
methods 80/82 when offered, with a fresh self-signed certificate; notls=true turns that off).

TRANSPORTS (-L socks services and -F hops): HANDLER+TRANSPORT, e.g. socks5+tls, socks5+wss, socks4+ws,
  with TRANSPORT one of tcp, tls, ws, wss, mtls, mws, mwss (gost's; docs/transports.md). Keys: certFile,
  keyFile, caFile, secure, serverName (tls); path (default /ws), host, keepalive, ttl (ws); mux.* (m*).
  Over tls/wss/mtls/mwss the TLS methods 80/82 are off unless notls=false.

CHAIN (-F, repeatable, in order): socks5://[user:pass@]host:port, socks4://…, socks4a://…
Hop keys: timeout, disable4a, notls (as gost, socks5 hops offer 80/82 and accept any certificate;
notls=true offers only 00/02), secure=true&caFile=ca.pem (verify the server certificate).

CONFIG FILES: -C gost.yaml runs a gost v3 YAML (or JSON) config: services[], chains[] (one node
per hop), authers[], log (docs/config.md). -O yaml|json prints the config that -L/-F (or -C)
amount to, as gost -O does, and exits.

EXAMPLES:
  socksref -L socks5://:1080
  socksref -L 'socks5://alice:secret@127.0.0.1:1080?udp=true&bind=true'
  socksref -L tcp://:8080/127.0.0.1:80 -F socks5://127.0.0.1:1080")]
struct Args {
    /// A service to run, as a URL (see SERVICES below).
    #[arg(short = 'L', value_name = "URL", required_unless_present_any = ["config", "v2ray"])]
    listen: Vec<String>,
    /// An upstream proxy hop, as a URL; repeat for a chain, first hop first.
    #[arg(short = 'F', value_name = "URL")]
    forward: Vec<String>,
    /// A gost config file (YAML, or JSON when it starts with `{`) instead of -L/-F.
    #[arg(short = 'C', value_name = "FILE", conflicts_with_all = ["listen", "forward"])]
    config: Option<std::path::PathBuf>,
    /// A V2Ray config (v4 JSON or jsonv5) whose socks/dokodemo-door inbounds and socks/freedom
    /// outbounds are run; what is not translated is listed on stderr.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["listen", "forward", "config"])]
    v2ray: Option<std::path::PathBuf>,
    /// Print the configuration (from -L/-F or -C) as yaml or json, and exit.
    #[arg(short = 'O', value_name = "FORMAT", value_parser = ["yaml", "json"])]
    output: Option<String>,
    /// Log filter: error, warn, info, debug, trace (or a tracing directive); default: the
    /// config file's log.level, else info.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

/// Where the configuration came from, for error messages in the user's own terms.
enum Source {
    Cli,
    /// A config file and its text (to find the line of a key an error is about).
    File(std::path::PathBuf, String),
    /// A V2Ray file, its text, and the JSON path each service and chain was made from.
    V2ray {
        file: std::path::PathBuf,
        text: String,
        services: Vec<String>,
        chains: Vec<String>,
    },
}

impl Source {
    /// One line for a URL error of a planned service or node (`flag` is `-L` or `-F`).
    fn url_error(&self, flag: &str, origin: &config::plan::Origin, e: &UrlError) -> String {
        match self {
            Source::Cli => format!("bad {flag} {e}"),
            Source::File(f, text) => config::error_at(f, text, &origin.path_of(&e.part), &e.message),
            Source::V2ray { .. } => self.v2ray_error(&origin.path, &e.message),
        }
    }

    /// An error about the translated model's `path`, told at the inbound/outbound it came from.
    fn v2ray_error(&self, path: &str, message: &str) -> String {
        let Source::V2ray { file, text, services, chains } = self else { return format!("{path}: {message}") };
        let index = |prefix: &str| path.strip_prefix(prefix)?.split(']').next()?.parse::<usize>().ok();
        let origin = index("services[")
            .and_then(|i| services.get(i))
            .or_else(|| index("chains[").and_then(|i| chains.get(i)))
            .cloned()
            .unwrap_or_else(|| "$".into());
        config::error_at(file, text, &origin, &format!("{message} (as socksref's {path})"))
    }

    fn plan_error(&self, e: &config::plan::PlanError) -> String {
        match self {
            Source::Cli => format!("bad -L/-F: {e}"),
            Source::File(f, text) => config::error_at(f, text, &e.path, &e.message),
            Source::V2ray { .. } => self.v2ray_error(&e.path, &e.message),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    // One model for every spelling: -L/-F URLs map into it as gost's command line does, -C reads it.
    let (model, source) = match (&args.config, &args.v2ray) {
        (_, Some(path)) => {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("socksref: --v2ray {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            };
            match config::v2ray::translate(path, &text) {
                Ok(t) => {
                    // Never silent about what the translation leaves out.
                    for note in &t.notes {
                        eprintln!("socksref: {}: {note}", path.display());
                    }
                    let source = Source::V2ray {
                        file: path.clone(),
                        text,
                        services: t.service_origins,
                        chains: t.chain_origins,
                    };
                    (t.config, source)
                }
                Err(e) => {
                    eprintln!("socksref: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        (Some(path), None) => match std::fs::read_to_string(path) {
            Ok(text) => match config::Config::parse(path, &text) {
                Ok(m) => (m, Source::File(path.clone(), text)),
                Err(e) => {
                    eprintln!("socksref: {e}");
                    return ExitCode::from(2);
                }
            },
            Err(e) => {
                eprintln!("socksref: -C {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
        (None, None) => match config::cli::from_urls(&args.listen, &args.forward) {
            Ok(m) => (m, Source::Cli),
            Err(e) => {
                let flag = if args.listen.iter().any(|l| ProxyUrl::parse(l).is_err()) { "-L" } else { "-F" };
                eprintln!("socksref: bad {flag} {e}");
                return ExitCode::from(2);
            }
        },
    };
    if let Some(format) = &args.output {
        let format = if format == "json" { config::Format::Json } else { config::Format::Yaml };
        return match model.print(format) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("socksref: -O: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let plan = match config::plan::plan(&model) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("socksref: {}", source.plan_error(&e));
            return ExitCode::from(2);
        }
    };
    let level = args.log_level.clone().or(plan.log_level.clone()).unwrap_or_else(|| "info".into());
    if let Err(e) = init_logging(&level) {
        eprintln!("socksref: --log-level: {e}");
        return ExitCode::from(2);
    }
    // Every listener of the process, shared by all services and chains: none of them may be
    // made to connect to another (V-22), and no forwarder or hop may point at one.
    let own = Arc::new(LocalListeners::default());
    let mut chains = Vec::with_capacity(plan.chains.len());
    for planned in &plan.chains {
        let urls: Vec<String> = planned.hops.iter().map(|h| h.url.clone()).collect();
        // Each hop alone first, so an error names the hop it is about.
        for hop in &planned.hops {
            if let Err(e) = parse_chain(std::slice::from_ref(&hop.url)) {
                eprintln!("socksref: {}", source.url_error("-F", hop, &e));
                return ExitCode::from(2);
            }
        }
        let last = planned.hops.last().expect("plan refuses empty chains");
        let built = parse_chain(&urls).and_then(|c| Ok((c, udp_via(&urls)?)));
        match built {
            Ok((mut c, via)) => {
                c.own_listeners = Some(own.clone());
                chains.push((Arc::new(c), via));
            }
            Err(e) => {
                eprintln!("socksref: {}", source.url_error("-F", last, &e));
                return ExitCode::from(2);
            }
        }
    }
    let direct = {
        let mut c = Chain::new(Vec::new());
        c.own_listeners = Some(own.clone());
        Arc::new(c)
    };
    let mut services = Vec::with_capacity(plan.services.len());
    for planned in &plan.services {
        let (chain, via) = planned.chain.map_or((&direct, UdpVia::Tun), |i| (&chains[i].0, chains[i].1));
        match Service::from_url(&planned.url.url, chain, via, &own) {
            Ok(mut service) => {
                if let Service::Socks { config, .. } = &mut service {
                    for (u, p) in &planned.extra_users {
                        // As for the URL's user: a bare name on a SOCKS4-only service is a USERID.
                        if !config.socks5 && p.is_empty() {
                            config.socks4_userids.push(u.as_bytes().to_vec());
                        } else {
                            config.users.push(Credential { user: u.as_bytes().to_vec(), pass: p.as_bytes().to_vec() });
                        }
                    }
                }
                services.push(service);
            }
            Err(e) => {
                eprintln!("socksref: {}", source.url_error("-L", &planned.url, &e));
                return ExitCode::from(2);
            }
        }
    }
    let chains: Vec<Arc<Chain>> = chains.into_iter().map(|(c, _)| c).collect();
    let nofile = raise_fd_limit();
    let pipes = socksref::policy::splice_pipe_budget(nofile);
    socksref::relay::set_splice_pipe_budget(usize::try_from(pipes).unwrap_or(usize::MAX));
    // The default connection cap follows the descriptor budget, so the cap is reached before
    // EMFILE is (an explicit maxConns is the operator's choice and kept).
    let socks_services = services.iter().filter(|s| matches!(s, Service::Socks { .. })).count();
    for service in &mut services {
        if let Service::Socks { url, config, max_conns_given, .. } = service {
            if !*max_conns_given {
                config.max_connections = socksref::policy::max_connections_for_fds(nofile, socks_services);
            }
            tracing::info!(
                service = %url,
                nofile,
                max_conns = config.max_connections,
                max_handshakes = config.handshake_cap(),
                fds_per_tunnel = socksref::policy::FDS_PER_TUNNEL,
                splice_pipes = pipes,
                "connection caps"
            );
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("socksref: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(services, own, chains)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("socksref: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Every tunnel costs two descriptors (splice pipes come from a shared pool); the soft limit
/// (often 1024) would cap a busy server long before memory does, so raise it to the hard limit.
/// Returns the soft limit in force afterwards.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024; // the common default, when the limit cannot even be read
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

fn init_logging(level: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    Ok(())
}

/// Query keys a node (`-F`) understands.
const NODE_KEYS: &[&str] =
    &["disable4a", "timeout", "notls", "secure", "caFile", "relay", "udpBufferSize", "udp.bufferSize"];

/// How `udp://` forwarders cross the chain: gost's UDP-TUN unless the last hop says `relay=udp`
/// (docs/gost.md §4.6, §9.1).
fn udp_via(urls: &[String]) -> Result<UdpVia, UrlError> {
    let Some(last) = urls.last() else { return Ok(UdpVia::Tun) };
    let url = ProxyUrl::parse(last)?;
    match url.params.get("relay").map(String::as_str) {
        None => Ok(UdpVia::Tun),
        Some("udp") => Ok(UdpVia::Associate),
        Some(v) => Err(url.param_error("relay", format!("{v:?}: only relay=udp is known"))),
    }
}

/// Builds the upstream chain from the `-F` URLs, first hop first.
fn parse_chain(urls: &[String]) -> Result<Chain, UrlError> {
    let mut hops = Vec::with_capacity(urls.len());
    let mut handshake_timeout = None;
    for (n, raw) in urls.iter().enumerate() {
        let (url, transport) = socksref::transport::split_url(ProxyUrl::parse(raw)?)?;
        // gost's pass-through connectors `forward` and `tcp` (`forward+tls://host:port`,
        // `tcp+mws://…`): the transport alone, to a server whose forward handler has the target.
        // (A bare `tls://host:port` hop is gost's HTTP connector, which socksref does not speak.)
        if matches!(url.scheme.as_str(), "forward" | "tcp") && n + 1 != urls.len() {
            return Err(UrlError {
                url: raw.clone(),
                part: "scheme".into(),
                message: "a forward node can only be the last -F hop".into(),
            });
        }
        if let Some(k) = url.params.keys().find(|k| !NODE_KEYS.contains(&k.as_str())) {
            return Err(url.param_error(k, format!("unknown key (known: {})", NODE_KEYS.join(", "))));
        }
        // As gost's connectors: `socks4` speaks 4a unless `disable4a` (then it resolves locally).
        let connector = match url.scheme.as_str() {
            "socks5" | "socks5h" | "socks" => Connector::Socks(Version::V5),
            "socks4" if url.bool_param("disable4a", false)? => Connector::Socks(Version::V4),
            "socks4" | "socks4a" => Connector::Socks(Version::V4a),
            "forward" | "tcp" => Connector::Forward,
            other => {
                return Err(UrlError {
                    url: url.to_string(),
                    part: "scheme".into(),
                    message: format!("unknown hop {other:?} (socks5, socks4, socks4a, forward)"),
                })
            }
        };
        if url.host.is_empty() {
            return Err(UrlError { url: url.to_string(), part: "host".into(), message: "a hop needs a host".into() });
        }
        let proxy = Address::parse(&url.host_port("")).map_err(|e| UrlError {
            url: url.to_string(),
            part: "host".into(),
            message: e.to_string(),
        })?;
        if transport.kind.is_udp() && !hops.is_empty() {
            return Err(UrlError {
                url: raw.clone(),
                part: "scheme".into(),
                message: "kcp runs over UDP: it can only be the first -F hop".into(),
            });
        }
        let mut hop = match connector {
            Connector::Socks(version) => Hop::new(version, proxy),
            Connector::Forward => Hop::forward(proxy),
        };
        hop.transport = Arc::new(
            socksref::transport::Dialer::new(transport).map_err(|e| url.param_error("caFile", e.to_string()))?,
        );
        if let Some((u, p)) = &url.auth {
            hop = hop.with_credentials(u.as_bytes().to_vec(), p.as_bytes().to_vec());
        }
        if let Some(t) = url.duration_param("timeout")? {
            handshake_timeout = Some(t);
        }
        // gost's connector reads relayed datagrams into a buffer of this size; ours always reads
        // up to the UDP maximum, so any valid size relays the same (datagrams up to that size).
        for key in ["udpBufferSize", "udp.bufferSize"] {
            if let Some(v) = url.params.get(key) {
                v.parse::<u32>()
                    .ok()
                    .filter(|n| (1..=65_535).contains(n))
                    .ok_or_else(|| url.param_error(key, "1..65535"))?;
            }
        }
        // Like gost's connector (docs/gost.md §3.2): offer 80/82 unless `notls=true`,
        // and accept any certificate unless `secure=true` (then `caFile` holds the roots; gost
        // puts `secure` on the dialer, we apply it to the method TLS, the only TLS we have).
        if connector == Connector::Socks(Version::V5) && !url.bool_param("notls", false)? {
            hop.tls = if url.bool_param("secure", false)? {
                let ca = url.params.get("caFile").ok_or_else(|| url.param_error("secure", "needs caFile=<pem>"))?;
                HopTls::Verify(ca.into())
            } else {
                HopTls::AcceptAny
            };
        }
        hops.push(hop);
    }
    let mut chain = Chain::new(hops);
    if let Some(t) = handshake_timeout {
        chain.handshake_timeout = t;
    }
    Ok(chain)
}

/// One `-L` service, validated before anything is bound.
#[derive(Debug)]
enum Service {
    Socks { url: ProxyUrl, config: Box<ServerConfig>, max_conns_given: bool, transport: Box<TransportSpec> },
    Forward { url: ProxyUrl, target: Address, chain: Arc<Chain>, via: UdpVia, transport: Box<TransportSpec> },
}

/// Query keys a forwarder understands (`mbind` only for `rtcp`; `keepalive` only `true`).
const FORWARD_KEYS: &[&str] = &["ttl", "mbind", "keepalive"];

/// Query keys a socks service understands (`notls`: never select gost's TLS methods 80/82).
const SOCKS_KEYS: &[&str] = &[
    "bind",
    "udp",
    "readTimeout",
    "connectTimeout",
    "idleTimeout",
    "udpIdleTimeout",
    "bindTimeout",
    "bindAnyPeer",
    "denyPrivate",
    "maxConns",
    "hideBnd",
    "udpAllowPortChange",
    "udpFullCone",
    "open",
    "notls",
    "udpBufferSize",
    "udp.bufferSize",
    "maxHandshakes",
    "allow",
    "deny",
    "udpAllowForeignClientAddr",
];

impl Service {
    fn from_url(s: &str, chain: &Arc<Chain>, via: UdpVia, own: &Arc<LocalListeners>) -> Result<Self, UrlError> {
        let (mut url, transport) = socksref::transport::split_url(forward_alias(ProxyUrl::parse(s)?))?;
        if url.scheme == "forward" {
            url.scheme = "tcp".into();
        }
        if matches!(url.scheme.as_str(), "tcp" | "udp" | "rtcp" | "rudp") {
            // gost runs its forward handler on any listener (`tcp+tls://:p/target`); the UDP and
            // remote forwarders listen on a plain socket or at the last hop.
            if url.scheme != "tcp" && transport.kind != socksref::transport::Kind::Tcp {
                return Err(UrlError {
                    url: url.to_string(),
                    part: "scheme".into(),
                    message: format!("a {} forwarder takes no transport (+{})", url.scheme, transport.kind),
                });
            }
            return Self::forward(url, chain, via, transport);
        }
        let (socks4, socks5) = match url.scheme.as_str() {
            "socks5" | "socks5h" => (false, true),
            "socks4" | "socks4a" => (true, false),
            "socks" => (true, true),
            other => {
                return Err(UrlError {
                    url: url.to_string(),
                    part: "scheme".into(),
                    message: format!(
                        "unknown service {other:?} (socks5, socks4, socks4a, socks, tcp, udp, rtcp, rudp)"
                    ),
                })
            }
        };
        if let Some(k) = url.params.keys().find(|k| !SOCKS_KEYS.contains(&k.as_str())) {
            return Err(url.param_error(k, format!("unknown key (known: {})", SOCKS_KEYS.join(", "))));
        }
        if !url.targets.is_empty() {
            return Err(UrlError {
                url: url.to_string(),
                part: "path".into(),
                message: "a socks service takes no forward target".into(),
            });
        }
        let mut c = ServerConfig {
            socks4,
            socks5,
            wiring: Wiring { local_listeners: own.clone(), ..Wiring::default() },
            ..Default::default()
        };
        match &url.auth {
            // `socks4://admin@…`: as gost, serve only SOCKS4 requests whose USERID is `admin` and
            // answer the rest 00 5D. (A password cannot be checked over SOCKS4; with one the
            // listener refuses SOCKS4 with 00 5B, R-66.)
            Some((u, p)) if !socks5 && p.is_empty() => c.socks4_userids.push(u.as_bytes().to_vec()),
            Some((u, p)) => c.users.push(Credential { user: u.as_bytes().to_vec(), pass: p.as_bytes().to_vec() }),
            None => {}
        }
        c.allow_bind = url.bool_param("bind", false)?;
        c.allow_udp = url.bool_param("udp", false)?;
        c.bind_any_peer = url.bool_param("bindAnyPeer", false)?;
        c.deny_private = url.bool_param("denyPrivate", false)?;
        c.hide_bnd = url.bool_param("hideBnd", false)?;
        c.udp_allow_port_change = url.bool_param("udpAllowPortChange", false)?;
        c.udp_full_cone = url.bool_param("udpFullCone", false)?;
        c.udp_allow_foreign_client_addr = url.bool_param("udpAllowForeignClientAddr", false)?;
        let rules = |key: &str| -> Result<Vec<_>, UrlError> {
            url.params
                .get(key)
                .map(|v| DestRules::parse_list(v).map_err(|m| url.param_error(key, m)))
                .unwrap_or(Ok(vec![]))
        };
        c.rules = DestRules { allow: rules("allow")?, deny: rules("deny")? };
        for key in ["udpBufferSize", "udp.bufferSize"] {
            if let Some(v) = url.params.get(key) {
                c.udp_buffer_size = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=65_535).contains(n))
                    .ok_or_else(|| url.param_error(key, "1..65535"))?;
            }
        }
        // gost's default (docs/gost.md §3.4.3): a fresh self-signed certificate, and the
        // TLS methods selected when offered, unless `notls=true`.
        if socks5 && !url.bool_param("notls", false)? {
            c.wiring.tls = Some(socksref::tls::server_config().map_err(|e| url.param_error("notls", e.to_string()))?);
        }
        let set = |d: &mut Duration, key: &str| -> Result<(), UrlError> {
            if let Some(v) = url.duration_param(key)? {
                *d = v;
            }
            Ok(())
        };
        set(&mut c.handshake_timeout, "readTimeout")?;
        set(&mut c.connect_timeout, "connectTimeout")?;
        set(&mut c.idle_timeout, "idleTimeout")?;
        set(&mut c.udp_idle_timeout, "udpIdleTimeout")?;
        set(&mut c.bind_accept_timeout, "bindTimeout")?;
        let max_conns_given = url.params.contains_key("maxConns");
        if let Some(v) = url.params.get("maxConns") {
            c.max_connections = v
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| url.param_error("maxConns", "not a positive number"))?;
        }
        if let Some(v) = url.params.get("maxHandshakes") {
            c.max_handshakes = Some(
                v.parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| url.param_error("maxHandshakes", "not a positive number"))?,
            );
        }
        // an exposed listener needs authentication, unless the operator says it is meant
        // to be open.
        let open = url.bool_param("open", false)?;
        let host_is_loopback = url.host.is_empty()
            || url.host == "localhost"
            || url.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !host_is_loopback && c.users.is_empty() && !open {
            return Err(UrlError {
                url: url.to_string(),
                part: "host".into(),
                message: "refusing an unauthenticated proxy on a non-loopback address; add user:pass@ or ?open=true"
                    .into(),
            });
        }
        if !chain.hops.is_empty() {
            c.wiring.upstream = Some(chain.clone());
        }
        Ok(Service::Socks { url, config: Box::new(c), max_conns_given, transport: Box::new(transport) })
    }

    fn forward(url: ProxyUrl, chain: &Arc<Chain>, via: UdpVia, transport: TransportSpec) -> Result<Self, UrlError> {
        if let Some(k) = url.params.keys().find(|k| !FORWARD_KEYS.contains(&k.as_str())) {
            return Err(url.param_error(k, format!("unknown key (known: {})", FORWARD_KEYS.join(", "))));
        }
        // gost's udp listener ends a session after one reply unless `keepalive=true`; ours keeps
        // every session until `ttl` of silence, which is gost's keepalive behaviour.
        if !url.bool_param("keepalive", true)? {
            return Err(url.param_error("keepalive", "only keepalive=true (sessions last until ttl) is supported"));
        }
        if url.scheme != "rtcp" && url.params.contains_key("mbind") {
            return Err(url.param_error("mbind", "only rtcp:// chooses between MBIND and BIND"));
        }
        let bad = |part: &str, message: String| UrlError { url: url.to_string(), part: part.into(), message };
        let target = match url.targets.as_slice() {
            [one] => Address::parse(one).map_err(|e| bad("target", e.to_string()))?,
            // Through a forward node the far server has the target (gost: `-L tcp://:8080
            // -F forward+tls://host:443`); the address stands in and is never sent.
            [] if url.scheme == "tcp" && chain.ends_in_forward() => Address::UNSPECIFIED,
            [] => return Err(bad("path", "a forwarder needs a target: tcp://:8080/host:80".into())),
            _ => return Err(bad("path", "only one target is supported".into())),
        };
        if matches!(url.scheme.as_str(), "rtcp" | "rudp") && chain.hops.is_empty() {
            return Err(bad("scheme", format!("{} listens at the last hop of the chain: add -F", url.scheme)));
        }
        if url.scheme != "tcp" && chain.ends_in_forward() {
            // UDP-TUN, UDP ASSOCIATE, BIND and MBIND are SOCKS requests: a forward node sends none.
            return Err(bad("scheme", format!("{} needs a SOCKS5 last hop, not a forward node", url.scheme)));
        }
        Ok(Service::Forward { url, target, chain: chain.clone(), via, transport: Box::new(transport) })
    }
}

/// Opens the listener of a `-L` service on its transport: a UDP socket for kcp (as gost's kcp
/// listener), else a TCP socket with the transport's layers. Recorded in `own` now (the server
/// records it again while it runs) so the start-up loop check sees every listener.
async fn listen(
    url: &ProxyUrl,
    transport: &TransportSpec,
    own: &LocalListeners,
) -> anyhow::Result<socksref::transport::Listener> {
    let addr = url.host_port("127.0.0.1");
    if transport.kind.is_udp() {
        let l = socksref::transport::Listener::bind(&addr, transport)
            .await
            .with_context(|| format!("cannot listen on {addr} (UDP) for {url}"))?;
        own.add(Transport::Udp, l.local_addr());
        return Ok(l);
    }
    let listener = TcpListener::bind(&addr).await.with_context(|| format!("cannot listen on {addr} for {url}"))?;
    own.add(Transport::Tcp, listener.local_addr()?);
    socksref::transport::Listener::new(listener, transport)
        .with_context(|| format!("{url}: {} transport", transport.kind))
}

/// gost's shorthand for a forwarder on a transport: a scheme that is only a transport name, with a
/// forward target (`tls://:8443/host:80`, `mws://…/host:80`), means `tcp+tls://…` (gost's parser
/// turns it into the forward handler on that listener). Without a target it is left alone, and
/// refused as an unknown service.
fn forward_alias(mut url: ProxyUrl) -> ProxyUrl {
    let transport_only =
        socksref::transport::Kind::from_name(&url.scheme).is_some_and(|k| k != socksref::transport::Kind::Tcp);
    if transport_only && !url.targets.is_empty() {
        url.scheme = format!("tcp+{}", url.scheme);
    }
    url
}

async fn run(services: Vec<Service>, own: Arc<LocalListeners>, chains: Vec<Arc<Chain>>) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    // Forwarders dialling their target straight from here, checked once all listeners are up.
    let mut direct_targets = Vec::new();
    for service in services {
        let mut stop = stop_rx.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        match service {
            Service::Socks { url, config, transport, .. } => {
                let listener = listen(&url, &transport, &own).await?;
                tasks.spawn(async move { socksref::server::serve_on(listener, *config, shutdown).await });
            }
            Service::Forward { url, target, chain, via, transport } => {
                let addr = url.host_port("127.0.0.1");
                match url.scheme.as_str() {
                    "tcp" => {
                        let l = listen(&url, &transport, &own).await?;
                        if chain.hops.is_empty() {
                            direct_targets.push((url.clone(), Transport::Tcp, target.clone()));
                        }
                        tasks.spawn(socksref::forward::tcp(l, target, chain, shutdown));
                    }
                    "udp" => {
                        let s =
                            UdpSocket::bind(&addr).await.with_context(|| format!("cannot bind {addr} for {url}"))?;
                        own.add(Transport::Udp, s.local_addr()?);
                        if chain.hops.is_empty() {
                            direct_targets.push((url.clone(), Transport::Udp, target.clone()));
                        }
                        let idle = url.duration_param("ttl")?.unwrap_or(Duration::from_secs(60));
                        tasks.spawn(socksref::forward::udp_via(s, target, chain, idle, via, shutdown));
                    }
                    "rudp" => {
                        // The host:port is where the last hop listens (UDP-TUN bind mode).
                        let listen = Address::parse(&url.host_port("0.0.0.0"))?;
                        let idle = url.duration_param("ttl")?.unwrap_or(Duration::from_secs(60));
                        tasks.spawn(socksref::forward::rudp(listen, target, chain, idle, shutdown));
                    }
                    _ => {
                        // rtcp: the host:port is where the last hop listens; empty host = any.
                        let listen = Address::parse(&url.host_port("0.0.0.0"))?;
                        if url.bool_param("mbind", true)? {
                            // MBIND, as gost's rtcp (one smux session for every peer).
                            tasks.spawn(socksref::forward::rtcp_mux(listen, target, chain, shutdown));
                        } else {
                            // `mbind=false`: one RFC 1928 BIND per peer, for proxies without
                            // gost's extensions.
                            tasks.spawn(socksref::forward::rtcp(listen, target, chain, shutdown));
                        }
                    }
                }
            }
        }
    }
    // Loops knowable at start (issue: a tcp:// forwarder aimed at itself used up every descriptor
    // within milliseconds): a forwarder whose direct target, or a chain whose first hop, is one
    // of our own listeners. Names are resolved for the check; the chain checks again per
    // connection for what only resolves later.
    let first_hop = chains
        .iter()
        .filter_map(|c| c.hops.first())
        .map(|h| (Transport::Tcp, h.proxy.clone(), "the first -F hop".to_string()));
    let forwarders = direct_targets.into_iter().map(|(url, t, target)| (t, target, format!("the target of {url}")));
    for (transport, target, what) in first_hop.chain(forwarders) {
        let resolved = match (&target.host, target.socket_addr()) {
            (_, Some(sa)) => vec![sa],
            (socksref::proto::Host::Domain(name), None) => {
                let host = format!("{}:{}", String::from_utf8_lossy(name), target.port);
                let found: Option<Vec<_>> = tokio::net::lookup_host(host).await.ok().map(|a| a.collect());
                match found {
                    Some(addrs) => addrs,
                    None => continue, // unknowable now; refused per connection if it ever resolves to us
                }
            }
            _ => continue,
        };
        if resolved.iter().any(|a| own.contains(transport, *a)) {
            let _ = stop_tx.send(true);
            anyhow::bail!("{what} ({target}) is one of this process's own listeners: that is a loop");
        }
    }
    let signal = shutdown_signal();
    tokio::pin!(signal);
    tokio::select! {
        () = &mut signal => {
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
            while tasks.join_next().await.is_some() {}
            Ok(())
        }
        Some(r) = tasks.join_next() => {
            let _ = stop_tx.send(true);
            r.context("service task panicked")?.context("service failed")?;
            anyhow::bail!("a service stopped unexpectedly")
        }
    }
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
