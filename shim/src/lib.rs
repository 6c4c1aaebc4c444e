//! podctl's container monitor ("shim").
//!
//! youki's libcontainer is called only from the `podctl-shim` binary's
//! short-lived commands: libcontainer forks its caller, changes its working
//! directory, `oom_score_adj` and dumpable flag, so it must not run inside
//! the multi-threaded daemon, nor in a process that lives long.
//!
//! One monitor process runs per pod ([`podmon`]): `podctl-shim create`
//! asks it for a container (starting it when the pod has none); it has
//! `podctl-shim build` make the container with libcontainer, holding the
//! container's stdout/stderr pipes, and then is the child subreaper of the
//! container's init, writes its output to the CRI log file, reaps it and
//! records its exit status atomically in the container directory.
//! SIGUSR1 makes it reopen every log file (rotation). It runs as the small
//! `podctl-shim-watch` binary (no libcontainer), found next to
//! `podctl-shim`, so the long-lived process stays small.
//!
//! This library half holds what the runtime needs to read the shim's state
//! without linking libcontainer calls: file names and the exit record.

pub mod attach;
pub mod logfmt;
pub mod podmon;
pub mod reaper;
pub mod state;

pub use state::{ExecProcess, ExecStatus, ExitRecord, EXIT_FILE, MONITOR_PID_FILE, PID_FILE};

/// Written in the container's directory once its monitor reads the
/// container's output.
pub const WATCHING_FILE: &str = "watching";
