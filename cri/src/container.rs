//! Containers: CreateContainer, StartContainer, StopContainer,
//! RemoveContainer, ContainerStatus, ListContainers, ReopenContainerLog,
//! ExecSync.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use podctl_runtime::{ContainerState, ContainerStatus};

use crate::container_filter;
use crate::error::{CriError, Result};
use crate::image_volume;
use crate::nri::api::Event;
use crate::proto;
use crate::records::ContainerRecord;
use crate::sandbox::{is_full_id, resolve};
use crate::service::CriService;
use crate::spec::runtime_container;

fn event(
    kind: proto::ContainerEventType,
    id: &str,
    sandbox: &str,
) -> proto::ContainerEventResponse {
    proto::ContainerEventResponse {
        container_id: id.into(),
        container_event_type: kind as i32,
        created_at: podctl_shim::logfmt::now_ns(),
        pod_sandbox_status: Some(proto::PodSandboxStatus {
            id: sandbox.into(),
            ..Default::default()
        }),
        containers_statuses: vec![],
    }
}

/// A container about to be made: its ID, pod, image and what NRI plugins
/// set beyond its request.
struct Made {
    id: String,
    sandbox_id: String,
    img: podctl_images::ImageRecord,
    lower: Vec<PathBuf>,
    extras: crate::nri::adjust::RuntimeExtras,
}

impl CriService {
    /// Resolve a full ID or a unique prefix of a container ID.
    pub(crate) fn container_id(&self, id: &str) -> Result<String> {
        if is_full_id(id) && self.inner.records.has_container(id) {
            return Ok(id.to_string());
        }
        resolve(
            "container",
            id,
            self.inner.records.container_ids().into_iter(),
        )
    }

