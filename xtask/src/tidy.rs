//! `cargo xtask tidy`: checks that keep the tree readable on its own.
//!
//! Every check is line-based and deliberately simple, so a violation is easy to understand and
//! to fix. Each one prints as `file:line: [rule] message`. The same checks run as a unit test
//! ([`tests::tree_is_tidy`]), so `cargo test` fails on a violation too.
//!
//! - `scenario-name`: a scenario's id starts with its folder name, and its file name shares at
//!   least one word with the rest of the id (`socks4/connect-banner.yaml` ↔
//!   `socks4.connect.reply-before-target-bytes`), so either can be found from the other.
//! - `doc-comment`: every `pub` fn, struct, enum, const, trait, type and mod in `harness/src`
//!   and `reference/src` has a `///` comment (or, for `pub mod name;`, a `//!` at the top of the
//!   module's file).
//! - `catalogue-id`: every catalogue id cited (`D-06`, `V-02a`, …) has a heading in
//!   `docs/catalogue.md`.
//! - `outside-path`: nothing cites the research notes that live outside the repository; cite
//!   `docs/` instead.
//! - `unwrap`: an `.unwrap()` outside tests says why it cannot fail, in a `// ` comment on the
//!   same line or the line before.
//! - `readme-command`: every `cargo xtask X`, `sockslab X` and `socksref …` command in
//!   README.md's `sh` blocks names a subcommand (or, for socksref, a flag) that exists.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::CommandFactory;

/// Folders whose text files may cite catalogue ids and must not cite outside notes.
const CITING_ROOTS: [&str; 7] = ["reference", "harness", "xtask", "scenarios", "docker", "docs", "README.md"];

/// File endings that are read as text by the citation checks.
const TEXT_ENDINGS: [&str; 7] = [".rs", ".yaml", ".yml", ".toml", ".md", ".sh", ".snap"];

/// Path fragments that point outside the project. Spelled in pieces so that this file does not
/// cite them itself.
const OUTSIDE_PATHS: [&str; 3] = [concat!("specs", "/"), concat!("shared", "/"), concat!("DESIGN", ".md")];

/// One broken rule at one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path relative to the workspace root.
    pub file: String,
    /// 1-based line number (0 when the whole file is concerned).
    pub line: usize,
    /// Which check: `scenario-name`, `doc-comment`, `catalogue-id`, `outside-path`, `unwrap`,
    /// `readme-command`.
    pub rule: &'static str,
    /// What is wrong and, where it helps, what to do.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: [{}] {}", self.file, self.line, self.rule, self.message)
    }
}

/// `cargo xtask tidy`: prints every violation and fails when there is any.
pub fn run() -> Result<()> {
    let violations = check(&crate::peers::root())?;
    for v in &violations {
        println!("{v}");
    }
    if !violations.is_empty() {
        bail!("tidy: {} violation(s)", violations.len());
    }
    println!("tidy: clean");
    Ok(())
}

/// Runs every check on the tree at `root`.
pub fn check(root: &Path) -> Result<Vec<Violation>> {
    let mut out = Vec::new();

    for (rel, text) in read_tree(root, &["scenarios"], &[".yaml"])? {
        if !rel.ends_with("requirements.yaml") {
            out.extend(check_scenario_name(&rel, &text));
        }
    }

    let sources = read_tree(root, &["harness/src", "reference/src", "xtask/src"], &[".rs"])?;
    let test_files = test_module_files(&sources);
    for (rel, text) in &sources {
        let is_test_file = test_files.contains(rel) || rel.split('/').any(|c| c == "tests");
        if rel.starts_with("harness/src/") || rel.starts_with("reference/src/") {
            out.extend(check_doc_comments(rel, text, &sources));
        }
        if !is_test_file {
            out.extend(check_unwraps(rel, text));
        }
    }

    let catalogue_path = root.join("docs/catalogue.md");
    let catalogue =
        fs::read_to_string(&catalogue_path).with_context(|| format!("reading {}", catalogue_path.display()))?;
    let headings = catalogue_headings(&catalogue);
    for (rel, text) in read_tree(root, &CITING_ROOTS, &TEXT_ENDINGS)? {
        out.extend(check_citations(&rel, &text, &headings));
    }

    let readme = fs::read_to_string(root.join("README.md")).context("reading README.md")?;
    let harness_main = fs::read_to_string(root.join("harness/src/main.rs")).context("reading harness/src/main.rs")?;
    let socksref_main = fs::read_to_string(root.join("reference/src/bin/socksref.rs"))
        .context("reading reference/src/bin/socksref.rs")?;
    let known = KnownCommands {
        xtask: crate::flags::Xtask::command().get_subcommands().map(|c| c.get_name().to_string()).collect(),
        sockslab: clap_subcommands(&harness_main, "enum Sub"),
        socksref: clap_flags(&socksref_main),
    };
    out.extend(check_readme_commands("README.md", &readme, &known));

    out.sort_by(|a, b| (&a.file, a.line, a.rule).cmp(&(&b.file, b.line, b.rule)));
    Ok(out)
}

