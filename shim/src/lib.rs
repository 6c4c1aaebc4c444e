//! podctl's per-container monitor ("shim").
//!
//! One `podctl-shim` process runs per container. It is the only place
//! youki's libcontainer is called: libcontainer forks its caller, changes
//! its working directory, `oom_score_adj` and dumpable flag, so it must not
//! run inside the multi-threaded daemon. The shim is single-threaded.
//!
//! `podctl-shim create` forks the monitor into its own session and returns
//! once the container is created; the monitor then outlives whoever
//! started it. It is the child subreaper of the container, holds the
//! container's stdout/stderr pipes, writes them to the CRI log file, reaps
//! the container and records its exit status atomically in the container
//! directory. SIGUSR1 makes it reopen the log file (rotation).
//!
//! After creating the container the monitor re-executes itself as
//! `podctl-shim-watch` (a small binary without libcontainer, found next
//! to `podctl-shim`), so the long-lived process stays small.
//!
//! This library half holds what the runtime needs to read the shim's state
//! without linking libcontainer calls: file names and the exit record.

pub mod attach;
pub mod logfmt;
pub mod reaper;
pub mod state;
pub mod watch;

pub use state::{ExecProcess, ExecStatus, ExitRecord, EXIT_FILE, MONITOR_PID_FILE, PID_FILE};

/// Written in the container's directory once its monitor reads the
/// container's output.
pub const WATCHING_FILE: &str = "watching";
