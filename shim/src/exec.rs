//! `podctl-shim exec`: run a process in a running container with
//! libcontainer's tenant builder, copy its stdout/stderr to ours, kill it
//! at the deadline and write its exit status to a file. Short-lived and
//! single-threaded, so libcontainer may fork it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
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
}

pub fn run(a: ExecArgs) -> Result<(), String> {
    let text = std::fs::read(&a.process).map_err(|e| format!("{}: {e}", a.process.display()))?;
    let p: ExecProcess =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", a.process.display()))?;
    // The exec'd process is forked as our child; orphans it leaves come to us.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let devnull = File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    let env: HashMap<String, String> = p
        .env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let pid = ContainerBuilder::new(a.id.clone(), SyscallType::default())
        .with_root_path(&a.root)
        .map_err(|e| format!("state root {}: {e}", a.root.display()))?
        .with_stdin(OwnedFd::from(devnull))
        .with_stdout(out_w)
        .with_stderr(err_w)
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
        .with_detach(true)
        .build()
        .map_err(|e| format!("exec in {}: {e}", a.id))?;
    let deadline = (!a.timeout.is_zero()).then(|| Instant::now() + a.timeout);
    let (code, timed_out) = pump(pid, [out_r, err_r], deadline);
    let st = ExecStatus {
        exit_code: code,
        timed_out,
    };
    let data = serde_json::to_vec(&st).map_err(|e| e.to_string())?;
    write_atomic(&a.status, &data).map_err(|e| format!("{}: {e}", a.status.display()))
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
        while let Ok(st) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            if st == WaitStatus::StillAlive {
                break;
            }
        }
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
