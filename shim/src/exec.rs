//! `podctl-shim exec`: run a process in a running container with
//! libcontainer's tenant builder, copy its stdout/stderr to ours, kill it
//! at the deadline and write its exit status to a file. Short-lived and
//! single-threaded, so libcontainer may fork it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::seccomp;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{pipe2, Pid};
use oci_spec::runtime::{LinuxSeccomp, PosixRlimit, PosixRlimitType, Spec};

use podctl_shim::state::write_atomic;
use podctl_shim::{ExecProcess, ExecStatus};

pub struct ExecArgs {
    pub id: String,
    pub root: PathBuf,
    pub process: PathBuf,
    pub status: PathBuf,
    /// Zero: no timeout.
    pub timeout: Duration,
    /// Give the process our stdin (else /dev/null).
    pub stdin: bool,
    /// Run the process on a new pseudo-terminal; its output comes on our
    /// stdout, our stdin goes to it.
    pub tty: bool,
    /// A FIFO of `WIDTH HEIGHT` lines resizing the terminal.
    pub resize: Option<PathBuf>,
}

pub fn run(a: ExecArgs) -> Result<(), String> {
    let text = std::fs::read(&a.process).map_err(|e| format!("{}: {e}", a.process.display()))?;
    let p: ExecProcess =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", a.process.display()))?;
    join_user_namespace(&a)?;
    // The exec'd process is forked as our child; orphans it leaves come to us.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if a.tty {
        return run_tty(&a, &p);
    }
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let stdin_fd = if a.stdin {
        std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| format!("stdin: {e}"))?
    } else {
        OwnedFd::from(File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?)
    };
    let pid = spawn(&a, &p, stdin_fd, out_w, err_w)?;
    let deadline = (!a.timeout.is_zero()).then(|| Instant::now() + a.timeout);
    let (code, timed_out) = pump(pid, [out_r, err_r], deadline);
    let st = ExecStatus {
        exit_code: code,
        timed_out,
    };
    let data = serde_json::to_vec(&st).map_err(|e| e.to_string())?;
    write_atomic(&a.status, &data).map_err(|e| format!("{}: {e}", a.status.display()))
}

/// Enter the container's user namespace when it has one of its own (a
/// pod's, `hostUsers: false`): libcontainer's tenant builder joins every
/// namespace of the container but that one, and the process would run as
/// the host's root. Joined here, before libcontainer forks, the process
/// is the pod's root (an unprivileged host user) like the container's own.
/// We keep our host user ID, so our files stay ours.
fn join_user_namespace(a: &ExecArgs) -> Result<(), String> {
    let dir = a.root.join(&a.id);
    let c = libcontainer::container::Container::load(dir.clone())
        .map_err(|e| format!("load {}: {e}", dir.display()))?;
    let Some(pid) = c.pid() else {
        return Err(format!("exec in {}: the container has no process", a.id));
    };
    let theirs = format!("/proc/{pid}/ns/user");
    let same = match (
        std::fs::read_link(&theirs),
        std::fs::read_link("/proc/self/ns/user"),
    ) {
        (Ok(t), Ok(o)) => t == o,
        (Err(e), _) | (_, Err(e)) => return Err(format!("exec in {}: {theirs}: {e}", a.id)),
    };
    if same {
        return Ok(());
    }
    let ns = File::open(&theirs).map_err(|e| format!("exec in {}: {theirs}: {e}", a.id))?;
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWUSER)
        .map_err(|e| format!("exec in {}: joining {theirs}: {e}", a.id))
}

