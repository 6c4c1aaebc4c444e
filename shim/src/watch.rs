//! The monitor, second half (the `podctl-shim-watch` binary, or
//! `podctl-shim watch` when that is missing): a freshly executed, small
//! process that copies the container's stdout/stderr into the CRI
//! log, reopens the log on SIGUSR1, reaps the container (and any orphan
//! reparented to it as subreaper) and records how the container ended.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::logfmt::{now_ns, record, rfc3339_nano, LineSplitter};
use crate::ExitRecord;

/// What the watcher needs: the container's directory, log file, PID and
/// the read ends of its stdout/stderr pipes.
pub struct WatchArgs {
    pub dir: PathBuf,
    pub log: PathBuf,
    pub pid: Pid,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub oom_file: Option<PathBuf>,
    /// An ancestor's `memory.events` (the pod's), read when `oom_file` is
    /// gone at exit: systemd may remove an emptied scope's cgroup before
    /// the watcher reads it.
    pub oom_parent: Option<PathBuf>,
    /// Write end of the container's stdin pipe (CRI `stdin`).
    pub stdin: Option<OwnedFd>,
    /// Close the container's stdin when an attached client closes its own.
    pub stdin_once: bool,
    /// `stdin` is a pty master (resizable; EOF is ^D).
    pub tty: bool,
}

fn signal_set() -> SigSet {
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGUSR1,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGPIPE,
    ] {
        mask.add(s);
    }
    mask
}

/// Block the signals the watcher handles through a signalfd (the mask
/// survives the re-exec, so none is lost in between).
pub fn block_signals() -> Result<(), String> {
    signal_set()
        .thread_block()
        .map_err(|e| format!("sigprocmask: {e}"))
}

/// Take ownership of an inherited descriptor named on the command line.
pub fn inherited_fd(fd: RawFd) -> Result<OwnedFd, String> {
    // SAFETY: F_GETFD only checks that the descriptor is open.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(format!("descriptor {fd} is not open"));
    }
    // SAFETY: the monitor passed us this open descriptor and nothing else
    // in this process owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: setting FD_CLOEXEC on a descriptor we now own.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(owned)
}

struct Stream {
    name: &'static str,
    fd: Option<File>,
    lines: LineSplitter,
}

fn open_log(path: &Path) -> Option<File> {
    OpenOptions::new().create(true).append(true).open(path).ok()
}

/// Watch until the container has exited and its output is drained.
pub fn run(a: WatchArgs) -> Result<(), String> {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    block_signals()?;
    let sfd = SignalFd::with_flags(
        &signal_set(),
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    )
    .map_err(|e| format!("signalfd: {e}"))?;
    let parent_base = a.oom_parent.as_deref().and_then(oom_count);
    let mut log = open_log(&a.log);
    let mut attach =
        match crate::attach::Attach::bind(&a.dir, a.stdin.map(File::from), a.stdin_once, a.tty) {
            Ok(at) => Some(at),
            Err(e) => {
                let _ = std::fs::write(a.dir.join("attach.err"), e.to_string());
                None
            }
        };
    let mut streams = [
        Stream {
            name: "stdout",
            fd: Some(File::from(a.stdout)),
            lines: LineSplitter::default(),
        },
        Stream {
            name: "stderr",
            fd: Some(File::from(a.stderr)),
            lines: LineSplitter::default(),
        },
    ];
    // Tell the starter the output is being read from now on (StartContainer
    // waits for this, so output the container writes at once is logged by
    // the time it is reported running).
    let _ = std::fs::write(a.dir.join(crate::WATCHING_FILE), b"");
    let mut exit: Option<WaitStatus> = None;
    // The container may have ended before the signalfd existed.
    reap(a.pid, &mut exit);
    let mut drain_deadline: Option<i64> = None;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if exit.is_some() && drain_deadline.is_none() {
            // Processes that inherited the pipes may keep them open.
            drain_deadline = Some(now_ns() + 2_000_000_000);
        }
        let open: Vec<usize> = (0..2).filter(|&i| streams[i].fd.is_some()).collect();
        if exit.is_some() && (open.is_empty() || drain_deadline.is_some_and(|d| now_ns() > d)) {
            break;
        }
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        for &i in &open {
            if let Some(f) = &streams[i].fd {
                fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
            }
        }
        let base = fds.len();
        if let Some(at) = &attach {
            for fd in at.fds() {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
            }
        }
        match poll(&mut fds, PollTimeout::from(200u16)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => break,
        }
        let revents: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if let Some(at) = attach.as_mut() {
            at.ready(&revents[base..]);
        }
        if revents[0] {
            while let Ok(Some(info)) = sfd.read_signal() {
                match info.ssi_signo as i32 {
                    libc::SIGUSR1 => log = open_log(&a.log),
                    libc::SIGCHLD => reap(a.pid, &mut exit),
                    _ => {}
                }
            }
        }
        for (k, &i) in open.iter().enumerate() {
            if !revents[k + 1] {
                continue;
            }
            let s = &mut streams[i];
            let n = match s.fd.as_mut().map(|f| f.read(&mut buf)) {
                Some(Ok(n)) => n,
                Some(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                _ => 0,
            };
            let ts = now_ns();
            let name = s.name;
            let mut emit = |body: &[u8], partial: bool| {
                if let Some(l) = log.as_mut() {
                    let _ = l.write_all(&record(ts, name, body, partial));
                }
            };
            if n == 0 {
                s.lines.finish(&mut emit);
                s.fd = None;
            } else {
                s.lines.feed(&buf[..n], &mut emit);
                if let Some(at) = attach.as_mut() {
                    let kind = if i == 0 {
                        crate::attach::STDOUT
                    } else {
                        crate::attach::STDERR
                    };
                    at.broadcast(kind, &buf[..n]);
                }
            }
        }
    }
    // Flush what is left of unterminated lines.
    for s in &mut streams {
        let name = s.name;
        let ts = now_ns();
        s.lines.finish(&mut |body: &[u8], partial: bool| {
            if let Some(l) = log.as_mut() {
                let _ = l.write_all(&record(ts, name, body, partial));
            }
        });
    }
    let (exit_code, signal) = match exit {
        Some(WaitStatus::Exited(_, c)) => (c, None),
        Some(WaitStatus::Signaled(_, s, _)) => (128 + s as i32, Some(s as i32)),
        _ => (255, None),
    };
    let ns = now_ns();
    let rec = ExitRecord {
        exit_code,
        signal,
        finished_at: rfc3339_nano(ns),
        finished_at_ns: ns,
        oom_killed: match a.oom_file.as_deref().and_then(oom_count) {
            Some(n) => n > 0,
            // The scope's cgroup is gone: a SIGKILL while the pod's
            // counter rose is taken as this container's OOM kill.
            None => {
                signal == Some(Signal::SIGKILL as i32)
                    && matches!(
                        (parent_base, a.oom_parent.as_deref().and_then(oom_count)),
                        (Some(b), Some(n)) if n > b
                    )
            }
        },
        reason: None,
        message: None,
    };
    rec.write(&a.dir)
        .map_err(|e| format!("{}: {e}", a.dir.display()))
}

