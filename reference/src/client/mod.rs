//! The tokio SOCKS client: a driver over the sans-IO [`ClientHandshake`](crate::proto::client::ClientHandshake)
//! and chains of proxies built on it.
//!
//! - [`handshake`] / [`Handshake`]: one handshake on any byte stream (TCP today; TLS or
//!   WebSocket later).
//! - [`Chain`]: CONNECT through hops in order, BIND and UDP ASSOCIATE at the last hop.
//!
//! The client rules of docs/catalogue.md (C-xx) shape it: remote DNS for SOCKS4a/5 targets (C-01),
//! lengths checked before a byte is sent (C-02, V-28), replies parsed by their own ATYP (C-03),
//! deadlines and a byte cap (C-05), EOF is an error (C-06), no direct fallback (C-07), local IPv4
//! resolution for SOCKS4 (C-09), UDP only from the relay and without fragments (C-11).

mod chain;
mod error;
mod handshake;
mod mbind;
mod udp;
mod udptun;

pub use chain::{Chain, Connector, Hop, HopTls, PendingBind, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT};
pub use error::Error;
pub use handshake::{handshake, Handshake, MAX_HANDSHAKE_BYTES};
pub use mbind::MuxBind;
pub use udp::UdpAssociation;
pub use udptun::UdpTunnel;

pub(crate) use chain::{dial, lookup};
