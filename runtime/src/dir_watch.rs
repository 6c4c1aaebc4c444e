//! Which entries of a state directory changed since the last look, from
//! inotify: the directory itself is watched for entries added and removed
//! (and, for a directory of files, for each file rewritten), and each entry
//! that is a directory of its own can be watched for changes inside it.
//! Any process sharing the state changes it through the kernel, so nothing
//! it writes is missed; an overflowed queue says "everything".

use std::collections::{HashMap, HashSet};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

/// What changed since the last [`DirWatch::changes`].
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Changes {
    /// Anything may have changed (events were lost).
    pub all: bool,
    /// Entries were added to the directory or removed from it.
    pub listing: bool,
    /// Names of entries that changed, or inside which something changed.
    pub names: HashSet<String>,
}

/// An inotify instance watching one directory and some of its entries.
#[derive(Debug)]
pub(crate) struct DirWatch {
    ino: Inotify,
    dir: WatchDescriptor,
    /// Watched entries: name by watch, and watch by name.
    names: HashMap<WatchDescriptor, String>,
    watches: HashMap<String, WatchDescriptor>,
}

fn dir_events() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
}

impl DirWatch {
    /// Watch `dir` (which must exist).
    pub fn new(dir: &Path) -> std::io::Result<DirWatch> {
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        let wd = ino.add_watch(dir, dir_events() | AddWatchFlags::IN_ONLYDIR)?;
        Ok(DirWatch {
            ino,
            dir: wd,
            names: HashMap::new(),
            watches: HashMap::new(),
        })
    }

    /// Watch inside the entry `name` (a directory at `path`) as well;
    /// whether that worked (a full watch table or a vanished entry say no).
    pub fn watch(&mut self, name: &str, path: &Path) -> bool {
        match self
            .ino
            .add_watch(path, dir_events() | AddWatchFlags::IN_ONLYDIR)
        {
            Ok(wd) => {
                self.names.insert(wd, name.to_string());
                self.watches.insert(name.to_string(), wd);
                true
            }
            Err(_) => false,
        }
    }

    /// Stop watching inside `name` (it went).
    pub fn unwatch(&mut self, name: &str) {
        if let Some(wd) = self.watches.remove(name) {
            self.names.remove(&wd);
            // EINVAL when the kernel dropped the watch with the directory.
            let _ = self.ino.rm_watch(wd);
        }
    }

    /// Drain the queued events.
    pub fn changes(&mut self) -> Changes {
        let mut ch = Changes::default();
        loop {
            let events = match self.ino.read_events() {
                Ok(ev) => ev,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(_) => {
                    ch.all = true;
                    break;
                }
            };
            for ev in events {
                if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    ch.all = true;
                } else if ev.wd == self.dir {
                    match ev.name {
                        Some(n) => {
                            let added_or_gone = AddWatchFlags::IN_CREATE
                                | AddWatchFlags::IN_DELETE
                                | AddWatchFlags::IN_MOVED_FROM
                                | AddWatchFlags::IN_MOVED_TO;
                            if ev.mask.intersects(added_or_gone) {
                                ch.listing = true;
                            }
                            ch.names.insert(n.to_string_lossy().into_owned());
                        }
                        // The directory itself went or moved.
                        None => ch.all = true,
                    }
                } else if let Some(name) = self.names.get(&ev.wd).cloned() {
                    if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                        // The kernel dropped the watch (the entry went).
                        self.names.remove(&ev.wd);
                        self.watches.remove(&name);
                    }
                    ch.names.insert(name);
                }
            }
        }
        ch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> HashSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Entries added and removed, files rewritten in place or by rename,
    /// and changes inside a watched entry are all reported, once.
    #[test]
    fn reports_what_changed_and_only_that() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = d.path();
        let mut w = DirWatch::new(p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(w.changes(), Changes::default());

        std::fs::create_dir(p.join("a")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(p.join("f.json"), b"1").unwrap_or_else(|e| panic!("{e}"));
        let ch = w.changes();
        assert!(ch.listing && !ch.all);
        assert_eq!(ch.names, names(&["a", "f.json"]));
        assert!(w.watch("a", &p.join("a")));

        // A rewrite by rename (as atomic writes do) and a file inside "a".
        std::fs::write(p.join("f.tmp"), b"2").unwrap_or_else(|e| panic!("{e}"));
        std::fs::rename(p.join("f.tmp"), p.join("f.json")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(p.join("a").join("exit.json"), b"{}").unwrap_or_else(|e| panic!("{e}"));
        let ch = w.changes();
        assert!(
            ch.names.contains("f.json") && ch.names.contains("a"),
            "{ch:?}"
        );
        assert_eq!(w.changes(), Changes::default(), "events reported twice");

        // An entry removed: listed as a change, its watch forgotten.
        std::fs::remove_dir_all(p.join("a")).unwrap_or_else(|e| panic!("{e}"));
        let ch = w.changes();
        assert!(ch.listing && ch.names.contains("a"), "{ch:?}");
        w.unwatch("a");
        assert!(w.watches.is_empty() && w.names.is_empty());
    }
}
