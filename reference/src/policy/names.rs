//! Destination names and their answers: which names go to the resolver at all, and
//! which of a name's answers may be used (R-75, DNS rebinding).

use std::net::SocketAddr;

use tracing::debug;

use super::{reply, ServerConfig, Stats, Transport};
use crate::proto::{Address, Reply};

/// A name fit for the resolver: printable, no NUL, no characters that change its meaning in a
/// URL or a C string, labels of at most 63 bytes, at most 253 bytes overall. IP literals
/// in any spelling pass here and are classified after resolution.
pub fn valid_hostname(name: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(name).ok()?;
    let trimmed = s.strip_suffix('.').unwrap_or(s);
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' || c == ':';
    let ok = !trimmed.is_empty()
        && trimmed.len() <= 253
        && trimmed.chars().all(ok_char)
        && trimmed.split('.').all(|l| !l.is_empty() && l.len() <= 63);
    ok.then_some(s)
}

impl ServerConfig {
    /// The answers for `target` that may be connected to: each checked against the destination
    /// policy. None allowed is the denial's REP (or "no address" when there were no answers); a
    /// name whose answers mix allowed and denied addresses is denied as a whole while private
    /// destinations are denied, because such answers are the signature of DNS rebinding.
    pub fn admit_answers(
        &self,
        target: &Address,
        candidates: Vec<SocketAddr>,
        transport: Transport,
    ) -> Result<Vec<SocketAddr>, Reply> {
        let mut allowed = Vec::with_capacity(candidates.len());
        let mut denial = None;
        for a in candidates {
            match self.check_destination_via(a, transport) {
                Ok(()) => allowed.push(a),
                Err((rep, why)) => {
                    debug!(target = %target, addr = %a, reason = why, "destination refused");
                    denial = Some(rep);
                }
            }
        }
        match (allowed.is_empty(), denial) {
            (true, Some(rep)) => {
                Stats::bump(&self.wiring.stats.policy_denials);
                Err(rep)
            }
            (true, None) => Err(reply::NO_ADDRESS),
            (false, Some(rep)) if self.deny_private => {
                Stats::bump(&self.wiring.stats.policy_denials);
                Err(rep)
            }
            _ => Ok(allowed),
        }
    }
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
