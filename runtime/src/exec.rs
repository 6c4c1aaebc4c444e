//! Running a command in a running container (CRI ExecSync). The
//! libcontainer tenant builder forks its caller, so the work happens in a
//! short-lived `podctl-shim exec` process: it joins the container, copies
//! the command's stdout/stderr to its own, kills the command at the
//! deadline and writes the exit status to a file.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use podctl_shim::{ExecProcess, ExecStatus};

use crate::container::{ContainerState, Runtime};
use crate::error::{IoContext, Result, RuntimeError};

/// An exec with live stdio, ready to spawn ([`Runtime::exec_streaming`]).
#[derive(Debug)]
pub struct PreparedExec {
    pub id: String,
    /// `podctl-shim exec ...`; set its stdio, spawn it, wait for it.
    pub command: Command,
    process: std::path::PathBuf,
    status: std::path::PathBuf,
    /// With a tty: write `WIDTH HEIGHT\n` lines here to resize.
    pub resize: Option<std::path::PathBuf>,
}

impl PreparedExec {
    /// The exit code, once the shim has exited; removes the exec's files.
    pub fn finish(self) -> Result<i32> {
        let st: Option<ExecStatus> = std::fs::read(&self.status)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let _ = std::fs::remove_file(&self.process);
        let _ = std::fs::remove_file(&self.status);
        if let Some(r) = &self.resize {
            let _ = std::fs::remove_file(r);
        }
        st.map(|s| s.exit_code).ok_or_else(|| RuntimeError::Shim {
            id: self.id.clone(),
            cmd: "exec".into(),
            reason: "the exec shim wrote no exit status".into(),
        })
    }
}

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
        let (proc_path, status_path) = self.prepare_exec(id, cmd)?;
        let res = self.run_exec(id, &proc_path, &status_path, timeout);
        let _ = std::fs::remove_file(&proc_path);
        let _ = std::fs::remove_file(&status_path);
        res
    }

    /// Check the exec ([`Runtime::check_exec`]) and write its process
    /// file: the paths of that file and of the exit status the shim will
    /// write, both in the container's directory under a fresh tag.
    fn prepare_exec(&self, id: &str, cmd: &[String]) -> Result<(PathBuf, PathBuf)> {
        self.check_exec(id, cmd)?;
        let tag = &crate::container::new_id()?[..16];
        let dir = self.dir(id);
        let process = dir.join(format!("exec-{tag}.json"));
        let status = dir.join(format!("exec-{tag}.status"));
        self.write_process(id, cmd, &process)?;
        Ok((process, status))
    }

    /// Refuse an exec into a container that is not running (saying how it
    /// ended, see [`not_running`]) or of an empty command.
    fn check_exec(&self, id: &str, cmd: &[String]) -> Result<()> {
        let st = self.container_status(id)?;
        if st.state != ContainerState::Running {
            return Err(RuntimeError::Container {
                id: id.into(),
                reason: not_running(&st),
            });
        }
        if cmd.is_empty() {
            return Err(RuntimeError::Container {
                id: id.into(),
                reason: "exec: empty command".into(),
            });
        }
        Ok(())
    }

    /// The exec'd process as the container's own runs: same user, groups,
    /// cwd, seccomp profile and rlimits; written to `path` for the shim.
    fn write_process(&self, id: &str, cmd: &[String], path: &Path) -> Result<()> {
        let spec_path = self.dir(id).join("config.json");
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
            apparmor: proc_.apparmor_profile().clone(),
        };
        let data = serde_json::to_vec(&p).map_err(|e| RuntimeError::Container {
            id: id.into(),
            reason: e.to_string(),
        })?;
        std::fs::write(path, data).ctx("write", path)
    }

    /// Prepare an exec with live stdio (CRI Exec): the returned command
    /// runs the shim, whose stdin/stdout/stderr are the process's (with
    /// `tty`, a terminal's: output on stdout only, resizes through the
    /// FIFO). The caller spawns it, then reads the exit code.
    pub fn exec_streaming(
        &self,
        id: &str,
        cmd: &[String],
        stdin: bool,
        tty: bool,
    ) -> Result<PreparedExec> {
        let (process, status) = self.prepare_exec(id, cmd)?;
        let mut command = Command::new(&self.shim);
        command
            .arg("exec")
            .arg("--id")
            .arg(id)
            .arg("--root")
            .arg(self.libcontainer_root())
            .arg("--process")
            .arg(&process)
            .arg("--status")
            .arg(&status);
        if stdin {
            command.arg("--stdin");
        }
        let mut resize = None;
        if tty {
            // exec-<tag>.resize, beside the process file.
            let fifo = process.with_extension("resize");
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).map_err(
                |e| RuntimeError::Container {
                    id: id.into(),
                    reason: format!("mkfifo {}: {e}", fifo.display()),
                },
            )?;
            command.arg("--tty").arg("--resize").arg(&fifo);
            resize = Some(fifo);
        }
        Ok(PreparedExec {
            id: id.into(),
            command,
            process,
            status,
            resize,
        })
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
            .map_err(|e| crate::shim::spawn_error(&self.shim, id, "exec", e))?;
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

/// Why an exec cannot run in `st`'s container: its state and, for one
/// that exited, how (exit code, reason, message).
fn not_running(st: &crate::ContainerStatus) -> String {
    let mut why = format!("cannot exec: the container is {:?}", st.state);
    if let Some(code) = st.exit_code {
        why.push_str(&format!(" (exit code {code}"));
        if !st.reason.is_empty() {
            why.push_str(&format!(", {}", st.reason));
        }
        if !st.message.is_empty() {
            why.push_str(&format!(": {}", st.message.trim()));
        }
        why.push(')');
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(
        state: ContainerState,
        exit: Option<i32>,
        reason: &str,
        msg: &str,
    ) -> crate::ContainerStatus {
        crate::ContainerStatus {
            id: "c1".into(),
            name: "app".into(),
            image: "busybox".into(),
            sandbox_id: None,
            state,
            pid: None,
            created_at_ns: 0,
            started_at_ns: 0,
            finished_at_ns: 0,
            exit_code: exit,
            reason: reason.into(),
            message: msg.into(),
            log_path: Default::default(),
            labels: Default::default(),
        }
    }

    /// An exec refused says how the container ended, not just its state.
    #[test]
    fn a_refused_exec_says_how_the_container_ended() {
        assert_eq!(
            not_running(&status(ContainerState::Created, None, "", "")),
            "cannot exec: the container is Created"
        );
        assert_eq!(
            not_running(&status(ContainerState::Exited, Some(137), "Error", "")),
            "cannot exec: the container is Exited (exit code 137, Error)"
        );
        assert_eq!(
            not_running(&status(
                ContainerState::Exited,
                Some(128),
                "StartError",
                "exec: \"nope\": not found\n"
            )),
            "cannot exec: the container is Exited (exit code 128, StartError: exec: \"nope\": not found)"
        );
    }
}
