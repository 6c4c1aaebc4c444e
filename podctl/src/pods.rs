//! Standalone pods: `podctl run`, `pods`, `ps`, `logs`, `exec`, `stop`,
//! `rm`. Everything goes through the CRI service (the same
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
use crate::{manifest, supervise};
use k8s_openapi::api::core::v1::Pod;

/// Where pods run.
pub struct PodContext {
    pub images: Context,
    pub state_dir: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub log_root: PathBuf,
}

/// Default network for standalone pods: a bridge on this machine, no NAT.
const DEFAULT_CONFLIST: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "podctl",
  "plugins": [
    {"type": "bridge", "bridge": "podctl0", "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
"#;

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
struct PodRef {
    sandbox: proto::PodSandbox,
    containers: Vec<proto::Container>,
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

async fn pods_of(cri: &CriService) -> anyhow::Result<Vec<PodRef>> {
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

async fn find(cri: &CriService, pod: &str) -> anyhow::Result<PodRef> {
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

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Pod manifest (YAML, several documents allowed; ConfigMaps and
    /// Secrets beside the Pods are what their volumes and env refer to).
    pub file: PathBuf,
    /// Wait for the pods to finish; exit non-zero if one failed.
    #[arg(long)]
    pub wait: bool,
}

fn phase(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Pending".into())
}

/// A container waiting for a reason that needs the user (bad image,
/// bad configuration), if any: (container, reason, message).
fn stuck(p: &Pod) -> Option<(String, String, String)> {
    let st = p.status.as_ref()?;
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
                (
                    c.name.clone(),
                    reason,
                    w.message.clone().unwrap_or_default(),
                )
            })
        })
}

pub async fn run(ctx: &PodContext, a: RunArgs) -> anyhow::Result<()> {
    let (pods, sources) = manifest::read(&a.file)?;
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
        supervise::spawn(ctx, &dir)?;
        dirs.push((format!("{ns}/{name}"), dir));
    }
    let mut failed = false;
    for (name, dir) in &dirs {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(600);
        let p = loop {
            if let Some(p) = supervise::read_status(dir) {
                let ph = phase(&p);
                let settled = if a.wait {
                    ph == "Succeeded" || ph == "Failed"
                } else {
                    ph != "Pending"
                };
                if settled {
                    break p;
                }
                if let Some((c, reason, msg)) = stuck(&p) {
                    // `run` failed: take the pod down again, leaving nothing.
                    let _ = rm(
                        ctx,
                        PodArgs {
                            pods: vec![name.clone()],
                            timeout: Some(0),
                            quiet: true,
                        },
                    )
                    .await;
                    bail!("pod {name}: container {c}: {reason}: {msg}");
                }
            }
            if started.elapsed() > Duration::from_secs(5)
                && supervise::supervisor_pid(dir).is_none()
            {
                // Gone: a finished pod's last status is final.
                if let Some(p) = supervise::read_status(dir).filter(|p| {
                    let ph = phase(p);
                    ph == "Succeeded" || ph == "Failed"
                }) {
                    break p;
                }
                let log = std::fs::read_to_string(dir.join("supervisor.log")).unwrap_or_default();
                bail!("pod {name}: the supervisor exited: {}", log.trim());
            }
            if Instant::now() > deadline {
                bail!("pod {name}: still Pending after 600s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
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

async fn status(cri: &CriService, id: &str) -> anyhow::Result<proto::ContainerStatus> {
    cri.container_status(Request::new(proto::ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    }))
    .await?
    .into_inner()
    .status
    .with_context(|| format!("container {id}: no status"))
}

fn state_name(s: i32) -> &'static str {
    match proto::ContainerState::try_from(s) {
        Ok(proto::ContainerState::ContainerCreated) => "Created",
        Ok(proto::ContainerState::ContainerRunning) => "Running",
        Ok(proto::ContainerState::ContainerExited) => "Exited",
        _ => "Unknown",
    }
}

#[derive(Args, Debug)]
pub struct PodsArgs {
    /// Output format: `table` (default), `yaml` or `json` (Kubernetes Pods
    /// with their status).
    #[arg(short = 'o', long, default_value = "table")]
    pub output: String,
}

/// Pods run by `podctl run` (with their status), by name.
fn supervised(ctx: &PodContext) -> Vec<Pod> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(supervise::pods_dir(ctx))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Some(p) = supervise::read_status(&e.path()) {
            out.push(p);
        }
    }
    out.sort_by_key(|p| (p.metadata.namespace.clone(), p.metadata.name.clone()));
    out
}

pub async fn pods(ctx: &PodContext, a: PodsArgs) -> anyhow::Result<()> {
    let listed = supervised(ctx);
    match a.output.as_str() {
        "yaml" => {
            for p in &listed {
                print!("---\n{}", serde_yaml::to_string(p)?);
            }
            return Ok(());
        }
        "json" => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": listed});
            println!("{}", serde_json::to_string_pretty(&list)?);
            return Ok(());
        }
        "table" => {}
        other => bail!("unknown output format {other:?} (table, yaml, json)"),
    }
    println!(
        "{:<16} {:<24} {:<10} {:<6} {:<9} {:<16} REASON",
        "NAMESPACE", "NAME", "PHASE", "READY", "RESTARTS", "IP"
    );
    let mut shown = std::collections::HashSet::new();
    for p in &listed {
        let st = p.status.clone().unwrap_or_default();
        let cs = st.container_statuses.clone().unwrap_or_default();
        let ready = cs.iter().filter(|c| c.ready).count();
        let restarts: i32 = cs.iter().map(|c| c.restart_count).sum();
        let reason = st
            .init_container_statuses
            .iter()
            .flatten()
            .chain(cs.iter())
            .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
            .filter(|r| r != "ContainerCreating" && r != "PodInitializing")
            .unwrap_or_default();
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let name = p.metadata.name.clone().unwrap_or_default();
        println!(
            "{:<16} {:<24} {:<10} {:<6} {:<9} {:<16} {reason}",
            ns,
            name,
            phase(p),
            format!("{ready}/{}", cs.len()),
            restarts,
            st.pod_ip.unwrap_or_default()
        );
        shown.insert((ns, name));
    }
    // Pods created by other CRI clients (crictl, a kubelet) over the same state.
    let cri = ctx.cri()?;
    for p in pods_of(&cri).await? {
        let Some(m) = p.sandbox.metadata.clone() else {
            continue;
        };
        if shown.contains(&(m.namespace.clone(), m.name.clone())) {
            continue;
        }
        let ready = p.sandbox.state == proto::PodSandboxState::SandboxReady as i32;
        let running = p
            .containers
            .iter()
            .filter(|c| c.state == proto::ContainerState::ContainerRunning as i32)
            .count();
        println!(
            "{:<16} {:<24} {:<10} {:<6} {:<9} {:<16} (not run by podctl run)",
            m.namespace,
            m.name,
            if ready { "Ready" } else { "NotReady" },
            format!("{running}/{}", p.containers.len()),
            "-",
            ""
        );
    }
    Ok(())
}

