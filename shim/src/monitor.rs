//! The monitor process, first half: leave the caller's session, create
//! the container with libcontainer holding its stdio pipes, report its PID,
//! then re-execute into the small `watch` half (see `watch.rs`), which
//! drops libcontainer's memory.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;
use nix::unistd::{fork, pipe2, setsid, ForkResult, Pid};

use podctl_shim::state::write_atomic;
use podctl_shim::{MONITOR_PID_FILE, PID_FILE};

pub struct CreateArgs {
    pub id: String,
    pub bundle: PathBuf,
    pub root: PathBuf,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub systemd: bool,
    pub oom_file: Option<PathBuf>,
    /// The pod's `memory.events`, the fallback when `oom_file` is gone.
    pub oom_parent: Option<PathBuf>,
    /// Keep a pipe to the container's stdin for attach (CRI `stdin`).
    pub stdin: bool,
    pub stdin_once: bool,
    /// Give the container a pseudo-terminal (CRI `tty`).
    pub tty: bool,
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
    // Signals are blocked only after the container is forked: libcontainer
    // does not reset the signal mask, and the container must not inherit it.
    let (stdin_r, stdin_w, out_r, out_w, err_r, err_w) = if a.tty {
        // A terminal: the pty's slave is the container's stdio; the
        // watcher reads output from the master and writes stdin to it.
        let pty = nix::pty::openpty(None, None).map_err(|e| format!("openpty: {e}"))?;
        let dup = |f: &OwnedFd| f.try_clone().map_err(|e| format!("dup: {e}"));
        for fd in [pty.master.as_raw_fd(), pty.slave.as_raw_fd()] {
            // SAFETY: setting FD_CLOEXEC on descriptors we own.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        drop(err_w);
        let stdin_w = dup(&pty.master)?;
        (
            dup(&pty.slave)?,
            Some(stdin_w),
            pty.master,
            dup(&pty.slave)?,
            err_r,
            pty.slave,
        )
    } else {
        let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        let (stdin_r, stdin_w) = if a.stdin {
            let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
            (r, Some(w))
        } else {
            let devnull = File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
            (OwnedFd::from(devnull), None)
        };
        (stdin_r, stdin_w, out_r, out_w, err_r, err_w)
    };
    let container = ContainerBuilder::new(a.id.clone(), SyscallType::default())
        .with_root_path(&a.root)
        .map_err(|e| format!("state root {}: {e}", a.root.display()))?
        .with_stdin(stdin_r)
        .with_stdout(out_w)
        .with_stderr(err_w)
        .as_init(&a.bundle)
        .with_systemd(a.systemd)
        .with_detach(true)
        .build()
        .map_err(|e| format!("create container {}: {e}{}", a.id, crate::diag::cause()))?;
    let pid = container
        .pid()
        .ok_or_else(|| format!("container {} has no pid after create", a.id))?;
    drop(container);
    podctl_shim::watch::block_signals()?;
    write_atomic(&a.dir.join(PID_FILE), pid.to_string().as_bytes())
        .map_err(|e| format!("{}: {e}", a.dir.display()))?;
    write_atomic(
        &a.dir.join(MONITOR_PID_FILE),
        std::process::id().to_string().as_bytes(),
    )
    .map_err(|e| format!("{}: {e}", a.dir.display()))?;
    // libcontainer changed our working directory; the watcher needs none.
    let _ = std::env::set_current_dir("/");
    let _ = writeln!(ready, "ok {pid}");
    // Re-execute as the watcher. On failure, watch in this process.
    let err = reexec_watch(a, pid, &out_r, &err_r, stdin_w.as_ref());
    let _ = write_atomic(&a.dir.join("monitor.err"), err.as_bytes());
    podctl_shim::watch::run(podctl_shim::watch::WatchArgs {
        dir: a.dir.clone(),
        log: a.log.clone(),
        pid,
        stdout: out_r,
        stderr: err_r,
        oom_file: a.oom_file.clone(),
        oom_parent: a.oom_parent.clone(),
        stdin: stdin_w,
        stdin_once: a.stdin_once,
        tty: a.tty,
    })
}

/// `execv(/proc/self/exe, watch ...)` with the pipes' fds inherited.
fn reexec_watch(
    a: &CreateArgs,
    pid: Pid,
    out_r: &OwnedFd,
    err_r: &OwnedFd,
    stdin_w: Option<&OwnedFd>,
) -> String {
    let keep = [Some(out_r), Some(err_r), stdin_w];
    for fd in keep.iter().flatten().map(|f| f.as_raw_fd()) {
        // SAFETY: clearing FD_CLOEXEC on descriptors we own.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
            return format!("fcntl: {}", std::io::Error::last_os_error());
        }
    }
    // The small watcher binary next to us, else our own `watch` mode.
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_default();
    let small = exe.with_file_name("podctl-shim-watch");
    let (path, mut args): (PathBuf, Vec<String>) = if small.is_file() {
        (small, vec!["podctl-shim-watch".into()])
    } else {
        (
            PathBuf::from("/proc/self/exe"),
            vec!["podctl-shim".into(), "watch".into()],
        )
    };
    args.extend([
        "--dir".into(),
        a.dir.display().to_string(),
        "--log".into(),
        a.log.display().to_string(),
        "--pid".into(),
        pid.to_string(),
        "--stdout-fd".into(),
        out_r.as_raw_fd().to_string(),
        "--stderr-fd".into(),
        err_r.as_raw_fd().to_string(),
    ]);
    if let Some(o) = &a.oom_file {
        args.push("--oom-file".into());
        args.push(o.display().to_string());
    }
    if let Some(o) = &a.oom_parent {
        args.push("--oom-parent".into());
        args.push(o.display().to_string());
    }
    if let Some(w) = stdin_w {
        args.extend(["--stdin-fd".into(), w.as_raw_fd().to_string()]);
        if a.stdin_once {
            args.extend(["--stdin-once".into(), "1".into()]);
        }
    }
    if a.tty {
        args.extend(["--tty".into(), "1".into()]);
    }
    let cargs: Result<Vec<CString>, _> = args.into_iter().map(CString::new).collect();
    let Ok(cargs) = cargs else {
        return "argument with a NUL byte".into();
    };
    let Ok(path) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return "watcher path with a NUL byte".into();
    };
    match nix::unistd::execv(&path, &cargs) {
        Ok(never) => match never {},
        Err(e) => format!("execv: {e}"),
    }
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
