//! Running a peer program: as a container (testcontainers, host networking, the instance's
//! directory bind-mounted at the same path) or as a plain process. Only what this run started is
//! ever stopped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use testcontainers::core::{Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};
use tokio::net::TcpStream;

use crate::peers::{PeerId, LABEL};

/// How to start one program of a peer.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The peer.
    pub peer: PeerId,
    /// The program on the host (process backend).
    pub program: PathBuf,
    /// Its image (docker backend), `name:tag`.
    pub image: Option<String>,
}

/// A running long-lived program.
pub struct Running {
    /// Private directory (configs, logs); removed on drop.
    pub dir: tempfile::TempDir,
    inner: Inner,
}

enum Inner {
    Process(tokio::process::Child),
    Container(Box<ContainerAsync<GenericImage>>),
}

/// The outcome of a one-shot program (curl).
#[derive(Debug)]
pub struct Exit {
    /// Exit code (-1 when killed or unknown).
    pub code: i64,
    /// stdout and stderr, for logs.
    pub output: String,
}

impl Launcher {
    fn argv0(&self) -> String {
        match &self.image {
            Some(_) => self.peer.program_in_image().to_string(),
            None => self.program.to_string_lossy().into_owned(),
        }
    }

    fn request(&self, dir: &Path, args: &[String]) -> Result<testcontainers::ContainerRequest<GenericImage>> {
        let image = self.image.as_deref().context("no image")?;
        let (name, tag) = image.split_once(':').context("image without tag")?;
        let mut cmd = vec![self.argv0()];
        cmd.extend(args.iter().cloned());
        let d = dir.to_string_lossy().into_owned();
        Ok(GenericImage::new(name, tag)
            .with_wait_for(WaitFor::Nothing)
            .with_cmd(cmd)
            .with_network("host")
            .with_mount(Mount::bind_mount(d.clone(), d.clone()))
            .with_working_dir(d)
            .with_label(LABEL, "1")
            .with_startup_timeout(Duration::from_secs(30)))
    }

