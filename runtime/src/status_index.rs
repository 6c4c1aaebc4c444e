//! The objects of one state directory (containers, sandboxes, CRI records)
//! kept in memory for a long-lived process, so that a list call over
//! hundreds of them reads no file that did not change: a [`DirWatch`] says
//! which entries changed (whoever changed them), a poll over the pidfds of
//! the live ones says which processes ended, and only those are read again.
//! Everything else is answered from memory.
//!
//! Off until [`StatusIndex::enable`]: a short-lived command reads its few
//! files directly, and inotify instances are a limited resource per user.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::dir_watch::DirWatch;
use crate::liveness::{has_exited, open_pidfd};

/// How a directory holds its objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One directory per object, named by its ID, watched inside.
    Dirs,
    /// One file per object, `<id><suffix>`.
    Files(&'static str),
}

/// One object as last computed.
struct Entry<T> {
    value: Option<T>,
    /// Computed since its last change.
    fresh: bool,
    /// Its changes are watched (else it is computed on every call).
    watched: bool,
    /// The process whose end changes it: (pid, pidfd).
    process: Option<(i32, OwnedFd)>,
}

struct Indexed<T> {
    dir: PathBuf,
    layout: Layout,
    watch: DirWatch,
    /// The entries match the directory's listing.
    listed: bool,
    entries: HashMap<String, Entry<T>>,
}

/// See the module documentation.
pub struct StatusIndex<T> {
    state: Mutex<Option<Indexed<T>>>,
}

impl<T> std::fmt::Debug for StatusIndex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let on = self
            .state
            .lock()
            .map(|g| g.as_ref().map(|ix| ix.entries.len()))
            .unwrap_or(None);
        f.debug_struct("StatusIndex").field("entries", &on).finish()
    }
}

impl<T> Default for StatusIndex<T> {
    fn default() -> Self {
        StatusIndex {
            state: Mutex::new(None),
        }
    }
}

/// What `compute` says of one object: its value (`None`: not an object,
/// or not readable yet) and the PID of the process whose end changes it.
pub type Computed<T> = Option<(T, Option<i32>)>;

