//! The container's root filesystem: an overlay of the image's layer
//! snapshots (read-only lowers) and a per-container upper dir.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{IoContext, Result, RuntimeError};

/// Mount `lowers` (bottom layer first) with `upper`/`work` at `target`.
pub fn mount_overlay(
    id: &str,
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<()> {
    for d in [upper, work, target] {
        std::fs::create_dir_all(d).ctx("create", d)?;
    }
    if lowers.is_empty() {
        return Err(RuntimeError::Container {
            id: id.into(),
            reason: "image has no layers".into(),
        });
    }
    // overlayfs wants the top layer first.
    let lower: Vec<String> = lowers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| RuntimeError::Container {
        id: id.into(),
        reason: format!("mounting overlay at {}: {e}", target.display()),
    })
}

/// Unmount the rootfs if mounted (lazily, so a busy mount cannot block removal).
pub fn unmount(target: &Path) -> Result<()> {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(std::io::Error::from(e)).ctx("unmount", target),
    }
}

/// Unmount everything a container's state directory `dir` has mounted:
/// its rootfs and the idmapped clones of a pod with its own user
/// namespace. Before removing `dir`: a removal must never descend into a
/// volume still mounted below it.
pub fn unmount_container(dir: &Path) -> Result<()> {
    unmount(&dir.join("rootfs"))?;
    crate::userns::detach_all(&dir.join(crate::userns::LAYERS))?;
    crate::userns::detach_all(&dir.join(crate::userns::VOLUMES))
}