pub async fn ps(ctx: &PodContext) -> anyhow::Result<()> {
    let cri = ctx.cri()?;
    println!(
        "{:<14} {:<24} {:<16} {:<8} {:<5} IMAGE",
        "CONTAINER", "POD", "NAME", "STATE", "EXIT"
    );
    for p in pods_of(&cri).await? {
        for c in &p.containers {
            let Ok(s) = status(&cri, &c.id).await else {
                continue;
            };
            let exit = if s.state == proto::ContainerState::ContainerExited as i32 {
                s.exit_code.to_string()
            } else {
                String::new()
            };
            println!(
                "{:<14} {:<24} {:<16} {:<8} {:<5} {}",
                &c.id[..13.min(c.id.len())],
                p.name(),
                s.metadata.map(|m| m.name).unwrap_or_default(),
                state_name(s.state),
                exit,
                s.image.map(|i| i.image).unwrap_or_default()
            );
        }
    }
    Ok(())
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
        let text = String::from_utf8_lossy(&data[offset.min(data.len())..]).into_owned();
        let complete = text.rfind('\n').map(|i| i + 1).unwrap_or(0);
        for line in text[..complete].lines() {
            let mut parts = line.splitn(4, ' ');
            let (_ts, _stream, tag, body) = (
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next().unwrap_or(""),
            );
            if tag == Some("P") {
                write!(out, "{body}")?;
            } else {
                writeln!(out, "{body}")?;
            }
        }
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
    let req = supervise::StopFile { grace };
    supervise::write_atomic(&dir.join("stop.json"), &serde_json::to_vec(&req)?)?;
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
        if !stop_supervised(ctx, p, a.timeout).await? {
            let pod = find(&cri, p).await?;
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
        if let Some(uid) = supervise::read_status(&dir).and_then(|p| p.metadata.uid) {
            let _ = std::fs::remove_dir_all(ctx.images.root.join("pods").join(uid));
        }
        let _ = std::fs::remove_dir_all(&dir);
        if !a.quiet {
            println!("pod/{name} removed");
        }
    }
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
