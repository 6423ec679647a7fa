//! The in-process reference server (`socksref`) as a server under test.
//!
//! Each instance gets its own listener on 127.0.0.1:0 and configuration, so scenarios that need
//! "UDP disabled" and "UDP enabled" can run side by side.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use socksref::server::{Credential, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::runner::{Claims, Sut};
use crate::scenario::{Command, Extension, Feature, Method, Needs, Version};

/// The credentials reference instances with authentication accept.
pub const USER: &str = "alice";
/// See [`USER`].
pub const PASS: &str = "s3cret";

/// How to configure one reference instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefOptions {
    /// Require RFC 1929 with [`USER`]/[`PASS`].
    pub auth: bool,
    /// Enable BIND.
    pub bind: bool,
    /// Enable UDP ASSOCIATE.
    pub udp: bool,
    /// Serve SOCKS4/4a.
    pub socks4: bool,
    /// Handshake deadline. Short, so scenarios that wait for it keep the suite fast.
    pub handshake_timeout_ms: u64,
    /// Outbound connect deadline (the blackhole fixture waits for it).
    pub connect_timeout_ms: u64,
    /// BIND accept deadline.
    pub bind_accept_timeout_ms: u64,
}

impl Default for RefOptions {
    fn default() -> Self {
        RefOptions {
            auth: false,
            bind: false,
            udp: false,
            socks4: true,
            handshake_timeout_ms: 800,
            connect_timeout_ms: 800,
            bind_accept_timeout_ms: 800,
        }
    }
}

impl RefOptions {
    /// The smallest configuration a scenario applies to: auth, BIND and UDP on only if it needs them.
    pub fn for_needs(n: &Needs) -> RefOptions {
        RefOptions {
            auth: n.method == Method::Userpass,
            bind: n.command == Command::Bind,
            udp: n.command == Command::Udp,
            ..RefOptions::default()
        }
    }

    /// What an instance with these options claims.
    pub fn claims(&self) -> Claims {
        let mut versions: BTreeSet<Version> = [Version::Socks5].into();
        if self.socks4 {
            versions.extend([Version::Socks4, Version::Socks4a]);
        }
        let mut commands: BTreeSet<Command> = [Command::Connect].into();
        if self.bind {
            commands.insert(Command::Bind);
        }
        if self.udp {
            commands.insert(Command::Udp);
        }
        let mut disabled = BTreeSet::new();
        for (off, f) in [(!self.bind, Feature::Bind), (!self.udp, Feature::Udp)] {
            if off {
                disabled.insert(f);
            }
        }
        if !self.socks4 {
            disabled.extend([Feature::Socks4, Feature::Socks4a]);
        }
        Claims {
            versions,
            commands,
            disabled,
            method: if self.auth { Method::Userpass } else { Method::Noauth },
            handshake_timeout_ms: Some(self.handshake_timeout_ms),
            connect_timeout_ms: Some(self.connect_timeout_ms),
            bind_timeout_ms: Some(self.bind_accept_timeout_ms),
            udp_idle_timeout_ms: None,
            ipv6: true,
            domain: true,
            // The reference implements gost's extensions (F2/F3 under bind/udp, TLS methods).
            extensions: [Extension::Gost].into(),
        }
    }

    fn config(&self) -> ServerConfig {
        ServerConfig {
            users: if self.auth {
                vec![Credential { user: USER.as_bytes().to_vec(), pass: PASS.as_bytes().to_vec() }]
            } else {
                Vec::new()
            },
            socks4: self.socks4,
            socks5: true,
            allow_bind: self.bind,
            allow_udp: self.udp,
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            bind_accept_timeout: Duration::from_millis(self.bind_accept_timeout_ms),
            ..ServerConfig::default()
        }
    }
}

/// A running in-process reference server; stops when dropped.
pub struct RunningRef {
    /// The server under test it provides.
    pub sut: Sut,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Drop for RunningRef {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        // The serve future stops accepting on shutdown and aborts its connections; abort as well
        // in case the runtime is being torn down.
        self.task.abort();
    }
}

/// Starts a reference server on 127.0.0.1:0.
pub async fn start(opts: &RefOptions, instance: Option<String>) -> std::io::Result<RunningRef> {
    start_on(opts, instance, &socksref::transport::TransportSpec::tcp()).await
}

/// Starts a reference server on 127.0.0.1:0 behind `transport` (tls, ws, …); its [`Sut`]
/// dials through the same transport, so the catalogue plays inside it.
pub async fn start_on(
    opts: &RefOptions,
    instance: Option<String>,
    transport: &socksref::transport::TransportSpec,
) -> std::io::Result<RunningRef> {
    // kcp binds its own (UDP) socket; the others run on a TCP listener.
    let listener = if transport.kind.is_udp() {
        socksref::transport::Listener::bind("127.0.0.1:0", transport).await?
    } else {
        socksref::transport::Listener::new(TcpListener::bind("127.0.0.1:0").await?, transport)?
    };
    let addr: SocketAddr = listener.local_addr();
    let dialer = std::sync::Arc::new(socksref::transport::Dialer::new(transport.clone())?);
    let (tx, rx) = oneshot::channel::<()>();
    let config = opts.config();
    let task = tokio::spawn(async move {
        let _ = socksref::server::serve_on(listener, config, async {
            let _ = rx.await;
        })
        .await;
    });
    Ok(RunningRef {
        sut: Sut {
            addr,
            user: USER.as_bytes().to_vec(),
            pass: PASS.as_bytes().to_vec(),
            claims: opts.claims(),
            instance,
            transport: dialer,
        },
        shutdown: Some(tx),
        task,
    })
}
