//! libcontainer's own diagnostics, kept for the error message.
//!
//! libcontainer reports a failure inside the container's init process (a
//! mount, a device node, a capability) to its caller only as a short string
//! ("failed to prepare rootfs") and logs the cause through `tracing`.
//! [`install`] routes error events into an anonymous in-memory file; the
//! init process, forked from us, inherits it (close-on-exec, so the
//! container's program never sees it) and writes its cause there too.
//! [`cause`] takes what was written, to be appended to the error.
//!
//! Not stderr: the init process holds its inherited descriptors until the
//! container starts, and a copy of our stderr held there would keep the
//! runtime, which reads our stderr to the end, waiting.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::FromRawFd;
use std::sync::OnceLock;

static SINK: OnceLock<File> = OnceLock::new();

/// Route libcontainer's error events to the in-memory file. Best effort:
/// without one, errors carry no cause.
pub fn install() {
    // SAFETY: memfd_create with a NUL-terminated name and flags only.
    let fd = unsafe { libc::memfd_create(c"podctl-shim-diag".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return;
    }
    // SAFETY: fd was just returned by memfd_create and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    let Ok(writer) = file.try_clone() else {
        return;
    };
    if SINK.set(file).is_err() {
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(std::sync::Mutex::new(writer))
        .with_max_level(tracing::Level::ERROR)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .with_level(false)
        .try_init();
}

/// What was logged since the last call, as ` (cause: a; b)`, or nothing.
/// Taking it empties the file, so a cause is reported once.
pub fn cause() -> String {
    let Some(mut f) = SINK.get() else {
        return String::new();
    };
    let mut text = String::new();
    if f.seek(SeekFrom::Start(0)).is_err() || f.read_to_string(&mut text).is_err() {
        return String::new();
    }
    let _ = f.set_len(0);
    let _ = f.seek(SeekFrom::Start(0));
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        String::new()
    } else {
        format!(" (cause: {})", lines.join("; "))
    }
}
