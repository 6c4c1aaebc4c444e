//! Whether a process is still running, as status and list calls ask of
//! every container and sandbox.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Whether a process exists and is not a zombie.
pub(crate) fn process_alive(pid: i32) -> bool {
    match pidfd_exited(pid) {
        Some(exited) => !exited,
        None => proc_stat_alive(pid),
    }
}

/// Whether `pid` has exited (a zombie counts), from a pidfd: pidfd_open
/// and a poll that does not wait, where /proc/<pid>/stat costs the kernel
/// several times more (a status or list call asks this of every
/// container). `None` when pidfds are unavailable.
fn pidfd_exited(pid: i32) -> Option<bool> {
    match open_pidfd(pid) {
        Ok(fd) => has_exited(fd.as_fd()),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Some(true),
        Err(_) => None,
    }
}

/// A pidfd of `pid`: its process, or its zombie, until it is reaped
/// (`ESRCH` once there is no such process).
pub(crate) fn open_pidfd(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a PID and flags and returns a new file
    // descriptor or -1; it touches no memory of ours.
    crate::sys::owned_fd(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })
}

/// Whether the process of a pidfd has ended (a zombie counts), by a poll
/// that does not wait; `None` when the poll fails.
pub(crate) fn has_exited(fd: BorrowedFd<'_>) -> Option<bool> {
    let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
    nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO)
        .ok()
        .map(|n| n > 0)
}

/// The same from /proc/<pid>/stat: present and not a zombie.
fn proc_stat_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// A running child is alive; once it exits it is not, while still a
    /// zombie (not yet reaped) and after; the pidfd answer agrees with
    /// /proc/<pid>/stat's.
    #[test]
    fn process_alive_sees_zombies_as_exited() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap_or_else(|e| panic!("sleep: {e}"));
        let pid = i32::try_from(child.id()).unwrap_or_else(|e| panic!("{e}"));
        assert!(process_alive(pid));
        assert_eq!(pidfd_exited(pid), Some(false));
        assert!(proc_stat_alive(pid));
        let fd = open_pidfd(pid).unwrap_or_else(|e| panic!("pidfd_open: {e}"));
        assert_eq!(has_exited(fd.as_fd()), Some(false));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL)
            .unwrap_or_else(|e| panic!("kill: {e}"));
        // A zombie until reaped: wait for the kernel to mark it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while proc_stat_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        assert!(!process_alive(pid));
        assert_eq!(pidfd_exited(pid), Some(true));
        assert_eq!(has_exited(fd.as_fd()), Some(true));
        child.wait().unwrap_or_else(|e| panic!("wait: {e}"));
        assert!(!process_alive(pid));
    }
}
