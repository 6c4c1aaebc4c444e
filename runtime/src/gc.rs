//! Garbage a crash leaves and no record points to: a container whose
//! create was cut short has a state directory (perhaps with its rootfs
//! overlay mounted) but no `meta.json`, so no listing shows it and no
//! pod removal finds it. Every [`Runtime`] collects those when it opens
//! the state directories (a restarted daemon, the next CLI command).
//!
//! A create in progress in another process holds the container's lock
//! from before its directory exists until it has written `meta.json` (or
//! cleaned up): such a directory is skipped, never collected.

use crate::container::Runtime;
use crate::{lock, rootfs, shim};

impl Runtime {
    /// Remove every half-created container (state directory without
    /// `meta.json`, lock free): its libcontainer state, rootfs mount,
    /// state and data directories. Returns how many were removed.
    pub fn collect_half_created(&self) -> usize {
        let mut removed = 0;
        let dir = self.cfg.state_dir.join("containers");
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if e.path().join(crate::container::META).exists() {
                continue;
            }
            let held = match lock::try_exclusive(&self.locks(), &id) {
                Ok(Some(l)) => l,
                // Being created (or removed) right now by someone else.
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(%id, error = %e, "gc: cannot lock");
                    continue;
                }
            };
            if e.path().join(crate::container::META).exists() {
                continue;
            }
            tracing::warn!(%id, "gc: removing a container whose create was cut short");
            if self.libcontainer_root().join(&id).exists() {
                let root = self.libcontainer_root().display().to_string();
                let args = ["--id", id.as_str(), "--root", &root, "--force"];
                if let Err(e) = shim::run(&self.shim, &id, "delete", &args) {
                    tracing::warn!(%id, error = %e, "gc: deleting libcontainer state");
                }
            }
            if let Err(e) = rootfs::unmount(&e.path().join("rootfs")) {
                tracing::warn!(%id, error = %e, "gc: rootfs stays mounted");
                continue;
            }
            for d in [e.path(), self.data_dir(&id)] {
                if let Err(err) = std::fs::remove_dir_all(&d) {
                    if err.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(%id, path = %d.display(), error = %err, "gc: removing");
                    }
                }
            }
            lock::forget(&self.locks(), &id);
            drop(held);
            removed += 1;
        }
        removed
    }
}
