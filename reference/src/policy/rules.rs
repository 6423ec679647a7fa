//! Destination rules: the `allow=` and `deny=` service keys (V-08, dante's `socks pass/block`).
//!
//! Syntax of either key: a comma-separated list of rules, each one of
//!
//! - `NET`: an address or CIDR block, `10.0.0.0/8`, `127.0.0.1`, `::1/128`, `fe80::/10`;
//! - `NET:PORTS`, with an IPv6 `NET` in brackets: `127.0.0.0/8:80`, `[::1/128]:8000-8999`;
//! - `*:PORTS`: any address on those ports; `*` alone: anything.
//!
//! `PORTS` is one port or an inclusive range `LO-HI`. A CIDR block must have no bits set past
//! its prefix, so a typo such as `10.0.0.1/8` is an error instead of a silent widening.
//!
//! Decision: an endpoint is denied when any `deny` rule matches it, or when `allow` rules exist
//! and none matches it. Addresses are compared after name resolution and with IPv4-mapped IPv6
//! addresses (`::ffff:a.b.c.d`) taken as the IPv4 address they carry, so one IPv4 rule covers
//! both spellings; IPv4 blocks match only IPv4 and IPv6 blocks only IPv6 otherwise.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// One rule: an address block (or any address) and a port range (or any port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestRule {
    /// Network and prefix length; `None` matches every address.
    net: Option<(IpAddr, u8)>,
    /// Inclusive port range; `None` matches every port.
    ports: Option<(u16, u16)>,
}

impl DestRule {
    /// Parses one rule (see the module documentation).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty rule".into());
        }
        let (net, ports) = if let Some(rest) = s.strip_prefix('[') {
            let (net, after) = rest.split_once(']').ok_or_else(|| format!("{s:?}: unclosed ["))?;
            let ports = after.strip_prefix(':').ok_or_else(|| format!("{s:?}: expected :PORTS after ]"))?;
            (net, Some(ports))
        } else if s.matches(':').count() == 1 {
            let (net, ports) = s.split_once(':').unwrap_or((s, ""));
            (net, Some(ports))
        } else {
            // No colon, or an unbracketed IPv6 block: address only.
            (s, None)
        };
        let net = if net == "*" { None } else { Some(parse_net(net)?) };
        let ports = ports.map(parse_ports).transpose()?;
        Ok(Self { net, ports })
    }

    /// Whether the rule matches `dest` (already canonical).
    fn matches(&self, dest: SocketAddr) -> bool {
        let port_ok = self.ports.is_none_or(|(lo, hi)| (lo..=hi).contains(&dest.port()));
        let net_ok = self.net.is_none_or(|(net, len)| in_net(dest.ip(), net, len));
        port_ok && net_ok
    }
}

impl fmt::Display for DestRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let net = match self.net {
            None => "*".to_string(),
            Some((ip, len)) => format!("{ip}/{len}"),
        };
        match (self.ports, self.net) {
            (None, _) => write!(f, "{net}"),
            (Some((lo, hi)), Some((IpAddr::V6(_), _))) if lo == hi => write!(f, "[{net}]:{lo}"),
            (Some((lo, hi)), Some((IpAddr::V6(_), _))) => write!(f, "[{net}]:{lo}-{hi}"),
            (Some((lo, hi)), _) if lo == hi => write!(f, "{net}:{lo}"),
            (Some((lo, hi)), _) => write!(f, "{net}:{lo}-{hi}"),
        }
    }
}

/// The allow and deny lists of one service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestRules {
    /// When non-empty, only endpoints matching one of these are permitted.
    pub allow: Vec<DestRule>,
    /// Endpoints matching any of these are refused, whatever `allow` says.
    pub deny: Vec<DestRule>,
}

impl DestRules {
    /// Parses a comma-separated rule list, the value of `allow=` or `deny=`.
    pub fn parse_list(s: &str) -> Result<Vec<DestRule>, String> {
        s.split(',').map(DestRule::parse).collect()
    }

    /// Whether `dest` passes the rules (see the module documentation for the decision).
    pub fn permits(&self, dest: SocketAddr) -> bool {
        let dest = SocketAddr::new(dest.ip().to_canonical(), dest.port());
        if self.deny.iter().any(|r| r.matches(dest)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|r| r.matches(dest))
    }

