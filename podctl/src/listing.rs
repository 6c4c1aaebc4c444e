//! `podctl pods` and `podctl ps`: what runs here, as a table or as JSON or
//! YAML (`-o`).

use std::collections::{HashMap, HashSet};

use clap::Args;
use k8s_openapi::api::core::v1::Pod;
use podctl_cri::proto;
use serde::Serialize;

use crate::output::{print_machine, Output};
use crate::pods::{pods_of, status, PodContext};
use crate::revive;
use crate::run::phase;
use crate::supervise;

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
    /// Output format: a table, or the Kubernetes Pods with their status as
    /// JSON (a List) or YAML.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
}

/// Pods run by `podctl run` (with their status), by name; those that had
/// lost their supervisor get a new one and show as Unknown this time.
fn supervised(ctx: &PodContext) -> Vec<Pod> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(supervise::pods_dir(ctx))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Some(p) = supervise::read_status(&e.path()) {
            out.push(if revive::revive(ctx, &e.path(), &p) {
                revive::mark_unknown(p)
            } else {
                p
            });
        }
    }
    out.sort_by_key(|p| (p.metadata.namespace.clone(), p.metadata.name.clone()));
    out
}

/// The REASON column: why a container waits (other than the ordinary
/// ContainerCreating/PodInitializing), else why the pod does not get on
/// (e.g. FailedCreatePodSandBox).
fn reason(p: &Pod) -> String {
    let st = p.status.clone().unwrap_or_default();
    st.init_container_statuses
        .iter()
        .flatten()
        .chain(st.container_statuses.iter().flatten())
        .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .filter(|r| r != "ContainerCreating" && r != "PodInitializing")
        .or(st.reason)
        .unwrap_or_default()
}

pub async fn pods(ctx: &PodContext, a: PodsArgs) -> anyhow::Result<()> {
    let listed = supervised(ctx);
    if print_machine(a.output, &listed)? {
        return Ok(());
    }
    println!(
        "{:<16} {:<24} {:<10} {:<6} {:<9} {:<16} REASON",
        "NAMESPACE", "NAME", "PHASE", "READY", "RESTARTS", "IP"
    );
    let mut shown = HashSet::new();
    for p in &listed {
        let st = p.status.clone().unwrap_or_default();
        let cs = st.container_statuses.clone().unwrap_or_default();
        let ready = cs.iter().filter(|c| c.ready).count();
        let restarts: i32 = cs.iter().map(|c| c.restart_count).sum();
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let name = p.metadata.name.clone().unwrap_or_default();
        println!(
            "{:<16} {:<24} {:<10} {:<6} {:<9} {:<16} {}",
            ns,
            name,
            phase(p),
            format!("{ready}/{}", cs.len()),
            restarts,
            st.pod_ip.unwrap_or_default(),
            reason(p)
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

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Output format: a table, or the containers as JSON (a List) or YAML.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
}

/// One container of `podctl ps`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    id: String,
    namespace: String,
    pod: String,
    name: String,
    attempt: u32,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    /// The image as the user wrote it.
    image: String,
    /// The image's ID (config digest).
    image_id: String,
}

/// The image as the user wrote it: the manifest's (CRI
/// `user_specified_image`), else what the CRI client asked for, an image
/// ID shown as its first tag.
fn image_name(spec: Option<&proto::ImageSpec>, tags: &HashMap<String, String>) -> String {
    let Some(i) = spec else {
        return String::new();
    };
    if !i.user_specified_image.is_empty() {
        return i.user_specified_image.clone();
    }
    tags.get(&i.image)
        .cloned()
        .unwrap_or_else(|| i.image.clone())
}

pub async fn ps(ctx: &PodContext, a: PsArgs) -> anyhow::Result<()> {
    let cri = ctx.cri()?;
    let tags: HashMap<String, String> = ctx
        .images
        .store()?
        .list()?
        .into_iter()
        .filter_map(|i| Some((i.id.to_string(), i.repo_tags.first()?.clone())))
        .collect();
    let mut rows = Vec::new();
    for p in pods_of(&cri).await? {
        let meta = p.sandbox.metadata.clone().unwrap_or_default();
        for c in &p.containers {
            let Ok(s) = status(&cri, &c.id).await else {
                continue;
            };
            let exited = s.state == proto::ContainerState::ContainerExited as i32;
            rows.push(Row {
                id: c.id.clone(),
                namespace: meta.namespace.clone(),
                pod: meta.name.clone(),
                name: s
                    .metadata
                    .as_ref()
                    .map(|m| m.name.clone())
                    .unwrap_or_default(),
                attempt: s.metadata.as_ref().map(|m| m.attempt).unwrap_or_default(),
                state: state_name(s.state),
                exit_code: exited.then_some(s.exit_code),
                image: image_name(s.image.as_ref(), &tags),
                image_id: c.image_id.clone(),
            });
        }
    }
    if print_machine(a.output, &rows)? {
        return Ok(());
    }
    println!(
        "{:<14} {:<24} {:<16} {:<8} {:<5} IMAGE",
        "CONTAINER", "POD", "NAME", "STATE", "EXIT"
    );
    for r in &rows {
        println!(
            "{:<14} {:<24} {:<16} {:<8} {:<5} {}",
            &r.id[..13.min(r.id.len())],
            r.pod,
            r.name,
            r.state,
            r.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            r.image
        );
    }
    Ok(())
}
