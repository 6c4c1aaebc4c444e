//! Named crash points for the crash-consistency tests: when the process's
//! `PODCTL_CRASH_AT` names the point reached, the process sends itself a
//! SIGKILL there (no unwinding, no handler, no core dump: a core of a
//! large process takes minutes where systemd-coredump collects it). Unset
//! (always, outside tests), a point costs one load of a cached flag.
//!
//! Points (the step just done when the process dies):
//! - `run_sandbox.pause_started`: pause runs, its network namespace is not
//!   pinned yet;
//! - `run_sandbox.network_attached`: CNI ADD done, its result not saved;
//! - `run_sandbox.runtime_created` (CRI): the runtime's sandbox is
//!   complete, the CRI record is not written;
//! - `start_container.launched`: monitor and init made, not started;
//! - `start_container.started`: the user's process started, the start
//!   time not recorded;
//! - `stop_sandbox.network_detached`: CNI DEL done, pause not killed, the
//!   sandbox not marked stopped;
//! - `remove_sandbox.containers_removed`: the pod's containers removed,
//!   its namespace pin and state not;
//! - `remove_pod_sandbox.runtime_removed` (CRI): the runtime's sandbox
//!   removed, the CRI record not;
//! - `create_container.rootfs_mounted`: the runtime mounted the overlay,
//!   no `meta.json` yet;
//! - `create_container.runtime_created`: the runtime's container exists,
//!   the CRI record does not;
//! - `remove_container.retired`: the container killed and out of the
//!   listings (its state directory under `removing/`), not yet deleted.

use std::sync::OnceLock;

/// The environment variable naming the point to die at.
pub const ENV: &str = "PODCTL_CRASH_AT";

/// Kill the process if `PODCTL_CRASH_AT` is `point`.
pub fn hit(point: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var(ENV).ok().filter(|v| !v.is_empty()));
    if at.as_deref() == Some(point) {
        tracing::error!(point, "crash point reached: SIGKILL ({ENV})");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        std::process::abort();
    }
}
