//! `--only` patterns: which scenario ids (`check`, `check-client`) or lab cell ids
//! (`cargo xtask interop`) to run. One syntax everywhere, the `globset` crate's:
//!
//! - `*` matches any run of characters, dots included (`rfc1928.*`, `*.curl.*`);
//! - `?` matches one character, `[abc]` one of a class, `{a,b}` either alternative;
//! - a pattern without these matches the whole id exactly (never a prefix: `rfc1928.connect`
//!   does not select `rfc1928.connect.ipv6`).
//!
//! An empty list selects everything; an id is selected when any pattern matches it.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// The `--help` sentence every `--only` flag uses, so the tools describe one semantics alike.
pub const ONLY_HELP: &str = "Only ids matching this glob (repeatable): `*` any run of characters \
                             (dots too), `?` one, `[abc]` a class, `{a,b}` alternatives; without \
                             wildcards the whole id exactly";

/// A compiled list of `--only` patterns.
#[derive(Debug, Clone)]
pub struct Only {
    set: Option<GlobSet>,
}

/// A pattern that is not a valid glob (an unclosed `[` or `{`).
#[derive(Debug, thiserror::Error)]
#[error("bad --only pattern `{pattern}`: {message}")]
pub struct BadPattern {
    /// The pattern as given.
    pub pattern: String,
    /// What is wrong with it.
    pub message: String,
}

impl Only {
    /// Compiles `patterns`; an empty list selects every id.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Only, BadPattern> {
        if patterns.is_empty() {
            return Ok(Only { set: None });
        }
        let mut set = GlobSetBuilder::new();
        for p in patterns {
            set.add(compile(p.as_ref())?);
        }
        let set = set.build().map_err(|e| BadPattern { pattern: patterns_joined(patterns), message: e.to_string() })?;
        Ok(Only { set: Some(set) })
    }

    /// Whether no pattern was given (everything is selected).
    pub fn is_empty(&self) -> bool {
        self.set.is_none()
    }

    /// Whether `id` is selected.
    pub fn matches(&self, id: &str) -> bool {
        self.set.as_ref().is_none_or(|s| s.is_match(id))
    }
}

/// One pattern. Ids are not paths: `*` must cross every character, and `\` is a literal.
fn compile(pattern: &str) -> Result<Glob, BadPattern> {
    GlobBuilder::new(pattern)
        .literal_separator(false)
        .backslash_escape(false)
        .build()
        .map_err(|e| BadPattern { pattern: pattern.to_string(), message: e.kind().to_string() })
}

fn patterns_joined<S: AsRef<str>>(patterns: &[S]) -> String {
    patterns.iter().map(|p| p.as_ref()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(p: &[&str]) -> Only {
        Only::new(p).expect("valid patterns")
    }

    #[test]
    fn without_patterns_everything_is_selected() {
        assert!(only(&[]).matches("anything.at.all"));
        assert!(only(&[]).is_empty());
    }

    #[test]
    fn a_plain_pattern_is_the_whole_id_not_a_prefix() {
        let o = only(&["socks4.curl.v2ray5"]);
        assert!(o.matches("socks4.curl.v2ray5"));
        assert!(!o.matches("socks4a.curl.v2ray5"));
        assert!(!o.matches("socks4.curl.v2ray5.extra"));
    }

    #[test]
    fn stars_match_anywhere_and_across_dots() {
        assert!(only(&["*.curl.*"]).matches("userpass.curl.reference"));
        assert!(only(&["scenario.v2ray4.*"]).matches("scenario.v2ray4.rfc1928.connect.refused"));
        assert!(!only(&["scenario.v2ray4.*"]).matches("scenario.v2ray5.rfc1928.connect.refused"));
        // The harness's old "trailing star is a prefix" patterns keep their meaning.
        assert!(only(&["rfc1928.*"]).matches("rfc1928.connect.ipv6"));
        assert!(!only(&["rfc1928.*"]).matches("rfc1929.login"));
    }

    #[test]
    fn any_pattern_selects_and_classes_and_alternatives_work() {
        let o = only(&["a.1", "b.{x,y}", "c.[12]"]);
        assert!(o.matches("a.1") && o.matches("b.y") && o.matches("c.2"));
        assert!(!o.matches("b.z") && !o.matches("c.3"));
    }

    #[test]
    fn an_unclosed_class_is_an_error_naming_the_pattern() {
        let e = Only::new(&["ok", "bad.[1"]).unwrap_err();
        assert_eq!(e.pattern, "bad.[1");
    }
}
