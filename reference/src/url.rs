//! gost-style service (`-L`) and node (`-F`) URLs (docs/gost.md §9.1):
//! `scheme://[user:pass@][host]:port[/target[,target…]][?key=value&…]`.
//!
//! Hand-written rather than with the `url` crate: gost URLs allow an empty host (`socks5://:1080`)
//! and a path that is a `host:port` list, and errors must name the exact bad part.

use std::collections::BTreeMap;
use std::fmt;

/// A URL that could not be understood; `part` names the offending piece.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url:?}: {part}: {message}")]
pub struct UrlError {
    /// The whole URL as given.
    pub url: String,
    /// Which part is wrong (scheme, host, port, user, query key …).
    pub part: String,
    /// What is wrong with it.
    pub message: String,
}

/// A parsed URL.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    /// The scheme, lower-cased (`socks5`, `tcp`, `rtcp` …).
    pub scheme: String,
    /// Percent-decoded `user:pass`.
    pub auth: Option<(String, String)>,
    /// Host, possibly empty (all interfaces / "the default"); IPv6 without brackets.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Forward targets from the path (`/host:port,host:port`).
    pub targets: Vec<String>,
    /// Query parameters, in key order.
    pub params: BTreeMap<String, String>,
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password stays out of logs and error output.
        f.debug_struct("ProxyUrl")
            .field("scheme", &self.scheme)
            .field("user", &self.auth.as_ref().map(|(u, _)| u))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("targets", &self.targets)
            .field("params", &self.params)
            .finish()
    }
}

impl ProxyUrl {
    /// Parses `input`.
    pub fn parse(input: &str) -> Result<Self, UrlError> {
        let err = |part: &str, message: String| UrlError { url: redact(input), part: part.into(), message };
        let (scheme, rest) =
            input.split_once("://").ok_or_else(|| err("scheme", "missing scheme:// (e.g. socks5://:1080)".into()))?;
        if scheme.is_empty() || !scheme.chars().all(|c| c.is_ascii_alphanumeric() || c == '+') {
            return Err(err("scheme", format!("{scheme:?} is not a scheme")));
        }
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let (auth, hostport) = match authority.rsplit_once('@') {
            Some((a, hp)) => {
                let (u, p) = a.split_once(':').unwrap_or((a, ""));
                let user = percent_decode(u).map_err(|m| err("user", m))?;
                let pass = percent_decode(p).map_err(|m| err("password", m))?;
                (Some((user, pass)), hp)
            }
            None => (None, authority),
        };
        let (host, port) = split_host_port(hostport).map_err(|(part, m)| err(part, m))?;
        let targets = match path {
            None | Some("") => Vec::new(),
            Some(p) => p.split(',').map(str::to_string).collect(),
        };
        for t in &targets {
            split_host_port(t).map_err(|(part, m)| err(&format!("target {t:?} {part}"), m))?;
        }
        let mut params = BTreeMap::new();
        for kv in query.into_iter().flat_map(|q| q.split('&')).filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, "true"));
            let v = percent_decode(v).map_err(|m| err(&format!("query {k}"), m))?;
            params.insert(k.to_string(), v);
        }
        Ok(Self { scheme: scheme.to_ascii_lowercase(), auth, host, port, targets, params })
    }

    /// The error for a bad query parameter of this URL.
    pub fn param_error(&self, key: &str, message: impl Into<String>) -> UrlError {
        UrlError { url: self.to_string(), part: format!("query {key}"), message: message.into() }
    }

    /// A boolean parameter (`true/false/1/0`, gost's forms); absent means `default`.
    pub fn bool_param(&self, key: &str, default: bool) -> Result<bool, UrlError> {
        match self.params.get(key).map(String::as_str) {
            None => Ok(default),
            Some("true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(v) => Err(self.param_error(key, format!("{v:?} is not true/false"))),
        }
    }

    /// A duration parameter (`10s`, `500ms`, `2m`, or plain seconds).
    pub fn duration_param(&self, key: &str) -> Result<Option<std::time::Duration>, UrlError> {
        self.params.get(key).map(|v| parse_duration(v).map_err(|m| self.param_error(key, m))).transpose()
    }

    /// `host:port` with brackets for IPv6, for binding or dialing.
    pub fn host_port(&self, default_host: &str) -> String {
        let host = if self.host.is_empty() { default_host } else { &self.host };
        if host.contains(':') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme)?;
        if let Some((u, _)) = &self.auth {
            write!(f, "{u}:***@")?;
        }
        write!(f, "{}", self.host_port(""))?;
        if !self.targets.is_empty() {
            write!(f, "/{}", self.targets.join(","))?;
        }
        Ok(())
    }
}

