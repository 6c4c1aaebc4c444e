//! Standalone pods: `podctl run`, `pods`, `ps`, `logs`, `stop`, `rm`.
//! State is the runtime's state directory plus one record per pod, so no
//! daemon is needed and a CRI daemon could share it.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use k8s_openapi::api::core::v1::{Container, Pod};
use serde::{Deserialize, Serialize};

use podctl_images::{ImageRecord, PullOptions};
use podctl_runtime::{
    CniConfig, ContainerConfig, ContainerState, Resources, Runtime, RuntimeConfig, SandboxConfig,
    SandboxState,
};

use crate::images_cmd::Context;
use crate::{manifest, quantity};

/// Where pods run.
pub struct PodContext {
    pub images: Context,
    pub state_dir: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub log_root: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct PodRecord {
    name: String,
    namespace: String,
    uid: String,
    sandbox: String,
    containers: Vec<(String, String)>,
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

impl PodRecord {
    /// The ID of the named container, or of the first one.
    fn container_id(&self, name: Option<&str>) -> anyhow::Result<&str> {
        let found = match name {
            Some(c) => self.containers.iter().find(|(n, _)| n == c),
            None => self.containers.first(),
        };
        found
            .map(|(_, id)| id.as_str())
            .with_context(|| match name {
                Some(c) => format!("pod {} has no container {c}", self.name),
                None => format!("pod {} has no containers", self.name),
            })
    }
}

impl PodContext {
    fn runtime(&self) -> anyhow::Result<Runtime> {
        Ok(Runtime::new(RuntimeConfig {
            state_dir: self.state_dir.clone(),
            cni: Some(self.cni()?),
            ..Default::default()
        })?)
    }

    fn cni(&self) -> anyhow::Result<CniConfig> {
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
        Ok(CniConfig {
            conf_dir: self.cni_conf_dir.clone(),
            ..Default::default()
        })
    }

    fn pods_dir(&self) -> PathBuf {
        self.state_dir.join("pods")
    }

    fn record_path(&self, ns: &str, name: &str) -> PathBuf {
        self.pods_dir().join(format!("{ns}_{name}.json"))
    }

    fn records(&self) -> Vec<PodRecord> {
        let mut out: Vec<PodRecord> = std::fs::read_dir(self.pods_dir())
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| std::fs::read(e.path()).ok())
                    .filter_map(|b| serde_json::from_slice(&b).ok())
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        out
    }

    fn find(&self, pod: &str) -> anyhow::Result<PodRecord> {
        let (ns, name) = pod.split_once('/').unwrap_or(("default", pod));
        let p = self.record_path(ns, name);
        let b = std::fs::read(&p).with_context(|| format!("pod {ns}/{name} not found"))?;
        serde_json::from_slice(&b).with_context(|| format!("corrupt {}", p.display()))
    }
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
    let rt = ctx.runtime()?;
    let mut started = Vec::new();
    for pod in &pods {
        let (rec, ip) = run_pod(ctx, &rt, pod).await?;
        let ip = ip.unwrap_or_else(|| "none".into());
        println!("pod/{} started (ip {ip})", rec.name);
        started.push(rec);
    }
    if a.wait {
        let mut failed = false;
        for rec in &started {
            for (name, id) in &rec.containers {
                let st = rt.wait(id, Duration::from_secs(24 * 3600))?;
                println!("{}/{name}: exited {}", rec.name, st.exit_code.unwrap_or(-1));
                failed |= st.exit_code != Some(0);
            }
        }
        if failed {
            bail!("a container failed");
        }
    }
    Ok(())
}

async fn run_pod(
    ctx: &PodContext,
    rt: &Runtime,
    pod: &Pod,
) -> anyhow::Result<(PodRecord, Option<String>)> {
    let name = pod
        .metadata
        .name
        .clone()
        .context("pod has no metadata.name")?;
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let spec = pod.spec.as_ref().context("pod has no spec")?;
    if ctx.record_path(&ns, &name).exists() {
        bail!("pod {ns}/{name} already exists (podctl rm {name} first)");
    }
    let puller = ctx.images.puller()?;
    let mut images = BTreeMap::new();
    for c in &spec.containers {
        let image = c
            .image
            .clone()
            .with_context(|| format!("container {} has no image", c.name))?;
        if images.contains_key(&image) {
            continue;
        }
        let reference = podctl_images::Reference::parse(&image)?;
        let latest = reference.digest.is_none() && reference.tag.as_deref() == Some("latest");
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            if latest {
                "Always".into()
            } else {
                "IfNotPresent".into()
            }
        });
        let present = puller.store().get(&image).ok();
        let rec = match (policy.as_str(), present) {
            ("IfNotPresent" | "Never", Some(r)) => r,
            ("Never", None) => bail!(
                "container {}: image {image} is not present and imagePullPolicy is Never",
                c.name
            ),
            ("Always" | "IfNotPresent", _) => puller
                .pull(&image, &PullOptions::default())
                .await
                .with_context(|| format!("container {}: pulling {image}", c.name))?,
            (other, _) => bail!("container {}: unknown imagePullPolicy {other:?}", c.name),
        };
        images.insert(image, rec);
    }
    let uid = match &pod.metadata.uid {
        Some(u) => u.clone(),
        None => {
            let h =
                podctl_images::Digest::of(format!("{ns}/{name}/{}", podctl_shim_now()).as_bytes());
            let x = h.hex();
            format!(
                "{}-{}-{}-{}-{}",
                &x[0..8],
                &x[8..12],
                &x[12..16],
                &x[16..20],
                &x[20..32]
            )
        }
    };
    let host_network = spec.host_network.unwrap_or(false);
    let hostname = spec.hostname.clone().unwrap_or_else(|| name.clone());
    let log_dir = ctx.log_root.join(format!("{ns}_{name}_{uid}"));
    let sb = rt.run_sandbox(SandboxConfig {
        name: name.clone(),
        namespace: ns.clone(),
        uid: uid.clone(),
        hostname,
        host_network,
        host_ipc: spec.host_ipc.unwrap_or(false),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        log_directory: log_dir.clone(),
        ..Default::default()
    })?;
    let sandbox = sb.id.clone();
    let mut rec = PodRecord {
        name: name.clone(),
        namespace: ns.clone(),
        uid,
        sandbox: sandbox.clone(),
        containers: vec![],
    };
    let result = start_containers(
        ctx,
        rt,
        &mut rec,
        spec.containers.as_slice(),
        &images,
        &log_dir,
    );
    if let Err(e) = result {
        for (_, id) in &rec.containers {
            let _ = rt.remove(id);
        }
        let _ = rt.remove_sandbox(&sandbox);
        return Err(e.context(format!("pod {ns}/{name}")));
    }
    std::fs::create_dir_all(ctx.pods_dir())?;
    std::fs::write(
        ctx.record_path(&ns, &name),
        serde_json::to_vec_pretty(&rec)?,
    )?;
    Ok((rec, sb.ip))
}

