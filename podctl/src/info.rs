//! `podctl info` (alias `check`): a preflight of everything podctl needs
//! on this machine, one line per check — `ok`, `warn` or `FAIL` — with the
//! fix under anything that is not ok. Exits non-zero when a check failed.
//!
//! It checks the daemon's configuration (`--config`, else
//! `/etc/podctl/podctl.toml` when it exists) or, without one, what `podctl
//! run` uses (the global flags).

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Args;
use podctl_cri::{CniSection, CriConfig};
use podctl_runtime::CgroupDriver;

use crate::pods::{PodContext, DEFAULT_CONFLIST};

const DEFAULT_CONFIG: &str = "/etc/podctl/podctl.toml";
const CGROUP: &str = "/sys/fs/cgroup";

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Daemon configuration to check (default: /etc/podctl/podctl.toml
    /// when it exists, else what `podctl run` uses).
    #[arg(long, short, env = "PODCTL_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ok,
    Warn,
    Fail,
}

struct Check {
    name: &'static str,
    verdict: Verdict,
    detail: String,
    fix: Option<String>,
}

fn ok(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name,
        verdict: Verdict::Ok,
        detail: detail.into(),
        fix: None,
    }
}

fn bad(name: &'static str, verdict: Verdict, detail: impl Into<String>, fix: &str) -> Check {
    Check {
        name,
        verdict,
        detail: detail.into(),
        fix: Some(fix.to_string()),
    }
}

/// What is checked: the daemon's configuration, or the CLI's.
struct Subject {
    what: String,
    cfg: CriConfig,
    /// `podctl run` writes its default network when the directory has none.
    cli: bool,
    registry_file: Option<PathBuf>,
}

fn subject(ctx: &PodContext, a: &InfoArgs) -> Result<Subject, Check> {
    let path = a
        .config
        .clone()
        .or_else(|| Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()));
    if let Some(p) = path {
        return match CriConfig::load(&p) {
            Ok(cfg) => Ok(Subject {
                what: p.display().to_string(),
                cfg,
                cli: false,
                registry_file: None,
            }),
            Err(e) => Err(bad(
                "configuration",
                Verdict::Fail,
                e.to_string(),
                "correct the file (every key is optional; see the commented /etc/podctl/podctl.toml)",
            )),
        };
    }
    let registry_file = ctx
        .images
        .registry_config
        .clone()
        .or_else(|| Some(PathBuf::from("/etc/podctl/registries.toml")).filter(|p| p.exists()));
    Ok(Subject {
        what: "podctl run's flags (no daemon configuration)".into(),
        cfg: CriConfig {
            root: ctx.images.root.clone(),
            state: ctx.state_dir.clone(),
            cni: CniSection {
                conf_dir: ctx.cni_conf_dir.clone(),
                ..Default::default()
            },
            ..Default::default()
        },
        cli: true,
        registry_file,
    })
}

pub fn info(ctx: &PodContext, a: InfoArgs) -> anyhow::Result<()> {
    let mut checks = Vec::new();
    let subject = match subject(ctx, &a) {
        Ok(s) => {
            println!("podctl {}; checking {}", env!("CARGO_PKG_VERSION"), s.what);
            Some(s)
        }
        Err(c) => {
            checks.push(c);
            None
        }
    };
    checks.push(root());
    if let Some(s) = &subject {
        checks.extend(shim(s.cfg.shim.as_deref()));
        checks.push(cgroups());
        checks.push(cgroup_driver(s));
    }
    checks.push(overlayfs());
    checks.push(namespaces());
    checks.push(seccomp());
    if let Some(s) = &subject {
        checks.push(storage(&s.cfg.root));
        checks.extend(cni(s));
        checks.push(registry(ctx, s));
    }
    let mut failed = 0;
    for c in &checks {
        let tag = match c.verdict {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => {
                failed += 1;
                "FAIL"
            }
        };
        println!("{tag:<5} {:<16} {}", c.name, c.detail);
        if let Some(f) = &c.fix {
            println!("{:<22} fix: {f}", "");
        }
    }
    if failed > 0 {
        bail!("{failed} of {} checks failed", checks.len());
    }
    Ok(())
}

fn root() -> Check {
    // SAFETY: geteuid() has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        ok("root", "running as root")
    } else {
        bad(
            "root",
            Verdict::Fail,
            format!("running as uid {euid}"),
            "run podctl as root (it makes mounts, namespaces and cgroups)",
        )
    }
}

