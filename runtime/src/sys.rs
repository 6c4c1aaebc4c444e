//! Small pieces shared by the modules that make raw system calls.

use std::os::fd::{FromRawFd, OwnedFd};

/// The descriptor a system call returned (`-1`: its errno), owned.
pub(crate) fn owned_fd(r: libc::c_long) -> std::io::Result<OwnedFd> {
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(r).map_err(std::io::Error::other)?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else
    // owns it, and the OwnedFd closes it once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
