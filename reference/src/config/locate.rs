//! Finding the line and column of a model path (`services[0].handler.metadata.bnd`) in the text
//! it was read from, for errors found after parsing (an unknown metadata key, a chain name that
//! does not exist). Neither serde_yaml nor serde_json keeps spans, but both put the position of
//! the parser into any error raised while deserializing; so the text is walked again with a
//! visitor that follows the path and raises an error once it reaches the last key.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A path segment: a map key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Splits `a.b[2].c` into segments.
fn segments(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Seg::Key(name.to_string()));
        }
        while let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else { break };
            if let Ok(n) = r[..end].parse() {
                out.push(Seg::Index(n));
            }
            rest = &r[end + 1..];
        }
    }
    out
}

const FOUND: &str = "\u{0}found";

struct Walk<'p>(&'p [Seg]);

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.0.is_empty() {
            d.deserialize_any(Found)
        } else {
            d.deserialize_any(self)
        }
    }
}

/// The value at the end of the path: fails whatever it is.
struct Found;

impl<'de> Visitor<'de> for Found {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(FOUND)
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(serde::de::Error::custom(FOUND))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(serde::de::Error::custom(FOUND))
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("anything")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<KeyString>()? {
            // Metadata keys may hold dots (`udp.bufferSize`): a key matches as many segments.
            let parts: Vec<Seg> = key.0.split('.').map(|s| Seg::Key(s.to_string())).collect();
            if self.0.len() >= parts.len() && self.0[..parts.len()] == parts[..] {
                let rest = &self.0[parts.len()..];
                // At the end of the path, fail inside the value: parsers report the position of
                // the value being read, the closest they get to the key.
                map.next_value_seed(Walk(rest))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            if let Some(Seg::Index(n)) = self.0.first() {
                if *n == i {
                    return seq.next_element_seed(Walk(&self.0[1..])).map(|_| ());
                }
            }
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// A map key of any scalar type, as text.
struct KeyString(String);

impl<'de> serde::Deserialize<'de> for KeyString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<KeyString, E> {
                Ok(KeyString(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// The `line:column` of `path` in a YAML or JSON `text` (JSON when it starts with `{`), if found.
pub fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    let segs = segments(path);
    if segs.is_empty() {
        return None;
    }
    if text.trim_start().starts_with('{') {
        let mut d = serde_json::Deserializer::from_str(text);
        match Walk(&segs).deserialize(&mut d) {
            Err(e) if e.to_string().contains(FOUND) => Some((e.line(), e.column())),
            _ => None,
        }
    } else {
        match super::yaml::walk(text, Walk(&segs)) {
            Err(e) if e.message.contains(FOUND) && e.line > 0 => Some((e.line, e.column)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "services:\n- name: a\n  handler:\n    type: socks5\n    metadata:\n      udp.bufferSize: 1\n      bnd: true\n- name: b\n  handler: {type: tcp, chain: nope}\n";

    #[test]
    fn finds_block_and_flow_keys_and_dotted_metadata_keys() {
        assert_eq!(locate(YAML, "services[0].handler.metadata.bnd").map(|p| p.0), Some(7));
        assert_eq!(locate(YAML, "services[0].handler.metadata.udp.bufferSize").map(|p| p.0), Some(6));
        assert_eq!(locate(YAML, "services[1].handler.chain").map(|p| p.0), Some(9));
        assert_eq!(locate(YAML, "services[2].handler"), None);
        assert_eq!(locate(YAML, "chains[0]"), None);
        let json = "{\n \"services\": [\n  {\"name\": \"a\",\n   \"addr\": \":1\"}\n ]\n}";
        assert_eq!(locate(json, "services[0].addr").map(|p| p.0), Some(4));
    }
}
