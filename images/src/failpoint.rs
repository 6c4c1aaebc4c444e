//! Named crash points above the runtime — the image pull, and the pod
//! sync of the node crate, which depends on this crate — for the
//! crash-consistency tests (`cri/tests/crash_pull.rs`,
//! `tests/tests/crash_sync.rs`): when `PODCTL_CRASH_AT` names the point
//! reached, the process sends itself a SIGKILL (the runtime's own points
//! read the same variable: `podctl_runtime::failpoint`). Unset (always,
//! outside tests), a point costs one load of a cached flag.
//!
//! Points (the step just done when the process dies):
//! - `pod_sync.sandbox_created`: RunPodSandbox answered, the pod worker
//!   has recorded nothing of it;
//! - `pod_sync.container_created`: CreateContainer answered, the
//!   container is not started;
//! - `pull.layer_partial`: a layer's first bytes are in its `.partial`
//!   file and a temporary snapshot is being unpacked;
//! - `pull.layers_committed`: every layer's blob and snapshot committed,
//!   the manifest, config and image record not written.

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
