//! On a systemd host a standalone pod's supervisor runs as a transient
//! service (`podctl-pod-<namespace>_<name>-<hash>.service`, made with
//! `systemd-run`, as podman makes its transient units) with
//! `Restart=on-failure`: a supervisor killed or crashed is started again by
//! systemd at once, with no `podctl` command needed (elsewhere the next
//! command revives it, see `revive`). `KillMode=process`: stopping or
//! restarting the unit never touches the pod's monitors, which live in the
//! unit's cgroup. A supervisor that ends the pod exits 0 and the unit goes
//! (`--collect`).
//!
//! `PODCTL_SUPERVISOR_UNITS=0` turns this off (plain detached processes).

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context as _};

/// Whether supervisors should run as units here: systemd is PID 1 and
/// `systemd-run` is installed, and the user did not turn it off.
pub fn wanted() -> bool {
    std::env::var("PODCTL_SUPERVISOR_UNITS").as_deref() != Ok("0")
        && Path::new("/run/systemd/system").is_dir()
        && which("systemd-run")
}

fn which(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

/// The unit of the pod in `dir`: its directory name (`<ns>_<name>`, valid
/// in unit names) and a hash of the full path, so that pods of two state
/// directories never share a unit.
pub fn unit_name(dir: &Path) -> String {
    let name: String = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    // FNV-1a: stable across builds and runs.
    let hash = dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("podctl-pod-{name}-{:08x}.service", hash as u32)
}

/// Whether the pod's unit is running or about to (restarting after a
/// crash: systemd brings the supervisor back itself).
pub fn alive(dir: &Path) -> bool {
    Command::new("systemctl")
        .args(["show", "--property=ActiveState", "--value"])
        .arg(unit_name(dir))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| {
            matches!(
                String::from_utf8_lossy(&o.stdout).trim(),
                "active" | "activating" | "reloading"
            )
        })
}

/// Start `exe args` as the pod's supervisor unit, its output appended to
/// `log`, the caller's `PODCTL_*` and `PATH` variables passed on.
pub fn start(dir: &Path, exe: &Path, args: &[OsString], log: &Path) -> anyhow::Result<()> {
    let unit = unit_name(dir);
    let mut cmd = Command::new("systemd-run");
    cmd.arg("--unit")
        .arg(&unit)
        .args(["--collect", "--quiet"])
        .args(["-p", "Restart=on-failure", "-p", "RestartSec=1s"])
        .args(["-p", "KillMode=process"])
        .arg("-p")
        .arg(format!("StandardOutput=append:{}", log.display()))
        .arg("-p")
        .arg(format!("StandardError=append:{}", log.display()))
        .arg(format!(
            "--description=podctl supervisor of {}",
            dir.display()
        ));
    for (k, v) in std::env::vars_os() {
        let keep = k == "PATH" || k.to_string_lossy().starts_with("PODCTL_");
        if keep {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            cmd.arg("--setenv").arg(kv);
        }
    }
    cmd.arg("--").arg(exe).args(args);
    let out = cmd.output().context("running systemd-run")?;
    if !out.status.success() {
        bail!(
            "systemd-run --unit {unit}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    tracing::debug!(%unit, "supervisor started as a transient unit");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_are_valid_and_differ_by_state_dir() {
        let a = unit_name(Path::new("/run/podctl/pods/default_web"));
        let b = unit_name(Path::new("/tmp/x/run/pods/default_web"));
        assert!(a.starts_with("podctl-pod-default_web-") && a.ends_with(".service"));
        assert_ne!(a, b);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')));
        assert!(unit_name(Path::new("/p/pods/ns_we b")).starts_with("podctl-pod-ns_we_b-"));
    }
}
