//! OCI runtime spec generation. The runtime-spec defaults (oci-spec's,
//! which follow runc's: default mounts, masked and read-only paths) are the
//! base; the container's process, identity, namespaces and resources go on
//! top.

use std::path::Path;

use oci_spec::runtime::Spec;
use serde_json::{json, Value};

use crate::container::{ContainerConfig, Propagation};
use crate::error::{Result, RuntimeError};
use crate::security;
use crate::user::Identity;

/// PATH for containers whose image sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Capabilities a container gets by default (containerd's and CRI-O's set).
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Build the spec for `cfg` with its rootfs at `rootfs`.
pub fn build(
    id: &str,
    cfg: &ContainerConfig,
    rootfs: &Path,
    who: &Identity,
    cgroups_path: &str,
) -> Result<Spec> {
    let bad = |reason: String| RuntimeError::Spec {
        id: id.into(),
        reason,
    };
    let base = serde_json::to_value(Spec::default()).map_err(|e| bad(e.to_string()))?;
    let mut v = base;
    let args: Vec<String> = cfg.command.iter().chain(cfg.args.iter()).cloned().collect();
    if args.is_empty() {
        return Err(bad(
            "no command: the image has no entrypoint or cmd and none was given".into(),
        ));
    }
    // Like other runtimes, supply a PATH when the image has none.
    let mut env = cfg.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(DEFAULT_PATH.to_string());
    }
    let sec = &cfg.security;
    let all = security::bounding_set();
    let caps: Vec<String> = if cfg.privileged {
        all.iter().map(|c| c.to_string()).collect()
    } else {
        security::capabilities(DEFAULT_CAPS, &all, &sec.cap_add, &sec.cap_drop)
    };
    let mut additional_gids = if sec.supplemental_groups_strict {
        vec![who.gid]
    } else {
        who.additional_gids.clone()
    };
    for g in &sec.supplemental_groups {
        if !additional_gids.contains(g) {
            additional_gids.push(*g);
        }
    }
    v["process"] = json!({
        "terminal": false,
        "user": {"uid": who.uid, "gid": who.gid, "additionalGids": additional_gids},
        "args": args,
        "env": env,
        "cwd": if cfg.working_dir.is_empty() { "/" } else { cfg.working_dir.as_str() },
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        // Only requested rlimits: raising one needs CAP_SYS_RESOURCE, which
        // podctl may lack; others are inherited from the shim.
        "rlimits": cfg.rlimits.iter().map(|r| json!({"type": r.kind, "soft": r.soft, "hard": r.hard})).collect::<Vec<_>>(),
    });
    // Only `true` is written: libcontainer 0.7 loads seccomp after dropping
    // capabilities whenever the field is present, which fails with
    // `false` (no CAP_SYS_ADMIN left); absent, it loads it before.
    if sec.no_new_privs.unwrap_or(!cfg.privileged) {
        v["process"]["noNewPrivileges"] = json!(true);
    }
    if let Some(score) = sec.oom_score_adj {
        v["process"]["oomScoreAdj"] = json!(security::oom_score(id, score));
    }
    if let Some(p) = crate::apparmor::profile_for(id, &sec.apparmor, cfg.privileged)? {
        v["process"]["apparmorProfile"] = json!(p);
    }
    v["root"] = json!({"path": rootfs, "readonly": cfg.readonly_rootfs});
    // Only a container with a UTS namespace of its own (or its pod's) may
    // be given a hostname: in the host's it would rename the node.
    if cfg.namespaces.get("uts").is_none_or(|p| p != "host") && !cfg.hostname.is_empty() {
        v["hostname"] = json!(cfg.hostname);
    } else if let Some(o) = v.as_object_mut() {
        o.remove("hostname");
    }
    let mut mounts = v["mounts"].as_array().cloned().unwrap_or_default();
    let mut rootfs_propagation = None;
    for m in &cfg.mounts {
        let prop = match m.propagation {
            Propagation::Private => "rprivate",
            Propagation::HostToContainer => {
                rootfs_propagation.get_or_insert("slave");
                "rslave"
            }
            Propagation::Bidirectional => {
                rootfs_propagation = Some("shared");
                "rshared"
            }
        };
        let mut opts = vec!["rbind", prop];
        opts.push(if m.readonly { "ro" } else { "rw" });
        if m.recursive_readonly {
            opts.push("rro");
        }
        mounts.push(json!({"destination": m.container_path, "type": "bind", "source": m.host_path, "options": opts}));
    }
    v["mounts"] = Value::Array(mounts);
    // A user namespace is only ever joined (the pod's, made by pause):
    // none named means the host's. libcontainer joins it first.
    let ns: Vec<Value> = ["user", "pid", "ipc", "uts", "mount", "network"]
        .iter()
        .filter_map(|kind| match cfg.namespaces.get(*kind) {
            Some(path) if path == "host" => None,
            Some(path) => Some(json!({"type": kind, "path": path})),
            None if *kind == "user" => None,
            None => Some(json!({"type": kind})),
        })
        .collect();
    let linux = v["linux"]
        .as_object_mut()
        .ok_or_else(|| bad("default spec has no linux section".into()))?;
    linux.insert("namespaces".into(), Value::Array(ns));
    linux.insert("cgroupsPath".into(), json!(cgroups_path));
    // libcontainer takes the non-recursive names and applies them with
    // MS_REC itself ("rshared" is refused).
    if let Some(p) = rootfs_propagation {
        linux.insert("rootfsPropagation".into(), json!(p));
    }
    let r = &cfg.resources;
    let mut res = json!({"devices": [{"allow": cfg.privileged, "access": "rwm"}]});
    if let Some(m) = r.memory_limit {
        res["memory"] = json!({"limit": m});
    }
    let mut cpu = serde_json::Map::new();
    if let Some(s) = r.cpu_shares {
        cpu.insert("shares".into(), json!(s));
    }
    if let Some(q) = r.cpu_quota {
        cpu.insert("quota".into(), json!(q));
        cpu.insert("period".into(), json!(r.cpu_period.unwrap_or(100_000)));
    }
    if !sec.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), json!(sec.cpuset_cpus));
    }
    if !sec.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), json!(sec.cpuset_mems));
    }
    if !cpu.is_empty() {
        res["cpu"] = Value::Object(cpu);
    }
    if let Some(p) = r.pids_limit {
        res["pids"] = json!({"limit": p});
    }
    linux.insert("resources".into(), res);
    if cfg.privileged {
        linux.insert("maskedPaths".into(), json!([]));
        linux.insert("readonlyPaths".into(), json!([]));
    } else {
        if !sec.masked_paths.is_empty() {
            linux.insert("maskedPaths".into(), json!(sec.masked_paths));
        }
        if !sec.readonly_paths.is_empty() {
            linux.insert("readonlyPaths".into(), json!(sec.readonly_paths));
        }
        if let Some(profile) = security::seccomp_section(id, &sec.seccomp, &caps)? {
            linux.insert("seccomp".into(), profile);
        }
    }
    if !cfg.sysctls.is_empty() {
        linux.insert("sysctl".into(), json!(cfg.sysctls));
    }
    serde_json::from_value(v).map_err(|e| bad(e.to_string()))
}
