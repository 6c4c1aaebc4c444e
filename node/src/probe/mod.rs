//! Container probes (startup, readiness, liveness) as the kubelet runs
//! them: one task per probe of a running container, `initialDelaySeconds`
//! then one check every `periodSeconds` bounded by `timeoutSeconds`;
//! `successThreshold` consecutive successes or `failureThreshold`
//! consecutive failures flip the result. Readiness and liveness wait for
//! the startup probe. Exec checks go through CRI ExecSync (a short-lived
//! exec, never a new monitor).

mod check;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerPort, Probe};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::cri::Cri;

pub use check::Target;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Startup,
    Readiness,
    Liveness,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Readiness => "Readiness",
            Kind::Liveness => "Liveness",
        }
    }
}

/// The current verdict of one probe.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// `None` until the thresholds decided.
    pub ok: Option<bool>,
    /// Why the last check failed (for events).
    pub message: String,
}

/// Verdicts of every probe of a pod, keyed by (container ID, kind); the
/// worker is woken whenever one changes.
#[derive(Clone, Default)]
pub struct Results {
    inner: Arc<Mutex<HashMap<(String, Kind), Verdict>>>,
    pub changed: Arc<Notify>,
}

impl Results {
    pub fn get(&self, container_id: &str, kind: Kind) -> Verdict {
        self.inner
            .lock()
            .map(|m| {
                m.get(&(container_id.to_string(), kind))
                    .cloned()
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }

    fn set(&self, container_id: &str, kind: Kind, v: Verdict) {
        let changed = match self.inner.lock() {
            Ok(mut m) => {
                let key = (container_id.to_string(), kind);
                let differs = m.get(&key).map(|o| o.ok) != Some(v.ok);
                m.insert(key, v);
                differs
            }
            Err(_) => false,
        };
        if changed {
            self.changed.notify_one();
        }
    }

    /// Forget a container's verdicts (it is gone).
    pub fn forget(&self, container_id: &str) {
        if let Ok(mut m) = self.inner.lock() {
            m.retain(|(id, _), _| id != container_id);
        }
    }
}

fn secs(v: Option<i32>, default: i32, min: i32) -> Duration {
    Duration::from_secs(v.unwrap_or(default).max(min) as u64)
}

/// Start the probe task; it runs until aborted.
pub fn spawn<C: Cri>(
    cri: C,
    kind: Kind,
    probe: Probe,
    target: Target,
    ports: Vec<ContainerPort>,
    results: Results,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let id = target.container_id.clone();
        let initial = secs(probe.initial_delay_seconds, 0, 0);
        let period = secs(probe.period_seconds, 10, 1);
        let timeout = secs(probe.timeout_seconds, 1, 1);
        let need_ok = probe.success_threshold.unwrap_or(1).max(1);
        let need_fail = probe.failure_threshold.unwrap_or(3).max(1);
        if kind != Kind::Startup {
            // Readiness and liveness start once the startup probe passed
            // (immediately when there is none: the worker records that).
            loop {
                if results.get(&id, Kind::Startup).ok == Some(true) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        tokio::time::sleep(initial).await;
        let (mut oks, mut fails) = (0, 0);
        loop {
            let r = check::run(&cri, &probe, &target, &ports, timeout).await;
            match r {
                Ok(()) => {
                    oks += 1;
                    fails = 0;
                    if oks >= need_ok {
                        results.set(
                            &id,
                            kind,
                            Verdict {
                                ok: Some(true),
                                message: String::new(),
                            },
                        );
                        if kind == Kind::Startup {
                            return;
                        }
                    }
                }
                Err(msg) => {
                    fails += 1;
                    oks = 0;
                    tracing::debug!(container = %id, probe = kind.name(), %msg, "probe failed");
                    if fails >= need_fail {
                        results.set(
                            &id,
                            kind,
                            Verdict {
                                ok: Some(false),
                                message: msg,
                            },
                        );
                        if kind != Kind::Readiness {
                            // Startup and liveness failures end in a restart;
                            // the next container gets new probes.
                            return;
                        }
                    }
                }
            }
            tokio::time::sleep(period).await;
        }
    })
}

/// Record that a container has no startup probe (it counts as started).
pub fn no_startup_probe(results: &Results, container_id: &str) {
    results.set(
        container_id,
        Kind::Startup,
        Verdict {
            ok: Some(true),
            message: String::new(),
        },
    );
}

/// One check outside a probe loop (httpGet lifecycle hooks).
pub async fn check_once<C: Cri>(
    cri: &C,
    probe: &Probe,
    target: &Target,
    ports: &[ContainerPort],
    timeout: Duration,
) -> Result<(), String> {
    check::run(cri, probe, target, ports, timeout).await
}
