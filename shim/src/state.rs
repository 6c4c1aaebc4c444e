//! Files the monitor writes into a container's directory.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// PID of the container's init process (decimal).
pub const PID_FILE: &str = "pid";
/// PID of the monitor itself (decimal).
pub const MONITOR_PID_FILE: &str = "monitor.pid";
/// JSON [`ExitRecord`], present once the container has exited.
pub const EXIT_FILE: &str = "exit.json";

/// How a container ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Exit code; 128 + signal number when killed by a signal.
    pub exit_code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// RFC 3339 time with nanoseconds, UTC.
    pub finished_at: String,
    /// Nanoseconds since the epoch.
    pub finished_at_ns: i64,
    /// The kernel's OOM killer ended it.
    pub oom_killed: bool,
    /// Set when the container never ran: `StartError`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What went wrong, with `reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ExitRecord {
    /// Read the record from a container directory, if it exists.
    pub fn read(dir: &Path) -> std::io::Result<Option<ExitRecord>> {
        match std::fs::read(dir.join(EXIT_FILE)) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Write the record atomically (temp file, fsync, rename).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let data = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        write_atomic(&dir.join(EXIT_FILE), &data)
    }
}

/// Write a small file atomically.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    // `<name>.<pid>.tmp`: writers in different processes never share a
    // temporary file, and one a dead writer left is told by its PID
    // (`temp_writer`).
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(name);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// For a temporary file [`write_atomic`] makes (`<name>.<pid>.tmp`): the
/// PID of its writer. `None` for any other name.
pub fn temp_writer(file_name: &str) -> Option<i32> {
    let stem = file_name.strip_suffix(".tmp")?;
    stem.rsplit_once('.')?.1.parse().ok()
}

/// Read a decimal PID file.
pub fn read_pid(path: &Path) -> std::io::Result<i32> {
    let s = std::fs::read_to_string(path)?;
    s.trim().parse().map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// The process `podctl-shim exec` runs (`--process FILE`, JSON).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExecProcess {
    pub args: Vec<String>,
    /// `KEY=value` added to the container's environment.
    pub env: Vec<String>,
    /// Working directory; `/` when `None`.
    pub cwd: Option<String>,
    /// Identity to run as (the container's).
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// The container's seccomp profile: libcontainer's tenant builder does
    /// not apply it to exec'd processes, so the shim does.
    pub seccomp: Option<oci_spec::runtime::LinuxSeccomp>,
    /// The container's rlimits, likewise not applied by the tenant builder.
    #[serde(default)]
    pub rlimits: Vec<oci_spec::runtime::PosixRlimit>,
    /// The container's AppArmor profile, for the exec'd process too.
    #[serde(default)]
    pub apparmor: Option<String>,
}

/// What `podctl-shim exec` writes to `--status FILE` (JSON).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExecStatus {
    pub exit_code: i32,
    pub timed_out: bool,
}
