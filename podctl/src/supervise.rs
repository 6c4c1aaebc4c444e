//! Standalone pods are kept by a supervisor: `podctl run` starts one
//! detached `podctl supervise DIR` per pod, which runs the pod lifecycle
//! engine (podctl-node's `PodWorker`) over the in-process CRI service
//! until the pod finishes or is stopped, writing the pod's status to
//! `DIR/status.json` as it changes. `podctl stop` signals it; the
//! containers themselves never depend on it (their monitors outlive it).
//!
//! ```text
//! <state>/pods/<namespace>_<name>/
//!     pod.json        the Pod, with the ConfigMaps and Secrets of its manifest
//!     status.json     the latest Pod (metadata + status), replaced atomically
//!     supervisor.pid  the supervisor's PID while it runs
//!     supervisor.lock held (flock) by the running supervisor; see `revive`
//!     stop.json       a stop request ({"grace": seconds|null}), then SIGTERM
//!     events.jsonl    events (Pulling, Started, BackOff, Unhealthy, ...)
//!     supervisor.log  the supervisor's own log
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use podctl_node::backoff::BackoffPolicy;
use podctl_node::events::LogEvents;
use podctl_node::sources::StaticSources;
use podctl_node::worker::{PodWorker, Stop, WorkerConfig};
use serde::{Deserialize, Serialize};

use crate::pods::PodContext;

/// What `podctl run` hands the supervisor.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodFile {
    pub pod: Pod,
    #[serde(default)]
    pub config_maps: Vec<ConfigMap>,
    #[serde(default)]
    pub secrets: Vec<Secret>,
}

#[derive(Serialize, Deserialize, Default)]
struct StopFile {
    /// Seconds; `None`: the pod's terminationGracePeriodSeconds.
    pub grace: Option<u64>,
}

pub fn pods_dir(ctx: &PodContext) -> PathBuf {
    ctx.state_dir.join("pods")
}

pub fn pod_dir(ctx: &PodContext, ns: &str, name: &str) -> PathBuf {
    pods_dir(ctx).join(format!("{ns}_{name}"))
}

/// Write `data` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// The stop request of the pod in `dir`.
pub const STOP: &str = "stop.json";

/// Record a stop of the pod in `dir` (`grace` seconds, else the pod's
/// own): its supervisor reads it on SIGTERM, and no command revives a
/// supervisor for it afterwards.
pub fn request_stop(dir: &Path, grace: Option<u64>) -> anyhow::Result<()> {
    write_atomic(&dir.join(STOP), &serde_json::to_vec(&StopFile { grace })?)
}

