//! Cgroup paths of containers and pods, where the kernel counts OOM kills,
//! and removal of a pod's cgroup and of the empty configured parent.
//!
//! With the cgroupfs driver a pod's container lives at
//! `<parent>/<sandbox id>/<container id>` (`<parent>/<id>` outside a pod);
//! with systemd in scope `podctl-<id>.scope` of the pod's slice
//! `<parent stem>-pod<sandbox id>.slice` (module `systemd`).

use std::path::{Path, PathBuf};

use crate::config::{CgroupDriver, RuntimeConfig};

const ROOT: &str = "/sys/fs/cgroup";

/// `linux.cgroupsPath` for a container. `pod_parent` is the cgroup parent
/// the pod's creator asked for (a kubelet's `/kubepods/burstable/pod<uid>`
/// or `kubepods-burstable-pod<uid>.slice`): containers then go directly
/// under it, as with containerd and CRI-O.
pub fn container_path(
    cfg: &RuntimeConfig,
    sandbox: Option<&str>,
    pod_parent: Option<&str>,
    id: &str,
) -> String {
    let parent = cfg.cgroup_parent.trim_end_matches('/');
    match (cfg.cgroup_driver, sandbox, pod_parent) {
        (CgroupDriver::Cgroupfs, _, Some(p)) => format!("{}/{id}", p.trim_end_matches('/')),
        (CgroupDriver::Cgroupfs, Some(sb), None) => format!("{parent}/{sb}/{id}"),
        (CgroupDriver::Cgroupfs, None, None) => format!("{parent}/{id}"),
        (CgroupDriver::Systemd, _, Some(p)) => {
            // A slice name, possibly written as a path.
            let slice = p.rsplit('/').next().unwrap_or(p);
            format!("{slice}:podctl:{id}")
        }
        (CgroupDriver::Systemd, Some(sb), None) if systemd_booted() => {
            format!(
                "{}:podctl:{id}",
                crate::systemd::pod_slice(&cfg.cgroup_parent, sb)
            )
        }
        (CgroupDriver::Systemd, _, None) => format!("{}:podctl:{id}", cfg.cgroup_parent),
    }
}

/// systemd is the init system (sd_booted(3)): without it libcontainer
/// falls back to cgroupfs and podctl makes no pod slices.
pub fn systemd_booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// True when the memory controller is on cgroup v1 (legacy or hybrid host).
fn memory_v1() -> bool {
    Path::new(ROOT).join("memory").is_dir()
}

/// The file whose `oom_kill N` line counts the container's OOM kills
/// (`memory.oom_control` on v1, `memory.events` on v2) and, with the
/// systemd driver, the pod slice's `memory.events` as a fallback (systemd
/// may remove an emptied scope before the monitor reads it).
pub fn oom_files(driver: CgroupDriver, path: &str) -> (Option<PathBuf>, Option<PathBuf>) {
    if driver == CgroupDriver::Systemd {
        if memory_v1() || !systemd_booted() {
            return (None, None);
        }
        let mut parts = path.splitn(3, ':');
        let (Some(slice), Some(prefix), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            return (None, None);
        };
        let scope = format!("{prefix}-{name}.scope");
        let file =
            |u: Option<&str>| crate::systemd::unit_dir(slice, u).map(|d| d.join("memory.events"));
        return (file(Some(&scope)), file(None));
    }
    (oom_file(path), None)
}

fn oom_file(path: &str) -> Option<PathBuf> {
    let rel = path.trim_start_matches('/');
    Some(if memory_v1() {
        Path::new(ROOT)
            .join("memory")
            .join(rel)
            .join("memory.oom_control")
    } else {
        Path::new(ROOT).join(rel).join("memory.events")
    })
}

/// Remove a pod's (empty) cgroup directory from every hierarchy. Container
/// cgroups below it are removed by libcontainer when containers are deleted.
pub fn remove_pod(cfg: &RuntimeConfig, sandbox: &str) {
    if cfg.cgroup_driver != CgroupDriver::Cgroupfs {
        return;
    }
    remove_everywhere(&format!(
        "{}/{sandbox}",
        cfg.cgroup_parent.trim_matches('/')
    ));
}

