//! Where the CRI calls meet the NRI plugins. Every hook is a no-op when
//! NRI is off or no plugin subscribed to the event.
//!
//! Creation events (RunPodSandbox, CreateContainer) are sent once the
//! runtime made the object and before its record is written, so while a
//! plugin holds one the object is in no list and no status; a refusal
//! undoes the creation. StartContainer is sent before the start, so a
//! container's own exit cannot be told before it. Stops are told once per
//! object: on StopContainer, on a container's own exit (found by
//! [`CriService::watch_exits`]) or before its removal, whichever is first.

use std::sync::Arc;
use std::time::Duration;

use podctl_runtime::{ContainerState, SandboxState};
use tokio::sync::OwnedRwLockReadGuard;

use super::adjust::{Adjuster, RuntimeExtras};
use super::api::{self, CreateContainerResponse, Event};
use super::{convert, locked, Nri};
use crate::error::{CriError, Result};
use crate::proto;
use crate::records::ContainerRecord;
use crate::service::CriService;

/// How often containers are checked for exits plugins were not told of.
const EXIT_SCAN: Duration = Duration::from_millis(500);

impl CriService {
    fn nri(&self) -> Option<&Arc<Nri>> {
        self.inner.nri.get()
    }

    /// Held by a pod or container creation from before its NRI event
    /// until its record is written (see `Nri::gate`).
    pub(crate) async fn nri_gate(&self) -> Option<OwnedRwLockReadGuard<()>> {
        Some(self.nri()?.gate.clone().read_owned().await)
    }

    fn nri_pod(&self, id: &str) -> api::PodSandbox {
        match self.inner.records.sandbox(id) {
            Ok(rec) => {
                let st = self.inner.runtime.sandbox_status(id).ok();
                convert::pod(&rec, st.as_ref())
            }
            Err(_) => api::PodSandbox {
                id: id.into(),
                ..Default::default()
            },
        }
    }

    fn nri_container(&self, rec: &ContainerRecord) -> api::Container {
        let st = self.inner.runtime.container_status(&rec.id).ok();
        convert::container(&rec.id, &rec.sandbox_id, &rec.config, st.as_ref())
    }

    /// Every recorded pod and container, for a new plugin.
    pub(super) async fn nri_snapshot(&self) -> (Vec<api::PodSandbox>, Vec<api::Container>) {
        let pods = self
            .inner
            .records
            .sandboxes()
            .iter()
            .map(|r| {
                let st = self.inner.runtime.sandbox_status(&r.id).ok();
                convert::pod(r, st.as_ref())
            })
            .collect();
        let containers = self
            .inner
            .records
            .containers()
            .iter()
            .map(|r| self.nri_container(r))
            .collect();
        (pods, containers)
    }

    /// Pods and containers stopped before NRI started need no stop event.
    pub(super) fn seed_stopped(&self, nri: &Nri) {
        for r in self.inner.records.sandboxes() {
            if matches!(self.inner.runtime.sandbox_status(&r.id), Ok(s) if s.state != SandboxState::Ready)
            {
                locked(&nri.stopped_pods).insert(r.id.clone());
            }
        }
        for r in self.inner.records.containers() {
            if matches!(self.inner.runtime.container_status(&r.id), Ok(s) if s.state == ContainerState::Exited)
            {
                locked(&nri.stopped_containers).insert(r.id.clone());
            }
        }
    }

