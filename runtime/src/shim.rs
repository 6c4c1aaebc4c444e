//! Finding and running the `podctl-shim` binary.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Result, RuntimeError};

/// The shim's file name.
pub const SHIM: &str = "podctl-shim";
/// The small binary of the long-lived processes (pod monitor, pause),
/// shipped next to the shim (optional: without it the shim runs them
/// itself, with more memory).
pub const SHIM_WATCH: &str = "podctl-shim-watch";

/// Where the shim is looked for, in order: the configured path alone if
/// there is one; else next to the current executable (and one level up
/// for cargo's test executables in `deps/`), then each `$PATH` directory.
pub fn candidates(configured: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = configured {
        return vec![p.to_path_buf()];
    }
    let mut out = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.push(dir.join(SHIM));
        if dir.ends_with("deps") {
            if let Some(up) = dir.parent() {
                out.push(up.join(SHIM));
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path).filter(|d| d.is_absolute()) {
            let p = dir.join(SHIM);
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// An executable regular file.
pub fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The shim: the first executable of [`candidates`], or an error naming
/// every place looked in.
pub fn locate(configured: Option<&Path>) -> Result<PathBuf> {
    let looked_in = candidates(configured);
    looked_in
        .iter()
        .find(|p| is_executable(p))
        .cloned()
        .ok_or(RuntimeError::ShimNotFound { looked_in })
}

/// What the runtime runs: the located shim, or its bare name when none
/// was found (a spawn then fails with [`RuntimeError::ShimNotFound`]).
pub(crate) fn locate_or_name(configured: Option<&Path>) -> PathBuf {
    locate(configured).unwrap_or_else(|_| PathBuf::from(SHIM))
}

/// The error for a shim that could not be started: a missing shim that
/// was never found names the places looked in.
pub(crate) fn spawn_error(shim: &Path, id: &str, cmd: &str, e: std::io::Error) -> RuntimeError {
    if e.kind() == std::io::ErrorKind::NotFound && shim == Path::new(SHIM) {
        if let Err(missing) = locate(None) {
            return missing;
        }
    }
    RuntimeError::Shim {
        id: id.into(),
        cmd: cmd.into(),
        reason: format!("{}: {e}", shim.display()),
    }
}

/// Run a shim subcommand to completion; returns its stdout.
pub fn run(shim: &Path, id: &str, cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(shim)
        .arg(cmd)
        .args(args)
        .output()
        .map_err(|e| spawn_error(shim, id, cmd, e))?;
    if !out.status.success() {
        return Err(RuntimeError::Shim {
            id: id.into(),
            cmd: cmd.into(),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_path_is_the_only_candidate_and_is_named_when_missing() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = dir.path().join("no-shim-here");
        assert_eq!(candidates(Some(&p)), vec![p.clone()]);
        let err = locate(Some(&p)).err().map(|e| e.to_string());
        let want = format!("podctl-shim not found (looked in {})", p.display());
        assert!(
            err.as_deref().is_some_and(|e| e.starts_with(&want)),
            "{err:?}"
        );
        // A file that is not executable does not count.
        std::fs::write(&p, "#!/bin/sh\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(locate(Some(&p)).is_err());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(locate(Some(&p)).ok(), Some(p));
    }
}
