//! The client's error type.

use std::io;
use std::time::Duration;

use crate::proto::client::ClientError;
use crate::proto::{Address, Method, ProtoError};

/// Why a client operation failed.
///
/// Every failure is final: the client never retries another way and never falls back to a direct
/// connection (C-07), so the caller always learns which hop failed and why.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket operation failed (connect refused, reset, …).
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// A deadline passed: the TCP connect, the greeting/authentication, or the wait for a reply.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// Which phase was too slow.
        what: &'static str,
        /// The limit that was exceeded.
        after: Duration,
    },
    /// The proxy refused, sent something malformed, or the request could not be encoded.
    #[error("{0}")]
    Proto(#[from] ClientError),
    /// The proxy closed the connection before its reply was complete (C-06).
    #[error("proxy closed the connection mid-handshake ({received} bytes of the current reply received)")]
    Closed {
        /// Bytes of the unfinished message that did arrive.
        received: usize,
    },
    /// The proxy sent more handshake bytes than any valid exchange needs (C-05).
    #[error("handshake exceeded {0} bytes")]
    TooLong(usize),
    /// The proxy selected an extension method (e.g. gost's TLS) that this driver cannot set up.
    #[error("proxy selected method {0}, which this driver cannot set up")]
    UnsupportedMethod(Method),
    /// A host name could not be resolved locally, or has no address of the needed family.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The address being resolved.
        host: Address,
        /// What went wrong.
        reason: String,
    },
    /// The operation is not possible with this chain (e.g. UDP through a SOCKS4 hop).
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// A hop of the chain failed; `source` says how. Index 0 is the first proxy dialled.
    #[error("hop {index} ({proxy}): {source}")]
    Hop {
        /// Position of the failing hop in [`Chain::hops`](super::Chain::hops).
        index: usize,
        /// That hop's proxy address.
        proxy: Address,
        /// The underlying failure (never itself a `Hop`).
        source: Box<Error>,
    },
}

impl Error {
    /// The index of the hop that failed, if the failure is attributed to one.
    pub fn hop_index(&self) -> Option<usize> {
        match self {
            Error::Hop { index, .. } => Some(*index),
            _ => None,
        }
    }

    /// The underlying error, looking through [`Error::Hop`].
    pub fn root(&self) -> &Error {
        match self {
            Error::Hop { source, .. } => source.root(),
            other => other,
        }
    }

    /// Attributes this error to hop `index`, unless it already names a hop.
    pub(crate) fn at_hop(self, index: usize, proxy: &Address) -> Error {
        match self {
            e @ Error::Hop { .. } => e,
            e => Error::Hop { index, proxy: proxy.clone(), source: Box::new(e) },
        }
    }
}

impl From<ProtoError> for Error {
    fn from(e: ProtoError) -> Self {
        Error::Proto(ClientError::Proto(e))
    }
}
