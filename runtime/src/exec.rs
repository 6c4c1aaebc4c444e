//! Running a command in a running container (CRI ExecSync). The
//! libcontainer tenant builder forks its caller, so the work happens in a
//! short-lived `podctl-shim exec` process: it joins the container, copies
//! the command's stdout/stderr to its own, kills the command at the
//! deadline and writes the exit status to a file.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use podctl_shim::{ExecProcess, ExecStatus};

use crate::container::{ContainerState, Runtime};
use crate::error::{IoContext, Result, RuntimeError};

/// Outcome of [`Runtime::exec_sync`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecResult {
    /// Exit code; 128 + signal when killed (137 after a timeout).
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub timed_out: bool,
}

impl Runtime {
    /// Run `cmd` in the running container `id` with its environment, user
    /// and working directory; capture its output; kill it after `timeout`
    /// (zero means no timeout).
    pub fn exec_sync(&self, id: &str, cmd: &[String], timeout: Duration) -> Result<ExecResult> {
        let st = self.container_status(id)?;
        if st.state != ContainerState::Running {
            return Err(RuntimeError::Container {
                id: id.into(),
                reason: format!("cannot exec in a {:?} container", st.state),
            });
        }
        if cmd.is_empty() {
            return Err(RuntimeError::Container {
                id: id.into(),
                reason: "exec: empty command".into(),
            });
        }
        let tag = &crate::container::new_id()?[..16];
        let dir = self.dir(id);
        let proc_path = dir.join(format!("exec-{tag}.json"));
        let status_path = dir.join(format!("exec-{tag}.status"));
        // Run as the container's process does: same user, groups and cwd.
        let spec_path = dir.join("config.json");
        let spec = oci_spec::runtime::Spec::load(&spec_path).map_err(|e| RuntimeError::Spec {
            id: id.into(),
            reason: format!("{}: {e}", spec_path.display()),
        })?;
        let proc_ = spec.process().clone().unwrap_or_default();
        let user = proc_.user();
        let p = ExecProcess {
            args: cmd.to_vec(),
            env: Vec::new(),
            cwd: Some(proc_.cwd().display().to_string()),
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
            seccomp: spec.linux().as_ref().and_then(|l| l.seccomp().clone()),
            rlimits: proc_.rlimits().clone().unwrap_or_default(),
        };
        let data = serde_json::to_vec(&p).map_err(|e| RuntimeError::Container {
            id: id.into(),
            reason: e.to_string(),
        })?;
        std::fs::write(&proc_path, data).ctx("write", &proc_path)?;
        let res = self.run_exec(id, &proc_path, &status_path, timeout);
        let _ = std::fs::remove_file(&proc_path);
        let _ = std::fs::remove_file(&status_path);
        res
    }

    fn run_exec(
        &self,
        id: &str,
        proc_path: &Path,
        status_path: &Path,
        timeout: Duration,
    ) -> Result<ExecResult> {
        let shim_err = |reason: String| RuntimeError::Shim {
            id: id.into(),
            cmd: "exec".into(),
            reason,
        };
        let mut child = Command::new(&self.shim)
            .arg("exec")
            .arg("--id")
            .arg(id)
            .arg("--root")
            .arg(self.libcontainer_root())
            .arg("--process")
            .arg(proc_path)
            .arg("--status")
            .arg(status_path)
            .arg("--timeout-ms")
            .arg(timeout.as_millis().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| shim_err(format!("{}: {e}", self.shim.display())))?;
        let out = child.stdout.take().map(drain);
        let err = child.stderr.take().map(drain);
        // The shim enforces the timeout; this only guards against a stuck shim.
        let guard =
            (!timeout.is_zero()).then(|| Instant::now() + timeout + Duration::from_secs(30));
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if guard.is_some_and(|g| Instant::now() > g) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(shim_err("exec shim did not finish".into()));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return Err(shim_err(e.to_string())),
            }
        };
        let stdout = out.and_then(|h| h.join().ok()).unwrap_or_default();
        let stderr = err.and_then(|h| h.join().ok()).unwrap_or_default();
        let st: ExecStatus = match std::fs::read(status_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| shim_err(e.to_string()))?,
            Err(_) => {
                return Err(shim_err(format!(
                    "{status}: {}",
                    String::from_utf8_lossy(&stderr).trim()
                )))
            }
        };
        Ok(ExecResult {
            exit_code: st.exit_code,
            stdout,
            stderr,
            timed_out: st.timed_out,
        })
    }
}

fn drain<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}
