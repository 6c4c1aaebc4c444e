//! Signal handling and file writing of the test bed's long-running
//! helpers (`podctl-testbed`, `podctl-e2e-env`): they block SIGTERM and
//! SIGINT and wait for one, then tear down what they started.

use std::path::{Path, PathBuf};

/// Block SIGTERM and SIGINT in this thread (and the threads it starts
/// later) so that they wait for [`wait_for_signal`]. The mask is inherited
/// by child processes: spawn them through [`unblocked`].
pub fn block_signals() -> Result<libc::sigset_t, String> {
    // SAFETY: sigset_t is plain data; the calls only read/write `set`.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(format!(
                "pthread_sigmask: {}",
                std::io::Error::from_raw_os_error(rc)
            ));
        }
        Ok(set)
    }
}

pub fn wait_for_signal(set: &libc::sigset_t) -> i32 {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is an initialised signal set and `sig` a valid out pointer.
    let rc = unsafe { libc::sigwait(set, &mut sig) };
    if rc != 0 {
        eprintln!("sigwait: {}", std::io::Error::from_raw_os_error(rc));
    }
    sig
}

/// Write `text` to `path` through a temporary file in the same directory,
/// so readers see the whole file or none.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).map_err(|e| format!("write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("rename to {}: {e}", path.display()))
}

/// Let `cmd`'s process start with no signal blocked (a blocked SIGTERM
/// would be inherited from a caller that waits for it with sigwait).
pub fn unblocked(cmd: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls sigemptyset and pthread_sigmask, which are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            Ok(())
        })
    }
}
