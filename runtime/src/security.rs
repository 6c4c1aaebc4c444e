//! Per-container security settings beyond the defaults: capabilities
//! added and dropped, `no_new_privs`, masked and read-only paths,
//! supplementary groups, the seccomp profile, the OOM score and CPU
//! pinning.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, RuntimeError};

/// Which seccomp filter a container runs under.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Seccomp {
    /// podctl's default profile (containerd's allow-list, see module
    /// `seccomp`), widened by the container's capabilities.
    #[default]
    RuntimeDefault,
    /// No filter.
    Unconfined,
    /// An OCI-format profile (`defaultAction`, `syscalls`) read from a file.
    Localhost(PathBuf),
}

/// Security settings of one container.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Security {
    /// Capability names, with or without `CAP_`; `ALL` adds every one.
    pub cap_add: Vec<String>,
    /// Capability names; `ALL` drops every one not also added.
    pub cap_drop: Vec<String>,
    /// `None`: set unless privileged.
    pub no_new_privs: Option<bool>,
    /// Replace the default masked paths when non-empty.
    pub masked_paths: Vec<String>,
    /// Replace the default read-only paths when non-empty.
    pub readonly_paths: Vec<String>,
    pub supplemental_groups: Vec<u32>,
    /// Kubernetes `supplementalGroupsPolicy: Strict`: the groups the image's
    /// /etc/group gives the user are not added.
    pub supplemental_groups_strict: bool,
    pub seccomp: Seccomp,
    pub oom_score_adj: Option<i32>,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    #[serde(default)]
    pub apparmor: crate::apparmor::AppArmor,
}

/// Capability names by number (linux/capability.h).
const CAP_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capabilities a container can get from us: those in our own
/// bounding set (as containerd and CRI-O do for privileged containers; a
/// capability we lack, e.g. CAP_SYS_RESOURCE here, cannot be granted).
pub fn bounding_set() -> Vec<&'static str> {
    let mask = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    CAP_NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, n)| *n)
        .collect()
}

/// `CAP_X` for `x`, `X` or `CAP_X`.
pub fn cap_name(n: &str) -> String {
    let up = n.to_ascii_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

/// The capability set from a base set, additions and drops (`ALL`
/// allowed in both), limited to `all` (what can be granted).
pub fn capabilities(base: &[&str], all: &[&str], add: &[String], drop: &[String]) -> Vec<String> {
    let has_all = |v: &[String]| v.iter().any(|c| c.eq_ignore_ascii_case("ALL"));
    let mut caps: Vec<String> = if has_all(add) {
        all.iter().map(|c| c.to_string()).collect()
    } else {
        base.iter().map(|c| c.to_string()).collect()
    };
    if has_all(drop) {
        caps.clear();
    } else {
        let dropped: Vec<String> = drop.iter().map(|c| cap_name(c)).collect();
        caps.retain(|c| !dropped.contains(c));
    }
    if !has_all(add) {
        for a in add {
            let n = cap_name(a);
            if !caps.contains(&n) {
                caps.push(n);
            }
        }
    }
    caps.retain(|c| {
        let ok = all.contains(&c.as_str());
        if !ok {
            tracing::warn!(cap = %c, "capability not in the runtime's bounding set; not granted");
        }
        ok
    });
    caps
}

/// The seccomp section for the spec of a container holding `caps`, `None`
/// for no filter. A `Localhost` profile that is missing or not a valid OCI
/// seccomp section is an error naming the file.
pub fn seccomp_section(id: &str, s: &Seccomp, caps: &[String]) -> Result<Option<Value>> {
    let mut v = match s {
        Seccomp::RuntimeDefault => crate::seccomp::default_profile(caps),
        Seccomp::Unconfined => return Ok(None),
        Seccomp::Localhost(p) => {
            let bad = |reason: String| RuntimeError::Spec {
                id: id.into(),
                reason: format!("seccomp profile {}: {reason}", p.display()),
            };
            let text = std::fs::read_to_string(p).map_err(|e| bad(e.to_string()))?;
            let v: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
            if v.get("defaultAction").and_then(Value::as_str).is_none() {
                return Err(bad("no defaultAction".into()));
            }
            serde_json::from_value::<oci_spec::runtime::LinuxSeccomp>(v.clone())
                .map_err(|e| bad(format!("not an OCI seccomp profile: {e}")))?;
            v
        }
    };
    crate::seccomp::for_libcontainer(&mut v);
    Ok(Some(v))
}

/// The OOM score to ask for: without CAP_SYS_RESOURCE a score below our
/// own cannot be set, so it is raised to ours (and logged).
pub fn oom_score(id: &str, want: i32) -> i32 {
    let own = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(0);
    if want < own && !has_sys_resource() {
        tracing::warn!(%id, want, own, "oom_score_adj below the runtime's own needs CAP_SYS_RESOURCE; using the runtime's");
        own
    } else {
        want
    }
}

fn has_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_and_drops() {
        let base = ["CAP_CHOWN", "CAP_KILL"];
        let all = ["CAP_CHOWN", "CAP_KILL", "CAP_SYS_ADMIN"];
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            capabilities(&base, &all, &s(&["sys_admin"]), &s(&["KILL"])),
            s(&["CAP_CHOWN", "CAP_SYS_ADMIN"])
        );
        assert_eq!(
            capabilities(&base, &all, &s(&["CHOWN"]), &s(&["ALL"])),
            s(&["CAP_CHOWN"])
        );
        assert_eq!(capabilities(&base, &all, &s(&["ALL"]), &[]), s(&all));
    }
}
