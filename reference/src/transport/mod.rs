//! Transports under the SOCKS handler and client (DESIGN "Transports are layers").

pub mod kcp;