    /// Create a container in a ready sandbox; returns its ID. A retry of
    /// the same (sandbox, name, attempt) returns the existing container.
    pub(crate) async fn create_container(
        &self,
        sandbox_id: &str,
        config: Option<proto::ContainerConfig>,
        sandbox_config: Option<proto::PodSandboxConfig>,
    ) -> Result<String> {
        let config = config.ok_or_else(|| CriError::invalid("container config", "missing"))?;
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| CriError::invalid("container config", "metadata missing"))?;
        if meta.name.is_empty() {
            return Err(CriError::invalid("container metadata", "name is empty"));
        }
        let image = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image.is_empty() {
            return Err(CriError::invalid(
                format!("container {}", meta.name),
                "image is empty",
            ));
        }
        let sandbox_id = self.sandbox_id(sandbox_id)?;
        let sb = self.inner.records.sandbox(&sandbox_id)?;
        let sandbox_config = sandbox_config.unwrap_or(sb.config.clone());
        let key = format!("container/{sandbox_id}/{}_{}", meta.name, meta.attempt);
        let lock = self.name_lock(&key);
        let _held = lock.lock().await;
        if let Some(old) = self.inner.records.containers().into_iter().find(|r| {
            r.sandbox_id == sandbox_id
                && r.config.metadata.as_ref().map(|m| (&m.name, m.attempt))
                    == Some((&meta.name, meta.attempt))
        }) {
            tracing::info!(id = %old.id, name = %meta.name, "CreateContainer retried; returning the existing container");
            return Ok(old.id.clone());
        }
        let img = self.inner.store.get(&image).map_err(|e| match e {
            podctl_images::ImageError::NotFound { .. } => CriError::NotFound {
                kind: "image",
                id: image.clone(),
            },
            e => e.into(),
        })?;
        let lower = self.inner.store.layer_dirs(&img)?;
        // The ID is chosen first: NRI plugins hear of the container (and
        // may adjust its request) before it exists.
        let id = podctl_runtime::container::new_id()?;
        let _gate = self.nri_gate().await;
        let mut config = config;
        let extras = self
            .nri_create_container(&sandbox_id, &id, &mut config)
            .await?;
        let told = extras.is_some();
        let made = Made {
            id: id.clone(),
            sandbox_id: sandbox_id.clone(),
            img,
            lower,
            extras: extras.unwrap_or_default(),
        };
        let rec = match self.make_container(made, config, &sandbox_config).await {
            Ok(rec) => rec,
            Err(e) => {
                if told {
                    self.nri_create_undone(&sandbox_id, &id).await;
                }
                return Err(e);
            }
        };
        drop(_gate);
        self.emit(event(
            proto::ContainerEventType::ContainerCreatedEvent,
            &id,
            &sandbox_id,
        ));
        if let Err(e) = self
            .nri_container_event(Event::PostCreateContainer, &rec)
            .await
        {
            tracing::warn!(%id, error = %e, "NRI PostCreateContainer");
        }
        Ok(id)
    }

    /// The container `m.id` made from `config` by the runtime, and its
    /// record written; on failure nothing of it is left.
    async fn make_container(
        &self,
        m: Made,
        config: proto::ContainerConfig,
        sandbox_config: &proto::PodSandboxConfig,
    ) -> Result<ContainerRecord> {
        let log_path = match (
            sandbox_config.log_directory.as_str(),
            config.log_path.as_str(),
        ) {
            (_, "") => String::new(),
            ("", p) => p.to_string(),
            (d, p) => Path::new(d).join(p).display().to_string(),
        };
        // Image volumes become read-only host mounts in the config the
        // runtime gets; the record keeps the request as it came.
        let mut run_cfg = config.clone();
        let (mounts, root, cname) = (
            std::mem::take(&mut run_cfg.mounts),
            self.config().root.clone(),
            config
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default(),
        );
        let (mounts, image_volumes) = self
            .blocking(move |i| {
                let mut mounts = mounts;
                let vols = image_volume::prepare(&i.store, &root, &cname, &mut mounts)?;
                Ok((mounts, vols))
            })
            .await?;
        run_cfg.mounts = mounts;
        let mut rc = match runtime_container(&run_cfg, sandbox_config, &m.img, m.lower, &log_path) {
            Ok(rc) => rc,
            Err(e) => {
                image_volume::release(&image_volumes);
                return Err(e);
            }
        };
        if self.config().pids_limit > 0 {
            rc.resources.pids_limit = Some(self.config().pids_limit);
        }
        m.extras.apply(&mut rc);
        let (sid, cid) = (m.sandbox_id.clone(), m.id.clone());
        if let Err(e) = self
            .blocking(move |i| Ok(i.runtime.create_container_as(&sid, &cid, rc)?))
            .await
        {
            image_volume::release(&image_volumes);
            return Err(e);
        }
        podctl_runtime::failpoint::hit("create_container.runtime_created");
        let image_ref = m
            .img
            .repo_digests
            .first()
            .cloned()
            .unwrap_or_else(|| m.img.id.to_string());
        let rec = ContainerRecord {
            id: m.id.clone(),
            sandbox_id: m.sandbox_id,
            resources: config.linux.as_ref().and_then(|l| l.resources.clone()),
            config,
            image_id: m.img.id.to_string(),
            image_ref,
            log_path,
            image_volumes,
        };
        if let Err(e) = self.inner.records.put_container(&rec) {
            let cid = m.id.clone();
            let _ = self
                .blocking(move |i| Ok(i.runtime.remove_container(&cid)?))
                .await;
            image_volume::release(&rec.image_volumes);
            return Err(e);
        }
        Ok(rec)
    }

    pub(crate) async fn start_container(&self, id: &str) -> Result<()> {
        let id = self.container_id(id)?;
        let rec = self.inner.records.container(&id)?;
        self.nri_container_event(Event::StartContainer, &rec)
            .await?;
        let cid = id.clone();
        self.blocking(move |i| Ok(i.runtime.start_container(&cid)?))
            .await?;
        self.emit(event(
            proto::ContainerEventType::ContainerStartedEvent,
            &id,
            &rec.sandbox_id,
        ));
        if let Err(e) = self
            .nri_container_event(Event::PostStartContainer, &rec)
            .await
        {
            tracing::warn!(%id, error = %e, "NRI PostStartContainer");
        }
        Ok(())
    }

    /// SIGTERM (or the image's stop signal), SIGKILL after `timeout`
    /// seconds. Stopping a stopped or missing container succeeds.
    pub(crate) async fn stop_container(&self, id: &str, timeout: i64) -> Result<()> {
        let id = match self.container_id(id) {
            Ok(id) => id,
            Err(CriError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let t = Duration::from_secs(timeout.max(0) as u64);
        let cid = id.clone();
        let was_running = self
            .blocking(move |i| {
                let before = i.runtime.container_status(&cid)?.state;
                i.runtime.stop_container(&cid, t)?;
                Ok(before != ContainerState::Exited)
            })
            .await;
        if was_running.is_ok() {
            self.nri_container_stopped(&id).await;
        }
        match was_running {
            Ok(true) => {
                let sb = self
                    .inner
                    .records
                    .container(&id)
                    .map(|r| r.sandbox_id)
                    .unwrap_or_default();
                self.emit(event(
                    proto::ContainerEventType::ContainerStoppedEvent,
                    &id,
                    &sb,
                ));
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(CriError::Runtime(podctl_runtime::RuntimeError::NotFound { .. })) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Remove a container (killing it if needed). Removing a missing
    /// container succeeds.
    pub(crate) async fn remove_container(&self, id: &str) -> Result<()> {
        let id = match self.container_id(id) {
            Ok(id) => id,
            Err(CriError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let rec = self.inner.records.container(&id).ok();
        let sb = rec
            .as_ref()
            .map(|r| r.sandbox_id.clone())
            .unwrap_or_default();
        let cid = id.clone();
        let retired = self
            .blocking(move |i| Ok(i.runtime.retire_container(&cid)?))
            .await?;
        // Its processes are gone: the image volumes it used are free.
        if let Some(r) = &rec {
            image_volume::release(&r.image_volumes);
            self.nri_container_removing(r).await;
        }
        self.inner.records.remove_container(&id)?;
        // The answer need not wait for the shim's delete, the unmount and
        // the directories: they finish in the background, under the
        // container's lock (a pod removal waits for them; a crash leaves
        // them to the collector).
        if let Some(r) = retired {
            let inner = self.inner.clone();
            tokio::task::spawn_blocking(move || {
                let id = r.id().to_string();
                if let Err(e) = r.finish(&inner.runtime) {
                    tracing::warn!(%id, error = %e, "finishing a removal; the collector retries");
                }
            });
        }
        self.emit(event(
            proto::ContainerEventType::ContainerDeletedEvent,
            &id,
            &sb,
        ));
        Ok(())
    }

    /// Status of one container.
    pub(crate) async fn container_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<proto::ContainerStatusResponse> {
        let id = self.container_id(id)?;
        let rec = self.inner.records.container(&id)?;
        // Small state files read in place (as the records are): no lock,
        // no process to wait for, so no hop to the blocking pool.
        let st = self.inner.runtime.container_status(&id)?;
        let who = self.inner.runtime.process_identity(&id).ok();
        let mut info = HashMap::new();
        if verbose {
            let v = serde_json::json!({
                "pid": st.pid,
                "sandboxID": rec.sandbox_id,
                "config": rec.config,
                "imageRef": rec.image_ref,
            });
            info.insert("info".to_string(), v.to_string());
        }
        let mut status = status_of(&rec, &st);
        if let Some(who) = who {
            status.user = Some(proto::ContainerUser {
                linux: Some(proto::LinuxContainerUser {
                    uid: who.uid.into(),
                    gid: who.gid.into(),
                    supplemental_groups: who
                        .additional_gids
                        .iter()
                        .map(|g| i64::from(*g))
                        .collect(),
                }),
            });
        }
        Ok(proto::ContainerStatusResponse {
            status: Some(status),
            info,
        })
    }

    /// Containers matching the filter, oldest first.
    pub(crate) async fn list_containers(
        &self,
        filter: Option<proto::ContainerFilter>,
    ) -> Result<Vec<proto::Container>> {
        // Read in place, as the records are (see container_status).
        let all = self.inner.runtime.list_containers()?;
        let by_id: HashMap<&str, &ContainerStatus> =
            all.iter().map(|s| (s.id.as_str(), s)).collect();
        let mut out = Vec::new();
        for rec in self.inner.records.containers() {
            let Some(st) = by_id.get(rec.id.as_str()).copied() else {
                continue;
            };
            let state = state_of(st) as i32;
            // Filtered before anything is built: a kubelet's relist asks
            // for one pod's or one state's containers among hundreds.
            if let Some(f) = &filter {
                if !container_filter::matches(&rec, f.into()) {
                    continue;
                }
                if f.state.as_ref().is_some_and(|v| v.state != state) {
                    continue;
                }
            }
            let c = &rec.config;
            let mut image = c.image.clone().unwrap_or_default();
            image.annotations.clear();
            image.image_ref = rec.image_id.clone();
            let item = proto::Container {
                id: rec.id.clone(),
                pod_sandbox_id: rec.sandbox_id.clone(),
                metadata: c.metadata.clone(),
                image: Some(image),
                image_ref: rec.image_ref.clone(),
                state,
                created_at: st.created_at_ns,
                labels: c.labels.clone(),
                annotations: c.annotations.clone(),
                image_id: rec.image_id.clone(),
            };
            out.push(item);
        }
        out.sort_by_key(|c| c.created_at);
        Ok(out)
    }

    pub(crate) async fn reopen_container_log(&self, id: &str) -> Result<()> {
        let id = self.container_id(id)?;
        self.blocking(move |i| {
            let st = i.runtime.container_status(&id)?;
            if st.state != ContainerState::Running {
                return Err(CriError::invalid(
                    format!("container {id}"),
                    "is not running; its log cannot be reopened",
                ));
            }
            Ok(i.runtime.reopen_container_log(&id)?)
        })
        .await
    }

    /// Run a command to completion, capturing its output.
    pub(crate) async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: i64,
    ) -> Result<proto::ExecSyncResponse> {
        let id = self.container_id(id)?;
        if cmd.is_empty() {
            return Err(CriError::invalid("exec command", "empty"));
        }
        let t = Duration::from_secs(timeout.max(0) as u64);
        let r = self
            .blocking(move |i| Ok(i.runtime.exec_sync(&id, &cmd, t)?))
            .await?;
        Ok(proto::ExecSyncResponse {
            stdout: r.stdout,
            stderr: r.stderr,
            exit_code: r.exit_code,
        })
    }

    /// Where a container's log is (empty if none).
    pub fn container_log_path(&self, id: &str) -> Result<PathBuf> {
        let id = self.container_id(id)?;
        Ok(PathBuf::from(self.inner.records.container(&id)?.log_path))
    }
}

/// The CRI state of a runtime state.
fn state_of(st: &ContainerStatus) -> proto::ContainerState {
    match st.state {
        ContainerState::Created => proto::ContainerState::ContainerCreated,
        ContainerState::Running => proto::ContainerState::ContainerRunning,
        ContainerState::Exited => proto::ContainerState::ContainerExited,
        ContainerState::Unknown => proto::ContainerState::ContainerUnknown,
    }
}

/// CRI status from the CRI record and the runtime's status.
pub(crate) fn status_of(rec: &ContainerRecord, st: &ContainerStatus) -> proto::ContainerStatus {
    let c = &rec.config;
    let state = state_of(st);
    let mut vols = rec.image_volumes.iter();
    let mounts = c
        .mounts
        .iter()
        .map(|m| proto::Mount {
            container_path: m.container_path.clone(),
            host_path: m.host_path.clone(),
            readonly: m.readonly,
            selinux_relabel: m.selinux_relabel,
            propagation: m.propagation,
            recursive_read_only: m.recursive_read_only,
            image: m.image.as_ref().map(|spec| proto::ImageSpec {
                image: spec.image.clone(),
                user_specified_image: spec.user_specified_image.clone(),
                runtime_handler: spec.runtime_handler.clone(),
                image_ref: vols.next().map(|v| v.image_id.clone()).unwrap_or_default(),
                ..Default::default()
            }),
            image_sub_path: m.image_sub_path.clone(),
            ..Default::default()
        })
        .collect();
    let mut image = c.image.clone().unwrap_or_default();
    image.annotations.clear();
    image.image_ref = rec.image_id.clone();
    proto::ContainerStatus {
        id: rec.id.clone(),
        metadata: c.metadata.clone(),
        state: state as i32,
        created_at: st.created_at_ns,
        started_at: st.started_at_ns,
        finished_at: st.finished_at_ns,
        exit_code: st.exit_code.unwrap_or(0),
        image: Some(image),
        image_ref: rec.image_ref.clone(),
        reason: st.reason.clone(),
        message: st.message.clone(),
        labels: c.labels.clone(),
        annotations: c.annotations.clone(),
        mounts,
        log_path: rec.log_path.clone(),
        resources: rec.resources.clone().map(|r| proto::ContainerResources {
            linux: Some(r),
            windows: None,
        }),
        image_id: rec.image_id.clone(),
        user: None,
        stop_signal: c.stop_signal,
    }
}
