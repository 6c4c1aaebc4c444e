//! The pause process's long life: sleep on signals, reap children, exit
//! on SIGTERM, SIGINT or SIGHUP. In the library so that the small
//! `podctl-shim-watch` binary can run it (`podctl-shim-watch pause`, what
//! `podctl-shim pause` executes once the pod's namespaces exist): the
//! process that lives as long as the pod maps no libcontainer.

use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// The argument of `podctl-shim-watch` that runs [`run`].
pub const PAUSE_MODE: &str = "pause";

/// Sleep on signals: reap children, exit on TERM/INT/HUP.
pub fn run() -> ! {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        set.add(s);
    }
    let _ = set.thread_block();
    // Children that ended before the signals were blocked sent their
    // SIGCHLD to no one: reap once now.
    reap();
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => reap(),
            Ok(_) => std::process::exit(0),
            Err(_) => {}
        }
    }
}

fn reap() {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => {}
        }
    }
}
