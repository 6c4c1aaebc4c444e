//! What `podctl-shim create` asks of the pod monitor, and the asking: one
//! JSON line on the monitor's socket, answered by one line, `ok <pid>` or
//! `err <reason>`. The asker holds the pod's monitor lock from before it
//! connects until the answer, so a monitor that finds the lock free and
//! nothing to watch may exit without losing a request; the asker starts
//! the monitor when there is none.

use std::ffi::CString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::unistd::{fork, setsid, ForkResult};
use serde::{Deserialize, Serialize};

use crate::podmon::{LOCK, MODE, SOCKET};

/// One container for the monitor to create and watch.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateRequest {
    pub id: String,
    pub bundle: PathBuf,
    /// libcontainer's state root.
    pub root: PathBuf,
    /// The container's directory (pid, exit record, attach socket).
    pub dir: PathBuf,
    pub log: PathBuf,
    pub systemd: bool,
    pub oom_file: Option<PathBuf>,
    pub oom_parent: Option<PathBuf>,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    /// The `podctl-shim` binary that builds the container.
    pub shim: PathBuf,
}

/// The pod's monitor: `dir` is where its socket and lock are (the
/// sandbox's directory; the container's own when that is gone).
pub struct PodMonitor {
    pub dir: PathBuf,
    /// The monitor program: `podctl-shim-watch` next to the shim, or the
    /// shim itself (its `monitor` mode).
    pub program: PathBuf,
}

/// Take `file`'s exclusive `flock`, waiting for it.
pub fn lock_exclusive(file: &File) -> std::io::Result<()> {
    loop {
        // SAFETY: flock on a descriptor that `file` keeps open.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Run `f` with `dir` as the working directory (sockets are named
/// relative to it: long state paths exceed the 108-byte limit). Only for
/// single-threaded processes.
pub fn in_dir<T>(dir: &Path, f: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
    std::env::set_current_dir(dir)?;
    let r = f();
    let _ = std::env::set_current_dir("/");
    r
}

impl PodMonitor {
    /// Have the pod's monitor create and watch the container; its PID.
    pub fn create(&self, req: &CreateRequest) -> Result<i32, String> {
        let lock_path = self.dir.join(LOCK);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("{}: {e}", lock_path.display()))?;
        lock_exclusive(&lock).map_err(|e| format!("flock {}: {e}", lock_path.display()))?;
        let conn = match in_dir(&self.dir, || UnixStream::connect(SOCKET)) {
            Ok(c) => c,
            Err(_) => self.spawn()?,
        };
        let mut line = serde_json::to_vec(req).map_err(|e| format!("encoding the request: {e}"))?;
        line.push(b'\n');
        (&conn)
            .write_all(&line)
            .map_err(|e| format!("writing to the pod monitor: {e}"))?;
        let mut answer = String::new();
        BufReader::new(&conn)
            .read_line(&mut answer)
            .map_err(|e| format!("reading the pod monitor's answer: {e}"))?;
        drop(lock);
        match answer.strip_prefix("ok ") {
            Some(pid) => pid
                .trim()
                .parse()
                .map_err(|_| format!("the pod monitor answered {answer:?}")),
            None if answer.is_empty() => {
                Err("the pod monitor ended before creating the container".into())
            }
            None => Err(answer.trim_start_matches("err ").trim().to_string()),
        }
    }

    /// Start the monitor on a new socket and connect to it (the caller
    /// holds the lock). The connection waits in the listener's backlog
    /// until the monitor accepts it.
    fn spawn(&self) -> Result<UnixStream, String> {
        let sock = self.dir.join(SOCKET);
        let _ = std::fs::remove_file(&sock);
        let listener = in_dir(&self.dir, || UnixListener::bind(SOCKET))
            .map_err(|e| format!("bind {}: {e}", sock.display()))?;
        let program = CString::new(self.program.as_os_str().as_encoded_bytes())
            .map_err(|_| "monitor path with a NUL byte".to_string())?;
        let name = self
            .program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let args: Result<Vec<CString>, _> = [
            name,
            MODE.into(),
            "--dir".into(),
            self.dir.display().to_string(),
            "--listen-fd".into(),
            listener.as_raw_fd().to_string(),
        ]
        .into_iter()
        .map(CString::new)
        .collect();
        let args = args.map_err(|_| "monitor argument with a NUL byte".to_string())?;
        // SAFETY: the callers (podctl-shim create) are single-threaded, so
        // the child may run arbitrary code after fork.
        match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
            ForkResult::Child => {
                let code = match exec_monitor(&listener, &program, &args) {
                    Ok(never) => match never {},
                    Err(_) => 127,
                };
                std::process::exit(code)
            }
            ForkResult::Parent { .. } => {}
        }
        drop(listener);
        in_dir(&self.dir, || UnixStream::connect(SOCKET))
            .map_err(|e| format!("connect {}: {e}", sock.display()))
    }
}

/// In the forked child: a session of its own, no inherited stdio, the
/// monitor's signals blocked (none is lost before its signalfd exists),
/// then exec the monitor with the listener.
fn exec_monitor(
    listener: &UnixListener,
    program: &CString,
    args: &[CString],
) -> Result<std::convert::Infallible, String> {
    setsid().map_err(|e| format!("setsid: {e}"))?;
    crate::podmon::detach_stdio()?;
    crate::podmon::block_signals()?;
    // SAFETY: clearing FD_CLOEXEC on the listener this process owns.
    if unsafe { libc::fcntl(listener.as_raw_fd(), libc::F_SETFD, 0) } < 0 {
        return Err(format!("fcntl: {}", std::io::Error::last_os_error()));
    }
    nix::unistd::execv(program, args).map_err(|e| format!("execv: {e}"))
}

/// The answer for a request, as written on the socket.
pub fn answer(r: &Result<i32, String>) -> String {
    match r {
        Ok(pid) => format!("ok {pid}\n"),
        Err(e) => format!("err {}\n", e.replace('\n', " ")),
    }
}

/// Take ownership of an inherited descriptor named on the command line.
pub fn inherited_fd(fd: std::os::fd::RawFd) -> Result<OwnedFd, String> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_GETFD only checks that the descriptor is open.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(format!("descriptor {fd} is not open"));
    }
    // SAFETY: our parent passed us this open descriptor and nothing else
    // in this process owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: setting FD_CLOEXEC on a descriptor we now own.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(owned)
}
