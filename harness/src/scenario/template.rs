//! Byte templates and patterns: the hex notation scenarios use for what is sent and what is expected.
//!
//! Syntax (tokens separated by whitespace; each token is one protocol *field*, which is what the
//! field-boundary schedule splits on):
//!
//! - `05`, `7f000001`: hex octets, an even number of digits;
//! - `'text'`: the octets of a text, with `\n`, `\r`, `\t`, `\0`, `\\`, `\'` and `\xHH` escapes;
//! - `{target.port}`, `{user}`, `{bnd}`: a variable or an earlier capture, rendered to bytes;
//! - `{repeat:41:300}`: 300 octets of 0x41;
//! - `xor('text')` or `xor(0102)`: the octets XORed with [`XOR_KEY`], what the XOR-echo fixture returns;
//! - `;`: a write boundary (the as-written schedule flushes there);
//! - in patterns only, captures: `{name:N}` (N octets), `{name:addr}` (a SOCKS5 ATYP + address + port),
//!   `{name:addr4}` (a SOCKS4 port + IPv4 address), `{name:ipaddr}` (a SOCKS5 address that must be
//!   an IP, not a name), `{name:nonzero}` (one octet other than 00), and `{_:N}` to skip N octets.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use socksref::proto::{Address, Host};

/// The key the XOR-echo fixture applies to every octet, so a relay that loops the client's own
/// bytes back (or corrupts them) cannot pass an echo check.
pub const XOR_KEY: u8 = 0xA5;

/// A syntax error in a template, reported with the offending token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad template token `{token}`: {why}")]
pub struct TemplateError {
    /// The token as written.
    pub token: String,
    /// What is wrong with it.
    pub why: String,
}

/// What a capture token takes from the received bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureKind {
    /// A fixed number of octets.
    Fixed(usize),
    /// A SOCKS5 address: ATYP, address (length from ATYP), port.
    Socks5Addr,
    /// A SOCKS4 reply's DSTPORT (2 octets) followed by DSTIP (4 octets).
    Socks4Addr,
    /// A SOCKS5 address that must be an IP (ATYP 01 or 04), never a name.
    IpAddr,
    /// One octet that must not be 00 (a failure code whose exact value the spec leaves open).
    NonZero,
    /// A SOCKS5 method list, NMETHODS then that many octets, that must include `required` when
    /// set: clients may offer any list (curl offers GSSAPI too), the RFC only says the server
    /// picks from it. Written `{m:methods}` or `{m:methods+00}`.
    Methods {
        /// A method the list must contain.
        required: Option<u8>,
    },
}

/// One field of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// Literal octets (from hex or quoted text); `text` keeps the spelling for transcripts.
    Bytes {
        /// The octets.
        bytes: Vec<u8>,
        /// How the token was written.
        text: String,
    },
    /// A variable or capture reference, `{name}`.
    Var(String),
    /// `count` copies of `byte`.
    Repeat {
        /// The octet.
        byte: u8,
        /// How many.
        count: usize,
    },
    /// Octets XORed with [`XOR_KEY`].
    Xor {
        /// The plain octets (before XOR).
        plain: Vec<u8>,
        /// How the token was written.
        text: String,
    },
    /// A capture (patterns only); name `_` discards.
    Capture {
        /// Name under which the captured octets are stored.
        name: String,
        /// How many octets to take.
        kind: CaptureKind,
    },
    /// A write boundary, `;`.
    Boundary,
}

/// A parsed template or pattern.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    /// The fields, in order.
    pub tokens: Vec<Token>,
}

/// A value a template can refer to: the octets, plus a redacted label for transcripts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The octets the variable renders to.
    pub bytes: Vec<u8>,
    /// What the transcript shows instead of octets that vary between runs (ports), if anything.
    pub label: Option<String>,
    /// The socket address this value denotes, when it is one (captured BND, target).
    pub addr: Option<SocketAddr>,
}

/// Variables and captures available while a scenario runs.
pub type Vars = HashMap<String, Value>;

