//! Whether a process is still running, as status and list calls ask of
//! every container and sandbox.

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
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    // SAFETY: pidfd_open takes a PID and flags and returns a new file
    // descriptor or -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ESRCH) => Some(true),
            _ => None,
        };
    }
    let fd = i32::try_from(fd).ok()?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else
    // owns it, and the OwnedFd closes it once.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut fds = [nix::poll::PollFd::new(
        fd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO) {
        Ok(n) => Some(n > 0),
        Err(_) => None,
    }
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
        child.wait().unwrap_or_else(|e| panic!("wait: {e}"));
        assert!(!process_alive(pid));
    }
}