    /// Tell plugins of containers that exited by themselves.
    pub(super) fn watch_exits(&self) {
        let svc = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EXIT_SCAN);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(nri) = svc.nri() else { return };
                let exited: Vec<String> = svc
                    .inner
                    .records
                    .containers()
                    .iter()
                    .filter(|r| !locked(&nri.stopped_containers).contains(&r.id))
                    .filter(|r| {
                        matches!(svc.inner.runtime.container_status(&r.id),
                            Ok(s) if s.state == ContainerState::Exited)
                    })
                    .map(|r| r.id.clone())
                    .collect();
                for id in exited {
                    svc.nri_container_stopped(&id).await;
                }
            }
        });
    }

    /// RunPodSandbox: the pod exists, its record does not yet.
    pub(crate) async fn nri_run_pod(
        &self,
        id: &str,
        config: &proto::PodSandboxConfig,
        handler: &str,
    ) -> Result<()> {
        let Some(nri) = self.nri() else { return Ok(()) };
        if !nri.wants(Event::RunPodSandbox) {
            return Ok(());
        }
        let st = self.inner.runtime.sandbox_status(id).ok();
        let pod = convert::pod_of(id, config, handler, st.as_ref());
        nri.dispatch(Event::RunPodSandbox, &api::PodRequest { pod: Some(pod) })
            .await
    }

    /// StopPodSandbox, once per pod: its containers are stopped, the pod
    /// not yet.
    pub(crate) async fn nri_pod_stopping(&self, id: &str) {
        let Some(nri) = self.nri() else { return };
        if !Nri::first_stop(&nri.stopped_pods, id) || !nri.wants(Event::StopPodSandbox) {
            return;
        }
        let req = api::PodRequest {
            pod: Some(self.nri_pod(id)),
        };
        if let Err(e) = nri.dispatch(Event::StopPodSandbox, &req).await {
            tracing::warn!(pod = %id, error = %e, "NRI StopPodSandbox");
        }
    }

    /// RemovePodSandbox (after StopPodSandbox if it was never told): its
    /// containers are gone, its record not yet.
    pub(crate) async fn nri_pod_removing(&self, id: &str) {
        let Some(nri) = self.nri() else { return };
        self.nri_pod_stopping(id).await;
        if nri.wants(Event::RemovePodSandbox) {
            let req = api::PodRequest {
                pod: Some(self.nri_pod(id)),
            };
            if let Err(e) = nri.dispatch(Event::RemovePodSandbox, &req).await {
                tracing::warn!(pod = %id, error = %e, "NRI RemovePodSandbox");
            }
        }
        locked(&nri.stopped_pods).remove(id);
    }

    /// CreateContainer, before the container exists (`id` is the ID it
    /// will have): the plugins' adjustments are applied to `config`; what
    /// they set beyond the request is returned. `None`: no plugin was told.
    pub(crate) async fn nri_create_container(
        &self,
        sandbox_id: &str,
        id: &str,
        config: &mut proto::ContainerConfig,
    ) -> Result<Option<RuntimeExtras>> {
        let Some(nri) = self.nri() else {
            return Ok(None);
        };
        if !nri.wants(Event::CreateContainer) {
            return Ok(None);
        }
        // A pod that is not ready gets no container, and its plugins hear
        // of none.
        self.inner.runtime.sandbox_attachments(sandbox_id)?;
        let req = api::ContainerRequest {
            pod: Some(self.nri_pod(sandbox_id)),
            container: Some(convert::container(id, sandbox_id, config, None)),
        };
        let answers: Vec<(String, CreateContainerResponse)> =
            nri.dispatch_with(Event::CreateContainer, &req).await?;
        let mut adj = Adjuster::default();
        for (plugin, r) in answers {
            if !r.update.is_empty() || !r.evict.is_empty() {
                tracing::warn!(%plugin, "NRI: updates and evictions of other containers are not applied");
            }
            let Some(a) = r.adjust else { continue };
            if let Err(reason) = adj.apply(&plugin, a, config) {
                self.nri_create_undone(sandbox_id, id).await;
                return Err(CriError::Nri {
                    plugin,
                    event: Event::CreateContainer.method(),
                    reason,
                });
            }
        }
        Ok(Some(adj.extras))
    }

    /// A container plugins were told of at CreateContainer was not made
    /// after all: they hear of its removal.
    pub(crate) async fn nri_create_undone(&self, sandbox_id: &str, id: &str) {
        let Some(nri) = self.nri() else { return };
        if !nri.wants(Event::RemoveContainer) {
            return;
        }
        let req = api::ContainerRequest {
            pod: Some(self.nri_pod(sandbox_id)),
            container: Some(api::Container {
                id: id.into(),
                pod_sandbox_id: sandbox_id.into(),
                state: api::ContainerState::Stopped as i32,
                ..Default::default()
            }),
        };
        if let Err(e) = nri.dispatch(Event::RemoveContainer, &req).await {
            tracing::warn!(container = %id, error = %e, "NRI RemoveContainer");
        }
    }

    /// A container event for a recorded container (PostCreate, Start,
    /// PostStart).
    pub(crate) async fn nri_container_event(&self, ev: Event, rec: &ContainerRecord) -> Result<()> {
        let Some(nri) = self.nri() else { return Ok(()) };
        if !nri.wants(ev) {
            return Ok(());
        }
        let req = api::ContainerRequest {
            pod: Some(self.nri_pod(&rec.sandbox_id)),
            container: Some(self.nri_container(rec)),
        };
        nri.dispatch(ev, &req).await
    }

    /// StopContainer, once per container.
    pub(crate) async fn nri_container_stopped(&self, id: &str) {
        let Some(nri) = self.nri() else { return };
        if !Nri::first_stop(&nri.stopped_containers, id) || !nri.wants(Event::StopContainer) {
            return;
        }
        let Ok(rec) = self.inner.records.container(id) else {
            return;
        };
        if let Err(e) = self.nri_container_event(Event::StopContainer, &rec).await {
            tracing::warn!(container = %id, error = %e, "NRI StopContainer");
        }
    }

    /// RemoveContainer (after StopContainer if it was never told): the
    /// container is retired, its record not yet removed.
    pub(crate) async fn nri_container_removing(&self, rec: &ContainerRecord) {
        let Some(nri) = self.nri() else { return };
        self.nri_container_stopped(&rec.id).await;
        if nri.wants(Event::RemoveContainer) {
            let mut container = self.nri_container(rec);
            container.state = api::ContainerState::Stopped as i32;
            let req = api::ContainerRequest {
                pod: Some(self.nri_pod(&rec.sandbox_id)),
                container: Some(container),
            };
            if let Err(e) = nri.dispatch(Event::RemoveContainer, &req).await {
                tracing::warn!(container = %rec.id, error = %e, "NRI RemoveContainer");
            }
        }
        locked(&nri.stopped_containers).remove(&rec.id);
    }
}
