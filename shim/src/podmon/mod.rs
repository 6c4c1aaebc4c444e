//! The pod monitor: one process per pod (the `podctl-shim-watch monitor`
//! mode of the small binary, or `podctl-shim monitor` when that is
//! missing) holds every container of the pod. It is child subreaper of
//! their init processes, reads their stdout/stderr into CRI logs, serves
//! their attach sockets, reaps them and writes each one's exit record.
//! It never calls libcontainer: for each container it is asked for (on
//! `<pod dir>/monitor.sock`, by `podctl-shim create`), it executes a
//! short-lived `podctl-shim build` ([`builder`]). It runs in its own
//! session, outlives the daemon, reopens every log on SIGUSR1, and exits
//! once it holds no container and no request can be on its way.

pub mod builder;
pub mod entry;
pub mod request;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::state::write_atomic;
use entry::Entry;
use request::CreateRequest;

/// The monitor's socket in the pod's directory.
pub const SOCKET: &str = "monitor.sock";
/// Held by whoever asks the monitor, from before connecting until the
/// answer; taken by the monitor before it exits.
pub const LOCK: &str = "monitor.lock";
/// The mode argument of the monitor program.
pub const MODE: &str = "monitor";
/// A request line longer than this is refused.
const MAX_REQUEST: u64 = 64 * 1024;

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

/// Block the signals the monitor handles through a signalfd (the mask
/// survives exec, so none is lost before the signalfd exists).
pub fn block_signals() -> Result<(), String> {
    signal_set()
        .thread_block()
        .map_err(|e| format!("sigprocmask: {e}"))
}

/// Point stdin/stdout/stderr at /dev/null (the starter's pipes close).
pub fn detach_stdio() -> Result<(), String> {
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))?;
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors, which we own.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(format!("dup2: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// What the monitor is started with.
pub struct MonitorArgs {
    /// The pod's directory: socket and lock.
    pub dir: PathBuf,
    /// The bound, listening socket.
    pub listener: OwnedFd,
}

/// Parse `--dir D --listen-fd N`.
pub fn parse_args(raw: &[String]) -> Result<MonitorArgs, String> {
    let (mut dir, mut fd) = (None, None);
    for pair in raw.chunks(2) {
        match pair {
            [k, v] if k == "--dir" => dir = Some(PathBuf::from(v)),
            [k, v] if k == "--listen-fd" => {
                fd = Some(v.parse().map_err(|e| format!("--listen-fd: {e}"))?)
            }
            _ => return Err(format!("bad arguments {pair:?}")),
        }
    }
    Ok(MonitorArgs {
        dir: dir.ok_or("missing --dir")?,
        listener: request::inherited_fd(fd.ok_or("missing --listen-fd")?)?,
    })
}

/// Serve until no container is left and no request can come.
pub fn run(a: MonitorArgs) -> Result<(), String> {
    // Orphaned processes of the containers are reparented to us.
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "PR_SET_CHILD_SUBREAPER: {}",
            std::io::Error::last_os_error()
        ));
    }
    block_signals()?;
    let sfd = SignalFd::with_flags(
        &signal_set(),
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    )
    .map_err(|e| format!("signalfd: {e}"))?;
    let listener = UnixListener::from(a.listener);
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("listener: {e}"))?;
    // Our own open file description: the asker's lock is not ours.
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(a.dir.join(LOCK))
        .map_err(|e| format!("{}: {e}", a.dir.join(LOCK).display()))?;
    let _ = std::env::set_current_dir("/");
    let mut entries: Vec<Entry> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if entries.is_empty() && may_exit(&lock, &listener) {
            let _ = std::fs::remove_file(a.dir.join(SOCKET));
            return Ok(());
        }
        let mut fds = vec![
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
        ];
        let mut spans = Vec::with_capacity(entries.len());
        for e in &entries {
            let start = fds.len();
            fds.extend(
                e.fds()
                    .into_iter()
                    .map(|f| PollFd::new(f, PollFlags::POLLIN)),
            );
            spans.push(start..fds.len());
        }
        match poll(&mut fds, PollTimeout::from(200u16)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        let revents: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if revents[0] {
            while let Ok(Some(info)) = sfd.read_signal() {
                match info.ssi_signo as i32 {
                    libc::SIGUSR1 => entries.iter_mut().for_each(Entry::reopen_log),
                    libc::SIGCHLD => reap(&mut entries),
                    _ => {}
                }
            }
        }
        for (e, span) in entries.iter_mut().zip(spans) {
            e.ready(&revents[span], &mut buf);
        }
        if revents[1] {
            while let Ok((conn, _)) = listener.accept() {
                serve(conn, &mut entries);
            }
        }
        let mut i = 0;
        while i < entries.len() {
            if entries[i].done() {
                entries.swap_remove(i).finish();
            } else {
                i += 1;
            }
        }
    }
}

/// With nothing to watch: exit if no asker holds the lock (an asker
/// connects only while holding it, so none is on its way).
fn may_exit(lock: &File, listener: &UnixListener) -> bool {
    // SAFETY: flock on a descriptor `lock` keeps open.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return false;
    }
    // A connection queued by an asker that died without an answer.
    while listener.accept().is_ok() {}
    // Kept until the process exits, so no asker starts in between.
    true
}

/// Answer one request.
fn serve(conn: UnixStream, entries: &mut Vec<Entry>) {
    if !crate::attach::peer_is_root(&conn)
        || conn.set_nonblocking(false).is_err()
        || conn
            .set_read_timeout(Some(Duration::from_secs(10)))
            .is_err()
    {
        return;
    }
    let mut line = String::new();
    if BufReader::new((&conn).take(MAX_REQUEST))
        .read_line(&mut line)
        .is_err()
    {
        return;
    }
    let result = serde_json::from_str::<CreateRequest>(&line)
        .map_err(|e| format!("bad request: {e}"))
        .and_then(|req| {
            let e = builder::create(&req)?;
            let pid = e.pid.as_raw();
            record(&req.dir, pid)?;
            entries.push(e);
            Ok(pid)
        });
    // The container may have ended already.
    reap(entries);
    let _ = (&conn).write_all(request::answer(&result).as_bytes());
}

/// The container's and the monitor's PIDs, and the marker that its
/// output is read from now on (StartContainer waits for it).
fn record(dir: &Path, pid: i32) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", dir.display());
    write_atomic(&dir.join(crate::PID_FILE), pid.to_string().as_bytes()).map_err(err)?;
    write_atomic(
        &dir.join(crate::MONITOR_PID_FILE),
        std::process::id().to_string().as_bytes(),
    )
    .map_err(err)?;
    std::fs::write(dir.join(crate::WATCHING_FILE), b"").map_err(err)
}

/// Reap every exited child; an init's status goes to its entry.
fn reap(entries: &mut [Entry]) {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return,
            Ok(st) => {
                if let Some(e) = entries.iter_mut().find(|e| Some(e.pid) == st.pid()) {
                    e.exited(st);
                }
            }
            Err(_) => {
                // No children: an init gone without being reaped by us
                // has lost its status.
                for e in entries.iter_mut().filter(|e| !e.has_exited()) {
                    if !Path::new(&format!("/proc/{}", e.pid)).exists() {
                        e.exited(WaitStatus::Exited(e.pid, 255));
                    }
                }
                return;
            }
        }
    }
}