fn shim(configured: Option<&Path>) -> Vec<Check> {
    let found = match podctl_runtime::locate_shim(configured) {
        Ok(p) => p,
        Err(e) => {
            return vec![bad(
                "shim",
                Verdict::Fail,
                e.to_string(),
                "cargo build --release -p podctl -p podctl-shim (it lands next to podctl), or install the podctl package",
            )]
        }
    };
    let watch = found.with_file_name(podctl_runtime::SHIM_WATCH);
    let w = if watch.is_file() {
        ok("shim small binary", watch.display().to_string())
    } else {
        bad(
            "shim small binary",
            Verdict::Warn,
            format!(
                "{} missing: each pod's monitor and pause process keep libcontainer's 6-8 MiB",
                watch.display()
            ),
            "install podctl-shim-watch next to podctl-shim (it is built with it)",
        )
    };
    vec![ok("shim", found.display().to_string()), w]
}

/// The controllers of a cgroup v2 hierarchy.
fn v2_controllers(dir: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(dir.join("cgroup.controllers")).ok()?;
    Some(text.split_whitespace().map(str::to_string).collect())
}

fn cgroups() -> Check {
    let want = ["cpu", "memory", "pids"];
    let root = Path::new(CGROUP);
    let (version, missing): (&str, Vec<&str>) = match v2_controllers(root) {
        Some(have) => (
            "v2 (unified)",
            want.iter()
                .copied()
                .filter(|c| !have.iter().any(|h| h == c))
                .collect(),
        ),
        None => (
            if root.join("unified").is_dir() {
                "v1 (hybrid: v1 controllers, v2 at /sys/fs/cgroup/unified)"
            } else {
                "v1"
            },
            want.iter()
                .copied()
                .filter(|c| !root.join(c).is_dir())
                .collect(),
        ),
    };
    if missing.is_empty() {
        ok("cgroups", format!("{version}; cpu, memory, pids available"))
    } else {
        bad(
            "cgroups",
            Verdict::Fail,
            format!("{version}; missing controllers: {}", missing.join(", ")),
            "boot with those controllers enabled (cgroup_enable=memory on some kernels)",
        )
    }
}

fn cgroup_driver(s: &Subject) -> Check {
    let systemd = Path::new("/run/systemd/system").is_dir();
    let bus = Path::new("/run/dbus/system_bus_socket").exists();
    match s.cfg.cgroup_driver {
        CgroupDriver::Systemd if systemd && bus => {
            ok("cgroup driver", "systemd (systemd is PID 1, D-Bus answers)")
        }
        CgroupDriver::Systemd => bad(
            "cgroup driver",
            Verdict::Fail,
            format!(
                "systemd configured, but {}",
                if systemd {
                    "the D-Bus system socket is missing"
                } else {
                    "systemd is not PID 1"
                }
            ),
            "set cgroup_driver = \"cgroupfs\" in the configuration",
        ),
        CgroupDriver::Cgroupfs if systemd && !s.cli => bad(
            "cgroup driver",
            Verdict::Warn,
            "cgroupfs, but systemd manages this machine's cgroups",
            "set cgroup_driver = \"systemd\" (and the kubelet's cgroupDriver to match)",
        ),
        CgroupDriver::Cgroupfs => ok(
            "cgroup driver",
            format!("cgroupfs under {}", s.cfg.cgroup_parent),
        ),
    }
}

fn overlayfs() -> Check {
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if fs
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
    {
        ok("overlayfs", "supported by the kernel")
    } else {
        bad(
            "overlayfs",
            Verdict::Fail,
            "not in /proc/filesystems",
            "modprobe overlay (and add `overlay` to /etc/modules-load.d/)",
        )
    }
}

fn namespaces() -> Check {
    let kinds = ["mnt", "uts", "ipc", "pid", "net", "cgroup"];
    let missing: Vec<&str> = kinds
        .iter()
        .copied()
        .filter(|k| !Path::new("/proc/self/ns").join(k).exists())
        .collect();
    if missing.is_empty() {
        ok("namespaces", kinds.join(", "))
    } else {
        bad(
            "namespaces",
            Verdict::Fail,
            format!("missing: {}", missing.join(", ")),
            "a kernel built with those namespaces (CONFIG_*_NS)",
        )
    }
}

fn seccomp() -> Check {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if status.lines().any(|l| l.starts_with("Seccomp:")) {
        ok("seccomp", "available (RuntimeDefault profiles work)")
    } else {
        bad(
            "seccomp",
            Verdict::Warn,
            "the kernel has no seccomp",
            "a kernel with CONFIG_SECCOMP_FILTER, or pods only with seccompProfile Unconfined",
        )
    }
}

