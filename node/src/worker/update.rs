//! The pod changed in the API while it runs. What may change on a
//! running pod (labels, annotations, container images,
//! activeDeadlineSeconds) is taken over, as the kubelet does:
//!
//! - labels and annotations rewrite the downward API volumes at once;
//! - a container whose spec changed (its image) is killed and started
//!   again from the new spec ("definition changed");
//! - activeDeadlineSeconds ends the pod once it has been active that long
//!   (phase Failed, reason DeadlineExceeded).

use k8s_openapi::api::core::v1::{Container, Pod};
use tokio::sync::watch;

use super::{PodWorker, Stage};
use crate::cri::Cri;
use crate::events::EventType;

/// Annotation holding a hash of the container spec a container was
/// created from (the kubelet's name for it).
pub const HASH_ANNOTATION: &str = "io.kubernetes.container.hash";

/// A short hash of a container's spec.
pub fn spec_hash(c: &Container) -> String {
    let json = serde_json::to_vec(c).unwrap_or_default();
    let d = podctl_images::Digest::of(&json);
    d.hex()[..16].to_string()
}

impl<C: Cri> PodWorker<C> {
    /// Follow the API's versions of the pod from `rx`.
    pub fn with_updates(mut self, rx: watch::Receiver<Pod>) -> Self {
        self.updates = Some(rx);
        self
    }

    /// Take the pod's newest version.
    pub(super) async fn take_update(&mut self, new: Pod) {
        let meta_changed = self.pod.metadata.labels != new.metadata.labels
            || self.pod.metadata.annotations != new.metadata.annotations;
        self.pod.metadata.labels = new.metadata.labels;
        self.pod.metadata.annotations = new.metadata.annotations;
        if new.spec.is_some() {
            self.pod.spec = new.spec;
        }
        // Conditions others set (readiness gates) count for Ready.
        let conditions = new.status.and_then(|s| s.conditions);
        self.pod
            .status
            .get_or_insert_with(Default::default)
            .conditions = conditions;
        if meta_changed {
            let facts = self.facts();
            if let Some(v) = self.volumes.as_mut() {
                if let Err(e) = v.refresh(&self.pod, &facts, self.sources.as_ref()).await {
                    tracing::warn!(pod = %self.full_name(), error = %e, "downward API refresh");
                }
            }
        }
    }

    /// Whether the running container of `c` was made from another spec.
    pub(super) fn definition_changed(&self, c: &Container) -> bool {
        self.tracks
            .get(&c.name)
            .filter(|t| t.running())
            .and_then(|t| t.current.as_ref())
            .and_then(|s| s.annotations.get(HASH_ANNOTATION))
            .is_some_and(|h| *h != spec_hash(c))
    }

    /// Kill a container whose spec changed; it is started again from the
    /// new spec by the same pass.
    pub(super) async fn restart_changed(&mut self, c: &Container) -> crate::Result<()> {
        self.event(
            Some(&c.name),
            EventType::Normal,
            "Killing",
            format!("Container {} definition changed, will be restarted", c.name),
        );
        self.kill_container(c, None).await;
        self.refresh().await?;
        // A definition change is not a crash: no back-off.
        if let Some(id) = self
            .tracks
            .get(&c.name)
            .and_then(|t| t.current.as_ref())
            .map(|s| s.id.clone())
        {
            self.counted.push(id);
        }
        self.start(c).await
    }

    /// End the pod when it has been active longer than
    /// activeDeadlineSeconds; true when it did.
    pub(super) async fn past_deadline(&mut self) -> bool {
        let Some(secs) = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.active_deadline_seconds)
        else {
            return false;
        };
        let Some(start) = self.start_time.as_ref() else {
            return false;
        };
        let active = jiff::Timestamp::now().duration_since(start.0);
        let left = jiff::SignedDuration::from_secs(secs) - active;
        if left.is_positive() {
            let left = std::time::Duration::try_from(left).unwrap_or_default();
            self.wake = Some(self.wake.map_or(left, |w| w.min(left)));
            return false;
        }
        let msg = "Pod was active on the node longer than the specified deadline";
        self.event(None, EventType::Warning, "DeadlineExceeded", msg.into());
        self.reason = Some("DeadlineExceeded".into());
        self.message = Some(msg.into());
        self.terminal = Some("Failed");
        self.terminate(None).await;
        self.stage = Stage::Terminated;
        true
    }
}
