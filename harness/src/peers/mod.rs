//! Peer definitions (`harness/peers/<name>/peer.yaml`) and launching them on loopback.
//!
//! A peer has one or more *instances*: configurations of the same software (open, with password,
//! with UDP…), each with the claims it makes. A scenario runs against the first instance it applies
//! to. Expected results sit next to the definition in `expected.yaml`.
//!
//! The same file is the one definition the interop lab and the benchmark (xtask) start a peer
//! from: they look an instance up by name ([`PeerDef::instance`]), render its arguments, files and
//! environment ([`InstanceDef::render`]) and run them with their own program (a host binary or a
//! container image). What only they use is kept apart, so `sockslab check --peer` ignores it:
//! further listeners of the same process (`extra`, ports of their own) and a `lab:` list of
//! instances that `check` never starts (a process form of the in-process reference, the bench's
//! variants).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;

use crate::reference::{self, RefOptions, RunningRef};
use crate::runner::{Claims, Sut};
use crate::scenario::{yaml, LoadError};
use crate::verdict::Expectations;

/// Errors from starting a peer.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The definition could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The process could not be started or set up.
    #[error("{instance}: {message}")]
    Start {
        /// Instance name.
        instance: String,
        /// What went wrong.
        message: String,
    },
}

/// How an instance runs.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// An external program on loopback.
    Process,
    /// The in-process reference server.
    Reference,
}

/// One configuration of a peer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceDef {
    /// Instance name (`open`, `auth`, …).
    pub name: String,
    /// Process or in-process reference.
    pub kind: Kind,
    /// Program and arguments; `{port}`, `{dir}`, `{user}`, `{pass}` are substituted, and
    /// `{env:NAME}` by the environment variable `NAME` (an error when it is unset), so a
    /// definition can name a binary that is built elsewhere (gost's, by the interop lab).
    #[serde(default)]
    pub command: Vec<String>,
    /// Files written to the instance's private directory before it starts (same substitutions).
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// RFC 1929 username scenarios use.
    #[serde(default)]
    pub user: Option<String>,
    /// RFC 1929 password scenarios use.
    #[serde(default)]
    pub pass: Option<String>,
    /// What this instance offers (process kind; the reference derives its own).
    pub claims: Option<Claims>,
    /// Reference configuration (reference kind).
    #[serde(default)]
    pub reference: Option<RefOptions>,
    /// Environment variables set for the process (same substitutions as `command`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Further listeners of the same process, each on a port of its own, for features the main
    /// listener does not serve (gost's SOCKS4 handler is a service apart from its SOCKS5 one).
    /// Only the lab and the bench open them: `sockslab check` starts the main command alone.
    #[serde(default)]
    pub extra: Vec<ExtraListener>,
}

/// A further listener of an instance's process ([`InstanceDef::extra`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraListener {
    /// What it is for, in the words of the program that opens it (the lab's feature names, such
    /// as `socks4` or `tls-auth`); the harness does not read them.
    pub features: Vec<String>,
    /// Arguments appended to the command; `{port}` is this listener's own port, the other
    /// placeholders are the instance's.
    pub args: Vec<String>,
}

/// An instance made concrete for one start: everything but the program, which the starter
/// chooses (the lab runs the program of its host binary or image, whatever `command[0]` says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// `command[1..]`, then every extra listener's arguments when they were asked for.
    pub args: Vec<String>,
    /// File name and body, to write into the instance's directory before it starts.
    pub files: Vec<(String, String)>,
    /// Environment variables for the process.
    pub env: Vec<(String, String)>,
}

/// A peer's entry in the interop lab's matrix ([`PeerDef::matrix`]): what the lab reports of it,
/// what it claims in each role and how the lab drives it as a client. The feature names are the
/// lab's (its matrix columns, such as `socks5-connect` or `udp-tun`); the lab rejects a name it
/// does not know.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixDef {
    /// The pinned version, as the lab's reports print it.
    pub version: String,
    /// Where the program lives inside the peer's local container image.
    pub image_program: String,
    /// How the lab starts it as a client, one entry per feature it can use as a client; none
    /// for a server only.
    #[serde(default)]
    pub client: Option<ClientDef>,
    /// The features it serves as a server.
    #[serde(default)]
    pub server: Vec<String>,
}

