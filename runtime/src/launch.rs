//! The runtime half of StartContainer: the container's monitor and
//! libcontainer's init are made only when the container is started (as
//! containerd makes its task), so CreateContainer is cheap and a container
//! that cannot run (a missing executable, a bad working directory) fails
//! its start and is then reported exited with reason `StartError`.

use podctl_shim::logfmt::{now_ns, rfc3339_nano};
use podctl_shim::ExitRecord;

use crate::config::CgroupDriver;
use crate::container::{Meta, Runtime};
use crate::error::{Result, RuntimeError};
use crate::{cgroup, shim};

/// How far a StartContainer got, from libcontainer's state: a crash of
/// the daemon may cut it after the launch or after the start.
pub(crate) enum Begun {
    /// Not launched (or a launch cut in the middle, which a new start
    /// replaces).
    No,
    /// Monitor and init made, the user's process not started.
    Launched,
    /// The user's process was started, at this time (ns).
    Started(i64),
}

/// The exit code of a container that could not be started (containerd's).
pub const START_ERROR_CODE: i32 = 128;
pub const START_ERROR: &str = "StartError";

impl Runtime {
    /// `podctl-shim create` for a created container: the monitor and
    /// the container's init, stopped before the user's process runs.
    pub(crate) fn launch(&self, id: &str, m: &Meta) -> Result<()> {
        let dir = self.dir(id);
        let cfg = &m.config;
        let root_s = self.libcontainer_root().display().to_string();
        let dir_s = dir.display().to_string();
        let log_s = cfg.log_path.display().to_string();
        let (oom, oom_parent) = cgroup::oom_files(self.cfg.cgroup_driver, &m.cgroups_path);
        let oom = oom.map(|p| p.display().to_string());
        let oom_parent = oom_parent.map(|p| p.display().to_string());
        let pod_dir = m
            .sandbox_id
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| self.sandbox_dir(s).display().to_string());
        let mut args = vec![
            "--id", id, "--bundle", &dir_s, "--root", &root_s, "--dir", &dir_s, "--log", &log_s,
        ];
        if let Some(p) = &pod_dir {
            // One monitor per pod, in the sandbox's directory.
            args.extend(["--pod-dir", p.as_str()]);
        }
        if let Some(o) = &oom {
            args.extend(["--oom-file", o.as_str()]);
        }
        if let Some(o) = &oom_parent {
            args.extend(["--oom-parent", o.as_str()]);
        }
        if self.cfg.cgroup_driver == CgroupDriver::Systemd {
            args.push("--systemd");
        }
        if cfg.stdin {
            args.push("--stdin");
            if cfg.stdin_once {
                args.push("--stdin-once");
            }
        }
        if cfg.tty {
            args.push("--tty");
        }
        shim::run(&self.shim, id, "create", &args)?;
        // The pod monitor marks the container watched before it answers;
        // a monitor of an older podctl did so after answering: wait until
        // it reads the output, so that what the container prints first is
        // in its log by the time the start is reported.
        let marker = dir.join(podctl_shim::WATCHING_FILE);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while !marker.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_micros(500));
        }
        Ok(())
    }

    /// How far a start of this container got ([`Begun`]). libcontainer
    /// saves its state as `running` right after the start, so the state
    /// file's modification time is the start time.
    pub(crate) fn begun(&self, id: &str) -> Begun {
        let p = self.libcontainer_root().join(id).join("state.json");
        let Ok(b) = std::fs::read(&p) else {
            return Begun::No;
        };
        let status = serde_json::from_slice::<serde_json::Value>(&b)
            .ok()
            .and_then(|v| v["status"].as_str().map(str::to_string));
        match status.as_deref() {
            Some("created") => Begun::Launched,
            Some("running" | "stopped" | "paused") => {
                let at = std::fs::metadata(&p)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or_else(now_ns, |d| d.as_nanos() as i64);
                Begun::Started(at)
            }
            _ => Begun::No,
        }
    }

    /// The start failed: clear what the launch left and record the
    /// container as exited with `StartError` and the reason.
    pub(crate) fn start_failed(&self, id: &str, e: &RuntimeError) {
        tracing::warn!(%id, error = %e, "container start failed");
        let dir = self.dir(id);
        // A monitor that got as far as writing the pid waits on a dead init:
        // kill what is there so the exit record below stays the only one.
        if self.libcontainer_root().join(id).exists() {
            let root = self.libcontainer_root().display().to_string();
            let args = ["--id", id, "--root", root.as_str(), "--force"];
            if let Err(e) = shim::run(&self.shim, id, "delete", &args) {
                tracing::warn!(%id, error = %e, "deleting the half-started container");
            }
        }
        let ns = now_ns();
        let rec = ExitRecord {
            exit_code: START_ERROR_CODE,
            signal: None,
            finished_at: rfc3339_nano(ns),
            finished_at_ns: ns,
            oom_killed: false,
            reason: Some(START_ERROR.into()),
            message: Some(start_message(e)),
        };
        if let Err(err) = rec.write(&dir) {
            tracing::warn!(%id, error = %err, "recording the failed start");
        }
    }
}

/// The reason the kubelet shows: the shim's own words, without our
/// wrapping.
fn start_message(e: &RuntimeError) -> String {
    match e {
        RuntimeError::Shim { reason, .. } => reason.clone(),
        e => e.to_string(),
    }
}