/// Every file under `roots` (folders or single files, relative to `root`) whose name ends with
/// one of `endings`, as (path relative to `root` with `/` separators, contents). Build output
/// and hidden folders are skipped; files that are not UTF-8 are skipped too (nothing to cite).
fn read_tree(root: &Path, roots: &[&str], endings: &[&str]) -> Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    let mut stack: Vec<PathBuf> = roots.iter().map(|r| root.join(r)).collect();
    while let Some(path) = stack.pop() {
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if meta.is_dir() {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name == "target" || name.starts_with('.') {
                continue;
            }
            for entry in fs::read_dir(&path).with_context(|| format!("listing {}", path.display()))? {
                stack.push(entry?.path());
            }
        } else if endings.iter().any(|e| path.to_string_lossy().ends_with(e)) {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
            if let Ok(text) = fs::read_to_string(&path) {
                files.push((rel, text));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Words of a file stem or id part: split on `.` and `-`, empty pieces dropped.
fn words(s: &str) -> BTreeSet<&str> {
    s.split(['.', '-']).filter(|w| !w.is_empty()).collect()
}

/// `scenario-name` for one scenario file.
fn check_scenario_name(rel: &str, text: &str) -> Vec<Violation> {
    let violation = |line, message| Violation { file: rel.to_string(), line, rule: "scenario-name", message };
    let parts: Vec<&str> = rel.split('/').collect();
    let (Some(folder), Some(file)) = (parts.get(1), parts.last()) else {
        return vec![violation(0, "a scenario file must sit in a folder under scenarios/".into())];
    };
    let stem = file.trim_end_matches(".yaml");
    let Some((n, id)) = text
        .lines()
        .enumerate()
        .find_map(|(n, l)| l.strip_prefix("id:").map(|v| (n + 1, v.trim().trim_matches(|c| c == '"' || c == '\''))))
    else {
        return vec![violation(0, "no top-level `id:` line".into())];
    };
    let mut out = Vec::new();
    let (first, rest) = id.split_once('.').unwrap_or((id, ""));
    if first != *folder {
        out.push(violation(n, format!("id `{id}` does not start with its folder name `{folder}.`")));
    }
    if words(stem).is_disjoint(&words(rest)) {
        out.push(violation(n, format!("file name `{stem}` shares no word with id `{id}`; rename the file")));
    }
    out
}

/// The item kinds whose `pub` declarations need a doc comment.
const DOC_ITEMS: [&str; 7] = ["fn", "struct", "enum", "const", "trait", "type", "mod"];

/// If `line` declares a `pub` item that needs documentation, its kind and name.
fn pub_item(line: &str) -> Option<(&'static str, &str)> {
    let mut rest = line.trim_start().strip_prefix("pub ")?;
    // Qualifiers that may sit between `pub` and the item keyword.
    while let Some(r) = ["async ", "unsafe ", "extern \"C\" "].iter().find_map(|q| rest.strip_prefix(q)) {
        rest = r.trim_start();
    }
    // `pub const fn` is a function, `pub const X` a constant.
    if let Some(r) = rest.strip_prefix("const fn ").or_else(|| rest.strip_prefix("const unsafe fn ")) {
        return Some(("fn", ident(r)));
    }
    let (kind, after) = rest.split_once(' ')?;
    let kind = DOC_ITEMS.iter().copied().find(|k| *k == kind)?;
    Some((kind, ident(after)))
}

/// The identifier at the start of `s`.
fn ident(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// Whether the line is (part of) an attribute: `#[…]`, or the last line of a multi-line one.
fn is_attribute_line(t: &str) -> bool {
    t.starts_with("#[") || t.starts_with("#![")
}

/// `doc-comment` for one source file; `sources` is every source file, to find the file of a
/// `pub mod name;` and look for its `//!` documentation.
fn check_doc_comments(rel: &str, text: &str, sources: &[(String, String)]) -> Vec<Violation> {
    let lines: Vec<&str> = text.lines().collect();
    let test_lines = cfg_test_lines(&lines);
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((kind, name)) = pub_item(line) else { continue };
        // A `macro_rules!` body (`pub struct $name`) is documented where the macro is invoked.
        if test_lines[i] || name.is_empty() {
            continue;
        }
        // Walk back over attributes, including multi-line ones (their last line ends in `]`
        // without starting with `#[`; skip up to the line that opens them).
        let mut j = i;
        let mut documented = false;
        while j > 0 {
            j -= 1;
            let t = lines[j].trim();
            if is_attribute_line(t) {
                continue;
            }
            if !t.starts_with("//") && t.ends_with(']') {
                while j > 0 && !is_attribute_line(lines[j].trim()) {
                    j -= 1;
                }
                continue;
            }
            documented = t.starts_with("///") || t.starts_with("//!");
            break;
        }
        if !documented && kind == "mod" && line.trim_end().ends_with(';') {
            // `pub mod name;` may instead be documented by `//!` at the top of its own file.
            let exists = |p: &str| sources.iter().any(|(q, _)| q == p);
            documented = module_file(rel, name, &exists)
                .and_then(|file| sources.iter().find(|(q, _)| *q == file))
                .is_some_and(|(_, text)| text.trim_start().starts_with("//!"));
        }
        if !documented {
            out.push(Violation {
                file: rel.to_string(),
                line: i + 1,
                rule: "doc-comment",
                message: format!("`pub {kind} {name}` has no `///` doc comment"),
            });
        }
    }
    out
}

/// The file holding `mod name;` declared in `rel`, if it exists.
fn module_file(rel: &str, name: &str, file_exists: &impl Fn(&str) -> bool) -> Option<String> {
    let (dir, file) = rel.rsplit_once('/').unwrap_or(("", rel));
    let base = if matches!(file, "mod.rs" | "lib.rs" | "main.rs") {
        dir.to_string()
    } else {
        format!("{dir}/{}", file.trim_end_matches(".rs"))
    };
    [format!("{base}/{name}.rs"), format!("{base}/{name}/mod.rs")].into_iter().find(|p| file_exists(p))
}

/// For each line, whether it lies inside a `#[cfg(test)]` item (usually `mod tests { … }`).
/// Braces are counted naively; string literals with unbalanced braces would confuse it, which
/// is acceptable for a tidy check.
fn cfg_test_lines(lines: &[&str]) -> Vec<bool> {
    let mut inside = vec![false; lines.len()];
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "#[cfg(test)]" {
            let start = i;
            let mut depth = 0i64;
            let mut opened = false;
            while i < lines.len() {
                for c in lines[i].chars() {
                    match c {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
                // `#[cfg(test)] mod tests;` (no body) ends at its semicolon.
                if (opened && depth <= 0) || (!opened && lines[i].trim_end().ends_with(';')) {
                    break;
                }
                i += 1;
            }
            for flag in inside.iter_mut().take((i + 1).min(lines.len())).skip(start) {
                *flag = true;
            }
        }
        i += 1;
    }
    inside
}

/// Files that are `#[cfg(test)] mod name;` of some other source file: test code as a whole.
fn test_module_files(sources: &[(String, String)]) -> BTreeSet<String> {
    let exists = |p: &str| sources.iter().any(|(q, _)| q == p);
    let mut out = BTreeSet::new();
    for (rel, text) in sources {
        let lines: Vec<&str> = text.lines().collect();
        for w in lines.windows(2) {
            if w[0].trim() == "#[cfg(test)]" {
                let decl = w[1].trim();
                let decl = decl.strip_prefix("pub ").unwrap_or(decl);
                if let Some(name) = decl.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
                    if let Some(file) = module_file(rel, name.trim(), &exists) {
                        out.insert(file);
                    }
                }
            }
        }
    }
    out
}

/// `unwrap` for one non-test source file.
fn check_unwraps(rel: &str, text: &str) -> Vec<Violation> {
    let needle = concat!(".unwrap", "()");
    let lines: Vec<&str> = text.lines().collect();
    let test_lines = cfg_test_lines(&lines);
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(at) = line.find(needle) else { continue };
        if test_lines[i] {
            continue;
        }
        let code = line.trim_start();
        if code.starts_with("//") {
            continue; // the unwrap is in a comment
        }
        let explained_here = line[at..].contains("// ");
        let explained_before = i > 0 && lines[i - 1].trim_start().starts_with("// ");
        if !explained_here && !explained_before {
            out.push(Violation {
                file: rel.to_string(),
                line: i + 1,
                rule: "unwrap",
                message: "`.unwrap()` without a `// ` comment (same line or the line before) saying why it cannot fail"
                    .into(),
            });
        }
    }
    out
}

/// The ids that `docs/catalogue.md` defines: its `### X-nn` headings.
fn catalogue_headings(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(str::trim)
        .filter(|h| catalogue_ids(h).first().is_some_and(|(_, id)| id == h))
        .map(str::to_string)
        .collect()
}

/// Catalogue ids in a line, with their byte offsets: one of `C D F R V Z`, `-`, two digits,
/// an optional lowercase letter, standing as a word of its own.
fn catalogue_ids(line: &str) -> Vec<(usize, String)> {
    let b = line.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i + 4 <= b.len() {
        let starts = b"CDFRVZ".contains(&b[i])
            && b[i + 1] == b'-'
            && b[i + 2].is_ascii_digit()
            && b[i + 3].is_ascii_digit()
            && (i == 0 || !word(b[i - 1]));
        if starts {
            let mut end = i + 4;
            if end < b.len() && b[end].is_ascii_lowercase() {
                end += 1;
            }
            if end == b.len() || !word(b[end]) {
                out.push((i, line[i..end].to_string()));
                i = end;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// `catalogue-id` and `outside-path` for one text file.
fn check_citations(rel: &str, text: &str, headings: &BTreeSet<String>) -> Vec<Violation> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        for (_, id) in catalogue_ids(line) {
            if !headings.contains(&id) {
                out.push(Violation {
                    file: rel.to_string(),
                    line: n + 1,
                    rule: "catalogue-id",
                    message: format!("`{id}` has no `### {id}` heading in docs/catalogue.md"),
                });
            }
        }
        for p in OUTSIDE_PATHS {
            if line.contains(p) {
                out.push(Violation {
                    file: rel.to_string(),
                    line: n + 1,
                    rule: "outside-path",
                    message: format!("cites `{p}…`, which is not part of the project; cite docs/ instead"),
                });
            }
        }
    }
    out
}

/// What README commands may name.
struct KnownCommands {
    /// `cargo xtask` subcommands.
    xtask: BTreeSet<String>,
    /// `sockslab` subcommands.
    sockslab: BTreeSet<String>,
    /// `socksref` flags (`-L`, `--log`, …): it has no subcommands.
    socksref: BTreeSet<String>,
}

/// `CamelCase` → `kebab-case`, as clap names subcommands.
fn kebab(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(if c == '_' { '-' } else { c });
        }
    }
    out
}

/// The variants of the clap `Subcommand` enum opened by the line starting with `enum_line`
/// (e.g. `enum Sub`), kebab-cased. Read from source because the harness CLI is a binary.
fn clap_subcommands(src: &str, enum_line: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut inside = false;
    for line in src.lines() {
        if !inside {
            inside = line.trim_start().starts_with(enum_line);
            continue;
        }
        if line.starts_with('}') {
            break;
        }
        // Variants sit at one level of indentation (4 spaces); fields are deeper.
        if let Some(rest) = line.strip_prefix("    ") {
            if rest.starts_with(|c: char| c.is_ascii_uppercase()) {
                out.insert(kebab(ident(rest)));
            }
        }
    }
    out
}

/// The flags a clap `Parser` struct in `src` declares: `short = 'X'`, `long = "name"`, or a bare
/// `long` taking the next field's name. Plus clap's own `-h`, `--help`, `-V`, `--version`.
fn clap_flags(src: &str) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = ["-h", "--help", "-V", "--version"].iter().map(|s| s.to_string()).collect();
    let mut pending_long = false;
    for line in src.lines() {
        let t = line.trim();
        if t.starts_with("#[arg(") {
            if let Some(c) = t.split("short = '").nth(1).and_then(|r| r.chars().next()) {
                out.insert(format!("-{c}"));
            }
            if let Some(name) = t.split("long = \"").nth(1).and_then(|r| r.split('"').next()) {
                out.insert(format!("--{name}"));
            } else if t.contains("long") {
                pending_long = true;
            }
        } else if pending_long && !t.starts_with("///") && !t.starts_with("#[") {
            if let Some(field) = t.strip_prefix("pub ").unwrap_or(t).split(':').next() {
                out.insert(format!("--{}", kebab(field.trim())));
            }
            pending_long = false;
        }
    }
    out
}

/// `readme-command` for README.md.
fn check_readme_commands(rel: &str, text: &str, known: &KnownCommands) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut continued = false;
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with("```") {
            in_sh = !in_sh && t == "```sh";
            continued = false;
            continue;
        }
        if !in_sh || t.starts_with('#') || t.is_empty() {
            continue;
        }
        // The continuation of a `\`-wrapped line is arguments, not a new command.
        let was_continued = continued;
        continued = t.ends_with('\\');
        if was_continued {
            continue;
        }
        let tokens: Vec<&str> = t.split_whitespace().collect();
        let problem = readme_command_problem(&tokens, known);
        if let Some(message) = problem {
            out.push(Violation { file: rel.to_string(), line: n + 1, rule: "readme-command", message });
        }
    }
    out
}