/// How a client program runs in a matrix cell ([`ClientDef::run`]).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ClientRun {
    /// It makes the exchange itself and exits (curl's HTTP POST of `{dir}/in` into `{dir}/out`).
    Once,
    /// It listens on `{listen}` (or at the proxy, for remote forwarding) until stopped, and the
    /// lab makes the exchange through it.
    Listen,
}

/// The lab's way of starting a peer as the client of a cell ([`MatrixDef::client`]): one
/// command line and config template for every feature, and per feature the values of the
/// definition's own placeholders (`defaults` where a feature sets none).
///
/// Two kinds of placeholder meet in `args` and `files`. The definition's own (`defaults`, a
/// feature's `set`) are filled first; their values may hold the lab's, which are filled next:
/// `{listen}` (the client's local port), `{proxy}` (the server, `host:port`), `{server_host}`,
/// `{server_port}`, `{target_host}` (`localhost` where the feature needs a host name, else
/// `127.0.0.1`), `{echo}` (`{target_host}:{echo_port}`), `{udp_echo}`, `{echo_port}`,
/// `{http_port}`, `{after_fin_port}`, `{user}`, `{pass}`, `{socks4_user}`. `{dir}` is the
/// client's private directory, which the starter fills itself. A name neither knows is an error.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientDef {
    /// Whether it exchanges itself and exits, or listens while the lab exchanges through it.
    pub run: ClientRun,
    /// The arguments after the program.
    pub args: Vec<String>,
    /// Files written into `{dir}` before it starts.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// The definition's own placeholders, where a feature does not set them.
    #[serde(default)]
    pub defaults: BTreeMap<String, String>,
    /// The features it can use as a client, each with what it sets.
    pub features: BTreeMap<String, ClientFeature>,
}

/// One feature of a [`ClientDef`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFeature {
    /// Values of the definition's own placeholders for this feature.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Whether `{listen}` accepts TCP once the client is up, so the lab can wait for it; false
    /// where the client listens on UDP alone or at the proxy (remote forwarding).
    #[serde(default = "yes")]
    pub tcp_ready: bool,
}

fn yes() -> bool {
    true
}

impl ClientDef {
    /// The arguments and files for `feature`, with the definition's placeholders and then the
    /// lab's (`lab`) filled in; `{dir}` stays for the starter.
    pub fn render(&self, feature: &str, lab: &BTreeMap<&str, String>) -> Result<Rendered, String> {
        let f = self.features.get(feature).ok_or_else(|| format!("it does not claim `{feature}` as a client"))?;
        let own = |name: &str| f.set.get(name).or_else(|| self.defaults.get(name)).cloned();
        let lab_or_dir = |name: &str| if name == "dir" { Some("{dir}".to_string()) } else { lab.get(name).cloned() };
        let sub = |t: &str| fill(&fill(t, own, false)?, lab_or_dir, true);
        let args = self.args.iter().map(|a| sub(a)).collect::<Result<Vec<_>, String>>()?;
        let files = self.files.iter().map(|(n, b)| Ok((n.clone(), sub(b)?))).collect::<Result<Vec<_>, String>>()?;
        Ok(Rendered { args, files, env: Vec::new() })
    }
}

