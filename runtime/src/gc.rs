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
use crate::lock;

impl Runtime {
    /// Remove every half-created container (state directory without
    /// `meta.json`, lock free) as a failed create removes itself
    /// (`discard_unfinished`). Returns how many were removed.
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
            removed += usize::from(self.discard_unfinished(&id));
            drop(held);
        }
        removed
    }
}
