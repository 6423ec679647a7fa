//! The client end of a SOCKS5 UDP association.

use std::net::SocketAddr;
use std::sync::Mutex;

use tokio::io::AsyncReadExt;
use tokio::net::UdpSocket;

use super::Error;
use crate::proto::udp::UdpHeader;
use crate::proto::Address;
use crate::tls::Stream;

/// Receive buffer size: the largest UDP payload plus the largest header (DOMAINNAME, 262 bytes),
/// so no datagram is ever silently truncated before its header is parsed.
const RECV_BUFFER: usize = 65_535 + 262;

/// A live UDP association: the control connection that keeps it alive and the local UDP socket
/// that talks to the relay.
///
/// The association ends when the control connection closes (RFC 1928 §6), so this value owns it;
/// dropping the association closes both.
#[derive(Debug)]
pub struct UdpAssociation {
    /// Never written after the handshake; held so the proxy keeps the association, and read
    /// only to notice its end. Behind a lock because a TLS stream needs `&mut` to read.
    control: tokio::sync::Mutex<Stream>,
    /// Bound to the declared address and connected to the relay.
    socket: UdpSocket,
    relay: SocketAddr,
    /// Scratch space for one incoming datagram. Only locked between a readiness notification and
    /// a non-blocking receive, never across an await.
    recv_buf: Mutex<Vec<u8>>,
}

impl UdpAssociation {
    pub(crate) fn new(control: Stream, socket: UdpSocket, relay: SocketAddr) -> Self {
        Self { control: tokio::sync::Mutex::new(control), socket, relay, recv_buf: Mutex::new(vec![0; RECV_BUFFER]) }
    }

    /// The relay's address (BND of the reply, with an all-zero address replaced by the proxy's).
    pub fn relay_addr(&self) -> SocketAddr {
        self.relay
    }

    /// The local UDP socket's address, the one declared in the request when there is one hop.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Sends `payload` to `target` through the relay and returns the payload bytes sent. A name
    /// is sent as a DOMAINNAME for the proxy to resolve (C-01).
    pub async fn send_to(&self, payload: &[u8], target: &Address) -> Result<usize, Error> {
        let header = UdpHeader::new(target.clone());
        let mut datagram = Vec::with_capacity(header.encoded_len() + payload.len());
        header.encode(&mut datagram)?;
        let header_len = datagram.len();
        datagram.extend_from_slice(payload);
        let sent = self.socket.send(&datagram).await?;
        Ok(sent.saturating_sub(header_len))
    }

    /// Receives the next datagram from the relay into `buf` and returns the payload length with
    /// the source the relay reported (which may be a DOMAINNAME, C-11). A payload longer than
    /// `buf` is truncated, as with a plain UDP socket.
    ///
    /// Datagrams that do not come from the relay, that have FRAG≠0 (no reassembly, D-12) or a
    /// malformed header are dropped silently and the wait goes on.
    pub async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, Address), Error> {
        loop {
            self.socket.readable().await?;
            // Poisoning can only come from a panic while holding the lock, and the buffer is
            // overwritten on every receive, so its contents after a panic do not matter.
            let mut scratch = self.recv_buf.lock().unwrap_or_else(|p| p.into_inner());
            let (n, src) = match self.socket.try_recv_from(&mut scratch) {
                Ok(v) => v,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            };
            if src != self.relay {
                tracing::debug!(%src, relay = %self.relay, "dropping datagram not from the relay");
                continue;
            }
            let (header, offset) = match UdpHeader::decode(&scratch[..n]) {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!(error = %e, "dropping datagram with a malformed header");
                    continue;
                }
            };
            if header.frag != 0 {
                tracing::debug!(frag = header.frag, "dropping fragment");
                continue;
            }
            let payload = &scratch[offset..n];
            let len = payload.len().min(buf.len());
            buf[..len].copy_from_slice(&payload[..len]);
            return Ok((len, header.address));
        }
    }

    /// Completes when the proxy closes the control connection, which ends the association.
    /// Bytes the proxy might send on it are discarded.
    pub async fn closed(&self) {
        let mut control = self.control.lock().await;
        let mut sink = [0u8; 64];
        while matches!(control.read(&mut sink).await, Ok(n) if n > 0) {}
    }
}