/// A peer definition file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerDef {
    /// Peer name.
    pub name: String,
    /// What it is and where it comes from.
    pub description: String,
    /// Command printing the installed version (recorded in reports); `{env:NAME}` is substituted.
    #[serde(default)]
    pub version_command: Vec<String>,
    /// How the program runs an example config file (docker/configs/, the interop lab's configs
    /// section), by the file's format (`gost`, `v2ray-json`, `v2ray-jsonv5`): a command line like
    /// `command`, with `{dir}/{file}` for the file. The lab reads it (and runs its own binary or
    /// image of the peer, whatever the first word says); `check` does not.
    #[serde(default)]
    pub config_files: BTreeMap<String, Vec<String>>,
    /// Its configurations, every one of which `sockslab check --peer` starts.
    pub instances: Vec<InstanceDef>,
    /// Process instances only the interop lab and the benchmark start (by name; `check` never
    /// does): the reference as a program rather than in-process, or a benchmark variant.
    #[serde(default)]
    pub lab: Vec<InstanceDef>,
    /// What the interop lab's client × server matrix says of this peer; `sockslab check` does
    /// not read it. A peer that is a client only (curl) has a matrix and no `instances`.
    #[serde(default)]
    pub matrix: Option<MatrixDef>,
    /// Directory of the definition (set on load).
    #[serde(skip)]
    pub dir: PathBuf,
}

impl PeerDef {
    /// Loads `dir/peer.yaml`.
    pub fn load(dir: &Path) -> Result<PeerDef, LoadError> {
        let mut d: PeerDef = yaml::from_file(&dir.join("peer.yaml"))?;
        d.dir = dir.to_path_buf();
        let invalid = |message: String| LoadError::Invalid { path: dir.join("peer.yaml"), message };
        let mut names = std::collections::BTreeSet::new();
        for i in &d.instances {
            let ok = match i.kind {
                Kind::Process => i.claims.is_some() && !i.command.is_empty(),
                Kind::Reference => i.command.is_empty() && i.extra.is_empty() && i.env.is_empty(),
            };
            if !ok {
                return Err(invalid(format!(
                    "instance `{}`: a process needs `command` and `claims`; a reference has no command, env or extra",
                    i.name
                )));
            }
            if !names.insert(i.name.as_str()) {
                return Err(invalid(format!("instance `{}` is defined twice", i.name)));
            }
        }
        // `lab:` instances may reuse a name of `instances` (the lab's `open` reference is a
        // process, the harness's is in-process): the lab looks in `lab:` first.
        let mut lab_names = std::collections::BTreeSet::new();
        for i in &d.lab {
            if i.kind != Kind::Process || i.claims.is_none() || i.command.is_empty() {
                return Err(invalid(format!(
                    "lab instance `{}`: needs `kind: process`, `command` and `claims`",
                    i.name
                )));
            }
            if !lab_names.insert(i.name.as_str()) {
                return Err(invalid(format!("lab instance `{}` is defined twice", i.name)));
            }
        }
        Ok(d)
    }

    /// The process instance the lab or the bench starts as `name`: the `lab:` one of that name,
    /// else the `instances` one (which must be a process: the lab runs programs).
    pub fn instance(&self, name: &str) -> Result<&InstanceDef, PeerError> {
        let found = self.lab.iter().find(|i| i.name == name).or_else(|| self.instances.iter().find(|i| i.name == name));
        let err =
            |message: &str| PeerError::Start { instance: format!("{}/{name}", self.name), message: message.into() };
        match found {
            Some(i) if i.kind == Kind::Process => Ok(i),
            Some(_) => Err(err("is the in-process reference, not a program (give a process instance under `lab:`)")),
            None => Err(err("no such instance in `lab:` or `instances`")),
        }
    }

    /// `dir/expected.yaml`, or no expected failures when it does not exist.
    pub fn expectations(&self) -> Result<Expectations, LoadError> {
        let p = self.dir.join("expected.yaml");
        if p.exists() {
            Expectations::load(&p)
        } else {
            Ok(Expectations { peer: self.name.clone(), ..Expectations::default() })
        }
    }
}

/// A started instance: the server under test, and what keeps it alive.
pub struct Running {
    /// The server under test.
    pub sut: Sut,
    child: Option<tokio::process::Child>,
    _reference: Option<RunningRef>,
    _dir: Option<tempfile::TempDir>,
}

