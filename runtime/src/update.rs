//! Changing a running container's resource limits (CRI
//! UpdateContainerResources): the values are written to the cgroup the
//! container's init process is in, on v1 or v2.

use std::path::{Path, PathBuf};

use crate::container::{ContainerState, Resources, Runtime};
use crate::error::{IoContext, Result, RuntimeError};

const ROOT: &str = "/sys/fs/cgroup";

/// cgroup v2 `cpu.weight` from v1 `cpu.shares` (the OCI conversion).
pub fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).ctx("write", path)
}

/// Controller → the process's cgroup path.
fn cgroup_paths(pid: i32) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let mut out = Vec::new();
    for l in text.lines() {
        let mut p = l.splitn(3, ':');
        if let (Some(_), Some(c), Some(path)) = (p.next(), p.next(), p.next()) {
            for ctrl in c.split(',') {
                out.push((ctrl.to_string(), path.trim_start_matches('/').to_string()));
            }
        }
    }
    out
}

impl Runtime {
    /// Apply new pod-level limits to the cgroup podctl made for a sandbox
    /// (one run without a cgroup parent of the caller's).
    pub fn update_sandbox_resources(&self, id: &str, r: &Resources) -> Result<()> {
        self.sandbox_status(id)?;
        crate::cgroup::set_pod_limits(&self.cfg, id, r)
    }

    /// Apply new limits to a created or running container.
    pub fn update_resources(&self, id: &str, r: &Resources) -> Result<()> {
        let st = self.container_status(id)?;
        let pid = match (st.state, st.pid) {
            (ContainerState::Created | ContainerState::Running, Some(pid)) => pid,
            _ => {
                return Err(RuntimeError::Container {
                    id: id.into(),
                    reason: format!("cannot update resources of a {:?} container", st.state),
                })
            }
        };
        let paths = cgroup_paths(pid);
        let find = |ctrl: &str| {
            paths
                .iter()
                .find(|(c, _)| c == ctrl)
                .map(|(_, p)| p.clone())
        };
        if Path::new(ROOT).join("memory").is_dir() {
            let v1 = |ctrl: &str, dir: &str| -> Option<PathBuf> {
                find(ctrl).map(|p| Path::new(ROOT).join(dir).join(p))
            };
            let cpu = v1("cpu", "cpu");
            let mem = v1("memory", "memory");
            if let (Some(m), Some(d)) = (r.memory_limit, &mem) {
                write(&d.join("memory.limit_in_bytes"), &m.to_string())?;
            }
            if let Some(d) = &cpu {
                if let Some(s) = r.cpu_shares {
                    write(&d.join("cpu.shares"), &s.to_string())?;
                }
                if let Some(p) = r.cpu_period {
                    write(&d.join("cpu.cfs_period_us"), &p.to_string())?;
                }
                if let Some(q) = r.cpu_quota {
                    write(&d.join("cpu.cfs_quota_us"), &q.to_string())?;
                }
            }
            if let (Some(n), Some(d)) = (r.pids_limit, v1("pids", "pids")) {
                write(&d.join("pids.max"), &n.to_string())?;
            }
        } else {
            let d = Path::new(ROOT).join(find("").unwrap_or_default());
            if let Some(m) = r.memory_limit {
                write(&d.join("memory.max"), &m.to_string())?;
            }
            if let Some(s) = r.cpu_shares {
                write(&d.join("cpu.weight"), &shares_to_weight(s).to_string())?;
            }
            if r.cpu_quota.is_some() || r.cpu_period.is_some() {
                let q = r
                    .cpu_quota
                    .map(|q| q.to_string())
                    .unwrap_or_else(|| "max".into());
                write(
                    &d.join("cpu.max"),
                    &format!("{q} {}", r.cpu_period.unwrap_or(100_000)),
                )?;
            }
            if let Some(n) = r.pids_limit {
                write(&d.join("pids.max"), &n.to_string())?;
            }
        }
        tracing::info!(%id, ?r, "resources updated");
        Ok(())
    }
}
