//! Lifecycle hooks (postStart, preStop): exec through CRI ExecSync,
//! httpGet, sleep.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Probe};
use podctl_cri::proto;
use tonic::Request;

use super::PodWorker;
use crate::cri::Cri;
use crate::probe;

impl<C: Cri> PodWorker<C> {
    /// Run hook `h` for container `id`, bounded by `budget` (none: the
    /// pod's grace period).
    pub(super) async fn run_hook(
        &self,
        c: &Container,
        id: &str,
        h: &LifecycleHandler,
        budget: Option<Duration>,
    ) -> Result<(), String> {
        let budget = budget.unwrap_or_else(|| self.grace());
        if let Some(e) = &h.exec {
            let r = self
                .cri
                .exec_sync(Request::new(proto::ExecSyncRequest {
                    container_id: id.to_string(),
                    cmd: e.command.clone().unwrap_or_default(),
                    timeout: budget.as_secs().max(1) as i64,
                }))
                .await
                .map_err(|s| s.message().to_string())?
                .into_inner();
            return if r.exit_code == 0 {
                Ok(())
            } else {
                Err(format!(
                    "command {:?} exited with {}: {}",
                    e.command.clone().unwrap_or_default(),
                    r.exit_code,
                    String::from_utf8_lossy(&r.stderr).trim()
                ))
            };
        }
        if let Some(s) = &h.sleep {
            let d = Duration::from_secs(s.seconds.max(0) as u64).min(budget);
            tokio::time::sleep(d).await;
            return Ok(());
        }
        if let Some(g) = &h.http_get {
            let p = Probe {
                http_get: Some(g.clone()),
                ..Default::default()
            };
            let target = probe::Target {
                container_id: id.to_string(),
                ip: self
                    .facts
                    .ips
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "127.0.0.1".into()),
            };
            let ports = c.ports.clone().unwrap_or_default();
            return crate::probe::check_once(&self.cri, &p, &target, &ports, budget).await;
        }
        Err("hook has no handler (exec, httpGet or sleep)".into())
    }

    /// The pod's termination grace period.
    pub(super) fn grace(&self) -> Duration {
        Duration::from_secs(
            self.pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30)
                .max(0) as u64,
        )
    }
}
