//! Standalone pods: `podctl logs`, `exec`, `stop`, `rm` (and what `run`,
//! `pods` and `ps` share). Everything goes through the CRI service (the same
//! RuntimeService/ImageService traits the gRPC server serves), in
//! process; all state is the service's on-disk state, so a later `podctl`
//! or a `podctl serve` daemon over the same directories sees these pods.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use podctl_cri::proto;
use podctl_cri::proto::runtime_service_server::RuntimeService;
use podctl_cri::{CniSection, CriConfig, CriService};
use tonic::Request;

use crate::images_cmd::Context;
use crate::supervise;

/// Where pods run.
pub struct PodContext {
    pub images: Context,
    pub state_dir: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub log_root: PathBuf,
}

/// Default network for standalone pods: a bridge on this machine, no NAT
/// (the same file the Debian package installs).
pub const DEFAULT_CONFLIST: &str = include_str!("../dist/10-podctl.conflist");

impl PodContext {
    /// The in-process CRI service over this context's directories.
    pub(crate) fn cri(&self) -> anyhow::Result<CriService> {
        std::fs::create_dir_all(&self.cni_conf_dir)
            .with_context(|| format!("creating {}", self.cni_conf_dir.display()))?;
        let has = std::fs::read_dir(&self.cni_conf_dir)?
            .flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "conflist"));
        if !has {
            std::fs::write(
                self.cni_conf_dir.join("10-podctl.conflist"),
                DEFAULT_CONFLIST,
            )?;
        }
        let cfg = CriConfig {
            root: self.images.root.clone(),
            state: self.state_dir.clone(),
            cni: CniSection {
                conf_dir: self.cni_conf_dir.clone(),
                ..Default::default()
            },
            registry: self.images.registry_config()?,
            ..Default::default()
        };
        Ok(CriService::new(cfg)?)
    }
}

/// A pod as the CRI service knows it.
pub(crate) struct PodRef {
    pub sandbox: proto::PodSandbox,
    pub containers: Vec<proto::Container>,
}

impl PodRef {
    fn name(&self) -> &str {
        self.sandbox
            .metadata
            .as_ref()
            .map(|m| m.name.as_str())
            .unwrap_or("")
    }

    /// The named container, or the first one.
    fn container(&self, name: Option<&str>) -> anyhow::Result<&proto::Container> {
        let cname = |c: &proto::Container| c.metadata.as_ref().map(|m| m.name.clone());
        // Restarted containers share a name: the newest one counts.
        let want = match name {
            Some(n) => Some(n.to_string()),
            None => self
                .containers
                .iter()
                .min_by_key(|c| c.created_at)
                .and_then(cname),
        };
        let found = self
            .containers
            .iter()
            .filter(|c| want.is_some() && cname(c) == want)
            .max_by_key(|c| (c.metadata.as_ref().map(|m| m.attempt), c.created_at));
        found.with_context(|| match name {
            Some(c) => format!("pod {} has no container {c}", self.name()),
            None => format!("pod {} has no containers", self.name()),
        })
    }
}

pub(crate) async fn pods_of(cri: &CriService) -> anyhow::Result<Vec<PodRef>> {
    let sandboxes = cri
        .list_pod_sandbox(Request::new(proto::ListPodSandboxRequest { filter: None }))
        .await?
        .into_inner()
        .items;
    let containers = cri
        .list_containers(Request::new(proto::ListContainersRequest { filter: None }))
        .await?
        .into_inner()
        .containers;
    let mut out: Vec<PodRef> = sandboxes
        .into_iter()
        .map(|sandbox| PodRef {
            containers: containers
                .iter()
                .filter(|c| c.pod_sandbox_id == sandbox.id)
                .cloned()
                .collect(),
            sandbox,
        })
        .collect();
    out.sort_by(|a, b| {
        let key = |p: &PodRef| {
            p.sandbox
                .metadata
                .as_ref()
                .map(|m| (m.namespace.clone(), m.name.clone()))
        };
        key(a).cmp(&key(b))
    });
    Ok(out)
}

