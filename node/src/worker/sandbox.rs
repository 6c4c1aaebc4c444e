//! Making the pod's sandbox with back-off. A failed attempt (volumes or
//! RunPodSandbox) is retried on the worker's restart back-off curve (the
//! one crash-looping containers get), never in the resync loop, and meanwhile
//! the pod says why: status reason `FailedMount` or `FailedCreatePodSandBox`
//! (the kubelet's Event reasons) with the error as message, a Warning Event
//! for every failed attempt, and a log line with the delay.

use std::time::{Duration, Instant};

use super::PodWorker;
use crate::cri::Cri;
use crate::events::EventType;

/// The back-off entry of the sandbox; never a container name (those are
/// DNS labels).
const KEY: &str = "<sandbox>";
/// Reason of a pod whose sandbox could not be made.
pub const FAILED_SANDBOX: &str = "FailedCreatePodSandBox";
/// Reason of a pod whose volumes could not be set up.
pub const FAILED_MOUNT: &str = "FailedMount";

/// `500ms`, `10s`.
fn human(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

impl<C: Cri> PodWorker<C> {
    /// Make the sandbox unless its back-off still holds; true once it
    /// exists.
    pub(super) async fn make_sandbox(&mut self) -> bool {
        let now = Instant::now();
        let left = self.backoff.remaining(KEY, now);
        if !left.is_zero() {
            self.wake = Some(self.wake.map_or(left, |w| w.min(left)));
            return false;
        }
        let e = match self.run_sandbox().await {
            Ok(()) => {
                self.backoff.forget(KEY);
                if self.sandbox_failed.take().is_some() {
                    self.message = None;
                }
                return true;
            }
            Err(e) => e,
        };
        let delay = self.backoff.exited(KEY, now, Duration::ZERO);
        self.wake = Some(self.wake.map_or(delay, |w| w.min(delay)));
        // Volumes come first; their failure has had its FailedMount Event.
        let (reason, what) = if self.volumes.is_none() {
            (FAILED_MOUNT, "Unable to set up the pod's volumes")
        } else {
            (FAILED_SANDBOX, "Failed to create pod sandbox")
        };
        tracing::warn!(pod = %self.full_name(), error = %e, retry_in = %human(delay), "{what}");
        if reason == FAILED_SANDBOX {
            self.event(None, EventType::Warning, reason, format!("{what}: {e}"));
        }
        self.sandbox_failed = Some(reason);
        self.message = Some(format!("{what}: {e}"));
        false
    }
}