fn podctl_shim_now() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn start_containers(
    ctx: &PodContext,
    rt: &Runtime,
    rec: &mut PodRecord,
    containers: &[Container],
    images: &BTreeMap<String, ImageRecord>,
    log_dir: &Path,
) -> anyhow::Result<()> {
    let store = ctx.images.store()?;
    for c in containers {
        let image = c.image.clone().unwrap_or_default();
        let img = images
            .get(&image)
            .with_context(|| format!("image {image} not pulled"))?;
        let cfg = container_config(c, img, store.layer_dirs(img)?, log_dir)?;
        let id = rt
            .create_container(&rec.sandbox, cfg)
            .with_context(|| format!("creating container {}", c.name))?;
        rec.containers.push((c.name.clone(), id.clone()));
        rt.start(&id)
            .with_context(|| format!("starting container {}", c.name))?;
    }
    Ok(())
}

fn container_config(
    c: &Container,
    img: &ImageRecord,
    lower_dirs: Vec<PathBuf>,
    log_dir: &Path,
) -> anyhow::Result<ContainerConfig> {
    let ic = &img.config;
    let (command, args) = match (&c.command, &c.args) {
        (Some(cmd), args) => (cmd.clone(), args.clone().unwrap_or_default()),
        (None, Some(args)) => (ic.entrypoint.clone().unwrap_or_default(), args.clone()),
        (None, None) => (
            ic.entrypoint.clone().unwrap_or_default(),
            ic.cmd.clone().unwrap_or_default(),
        ),
    };
    let mut env: Vec<String> = ic.env.clone().unwrap_or_default();
    for e in c.env.iter().flatten() {
        let value = match &e.value_from {
            Some(_) => bail!(
                "container {}: env {}: valueFrom is not supported yet",
                c.name,
                e.name
            ),
            None => e.value.clone().unwrap_or_default(),
        };
        env.retain(|kv| kv.split('=').next() != Some(e.name.as_str()));
        env.push(format!("{}={value}", e.name));
    }
    let sc = c.security_context.as_ref();
    let user = match sc.and_then(|s| s.run_as_user) {
        Some(u) => match sc.and_then(|s| s.run_as_group) {
            Some(g) => format!("{u}:{g}"),
            None => u.to_string(),
        },
        None => ic.user.clone(),
    };
    let mut resources = Resources::default();
    if let Some(limits) = c.resources.as_ref().and_then(|r| r.limits.as_ref()) {
        if let Some(m) = limits.get("memory") {
            resources.memory_limit =
                Some(quantity::parse(&m.0, 1.0).with_context(|| {
                    format!("container {}: bad memory limit {:?}", c.name, m.0)
                })?);
        }
        if let Some(cpu) = limits.get("cpu") {
            let milli = quantity::parse(&cpu.0, 1000.0)
                .with_context(|| format!("container {}: bad cpu limit {:?}", c.name, cpu.0))?;
            resources.cpu_quota = Some(milli * 100);
            resources.cpu_period = Some(100_000);
        }
    }
    if let Some(cpu) = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("cpu"))
    {
        let milli = quantity::parse(&cpu.0, 1000.0)
            .with_context(|| format!("container {}: bad cpu request {:?}", c.name, cpu.0))?;
        resources.cpu_shares = Some(((milli as u64) * 1024 / 1000).max(2));
    }
    Ok(ContainerConfig {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        lower_dirs,
        command,
        args,
        env,
        working_dir: c
            .working_dir
            .clone()
            .unwrap_or_else(|| ic.working_dir.clone()),
        user,
        readonly_rootfs: sc
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false),
        privileged: sc.and_then(|s| s.privileged).unwrap_or(false),
        resources,
        log_path: log_dir.join(&c.name).join("0.log"),
        ..Default::default()
    })
}