    /// Starts a long-lived program with `files` written into its directory first (`{dir}` in
    /// arguments and files is replaced by the directory's path). Ready when `ready` accepts a TCP
    /// connection (when given); retries for at most 10 s.
    pub async fn start(&self, args: &[String], files: &[(&str, String)], ready: Option<SocketAddr>) -> Result<Running> {
        let dir = tempfile::Builder::new().prefix("sockslab-interop-").tempdir()?;
        let d = dir.path().to_string_lossy().into_owned();
        for (name, body) in files {
            std::fs::write(dir.path().join(name), body.replace("{dir}", &d))?;
        }
        let args: Vec<String> = args.iter().map(|a| a.replace("{dir}", &d)).collect();
        let inner = match &self.image {
            Some(_) => Inner::Container(Box::new(
                self.request(dir.path(), &args)?.start().await.with_context(|| format!("starting {}", self.peer))?,
            )),
            None => {
                let log = std::fs::File::create(dir.path().join("output.log"))?;
                let child = tokio::process::Command::new(self.argv0())
                    .args(&args)
                    .current_dir(dir.path())
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .kill_on_drop(true)
                    .spawn()
                    .with_context(|| format!("starting {}", self.program.display()))?;
                Inner::Process(child)
            }
        };
        let mut running = Running { dir, inner };
        if let Some(addr) = ready {
            let mut ok = false;
            for _ in 0..200 {
                if running.exited().await {
                    bail!("{} exited before listening:\n{}", self.peer, running.logs().await);
                }
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr)).await {
                    ok = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if !ok {
                bail!("{} not listening on {addr} after 10 s:\n{}", self.peer, running.logs().await);
            }
            // TCP readiness does not cover UDP listeners bound just after it; a short grace.
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        Ok(running)
    }

    /// Runs a one-shot program to completion (at most `limit`), `{dir}` substituted as above.
    pub async fn run_once(&self, dir: &Path, args: &[String], limit: Duration) -> Result<Exit> {
        let d = dir.to_string_lossy().into_owned();
        let args: Vec<String> = args.iter().map(|a| a.replace("{dir}", &d)).collect();
        match &self.image {
            Some(_) => {
                let req = self.request(dir, &args)?;
                let c = tokio::time::timeout(limit, req.start()).await.context("container timed out")??;
                // Wait for the exit ourselves: bounded polling of the container state.
                let mut code = None;
                for _ in 0..(limit.as_millis() / 50).max(1) {
                    if let Some(c) = c.exit_code().await? {
                        code = Some(c);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let out = String::from_utf8_lossy(&c.stdout_to_vec().await.unwrap_or_default()).into_owned()
                    + &String::from_utf8_lossy(&c.stderr_to_vec().await.unwrap_or_default());
                let _ = c.rm().await;
                Ok(Exit { code: code.unwrap_or(-1), output: out })
            }
            None => {
                let child = tokio::process::Command::new(self.argv0())
                    .args(&args)
                    .current_dir(dir)
                    .stdin(Stdio::null())
                    .kill_on_drop(true)
                    .output();
                let out = tokio::time::timeout(limit, child).await.context("timed out")??;
                Ok(Exit {
                    code: out.status.code().map(i64::from).unwrap_or(-1),
                    output: String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
                })
            }
        }
    }
}

impl Running {
    async fn exited(&mut self) -> bool {
        match &mut self.inner {
            Inner::Process(c) => matches!(c.try_wait(), Ok(Some(_))),
            Inner::Container(c) => !c.is_running().await.unwrap_or(false),
        }
    }

    /// The program's output so far.
    pub async fn logs(&self) -> String {
        match &self.inner {
            Inner::Process(_) => std::fs::read_to_string(self.dir.path().join("output.log")).unwrap_or_default(),
            Inner::Container(c) => {
                String::from_utf8_lossy(&c.stdout_to_vec().await.unwrap_or_default()).into_owned()
                    + &String::from_utf8_lossy(&c.stderr_to_vec().await.unwrap_or_default())
            }
        }
    }

    /// Stops it: SIGTERM to our own child then SIGKILL after 3 s, or removes our container.
    pub async fn stop(self) {
        match self.inner {
            Inner::Process(mut c) => {
                if let Some(pid) = c.id() {
                    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
                    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                }
                if tokio::time::timeout(Duration::from_secs(3), c.wait()).await.is_err() {
                    let _ = c.kill().await;
                }
            }
            Inner::Container(c) => {
                let _ = c.stop_with_timeout(Some(2)).await;
                let _ = c.rm().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The testcontainers smoke test (docker/README.md): pins the request API the lab relies on —
    /// a local tag, host networking, the label leftovers are removed by, the bind mount at the
    /// same path, and the program as the command. No daemon needed, so it runs everywhere.
    #[test]
    fn container_request_uses_host_network_label_and_same_path_mount() {
        let l = Launcher {
            peer: PeerId::Reference,
            program: PathBuf::from("/unused"),
            image: Some("sockslab-reference:0123456789ab".into()),
        };
        let dir = Path::new("/tmp/sockslab-interop-test");
        let req = l.request(dir, &["-L".into(), "socks5://:1080".into()]).unwrap();
        assert_eq!(req.descriptor(), "sockslab-reference:0123456789ab");
        assert_eq!(req.network().as_deref(), Some("host"));
        assert_eq!(req.labels().get(LABEL).map(String::as_str), Some("1"));
        let m: Vec<(Option<&str>, Option<&str>)> = req.mounts().map(|m| (m.source(), m.target())).collect();
        assert_eq!(m, vec![(Some("/tmp/sockslab-interop-test"), Some("/tmp/sockslab-interop-test"))]);
        let cmd: Vec<String> = req.cmd().map(|c| c.into_owned()).collect();
        assert_eq!(cmd, ["/usr/local/bin/socksref", "-L", "socks5://:1080"]);
        assert_eq!(req.working_dir(), Some("/tmp/sockslab-interop-test"));
    }
}
