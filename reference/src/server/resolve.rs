//! Turning a request's destination into checked socket addresses.

use std::collections::HashMap;
use std::net::SocketAddr;

use tracing::debug;

pub(crate) use crate::policy::valid_hostname;
use crate::policy::{reply, Transport};
use crate::proto::{Address, Host, Reply};

use super::Shared;

/// Resolves `target` once and returns only addresses that pass the destination policy, so the
/// server connects to nothing it did not check. The error is the REP to send.
pub(crate) async fn resolve(target: &Address, shared: &Shared) -> Result<Vec<SocketAddr>, Reply> {
    resolve_for(target, shared, Transport::Tcp).await
}

/// [`resolve`] for a destination reached over `transport` (the self-connect check differs).
pub(crate) async fn resolve_for(
    target: &Address,
    shared: &Shared,
    transport: Transport,
) -> Result<Vec<SocketAddr>, Reply> {
    let cfg = &shared.config;
    let candidates: Vec<SocketAddr> = match &target.host {
        Host::Ip(ip) => vec![SocketAddr::new(ip.to_canonical(), target.port)],
        Host::Domain(name) => {
            let Some(name) = valid_hostname(name) else {
                debug!(name = %name.escape_ascii(), "refused: not a valid host name");
                return Err(reply::NO_ADDRESS);
            };
            let lookup = tokio::net::lookup_host((name, target.port));
            match tokio::time::timeout(cfg.connect_timeout, lookup).await {
                Ok(Ok(addrs)) => addrs.map(|a| SocketAddr::new(a.ip().to_canonical(), a.port())).collect(),
                _ => {
                    debug!(%name, "refused: name does not resolve");
                    return Err(reply::NO_ADDRESS); // D-06: NXDOMAIN, SERVFAIL, lookup timeout
                }
            }
        }
    };
    // Which answers may be used is the policy's decision (R-75, DNS rebinding).
    cfg.admit_answers(target, candidates, transport)
}

/// Names resolved once per UDP association or tunnel: datagrams to the same name do not
/// each cost a lookup, and the cache is bounded so a client cannot grow it without limit.
#[derive(Debug, Default)]
pub(crate) struct NameCache {
    names: HashMap<Vec<u8>, Option<SocketAddr>>,
}

impl NameCache {
    /// Names remembered at most; later names are resolved every time.
    const MAX: usize = 256;

    /// The first checked address of `addr` (see [`resolve`]), from the cache when the name was
    /// seen before; negative answers are cached too.
    pub(crate) async fn resolve(&mut self, addr: &Address, shared: &Shared) -> Option<SocketAddr> {
        if let Host::Domain(name) = &addr.host {
            if let Some(hit) = self.names.get(name) {
                return hit.map(|a| SocketAddr::new(a.ip(), addr.port));
            }
        }
        let resolved = resolve_for(addr, shared, Transport::Udp).await.ok().and_then(|v| v.into_iter().next());
        if let Host::Domain(name) = &addr.host {
            if self.names.len() < Self::MAX {
                self.names.insert(name.clone(), resolved);
            }
        }
        resolved
    }
}