/// The supervisor's PID if it is alive.
pub fn supervisor_pid(dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(dir.join("supervisor.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // A PID file left by a dead supervisor (or reused by another program)
    // does not count: the process must be a `podctl supervise` of DIR.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let dir_s = dir.display().to_string();
    String::from_utf8_lossy(&cmdline)
        .split('\0')
        .any(|a| a == dir_s)
        .then_some(pid)
}

/// The UID of the pod in `dir` (from its status, else its pod file).
pub fn pod_uid(dir: &Path) -> Option<String> {
    read_status(dir).and_then(|p| p.metadata.uid).or_else(|| {
        let f: PodFile = serde_json::from_slice(&std::fs::read(dir.join("pod.json")).ok()?).ok()?;
        f.pod.metadata.uid
    })
}

/// The last status the supervisor wrote.
pub fn read_status(dir: &Path) -> Option<Pod> {
    serde_json::from_slice(&std::fs::read(dir.join("status.json")).ok()?).ok()
}

/// Backoff settings from the environment (tests shorten them):
/// `PODCTL_BACKOFF_INITIAL_MS`, `PODCTL_BACKOFF_MAX_MS`.
fn backoff_from_env() -> BackoffPolicy {
    let ms = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
    };
    let d = BackoffPolicy::default();
    BackoffPolicy {
        initial: ms("PODCTL_BACKOFF_INITIAL_MS").unwrap_or(d.initial),
        max: ms("PODCTL_BACKOFF_MAX_MS").unwrap_or(d.max),
        reset_after: d.reset_after,
    }
}

/// `podctl supervise DIR`: run the pod in DIR until it finishes or stops.
pub async fn supervise(ctx: &PodContext, dir: PathBuf) -> anyhow::Result<()> {
    let file: PodFile = serde_json::from_slice(
        &std::fs::read(dir.join("pod.json"))
            .with_context(|| format!("reading {}", dir.display()))?,
    )
    .context("pod.json")?;
    let mut sources = StaticSources::default();
    file.config_maps
        .into_iter()
        .for_each(|c| sources.add_config_map(c));
    file.secrets.into_iter().for_each(|s| sources.add_secret(s));
    // One supervisor per pod: held until this process exits.
    let Some(_lock) = crate::revive::try_hold(&dir)
        .with_context(|| format!("locking {}", dir.join(crate::revive::LOCK).display()))?
    else {
        tracing::info!(dir = %dir.display(), "another supervisor runs this pod");
        return Ok(());
    };
    std::fs::write(dir.join("supervisor.pid"), std::process::id().to_string())?;
    let cri = ctx.cri()?;
    let cfg = WorkerConfig {
        backoff: backoff_from_env(),
        log_root: ctx.log_root.clone(),
        pods_root: ctx.images.root.join("pods"),
        host_ip: "127.0.0.1".into(),
        ..Default::default()
    };
    let events = LogEvents {
        file: Some(dir.join("events.jsonl")),
    };
    let mut pod = file.pod;
    let (worker, mut status) =
        PodWorker::new(cri, cfg, pod.clone(), Arc::new(sources), Arc::new(events))?;
    pod.metadata.uid = Some(worker.uid().to_string());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(None);
    let task = tokio::spawn(worker.run(stop_rx));

    // Status to disk as it changes.
    let status_dir = dir.clone();
    let meta = pod.metadata.clone();
    let writer = tokio::spawn(async move {
        loop {
            let st = status.borrow_and_update().clone();
            let p = Pod {
                metadata: meta.clone(),
                spec: None,
                status: Some(st),
            };
            if let Ok(data) = serde_json::to_vec_pretty(&p) {
                if let Err(e) = write_atomic(&status_dir.join("status.json"), &data) {
                    tracing::warn!(error = %e, "writing status");
                }
            }
            if status.changed().await.is_err() {
                return;
            }
        }
    });

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut task = task;
    // Whether the pod ended by itself, not by a SIGTERM (`podctl stop`,
    // or systemd stopping the unit as the machine shuts down).
    let (final_status, ended) = tokio::select! {
        r = &mut task => (r?, true),
        _ = term.recv() => {
            let req: StopFile = std::fs::read(dir.join(STOP))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            let _ = stop_tx.send(Some(Stop { grace: req.grace.map(Duration::from_secs), evict: None }));
            (task.await?, false)
        }
    };
    let _ = writer.await;
    let p = Pod {
        metadata: pod.metadata.clone(),
        spec: None,
        status: Some(final_status),
    };
    write_atomic(&dir.join("status.json"), &serde_json::to_vec_pretty(&p)?)?;
    if ended && matches!(crate::run::phase(&p).as_str(), "Succeeded" | "Failed") {
        // Finished: nothing to bring back after a reboot. A pod stopped by
        // a shutdown is kept (`podctl stop` forgot it already).
        crate::restore::forget_dir(ctx, &dir)?;
    }
    let _ = std::fs::remove_file(dir.join("supervisor.pid"));
    Ok(())
}

/// Start a detached supervisor for the pod file in `dir`: a transient
/// systemd unit on a systemd host (`supervisor_unit`), else a process in
/// its own session.
pub fn spawn(ctx: &PodContext, dir: &Path) -> anyhow::Result<()> {
    use std::ffi::OsString;
    use std::os::unix::process::CommandExt as _;
    let exe = std::env::current_exe().context("finding podctl's own path")?;
    let mut args: Vec<OsString> = vec![
        "--root".into(),
        ctx.images.root.clone().into(),
        "--state-dir".into(),
        ctx.state_dir.clone().into(),
        "--cni-conf-dir".into(),
        ctx.cni_conf_dir.clone().into(),
        "--log-root".into(),
        ctx.log_root.clone().into(),
        "--log-level".into(),
        std::env::var("PODCTL_SUPERVISOR_LOG")
            .unwrap_or_else(|_| "info".into())
            .into(),
    ];
    if let Some(r) = &ctx.images.registry_config {
        args.extend(["--registry-config".into(), r.clone().into()]);
    }
    args.extend(["supervise".into(), dir.into()]);
    // Appended to: a replaced supervisor's log tells why it went.
    let log_path = dir.join("supervisor.log");
    if crate::supervisor_unit::wanted() {
        match crate::supervisor_unit::start(dir, &exe, &args, &log_path) {
            Ok(()) => return Ok(()),
            // The unit is restarting its supervisor right now.
            Err(_) if crate::supervisor_unit::alive(dir) => return Ok(()),
            // Else a plain process (the lock keeps the supervisor single).
            Err(e) => tracing::warn!(error = %e, "supervisor unit; starting a plain process"),
        }
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid() is async-signal-safe and touches no memory of the
    // parent; it only detaches the child from our session and terminal.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().context("starting the pod supervisor")?;
    Ok(())
}
