//! Profiles: named selections of the catalogue, each with the capabilities it assumes the server
//! under test has (`sockslab check --profile udp` claims UDP ASSOCIATE and runs the UDP scenarios).

use crate::runner::Claims;
use crate::scenario::{Command, Extension, Scenario, Version};

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
    Profile {
        name: "socks4",
        about: "SOCKS4 and SOCKS4a (socks4/, socks4a/); the URL scheme says which versions the server speaks",
    },
    Profile { name: "udp", about: "UDP ASSOCIATE and the relay, including V-01; claims UDP" },
    Profile { name: "bind", about: "BIND; claims BIND" },
    Profile { name: "gost", about: "gost's extensions (MBIND F2, UDP-over-TCP F3); claims them, with BIND and UDP" },
    Profile { name: "all", about: "every scenario the declared claims allow; claims only what the URL and flags say" },
];

impl Profile {
    /// Looks a profile up by name.
    pub fn by_name(n: &str) -> Option<Profile> {
        PROFILES.iter().copied().find(|p| p.name == n)
    }

    /// Whether the profile selects `s`.
    pub fn selects(&self, s: &Scenario) -> bool {
        let v5 = s.needs.version == Version::Socks5;
        // Extension scenarios belong to their own profile only: a server that does not speak
        // gost's commands must not see them under `udp` or `bind`.
        if s.needs.extension.is_some() {
            return matches!(self.name, "gost" | "all");
        }
        match self.name {
            "rfc1928-core" => {
                v5 && s.needs.command == Command::Connect
                    && ["rfc1928", "rfc1929", "regressions"].contains(&s.group().as_str())
            }
            "socks4" => matches!(s.needs.version, Version::Socks4 | Version::Socks4a),
            "udp" => s.needs.command == Command::Udp,
            "bind" => s.needs.command == Command::Bind,
            "gost" => false,
            _ => true,
        }
    }

    /// Adds what the profile assumes to `c`.
    pub fn extend_claims(&self, c: &mut Claims) {
        match self.name {
            "gost" => {
                c.extensions.insert(Extension::Gost);
                c.commands.extend([Command::Bind, Command::Udp]);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::load_catalogue;

    #[test]
    fn gost_scenarios_are_selected_only_by_gost_and_all() {
        let all = load_catalogue(&crate::default_scenarios_dir()).expect("catalogue");
        let gost: Vec<&Scenario> = all.iter().filter(|s| s.group() == "gost").collect();
        assert!(!gost.is_empty());
        for s in &gost {
            assert!(s.needs.extension == Some(Extension::Gost), "{} must need the gost extension", s.id);
            for p in ["rfc1928-core", "udp", "bind", "socks4"] {
                assert!(!Profile::by_name(p).unwrap().selects(s), "{p} selects {}", s.id);
            }
            assert!(Profile::by_name("gost").unwrap().selects(s));
        }
        let mut c = Claims::default();
        Profile::by_name("socks4").unwrap().extend_claims(&mut c);
        assert!(!c.versions.contains(&Version::Socks4a), "a profile never claims a version the URL did not");
    }
}
