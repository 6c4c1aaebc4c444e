//! The systemd cgroup driver's pod units, created over D-Bus as the
//! kubelet and containerd lay them out:
//!
//! ```text
//! podctl.slice                          (the configured parent)
//! └─ podctl-pod<sandbox>.slice          pod-level limits (MemoryMax, CPUQuota, CPUWeight)
//!    ├─ podctl-<sandbox>.scope          the pause process
//!    └─ podctl-<container>.scope        one per container (made by libcontainer)
//! ```
//!
//! systemd creates the pod slice when the pause scope asks for it; podctl
//! sets the pod's limits on it and stops it when the pod is removed.
//! Container scopes come and go with their processes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use libcgroups::common::{CgroupManager, ControllerOpt};
use libcgroups::systemd::manager::Manager;
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;

use crate::container::Resources;
use crate::error::{Result, RuntimeError};

const ROOT: &str = "/sys/fs/cgroup";

/// `podctl.slice` + sandbox → `podctl-pod<sandbox>.slice` (a child of the
/// parent in systemd's dash notation).
pub fn pod_slice(parent: &str, sandbox: &str) -> String {
    match parent.trim_end_matches(".slice") {
        "" | "-" => format!("pod{sandbox}.slice"),
        stem => format!("{stem}-pod{sandbox}.slice"),
    }
}

/// The cgroup directory of a unit in a slice: `a-b.slice` expands to
/// `/sys/fs/cgroup/a.slice/a-b.slice`. `None` for a malformed slice name.
pub fn unit_dir(slice: &str, unit: Option<&str>) -> Option<PathBuf> {
    let stem = slice.strip_suffix(".slice")?;
    let mut dir = PathBuf::from(ROOT);
    if stem != "-" {
        let mut prefix = String::new();
        for part in stem.split('-') {
            if part.is_empty() {
                return None;
            }
            if !prefix.is_empty() {
                prefix.push('-');
            }
            prefix.push_str(part);
            dir.push(format!("{prefix}.slice"));
        }
    }
    if let Some(u) = unit {
        dir.push(u);
    }
    Some(dir)
}

fn err(sandbox: &str, what: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Sandbox {
        id: sandbox.into(),
        reason: format!("systemd: {what}: {e}"),
    }
}

/// A manager for `slice:podctl:name` (a scope, or a slice when `name`
/// ends in `.slice`), talking to systemd over D-Bus.
fn manager(sandbox: &str, path: &str) -> Result<Manager> {
    Manager::new(
        PathBuf::from(ROOT),
        PathBuf::from(path),
        format!("pod {sandbox}"),
        true,
        Duration::from_secs(10),
    )
    .map_err(|e| err(sandbox, path, e))
}

/// The pod-level limits as OCI resources (what libcgroups turns into
/// MemoryMax, CPUQuotaPerSecUSec, CPUWeight and TasksMax).
fn oci_resources(sandbox: &str, r: &Resources) -> Result<LinuxResources> {
    let mut v = serde_json::json!({});
    if let Some(m) = r.memory_limit.filter(|m| *m > 0) {
        v["memory"] = serde_json::json!({ "limit": m });
    }
    let mut cpu = serde_json::json!({});
    if let Some(s) = r.cpu_shares.filter(|s| *s > 0) {
        cpu["shares"] = s.into();
    }
    if let Some(q) = r.cpu_quota.filter(|q| *q > 0) {
        cpu["quota"] = q.into();
        cpu["period"] = r.cpu_period.unwrap_or(100_000).into();
    }
    if cpu.as_object().is_some_and(|o| !o.is_empty()) {
        v["cpu"] = cpu;
    }
    if let Some(p) = r.pids_limit.filter(|p| *p > 0) {
        v["pids"] = serde_json::json!({ "limit": p });
    }
    serde_json::from_value(v).map_err(|e| err(sandbox, "pod resources", e))
}

/// Put pause in its scope inside the pod's slice (systemd makes the slice
/// on the way) and set the pod-level limits on the slice.
pub fn start_pod(
    parent: &str,
    sandbox: &str,
    pause_pid: u32,
    limits: Option<&Resources>,
) -> Result<()> {
    let slice = pod_slice(parent, sandbox);
    let pause = manager(sandbox, &format!("{slice}:podctl:{sandbox}"))?;
    pause
        .add_task(Pid::from_raw(pause_pid as i32))
        .map_err(|e| err(sandbox, "pause scope", e))?;
    if let Some(r) = limits {
        let resources = oci_resources(sandbox, r)?;
        let pod = manager(sandbox, &format!("{parent}:podctl:{slice}"))?;
        pod.apply(&ControllerOpt {
            resources: &resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(|e| err(sandbox, &format!("limits on {slice}"), e))?;
    }
    Ok(())
}

/// Stop the pod's slice (and whatever is left in it). Nothing to do when
/// systemd already let it go.
pub fn stop_pod(parent: &str, sandbox: &str) -> Result<()> {
    let slice = pod_slice(parent, sandbox);
    if unit_dir(&slice, None).is_some_and(|d| !Path::new(&d).exists()) {
        return Ok(());
    }
    manager(sandbox, &format!("{parent}:podctl:{slice}"))?
        .remove()
        .map_err(|e| err(sandbox, &format!("stop {slice}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_nest_by_dashes() {
        assert_eq!(pod_slice("podctl.slice", "ab12"), "podctl-podab12.slice");
        assert_eq!(pod_slice("-.slice", "ab12"), "podab12.slice");
        assert_eq!(
            unit_dir("podctl-podab12.slice", Some("podctl-c1.scope")),
            Some(PathBuf::from(
                "/sys/fs/cgroup/podctl.slice/podctl-podab12.slice/podctl-c1.scope"
            ))
        );
        assert_eq!(unit_dir("-.slice", None), Some(PathBuf::from(ROOT)));
        assert_eq!(unit_dir("a--b.slice", None), None);
        assert_eq!(unit_dir("podctl", None), None);
    }
}