pub(crate) async fn find(cri: &CriService, pod: &str) -> anyhow::Result<PodRef> {
    let (ns, name) = pod.split_once('/').unwrap_or(("default", pod));
    pods_of(cri)
        .await?
        .into_iter()
        .find(|p| {
            p.sandbox
                .metadata
                .as_ref()
                .is_some_and(|m| m.name == name && m.namespace == ns)
        })
        .with_context(|| format!("pod {ns}/{name} not found"))
}

pub(crate) async fn status(cri: &CriService, id: &str) -> anyhow::Result<proto::ContainerStatus> {
    cri.container_status(Request::new(proto::ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    }))
    .await?
    .into_inner()
    .status
    .with_context(|| format!("container {id}: no status"))
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Pod name (`name` or `namespace/name`).
    pub pod: String,
    /// Container (default: the pod's only or first container).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Keep printing until the container exits.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

pub async fn logs(ctx: &PodContext, a: LogsArgs) -> anyhow::Result<()> {
    let cri = ctx.cri()?;
    let pod = find(&cri, &a.pod).await?;
    let id = pod.container(a.container.as_deref())?.id.clone();
    let path = status(&cri, &id).await?.log_path;
    let mut offset = 0usize;
    let mut out = std::io::stdout().lock();
    loop {
        let data = std::fs::read(&path).unwrap_or_default();
        let fresh = &data[offset.min(data.len())..];
        // Whole records only; one still being written waits.
        let complete = fresh
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|i| i + 1)
            .unwrap_or(0);
        write!(
            out,
            "{}",
            podctl_node::crilog::output(&String::from_utf8_lossy(&fresh[..complete]))
        )?;
        offset += complete;
        out.flush()?;
        let exited = status(&cri, &id)
            .await
            .map(|s| s.state == proto::ContainerState::ContainerExited as i32)
            .unwrap_or(true);
        if !a.follow || (exited && complete == 0) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[derive(Args, Debug)]
pub struct PodArgs {
    /// Pod names (`name` or `namespace/name`).
    #[arg(required = true)]
    pub pods: Vec<String>,
    /// Seconds between SIGTERM and SIGKILL (default: the pod's
    /// terminationGracePeriodSeconds).
    #[arg(long)]
    pub timeout: Option<u64>,
    #[arg(skip)]
    pub quiet: bool,
}

fn split(pod: &str) -> (&str, &str) {
    pod.split_once('/').unwrap_or(("default", pod))
}

/// Ask the pod's supervisor to stop the pod and wait for it; false if
/// there is no supervisor.
async fn stop_supervised(ctx: &PodContext, pod: &str, grace: Option<u64>) -> anyhow::Result<bool> {
    let (ns, name) = split(pod);
    let dir = supervise::pod_dir(ctx, ns, name);
    let Some(pid) = supervise::supervisor_pid(&dir) else {
        return Ok(false);
    };
    supervise::request_stop(&dir, grace)?;
    // SAFETY: kill(2) with a PID we just verified is this pod's supervisor.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        bail!(
            "signalling the supervisor of {ns}/{name} (pid {pid}): {}",
            std::io::Error::last_os_error()
        );
    }
    let limit = Duration::from_secs(grace.unwrap_or(30) + 60);
    let t0 = Instant::now();
    while supervise::supervisor_pid(&dir).is_some() {
        if t0.elapsed() > limit {
            bail!("pod {ns}/{name}: still stopping after {}s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(true)
}

async fn stop_containers(cri: &CriService, pod: &PodRef, timeout: i64) -> anyhow::Result<()> {
    for c in &pod.containers {
        cri.stop_container(Request::new(proto::StopContainerRequest {
            container_id: c.id.clone(),
            timeout,
        }))
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
    }
    Ok(())
}

pub async fn stop(ctx: &PodContext, a: PodArgs) -> anyhow::Result<()> {
    let cri = ctx.cri()?;
    for p in &a.pods {
        // Stopped for good: not brought back after a reboot either.
        let (ns, name) = split(p);
        crate::restore::forget(ctx, ns, name)?;
        if !stop_supervised(ctx, p, a.timeout).await? {
            let pod = find(&cri, p).await?;
            // Stopped for good: no later command revives a supervisor.
            let (ns, name) = split(p);
            let dir = supervise::pod_dir(ctx, ns, name);
            if dir.exists() {
                supervise::request_stop(&dir, a.timeout)?;
            }
            stop_containers(&cri, &pod, a.timeout.unwrap_or(10) as i64).await?;
            cri.stop_pod_sandbox(Request::new(proto::StopPodSandboxRequest {
                pod_sandbox_id: pod.sandbox.id.clone(),
            }))
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        }
        println!("pod/{} stopped", split(p).1);
    }
    Ok(())
}

pub async fn rm(ctx: &PodContext, a: PodArgs) -> anyhow::Result<()> {
    let cri = ctx.cri()?;
    for p in &a.pods {
        let (ns, name) = split(p);
        crate::restore::forget(ctx, ns, name)?;
        let dir = supervise::pod_dir(ctx, ns, name);
        let supervised = stop_supervised(ctx, p, a.timeout).await? || dir.exists();
        match find(&cri, p).await {
            Ok(pod) => {
                stop_containers(&cri, &pod, a.timeout.unwrap_or(10) as i64).await?;
                cri.remove_pod_sandbox(Request::new(proto::RemovePodSandboxRequest {
                    pod_sandbox_id: pod.sandbox.id.clone(),
                }))
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
            }
            Err(e) if !supervised => return Err(e),
            Err(_) => {}
        }
        // The pod's own directories: volumes (unmounted first), logs.
        if let Some(uid) = supervise::pod_uid(&dir).filter(|u| !u.is_empty()) {
            podctl_node::volumes::remove_pod_dir(&ctx.images.root.join("pods"), &uid)
                .with_context(|| format!("removing the volumes of {ns}/{name}"))?;
            let logs = ctx.log_root.join(format!("{ns}_{name}_{uid}"));
            if let Err(e) = std::fs::remove_dir_all(&logs) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    bail!("removing {}: {e}", logs.display());
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        if !a.quiet {
            println!("pod/{name} removed");
        }
    }
    cri.runtime().remove_cgroup_parent_if_empty();
    Ok(())
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Pod name (`name` or `namespace/name`).
    pub pod: String,
    /// Container (default: the pod's first container).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Seconds before the command is killed (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub timeout: i64,
    /// Command and arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Run a command in a container; prints its output and returns its exit code.
pub async fn exec(ctx: &PodContext, a: ExecArgs) -> anyhow::Result<i32> {
    let cri = ctx.cri()?;
    let pod = find(&cri, &a.pod).await?;
    let id = pod.container(a.container.as_deref())?.id.clone();
    let t0 = Instant::now();
    let r = cri
        .exec_sync(Request::new(proto::ExecSyncRequest {
            container_id: id,
            cmd: a.command.clone(),
            timeout: a.timeout,
        }))
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    std::io::stdout().write_all(&r.stdout)?;
    std::io::stderr().write_all(&r.stderr)?;
    if a.timeout > 0 && r.exit_code == 137 && t0.elapsed() >= Duration::from_secs(a.timeout as u64)
    {
        bail!("command timed out after {}s", a.timeout);
    }
    Ok(r.exit_code)
}

#[cfg(test)]
mod tests {
    /// The default network keeps its address allocations on /run: a reboot
    /// ends every pod and must free their addresses with them (host-local's
    /// own default, /var/lib/cni/networks, would keep them allocated).
    #[test]
    fn default_network_allocates_from_a_volatile_directory() {
        let v: serde_json::Value = match serde_json::from_str(super::DEFAULT_CONFLIST) {
            Ok(v) => v,
            Err(e) => panic!("default conflist: {e}"),
        };
        assert_eq!(v["plugins"][0]["ipam"]["dataDir"], "/run/podctl/ipam");
    }
}