impl<T: Clone> StatusIndex<T> {
    /// Keep `dir`'s objects from now on; logged and left off when inotify
    /// is not available (every call then reads the files, as before).
    pub fn enable(&self, dir: &Path, layout: Layout) {
        match DirWatch::new(dir) {
            Ok(watch) => {
                *self.lock() = Some(Indexed {
                    dir: dir.to_path_buf(),
                    layout,
                    watch,
                    listed: false,
                    entries: HashMap::new(),
                });
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "no inotify: listing by reading every file")
            }
        }
    }

    /// Every object's value (unordered), `compute` called for those that
    /// changed and `on_removed` for each object gone since the last call
    /// (once: to drop what the caller keeps of it); `None` when the index
    /// is off.
    pub fn list(
        &self,
        compute: impl Fn(&str) -> Computed<T>,
        mut on_removed: impl FnMut(&str),
    ) -> Option<Vec<T>> {
        let mut g = self.lock();
        let ix = g.as_mut()?;
        ix.refresh(&compute, &mut on_removed);
        Some(
            ix.entries
                .values()
                .filter_map(|e| e.value.clone())
                .collect(),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Indexed<T>>> {
        // Entries are replaced whole: a panic cannot leave one half made.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T: Clone> Indexed<T> {
    /// The ID an entry name stands for.
    fn id_of<'a>(&self, name: &'a str) -> Option<&'a str> {
        match self.layout {
            Layout::Dirs => Some(name),
            Layout::Files(suffix) => name.strip_suffix(suffix),
        }
    }

    /// Mark what the queued events name as changed.
    fn take_changes(&mut self) {
        let ch = self.watch.changes();
        if ch.all {
            self.listed = false;
            self.entries.values_mut().for_each(|e| e.fresh = false);
        }
        if ch.listing {
            self.listed = false;
        }
        for n in &ch.names {
            if let Some(e) = self.id_of(n).and_then(|id| self.entries.get_mut(id)) {
                e.fresh = false;
            }
        }
    }

    fn refresh(
        &mut self,
        compute: &impl Fn(&str) -> Computed<T>,
        on_removed: &mut impl FnMut(&str),
    ) {
        self.take_changes();
        if !self.listed {
            self.relist(on_removed);
        }
        self.poll_processes();
        let stale: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.fresh || !e.watched)
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            self.recompute(&id, compute);
        }
    }

    /// Match the entries to the directory: new ones watched (before they
    /// are first read, so that no later change is missed), gone ones
    /// dropped and reported to `on_removed`.
    fn relist(&mut self, on_removed: &mut impl FnMut(&str)) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now: std::collections::HashSet<String> = rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                self.id_of(&name).map(str::to_string)
            })
            .collect();
        let gone: Vec<String> = self
            .entries
            .keys()
            .filter(|id| !now.contains(*id))
            .cloned()
            .collect();
        for id in gone {
            self.entries.remove(&id);
            self.watch.unwatch(&id);
            on_removed(&id);
        }
        for id in now {
            if self.entries.contains_key(&id) {
                continue;
            }
            let watched = match self.layout {
                Layout::Dirs => self.watch.watch(&id, &self.dir.join(&id)),
                // The directory's own watch names each file.
                Layout::Files(_) => true,
            };
            self.entries.insert(
                id,
                Entry {
                    value: None,
                    fresh: false,
                    watched,
                    process: None,
                },
            );
        }
        self.listed = true;
    }

    /// Mark the objects whose process ended, all in one poll.
    fn poll_processes(&mut self) {
        let live: Vec<&str> = self
            .entries
            .iter()
            .filter(|(_, e)| e.fresh && e.process.is_some())
            .map(|(id, _)| id.as_str())
            .collect();
        if live.is_empty() {
            return;
        }
        let mut fds: Vec<nix::poll::PollFd> = live
            .iter()
            .filter_map(|id| self.entries.get(*id)?.process.as_ref())
            .map(|(_, fd)| nix::poll::PollFd::new(fd.as_fd(), nix::poll::PollFlags::POLLIN))
            .collect();
        let ended_all = nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO).is_err();
        let ended: Vec<String> = live
            .iter()
            .zip(fds.iter())
            .filter(|(_, f)| ended_all || f.revents().is_some_and(|r| !r.is_empty()))
            .map(|(id, _)| id.to_string())
            .collect();
        drop(fds);
        for id in ended {
            if let Some(e) = self.entries.get_mut(&id) {
                e.fresh = false;
            }
        }
    }

    /// Compute object `id` again.
    fn recompute(&mut self, id: &str, compute: &impl Fn(&str) -> Computed<T>) {
        let Some(e) = self.entries.get_mut(id) else {
            return;
        };
        match compute(id) {
            Some((v, pid)) => {
                e.value = Some(v);
                e.fresh = true;
                match pid {
                    Some(p) if e.process.as_ref().is_some_and(|(q, _)| *q == p) => {}
                    Some(p) => match live_pidfd(p) {
                        Some(fd) => e.process = Some((p, fd)),
                        // Gone already (or no pidfds): read it next time.
                        None => {
                            e.process = None;
                            e.fresh = false;
                        }
                    },
                    None => e.process = None,
                }
            }
            None => {
                // Not readable yet (half made): its next write is an event.
                e.value = None;
                e.process = None;
                e.fresh = true;
            }
        }
    }
}