    /// Whether any rule is configured.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

fn parse_net(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| format!("{addr:?} is not an IP address"))?;
    // An IPv4-mapped block would never match, since addresses are compared in canonical form.
    let ip = ip.to_canonical();
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => l.parse::<u8>().ok().filter(|n| *n <= max).ok_or_else(|| format!("{l:?}: prefix 0..{max}"))?,
    };
    if mask(ip, len) != bits(ip) {
        return Err(format!("{s:?}: bits set past the /{len} prefix"));
    }
    Ok((ip, len))
}

fn parse_ports(s: &str) -> Result<(u16, u16), String> {
    let port = |p: &str| p.parse::<u16>().map_err(|_| format!("{p:?} is not a port (0-65535)"));
    let (lo, hi) = match s.split_once('-') {
        Some((lo, hi)) => (port(lo)?, port(hi)?),
        None => (port(s)?, port(s)?),
    };
    if lo > hi {
        return Err(format!("{s:?}: empty port range"));
    }
    Ok((lo, hi))
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4).into(),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn mask(ip: IpAddr, len: u8) -> u128 {
    let width = if ip.is_ipv4() { 32 } else { 128 };
    let all = if width == 32 { u128::from(u32::MAX) } else { u128::MAX };
    if len == 0 {
        0
    } else {
        bits(ip) & (all << (width - u32::from(len))) & all
    }
}

fn in_net(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    ip.is_ipv4() == net.is_ipv4() && mask(ip, len) == mask(net, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn syntax() {
        for (text, shown) in [
            ("127.0.0.0/8", "127.0.0.0/8"),
            ("10.1.2.3", "10.1.2.3/32"),
            ("::1/128", "::1/128"),
            ("fe80::/10", "fe80::/10"),
            ("127.0.0.0/8:22", "127.0.0.0/8:22"),
            ("[::1]:8000-8999", "[::1/128]:8000-8999"),
            ("*:25", "*:25"),
            ("*", "*"),
            ("::ffff:127.0.0.1", "127.0.0.1/32"),
        ] {
            assert_eq!(DestRule::parse(text).map(|r| r.to_string()), Ok(shown.to_string()), "{text}");
        }
        for bad in ["", "10.0.0.1/8", "10.0.0.0/33", "300.0.0.1", "*:99999", "*:9-1", "[::1]", "[::1:22", "a.b:1", "*:"]
        {
            assert!(DestRule::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn deny_wins_and_allow_restricts() {
        let rules = DestRules {
            allow: DestRules::parse_list("127.0.0.0/8,::1/128").unwrap(),
            deny: DestRules::parse_list("*:22,127.0.0.2").unwrap(),
        };
        assert!(rules.permits(sa("127.0.0.1:80")));
        assert!(rules.permits(sa("[::1]:80")));
        assert!(rules.permits(sa("[::ffff:127.0.0.1]:80")), "mapped IPv4 is IPv4");
        assert!(!rules.permits(sa("127.0.0.1:22")), "deny wins over allow");
        assert!(!rules.permits(sa("[::1]:22")));
        assert!(!rules.permits(sa("127.0.0.2:80")));
        assert!(!rules.permits(sa("10.0.0.1:80")), "not in the allow list");
        assert!(!rules.permits(sa("[::2]:80")));
        let open = DestRules::default();
        assert!(open.permits(sa("10.0.0.1:22")));
        let deny_only = DestRules { allow: vec![], deny: DestRules::parse_list("10.0.0.0/8:1-1024").unwrap() };
        assert!(!deny_only.permits(sa("10.9.9.9:1024")));
        assert!(deny_only.permits(sa("10.9.9.9:1025")));
        assert!(deny_only.permits(sa("11.0.0.1:80")));
        let zero = DestRules { allow: DestRules::parse_list("0.0.0.0/0").unwrap(), deny: vec![] };
        assert!(zero.permits(sa("8.8.8.8:53")));
        assert!(!zero.permits(sa("[2001:db8::1]:53")), "an IPv4 block does not match IPv6");
    }
}
