//! The pod's pause process: owns the pod's new network, IPC and UTS
//! namespaces, reaps zombies, and waits to be told to stop. Built into the
//! shim binary, so a pod never needs a pause image.

use std::fs::File;
use std::io::{BufRead, Write};
use std::path::PathBuf;

use nix::fcntl::OFlag;
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{fork, pipe2, sethostname, setsid, ForkResult, Pid};

use podctl_shim::state::write_atomic;

pub struct PauseArgs {
    pub dir: PathBuf,
    pub hostname: String,
    /// Namespaces to create: any of "network", "ipc", "uts", "pid".
    pub new_namespaces: Vec<String>,
    /// A user namespace of the pod's own, created first (so it owns the
    /// others), with these UID and GID maps (`/proc/<pid>/uid_map` lines),
    /// written by the parent once the pause process has made it.
    pub id_maps: Option<(String, String)>,
}

/// Fork the pause process; print its PID once its namespaces exist.
pub fn start(a: PauseArgs) -> Result<(), String> {
    let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: single-threaded process; the child only runs our own code.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Parent { .. } => {
            drop(w);
            let mut line = String::new();
            std::io::BufReader::new(File::from(r))
                .read_line(&mut line)
                .map_err(|e| format!("reading from pause: {e}"))?;
            match line.strip_prefix("ok ") {
                Some(pid) => {
                    let pid = pid.trim();
                    if let Some((uids, gids)) = &a.id_maps {
                        if let Err(e) = write_id_maps(pid, uids, gids) {
                            if let Ok(p) = pid.parse() {
                                let _ = nix::sys::signal::kill(
                                    Pid::from_raw(p),
                                    nix::sys::signal::Signal::SIGKILL,
                                );
                            }
                            return Err(e);
                        }
                    }
                    println!("{pid}");
                    Ok(())
                }
                None if line.is_empty() => Err("pause died during setup".into()),
                None => Err(line.trim_start_matches("err ").trim().to_string()),
            }
        }
        ForkResult::Child => {
            drop(r);
            let mut w = File::from(w);
            if let Err(e) = setup(&a) {
                let _ = writeln!(w, "err {e}");
                std::process::exit(1);
            }
            let _ = writeln!(w, "ok {}", host_pid());
            drop(w);
            run();
        }
    }
}

/// Write the pod's user namespace maps; the pause process has made the
/// namespace and waits for nothing (it needs no mapped ID to sleep).
fn write_id_maps(pid: &str, uids: &str, gids: &str) -> Result<(), String> {
    for (file, map) in [("uid_map", uids), ("gid_map", gids)] {
        let p = format!("/proc/{pid}/{file}");
        std::fs::write(&p, map.as_bytes()).map_err(|e| format!("writing {map:?} to {p}: {e}"))?;
    }
    Ok(())
}

fn setup(a: &PauseArgs) -> Result<(), String> {
    setsid().map_err(|e| format!("setsid: {e}"))?;
    let mut flags = CloneFlags::empty();
    if a.id_maps.is_some() {
        // The kernel makes the user namespace first, so it owns the rest.
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    for ns in &a.new_namespaces {
        flags |= match ns.as_str() {
            "network" => CloneFlags::CLONE_NEWNET,
            "ipc" => CloneFlags::CLONE_NEWIPC,
            "uts" => CloneFlags::CLONE_NEWUTS,
            "pid" => CloneFlags::CLONE_NEWPID,
            other => return Err(format!("unknown namespace {other:?}")),
        };
    }
    unshare(flags).map_err(|e| format!("unshare: {e}"))?;
    if flags.contains(CloneFlags::CLONE_NEWPID) {
        // unshare(CLONE_NEWPID) only applies to children: fork the real
        // pause, PID 1 of the new namespace; this process exits.
        // SAFETY: single-threaded process.
        match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
            ForkResult::Parent { .. } => std::process::exit(0),
            ForkResult::Child => {}
        }
    }
    if flags.contains(CloneFlags::CLONE_NEWUTS) && !a.hostname.is_empty() {
        sethostname(&a.hostname).map_err(|e| format!("sethostname {:?}: {e}", a.hostname))?;
    }
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))?;
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors, which we own.
        unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) };
    }
    write_atomic(&a.dir.join("pause.pid"), host_pid().to_string().as_bytes())
        .map_err(|e| format!("{}: {e}", a.dir.display()))
}

/// Live as the pod's pause process: as the small watcher binary next to
/// this one when it is there (the long-lived process then maps no
/// libcontainer), else in this process.
fn run() -> ! {
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_default();
    let small = exe.with_file_name("podctl-shim-watch");
    if let (Ok(path), Ok(argv0), Ok(mode)) = (
        std::ffi::CString::new(small.as_os_str().as_encoded_bytes()),
        std::ffi::CString::new("podctl-shim-watch"),
        std::ffi::CString::new(podctl_shim::reaper::PAUSE_MODE),
    ) {
        if small.is_file() {
            // Returns only on failure; the pod is then paused from here.
            let _ = nix::unistd::execv(&path, &[argv0, mode]);
        }
    }
    podctl_shim::reaper::run()
}

/// Our PID as the host sees it: inside a new PID namespace getpid() is 1,
/// but /proc is still the host's.
fn host_pid() -> u32 {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(std::process::id)
}