pub fn pods(ctx: &PodContext) -> anyhow::Result<()> {
    let rt = ctx.runtime()?;
    println!(
        "{:<16} {:<24} {:<10} {:<16} CONTAINERS",
        "NAMESPACE", "NAME", "STATE", "IP"
    );
    for r in ctx.records() {
        let st = rt.sandbox_status(&r.sandbox).ok();
        let state = match st.as_ref().map(|s| s.state) {
            Some(SandboxState::Ready) => "Ready",
            _ => "NotReady",
        };
        let running = r
            .containers
            .iter()
            .filter(|(_, id)| {
                rt.status(id)
                    .map(|s| s.state == ContainerState::Running)
                    .unwrap_or(false)
            })
            .count();
        let ip = st.and_then(|s| s.ip).unwrap_or_default();
        println!(
            "{:<16} {:<24} {:<10} {:<16} {running}/{}",
            r.namespace,
            r.name,
            state,
            ip,
            r.containers.len()
        );
    }
    Ok(())
}

pub fn ps(ctx: &PodContext) -> anyhow::Result<()> {
    let rt = ctx.runtime()?;
    println!(
        "{:<14} {:<24} {:<16} {:<8} {:<5} IMAGE",
        "CONTAINER", "POD", "NAME", "STATE", "EXIT"
    );
    for r in ctx.records() {
        for (name, id) in &r.containers {
            let Ok(s) = rt.status(id) else { continue };
            let exit = s.exit_code.map(|c| c.to_string()).unwrap_or_default();
            println!(
                "{:<14} {:<24} {:<16} {:<8} {:<5} {}",
                &id[..13.min(id.len())],
                r.name,
                name,
                format!("{:?}", s.state),
                exit,
                s.image
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

pub fn logs(ctx: &PodContext, a: LogsArgs) -> anyhow::Result<()> {
    let rec = ctx.find(&a.pod)?;
    let id = rec.container_id(a.container.as_deref())?;
    let rt = ctx.runtime()?;
    let path = rt.status(id)?.log_path;
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
        let exited = rt
            .status(id)
            .map(|s| s.state == ContainerState::Exited)
            .unwrap_or(true);
        if !a.follow || (exited && complete == 0) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[derive(Args, Debug)]
pub struct PodArgs {
    /// Pod names (`name` or `namespace/name`).
    #[arg(required = true)]
    pub pods: Vec<String>,
    /// Seconds between SIGTERM and SIGKILL.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
}

pub fn stop(ctx: &PodContext, a: PodArgs) -> anyhow::Result<()> {
    let rt = ctx.runtime()?;
    for p in &a.pods {
        let rec = ctx.find(p)?;
        for (_, id) in &rec.containers {
            rt.stop(id, Duration::from_secs(a.timeout))?;
        }
        rt.stop_sandbox(&rec.sandbox)?;
        println!("pod/{} stopped", rec.name);
    }
    Ok(())
}

pub fn rm(ctx: &PodContext, a: PodArgs) -> anyhow::Result<()> {
    let rt = ctx.runtime()?;
    for p in &a.pods {
        let rec = ctx.find(p)?;
        for (_, id) in &rec.containers {
            rt.stop(id, Duration::from_secs(a.timeout))?;
            rt.remove(id)?;
        }
        rt.remove_sandbox(&rec.sandbox)?;
        std::fs::remove_file(ctx.record_path(&rec.namespace, &rec.name))?;
        println!("pod/{} removed", rec.name);
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
    pub timeout: u64,
    /// Command and arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Run a command in a container; prints its output and returns its exit code.
pub fn exec(ctx: &PodContext, a: ExecArgs) -> anyhow::Result<i32> {
    let rec = ctx.find(&a.pod)?;
    let id = rec.container_id(a.container.as_deref())?;
    let rt = ctx.runtime()?;
    let r = rt.exec_sync(id, &a.command, Duration::from_secs(a.timeout))?;
    std::io::stdout().write_all(&r.stdout)?;
    std::io::stderr().write_all(&r.stderr)?;
    if r.timed_out {
        bail!("command timed out after {}s", a.timeout);
    }
    Ok(r.exit_code)
}