/// The file system `path` (or its nearest existing parent) lives on.
fn fs_type(path: &Path) -> Option<(String, String)> {
    let mut p = path.to_path_buf();
    while !p.exists() {
        p = p.parent()?.to_path_buf();
    }
    let p = p.canonicalize().ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            Some((f.get(4)?.to_string(), f.get(sep + 1)?.to_string()))
        })
        .filter(|(m, _)| p.starts_with(m))
        .max_by_key(|(m, _)| m.len())
}

fn storage(root: &Path) -> Check {
    match fs_type(root) {
        Some((mount, fs)) if fs == "overlay" => bad(
            "storage",
            Verdict::Fail,
            format!(
                "{} is on overlayfs ({mount}): overlay mounts cannot use it as upper layer",
                root.display()
            ),
            "put --root (`root` in the configuration) on ext4 or xfs",
        ),
        Some((mount, fs)) => ok("storage", format!("{} on {fs} ({mount})", root.display())),
        None => bad(
            "storage",
            Verdict::Warn,
            format!("cannot tell which file system holds {}", root.display()),
            "check that /proc is mounted",
        ),
    }
}

/// The network list in use and the plugin binaries it names.
fn cni(s: &Subject) -> Vec<Check> {
    let dirs = s.cfg.cni.bin_dirs.clone();
    let conf = podctl_runtime::CniConfig {
        conf_dir: s.cfg.cni.conf_dir.clone(),
        bin_dirs: dirs.clone(),
    };
    let (list, config) = match conf.load() {
        Ok(v) => {
            let name = v["name"].as_str().unwrap_or("?").to_string();
            (
                v,
                ok(
                    "cni config",
                    format!("network {name:?} from {}", conf.conf_dir.display()),
                ),
            )
        }
        Err(_) if s.cli => (
            serde_json::from_str(DEFAULT_CONFLIST).unwrap_or_default(),
            ok(
                "cni config",
                format!(
                    "none yet: podctl run writes its default bridge network to {}",
                    conf.conf_dir.display()
                ),
            ),
        ),
        Err(e) => {
            return vec![bad(
            "cni config",
            Verdict::Fail,
            e.to_string(),
            "put a *.conflist there (the podctl package ships /etc/podctl/cni/10-podctl.conflist)",
        )]
        }
    };
    let mut kinds: Vec<String> = Vec::new();
    for p in list["plugins"].as_array().into_iter().flatten() {
        for t in [&p["type"], &p["ipam"]["type"]] {
            if let Some(t) = t.as_str().filter(|t| !kinds.iter().any(|k| k == t)) {
                kinds.push(t.to_string());
            }
        }
    }
    let missing: Vec<&String> = kinds
        .iter()
        .filter(|k| !dirs.iter().any(|d| d.join(k).is_file()))
        .collect();
    let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let plugins = if missing.is_empty() {
        ok(
            "cni plugins",
            format!("{} in {}", kinds.join(", "), shown.join(", ")),
        )
    } else {
        bad(
            "cni plugins",
            Verdict::Fail,
            format!(
                "{} not found in {}",
                missing
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                shown.join(", ")
            ),
            "apt-get install containernetworking-plugins (or set [cni] bin_dirs)",
        )
    };
    vec![config, plugins]
}

fn registry(ctx: &PodContext, s: &Subject) -> Check {
    let (what, cfg) = if s.cli {
        match ctx.images.registry_config() {
            Ok(c) => (
                s.registry_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "no registries.toml".into()),
                c,
            ),
            Err(e) => {
                return bad(
                    "registries",
                    Verdict::Fail,
                    format!("{e:#}"),
                    "correct /etc/podctl/registries.toml (or --registry-config)",
                )
            }
        }
    } else {
        (
            "the configuration's [registry]".into(),
            s.cfg.registry.clone(),
        )
    };
    let hosts: Vec<&String> = cfg.hosts.keys().collect();
    ok(
        "registries",
        format!(
            "{what}: {} host(s) configured{}, {} credential(s); 127.0.0.1 and localhost use plain HTTP",
            hosts.len(),
            if hosts.is_empty() {
                String::new()
            } else {
                format!(" ({})", hosts.iter().map(|h| h.as_str()).collect::<Vec<_>>().join(", "))
            },
            cfg.auths.len()
        ),
    )
}
