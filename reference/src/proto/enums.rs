//! Open wire enums: a newtype over the byte with named constants.
//!
//! Conformance probes and gost use values outside the RFC sets, so an unknown value must survive
//! a decode/encode round trip and print as hex instead of being rejected or mapped to a catch-all.

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$cmeta:meta])* $konst:ident = $value:expr,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u8);

        impl $name {
            $($(#[$cmeta])* pub const $konst: $name = $name($value);)*

            /// The constant's name, or `None` for a value outside the known set.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(stringify!($konst)),)*
                    _ => None,
                }
            }
        }

        impl From<u8> for $name {
            fn from(b: u8) -> Self {
                Self(b)
            }
        }

        impl From<$name> for u8 {
            fn from(v: $name) -> u8 {
                v.0
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self.name() {
                    Some(n) => write!(f, "{}(0x{:02x})", n, self.0),
                    None => write!(f, "{}(0x{:02x})", stringify!($name), self.0),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(self, f)
            }
        }
    };
}

wire_enum! {
    /// SOCKS5 authentication method (RFC 1928 §3), including gost's extensions.
    Method {
        /// X'00' NO AUTHENTICATION REQUIRED.
        NO_AUTH = 0x00,
        /// X'01' GSSAPI (not supported, D-10).
        GSSAPI = 0x01,
        /// X'02' USERNAME/PASSWORD (RFC 1929).
        USER_PASS = 0x02,
        /// X'80' gost: TLS on the same connection, no authentication.
        TLS = 0x80,
        /// X'82' gost: TLS on the same connection, then RFC 1929 inside it.
        TLS_AUTH = 0x82,
        /// X'FF' NO ACCEPTABLE METHODS.
        NO_ACCEPTABLE = 0xff,
    }
}

wire_enum! {
    /// SOCKS5 request command (RFC 1928 §4), including gost's and Tor's extensions.
    Command {
        /// X'01' CONNECT.
        CONNECT = 0x01,
        /// X'02' BIND.
        BIND = 0x02,
        /// X'03' UDP ASSOCIATE.
        UDP_ASSOCIATE = 0x03,
        /// X'F0' Tor RESOLVE.
        TOR_RESOLVE = 0xf0,
        /// X'F1' Tor RESOLVE_PTR.
        TOR_RESOLVE_PTR = 0xf1,
        /// X'F2' gost multiplexed BIND over smux.
        MUX_BIND = 0xf2,
        /// X'F3' gost UDP over the TCP stream.
        UDP_TUN = 0xf3,
    }
}

wire_enum! {
    /// SOCKS5 address type (RFC 1928 §5).
    AddrType {
        /// X'01' IPv4 address.
        IPV4 = 0x01,
        /// X'03' fully qualified domain name, length-prefixed.
        DOMAIN = 0x03,
        /// X'04' IPv6 address.
        IPV6 = 0x04,
    }
}

wire_enum! {
    /// SOCKS5 reply field REP (RFC 1928 §6).
    Reply {
        /// X'00' succeeded.
        SUCCEEDED = 0x00,
        /// X'01' general SOCKS server failure.
        GENERAL_FAILURE = 0x01,
        /// X'02' connection not allowed by ruleset.
        NOT_ALLOWED = 0x02,
        /// X'03' network unreachable.
        NETWORK_UNREACHABLE = 0x03,
        /// X'04' host unreachable.
        HOST_UNREACHABLE = 0x04,
        /// X'05' connection refused.
        CONNECTION_REFUSED = 0x05,
        /// X'06' TTL expired.
        TTL_EXPIRED = 0x06,
        /// X'07' command not supported.
        COMMAND_NOT_SUPPORTED = 0x07,
        /// X'08' address type not supported.
        ADDR_TYPE_NOT_SUPPORTED = 0x08,
    }
}

wire_enum! {
    /// SOCKS4 command code CD.
    Socks4Command {
        /// 1: CONNECT.
        CONNECT = 0x01,
        /// 2: BIND.
        BIND = 0x02,
    }
}

wire_enum! {
    /// SOCKS4 reply code CD.
    Socks4Reply {
        /// 90: request granted.
        GRANTED = 0x5a,
        /// 91: request rejected or failed.
        REJECTED = 0x5b,
        /// 92: rejected because the server cannot reach the client's identd.
        NO_IDENTD = 0x5c,
        /// 93: rejected because identd and the client report different user ids.
        IDENT_MISMATCH = 0x5d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_values_round_trip_and_print_as_hex() {
        let m = Method::from(0x7f);
        assert_eq!(u8::from(m), 0x7f);
        assert_eq!(m.name(), None);
        assert_eq!(format!("{m:?}"), "Method(0x7f)");
        assert_eq!(format!("{:?}", Command::MUX_BIND), "MUX_BIND(0xf2)");
    }
}
