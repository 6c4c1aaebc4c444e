//! Garbage a crash leaves and no record points to: a container whose
//! create was cut short has a state directory (perhaps with its rootfs
//! overlay mounted) but no `meta.json`, so no listing shows it and no
//! pod removal finds it. Every [`Runtime`] collects those when it opens
//! the state directories (a restarted daemon, the next CLI command).
//!
//! The same holds for a sandbox cut before its `meta.json` (at most its
//! directory and its cgroup exist), for a pinned network namespace whose
//! sandbox directory is gone, and for a container's writable layer (under
//! the persistent root) whose state directory is gone: a removal cut
//! between the two, or a reboot, which empties the state directory (a
//! tmpfs) and leaves the layers of every container that ran.
//!
//! A create in progress in another process holds the object's lock from
//! before its directory exists until it has written `meta.json` (or
//! cleaned up): such a directory is skipped, never collected. Sandboxes
//! that have a `meta.json` but no record of their creator (a crash between
//! the two) are the creator's to find: [`Runtime::remove_sandbox_unclaimed`].

use std::path::Path;

use crate::container::{Runtime, META};
use crate::error::Result;
use crate::{cgroup, lock};

impl Runtime {
    /// Remove every half-created container (state directory without
    /// `meta.json`, lock free) as a failed create removes itself
    /// (`discard_unfinished`). Returns how many were removed.
    pub fn collect_half_created(&self) -> usize {
        self.collect_containers()
            + self.collect_retired()
            + self.collect_sandboxes()
            + self.collect_netns_pins()
            + self.collect_layers()
    }

    /// Writable layers (`<root>/containers/<id>`) of containers whose
    /// state directory is gone. A create makes the state directory first
    /// and a removal removes it first, both under the container's lock.
    fn collect_layers(&self) -> usize {
        let mut removed = 0;
        let dir = self.cfg.root_dir.join("containers");
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            let Some(held) = self.unclaimed_unless(&id, || self.dir(&id).exists()) else {
                continue;
            };
            tracing::warn!(%id, "gc: removing the writable layer of a container that is gone");
            removed += usize::from(self.remove_collected(&id, &e.path()));
            drop(held);
        }
        removed
    }

    fn collect_containers(&self) -> usize {
        let mut removed = 0;
        let dir = self.cfg.state_dir.join("containers");
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            let Some(held) = self.unclaimed_without_meta(&e.path(), &id) else {
                continue;
            };
            tracing::warn!(%id, "gc: removing a container whose create was cut short");
            removed += usize::from(self.discard_unfinished(&id));
            drop(held);
        }
        removed
    }

    /// Sandbox directories without `meta.json` whose lock is free.
    fn collect_sandboxes(&self) -> usize {
        let mut removed = 0;
        let dir = self.cfg.state_dir.join("sandboxes");
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            let Some(held) = self.unclaimed_without_meta(&e.path(), &id) else {
                continue;
            };
            // Before meta.json there is no pause yet: at most the pod's
            // cgroup (pod limits) and the directory.
            tracing::warn!(%id, "gc: removing a sandbox whose create was cut short");
            cgroup::remove_pod(&self.cfg, &id);
            removed += usize::from(self.remove_collected(&id, &e.path()));
            drop(held);
        }
        removed
    }

    /// Network namespace pins whose sandbox directory is gone.
    fn collect_netns_pins(&self) -> usize {
        let mut removed = 0;
        let dir = self.cfg.state_dir.join("netns");
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            let Some(held) = self.unclaimed_unless(&id, || self.sandbox_dir(&id).exists()) else {
                continue;
            };
            tracing::warn!(%id, "gc: unpinning the network namespace of a removed sandbox");
            if crate::sandbox::unpin(&e.path()).is_ok() {
                removed += 1;
            }
            drop(held);
        }
        removed
    }

    /// Remove the collected directory `path` of object `id` (its lock is
    /// held) and then its lock file; whether it went.
    fn remove_collected(&self, id: &str, path: &Path) -> bool {
        match std::fs::remove_dir_all(path) {
            Ok(()) => {
                lock::forget(&self.locks(), id);
                true
            }
            Err(err) => {
                tracing::warn!(%id, path = %path.display(), error = %err, "gc: removing");
                false
            }
        }
    }

    /// The lock of `<path>` (an object directory named `id`) when the
    /// directory has no `meta.json` and nobody holds the lock (a holder is
    /// creating or removing it right now).
    fn unclaimed_without_meta(&self, path: &Path, id: &str) -> Option<lock::Lock> {
        self.unclaimed_unless(id, || path.join(META).exists())
    }

    /// The lock of object `id` when nobody holds it and `keep` says no
    /// both before and after it is taken (a holder may have finished
    /// meanwhile).
    fn unclaimed_unless(&self, id: &str, keep: impl Fn() -> bool) -> Option<lock::Lock> {
        if keep() {
            return None;
        }
        let held = match lock::try_exclusive(&self.locks(), id) {
            Ok(Some(l)) => l,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(%id, error = %e, "gc: cannot lock");
                return None;
            }
        };
        (!keep()).then_some(held)
    }

    /// Remove a sandbox (as [`Runtime::remove_sandbox`]) unless its
    /// creator still holds it ([`Runtime::run_sandbox_claimed`]) or
    /// `recorded` (asked with the sandbox's lock held, after its creator
    /// let go) says the creator did record it: for a caller that found it
    /// without a record of its own. Returns whether it was removed.
    pub fn remove_sandbox_unclaimed(
        &self,
        id: &str,
        recorded: impl FnOnce() -> bool,
    ) -> Result<bool> {
        let Some(held) = lock::try_exclusive(&self.locks(), id)? else {
            return Ok(false);
        };
        if recorded() {
            return Ok(false);
        }
        // Removal takes the lock itself. Nobody can claim the sandbox in
        // between: IDs are never reused, and its creator has let go.
        drop(held);
        self.remove_sandbox(id).map(|()| true)
    }

    /// Whether the sandbox's state directory exists (whatever its state).
    pub fn sandbox_exists(&self, id: &str) -> bool {
        self.sandbox_dir(id).exists()
    }
}
