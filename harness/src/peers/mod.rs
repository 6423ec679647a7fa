//! Peer definitions (`harness/peers/<name>/peer.yaml`) and launching them on loopback.
//!
//! A peer has one or more *instances*: configurations of the same software (open, with password,
//! with UDP…), each with the claims it makes. A scenario runs against the first instance it applies
//! to. Expected results sit next to the definition in `expected.yaml`.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::net::TcpStream;

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
    /// Program and arguments; `{port}`, `{dir}`, `{user}`, `{pass}` are substituted.
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
}

/// A peer definition file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerDef {
    /// Peer name.
    pub name: String,
    /// What it is and where it comes from.
    pub description: String,
    /// Command printing the installed version (recorded in reports).
    #[serde(default)]
    pub version_command: Vec<String>,
    /// Its configurations.
    pub instances: Vec<InstanceDef>,
    /// Directory of the definition (set on load).
    #[serde(skip)]
    pub dir: PathBuf,
}

impl PeerDef {
    /// Loads `dir/peer.yaml`.
    pub fn load(dir: &Path) -> Result<PeerDef, LoadError> {
        let mut d: PeerDef = yaml::from_file(&dir.join("peer.yaml"))?;
        d.dir = dir.to_path_buf();
        for i in &d.instances {
            let ok = match i.kind {
                Kind::Process => i.claims.is_some() && !i.command.is_empty(),
                Kind::Reference => i.command.is_empty(),
            };
            if !ok {
                return Err(LoadError::Invalid {
                    path: dir.join("peer.yaml"),
                    message: format!(
                        "instance `{}`: a process needs `command` and `claims`; a reference has no command",
                        i.name
                    ),
                });
            }
        }
        Ok(d)
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

fn free_port() -> std::io::Result<u16> {
    // Bind-and-release: a small race with other processes, acceptable on a lab machine.
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn subst(s: &str, port: u16, dir: &Path, user: &str, pass: &str) -> String {
    s.replace("{port}", &port.to_string())
        .replace("{dir}", &dir.to_string_lossy())
        .replace("{user}", user)
        .replace("{pass}", pass)
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
    let port = free_port().map_err(|e| err(e.to_string()))?;
    for (name, body) in &inst.files {
        std::fs::write(dir.path().join(name), subst(body, port, dir.path(), &user, &pass))
            .map_err(|e| err(e.to_string()))?;
    }
    let argv: Vec<String> = inst.command.iter().map(|a| subst(a, port, dir.path(), &user, &pass)).collect();
    let log = std::fs::File::create(dir.path().join("output.log")).map_err(|e| err(e.to_string()))?;
    let log2 = log.try_clone().map_err(|e| err(e.to_string()))?;
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| err(format!("cannot start `{}`: {e}", argv[0])))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(Some(status)) = child.try_wait() {
            let out = std::fs::read_to_string(dir.path().join("output.log")).unwrap_or_default();
            return Err(err(format!("exited with {status} before listening:\n{out}")));
        }
        if TcpStream::connect(addr).await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !ready {
        let _ = child.kill().await;
        return Err(err(format!("not listening on {addr} after 5 s")));
    }
    // Readiness of the TCP port does not mean every listener (v2ray's UDP) is up; give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let claims = inst.claims.clone().ok_or_else(|| err("no claims".into()))?;
    Ok(Running {
        sut: Sut { addr, user: user.into_bytes(), pass: pass.into_bytes(), claims, instance: Some(inst.name.clone()) },
        child: Some(child),
        _reference: None,
        _dir: Some(dir),
    })
}

/// Runs the version command, if any, and returns its first output line.
pub async fn version(def: &PeerDef) -> Option<String> {
    let (prog, args) = def.version_command.split_first()?;
    let out = tokio::process::Command::new(prog).args(args).output().await.ok()?;
    let text = if out.stdout.is_empty() { out.stderr } else { out.stdout };
    String::from_utf8_lossy(&text).lines().next().map(|l| l.trim().to_string())
}