/// One rendered field: the octets and how the transcript shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Octets to write.
    pub bytes: Vec<u8>,
    /// Normalized text for the transcript.
    pub shown: String,
    /// A write boundary follows this field in the as-written schedule.
    pub boundary_after: bool,
}

/// A rendering or matching failure that is the scenario's fault, not the server's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// `{name}` refers to nothing set so far.
    #[error("unknown variable or capture `{{{0}}}`")]
    Unknown(String),
    /// A capture token appears in a template that is sent.
    #[error("capture `{{{0}}}` cannot be sent")]
    CaptureInSend(String),
}

impl Template {
    /// Parses the notation described in the module documentation.
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        let mut tokens = Vec::new();
        for raw in split_tokens(src)? {
            tokens.push(parse_token(&raw)?);
        }
        Ok(Template { tokens })
    }

    /// Variables this template refers to (not counting captures it defines).
    pub fn references(&self) -> Vec<&str> {
        self.tokens
            .iter()
            .filter_map(|t| match t {
                Token::Var(n) => Some(n.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Names this pattern captures.
    pub fn captures(&self) -> Vec<&str> {
        self.tokens
            .iter()
            .filter_map(|t| match t {
                Token::Capture { name, .. } if name != "_" => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Renders a template that is sent; captures are not allowed, except a method list, which is
    /// sent as the minimal list holding its required method (`01 XX`) and matched, when the
    /// runner plays the server, against whatever list the client under test offers.
    pub fn render(&self, vars: &Vars) -> Result<Vec<Field>, RenderError> {
        let mut out: Vec<Field> = Vec::new();
        for tok in &self.tokens {
            let field = match tok {
                Token::Bytes { bytes, text } => {
                    Field { bytes: bytes.clone(), shown: text.clone(), boundary_after: false }
                }
                Token::Var(name) => {
                    let v = lookup(vars, name)?;
                    Field { bytes: v.bytes.clone(), shown: show_value(name, v), boundary_after: false }
                }
                Token::Repeat { byte, count } => Field {
                    bytes: vec![*byte; *count],
                    shown: format!("{{repeat:{byte:02x}:{count}}}"),
                    boundary_after: false,
                },
                Token::Xor { plain, text } => Field {
                    bytes: plain.iter().map(|b| b ^ XOR_KEY).collect(),
                    shown: text.clone(),
                    boundary_after: false,
                },
                Token::Capture { kind: CaptureKind::Methods { required }, .. } => {
                    let m = required.unwrap_or(0x00);
                    Field { bytes: vec![0x01, m], shown: format!("01 {m:02x}"), boundary_after: false }
                }
                Token::Capture { name, .. } => return Err(RenderError::CaptureInSend(name.clone())),
                Token::Boundary => {
                    if let Some(last) = out.last_mut() {
                        last.boundary_after = true;
                    }
                    continue;
                }
            };
            out.push(field);
        }
        Ok(out)
    }

    /// Matches the start of `buf` against this pattern.
    ///
    /// Returns `Ok(None)` when `buf` is a strict prefix of something that could match, so the
    /// caller reads more; `Err` describes the first octet that cannot match.
    pub fn match_prefix(&self, buf: &[u8], vars: &Vars) -> Result<Option<Match>, Mismatch> {
        let mut pos = 0usize;
        let mut m = Match::default();
        let mut shown = Vec::new();
        for tok in &self.tokens {
            let (expected, label): (Vec<u8>, String) = match tok {
                Token::Boundary => continue,
                Token::Capture { name, kind } => {
                    let rest = &buf[pos..];
                    let len = match kind {
                        CaptureKind::Fixed(n) => *n,
                        CaptureKind::Socks4Addr => 6,
                        CaptureKind::NonZero => match rest.first() {
                            None => return Ok(None),
                            Some(0) => {
                                return Err(Mismatch {
                                    offset: pos,
                                    expected: format!("{{{name}:nonzero}}"),
                                    why: "octet 00 where a non-zero value was expected".into(),
                                })
                            }
                            Some(_) => 1,
                        },
                        CaptureKind::Methods { required } => {
                            let Some(&n) = rest.first() else { return Ok(None) };
                            let n = n as usize;
                            if rest.len() < 1 + n {
                                return Ok(None);
                            }
                            if let Some(r) = required {
                                if !rest[1..1 + n].contains(r) {
                                    return Err(Mismatch {
                                        offset: pos,
                                        expected: format!("{{{name}:methods+{r:02x}}}"),
                                        why: format!(
                                            "method {r:02x} is not among those offered ({})",
                                            hex(&rest[1..1 + n])
                                        ),
                                    });
                                }
                            }
                            1 + n
                        }
                        CaptureKind::IpAddr if rest.first() == Some(&0x03) => {
                            return Err(Mismatch {
                                offset: pos,
                                expected: format!("{{{name}:ipaddr}}"),
                                why: "ATYP 03 (a name) where an IP address was expected".into(),
                            })
                        }
                        CaptureKind::Socks5Addr | CaptureKind::IpAddr => match socks5_addr_len(rest) {
                            Ok(Some(n)) => n,
                            Ok(None) => return Ok(None),
                            Err(why) => {
                                return Err(Mismatch { offset: pos, expected: format!("{{{name}:addr}}"), why })
                            }
                        },
                    };
                    if rest.len() < len {
                        return Ok(None);
                    }
                    let bytes = rest[..len].to_vec();
                    pos += len;
                    let value = capture_value(name, kind, bytes);
                    shown.push(show_value(name, &value));
                    if name != "_" {
                        m.captures.push((name.clone(), value));
                    }
                    continue;
                }
                Token::Bytes { bytes, text } => (bytes.clone(), text.clone()),
                Token::Var(name) => {
                    // A capture made earlier in this same pattern may be referred to as well.
                    let v = m
                        .captures
                        .iter()
                        .rev()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v)
                        .or_else(|| vars.get(name))
                        .ok_or_else(|| Mismatch {
                            offset: pos,
                            expected: format!("{{{name}}}"),
                            why: RenderError::Unknown(name.clone()).to_string(),
                        })?;
                    (v.bytes.clone(), show_value(name, v))
                }
                Token::Repeat { byte, count } => (vec![*byte; *count], format!("{{repeat:{byte:02x}:{count}}}")),
                Token::Xor { plain, text } => (plain.iter().map(|b| b ^ XOR_KEY).collect(), text.clone()),
            };
            let avail = &buf[pos..];
            let n = avail.len().min(expected.len());
            if let Some(i) = (0..n).find(|&i| avail[i] != expected[i]) {
                return Err(Mismatch {
                    offset: pos + i,
                    expected: label,
                    why: format!("octet {:02x} where {:02x} was expected", avail[i], expected[i]),
                });
            }
            if avail.len() < expected.len() {
                return Ok(None);
            }
            pos += expected.len();
            shown.push(label);
        }
        m.consumed = pos;
        m.shown = shown.join(" ");
        Ok(Some(m))
    }

    /// The smallest number of octets a match needs (captures of variable size count their minimum).
    pub fn min_len(&self, vars: &Vars) -> usize {
        self.tokens
            .iter()
            .map(|t| match t {
                Token::Bytes { bytes, .. } => bytes.len(),
                Token::Var(n) => vars.get(n).map_or(0, |v| v.bytes.len()),
                Token::Repeat { count, .. } => *count,
                Token::Xor { plain, .. } => plain.len(),
                Token::Capture { kind, .. } => match kind {
                    CaptureKind::Fixed(n) => *n,
                    CaptureKind::Socks4Addr => 6,
                    CaptureKind::Socks5Addr | CaptureKind::IpAddr => 7,
                    CaptureKind::NonZero => 1,
                    CaptureKind::Methods { .. } => 2,
                },
                Token::Boundary => 0,
            })
            .sum()
    }

    /// Renders a pattern as the octets a server-role player sends, taking capture values from
    /// `vars` (the player supplies values such as its own BND address).
    pub fn render_pattern(&self, vars: &Vars) -> Result<Vec<Field>, RenderError> {
        let mut t = self.clone();
        for tok in &mut t.tokens {
            if let Token::Capture { name, kind } = tok {
                let v = vars.get(name.as_str()).cloned().unwrap_or_else(|| {
                    let n = match kind {
                        CaptureKind::Fixed(n) => *n,
                        CaptureKind::Socks4Addr => 6,
                        CaptureKind::Socks5Addr | CaptureKind::IpAddr => 7,
                        CaptureKind::NonZero => 1,
                        CaptureKind::Methods { .. } => 2,
                    };
                    let mut bytes = vec![0u8; n];
                    if matches!(kind, CaptureKind::Socks5Addr | CaptureKind::IpAddr | CaptureKind::NonZero) {
                        bytes[0] = 0x01;
                    }
                    Value { bytes, label: None, addr: None }
                });
                *tok = Token::Bytes { text: show_value(name, &v), bytes: v.bytes };
            }
        }
        t.render(vars)
    }
}

/// A successful match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    /// Octets of the buffer the pattern covered.
    pub consumed: usize,
    /// Captured values, in pattern order.
    pub captures: Vec<(String, Value)>,
    /// Normalized text for the transcript.
    pub shown: String,
}

/// Where and why received octets do not fit a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Offset of the first octet that does not fit.
    pub offset: usize,
    /// The pattern field that did not match.
    pub expected: String,
    /// Explanation.
    pub why: String,
}

fn lookup<'a>(vars: &'a Vars, name: &str) -> Result<&'a Value, RenderError> {
    vars.get(name).ok_or_else(|| RenderError::Unknown(name.to_string()))
}

/// The transcript text of a value: a label when it varies between runs, hex otherwise.
fn show_value(name: &str, v: &Value) -> String {
    match &v.label {
        Some(l) => l.clone(),
        None if name == "_" => hex(&v.bytes),
        None => format!("{{{name}}}"),
    }
}

/// Builds the value of a capture, decoding addresses so later steps can connect or send to them.
fn capture_value(name: &str, kind: &CaptureKind, bytes: Vec<u8>) -> Value {
    let addr = match kind {
        CaptureKind::Socks5Addr | CaptureKind::IpAddr => decode_socks5_addr(&bytes),
        CaptureKind::Socks4Addr => {
            let port = u16::from_be_bytes([bytes[0], bytes[1]]);
            let ip = Ipv4Addr::new(bytes[2], bytes[3], bytes[4], bytes[5]);
            Some(SocketAddr::new(IpAddr::V4(ip), port))
        }
        CaptureKind::Fixed(_) | CaptureKind::NonZero | CaptureKind::Methods { .. } => None,
    };
    // Ports differ on every run, so transcripts show the address kind and IP but never the port.
    let label = match (kind, addr) {
        (CaptureKind::Socks5Addr | CaptureKind::IpAddr, Some(a)) => {
            let ty = if a.is_ipv4() { "ipv4" } else { "ipv6" };
            Some(format!("{{{name}={ty} {}:PORT}}", a.ip()))
        }
        (CaptureKind::Socks5Addr, None) => Some(format!("{{{name}=domain {}}}", hex(&bytes))),
        (CaptureKind::Socks4Addr, Some(a)) => Some(format!("{{{name}=PORT {}}}", a.ip())),
        // The exact failure code is part of what the transcript should show.
        (CaptureKind::NonZero, _) => Some(format!("{{{name}={}}}", hex(&bytes))),
        // Which methods a client offers is part of its behaviour: keep them in the transcript.
        (CaptureKind::Methods { .. }, _) => Some(format!("{{{name}={}}}", hex(&bytes))),
        _ if name == "_" => Some("{_}".to_string()),
        _ => Some(format!("{{{name}}}")),
    };
    Value { bytes, label, addr }
}

/// Length of a SOCKS5 address (ATYP .. PORT) at the start of `b`, `None` when more octets are
/// needed: the reference codec's rule, so the harness and the code under test never disagree.
fn socks5_addr_len(b: &[u8]) -> Result<Option<usize>, String> {
    Address::wire_len(b).map_err(|e| e.to_string())
}

/// Decodes an IPv4 or IPv6 SOCKS5 address that fills `b`; domain names have no socket address.
pub fn decode_socks5_addr(b: &[u8]) -> Option<SocketAddr> {
    Address::decode_exact(b)?.socket_addr()
}

/// Encodes a socket address as a SOCKS5 ATYP + address + port, exactly as given (a v4-mapped
/// IPv6 address stays ATYP 04: a scenario sees the address the harness really has).
pub fn encode_socks5_addr(a: SocketAddr) -> Vec<u8> {
    let addr = Address { host: Host::Ip(a.ip()), port: a.port() };
    // An IP address always encodes; only over-long names can fail.
    addr.to_bytes().unwrap_or_default()
}

/// Lower-case hex without separators (the workspace's one hex, `testkit::hex`).
pub use testkit::hex::encode as hex;
/// Hex with a space between octets, for failure messages (truncated past `max` octets).
pub use testkit::hex::spaced as hex_spaced;

fn split_tokens(src: &str) -> Result<Vec<String>, TemplateError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote = false;
    let mut brace = 0usize;
    let mut escape = false;
    for c in src.chars() {
        if quote {
            cur.push(c);
            if escape {
                escape = false;
            } else if c == '\\' {
                escape = true;
            } else if c == '\'' {
                quote = false;
            }
            continue;
        }
        match c {
            '\'' => {
                quote = true;
                cur.push(c);
            }
            '{' | '(' => {
                brace += 1;
                cur.push(c);
            }
            '}' | ')' => {
                brace = brace.saturating_sub(1);
                cur.push(c);
            }
            ';' if brace == 0 => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                out.push(";".into());
            }
            c if c.is_whitespace() && brace == 0 => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if quote {
        return Err(TemplateError { token: cur, why: "unterminated quote".into() });
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

fn parse_token(raw: &str) -> Result<Token, TemplateError> {
    let err = |why: &str| TemplateError { token: raw.to_string(), why: why.to_string() };
    if raw == ";" {
        return Ok(Token::Boundary);
    }
    if raw.starts_with('\'') {
        let bytes = parse_quoted(raw).map_err(|w| err(&w))?;
        return Ok(Token::Bytes { bytes, text: raw.to_string() });
    }
    if let Some(inner) = raw.strip_prefix("xor(").and_then(|r| r.strip_suffix(')')) {
        let plain = if inner.starts_with('\'') {
            parse_quoted(inner).map_err(|w| err(&w))?
        } else {
            parse_hex(inner).map_err(|w| err(&w))?
        };
        return Ok(Token::Xor { plain, text: raw.to_string() });
    }
    if let Some(inner) = raw.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
        if let Some(rest) = inner.strip_prefix("repeat:") {
            let (b, n) = rest.split_once(':').ok_or_else(|| err("expected {repeat:HH:COUNT}"))?;
            let byte = u8::from_str_radix(b, 16).map_err(|_| err("repeat octet is not hex"))?;
            let count: usize = n.parse().map_err(|_| err("repeat count is not a number"))?;
            if count > 1 << 20 {
                return Err(err("repeat count above 1 MiB"));
            }
            return Ok(Token::Repeat { byte, count });
        }
        let valid_name = |n: &str| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if let Some((name, kind)) = inner.split_once(':') {
            if !valid_name(name) {
                return Err(err("bad capture name"));
            }
            let kind = match kind {
                "addr" => CaptureKind::Socks5Addr,
                "addr4" => CaptureKind::Socks4Addr,
                "ipaddr" => CaptureKind::IpAddr,
                "nonzero" => CaptureKind::NonZero,
                "methods" => CaptureKind::Methods { required: None },
                m if m.starts_with("methods+") => CaptureKind::Methods {
                    required: Some(
                        u8::from_str_radix(&m["methods+".len()..], 16)
                            .map_err(|_| err("`methods+XX` needs a hex method, e.g. methods+00"))?,
                    ),
                },
                n => {
                    CaptureKind::Fixed(n.parse().map_err(|_| err("capture size must be a number, `addr` or `addr4`"))?)
                }
            };
            return Ok(Token::Capture { name: name.to_string(), kind });
        }
        if !valid_name(inner) {
            return Err(err("bad variable name"));
        }
        return Ok(Token::Var(inner.to_string()));
    }
    let bytes = parse_hex(raw).map_err(|w| err(&w))?;
    Ok(Token::Bytes { bytes, text: raw.to_ascii_lowercase() })
}

fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    // Byte-offset slicing below is only sound on ASCII; anything else is not hex anyway (the
    // fuzzer found `iÏ:` splitting a UTF-8 character).
    if !s.is_ascii() {
        return Err("not hex".into());
    }
    if s.len() % 2 != 0 {
        return Err("odd number of hex digits".into());
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| "not hex".to_string())).collect()
}

