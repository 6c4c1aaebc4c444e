//! Starting things: the sandbox, a container (image by pull policy,
//! configuration, termination-message file (see `message`), postStart hook,
//! probes).

use k8s_openapi::api::core::v1::Container;
use podctl_cri::proto;
use tonic::Request;

use super::image::Image;
use super::PodWorker;
use crate::cri::Cri;
use crate::error::{CriContext, IoContext, NodeError, Result};
use crate::events::EventType;
use crate::probe;
use crate::status;

impl<C: Cri> PodWorker<C> {
    pub(super) async fn run_sandbox(&mut self) -> Result<()> {
        if self.volumes.is_none() {
            let facts = self.facts();
            match crate::volumes::Volumes::prepare(
                &self.cfg.pods_root,
                &self.pod,
                &facts,
                self.sources.as_ref(),
            )
            .await
            {
                Ok(v) => self.volumes = Some(v),
                Err(e) => {
                    self.event(None, EventType::Warning, "FailedMount", e.to_string());
                    return Err(e);
                }
            }
        }
        let log_dir = self
            .cfg
            .log_root
            .join(format!("{}_{}_{}", self.ns, self.name, self.uid));
        std::fs::create_dir_all(&log_dir).ctx("create", &log_dir)?;
        let mut config =
            crate::convert::sandbox_config(&self.pod, &self.name, &self.ns, &self.uid, &log_dir)?;
        self.name_sandbox(&mut config)?;
        crate::userns::apply(&self.pod, &mut config, &self.cfg.pods_root, &self.uid)?;
        let id = match self.existing_sandbox().await? {
            Some(id) => {
                tracing::info!(pod = %self.full_name(), sandbox = %id, "adopting the running sandbox");
                self.adopt_containers(&id).await?;
                id
            }
            None => {
                self.cri
                    .run_pod_sandbox(Request::new(proto::RunPodSandboxRequest {
                        config: Some(config.clone()),
                        runtime_handler: String::new(),
                    }))
                    .await
                    .cri("RunPodSandbox")?
                    .pod_sandbox_id
            }
        };
        podctl_images::failpoint::hit("pod_sync.sandbox_created");
        let st = self
            .cri
            .pod_sandbox_status(Request::new(proto::PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: false,
            }))
            .await
            .cri("PodSandboxStatus")?
            .status
            .unwrap_or_default();
        let net = st.network.unwrap_or_default();
        let mut ips: Vec<String> = std::iter::once(net.ip)
            .chain(net.additional_ips.into_iter().map(|i| i.ip))
            .filter(|ip| !ip.is_empty())
            .collect();
        if ips.is_empty() && !self.cfg.host_ip.is_empty() {
            ips.push(self.cfg.host_ip.clone());
        }
        self.facts.ips = ips;
        self.facts.host_ip = self.cfg.host_ip.clone();
        self.write_hosts()?;
        self.facts.ready = true;
        self.facts.created_ns = st.created_at;
        self.start_time = Some(status::time(st.created_at).unwrap_or_else(status::now));
        self.sandbox = Some((id, config));
        // Adopted running containers get their probes again.
        let (inits, apps) = self.spec_containers();
        for c in inits.iter().chain(apps.iter()) {
            let running = self
                .tracks
                .get(&c.name)
                .filter(|t| t.running())
                .and_then(|t| t.current.as_ref())
                .map(|s| s.id.clone());
            if let Some(cid) = running {
                if !self.probes.contains_key(&cid) {
                    self.start_probes(c, &cid);
                }
            }
        }
        Ok(())
    }

    /// A ready sandbox of this pod left by an earlier run of the agent
    /// (a restart must not start the pod twice).
    async fn existing_sandbox(&self) -> Result<Option<String>> {
        let filter = proto::PodSandboxFilter {
            label_selector: [(crate::cri::POD_UID_LABEL.to_string(), self.uid.clone())].into(),
            state: Some(proto::PodSandboxStateValue {
                state: proto::PodSandboxState::SandboxReady as i32,
            }),
            ..Default::default()
        };
        let mut items = self
            .cri
            .list_pod_sandbox(Request::new(proto::ListPodSandboxRequest {
                filter: Some(filter),
            }))
            .await
            .cri("ListPodSandbox")?
            .items;
        items.sort_by_key(|s| s.created_at);
        Ok(items.pop().map(|s| s.id))
    }

    /// Pick up the containers of an adopted sandbox: per name the newest
    /// attempt is current, the one before it previous, restarts = attempt.
    async fn adopt_containers(&mut self, sandbox: &str) -> Result<()> {
        let list = self
            .cri
            .list_containers(Request::new(proto::ListContainersRequest {
                filter: Some(proto::ContainerFilter {
                    pod_sandbox_id: sandbox.to_string(),
                    ..Default::default()
                }),
            }))
            .await
            .cri("ListContainers")?
            .containers;
        let mut by_name: std::collections::BTreeMap<String, Vec<(u32, String)>> =
            std::collections::BTreeMap::new();
        for c in list {
            let (name, attempt) = c
                .metadata
                .as_ref()
                .map(|m| (m.name.clone(), m.attempt))
                .unwrap_or_default();
            by_name.entry(name).or_default().push((attempt, c.id));
        }
        let (inits, apps) = self.spec_containers();
        for (name, mut attempts) in by_name {
            attempts.sort();
            let Some((attempt, id)) = attempts.pop() else {
                continue;
            };
            let spec = inits.iter().chain(apps.iter()).find(|c| c.name == name);
            let observe = |st: Option<proto::ContainerStatus>| {
                st.map(|st| super::message::with_message(&self.cfg, &self.uid, spec, st))
            };
            let mut current = crate::cri::container_status(&self.cri, &id).await?;
            if current
                .as_ref()
                .is_some_and(|c| c.state == proto::ContainerState::ContainerCreated as i32)
            {
                // Created, never started: an earlier sync was cut between
                // the two. Start it now, as the kubelet starts a container
                // it finds only created.
                tracing::info!(pod = %self.full_name(), container = %id, "starting an adopted container that was only created");
                if let Err(s) = self
                    .cri
                    .start_container(Request::new(proto::StartContainerRequest {
                        container_id: id.clone(),
                    }))
                    .await
                {
                    tracing::warn!(container = %id, error = %s.message(), "starting an adopted container");
                }
                current = crate::cri::container_status(&self.cri, &id).await?;
            }
            let current = observe(current);
            let previous = match attempts.pop() {
                Some((_, pid)) => observe(crate::cri::container_status(&self.cri, &pid).await?),
                None => None,
            };
            let t = self.tracks.entry(name).or_default();
            t.started = current
                .as_ref()
                .is_some_and(|c| c.state == proto::ContainerState::ContainerRunning as i32);
            t.current = current;
            t.previous = previous;
            t.restarts = i32::try_from(attempt).unwrap_or(i32::MAX);
        }
        Ok(())
    }

    fn set_waiting(&mut self, name: &str, reason: &str, message: String) {
        let t = self.tracks.entry(name.to_string()).or_default();
        t.waiting = Some((reason.to_string(), message));
    }

    /// Start (or restart) container `c`.
    pub(super) async fn start(&mut self, c: &Container) -> Result<()> {
        let Some((sandbox, sandbox_config)) = self.sandbox.clone() else {
            return Ok(());
        };
        let image = match self.ensure_image(c).await? {
            Image::Ready(i) => i,
            Image::Waiting(reason, msg) => {
                self.set_waiting(&c.name, &reason, msg);
                return Ok(());
            }
        };
        // The images of its image volumes, by their own pull policies.
        if let Image::Waiting(reason, msg) = self.ensure_volume_images(c).await? {
            self.set_waiting(&c.name, &reason, msg);
            return Ok(());
        }
        let t = self.tracks.get(&c.name).cloned().unwrap_or_default();
        let attempt = if t.current.is_some() {
            t.restarts + 1
        } else {
            0
        };
        let attempt_u = u32::try_from(attempt).unwrap_or(0);
        let config = match self.container_config(c, &image, attempt_u).await {
            Ok(cfg) => cfg,
            Err(e) => {
                let msg = e.to_string();
                self.event(
                    Some(&c.name),
                    EventType::Warning,
                    "Failed",
                    format!("Error: {msg}"),
                );
                self.set_waiting(&c.name, "CreateContainerConfigError", msg);
                return Ok(());
            }
        };
        let created = self
            .cri
            .create_container(Request::new(proto::CreateContainerRequest {
                pod_sandbox_id: sandbox.clone(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            }))
            .await;
        let id = match created {
            Ok(r) => r.into_inner().container_id,
            Err(s) => {
                let msg = s.message().to_string();
                self.event(
                    Some(&c.name),
                    EventType::Warning,
                    "Failed",
                    format!("Error: {msg}"),
                );
                self.set_waiting(&c.name, "CreateContainerError", msg);
                return Ok(());
            }
        };
        podctl_images::failpoint::hit("pod_sync.container_created");
        self.event(
            Some(&c.name),
            EventType::Normal,
            "Created",
            format!("Created container {}", c.name),
        );
        // A container that fails to start is kept: it shows as exited
        // (StartError) and is restarted with back-off like any other.
        let start_error = self
            .cri
            .start_container(Request::new(proto::StartContainerRequest {
                container_id: id.clone(),
            }))
            .await
            .err()
            .map(|s| s.message().to_string());
        match &start_error {
            Some(msg) => self.event(
                Some(&c.name),
                EventType::Warning,
                "Failed",
                format!("Error: {msg}"),
            ),
            None => self.event(
                Some(&c.name),
                EventType::Normal,
                "Started",
                format!("Started container {}", c.name),
            ),
        }
        // The new container replaces the current one; one dead container
        // per name is kept (for `logs --previous`).
        let old_previous = t.previous.as_ref().map(|p| p.id.clone());
        let st = crate::cri::container_status(&self.cri, &id)
            .await?
            .map(|st| super::message::with_message(&self.cfg, &self.uid, Some(c), st));
        let entry = self.tracks.entry(c.name.clone()).or_default();
        if let Some(cur) = entry.current.take() {
            entry.previous = Some(cur);
            entry.restarts += 1;
        }
        entry.current = st;
        entry.waiting = start_error
            .clone()
            .map(|m| ("RunContainerError".to_string(), m));
        entry.ready = false;
        entry.started = false;
        if let Some(old) = old_previous {
            let _ = self
                .cri
                .remove_container(Request::new(proto::RemoveContainerRequest {
                    container_id: old,
                }))
                .await;
        }
        if start_error.is_some() {
            return Ok(());
        }
        self.start_probes(c, &id);
        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
            if let Err(msg) = self.run_hook(c, &id, h, None).await {
                self.event(
                    Some(&c.name),
                    EventType::Warning,
                    "FailedPostStartHook",
                    format!("PostStartHook failed: {msg}"),
                );
                self.kill_container(c, None).await;
            }
        }
        Ok(())
    }

    fn start_probes(&mut self, c: &Container, id: &str) {
        let ip = self
            .facts
            .ips
            .first()
            .cloned()
            .unwrap_or_else(|| "127.0.0.1".into());
        let target = probe::Target {
            container_id: id.to_string(),
            ip,
        };
        let ports = c.ports.clone().unwrap_or_default();
        let mut handles = Vec::new();
        if c.startup_probe.is_none() {
            probe::no_startup_probe(&self.results, id);
        }
        for (kind, p) in [
            (probe::Kind::Startup, &c.startup_probe),
            (probe::Kind::Readiness, &c.readiness_probe),
            (probe::Kind::Liveness, &c.liveness_probe),
        ] {
            if let Some(p) = p {
                handles.push(probe::spawn(
                    self.cri.clone(),
                    kind,
                    p.clone(),
                    target.clone(),
                    ports.clone(),
                    self.results.clone(),
                ));
            }
        }
        self.probes.insert(id.to_string(), handles);
    }

    /// The user an image runs as (ImageStatus).
    async fn image_user(&self, image: &str) -> crate::security::ImageUser {
        let st = self
            .cri
            .image_status(Request::new(proto::ImageStatusRequest {
                image: Some(proto::ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                verbose: false,
            }))
            .await
            .ok()
            .and_then(|r| r.into_inner().image);
        crate::security::ImageUser {
            uid: st.as_ref().and_then(|i| i.uid.as_ref()).map(|u| u.value),
            username: st.map(|i| i.username).unwrap_or_default(),
        }
    }

    /// CreateContainer's configuration: the conversion of the spec plus
    /// attempt, log path, OOM score and the termination-message file.
    async fn container_config(
        &mut self,
        c: &Container,
        image: &str,
        attempt: u32,
    ) -> Result<proto::ContainerConfig> {
        let facts = self.facts();
        let env = crate::envvars::resolve(&self.pod, &facts, c, self.sources.as_ref()).await?;
        let vars: std::collections::BTreeMap<String, String> = env.iter().cloned().collect();
        // valueFrom is resolved here; the conversion only sees plain values.
        let mut plain = c.clone();
        plain.env = None;
        plain.env_from = None;
        let mut cfg = crate::convert::container_config(&plain, image).map_err(|e| match e {
            NodeError::Container {
                container, reason, ..
            } => NodeError::Container {
                pod: self.full_name(),
                container,
                reason,
            },
            other => other,
        })?;
        if let Some(m) = cfg.metadata.as_mut() {
            m.attempt = attempt;
        }
        let image_user = self.image_user(image).await;
        crate::security::verify_non_root(&self.pod, c, &image_user).map_err(|reason| {
            NodeError::Container {
                pod: self.full_name(),
                container: c.name.clone(),
                reason,
            }
        })?;
        let seccomp_root = self
            .cfg
            .pods_root
            .parent()
            .unwrap_or(&self.cfg.pods_root)
            .join("seccomp");
        if let Some(linux) = cfg.linux.as_mut() {
            linux.security_context = Some(crate::security::container_context(
                &self.pod,
                c,
                &image_user,
                &seccomp_root.display().to_string(),
            ));
        }
        cfg.annotations
            .insert(super::HASH_ANNOTATION.into(), super::spec_hash(c));
        // As the kubelet labels containers: crictl's POD column, and the
        // owner of a container's stats (eviction) without a lookup.
        let (ns, name) = (
            self.pod.metadata.namespace.clone().unwrap_or_default(),
            self.pod.metadata.name.clone().unwrap_or_default(),
        );
        cfg.labels.extend([
            ("io.kubernetes.pod.name".to_string(), name),
            ("io.kubernetes.pod.namespace".to_string(), ns),
            (crate::cri::POD_UID_LABEL.to_string(), self.uid.clone()),
        ]);
        cfg.envs = env
            .iter()
            .map(|(k, v)| proto::KeyValue {
                key: k.clone(),
                value: v.clone().into_bytes(),
            })
            .collect();
        cfg.command = cfg
            .command
            .iter()
            .map(|a| crate::envvars::expand(a, &vars))
            .collect();
        cfg.args = cfg
            .args
            .iter()
            .map(|a| crate::envvars::expand(a, &vars))
            .collect();
        if let Some(v) = self.volumes.as_mut() {
            cfg.mounts.extend(v.mounts(c, &vars)?);
        }
        cfg.mounts.extend(self.hosts_mount(c));
        cfg.log_path = format!("{}/{attempt}.log", c.name);
        let spec = self.pod.spec.clone().unwrap_or_default();
        let qos = crate::resources::qos_class(&spec);
        if let Some(r) = cfg.linux.as_mut().and_then(|l| l.resources.as_mut()) {
            r.oom_score_adj =
                crate::resources::oom_score_adj(qos, c, crate::resources::memory_capacity());
        }
        let file = super::message::message_file(&self.cfg, &self.uid, &c.name, attempt);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).ctx("create", dir)?;
        }
        std::fs::write(&file, b"").ctx("write", &file)?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666))
                .ctx("chmod", &file)?;
        }
        cfg.mounts.push(proto::Mount {
            container_path: c
                .termination_message_path
                .clone()
                .unwrap_or_else(|| "/dev/termination-log".into()),
            host_path: file.display().to_string(),
            ..Default::default()
        });
        Ok(cfg)
    }
}
