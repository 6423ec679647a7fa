//! Reference SOCKS4/4a/5 implementation.
//!
//! - [`proto`]: the sans-IO protocol core (messages and handshake state machines).
//! - [`server`]: the tokio server driver; [`policy`] holds every decision it consults.
//! - [`client`]: the tokio client: chains of hops, CONNECT, BIND, UDP ASSOCIATE.
//! - [`forward`]: port forwarders through a chain (tcp, udp, rtcp).
//! - [`url`]: gost-style `-L`/`-F` URLs.
//! - [`relay`]: the copy loop every tunnel uses.
//! - [`tls`]: gost's method-level TLS (`80`/`82`): certificates, configs, the stream type.
//! - [`transport`]: the layers below SOCKS (tls, ws, wss, mtls, mws, mwss), docs/transports.md.

pub mod client;
pub mod forward;
pub mod policy;
pub mod proto;
pub mod relay;
pub mod server;
pub mod smux;
pub mod tls;
pub mod transport;
pub mod url;
