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
use podctl_cri::proto::image_service_server::ImageService;
use podctl_cri::proto::runtime_service_server::RuntimeService;
use podctl_cri::{CniSection, CriConfig, CriService};
use tonic::Request;

use crate::images_cmd::Context;
use crate::manifest;

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
    fn cri(&self) -> anyhow::Result<CriService> {
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
        let found = match name {
            Some(n) => self
                .containers
                .iter()
                .find(|c| cname(c).as_deref() == Some(n)),
            None => self.containers.first(),
        };
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
    /// Pod manifest (YAML, several documents allowed).
    pub file: PathBuf,
    /// Wait for all containers to exit; exit non-zero if one failed.
    #[arg(long)]
    pub wait: bool,
}

pub async fn run(ctx: &PodContext, a: RunArgs) -> anyhow::Result<()> {
    let pods = manifest::read_pods(&a.file)?;
    let cri = ctx.cri()?;
    let mut started = Vec::new();
    for pod in &pods {
        let (name, sandbox, ip) = run_pod(ctx, &cri, pod).await?;
        let ip = if ip.is_empty() { "none".into() } else { ip };
        println!("pod/{name} started (ip {ip})");
        started.push((name, sandbox));
    }
    if a.wait {
        let mut failed = false;
        for (pod, sandbox) in &started {
            let containers = cri
                .list_containers(Request::new(proto::ListContainersRequest {
                    filter: Some(proto::ContainerFilter {
                        pod_sandbox_id: sandbox.clone(),
                        ..Default::default()
                    }),
                }))
                .await?
                .into_inner()
                .containers;
            for c in containers {
                let st = wait_exit(&cri, &c.id).await?;
                let name = st.metadata.map(|m| m.name).unwrap_or_default();
                println!("{pod}/{name}: exited {}", st.exit_code);
                failed |= st.exit_code != 0;
            }
        }
        if failed {
            bail!("a container failed");
        }
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

async fn wait_exit(cri: &CriService, id: &str) -> anyhow::Result<proto::ContainerStatus> {
    loop {
        let st = status(cri, id).await?;
        if st.state == proto::ContainerState::ContainerExited as i32 {
            return Ok(st);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pull per the container's policy; returns the image ID to run.
async fn ensure_image(
    cri: &CriService,
    c: &k8s_openapi::api::core::v1::Container,
) -> anyhow::Result<String> {
    let image = c
        .image
        .clone()
        .with_context(|| format!("container {} has no image", c.name))?;
    let reference = podctl_images::Reference::parse(&image)?;
    let latest = reference.digest.is_none() && reference.tag.as_deref() == Some("latest");
    let policy = c
        .image_pull_policy
        .clone()
        .unwrap_or_else(|| if latest { "Always" } else { "IfNotPresent" }.into());
    let spec = proto::ImageSpec {
        image: image.clone(),
        ..Default::default()
    };
    let present = cri
        .image_status(Request::new(proto::ImageStatusRequest {
            image: Some(spec.clone()),
            verbose: false,
        }))
        .await?
        .into_inner()
        .image;
    match (policy.as_str(), present) {
        ("IfNotPresent" | "Never", Some(i)) => Ok(i.id),
        ("Never", None) => bail!(
            "container {}: image {image} is not present and imagePullPolicy is Never",
            c.name
        ),
        ("Always" | "IfNotPresent", _) => Ok(cri
            .pull_image(Request::new(proto::PullImageRequest {
                image: Some(spec),
                ..Default::default()
            }))
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))
            .with_context(|| format!("container {}: pulling {image}", c.name))?
            .into_inner()
            .image_ref),
        (other, _) => bail!("container {}: unknown imagePullPolicy {other:?}", c.name),
    }
}

async fn run_pod(
    ctx: &PodContext,
    cri: &CriService,
    pod: &k8s_openapi::api::core::v1::Pod,
) -> anyhow::Result<(String, String, String)> {
    let (name, ns, uid) = podctl_node::convert::identity(pod)?;
    let spec = pod.spec.as_ref().context("pod has no spec")?;
    if find(cri, &format!("{ns}/{name}")).await.is_ok() {
        bail!("pod {ns}/{name} already exists (podctl rm {name} first)");
    }
    let mut images = Vec::new();
    for c in &spec.containers {
        images.push(ensure_image(cri, c).await?);
    }
    let log_dir = ctx.log_root.join(format!("{ns}_{name}_{uid}"));
    let sc = podctl_node::convert::sandbox_config(pod, &name, &ns, &uid, &log_dir)?;
    let sandbox = cri
        .run_pod_sandbox(Request::new(proto::RunPodSandboxRequest {
            config: Some(sc.clone()),
            runtime_handler: String::new(),
        }))
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))
        .with_context(|| format!("pod {ns}/{name}"))?
        .into_inner()
        .pod_sandbox_id;
    let result = async {
        for (c, image) in spec.containers.iter().zip(&images) {
            let cfg = podctl_node::convert::container_config(c, image)?;
            let id = cri
                .create_container(Request::new(proto::CreateContainerRequest {
                    pod_sandbox_id: sandbox.clone(),
                    config: Some(cfg),
                    sandbox_config: Some(sc.clone()),
                }))
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))
                .with_context(|| format!("creating container {}", c.name))?
                .into_inner()
                .container_id;
            cri.start_container(Request::new(proto::StartContainerRequest {
                container_id: id,
            }))
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))
            .with_context(|| format!("starting container {}", c.name))?;
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        let _ = cri
            .remove_pod_sandbox(Request::new(proto::RemovePodSandboxRequest {
                pod_sandbox_id: sandbox.clone(),
            }))
            .await;
        return Err(e.context(format!("pod {ns}/{name}")));
    }
    let st = cri
        .pod_sandbox_status(Request::new(proto::PodSandboxStatusRequest {
            pod_sandbox_id: sandbox.clone(),
            verbose: false,
        }))
        .await?
        .into_inner();
    let ip = st
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap_or_default();
    Ok((name, sandbox, ip))
}

