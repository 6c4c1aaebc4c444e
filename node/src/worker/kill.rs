//! Stopping things: one container (preStop hook, then StopContainer with
//! what is left of the grace period), the whole pod, a finished pod.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Container;
use podctl_cri::proto;
use tonic::Request;

use super::{PodWorker, Stage};
use crate::cri::Cri;
use crate::events::EventType;

impl<C: Cri> PodWorker<C> {
    /// preStop, then stop within `grace` (default: the pod's).
    async fn stop_one(&self, c: &Container, id: &str, grace: Duration) {
        let deadline = Instant::now() + grace;
        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
            if let Err(msg) = self.run_hook(c, id, h, Some(grace)).await {
                self.event(
                    Some(&c.name),
                    EventType::Warning,
                    "FailedPreStopHook",
                    format!("PreStopHook failed: {msg}"),
                );
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(s) = self
            .cri
            .stop_container(Request::new(proto::StopContainerRequest {
                container_id: id.to_string(),
                timeout: left.as_secs() as i64,
            }))
            .await
        {
            tracing::warn!(pod = %self.full_name(), container = %c.name, error = %s.message(), "stop");
        }
    }

    fn running_id(&self, c: &Container) -> Option<String> {
        self.tracks
            .get(&c.name)
            .filter(|t| t.running())
            .and_then(|t| t.current.as_ref())
            .map(|s| s.id.clone())
    }

    /// Kill one running container (liveness failure, failed postStart).
    pub(super) async fn kill_container(&mut self, c: &Container, grace: Option<Duration>) {
        let Some(id) = self.running_id(c) else {
            return;
        };
        let grace = grace.unwrap_or_else(|| self.grace());
        self.stop_one(c, &id, grace).await;
        for h in self.probes.remove(&id).unwrap_or_default() {
            h.abort();
        }
        self.results.forget(&id);
    }

    /// Stop the whole pod: app containers together, then sidecars in
    /// reverse order, then the sandbox.
    pub(super) async fn terminate(&mut self, grace: Option<Duration>) {
        self.stage = Stage::Terminating;
        let grace = grace.unwrap_or_else(|| self.grace());
        let deadline = Instant::now() + grace;
        let (inits, apps) = self.spec_containers();
        let mut ids = Vec::new();
        for c in &apps {
            if let Some(id) = self.running_id(c) {
                self.event(
                    Some(&c.name),
                    EventType::Normal,
                    "Killing",
                    format!("Stopping container {}", c.name),
                );
                ids.push((c.clone(), id));
            }
        }
        let this = &*self;
        futures::future::join_all(ids.iter().map(|(c, id)| this.stop_one(c, id, grace))).await;
        // Sidecars (and any init container still running), last first.
        for c in inits.iter().rev() {
            if let Some(id) = self.running_id(c) {
                let left = deadline.saturating_duration_since(Instant::now());
                self.stop_one(c, &id, left).await;
            }
        }
        self.stop_sandbox().await;
        let _ = self.refresh().await;
        for (_, hs) in self.probes.drain() {
            for h in hs {
                h.abort();
            }
        }
        if self.terminal.is_none() {
            let failed = apps.iter().any(|c| {
                self.tracks
                    .get(&c.name)
                    .and_then(|t| t.exit_code())
                    .is_none_or(|code| code != 0)
            });
            self.terminal = Some(if failed { "Failed" } else { "Succeeded" });
        }
        self.stage = Stage::Terminated;
    }

    /// Evicted for node pressure: the pod will end Failed, `Evicted`.
    pub(super) fn mark_evicted(&mut self, message: String) {
        self.terminal = Some("Failed");
        self.reason = Some("Evicted".into());
        self.message = Some(message.clone());
        self.event(None, EventType::Warning, "Evicted", message);
    }

    /// The pod is done (all containers exited for good): stop what is
    /// left (sidecars) and the sandbox.
    pub(super) async fn finish(&mut self, phase: &'static str) {
        self.terminal = Some(phase);
        let (inits, _) = self.spec_containers();
        for c in inits.iter().rev() {
            if let Some(id) = self.running_id(c) {
                self.stop_one(c, &id, self.grace()).await;
            }
        }
        self.stop_sandbox().await;
        let _ = self.refresh().await;
        self.stage = Stage::Terminated;
    }

    async fn stop_sandbox(&mut self) {
        if let Some((id, _)) = &self.sandbox {
            if let Err(s) = self
                .cri
                .stop_pod_sandbox(Request::new(proto::StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                }))
                .await
            {
                tracing::warn!(pod = %self.full_name(), error = %s.message(), "stop sandbox");
            }
        }
        self.facts.ready = false;
        if let Some(mut v) = self.volumes.take() {
            v.teardown();
        }
    }
}
