//! Which REP a failure earns: the one io-error → REP mapping of the server (D-06), the rule for
//! failures behind an upstream chain, and the REP for failures of our own sockets. Handlers ask
//! here instead of choosing codes themselves, so the same failure gets the same code everywhere.

use std::io;

use crate::client::{Chain, Error as ChainError};
use crate::proto::client::ClientError;
use crate::proto::Reply;

/// D-06: the fixed mapping from a failed outbound connect to REP.
pub fn for_connect_error(e: &io::Error) -> Reply {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Reply::CONNECTION_REFUSED,
        io::ErrorKind::NetworkUnreachable => Reply::NETWORK_UNREACHABLE,
        io::ErrorKind::HostUnreachable | io::ErrorKind::TimedOut => Reply::HOST_UNREACHABLE,
        io::ErrorKind::PermissionDenied => Reply::NOT_ALLOWED,
        _ => Reply::GENERAL_FAILURE,
    }
}

/// A destination that did not answer in time (connect deadline, name lookup deadline, no
/// address for a name, no BIND peer in time, R-49): "host unreachable", as for D-06's timeout.
pub const TIMED_OUT: Reply = Reply::HOST_UNREACHABLE;

/// A destination name that is not a valid host name, does not resolve, or resolves to nothing
/// (D-06: NXDOMAIN, SERVFAIL and a lookup timeout alike).
pub const NO_ADDRESS: Reply = Reply::HOST_UNREACHABLE;

/// A socket of our own (the UDP relay, a BIND listener, an accept) failed: that says nothing
/// about the destination, so it is a general failure, never "refused" or "unreachable".
pub fn for_local_error(_e: &io::Error) -> Reply {
    Reply::GENERAL_FAILURE
}

/// The REP for a failure upstream: the last hop's own REP when it refused, 01 otherwise. A hop
/// that is down, or an intermediate hop refusing to reach the next one, says nothing about the
/// target, so passing its "refused" or "unreachable" on would mislead the client.
pub fn for_chain_error(e: &ChainError, chain: &Chain) -> Reply {
    let last = chain.hops.len().checked_sub(1);
    match e.root() {
        ChainError::Proto(ClientError::Rejected(rep)) if e.hop_index() == last => *rep,
        _ => Reply::GENERAL_FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_map_as_d06_says() {
        let rep = |k: io::ErrorKind| for_connect_error(&io::Error::from(k));
        assert_eq!(rep(io::ErrorKind::ConnectionRefused), Reply::CONNECTION_REFUSED);
        assert_eq!(rep(io::ErrorKind::NetworkUnreachable), Reply::NETWORK_UNREACHABLE);
        assert_eq!(rep(io::ErrorKind::HostUnreachable), Reply::HOST_UNREACHABLE);
        assert_eq!(rep(io::ErrorKind::TimedOut), TIMED_OUT);
        assert_eq!(rep(io::ErrorKind::PermissionDenied), Reply::NOT_ALLOWED);
        assert_eq!(rep(io::ErrorKind::AddrInUse), Reply::GENERAL_FAILURE);
        assert_eq!(for_local_error(&io::Error::from(io::ErrorKind::ConnectionRefused)), Reply::GENERAL_FAILURE);
    }
}
