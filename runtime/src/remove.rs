//! Container removal in two steps, so a caller can answer before the slow
//! part is done.
//!
//! [`Runtime::retire_container`] is quick: under the container's lock it
//! kills a container that still runs and renames its state directory from
//! `containers/<id>` to `removing/<id>`. From then on no listing, status
//! or create sees the container. [`Retired::finish`] then does what takes
//! milliseconds — the shim's `delete` (libcontainer state, cgroup), the
//! rootfs unmount, the state directory and the writable layer — still
//! under the same lock, which [`Retired`] holds until it is done.
//!
//! A retired container whose finish never ran (the process died) is found
//! by the collection ([`Runtime::collect_half_created`]) and finished
//! there; [`Runtime::remove_sandbox`] first finishes (or waits for) the
//! retired containers of its pod, whose cgroups live in the pod's.

use std::path::PathBuf;
use std::time::Duration;

use crate::container::{ContainerState, Meta, Runtime, META};
use crate::error::{IoContext, Result};
use crate::{lock, rootfs, shim};

/// Directory (under the state directory) of retired containers.
pub(crate) const REMOVING: &str = "removing";

/// A retired container whose removal is still to be finished; holds its
/// lock.
#[must_use = "a retired container is removed only once finished"]
pub struct Retired {
    id: String,
    dir: PathBuf,
    _lock: lock::Lock,
}

impl Retired {
    /// The container's ID.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Finish the removal (see the module documentation).
    pub fn finish(self, rt: &Runtime) -> Result<()> {
        rt.finish_removal(&self.id, &self.dir)
    }
}

impl Runtime {
    fn removing_dir(&self, id: &str) -> PathBuf {
        self.cfg.state_dir.join(REMOVING).join(id)
    }

    /// Remove a container; a running one is killed first. Removing a
    /// removed container succeeds.
    pub fn remove_container(&self, id: &str) -> Result<()> {
        match self.retire_container(id)? {
            Some(r) => r.finish(self),
            None => self.finish_retired_one(id),
        }
    }

    /// The quick half of a removal: kill the container if it runs and
    /// take it out of every listing. `None` when there is no such
    /// container (any more).
    pub fn retire_container(&self, id: &str) -> Result<Option<Retired>> {
        let held = lock::exclusive(&self.locks(), id)?;
        let dir = self.dir(id);
        if !dir.exists() {
            return Ok(None);
        }
        if self
            .container_status(id)
            .map(|s| s.state != ContainerState::Exited)
            .unwrap_or(false)
        {
            self.stop_locked(id, Duration::ZERO)?;
        }
        let to = self.removing_dir(id);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).ctx("create", parent)?;
        }
        std::fs::rename(&dir, &to).ctx("rename", &dir)?;
        crate::failpoint::hit("remove_container.retired");
        Ok(Some(Retired {
            id: id.into(),
            dir: to,
            _lock: held,
        }))
    }

    /// The slow half, with the container's lock held: libcontainer's
    /// state and cgroup, the rootfs mount, the state directory (now under
    /// `removing/`), the writable layer, the lock file.
    fn finish_removal(&self, id: &str, dir: &std::path::Path) -> Result<()> {
        let root = self.libcontainer_root().display().to_string();
        if self.libcontainer_root().join(id).exists() {
            shim::run(
                &self.shim,
                id,
                "delete",
                &["--id", id, "--root", &root, "--force"],
            )?;
        }
        rootfs::unmount_container(dir)?;
        if dir.exists() {
            std::fs::remove_dir_all(dir).ctx("remove", dir)?;
        }
        let data = self.data_dir(id);
        if data.exists() {
            std::fs::remove_dir_all(&data).ctx("remove", &data)?;
        }
        self.metas.forget(id);
        lock::forget(&self.locks(), id);
        tracing::info!(%id, "container removed");
        Ok(())
    }

    /// Finish the retired container `id` if it is still retired, waiting
    /// for whoever holds its lock (a removal finishing now).
    fn finish_retired_one(&self, id: &str) -> Result<()> {
        let dir = self.removing_dir(id);
        if !dir.exists() {
            return Ok(());
        }
        let _held = lock::exclusive(&self.locks(), id)?;
        if !dir.exists() {
            return Ok(());
        }
        self.finish_removal(id, &dir)
    }

    /// Finish every retired container of sandbox `sandbox` (all of them
    /// when `None`), waiting for removals that are finishing now. Returns
    /// how many this call finished.
    pub(crate) fn finish_retired(&self, sandbox: Option<&str>) -> Result<usize> {
        let mut done = 0;
        let base = self.cfg.state_dir.join(REMOVING);
        for e in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if let Some(want) = sandbox {
                let meta: Option<Meta> =
                    crate::container::read_meta(&id, &e.path().join(META), |id, reason| {
                        crate::error::RuntimeError::Container { id, reason }
                    })
                    .ok();
                // A retired container without readable meta.json is
                // finished whatever pod it was in.
                if meta.is_some_and(|m| m.sandbox_id.as_deref() != Some(want)) {
                    continue;
                }
            }
            if e.path().exists() {
                self.finish_retired_one(&id)?;
                done += 1;
            }
        }
        Ok(done)
    }

    /// Retired containers nobody is finishing (their remover died):
    /// finished now. Returns how many.
    pub(crate) fn collect_retired(&self) -> usize {
        let mut done = 0;
        let base = self.cfg.state_dir.join(REMOVING);
        for e in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            let Ok(Some(_held)) = lock::try_exclusive(&self.locks(), &id) else {
                continue;
            };
            if !e.path().exists() {
                continue;
            }
            tracing::warn!(%id, "gc: finishing the removal of a container");
            match self.finish_removal(&id, &e.path()) {
                Ok(()) => done += 1,
                Err(err) => tracing::warn!(%id, error = %err, "gc: finishing a removal"),
            }
        }
        done
    }
}
