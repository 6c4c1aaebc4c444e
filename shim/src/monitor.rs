//! The monitor process: create the container, copy its output into the
//! CRI log, reap it, record how it ended.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, pipe2, setsid, ForkResult, Pid};

use podctl_shim::logfmt::{now_ns, record, rfc3339_nano, LineSplitter};
use podctl_shim::state::write_atomic;
use podctl_shim::{ExitRecord, MONITOR_PID_FILE, PID_FILE};

pub struct CreateArgs {
    pub id: String,
    pub bundle: PathBuf,
    pub root: PathBuf,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub systemd: bool,
}

/// Fork the monitor, wait until it reports the container created, print
/// the container's PID and return.
pub fn create(args: CreateArgs) -> Result<(), String> {
    let (ready_r, ready_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the shim is single-threaded at this point, so the child may
    // run arbitrary code after fork.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Parent { .. } => {
            drop(ready_w);
            // One line: the container's init inherits the pipe until it
            // execs, so EOF cannot be awaited.
            let mut msg = String::new();
            std::io::BufReader::new(File::from(ready_r))
                .read_line(&mut msg)
                .map_err(|e| format!("reading the monitor's answer: {e}"))?;
            match msg.strip_prefix("ok ") {
                Some(pid) => {
                    println!("{}", pid.trim());
                    Ok(())
                }
                None if msg.is_empty() => {
                    Err("the monitor died before creating the container".into())
                }
                None => Err(msg.trim_start_matches("err ").trim().to_string()),
            }
        }
        ForkResult::Child => {
            drop(ready_r);
            let mut ready = File::from(ready_w);
            let code = match monitor(&args, &mut ready) {
                Ok(()) => 0,
                Err(e) => {
                    let _ = writeln!(ready, "err {}", e.replace('\n', " "));
                    1
                }
            };
            std::process::exit(code);
        }
    }
}

fn monitor(a: &CreateArgs, ready: &mut File) -> Result<(), String> {
    setsid().map_err(|e| format!("setsid: {e}"))?;
    // Orphaned processes of the container are reparented to us.
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "PR_SET_CHILD_SUBREAPER: {}",
            std::io::Error::last_os_error()
        ));
    }
    detach_stdio()?;
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGUSR1,
        Signal::SIGTERM,
        Signal::SIGPIPE,
    ] {
        mask.add(s);
    }
    mask.thread_block()
        .map_err(|e| format!("sigprocmask: {e}"))?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))?;

    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let devnull = File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    let container = ContainerBuilder::new(a.id.clone(), SyscallType::default())
        .with_root_path(&a.root)
        .map_err(|e| format!("state root {}: {e}", a.root.display()))?
        .with_stdin(OwnedFd::from(devnull))
        .with_stdout(out_w)
        .with_stderr(err_w)
        .as_init(&a.bundle)
        .with_systemd(a.systemd)
        .with_detach(true)
        .build()
        .map_err(|e| format!("create container {}: {e}", a.id))?;
    let pid = container
        .pid()
        .ok_or_else(|| format!("container {} has no pid after create", a.id))?;
    write_atomic(&a.dir.join(PID_FILE), pid.to_string().as_bytes())
        .map_err(|e| format!("{}: {e}", a.dir.display()))?;
    write_atomic(
        &a.dir.join(MONITOR_PID_FILE),
        std::process::id().to_string().as_bytes(),
    )
    .map_err(|e| format!("{}: {e}", a.dir.display()))?;
    let _ = writeln!(ready, "ok {pid}");
    drop(std::mem::replace(ready, devnull_file()?));
    watch(a, pid, out_r, err_r, sfd);
    Ok(())
}

fn devnull_file() -> Result<File, String> {
    OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))
}

/// Point stdin/stdout/stderr at /dev/null so the starter's pipes close.
fn detach_stdio() -> Result<(), String> {
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

struct Stream {
    name: &'static str,
    fd: Option<File>,
    lines: LineSplitter,
}

fn open_log(path: &Path) -> Option<File> {
    OpenOptions::new().create(true).append(true).open(path).ok()
}

fn watch(a: &CreateArgs, pid: Pid, out_r: OwnedFd, err_r: OwnedFd, sfd: SignalFd) {
    let mut log = open_log(&a.log);
    let mut streams = [
        Stream {
            name: "stdout",
            fd: Some(File::from(out_r)),
            lines: LineSplitter::default(),
        },
        Stream {
            name: "stderr",
            fd: Some(File::from(err_r)),
            lines: LineSplitter::default(),
        },
    ];
    let mut exit: Option<WaitStatus> = None;
    let mut drain_deadline: Option<i64> = None;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
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
        let ready = match poll(&mut fds, PollTimeout::from(200u16)) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        };
        let revents: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready == 0 {
            continue;
        }
        if revents[0] {
            while let Ok(Some(info)) = sfd.read_signal() {
                match info.ssi_signo as i32 {
                    libc::SIGUSR1 => log = open_log(&a.log),
                    libc::SIGCHLD => reap(pid, &mut exit),
                    _ => {}
                }
            }
            if exit.is_some() && drain_deadline.is_none() {
                drain_deadline = Some(now_ns() + 2_000_000_000);
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
            }
        }
    }
    if exit.is_none() {
        reap(pid, &mut exit);
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
        oom_killed: false,
    };
    let _ = rec.write(&a.dir);
}

/// Reap every exited child; remember the container's status.
fn reap(pid: Pid, exit: &mut Option<WaitStatus>) {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(st) => {
                if st.pid() == Some(pid) {
                    *exit = Some(st);
                }
            }
        }
    }
}