impl Running {
    /// Stops the instance: SIGTERM to the pid we started, then SIGKILL if it lingers.
    pub async fn stop(mut self) {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = c.id() {
                // danted's children exit when their parent does; SIGTERM lets it tell them.
                let _ = tokio::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
            }
            if tokio::time::timeout(Duration::from_secs(3), c.wait()).await.is_err() {
                let _ = c.kill().await;
            }
        }
    }
}

fn subst(s: &str, port: u16, dir: &Path, user: &str, pass: &str) -> String {
    let value = |name: &str| match name {
        "port" => Some(port.to_string()),
        "dir" => Some(dir.to_string_lossy().into_owned()),
        "user" => Some(user.to_string()),
        "pass" => Some(pass.to_string()),
        _ => None,
    };
    // Not strict, so it cannot fail: a server's config may hold `{word}` of its own.
    fill(s, value, false).unwrap_or_else(|_| s.to_string())
}

/// Replaces every `{name}` in `s` (a name: ASCII letters, digits, `_`) for which `value` has a
/// value: the one placeholder syntax of peer definitions. Braces around anything else (JSON, a
/// config block, `{env:NAME}`) are left as they are. `strict`: a name `value` does not know is
/// an error, so a misspelt placeholder never reaches a peer as text; otherwise it stays.
pub fn fill(s: &str, value: impl Fn(&str) -> Option<String>, strict: bool) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let name_len = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
        let name = &after[..name_len];
        if name.is_empty() || !after[name_len..].starts_with('}') {
            out.push('{');
            rest = after;
            continue;
        }
        match value(name) {
            Some(v) => out.push_str(&v),
            None if strict => return Err(format!("`{s}`: unknown placeholder {{{name}}}")),
            None => {
                out.push('{');
                out.push_str(name);
                out.push('}');
            }
        }
        rest = &after[name_len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Replaces every `{env:NAME}` in `s` by the value of the environment variable `NAME`.
///
/// A peer whose binary is not on PATH (built by the lab into the target directory) names it
/// through a variable; an unset one is an error that names the variable, not a spawn failure of
/// a literal `{env:…}` program.
pub fn expand_env(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{env:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + "{env:".len()..];
        let end = after.find('}').ok_or_else(|| format!("`{s}`: `{{env:` without a closing `}}`"))?;
        let name = &after[..end];
        if name.is_empty() {
            return Err(format!("`{s}`: `{{env:}}` names no variable"));
        }
        let value = std::env::var(name).map_err(|e| match e {
            std::env::VarError::NotPresent => format!("the environment variable {name} is not set (`{s}` needs it)"),
            std::env::VarError::NotUnicode(_) => format!("the environment variable {name} is not valid UTF-8"),
        })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl InstanceDef {
    /// The instance's arguments (`command[1..]`), files and environment with `{port}`, `{dir}`,
    /// `{user}`, `{pass}` and `{env:NAME}` substituted: the one place a peer's start command and
    /// config template become real, for [`launch`] and for every other starter (the lab, the
    /// bench), so a configuration is written once.
    ///
    /// `extra_ports`: `None` renders the main listener alone (what `check` starts); `Some` gives
    /// one port per [`ExtraListener`], in order, and appends their arguments. A starter that
    /// substitutes the directory itself passes `Path::new("{dir}")`, which leaves it in place.
    pub fn render(&self, port: u16, extra_ports: Option<&[u16]>, dir: &Path) -> Result<Rendered, String> {
        let user = self.user.clone().unwrap_or_default();
        let pass = self.pass.clone().unwrap_or_default();
        let sub = |s: &str, port: u16| expand_env(&subst(s, port, dir, &user, &pass));
        if self.command.is_empty() {
            return Err(format!("instance `{}` has no command", self.name));
        }
        let mut args = self.command[1..].iter().map(|a| sub(a, port)).collect::<Result<Vec<String>, String>>()?;
        if let Some(ports) = extra_ports {
            if ports.len() != self.extra.len() {
                return Err(format!(
                    "instance `{}` has {} extra listener(s) but {} port(s) were given",
                    self.name,
                    self.extra.len(),
                    ports.len()
                ));
            }
            for (x, &p) in self.extra.iter().zip(ports) {
                for a in &x.args {
                    args.push(sub(a, p)?);
                }
            }
        }
        let files = self
            .files
            .iter()
            .map(|(name, body)| Ok((name.clone(), sub(body, port)?)))
            .collect::<Result<Vec<_>, String>>()?;
        let env = self.env.iter().map(|(k, v)| Ok((k.clone(), sub(v, port)?))).collect::<Result<Vec<_>, String>>()?;
        Ok(Rendered { args, files, env })
    }

    /// The program `command[0]` names, with `{env:NAME}` substituted.
    pub fn program(&self) -> Result<String, String> {
        let first = self.command.first().ok_or_else(|| format!("instance `{}` has no command", self.name))?;
        expand_env(first)
    }

    /// Writes the instance's `files` into `dir` and returns its whole command line (program and
    /// arguments of the main listener, as `check` runs it), both rendered by [`Self::render`].
    pub fn materialize(&self, port: u16, dir: &Path) -> Result<Vec<String>, String> {
        let r = self.render(port, None, dir)?;
        for (name, body) in &r.files {
            std::fs::write(dir.join(name), body).map_err(|e| format!("writing {name}: {e}"))?;
        }
        let mut argv = vec![self.program()?];
        argv.extend(r.args);
        Ok(argv)
    }
}

/// Starts one instance on loopback and waits until it accepts TCP connections.
pub async fn launch(def: &PeerDef, inst: &InstanceDef) -> Result<Running, PeerError> {
    let err = |m: String| PeerError::Start { instance: format!("{}/{}", def.name, inst.name), message: m };
    let user = inst.user.clone().unwrap_or_default();
    let pass = inst.pass.clone().unwrap_or_default();
    if inst.kind == Kind::Reference {
        let opts = inst.reference.clone().unwrap_or_default();
        let r = reference::start(&opts, Some(inst.name.clone())).await.map_err(|e| err(e.to_string()))?;
        let sut = r.sut.clone();
        return Ok(Running { sut, child: None, _reference: Some(r), _dir: None });
    }
    let dir = tempfile::tempdir().map_err(|e| err(e.to_string()))?;
    let port = testkit::free_port().map_err(|e| err(e.to_string()))?;
    let argv = inst.materialize(port, dir.path()).map_err(err)?;
    let env = inst.render(port, None, dir.path()).map_err(err)?.env;
    let log = std::fs::File::create(dir.path().join("output.log")).map_err(|e| err(e.to_string()))?;
    let log2 = log.try_clone().map_err(|e| err(e.to_string()))?;
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .envs(env)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| err(format!("cannot start `{}`: {e}", argv[0])))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match testkit::wait_accepting_async(&mut child, &[addr], Duration::from_secs(5)).await {
        Ok(()) => {}
        Err(testkit::NotReady::Exited(status)) => {
            let out = std::fs::read_to_string(dir.path().join("output.log")).unwrap_or_default();
            return Err(err(format!("exited with {status} before listening:\n{out}")));
        }
        Err(e) => {
            let _ = child.kill().await;
            return Err(err(e.to_string()));
        }
    }
    // Readiness of the TCP port does not mean every listener (v2ray's UDP) is up; give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let claims = inst.claims.clone().ok_or_else(|| err("no claims".into()))?;
    Ok(Running {
        sut: Sut {
            addr,
            user: user.into_bytes(),
            pass: pass.into_bytes(),
            claims,
            instance: Some(inst.name.clone()),
            transport: Default::default(),
        },
        child: Some(child),
        _reference: None,
        _dir: Some(dir),
    })
}

/// Runs the version command, if any, and returns its first output line (none when it cannot
/// run, e.g. a `{env:NAME}` that is unset: starting the instances reports that).
pub async fn version(def: &PeerDef) -> Option<String> {
    let argv = def.version_command.iter().map(|a| expand_env(a)).collect::<Result<Vec<_>, _>>().ok()?;
    let (prog, args) = argv.split_first()?;
    let out = tokio::process::Command::new(prog).args(args).output().await.ok()?;
    let text = if out.stdout.is_empty() { out.stderr } else { out.stdout };
    String::from_utf8_lossy(&text).lines().next().map(|l| l.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::{expand_env, fill, Kind, PeerDef};
    use std::collections::BTreeMap;
    use std::path::Path;

    #[test]
    fn fill_replaces_known_names_and_leaves_other_braces() {
        let v = |n: &str| (n == "port").then(|| "1080".to_string());
        let json = r#"{"port": {port}, "x": {}, "e": "{env:HOME}"}"#;
        assert_eq!(fill(json, v, true).unwrap(), r#"{"port": 1080, "x": {}, "e": "{env:HOME}"}"#);
        assert_eq!(fill("a {user} b", v, false).unwrap(), "a {user} b");
        let e = fill("a {usr} b", v, true).unwrap_err();
        assert!(e.contains("unknown placeholder {usr}"), "{e}");
        assert_eq!(fill("{ {port", v, true).unwrap(), "{ {port");
    }

    /// A client definition: its own placeholders (a feature's `set`, else `defaults`) are filled
    /// first, and may hold the lab's, which are filled next; `{dir}` stays for the starter.
    #[test]
    fn a_client_is_rendered_per_feature_and_a_misspelt_placeholder_is_an_error() {
        let def = load(
            "name: c\ndescription: d\ninstances: []\nmatrix:\n  version: v\n  image_program: /p\n  client:\n    \
             run: listen\n    args: [-x, \"{url}\", -o, \"{dir}/out\"]\n    files: {c.json: \"{auth}:{listen}\"}\n    \
             defaults: {url: \"socks5://{proxy}\", auth: \"\"}\n    features:\n      socks5-connect: {}\n      \
             userpass: {set: {auth: \"{user}\"}, tcp_ready: false}\n      bad: {set: {url: \"{proxi}\"}}\n",
        )
        .unwrap();
        let client = def.matrix.as_ref().and_then(|m| m.client.as_ref()).expect("a client");
        let lab: BTreeMap<&str, String> = [("proxy", "127.0.0.1:1080"), ("user", "alice"), ("listen", "5000")]
            .map(|(k, v)| (k, v.to_string()))
            .into();
        let r = client.render("socks5-connect", &lab).unwrap();
        assert_eq!(r.args, ["-x", "socks5://127.0.0.1:1080", "-o", "{dir}/out"]);
        assert_eq!(r.files, [("c.json".to_string(), ":5000".to_string())]);
        assert_eq!(client.render("userpass", &lab).unwrap().files[0].1, "alice:5000");
        assert!(client.features["socks5-connect"].tcp_ready && !client.features["userpass"].tcp_ready);
        assert!(client.render("bad", &lab).unwrap_err().contains("{proxi}"));
        assert!(client.render("bind", &lab).unwrap_err().contains("does not claim `bind`"));
    }

    /// Loads `yaml` as a peer definition from a fresh directory.
    fn load(yaml: &str) -> Result<PeerDef, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("peer.yaml"), yaml).unwrap();
        PeerDef::load(dir.path()).map_err(|e| e.to_string())
    }

    const CLAIMS: &str = "{versions: [socks5], commands: [connect], method: noauth}";

    #[test]
    fn extra_listeners_and_env_are_rendered_only_when_asked_for() {
        let def = load(&format!(
            "name: p\ndescription: d\ninstances:\n  - name: open\n    kind: process\n    user: u\n    pass: pw\n    \
             command: [prog, -L, \"main://{{user}}@:{{port}}\"]\n    env: {{LEVEL: \"{{port}}\"}}\n    \
             files: {{c.txt: \"at {{dir}} on {{port}}\"}}\n    claims: {CLAIMS}\n    extra:\n      \
             - features: [a, b]\n        args: [-L, \"x://{{pass}}@:{{port}}\"]\n"
        ))
        .unwrap();
        let inst = def.instance("open").unwrap();
        let check = inst.render(10, None, Path::new("/d")).unwrap();
        assert_eq!(check.args, ["-L", "main://u@:10"], "check starts the main listener alone");
        assert_eq!(check.files, [("c.txt".to_string(), "at /d on 10".to_string())]);
        assert_eq!(check.env, [("LEVEL".to_string(), "10".to_string())]);
        let lab = inst.render(10, Some(&[11]), Path::new("{dir}")).unwrap();
        assert_eq!(lab.args, ["-L", "main://u@:10", "-L", "x://pw@:11"], "each extra on its own port");
        assert_eq!(lab.files[0].1, "at {dir} on 10", "`{{dir}}` stays for a starter that substitutes it");
        assert!(inst.render(10, Some(&[]), Path::new("/d")).unwrap_err().contains("1 extra listener"));
        assert_eq!(inst.program().unwrap(), "prog");
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(inst.materialize(12, dir.path()).unwrap(), ["prog", "-L", "main://u@:12"]);
        let written = std::fs::read_to_string(dir.path().join("c.txt")).unwrap();
        assert_eq!(written, format!("at {} on 12", dir.path().display()));
    }

    #[test]
    fn lab_instances_are_found_first_and_check_never_sees_them() {
        let def = load(&format!(
            "name: p\ndescription: d\ninstances:\n  - {{name: open, kind: reference}}\n  \
             - {{name: auth, kind: process, command: [a], claims: {CLAIMS}}}\nlab:\n  \
             - {{name: open, kind: process, command: [b], claims: {CLAIMS}}}\n"
        ))
        .unwrap();
        assert_eq!(def.instances.len(), 2, "`lab:` is not among what check starts");
        assert_eq!(def.instance("open").unwrap().command, ["b"], "the lab's process shadows the in-process one");
        assert_eq!(def.instance("auth").unwrap().command, ["a"]);
        assert!(def.instance("nope").is_err());
        let only_ref = load("name: p\ndescription: d\ninstances:\n  - {name: open, kind: reference}\n").unwrap();
        assert_eq!(only_ref.instances[0].kind, Kind::Reference);
        assert!(only_ref.instance("open").unwrap_err().to_string().contains("in-process"));
    }

    #[test]
    fn invalid_definitions_are_refused_with_the_instance_named() {
        let lab_ref =
            load("name: p\ndescription: d\ninstances: []\nlab:\n  - {name: x, kind: reference}\n").unwrap_err();
        assert!(lab_ref.contains("lab instance `x`"), "{lab_ref}");
        let twice = load(&format!(
            "name: p\ndescription: d\ninstances:\n  - {{name: x, kind: process, command: [a], claims: {CLAIMS}}}\n  \
             - {{name: x, kind: process, command: [a], claims: {CLAIMS}}}\n"
        ))
        .unwrap_err();
        assert!(twice.contains("`x` is defined twice"), "{twice}");
        let ref_extra = load(
            "name: p\ndescription: d\ninstances:\n  - {name: x, kind: reference, extra: [{features: [a], args: []}]}\n",
        )
        .unwrap_err();
        assert!(ref_extra.contains("instance `x`"), "{ref_extra}");
    }

    #[test]
    fn env_placeholders_are_replaced_and_an_unset_one_is_named() {
        // PATH is set in every environment cargo test runs in; the other name is made up so that
        // no environment sets it.
        let path = std::env::var("PATH").expect("PATH is set");
        assert_eq!(expand_env("a{env:PATH}b{env:PATH}").unwrap(), format!("a{path}b{path}"));
        assert_eq!(expand_env("no placeholder {port}").unwrap(), "no placeholder {port}");
        let e = expand_env("{env:SOCKSLAB_TEST_SURELY_UNSET_7f3a}").unwrap_err();
        assert!(e.contains("SOCKSLAB_TEST_SURELY_UNSET_7f3a is not set"), "{e}");
        assert!(expand_env("{env:PATH").unwrap_err().contains("closing"));
        assert!(expand_env("{env:}").unwrap_err().contains("names no variable"));
    }
}
