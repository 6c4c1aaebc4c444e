//! Making a container from inside the pod monitor: the monitor makes the
//! container's stdio (pipes, or a pty), forks and executes
//! `podctl-shim build` (libcontainer stays out of the monitor), and reads
//! its one-line answer. The builder exits once the container's init
//! exists; the init, its orphan, is then the monitor's to reap (the
//! monitor is child subreaper).

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, pipe2, ForkResult, Pid};

use crate::podmon::entry::Entry;
use crate::podmon::request::CreateRequest;

/// A builder silent this long is killed and the creation failed.
const BUILD_TIMEOUT: Duration = Duration::from_secs(120);

/// The container's end and the monitor's end of its stdio.
struct Stdio {
    stdin_r: OwnedFd,
    stdin_w: Option<OwnedFd>,
    out_r: OwnedFd,
    out_w: OwnedFd,
    err_r: OwnedFd,
    err_w: OwnedFd,
}

fn stdio(req: &CreateRequest) -> Result<Stdio, String> {
    let pipe = || pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"));
    if req.tty {
        // A terminal: the pty's slave is the container's stdio; the
        // monitor reads output from the master and writes stdin to it.
        let pty = nix::pty::openpty(None, None).map_err(|e| format!("openpty: {e}"))?;
        let dup = |f: &OwnedFd| f.try_clone().map_err(|e| format!("dup: {e}"));
        for fd in [pty.master.as_raw_fd(), pty.slave.as_raw_fd()] {
            // SAFETY: setting FD_CLOEXEC on descriptors we own.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        let (err_r, err_w) = pipe()?;
        drop(err_w);
        return Ok(Stdio {
            stdin_r: dup(&pty.slave)?,
            stdin_w: Some(dup(&pty.master)?),
            out_r: pty.master,
            out_w: dup(&pty.slave)?,
            err_r,
            err_w: pty.slave,
        });
    }
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (stdin_r, stdin_w) = if req.stdin {
        let (r, w) = pipe()?;
        (r, Some(w))
    } else {
        let devnull = File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
        (OwnedFd::from(devnull), None)
    };
    Ok(Stdio {
        stdin_r,
        stdin_w,
        out_r,
        out_w,
        err_r,
        err_w,
    })
}

/// Create the container; the entry that watches it.
pub fn create(req: &CreateRequest) -> Result<Entry, String> {
    let io = stdio(req)?;
    let (ready_r, ready_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let program = CString::new(req.shim.as_os_str().as_encoded_bytes())
        .map_err(|_| "shim path with a NUL byte".to_string())?;
    let mut args = vec![
        "podctl-shim".to_string(),
        "build".into(),
        "--id".into(),
        req.id.clone(),
        "--bundle".into(),
        req.bundle.display().to_string(),
        "--root".into(),
        req.root.display().to_string(),
        "--stdin-fd".into(),
        io.stdin_r.as_raw_fd().to_string(),
        "--stdout-fd".into(),
        io.out_w.as_raw_fd().to_string(),
        "--stderr-fd".into(),
        io.err_w.as_raw_fd().to_string(),
        "--ready-fd".into(),
        ready_w.as_raw_fd().to_string(),
    ];
    if req.systemd {
        args.push("--systemd".into());
    }
    let args: Result<Vec<CString>, _> = args.into_iter().map(CString::new).collect();
    let args = args.map_err(|_| "argument with a NUL byte".to_string())?;
    let passed = [&io.stdin_r, &io.out_w, &io.err_w, &ready_w].map(|f| f.as_raw_fd());
    // SAFETY: the monitor is single-threaded, so the child may run
    // arbitrary code after fork.
    let child = match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            // The builder and the container get the default signal mask.
            let _ = SigSet::all().thread_unblock();
            for fd in passed {
                // SAFETY: clearing FD_CLOEXEC on descriptors this process owns.
                unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
            }
            let _ = nix::unistd::execv(&program, &args);
            // SAFETY: _exit ends the forked child without running the
            // monitor's destructors or atexit handlers.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => child,
    };
    let Stdio {
        stdin_r,
        stdin_w,
        out_r,
        out_w,
        err_r,
        err_w,
    } = io;
    // Only the container may hold the write ends, or the pipes never end.
    drop((stdin_r, out_w, err_w, ready_w));
    let line = read_answer(child, File::from(ready_r));
    let pid = match line.as_deref().map(str::trim) {
        Ok(l) => match l.strip_prefix("ok ").map(|p| p.trim().parse::<i32>()) {
            Some(Ok(pid)) => Pid::from_raw(pid),
            _ if l.is_empty() => return Err(builder_ended(child)),
            _ => return Err(l.trim_start_matches("err ").to_string()),
        },
        Err(e) => return Err(e.clone()),
    };
    Ok(Entry::new(req, pid, out_r, err_r, stdin_w))
}

/// The builder's line, once it has written it and exited (the
/// container's init keeps the pipe open until it starts, so the end of
/// the pipe cannot be awaited).
fn read_answer(child: Pid, mut ready: File) -> Result<String, String> {
    let deadline = Instant::now() + BUILD_TIMEOUT;
    let mut got = Vec::new();
    let mut reaped = false;
    let mut buf = [0u8; 4096];
    while !got.contains(&b'\n') {
        if Instant::now() > deadline {
            let _ = kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
            return Err(format!(
                "the builder did not answer in {}s",
                BUILD_TIMEOUT.as_secs()
            ));
        }
        let mut fds = [PollFd::new(ready.as_fd(), PollFlags::POLLIN)];
        let readable = matches!(poll(&mut fds, PollTimeout::from(100u16)), Ok(n) if n > 0);
        if readable {
            match ready.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        } else if reaped {
            // Ended without a line (and no writer can still write one).
            break;
        } else if matches!(
            waitpid(child, Some(WaitPidFlag::WNOHANG)),
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(_)
        ) {
            reaped = true;
        }
    }
    if !reaped {
        let _ = waitpid(child, None);
    }
    let text = String::from_utf8_lossy(&got);
    Ok(text.lines().next().unwrap_or("").to_string())
}

fn builder_ended(child: Pid) -> String {
    format!("the builder {child} ended before creating the container")
}