fn state_name(s: i32) -> &'static str {
    match proto::ContainerState::try_from(s) {
        Ok(proto::ContainerState::ContainerCreated) => "Created",
        Ok(proto::ContainerState::ContainerRunning) => "Running",
        Ok(proto::ContainerState::ContainerExited) => "Exited",
        _ => "Unknown",
    }
}

pub async fn pods(ctx: &PodContext) -> anyhow::Result<()> {
    let cri = ctx.cri()?;
    println!(
        "{:<16} {:<24} {:<10} {:<16} CONTAINERS",
        "NAMESPACE", "NAME", "STATE", "IP"
    );
    for p in pods_of(&cri).await? {
        let st = cri
            .pod_sandbox_status(Request::new(proto::PodSandboxStatusRequest {
                pod_sandbox_id: p.sandbox.id.clone(),
                verbose: false,
            }))
            .await?
            .into_inner()
            .status
            .unwrap_or_default();
        let state = if st.state == proto::PodSandboxState::SandboxReady as i32 {
            "Ready"
        } else {
            "NotReady"
        };
        let running = p
            .containers
            .iter()
            .filter(|c| c.state == proto::ContainerState::ContainerRunning as i32)
            .count();
        let ip = st.network.map(|n| n.ip).unwrap_or_default();
        let ns = st.metadata.map(|m| m.namespace).unwrap_or_default();
        println!(
            "{:<16} {:<24} {:<10} {:<16} {running}/{}",
            ns,
            p.name(),
            state,
            ip,
            p.containers.len()
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
    /// Seconds between SIGTERM and SIGKILL.
    #[arg(long, default_value_t = 10)]
    pub timeout: i64,
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
        let pod = find(&cri, p).await?;
        stop_containers(&cri, &pod, a.timeout).await?;
        cri.stop_pod_sandbox(Request::new(proto::StopPodSandboxRequest {
            pod_sandbox_id: pod.sandbox.id.clone(),
        }))
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        println!("pod/{} stopped", pod.name());
    }
    Ok(())
}

pub async fn rm(ctx: &PodContext, a: PodArgs) -> anyhow::Result<()> {
    let cri = ctx.cri()?;
    for p in &a.pods {
        let pod = find(&cri, p).await?;
        stop_containers(&cri, &pod, a.timeout).await?;
        cri.remove_pod_sandbox(Request::new(proto::RemovePodSandboxRequest {
            pod_sandbox_id: pod.sandbox.id.clone(),
        }))
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        println!("pod/{} removed", pod.name());
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