/// Splits `host:port`, `[v6]:port` or `:port`.
pub fn split_host_port(s: &str) -> Result<(String, u16), (&'static str, String)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once(']').ok_or(("host", "unclosed [ in IPv6 address".to_string()))?;
        let p = p.strip_prefix(':').ok_or(("port", "missing :port after ]".to_string()))?;
        (h, p)
    } else {
        s.rsplit_once(':').ok_or(("port", format!("{s:?} has no :port")))?
    };
    // Brackets belong around an IPv6 literal only, and control characters are never part of a
    // host: a host holding either prints as a URL that no longer parses (found by fuzzing).
    if host.contains(['/', '@', '?', ' ', '[', ']']) || host.chars().any(char::is_control) {
        return Err(("host", format!("{host:?} is not a host name")));
    }
    let port = port.parse::<u16>().map_err(|_| ("port", format!("{port:?} is not a port number (0-65535)")))?;
    Ok((host.to_string(), port))
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("truncated %-escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad %-escape %{hex}"))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "not UTF-8 after %-decoding".to_string())
}

/// Parses `10s`, `500ms`, `2m`, `1h` or a plain number of seconds.
pub fn parse_duration(v: &str) -> Result<std::time::Duration, String> {
    let (num, unit) = v.find(|c: char| !c.is_ascii_digit() && c != '.').map_or((v, "s"), |i| v.split_at(i));
    let n: f64 = num.parse().map_err(|_| format!("{v:?} is not a duration (e.g. 10s, 500ms)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{v:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    std::time::Duration::try_from_secs_f64(secs).map_err(|_| format!("{v:?} is out of range"))
}

fn redact(url: &str) -> String {
    // Keep a password out of error messages: user:pass@ becomes user:***@.
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let auth = &url[s + 3..at];
            match auth.split_once(':') {
                Some((u, _)) => format!("{}{}:***{}", &url[..s + 3], u, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gost_service_urls() {
        let u = ProxyUrl::parse("socks5://user:p%40ss@:1080?bind=true&udp=true").unwrap();
        assert_eq!(u.scheme, "socks5");
        assert_eq!(u.auth, Some(("user".into(), "p@ss".into())));
        assert_eq!((u.host.as_str(), u.port), ("", 1080));
        assert!(u.bool_param("bind", false).unwrap());
        let f = ProxyUrl::parse("tcp://127.0.0.1:8080/example.com:80,[::1]:81").unwrap();
        assert_eq!(f.targets, vec!["example.com:80", "[::1]:81"]);
        let v6 = ProxyUrl::parse("socks4a://[::1]:1080").unwrap();
        assert_eq!((v6.host.as_str(), v6.host_port("")), ("::1", "[::1]:1080".to_string()));
    }

    #[test]
    fn errors_name_the_bad_part_and_hide_the_password() {
        let e = ProxyUrl::parse("socks5://u:secret@:99999").unwrap_err();
        assert_eq!(e.part, "port");
        assert!(!e.to_string().contains("secret"), "{e}");
        assert_eq!(ProxyUrl::parse(":1080").unwrap_err().part, "scheme");
        assert_eq!(ProxyUrl::parse("tcp://:80/nohost").unwrap_err().part, "target \"nohost\" port");
        let u = ProxyUrl::parse("socks5://:1?bind=maybe").unwrap();
        assert_eq!(u.bool_param("bind", false).unwrap_err().part, "query bind");
        assert_eq!(
            ProxyUrl::parse("socks5://:1?readTimeout=3x").unwrap().duration_param("readTimeout").unwrap_err().part,
            "query readTimeout"
        );
    }

    #[test]
    fn hosts_with_stray_brackets_or_control_characters_are_refused() {
        // The fuzz target's round trip: such a host printed as `[host]:port` and failed to re-parse.
        assert_eq!(ProxyUrl::parse("tcp://127.0.0.1[::1]V:81").unwrap_err().part, "host");
        assert_eq!(ProxyUrl::parse("tcp://a\u{17}b:81").unwrap_err().part, "host");
        assert_eq!(ProxyUrl::parse("tcp://:80/x]:1").unwrap_err().part, "target \"x]:1\" host");
        assert_eq!(ProxyUrl::parse("tcp://[::1]:81").unwrap().host, "::1");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15s").unwrap().as_secs(), 15);
        assert_eq!(parse_duration("250ms").unwrap().as_millis(), 250);
        assert_eq!(parse_duration("2m").unwrap().as_secs(), 120);
        assert_eq!(parse_duration("7").unwrap().as_secs(), 7);
    }
}