impl crate::Runtime {
    /// Remove the configured cgroup parent from every hierarchy where it
    /// is empty (no pod left): what a stopping daemon and `podctl rm` of
    /// the last pod leave behind. A parent still holding pods stays (rmdir
    /// refuses).
    pub fn remove_cgroup_parent_if_empty(&self) {
        let rel = self.cfg.cgroup_parent.trim_matches('/');
        if self.cfg.cgroup_driver == CgroupDriver::Cgroupfs && !rel.is_empty() {
            remove_everywhere(rel);
        }
    }
}

/// rmdir `<hierarchy>/<rel>` in the unified hierarchy and every v1 one.
fn remove_everywhere(rel: &str) {
    let mut roots = vec![PathBuf::from(ROOT)];
    if let Ok(rd) = std::fs::read_dir(ROOT) {
        roots.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
    }
    for r in roots {
        let d = r.join(rel);
        if d.is_dir() {
            if let Err(e) = std::fs::remove_dir(&d) {
                tracing::debug!(path = %d.display(), error = %e, "pod cgroup not removed");
            }
        }
    }
}

/// Write pod-level limits on `<parent>/<sandbox>` (created here; the
/// containers' cgroups go below it). Memory and CPU quota/shares, on
/// cgroup v1 hierarchies or the unified one. The systemd driver's slices
/// are left to systemd.
pub fn set_pod_limits(
    cfg: &RuntimeConfig,
    sandbox: &str,
    r: &crate::container::Resources,
) -> crate::error::Result<()> {
    use crate::error::IoContext;
    if cfg.cgroup_driver != CgroupDriver::Cgroupfs {
        return Ok(());
    }
    let rel = format!("{}/{sandbox}", cfg.cgroup_parent.trim_matches('/'));
    let write = |dir: PathBuf, file: &str, value: String| -> crate::error::Result<()> {
        std::fs::create_dir_all(&dir).ctx("create", &dir)?;
        let f = dir.join(file);
        std::fs::write(&f, value).ctx("write", &f)
    };
    if memory_v1() {
        if let Some(m) = r.memory_limit {
            write(
                Path::new(ROOT).join("memory").join(&rel),
                "memory.limit_in_bytes",
                m.to_string(),
            )?;
        }
        let cpu = Path::new(ROOT).join("cpu").join(&rel);
        if let Some(s) = r.cpu_shares {
            write(cpu.clone(), "cpu.shares", s.max(2).to_string())?;
        }
        if let Some(q) = r.cpu_quota {
            write(
                cpu.clone(),
                "cpu.cfs_period_us",
                r.cpu_period.unwrap_or(100_000).to_string(),
            )?;
            write(cpu, "cpu.cfs_quota_us", q.to_string())?;
        }
    } else {
        let dir = Path::new(ROOT).join(&rel);
        if let Some(m) = r.memory_limit {
            write(dir.clone(), "memory.max", m.to_string())?;
        }
        if let Some(s) = r.cpu_shares {
            let weight = crate::update::shares_to_weight(s);
            write(dir.clone(), "cpu.weight", weight.to_string())?;
        }
        if let Some(q) = r.cpu_quota {
            write(
                dir,
                "cpu.max",
                format!("{q} {}", r.cpu_period.unwrap_or(100_000)),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths_follow_the_pods_parent() {
        let mut cfg = RuntimeConfig {
            cgroup_parent: "/podctl".into(),
            ..Default::default()
        };
        assert_eq!(container_path(&cfg, Some("sb"), None, "c"), "/podctl/sb/c");
        assert_eq!(container_path(&cfg, None, None, "c"), "/podctl/c");
        assert_eq!(
            container_path(&cfg, Some("sb"), Some("/kubepods/burstable/pod1/"), "c"),
            "/kubepods/burstable/pod1/c"
        );
        cfg.cgroup_driver = CgroupDriver::Systemd;
        cfg.cgroup_parent = "podctl.slice".into();
        let pod = if systemd_booted() {
            "podctl-podsb.slice:podctl:c"
        } else {
            "podctl.slice:podctl:c"
        };
        assert_eq!(container_path(&cfg, Some("sb"), None, "c"), pod);
        assert_eq!(
            container_path(&cfg, None, None, "c"),
            "podctl.slice:podctl:c"
        );
        assert_eq!(
            container_path(&cfg, Some("sb"), Some("kubepods-pod1.slice"), "c"),
            "kubepods-pod1.slice:podctl:c"
        );
        assert_eq!(
            container_path(&cfg, Some("sb"), Some("/test.slice"), "c"),
            "test.slice:podctl:c"
        );
    }
}
