//! Advisory locks (flock) serialising operations on one sandbox or
//! container across processes: a CLI and a daemon may both act on the
//! same state directory.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{IoContext, Result};

/// Held lock; released on drop.
pub struct Lock {
    _file: Flock<File>,
}

/// Take the exclusive lock `<dir>/<id>.lock`, waiting for other holders.
pub fn exclusive(dir: &Path, id: &str) -> Result<Lock> {
    let (f, path) = open(dir, id)?;
    let file = Flock::lock(f, FlockArg::LockExclusive)
        .map_err(|(_, e)| std::io::Error::from(e))
        .ctx("flock", &path)?;
    Ok(Lock { _file: file })
}

/// The exclusive lock `<dir>/<id>.lock` if no one holds it now; `None`
/// if someone does.
pub fn try_exclusive(dir: &Path, id: &str) -> Result<Option<Lock>> {
    let (f, path) = open(dir, id)?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(file) => Ok(Some(Lock { _file: file })),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(std::io::Error::from(e)).ctx("flock", &path),
    }
}

/// The lock file `<dir>/<id>.lock`, created if missing, and its path.
fn open(dir: &Path, id: &str) -> Result<(File, PathBuf)> {
    std::fs::create_dir_all(dir).ctx("create", dir)?;
    let path = dir.join(format!("{id}.lock"));
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .ctx("open", &path)?;
    Ok((f, path))
}

/// Remove the lock file of a deleted object (while holding its lock).
pub fn forget(dir: &Path, id: &str) {
    let _ = std::fs::remove_file(dir.join(format!("{id}.lock")));
}
