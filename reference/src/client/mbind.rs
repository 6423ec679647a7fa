//! The client end of gost's MBIND (command `F2`, docs/gost.md §4.5): after the reply the
//! connection is an smux session in which we are the smux *server*; each stream the proxy opens
//! is one inbound connection at the proxy, starting with a SOCKS5 reply that names the peer.

use tokio::io::{AsyncReadExt, DuplexStream};

use super::Error;
use crate::proto::client::ClientError;
use crate::proto::v5::ReplyMsg;
use crate::proto::{Address, DecodeError, Reply};
use crate::smux::Session;

/// A live MBIND: the proxy listens on [`MuxBind::bound`] and hands every connection over.
#[derive(Debug)]
pub struct MuxBind {
    /// Where peers connect (BND of the reply, as the proxy reported it).
    pub bound: Address,
    session: Session,
}

impl MuxBind {
    pub(crate) fn new(bound: Address, session: Session) -> Self {
        Self { bound, session }
    }

    /// The next inbound connection and its peer's address. A stream without a valid success
    /// reply is an error, as for gost's client (which then rebinds the whole session); `None`
    /// from the session (it ended) is [`Error::Closed`].
    pub async fn accept(&self) -> Result<(DuplexStream, Address), Error> {
        let mut stream = self.session.accept().await.ok_or(Error::Closed { received: 0 })?;
        // Read the reply exactly: VER REP RSV ATYP and the first address byte, then the rest.
        let mut buf = vec![0u8; 5];
        stream.read_exact(&mut buf).await?;
        // Five octets always hold ATYP and a name's length byte, so the length is known here.
        let total = 3 + Address::wire_len(&buf[3..])?.unwrap_or(2);
        buf.resize(total, 0);
        stream.read_exact(&mut buf[5..]).await?;
        match ReplyMsg::decode(&buf) {
            Ok((r, _)) if r.reply == Reply::SUCCEEDED => Ok((stream, r.address)),
            Ok((r, _)) => Err(ClientError::Rejected(r.reply).into()),
            Err(DecodeError::Invalid(e)) => Err(e.into()),
            Err(DecodeError::Incomplete) => Err(Error::Closed { received: buf.len() }),
        }
    }

    /// Completes when the session has ended (the proxy closed, or keepalives stopped).
    pub async fn closed(&self) {
        self.session.closed().await
    }
}
