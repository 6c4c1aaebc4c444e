//! Running the `podctl-shim` binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Result, RuntimeError};

/// Find the shim: explicit path, next to the current executable, or $PATH.
pub fn locate(configured: Option<&Path>) -> PathBuf {
    if let Some(p) = configured {
        return p.to_path_buf();
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            let cand = dir.join("podctl-shim");
            if cand.is_file() {
                return cand;
            }
        }
    }
    PathBuf::from("podctl-shim")
}

/// Run a shim subcommand to completion; returns its stdout.
pub fn run(shim: &Path, id: &str, cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(shim)
        .arg(cmd)
        .args(args)
        .output()
        .map_err(|e| RuntimeError::Shim {
            id: id.into(),
            cmd: cmd.into(),
            reason: format!("{}: {e}", shim.display()),
        })?;
    if !out.status.success() {
        return Err(RuntimeError::Shim {
            id: id.into(),
            cmd: cmd.into(),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
