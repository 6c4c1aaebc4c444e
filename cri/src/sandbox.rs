//! Pod sandboxes: RunPodSandbox, StopPodSandbox, RemovePodSandbox,
//! PodSandboxStatus, ListPodSandbox.

use std::collections::HashMap;
use std::path::PathBuf;

use podctl_runtime::{DnsConfig, PortMapping, SandboxConfig, SandboxState, SandboxStatus};

use crate::container_filter::sandbox_matches;
use crate::error::{CriError, Result};
use crate::proto;
use crate::records::SandboxRecord;
use crate::service::CriService;

/// `<name>_<namespace>_<uid>_<attempt>`, unique per sandbox.
pub(crate) fn sandbox_name(m: &proto::PodSandboxMetadata) -> String {
    format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
}

fn ns_mode(o: Option<&proto::NamespaceOption>, f: fn(&proto::NamespaceOption) -> i32) -> i32 {
    o.map(f).unwrap_or(proto::NamespaceMode::Pod as i32)
}

impl CriService {
    /// Create and start a sandbox; returns its ID. A retried request for
    /// a (name, namespace, uid, attempt) whose sandbox is ready returns
    /// that sandbox.
    pub(crate) async fn run_sandbox(
        &self,
        config: Option<proto::PodSandboxConfig>,
        runtime_handler: String,
    ) -> Result<String> {
        let config = config.ok_or_else(|| CriError::invalid("sandbox config", "missing"))?;
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| CriError::invalid("sandbox config", "metadata missing"))?;
        for (field, v) in [("name", &meta.name), ("namespace", &meta.namespace)] {
            if v.is_empty() {
                return Err(CriError::invalid(
                    "sandbox metadata",
                    format!("{field} is empty"),
                ));
            }
        }
        if !runtime_handler.is_empty() && !self.config().runtime_handlers.contains(&runtime_handler)
        {
            return Err(CriError::invalid(
                "runtime handler",
                format!(
                    "{runtime_handler:?} is not one of {:?}",
                    self.config().runtime_handlers
                ),
            ));
        }
        let name = sandbox_name(&meta);
        let lock = self.name_lock(&format!("sandbox/{name}"));
        let _held = lock.lock().await;
        if let Some(old) = self
            .inner
            .records
            .sandboxes()
            .into_iter()
            .find(|r| r.config.metadata.as_ref().map(sandbox_name).as_deref() == Some(&name))
        {
            let id = old.id.clone();
            let st = self
                .blocking(move |i| Ok(i.runtime.sandbox_status(&id)?))
                .await;
            if matches!(st, Ok(s) if s.state == SandboxState::Ready) {
                tracing::info!(id = %old.id, %name, "RunPodSandbox retried; returning the ready sandbox");
                return Ok(old.id.clone());
            }
            return Err(CriError::NameReserved {
                kind: "sandbox",
                name,
                id: old.id.clone(),
            });
        }
        let mut rc = runtime_config(&config)?;
        if self.config().pod_pids_limit > 0 {
            rc.resources.get_or_insert_with(Default::default).pids_limit =
                Some(self.config().pod_pids_limit);
        }
        let _gate = self.nri_gate().await;
        // The claim keeps collectors (crate::collect, in any process) off
        // the sandbox until its record is written.
        let (sb, claim) = self
            .blocking(move |i| Ok(i.runtime.run_sandbox_claimed(rc)?))
            .await?;
        podctl_runtime::failpoint::hit("run_sandbox.runtime_created");
        if let Err(e) = self.nri_run_pod(&sb.id, &config, &runtime_handler).await {
            drop(claim);
            let id = sb.id.clone();
            if let Err(re) = self
                .blocking(move |i| Ok(i.runtime.remove_sandbox(&id)?))
                .await
            {
                tracing::warn!(id = %sb.id, error = %re, "removing a sandbox an NRI plugin refused");
            }
            return Err(e);
        }
        let rec = SandboxRecord {
            id: sb.id.clone(),
            config,
            runtime_handler,
        };
        let put = self.inner.records.put_sandbox(&rec);
        drop(claim);
        if let Err(e) = put {
            let id = sb.id.clone();
            let _ = self
                .blocking(move |i| Ok(i.runtime.remove_sandbox(&id)?))
                .await;
            return Err(e);
        }
        Ok(sb.id)
    }

    /// UpdatePodSandboxResources: remember the pod's new resources and
    /// overhead in its config and, when podctl made the pod's cgroup (no
    /// cgroup parent in the request), apply their sum to it. With a cgroup
    /// parent the caller has already resized the pod's cgroup.
    pub(crate) async fn update_sandbox_resources(
        &self,
        id: &str,
        overhead: Option<proto::LinuxContainerResources>,
        resources: Option<proto::LinuxContainerResources>,
    ) -> Result<()> {
        let id = self.sandbox_id(id)?;
        let lock = self.name_lock(&format!("sandbox-resources/{id}"));
        let _held = lock.lock().await;
        let mut rec = self.inner.records.sandbox(&id)?;
        let linux = rec.config.linux.get_or_insert_with(Default::default);
        if linux.cgroup_parent.is_empty() {
            if let Some(total) = pod_total(resources.as_ref(), overhead.as_ref()) {
                let sid = id.clone();
                self.blocking(move |i| Ok(i.runtime.update_sandbox_resources(&sid, &total)?))
                    .await?;
            }
        }
        if resources.is_some() {
            linux.resources = resources;
        }
        if overhead.is_some() {
            linux.overhead = overhead;
        }
        self.inner.records.put_sandbox(&rec)
    }

    /// Resolve a full ID or a unique prefix of a sandbox ID.
    pub(crate) fn sandbox_id(&self, id: &str) -> Result<String> {
        if is_full_id(id) && self.inner.records.has_sandbox(id) {
            return Ok(id.to_string());
        }
        resolve("sandbox", id, self.inner.records.sandbox_ids().into_iter())
    }

    /// Stop the sandbox's containers and pause, detach its network.
    /// Stopping a missing sandbox succeeds.
    pub(crate) async fn stop_sandbox(&self, id: &str) -> Result<()> {
        let id = match self.sandbox_id(id) {
            Ok(id) => id,
            Err(CriError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let running: Vec<String> = self
            .inner
            .records
            .containers()
            .into_iter()
            .filter(|c| c.sandbox_id == id)
            .map(|c| c.id.clone())
            .collect();
        for c in &running {
            if let Err(e) = self.stop_container(c, 0).await {
                tracing::warn!(container = %c, error = %e, "stopping container of sandbox");
            }
        }
        self.nri_pod_stopping(&id).await;
        self.blocking(move |i| Ok(i.runtime.stop_sandbox(&id)?))
            .await
    }

    /// Remove the sandbox and its containers. Removing a missing sandbox
    /// succeeds.
    pub(crate) async fn remove_sandbox(&self, id: &str) -> Result<()> {
        let id = match self.sandbox_id(id) {
            Ok(id) => id,
            Err(CriError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let mine: Vec<String> = self
            .inner
            .records
            .containers()
            .into_iter()
            .filter(|c| c.sandbox_id == id)
            .map(|c| c.id.clone())
            .collect();
        for c in &mine {
            self.remove_container(c).await?;
        }
        let sid = id.clone();
        self.blocking(move |i| Ok(i.runtime.remove_sandbox(&sid)?))
            .await?;
        podctl_runtime::failpoint::hit("remove_pod_sandbox.runtime_removed");
        self.nri_pod_removing(&id).await;
        self.inner.records.remove_sandbox(&id)
    }

    /// Status of one sandbox.
    pub(crate) async fn sandbox_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<proto::PodSandboxStatusResponse> {
        let id = self.sandbox_id(id)?;
        let rec = self.inner.records.sandbox(&id)?;
        // Read in place, as the records are (see container_status).
        let st = self.inner.runtime.sandbox_status(&id)?;
        let status = status_of(&rec, &st);
        let mut info = HashMap::new();
        if verbose {
            let v = serde_json::json!({
                "pid": st.pid,
                "netns": st.netns,
                "runtimeHandler": rec.runtime_handler,
                "config": rec.config,
                "ip": st.ip,
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(proto::PodSandboxStatusResponse {
            status: Some(status),
            info,
            ..Default::default()
        })
    }

    /// Sandboxes matching the filter, oldest first.
    pub(crate) async fn list_sandboxes(
        &self,
        filter: Option<proto::PodSandboxFilter>,
    ) -> Result<Vec<proto::PodSandbox>> {
        // Read in place, as the records are (see container_status).
        let all = self.inner.runtime.list_sandboxes()?;
        let by_id: HashMap<&str, &SandboxStatus> = all.iter().map(|s| (s.id.as_str(), s)).collect();
        let mut out = Vec::new();
        for rec in self.inner.records.sandboxes() {
            let Some(st) = by_id.get(rec.id.as_str()).copied() else {
                continue;
            };
            let state = state_of(st) as i32;
            // Filtered before anything is built.
            if let Some(f) = &filter {
                if !sandbox_matches(rec.as_ref(), &f.id, &f.label_selector)
                    || f.state.as_ref().is_some_and(|v| v.state != state)
                {
                    continue;
                }
            }
            let item = proto::PodSandbox {
                id: rec.id.clone(),
                metadata: rec.config.metadata.clone(),
                state,
                created_at: st.created_at_ns,
                labels: rec.config.labels.clone(),
                annotations: rec.config.annotations.clone(),
                runtime_handler: rec.runtime_handler.clone(),
            };
            out.push(item);
        }
        out.sort_by_key(|s| s.created_at);
        Ok(out)
    }
}

/// A whole ID (64 hex digits), which names a record without a listing.
pub(crate) fn is_full_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A full ID, or the one ID that starts with `id`.
pub(crate) fn resolve(
    kind: &'static str,
    id: &str,
    ids: impl Iterator<Item = String>,
) -> Result<String> {
    if id.is_empty() {
        return Err(CriError::invalid(format!("{kind} id"), "empty"));
    }
    let found: Vec<String> = ids.filter(|x| x.starts_with(id)).collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(CriError::NotFound {
            kind,
            id: id.into(),
        }),
        many => match many.iter().find(|x| x.as_str() == id) {
            Some(x) => Ok(x.clone()),
            None => Err(CriError::invalid(
                format!("{kind} id"),
                format!("{id:?} is ambiguous ({} matches)", many.len()),
            )),
        },
    }
}

/// The CRI state of a runtime state.
fn state_of(st: &SandboxStatus) -> proto::PodSandboxState {
    match st.state {
        SandboxState::Ready => proto::PodSandboxState::SandboxReady,
        SandboxState::NotReady => proto::PodSandboxState::SandboxNotready,
    }
}

fn status_of(rec: &SandboxRecord, st: &SandboxStatus) -> proto::PodSandboxStatus {
    let c = &rec.config;
    let ns = c
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone());
    proto::PodSandboxStatus {
        id: rec.id.clone(),
        metadata: c.metadata.clone(),
        state: state_of(st) as i32,
        created_at: st.created_at_ns,
        network: Some(proto::PodSandboxNetworkStatus {
            ip: st.ip.clone().unwrap_or_default(),
            additional_ips: vec![],
        }),
        linux: Some(proto::LinuxPodSandboxStatus {
            namespaces: Some(proto::Namespace {
                options: Some(ns.unwrap_or_default()),
            }),
        }),
        labels: c.labels.clone(),
        annotations: c.annotations.clone(),
        runtime_handler: rec.runtime_handler.clone(),
    }
}

/// The runtime's sandbox configuration from a CRI one.
/// The limits of a pod: its containers' sum plus the sandbox overhead.
fn pod_total(
    resources: Option<&proto::LinuxContainerResources>,
    overhead: Option<&proto::LinuxContainerResources>,
) -> Option<podctl_runtime::Resources> {
    let r = crate::spec::resources_of(resources?);
    let Some(o) = overhead.map(crate::spec::resources_of) else {
        return Some(r);
    };
    let add = |a: Option<i64>, b: Option<i64>| a.map(|a| a.saturating_add(b.unwrap_or(0)));
    Some(podctl_runtime::Resources {
        memory_limit: add(r.memory_limit, o.memory_limit),
        cpu_shares: r
            .cpu_shares
            .map(|s| s.saturating_add(o.cpu_shares.unwrap_or(0))),
        cpu_quota: add(r.cpu_quota, o.cpu_quota),
        ..r
    })
}

pub(crate) fn runtime_config(c: &proto::PodSandboxConfig) -> Result<SandboxConfig> {
    let meta = c.metadata.clone().unwrap_or_default();
    let sc = c.linux.as_ref().and_then(|l| l.security_context.as_ref());
    let nso = sc.and_then(|s| s.namespace_options.as_ref());
    let node = proto::NamespaceMode::Node as i32;
    let pod = proto::NamespaceMode::Pod as i32;
    let mut ports = Vec::new();
    for p in &c.port_mappings {
        if p.host_port == 0 {
            continue;
        }
        let port = |v: i32, what: &str| {
            u16::try_from(v)
                .map_err(|_| CriError::invalid("port mapping", format!("{what} {v} out of range")))
        };
        ports.push(PortMapping {
            host_port: port(p.host_port, "host_port")?,
            container_port: port(p.container_port, "container_port")?,
            protocol: match proto::Protocol::try_from(p.protocol) {
                Ok(proto::Protocol::Udp) => "udp",
                Ok(proto::Protocol::Sctp) => "sctp",
                _ => "tcp",
            }
            .into(),
            host_ip: p.host_ip.clone(),
        });
    }
    Ok(SandboxConfig {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        attempt: meta.attempt,
        hostname: c.hostname.clone(),
        host_network: ns_mode(nso, |o| o.network) == node,
        host_ipc: ns_mode(nso, |o| o.ipc) == node,
        host_pid: nso.map(|o| o.pid) == Some(node),
        share_pid: nso.map(|o| o.pid) == Some(pod),
        port_mappings: ports,
        labels: c.labels.clone().into_iter().collect(),
        annotations: c.annotations.clone().into_iter().collect(),
        log_directory: PathBuf::from(&c.log_directory),
        dns: c.dns_config.as_ref().map(|d| DnsConfig {
            servers: d.servers.clone(),
            searches: d.searches.clone(),
            options: d.options.clone(),
        }),
        resources: c
            .linux
            .as_ref()
            .and_then(|l| l.resources.as_ref())
            .map(crate::spec::resources_of),
        cgroup_parent: c
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .filter(|p| !p.is_empty()),
        userns: crate::userns::pod_userns(nso)?,
    })
}