/// The cgroup's `oom_kill` counter, `None` when the file is unreadable.
fn oom_count(file: &Path) -> Option<u64> {
    std::fs::read_to_string(file).ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse::<u64>().ok())
    })
}

/// Reap every exited child; remember the container's status.
fn reap(pid: Pid, exit: &mut Option<WaitStatus>) {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return,
            Err(_) => {
                // No children: if the container is gone without being
                // reaped by us, its status is lost.
                if exit.is_none() && !Path::new(&format!("/proc/{pid}")).exists() {
                    *exit = Some(WaitStatus::Exited(pid, 255));
                }
                return;
            }
            Ok(st) => {
                if st.pid() == Some(pid) {
                    *exit = Some(st);
                }
            }
        }
    }
}

/// Parse `--dir D --log F --pid N --stdout-fd N --stderr-fd N [--oom-file F]
/// [--oom-parent F] [--stdin-fd N] [--stdin-once 1]`.
pub fn parse_args(raw: &[String]) -> Result<WatchArgs, String> {
    let mut v = std::collections::HashMap::new();
    for pair in raw.chunks(2) {
        match pair {
            [k, val] if k.starts_with("--") => {
                v.insert(k.trim_start_matches("--").to_string(), val.clone());
            }
            _ => return Err(format!("bad arguments {pair:?}")),
        }
    }
    let get = |k: &str| v.get(k).cloned().ok_or_else(|| format!("missing --{k}"));
    let num =
        |k: &str| -> Result<i32, String> { get(k)?.parse().map_err(|e| format!("--{k}: {e}")) };
    Ok(WatchArgs {
        dir: get("dir")?.into(),
        log: get("log")?.into(),
        pid: Pid::from_raw(num("pid")?),
        stdout: inherited_fd(num("stdout-fd")?)?,
        stderr: inherited_fd(num("stderr-fd")?)?,
        oom_file: v.get("oom-file").map(PathBuf::from),
        oom_parent: v.get("oom-parent").map(PathBuf::from),
        stdin: match v.get("stdin-fd") {
            Some(fd) => Some(inherited_fd(
                fd.parse().map_err(|e| format!("--stdin-fd: {e}"))?,
            )?),
            None => None,
        },
        stdin_once: v.get("stdin-once").is_some_and(|x| x == "1"),
        tty: v.get("tty").is_some_and(|x| x == "1"),
    })
}
