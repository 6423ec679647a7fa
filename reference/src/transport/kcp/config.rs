//! [`Config`]: gost's kcp settings and its `kcp.*` metadata keys (docs/kcp.md "Configuration").

use std::collections::BTreeMap;
use std::time::Duration;

use super::crypt::Cipher;

/// Every setting of a kcp listener or dialer. [`Config::default`] is what a gost node with no
/// `kcp.*` keys actually runs with (gost's metadata parser overwrites its documented defaults
/// with empty values, docs/kcp.md): empty key, AES, no mode preset, kcp-go's MTU 1400 and
/// windows of 32, FEC 10/3, snappy on, smux v1. [`Config::documented`] is gost's documented
/// `DefaultConfig`, which is also kcptun's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Pre-shared key, stretched by PBKDF2 (`kcp.key`).
    pub key: String,
    /// Block cipher (`kcp.crypt`).
    pub crypt: Cipher,
    /// Mode preset name (`kcp.mode`: normal, fast, fast2, fast3; `""`/manual: none). Already
    /// applied to `nodelay`/`interval`/`resend`/`nc` by [`Config::from_params`].
    pub mode: String,
    /// Largest datagram we send, headers included (`kcp.mtu`, ≤ 1500).
    pub mtu: usize,
    /// Send window in segments (`kcp.sndwnd`).
    pub sndwnd: u16,
    /// Receive window in segments (`kcp.rcvwnd`).
    pub rcvwnd: u16,
    /// FEC data shards per group (`kcp.datashard`); 0 with `parityshard` 0 disables FEC.
    pub datashard: usize,
    /// FEC parity shards per group (`kcp.parityshard`).
    pub parityshard: usize,
    /// DSCP bits for our datagrams (`kcp.dscp`).
    pub dscp: u8,
    /// No snappy framing (`kcp.nocomp`); must match the peer.
    pub nocomp: bool,
    /// Send ACKs right after input rather than at the next interval (`kcp.acknodelay`).
    pub acknodelay: bool,
    /// KCP nodelay (`kcp.nodelay`).
    pub nodelay: bool,
    /// KCP flush interval in ms, clamped to 10..=5000 as kcp-go does (`kcp.interval`).
    pub interval: u32,
    /// Fast-resend threshold in duplicate ACKs, 0 = off (`kcp.resend`).
    pub resend: u32,
    /// No congestion window (`kcp.nc`).
    pub nc: bool,
    /// UDP socket buffer bytes (`kcp.sockbuf`).
    pub sockbuf: usize,
    /// smux keepalive interval (`kcp.keepalive`, seconds; 0 ⇒ 10).
    pub keepalive: Duration,
    /// smux version, 1 or 2 (`kcp.smuxver`).
    pub smuxver: u8,
    /// smux receive buffer (`kcp.smuxbuf`).
    pub smuxbuf: usize,
    /// smux per-stream buffer (`kcp.streambuf`).
    pub streambuf: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            key: String::new(),
            crypt: Cipher::Aes256,
            mode: String::new(),
            mtu: 1400,
            sndwnd: 32,
            rcvwnd: 32,
            datashard: 10,
            parityshard: 3,
            dscp: 0,
            nocomp: false,
            acknodelay: false,
            nodelay: false,
            interval: 10,
            resend: 0,
            nc: false,
            sockbuf: 4_194_304,
            keepalive: Duration::from_secs(10),
            smuxver: 1,
            smuxbuf: 4_194_304,
            streambuf: 2_097_152,
        }
    }
}

fn parse_num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T, String> {
    v.trim().parse().map_err(|_| format!("kcp: bad value {v:?} for {key}"))
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "" | "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("kcp: bad boolean {v:?} for {key}")),
    }
}

impl Config {
    /// gost's documented `DefaultConfig` (= kcptun's defaults): key `it's a secrect`, AES,
    /// mode fast, MTU 1350, windows 1024.
    pub fn documented() -> Self {
        let mut c = Self { key: "it's a secrect".into(), mtu: 1350, sndwnd: 1024, rcvwnd: 1024, ..Self::default() };
        c.apply_mode("fast").expect("fast is a known mode");
        c
    }

    /// Applies a mode preset (gost's `Config.Init`).
    fn apply_mode(&mut self, mode: &str) -> Result<(), String> {
        let (nodelay, interval, resend, nc) = match mode {
            "" | "manual" => {
                self.mode = mode.into();
                return Ok(());
            }
            "normal" => (false, 40, 2, true),
            "fast" => (false, 30, 2, true),
            "fast2" => (true, 20, 2, true),
            "fast3" => (true, 10, 2, true),
            other => return Err(format!("kcp: unknown mode {other:?} (normal, fast, fast2, fast3, manual)")),
        };
        self.mode = mode.into();
        self.nodelay = nodelay;
        self.interval = interval;
        self.resend = resend;
        self.nc = nc;
        Ok(())
    }

