//! `podctl run pod.yaml`: hand each Pod to a detached supervisor and wait
//! until it runs (or, with `--wait`, finishes). A pod that cannot start —
//! no shim, a sandbox or volume that fails, an image that cannot be
//! pulled, a bad container configuration — fails the command within
//! seconds with the reason, and is removed again: no supervisor, mount,
//! record or directory of it is left.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use k8s_openapi::api::core::v1::Pod;

use crate::pods::{find, rm, PodArgs, PodContext};
use crate::{manifest, restore, supervise};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Pod manifest (YAML, several documents allowed; ConfigMaps and
    /// Secrets beside the Pods are what their volumes and env refer to).
    pub file: PathBuf,
    /// Wait for the pods to finish; exit non-zero if one failed.
    #[arg(long)]
    pub wait: bool,
}

/// How long a pod may stay Pending without a reason before `run` gives up
/// (a large image on a slow link is the usual cause).
const PENDING_LIMIT: Duration = Duration::from_secs(600);
/// How long a supervisor has to write its PID file.
const SUPERVISOR_START: Duration = Duration::from_secs(5);

pub fn phase(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Pending".into())
}

/// Why the pod cannot go on without the user, if it cannot: a pod-level
/// reason while it is Pending (its sandbox or volumes failed), or a
/// container waiting for a reason that needs the user (bad image, bad
/// configuration).
fn stuck(p: &Pod) -> Option<String> {
    let st = p.status.as_ref()?;
    if let Some(reason) = st.reason.as_ref().filter(|_| phase(p) == "Pending") {
        let msg = st.message.clone().unwrap_or_default();
        return Some(format!("{reason}: {msg}"));
    }
    st.init_container_statuses
        .iter()
        .flatten()
        .chain(st.container_statuses.iter().flatten())
        .find_map(|c| {
            let w = c.state.as_ref()?.waiting.as_ref()?;
            let reason = w.reason.clone()?;
            matches!(
                reason.as_str(),
                "ErrImagePull"
                    | "ImagePullBackOff"
                    | "ErrImageNeverPull"
                    | "CreateContainerConfigError"
                    | "CreateContainerError"
                    | "RunContainerError"
            )
            .then(|| {
                format!(
                    "container {}: {reason}: {}",
                    c.name,
                    w.message.clone().unwrap_or_default()
                )
            })
        })
}

/// The waiting reasons of a pod's containers, for a pod that timed out.
fn waiting(p: &Pod) -> String {
    let st = p.status.clone().unwrap_or_default();
    let reasons: Vec<String> = st
        .init_container_statuses
        .iter()
        .flatten()
        .chain(st.container_statuses.iter().flatten())
        .filter_map(|c| {
            let w = c.state.as_ref()?.waiting.as_ref()?;
            Some(format!("{}: {}", c.name, w.reason.clone()?))
        })
        .collect();
    if reasons.is_empty() {
        "no container waits".into()
    } else {
        reasons.join(", ")
    }
}

pub async fn run(ctx: &PodContext, a: RunArgs) -> anyhow::Result<()> {
    let (pods, sources) = manifest::read(&a.file)?;
    // Every pod needs the shim: without one, say so now, not after a wait.
    podctl_runtime::locate_shim(None).context("cannot run pods")?;
    let cri = ctx.cri()?;
    let mut dirs = Vec::new();
    for mut pod in pods {
        let (name, ns, uid) = podctl_node::convert::identity(&pod)?;
        let dir = supervise::pod_dir(ctx, &ns, &name);
        if supervise::supervisor_pid(&dir).is_some()
            || find(&cri, &format!("{ns}/{name}")).await.is_ok()
        {
            bail!("pod {ns}/{name} already exists (podctl rm {name} first)");
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        pod.metadata.uid = Some(uid);
        pod.metadata.namespace = Some(ns.clone());
        let same_ns = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            m.namespace.as_deref().unwrap_or("default") == ns
        };
        let file = supervise::PodFile {
            pod,
            config_maps: sources
                .config_maps
                .values()
                .filter(|c| same_ns(&c.metadata))
                .cloned()
                .collect(),
            secrets: sources
                .secrets
                .values()
                .filter(|c| same_ns(&c.metadata))
                .cloned()
                .collect(),
        };
        supervise::write_atomic(&dir.join("pod.json"), &serde_json::to_vec(&file)?)?;
        restore::keep(ctx, &ns, &name, &file)?;
        supervise::spawn(ctx, &dir)?;
        dirs.push((format!("{ns}/{name}"), dir));
    }
    let mut failed = false;
    for (name, dir) in &dirs {
        let p = match settle(dir, a.wait, PENDING_LIMIT).await {
            Ok(p) => p,
            Err(why) => {
                // `run` failed: take the pod down again, leaving nothing.
                let removed = rm(
                    ctx,
                    PodArgs {
                        pods: vec![name.clone()],
                        timeout: Some(0),
                        quiet: true,
                    },
                )
                .await;
                if let Err(e) = removed {
                    bail!("pod {name}: {why} (and removing it failed: {e:#})");
                }
                bail!("pod {name}: {why}");
            }
        };
        let st = p.status.clone().unwrap_or_default();
        let ip = st.pod_ip.clone().unwrap_or_else(|| "none".into());
        println!(
            "pod/{} {} (ip {ip})",
            name.rsplit('/').next().unwrap_or(name),
            phase(&p)
        );
        if a.wait {
            for c in st.container_statuses.iter().flatten() {
                if let Some(t) = c.state.as_ref().and_then(|s| s.terminated.as_ref()) {
                    println!("{name}/{}: exited {}", c.name, t.exit_code);
                }
            }
            failed |= phase(&p) == "Failed";
        }
    }
    if failed {
        bail!("a pod failed");
    }
    Ok(())
}

/// Why a pod did not settle.
pub(crate) enum Unsettled {
    /// It never will without the user (the reason).
    Failed(String),
    /// Still Pending when the wait ended (what it waits for).
    Pending(String),
}

impl std::fmt::Display for Unsettled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsettled::Failed(why) | Unsettled::Pending(why) => f.write_str(why),
        }
    }
}

/// Wait until the pod in `dir` runs (with `finished`: has finished), at
/// most `limit` while it is Pending; `Err` says why it did not.
pub(crate) async fn settle(dir: &Path, finished: bool, limit: Duration) -> Result<Pod, Unsettled> {
    let started = Instant::now();
    let mut last = None;
    loop {
        if let Some(p) = supervise::read_status(dir) {
            let ph = phase(&p);
            let settled = if finished {
                ph == "Succeeded" || ph == "Failed"
            } else {
                ph != "Pending"
            };
            if settled {
                return Ok(p);
            }
            if let Some(why) = stuck(&p) {
                return Err(Unsettled::Failed(why));
            }
            last = Some(p);
        }
        if started.elapsed() > SUPERVISOR_START && supervise::supervisor_pid(dir).is_none() {
            // Gone: a finished pod's last status is final.
            if let Some(p) = supervise::read_status(dir).filter(|p| {
                let ph = phase(p);
                ph == "Succeeded" || ph == "Failed"
            }) {
                return Ok(p);
            }
            let log = std::fs::read_to_string(dir.join("supervisor.log")).unwrap_or_default();
            return Err(Unsettled::Failed(format!(
                "the supervisor exited: {}",
                log.trim()
            )));
        }
        if started.elapsed() > limit {
            let why = last.as_ref().map(waiting).unwrap_or_default();
            return Err(Unsettled::Pending(format!(
                "still Pending after {}s ({why})",
                limit.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
