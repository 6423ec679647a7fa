//! The client end of gost's UDP-TUN (command `F3`, docs/gost.md §4.7): datagrams framed on
//! the SOCKS connection.

use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::Mutex;

use super::Error;
use crate::proto::udptun::TunFrame;
use crate::proto::{Address, DecodeError};
use crate::tls::Stream;

/// A live UDP-TUN: relay mode (send anywhere, answers come back with their source) or bind mode
/// (the proxy listens on an address; datagrams to it come back with their sender).
///
/// Sending and receiving may run concurrently from different tasks; the tunnel ends when the
/// proxy closes the connection, and dropping it closes the connection.
#[derive(Debug)]
pub struct UdpTunnel {
    bound: Address,
    reader: Mutex<(ReadHalf<Stream>, Vec<u8>)>,
    writer: Mutex<WriteHalf<Stream>>,
}

impl UdpTunnel {
    pub(crate) fn new(stream: Stream, bound: Address) -> Self {
        let (r, w) = tokio::io::split(stream);
        Self { bound, reader: Mutex::new((r, Vec::new())), writer: Mutex::new(w) }
    }

    /// BND of the reply: the proxy's UDP socket (in bind mode, where peers send to).
    pub fn bound(&self) -> &Address {
        &self.bound
    }

    /// Sends `payload` to `target` (relay mode) or to the peer `target` (bind mode) and returns
    /// the payload bytes sent. An empty payload is not sent at all (returns 0): gost's frame
    /// reader cannot handle one (§4.7). A name is sent as is, for the proxy to resolve (C-01),
    /// where gost's client resolves it locally first.
    pub async fn send_to(&self, payload: &[u8], target: &Address) -> Result<usize, Error> {
        if payload.is_empty() {
            return Ok(0);
        }
        let mut frame = Vec::with_capacity(payload.len() + 3 + target.encoded_len());
        TunFrame::encode(target, payload, &mut frame)?;
        // One write per frame: gost reads frames with exact lengths, so splitting is harmless,
        // and one write keeps the frame in one TLS record.
        let mut w = self.writer.lock().await;
        w.write_all(&frame).await?;
        w.flush().await?;
        Ok(payload.len())
    }

    /// Receives the next datagram into `buf` (truncated if longer, as a UDP socket would) and
    /// returns its length and the address in the frame (the source). EOF is [`Error::Closed`].
    pub async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, Address), Error> {
        let mut guard = self.reader.lock().await;
        let (r, pending) = &mut *guard;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match TunFrame::decode(pending) {
                Ok((f, used)) => {
                    let n = f.payload.len().min(buf.len());
                    buf[..n].copy_from_slice(&f.payload[..n]);
                    let address = f.address;
                    pending.drain(..used);
                    return Ok((n, address));
                }
                Err(DecodeError::Incomplete) => {}
                Err(DecodeError::Invalid(e)) => return Err(e.into()),
            }
            let got = r.read(&mut chunk).await?;
            if got == 0 {
                return Err(Error::Closed { received: pending.len() });
            }
            pending.extend_from_slice(&chunk[..got]);
        }
    }
}