/// A pidfd of `pid`, if it still runs.
fn live_pidfd(pid: i32) -> Option<OwnedFd> {
    let fd = open_pidfd(pid).ok()?;
    // A failed poll counts as ended: the object is read again next time.
    (!has_exited(fd.as_fd()).unwrap_or(true)).then_some(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The index over a directory of object directories, computing each
    /// as (its `v` file's content, the PID in its `pid` file).
    fn compute<'a>(
        dir: &'a Path,
        calls: &'a AtomicUsize,
    ) -> impl Fn(&str) -> Computed<String> + 'a {
        move |id| {
            calls.fetch_add(1, Ordering::SeqCst);
            let v = std::fs::read_to_string(dir.join(id).join("v")).ok()?;
            let pid = std::fs::read_to_string(dir.join(id).join("pid"))
                .ok()
                .and_then(|p| p.trim().parse().ok());
            Some((v, pid))
        }
    }

    fn sorted(v: Option<Vec<String>>) -> Vec<String> {
        let mut v = v.unwrap_or_else(|| panic!("index off"));
        v.sort();
        v
    }

    fn write(p: &Path, data: &str) {
        std::fs::write(p, data).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }

    /// Unchanged objects are not read again; a change inside one, an
    /// object added or removed, and the end of an object's process are
    /// each seen at the next list, and only those are read. A removed
    /// object is reported once.
    #[test]
    fn reads_only_what_changed() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = d.path();
        for id in ["a", "b"] {
            std::fs::create_dir(p.join(id)).unwrap_or_else(|e| panic!("{e}"));
            write(&p.join(id).join("v"), id);
        }
        let ix: StatusIndex<String> = StatusIndex::default();
        let calls = AtomicUsize::new(0);
        assert!(
            ix.list(compute(p, &calls), |_| {}).is_none(),
            "on before enable"
        );
        ix.enable(p, Layout::Dirs);
        let f = compute(p, &calls);
        // What the index reported removed: what a caller drops from its
        // caches.
        let removed = std::cell::RefCell::new(Vec::<String>::new());
        let gone = |id: &str| removed.borrow_mut().push(id.to_string());
        calls.store(0, Ordering::SeqCst);
        let want = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert_eq!(sorted(ix.list(&f, &gone)), want(&["a", "b"]));
        assert_eq!(calls.swap(0, Ordering::SeqCst), 2);
        assert_eq!(sorted(ix.list(&f, &gone)), want(&["a", "b"]));
        assert_eq!(
            calls.swap(0, Ordering::SeqCst),
            0,
            "unchanged objects read again"
        );

        // A rewrite inside one (by rename, as state files are written).
        write(&p.join("b").join("v.tmp"), "b2");
        std::fs::rename(p.join("b").join("v.tmp"), p.join("b").join("v"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sorted(ix.list(&f, &gone)), want(&["a", "b2"]));
        assert_eq!(calls.swap(0, Ordering::SeqCst), 1);

        // One added (its content written after it appeared), one removed.
        std::fs::create_dir(p.join("c")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sorted(ix.list(&f, &gone)), want(&["a", "b2"]));
        write(&p.join("c").join("v"), "c");
        assert!(removed.borrow().is_empty(), "{:?}", removed.borrow());
        std::fs::remove_dir_all(p.join("a")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sorted(ix.list(&f, &gone)), want(&["b2", "c"]));
        assert_eq!(*removed.borrow(), want(&["a"]));
        calls.store(0, Ordering::SeqCst);

        // A live process: its end alone makes the object read again.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap_or_else(|e| panic!("sleep: {e}"));
        write(&p.join("c").join("pid"), &child.id().to_string());
        ix.list(&f, &gone);
        assert_eq!(calls.swap(0, Ordering::SeqCst), 1);
        ix.list(&f, &gone);
        assert_eq!(calls.swap(0, Ordering::SeqCst), 0);
        child.kill().unwrap_or_else(|e| panic!("{e}"));
        let _ = child.wait();
        ix.list(&f, &gone);
        assert_eq!(
            calls.swap(0, Ordering::SeqCst),
            1,
            "an ended process went unseen"
        );
        assert_eq!(*removed.borrow(), want(&["a"]), "a removal reported twice");
    }

    /// A directory of `<id>.json` files: a file replaced by rename is read
    /// again, other names (temporary files) are not objects.
    #[test]
    fn files_layout_follows_renames() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = d.path().to_path_buf();
        write(&p.join("x.json"), "1");
        let ix: StatusIndex<String> = StatusIndex::default();
        ix.enable(&p, Layout::Files(".json"));
        let calls = AtomicUsize::new(0);
        let f = |id: &str| {
            calls.fetch_add(1, Ordering::SeqCst);
            std::fs::read_to_string(p.join(format!("{id}.json")))
                .ok()
                .map(|v| (v, None))
        };
        assert_eq!(
            sorted(ix.list(f, |id| panic!("{id} reported removed"))),
            vec!["1".to_string()]
        );
        write(&p.join("x.json.1.tmp"), "2");
        std::fs::rename(p.join("x.json.1.tmp"), p.join("x.json")).unwrap_or_else(|e| panic!("{e}"));
        calls.store(0, Ordering::SeqCst);
        assert_eq!(
            sorted(ix.list(f, |id| panic!("{id} reported removed"))),
            vec!["2".to_string()]
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
