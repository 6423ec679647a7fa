//! Profiles: named selections of the catalogue, each with the capabilities it assumes the server
//! under test has (`sockslab check --profile udp` claims UDP ASSOCIATE and runs the UDP scenarios).

use crate::runner::Claims;
use crate::scenario::{Command, Scenario, Version};

/// A profile: which scenarios it selects and what it adds to the server's claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// Name on the command line.
    pub name: &'static str,
    /// What it covers.
    pub about: &'static str,
}

/// All profiles.
pub const PROFILES: &[Profile] = &[
    Profile { name: "rfc1928-core", about: "SOCKS5 greeting, RFC 1929 and CONNECT (rfc1928/, rfc1929/, regressions/)" },
    Profile { name: "socks4", about: "SOCKS4 and SOCKS4a CONNECT (socks4/, socks4a/); claims both versions" },
    Profile { name: "udp", about: "UDP ASSOCIATE and the relay, including V-01; claims UDP" },
    Profile { name: "bind", about: "BIND; claims BIND" },
    Profile { name: "all", about: "every scenario; claims only what the URL scheme implies" },
];

impl Profile {
    /// Looks a profile up by name.
    pub fn by_name(n: &str) -> Option<Profile> {
        PROFILES.iter().copied().find(|p| p.name == n)
    }

    /// Whether the profile selects `s`.
    pub fn selects(&self, s: &Scenario) -> bool {
        let v5 = s.needs.version == Version::Socks5;
        match self.name {
            "rfc1928-core" => {
                v5 && s.needs.command == Command::Connect
                    && ["rfc1928", "rfc1929", "regressions"].contains(&s.group().as_str())
            }
            "socks4" => matches!(s.needs.version, Version::Socks4 | Version::Socks4a),
            "udp" => s.needs.command == Command::Udp,
            "bind" => s.needs.command == Command::Bind,
            _ => true,
        }
    }

    /// Adds what the profile assumes to `c`.
    pub fn extend_claims(&self, c: &mut Claims) {
        match self.name {
            "socks4" => {
                c.versions.insert(Version::Socks4);
                c.versions.insert(Version::Socks4a);
            }
            "udp" => {
                c.commands.insert(Command::Udp);
            }
            "bind" => {
                c.commands.insert(Command::Bind);
            }
            _ => {}
        }
    }
}