/// What is wrong with one README command line, if anything.
fn readme_command_problem(tokens: &[&str], known: &KnownCommands) -> Option<String> {
    // `cargo run [...] -p NAME -- ARGS` runs binary NAME with ARGS.
    let (program, args): (&str, &[&str]) = match tokens {
        ["cargo", "xtask", rest @ ..] => ("cargo xtask", rest),
        ["cargo", "run", rest @ ..] => {
            let name = rest.windows(2).find(|w| w[0] == "-p" || w[0] == "--package").map(|w| w[1])?;
            let args = rest.iter().position(|t| *t == "--").map(|p| &rest[p + 1..]).unwrap_or(&[]);
            (name, args)
        }
        [program, rest @ ..] => (*program, rest),
        [] => return None,
    };
    let first = args.first().copied().unwrap_or("");
    let (set, what) = match program {
        "cargo xtask" => (&known.xtask, "cargo xtask subcommand"),
        "sockslab" => (&known.sockslab, "sockslab subcommand"),
        "socksref" => (&known.socksref, "socksref flag"),
        _ => return None,
    };
    if set.contains(first) {
        return None;
    }
    let list: Vec<&str> = set.iter().map(String::as_str).collect();
    Some(format!("`{program} {first}`: no such {what} (known: {})", list.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real tree: every check, every violation listed in the failure message.
    #[test]
    fn tree_is_tidy() {
        let violations = check(&crate::peers::root()).expect("the tree can be read");
        let listing: Vec<String> = violations.iter().map(ToString::to_string).collect();
        assert!(
            violations.is_empty(),
            "cargo xtask tidy found {} violation(s):\n{}",
            listing.len(),
            listing.join("\n")
        );
    }

    #[test]
    fn scenario_names() {
        let ok = check_scenario_name(
            "scenarios/socks4/connect-banner.yaml",
            "id: socks4.connect.reply-before-target-bytes\n",
        );
        assert_eq!(ok, vec![]);
        let quoted = check_scenario_name("scenarios/gost/mbind-first-stream.yaml", "id: \"gost.mbind.first-stream\"\n");
        assert_eq!(quoted, vec![]);
        let bad_word =
            check_scenario_name("scenarios/socks4/banner.yaml", "title: x\nid: socks4.connect.reply-first\n");
        assert_eq!(bad_word.len(), 1);
        assert_eq!(bad_word[0].line, 2);
        let bad_folder = check_scenario_name("scenarios/socks4/connect.yaml", "id: socks4a.connect.x\n");
        assert!(bad_folder[0].message.contains("folder"), "{bad_folder:?}");
        assert_eq!(check_scenario_name("scenarios/socks4/x.yaml", "title: none\n").len(), 1);
    }

    #[test]
    fn doc_comments() {
        let none: &[(String, String)] = &[];
        let src = "/// Documented.\n#[derive(Debug)]\n#[serde(\n    rename_all = \"kebab-case\"\n)]\npub struct A;\n\npub fn b() {}\n    pub(crate) fn c() {}\n    pub const D: u8 = 1;\n/// ok\npub const fn e() {}\n";
        let v = check_doc_comments("reference/src/x.rs", src, none);
        let lines: Vec<usize> = v.iter().map(|v| v.line).collect();
        assert_eq!(lines, vec![8, 10], "{v:?}");
        // `pub mod m;` is documented by its own `//!`; it must exist.
        let files = [
            ("reference/src/m.rs".to_string(), "//! Module m.\n".to_string()),
            ("reference/src/bare.rs".to_string(), "fn f() {}\n".to_string()),
        ];
        let v = check_doc_comments("reference/src/lib.rs", "pub mod m;\npub mod bare;\npub mod gone;\n", &files);
        let lines: Vec<usize> = v.iter().map(|v| v.line).collect();
        assert_eq!(lines, vec![2, 3], "{v:?}");
        // Items inside a #[cfg(test)] module are not checked.
        let v =
            check_doc_comments("reference/src/x.rs", "#[cfg(test)]\nmod tests {\n    pub fn helper() {}\n}\n", none);
        assert_eq!(v, vec![]);
    }

    #[test]
    fn unwraps() {
        let src = concat!(
            "fn a() { x.unwrap",
            "(); }\n",
            "// the literal is valid\n",
            "fn b() { x.unwrap",
            "(); }\n",
            "fn c() { x.unwrap",
            "(); // checked above\n",
            "#[cfg(test)]\n",
            "mod tests {\n",
            "    fn t() { x.unwrap",
            "(); }\n",
            "}\n",
            "fn d() { y.unwrap",
            "(); }\n",
        );
        let lines: Vec<usize> = check_unwraps("harness/src/x.rs", src).iter().map(|v| v.line).collect();
        assert_eq!(lines, vec![1, 9]);
    }

    #[test]
    fn citations() {
        let headings: BTreeSet<String> = catalogue_headings("# t\n### D-06\n### V-02a\n### not an id\n");
        assert_eq!(headings, ["D-06", "V-02a"].iter().map(|s| s.to_string()).collect());
        let outside = concat!("see ", "specs", "/gost-socks.md §4.7");
        let unknown = concat!("R-9", "9x"); // spelled in pieces: the tree check must not see it
        let text = format!("D-06 and V-02a, not V-02, {unknown} or CVE-2023-43644 or UTF-8 or RFC-1928\n{outside}\n");
        let v = check_citations("harness/src/x.rs", &text, &headings);
        let got: Vec<(usize, &str)> = v.iter().map(|v| (v.line, v.rule)).collect();
        assert_eq!(got, vec![(1, "catalogue-id"), (1, "catalogue-id"), (2, "outside-path")], "{v:?}");
        assert!(v[0].message.contains("V-02"));
        assert!(v[1].message.contains(unknown));
    }

    #[test]
    fn readme_commands() {
        let known = KnownCommands {
            xtask: ["bench", "interop", "tidy"].iter().map(|s| s.to_string()).collect(),
            sockslab: clap_subcommands(
                "enum Sub {\n    /// x\n    Check(A),\n    CheckClient(B),\n    Coverage {\n        strict: bool,\n    },\n}\n",
                "enum Sub",
            ),
            socksref: clap_flags("    #[arg(short = 'L', value_name = \"URL\")]\n    listen: Vec<String>,\n    #[arg(long, default_value = \"info\")]\n    log_level: String,\n"),
        };
        assert_eq!(known.sockslab, ["check", "check-client", "coverage"].iter().map(|s| s.to_string()).collect());
        assert!(known.socksref.contains("-L") && known.socksref.contains("--log-level"), "{:?}", known.socksref);
        let readme = "```sh\ncargo xtask interop --list\ncargo xtask lint\n# sockslab nothing\nsockslab check x \\\n    lint\nsockslab lint\nsocksref -L socks5://:1080\nsocksref -X\ncargo run -p sockslab -- coverage\ncargo run --release -p socksref -- -Q\nbash .ci/run\n```\n```text\nsockslab lint\n```\n";
        let lines: Vec<usize> = check_readme_commands("README.md", readme, &known).iter().map(|v| v.line).collect();
        assert_eq!(lines, vec![3, 7, 9, 11]);
    }
}
