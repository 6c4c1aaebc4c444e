//! A container's status and the list of containers, read from the state
//! directory alone (the monitor's `pid`, `monitor.pid` and `exit.json`),
//! so any process sees the same answer.

use podctl_shim::state::read_pid;
use podctl_shim::ExitRecord;

use crate::container::{ContainerState, ContainerStatus, Runtime};
use crate::error::{IoContext, Result};
use crate::liveness::process_alive;

impl Runtime {
    /// Status from the state directory alone.
    pub fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        let m = self.meta(id)?;
        let dir = self.dir(id);
        let exit = ExitRecord::read(&dir).ctx("read", dir.join(podctl_shim::EXIT_FILE))?;
        // An exit record is final: its container's process need not be
        // looked for.
        let pid = match exit {
            Some(_) => None,
            None => read_pid(&dir.join(podctl_shim::PID_FILE)).ok(),
        };
        let mut alive = pid.is_some_and(process_alive);
        if exit.is_none() && !alive && pid.is_some() {
            // The process is gone but its monitor is still draining output
            // before it writes the exit record (up to 2 s): not exited yet.
            alive = read_pid(&dir.join(podctl_shim::MONITOR_PID_FILE))
                .ok()
                .is_some_and(process_alive)
                && ExitRecord::read(&dir).ok().flatten().is_none();
        }
        let exit = match exit {
            None if !alive => {
                ExitRecord::read(&dir).ctx("read", dir.join(podctl_shim::EXIT_FILE))?
            }
            e => e,
        };
        let mut started_at_ns = m.started_at_ns;
        if started_at_ns == 0 && alive {
            // Started, but a crash cut the start before it was recorded.
            if let crate::launch::Begun::Started(at) = self.begun(id) {
                started_at_ns = at;
            }
        }
        let (state, reason) = match (&exit, alive, started_at_ns) {
            (Some(e), _, _) if e.reason.is_some() => {
                (ContainerState::Exited, e.reason.as_deref().unwrap_or(""))
            }
            (Some(e), _, _) if e.oom_killed => (ContainerState::Exited, "OOMKilled"),
            (Some(e), _, _) if e.exit_code == 0 => (ContainerState::Exited, "Completed"),
            (Some(_), _, _) => (ContainerState::Exited, "Error"),
            (None, true, 0) => (ContainerState::Created, ""),
            (None, true, _) => (ContainerState::Running, ""),
            // Not launched yet: StartContainer makes its process.
            (None, false, 0) if pid.is_none() => (ContainerState::Created, ""),
            (None, false, _) if pid.is_none() => (ContainerState::Unknown, ""),
            (None, false, _) => (ContainerState::Exited, "Unknown"),
        };
        Ok(ContainerStatus {
            id: id.into(),
            name: m.config.name.clone(),
            image: m.config.image.clone(),
            sandbox_id: m.sandbox_id.clone(),
            state,
            pid: if alive { pid } else { None },
            created_at_ns: m.created_at_ns,
            started_at_ns,
            finished_at_ns: exit.as_ref().map(|e| e.finished_at_ns).unwrap_or(0),
            exit_code: exit.as_ref().map(|e| e.exit_code),
            reason: reason.into(),
            message: exit
                .as_ref()
                .and_then(|e| e.message.clone())
                .unwrap_or_default(),
            log_path: m.config.log_path.clone(),
            labels: m.config.labels.clone(),
        })
    }

    /// All containers this state directory knows, oldest first.
    pub fn list_containers(&self) -> Result<Vec<ContainerStatus>> {
        // A live container changes when its process ends.
        let compute = |id: &str| {
            let st = self.container_status(id).ok()?;
            let pid = st.pid.filter(|_| st.state == ContainerState::Running);
            Some((st, pid))
        };
        // Containers another process removed leave the cache here.
        let removed = |id: &str| self.metas.forget(id);
        if let Some(mut all) = self.container_index.list(compute, removed) {
            all.sort_by_key(|s| s.created_at_ns);
            return Ok(all);
        }
        let d = self.cfg.state_dir.join("containers");
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for e in std::fs::read_dir(&d).ctx("read", &d)?.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if let Ok(s) = self.container_status(&id) {
                out.push(s);
            }
            seen.insert(id);
        }
        // Containers another process removed leave the cache here.
        self.metas.retain(|id| seen.contains(id));
        out.sort_by_key(|s| s.created_at_ns);
        Ok(out)
    }

    /// Keep the statuses of containers and sandboxes in memory for list
    /// calls, read again only when their files change or their process
    /// ends (see `status_index`): for a daemon, not a one-shot command.
    pub fn watch_state(&self) {
        use crate::status_index::Layout;
        self.container_index
            .enable(&self.cfg.state_dir.join("containers"), Layout::Dirs);
        self.sandbox_index
            .enable(&self.cfg.state_dir.join("sandboxes"), Layout::Dirs);
    }
}