/// Start `p` in the container with the given stdio; its PID.
fn spawn(
    a: &ExecArgs,
    p: &ExecProcess,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> Result<Pid, String> {
    let env: HashMap<String, String> = p
        .env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ContainerBuilder::new(a.id.clone(), SyscallType::default())
        .with_root_path(&a.root)
        .map_err(|e| format!("state root {}: {e}", a.root.display()))?
        .with_stdin(stdin)
        .with_stdout(stdout)
        .with_stderr(stderr)
        .with_executor(ConfinedExecutor {
            profile: p.seccomp.clone(),
            rlimits: p.rlimits.clone(),
        })
        .as_tenant()
        .with_container_args(p.args.clone())
        .with_env(env)
        .with_cwd(p.cwd.clone())
        .with_user(Some(p.uid))
        .with_group(Some(p.gid))
        .with_additional_gids(p.additional_gids.clone())
        .with_apparmor(p.apparmor.clone())
        .with_detach(true)
        .build()
        .map_err(|e| format!("exec in {}: {e}", a.id))
}

/// The process on a new pty: master ↔ our stdin/stdout, resizes from the
/// FIFO, until it exits.
fn run_tty(a: &ExecArgs, p: &ExecProcess) -> Result<(), String> {
    let pty = nix::pty::openpty(None, None).map_err(|e| format!("openpty: {e}"))?;
    let master = File::from(pty.master);
    let dup = |f: &OwnedFd| f.try_clone().map_err(|e| format!("dup: {e}"));
    let slave = pty.slave;
    let pid = spawn(a, p, dup(&slave)?, dup(&slave)?, dup(&slave)?)?;
    drop(slave);
    let resize = a.resize.as_ref().and_then(|f| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(f)
            .ok()
    });
    let deadline = (!a.timeout.is_zero()).then(|| Instant::now() + a.timeout);
    let (code, timed_out) = pump_tty(pid, master, resize, a.stdin, deadline);
    let st = ExecStatus {
        exit_code: code,
        timed_out,
    };
    let data = serde_json::to_vec(&st).map_err(|e| e.to_string())?;
    write_atomic(&a.status, &data).map_err(|e| format!("{}: {e}", a.status.display()))
}