    /// Builds a config from URL query / metadata pairs, over [`Config::default`]. Keys may
    /// carry gost's `kcp.` prefix or not; keys of other layers are ignored. Like gost, the
    /// mode preset wins over explicit nodelay/interval/resend/nc.
    pub fn from_params(params: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut c = Self::default();
        let mut mode = None;
        for (k, v) in params {
            let key = k.strip_prefix("kcp.").unwrap_or(k);
            match key {
                "key" => c.key = v.clone(),
                "crypt" => c.crypt = Cipher::parse(v)?,
                "mode" => mode = Some(v.clone()),
                "mtu" => {
                    let mtu: usize = parse_num(k, v)?;
                    // kcp-go refuses an MTU above 1500 or below 50 and keeps its 1400.
                    if !(50..=1500).contains(&mtu) {
                        return Err(format!("kcp: mtu {mtu} outside 50..=1500"));
                    }
                    c.mtu = mtu;
                }
                "sndwnd" => c.sndwnd = parse_num::<u16>(k, v)?.max(1),
                "rcvwnd" => c.rcvwnd = parse_num::<u16>(k, v)?.max(1),
                "datashard" | "ds" => c.datashard = parse_num(k, v)?,
                "parityshard" | "ps" => c.parityshard = parse_num(k, v)?,
                "dscp" => c.dscp = parse_num::<u8>(k, v)?.min(63),
                "nocomp" => c.nocomp = parse_bool(k, v)?,
                "acknodelay" => c.acknodelay = parse_bool(k, v)?,
                "nodelay" => c.nodelay = parse_num::<u32>(k, v)? != 0,
                "interval" => c.interval = parse_num::<u32>(k, v)?.clamp(10, 5000),
                "resend" => c.resend = parse_num(k, v)?,
                "nc" => c.nc = parse_num::<u32>(k, v)? != 0,
                "sockbuf" => c.sockbuf = parse_num(k, v)?,
                "keepalive" => {
                    let s: u64 = parse_num(k, v)?;
                    c.keepalive = Duration::from_secs(if s == 0 { 10 } else { s });
                }
                "smuxver" => {
                    c.smuxver = match parse_num::<u8>(k, v)? {
                        0 | 1 => 1,
                        2 => 2,
                        n => return Err(format!("kcp: smuxver {n} (1 or 2)")),
                    }
                }
                "smuxbuf" => c.smuxbuf = parse_num(k, v)?,
                "streambuf" => c.streambuf = parse_num(k, v)?,
                "tcp" if parse_bool(k, v)? => return Err("kcp: tcp (fake-TCP framing) is not supported".into()),
                _ => {}
            }
        }
        if let Some(m) = mode {
            c.apply_mode(&m)?;
        }
        c.check()?;
        Ok(c)
    }

    /// Parses a URL query string (`kcp.key=x&kcp.mode=fast`).
    pub fn from_query(query: &str) -> Result<Self, String> {
        let mut params = BTreeMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            params.insert(unescape(k), unescape(v));
        }
        Self::from_params(&params)
    }

    /// Whether FEC headers are sent (kcp-go: both shard counts > 0).
    pub fn fec(&self) -> bool {
        self.datashard > 0 && self.parityshard > 0
    }

    fn check(&self) -> Result<(), String> {
        if self.fec() && self.datashard + self.parityshard > 256 {
            return Err("kcp: datashard + parityshard must be ≤ 256".into());
        }
        if self.mtu < super::HEADER_ROOM + super::segment::HEADER_LEN + 8 {
            return Err(format!("kcp: mtu {} leaves no room for data", self.mtu));
        }
        Ok(())
    }
}

/// Percent-decoding for query values (`%27` in `it%27s a secrect`, `+` as space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_gosts_effective_ones_and_keys_apply() {
        let c = Config::from_query("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!((c.key.as_str(), c.mtu, c.sndwnd, c.datashard, c.parityshard), ("", 1400, 32, 10, 3));
        let c = Config::from_query("kcp.key=it%27s+a+secrect&kcp.mode=fast3&kcp.nocomp=true&mtu=1350&kcp.crypt=none")
            .unwrap();
        assert_eq!(c.key, "it's a secrect");
        assert_eq!((c.nodelay, c.interval, c.resend, c.nc), (true, 10, 2, true));
        assert!(c.nocomp);
        assert_eq!(c.mtu, 1350);
        assert_eq!(c.crypt, Cipher::None);
        assert_eq!(Config::documented().interval, 30);
    }

    #[test]
    fn bad_values_are_clear_errors() {
        assert!(Config::from_query("kcp.mtu=9000").unwrap_err().contains("mtu"));
        assert!(Config::from_query("kcp.mode=warp").unwrap_err().contains("mode"));
        assert!(Config::from_query("kcp.sndwnd=x").unwrap_err().contains("sndwnd"));
        assert!(Config::from_query("kcp.tcp=true").is_err());
        assert!(Config::from_query("kcp.crypt=xtea").is_err());
        assert!(Config::from_query("kcp.datashard=200&kcp.parityshard=100").is_err());
    }
}