fn parse_quoted(s: &str) -> Result<Vec<u8>, String> {
    let inner = s.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')).ok_or("expected a quoted text 'like this'")?;
    let mut out = Vec::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut b = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            continue;
        }
        match chars.next() {
            Some('n') => out.push(b'\n'),
            Some('r') => out.push(b'\r'),
            Some('t') => out.push(b'\t'),
            Some('0') => out.push(0),
            Some('\\') => out.push(b'\\'),
            Some('\'') => out.push(b'\''),
            Some('x') => {
                let h: String = chars.by_ref().take(2).collect();
                out.push(u8::from_str_radix(&h, 16).map_err(|_| format!("bad escape \\x{h}"))?);
            }
            other => return Err(format!("unknown escape \\{}", other.map(String::from).unwrap_or_default())),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        let mut v = Vars::new();
        v.insert(
            "target.port".into(),
            Value { bytes: vec![0x1f, 0x90], label: Some("{target.port}".into()), addr: None },
        );
        v
    }

    #[test]
    fn renders_hex_text_vars_and_boundaries() {
        let t = Template::parse("05 01 00 01 7f000001 {target.port} ; 'hi\\n' xor(00ff) {repeat:41:3}").unwrap();
        let f = t.render(&vars()).unwrap();
        let all: Vec<u8> = f.iter().flat_map(|f| f.bytes.clone()).collect();
        assert_eq!(all, [5, 1, 0, 1, 0x7f, 0, 0, 1, 0x1f, 0x90, b'h', b'i', b'\n', 0xA5, 0x5A, 0x41, 0x41, 0x41]);
        assert!(f[5].boundary_after, "`;` marks the field before it");
        assert_eq!(f[5].shown, "{target.port}");
    }

    #[test]
    fn pattern_needs_more_then_matches_with_addr_capture() {
        let p = Template::parse("05 00 00 {bnd:addr}").unwrap();
        let v = vars();
        assert_eq!(p.match_prefix(&[5, 0, 0, 1, 127, 0], &v), Ok(None));
        let m = p.match_prefix(&[5, 0, 0, 1, 127, 0, 0, 1, 0x30, 0x39, 0xEE], &v).unwrap().unwrap();
        assert_eq!(m.consumed, 10);
        assert_eq!(m.captures[0].1.addr, Some("127.0.0.1:12345".parse().unwrap()));
        assert_eq!(m.shown, "05 00 00 {bnd=ipv4 127.0.0.1:PORT}");
    }

    #[test]
    fn pattern_reports_first_bad_octet() {
        let p = Template::parse("05 00").unwrap();
        let e = p.match_prefix(&[5, 0xff], &vars()).unwrap_err();
        assert_eq!(e.offset, 1);
        let p = Template::parse("05 00 00 {bnd:addr}").unwrap();
        assert!(p.match_prefix(&[5, 0, 0, 9], &vars()).is_err(), "ATYP 09 cannot start an address");
    }

    #[test]
    fn rejects_malformed_tokens() {
        for bad in ["0", "zz", "'open", "{a:b}", "{repeat:4g:3}", "{}"] {
            assert!(Template::parse(bad).is_err(), "{bad} should not parse");
        }
    }
}
