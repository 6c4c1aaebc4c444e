//! AppArmor profiles for containers, as the CRI asks for them: the
//! runtime's default profile (`podctl-default`, loaded with
//! `apparmor_parser` the first time a container needs it), a profile the
//! node already has loaded (`localhost/<name>`), or none. On a host
//! without AppArmor (not enabled, or no `apparmor_parser`) the default
//! means none, and a named profile is refused, as containerd does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

/// A container's AppArmor confinement.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AppArmor {
    /// Nothing asked: the runtime's default profile, unless privileged.
    #[default]
    Unspecified,
    /// The runtime's default profile (`runtime/default`).
    RuntimeDefault,
    /// No profile (`unconfined`).
    Unconfined,
    /// A profile loaded on the node, by name (`localhost/<name>`).
    Localhost(String),
}

/// The name podctl's default profile is loaded under.
pub const DEFAULT_PROFILE: &str = "podctl-default";

const ENABLED: &str = "/sys/module/apparmor/parameters/enabled";
const PROFILES: &str = "/sys/kernel/security/apparmor/profiles";

/// Whether AppArmor is enabled and profiles can be loaded here.
pub fn host_supports() -> bool {
    enabled() && parser().is_some()
}

/// Whether the kernel has AppArmor enabled.
fn enabled() -> bool {
    std::fs::read_to_string(ENABLED).is_ok_and(|s| s.starts_with('Y'))
}

fn parser() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/sbin".into(), "/usr/sbin".into()])
        .map(|d| d.join("apparmor_parser"))
        .find(|p| p.is_file())
}

/// The profile `id` runs under (`None`: unconfined); loads the default
/// profile when it is asked for and not loaded yet.
pub(crate) fn profile_for(id: &str, asked: &AppArmor, privileged: bool) -> Result<Option<String>> {
    let name = match asked {
        AppArmor::Unconfined => return Ok(None),
        AppArmor::Unspecified if privileged => return Ok(None),
        AppArmor::Unspecified | AppArmor::RuntimeDefault => {
            if !host_supports() {
                return Ok(None);
            }
            if !loaded(DEFAULT_PROFILE) {
                load_default(id)?;
            }
            DEFAULT_PROFILE.to_string()
        }
        AppArmor::Localhost(name) => {
            let refuse = |why: &str| RuntimeError::Container {
                id: id.into(),
                reason: format!("AppArmor profile localhost/{name}: {why}"),
            };
            if name.is_empty() || name.contains(['\n', '\0']) {
                return Err(refuse("not a profile name"));
            }
            if !enabled() {
                return Err(refuse("AppArmor is not enabled on this node"));
            }
            if !loaded(name) {
                return Err(refuse("no such profile is loaded on this node"));
            }
            name.clone()
        }
    };
    Ok(Some(name))
}

/// Whether a profile of that name is loaded (`<name> (<mode>)` lines).
fn loaded(name: &str) -> bool {
    std::fs::read_to_string(PROFILES).is_ok_and(|all| {
        all.lines()
            .any(|l| l.rsplit_once(' ').is_some_and(|(n, _)| n == name))
    })
}

fn load_default(id: &str) -> Result<()> {
    let fail = |reason: String| RuntimeError::Container {
        id: id.into(),
        reason: format!("loading the AppArmor profile {DEFAULT_PROFILE}: {reason}"),
    };
    let parser = parser().ok_or_else(|| fail("no apparmor_parser".into()))?;
    // -r replaces a profile loaded meanwhile by another process; -K keeps
    // the parser's cache out of it (nothing read from or written to disk).
    let mut child = Command::new(&parser)
        .args(["-Kr"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("{}: {e}", parser.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(default_profile().as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    tracing::info!(profile = DEFAULT_PROFILE, "AppArmor profile loaded");
    Ok(())
}

/// podctl's default profile: what a container may do is what its
/// capabilities and seccomp let it, but for the kernel interfaces through
/// which a process reaches past its container — the writable parts of
/// /proc and /sys, mounts, ptrace of processes outside its profile.
fn default_profile() -> String {
    let abi = Path::new("/etc/apparmor.d/abi/3.0").exists();
    let mut p = String::new();
    if abi {
        p.push_str("abi <abi/3.0>,\n");
    }
    p.push_str(&format!(
        r#"#include <tunables/global>

profile {DEFAULT_PROFILE} flags=(attach_disconnected,mediate_deleted) {{
  #include <abstractions/base>

  network,
  capability,
  file,
  umount,
  signal (receive) peer=unconfined,
  signal (send,receive) peer={DEFAULT_PROFILE},
  ptrace (trace,read,tracedby,readby) peer={DEFAULT_PROFILE},
  unix,
  dbus,

  # Kernel interfaces that reach past the container: no mounts, no
  # writes to the host-wide kernel settings and devices in /proc and
  # /sys, nothing of the kernel's memory, log, keys or security state.
  deny mount,
  deny remount,
  deny pivot_root,
  deny @{{PROC}}/{{kcore,kmsg,kallsyms,kpagecount,kpageflags,sysrq-trigger,timer_list}} rwklx,
  deny @{{PROC}}/sys/{{fs,vm,dev,debug,abi,crypto,user}}/** wklx,
  deny @{{PROC}}/sys/kernel/{{core_pattern,modprobe,hotplug,poweroff_cmd,sysrq,kexec_load_disabled,kptr_restrict,dmesg_restrict,randomize_va_space,panic*,perf_*,unprivileged_*,yama/**}} wklx,
  deny @{{PROC}}/{{acpi,bus,driver,fs,irq,scsi,tty}}/** wklx,
  deny /sys/{{block,bus,class,dev,devices,hypervisor,kernel,module,power}}/** wklx,
  deny /sys/firmware/** rwklx,
  deny /sys/kernel/{{security,debug}}/** rwklx,
}}
"#
    ));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unconfined_and_privileged_need_no_apparmor() {
        assert_eq!(
            profile_for("c", &AppArmor::Unconfined, false).ok(),
            Some(None)
        );
        assert_eq!(
            profile_for("c", &AppArmor::Unspecified, true).ok(),
            Some(None)
        );
    }

    #[test]
    fn a_named_profile_that_is_not_loaded_is_refused_with_its_name() {
        let e = profile_for("c", &AppArmor::Localhost("no-such-profile-x".into()), false)
            .expect_err("an unloaded profile was accepted")
            .to_string();
        assert!(e.contains("localhost/no-such-profile-x"), "{e}");
        let e = profile_for("c", &AppArmor::Localhost("a\nb".into()), false)
            .expect_err("a name with a newline was accepted")
            .to_string();
        assert!(e.contains("not a profile name"), "{e}");
    }

    #[test]
    fn the_default_profile_names_itself_and_denies_mounts() {
        let p = default_profile();
        assert!(p.contains(&format!("profile {DEFAULT_PROFILE} ")));
        assert!(p.contains("deny mount,"));
        assert_eq!(p.matches('{').count(), p.matches('}').count());
    }
}
