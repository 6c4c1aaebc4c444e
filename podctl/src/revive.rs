//! Standalone pods whose supervisor died (killed, OOM, a crash) are not
//! left unsupervised: the next `podctl` command that looks at pods (`run`,
//! `pods`, `ps`, `logs`, `exec`) finds them and starts a new supervisor,
//! which adopts the running sandbox and containers and goes on restarting,
//! probing and writing status. Until it writes a status, `podctl pods`
//! shows the pod's phase as `Unknown` (reason `SupervisorLost`): the last
//! status on disk is stale.
//!
//! A pod is orphaned when a supervisor has run it (`status.json` exists),
//! its last status is not final (Succeeded/Failed), no stop was asked
//! (`stop.json`), and no process holds `supervisor.lock`. Supervisors hold
//! that lock for their whole life, so two commands reviving the same pod
//! at once start one supervisor: the second exits at once.

use std::path::Path;

use k8s_openapi::api::core::v1::Pod;

use crate::pods::PodContext;
use crate::run::phase;
use crate::supervise;

/// The lock file every supervisor holds while it runs.
pub const LOCK: &str = "supervisor.lock";

/// The supervisor lock of the pod in `dir`, taken (held while the file
/// stays open), or `None` when another process holds it.
pub fn try_hold(dir: &Path) -> std::io::Result<Option<std::fs::File>> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK))?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Whether some process holds the supervisor lock of the pod in `dir`.
pub fn supervised(dir: &Path) -> bool {
    if !dir.join(LOCK).exists() {
        // No lock file: no supervisor of this version ever ran; a PID
        // file of a live one still counts.
        return supervise::supervisor_pid(dir).is_some();
    }
    match try_hold(dir) {
        Ok(held) => held.is_none(),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "checking the supervisor lock");
            supervise::supervisor_pid(dir).is_some()
        }
    }
}

/// Whether the pod in `dir`, whose last status is `status`, is left
/// without a supervisor (see the module documentation).
pub fn orphaned(dir: &Path, status: &Pod) -> bool {
    let ph = phase(status);
    ph != "Succeeded" && ph != "Failed" && !dir.join(supervise::STOP).exists() && !supervised(dir)
}

/// If the pod in `dir` (last status `status`) is orphaned, start a
/// supervisor for it; whether one was started.
pub fn revive(ctx: &PodContext, dir: &Path, status: &Pod) -> bool {
    if !orphaned(dir, status) {
        return false;
    }
    let pod = dir
        .file_name()
        .map(|n| n.to_string_lossy().replacen('_', "/", 1))
        .unwrap_or_default();
    match supervise::spawn(ctx, dir) {
        Ok(()) => {
            eprintln!("podctl: pod {pod} had lost its supervisor; started a new one");
            true
        }
        Err(e) => {
            eprintln!("podctl: pod {pod} has no supervisor, and starting one failed: {e:#}");
            false
        }
    }
}

/// Start a supervisor for every orphaned pod.
pub fn revive_orphans(ctx: &PodContext) {
    for e in std::fs::read_dir(supervise::pods_dir(ctx))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Some(p) = supervise::read_status(&e.path()) {
            revive(ctx, &e.path(), &p);
        }
    }
}

/// `p` as shown while no supervisor runs it: phase `Unknown`, why, and
/// no container ready.
pub fn mark_unknown(mut p: Pod) -> Pod {
    let st = p.status.get_or_insert_with(Default::default);
    st.phase = Some("Unknown".into());
    st.reason = Some("SupervisorLost".into());
    st.message = Some(
        "the pod's supervisor was not running; a new one is taking over (this status is its last)"
            .into(),
    );
    for c in st.container_statuses.iter_mut().flatten() {
        c.ready = false;
    }
    p
}
