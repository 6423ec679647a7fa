//! Turning a request's destination into checked socket addresses.

use std::collections::HashMap;
use std::net::SocketAddr;

use tracing::debug;

use crate::policy::{Stats, Transport};
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
                return Err(Reply::HOST_UNREACHABLE);
            };
            let lookup = tokio::net::lookup_host((name, target.port));
            match tokio::time::timeout(cfg.connect_timeout, lookup).await {
                Ok(Ok(addrs)) => addrs.map(|a| SocketAddr::new(a.ip().to_canonical(), a.port())).collect(),
                _ => {
                    debug!(%name, "refused: name does not resolve");
                    return Err(Reply::HOST_UNREACHABLE); // D-06: NXDOMAIN, SERVFAIL, lookup timeout
                }
            }
        }
    };
    if candidates.is_empty() {
        return Err(Reply::HOST_UNREACHABLE);
    }
    let mut allowed = Vec::with_capacity(candidates.len());
    let mut denial = None;
    for a in candidates {
        match cfg.check_destination_via(a, transport) {
            Ok(()) => allowed.push(a),
            Err((rep, why)) => {
                debug!(target = %target, addr = %a, reason = why, "destination refused");
                denial = Some(rep);
            }
        }
    }
    match (allowed.is_empty(), denial) {
        (true, Some(rep)) => {
            Stats::bump(&cfg.stats.policy_denials);
            Err(rep)
        }
        (true, None) => Err(Reply::HOST_UNREACHABLE),
        // A name whose answers mix allowed and denied addresses is treated as denied: such
        // answers are the signature of DNS rebinding.
        (false, Some(rep)) if cfg.deny_private => {
            Stats::bump(&cfg.stats.policy_denials);
            Err(rep)
        }
        _ => Ok(allowed),
    }
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

/// A name fit for the resolver: printable, no NUL, no characters that change its meaning in a
/// URL or a C string, labels of at most 63 bytes, at most 253 bytes overall. IP literals
/// in any spelling pass here and are classified after resolution.
pub(crate) fn valid_hostname(name: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(name).ok()?;
    let trimmed = s.strip_suffix('.').unwrap_or(s);
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' || c == ':';
    let ok = !trimmed.is_empty()
        && trimmed.len() <= 253
        && trimmed.chars().all(ok_char)
        && trimmed.split('.').all(|l| !l.is_empty() && l.len() <= 63);
    ok.then_some(s)
}

#[cfg(test)]
mod tests {
    use super::valid_hostname;

    #[test]
    fn hostname_validation_r28() {
        for good in ["localhost", "a.b-c.example.", "127.0.0.1", "::1", "x_y.local"] {
            assert!(valid_hostname(good.as_bytes()).is_some(), "{good}");
        }
        let long_label = "a".repeat(64);
        for bad in ["", ".", "..", "a..b", "1.2.3.4\0evil", "a b", "a/b", "a%b", "a@b", "a\\b", &long_label] {
            assert!(valid_hostname(bad.as_bytes()).is_none(), "{bad:?}");
        }
        assert!(valid_hostname(&[0xff, 0x61]).is_none());
    }
}