fn set_size(master: &File, line: &str) {
    let mut it = line
        .split_whitespace()
        .filter_map(|v| v.parse::<u16>().ok());
    if let (Some(w), Some(h)) = (it.next(), it.next()) {
        let ws = libc::winsize {
            ws_row: h,
            ws_col: w,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from the pointer; the master
        // descriptor is open for the duration of the call.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
}

fn pump_tty(
    pid: Pid,
    mut master: File,
    mut resize: Option<File>,
    stdin: bool,
    deadline: Option<Instant>,
) -> (i32, bool) {
    let mut exit: Option<i32> = None;
    let mut timed_out = false;
    let mut input = stdin.then(std::io::stdin);
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending = String::new();
    let mut out = std::io::stdout();
    let mut master_open = true;
    loop {
        if exit.is_none() {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, c)) => exit = Some(c),
                Ok(WaitStatus::Signaled(_, s, _)) => exit = Some(128 + s as i32),
                Ok(_) => {}
                Err(_) => exit = Some(255),
            }
        }
        reap_others(pid, &mut exit);
        if exit.is_some() && !master_open {
            break;
        }
        if exit.is_none() && deadline.is_some_and(|d| Instant::now() > d) && !timed_out {
            timed_out = true;
            let _ = kill(pid, Signal::SIGKILL);
        }
        let mut fds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        let in_fd = input.as_ref().map(|i| i.as_fd());
        if let Some(fd) = in_fd {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        let rz = resize.as_ref().map(|r| r.as_fd());
        if let Some(fd) = rz {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        if poll(&mut fds, PollTimeout::from(50u16)).unwrap_or(0) <= 0 {
            if exit.is_some() {
                // Output is drained once the master has nothing more.
                master_open = false;
            }
            continue;
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] {
            match master.read(&mut buf) {
                Ok(n) if n > 0 => {
                    let _ = out.write_all(&buf[..n]);
                    let _ = out.flush();
                }
                // EIO once the last slave holder is gone.
                _ => master_open = false,
            }
        }
        let mut k = 1;
        if input.is_some() {
            if ready[k] {
                let n = input.as_mut().map(|i| i.read(&mut buf));
                match n {
                    Some(Ok(n)) if n > 0 => {
                        let _ = master.write_all(&buf[..n]);
                    }
                    _ => {
                        // Client closed stdin: send EOF (^D) to the terminal.
                        let _ = master.write_all(&[4]);
                        input = None;
                    }
                }
            }
            k += 1;
        }
        if resize.is_some() && ready.get(k).copied().unwrap_or(false) {
            let n = resize.as_mut().map(|r| r.read(&mut buf));
            if let Some(Ok(n)) = n {
                pending.push_str(&String::from_utf8_lossy(&buf[..n]));
                while let Some(i) = pending.find('\n') {
                    let line: String = pending.drain(..=i).collect();
                    set_size(&master, &line);
                }
            }
        }
    }
    (exit.unwrap_or(255), timed_out)
}

/// The default executor, with the container's rlimits set and seccomp
/// profile loaded right before the exec (after the identity change;
/// no_new_privs is set).
#[derive(Clone)]
struct ConfinedExecutor {
    profile: Option<LinuxSeccomp>,
    rlimits: Vec<PosixRlimit>,
}

fn resource(t: PosixRlimitType) -> Resource {
    use PosixRlimitType as T;
    match t {
        T::RlimitCpu => Resource::RLIMIT_CPU,
        T::RlimitFsize => Resource::RLIMIT_FSIZE,
        T::RlimitData => Resource::RLIMIT_DATA,
        T::RlimitStack => Resource::RLIMIT_STACK,
        T::RlimitCore => Resource::RLIMIT_CORE,
        T::RlimitRss => Resource::RLIMIT_RSS,
        T::RlimitNproc => Resource::RLIMIT_NPROC,
        T::RlimitNofile => Resource::RLIMIT_NOFILE,
        T::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        T::RlimitAs => Resource::RLIMIT_AS,
        T::RlimitLocks => Resource::RLIMIT_LOCKS,
        T::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        T::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        T::RlimitNice => Resource::RLIMIT_NICE,
        T::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        T::RlimitRttime => Resource::RLIMIT_RTTIME,
    }
}

impl Executor for ConfinedExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        for r in &self.rlimits {
            setrlimit(resource(r.typ()), r.soft(), r.hard())
                .map_err(|e| ExecutorError::Other(format!("setrlimit {:?}: {e}", r.typ())))?;
        }
        if let Some(profile) = &self.profile {
            seccomp::initialize_seccomp(profile)
                .map_err(|e| ExecutorError::Other(format!("seccomp: {e}")))?;
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// Copy output until the process exited and the pipes are drained (or a
/// short grace after exit, if something it started keeps them open).
fn pump(pid: Pid, fds: [OwnedFd; 2], deadline: Option<Instant>) -> (i32, bool) {
    let mut files: [Option<File>; 2] = fds.map(|f| Some(File::from(f)));
    let mut exit: Option<i32> = None;
    let mut timed_out = false;
    let mut grace: Option<Instant> = None;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if exit.is_none() {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, c)) => exit = Some(c),
                Ok(WaitStatus::Signaled(_, s, _)) => exit = Some(128 + s as i32),
                Ok(_) => {}
                Err(_) => exit = Some(255),
            }
        }
        // Reap orphans reparented to us.
        reap_others(pid, &mut exit);
        if exit.is_some() {
            let g = *grace.get_or_insert_with(|| Instant::now() + Duration::from_millis(500));
            if files.iter().all(Option::is_none) || Instant::now() > g {
                break;
            }
        } else if deadline.is_some_and(|d| Instant::now() > d) && !timed_out {
            timed_out = true;
            let _ = kill(pid, Signal::SIGKILL);
        }
        let mut polls: Vec<PollFd> = Vec::new();
        let mut idx = Vec::new();
        for (i, f) in files.iter().enumerate() {
            if let Some(f) = f {
                polls.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
                idx.push(i);
            }
        }
        if polls.is_empty() {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        if poll(&mut polls, PollTimeout::from(20u16)).unwrap_or(0) <= 0 {
            continue;
        }
        let ready: Vec<bool> = polls
            .iter()
            .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(polls);
        for (k, i) in idx.into_iter().enumerate() {
            if !ready[k] {
                continue;
            }
            let n = files[i].as_mut().map(|f| f.read(&mut buf));
            match n {
                Some(Ok(n)) if n > 0 => {
                    let _ = if i == 0 {
                        std::io::stdout().write_all(&buf[..n])
                    } else {
                        std::io::stderr().write_all(&buf[..n])
                    };
                }
                Some(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                _ => files[i] = None,
            }
        }
    }
    let _ = std::io::stdout().flush();
    (exit.unwrap_or(255), timed_out)
}

/// Reap whatever else has exited (an exec'd process's own children are
/// reparented here), keeping `pid`'s status should it be among them: a
/// process reaped here and not recorded read as exit code 255.
fn reap_others(pid: Pid, exit: &mut Option<i32>) {
    while let Ok(st) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        match st {
            WaitStatus::StillAlive => break,
            WaitStatus::Exited(p, c) if p == pid => *exit = exit.or(Some(c)),
            WaitStatus::Signaled(p, s, _) if p == pid => *exit = exit.or(Some(128 + s as i32)),
            _ => {}
        }
    }
}
