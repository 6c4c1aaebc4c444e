//! A Kubernetes `PodStatus` computed as the kubelet computes it, from what
//! the worker tracks per container (CRI statuses, restarts, why it waits)
//! and the probes' verdicts.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use podctl_cri::proto;

/// Prefix of container IDs in statuses (`<runtime>://<id>`).
pub const ID_PREFIX: &str = "podctl://";

/// What the worker knows about one container of the spec.
#[derive(Clone, Debug, Default)]
pub struct Track {
    /// The newest CRI container for this name.
    pub current: Option<proto::ContainerStatus>,
    /// The one before it, once it terminated (lastState).
    pub previous: Option<proto::ContainerStatus>,
    pub restarts: i32,
    /// Why no container runs: (reason, message), e.g. CrashLoopBackOff.
    pub waiting: Option<(String, String)>,
    pub ready: bool,
    pub started: bool,
}

impl Track {
    pub fn running(&self) -> bool {
        self.current
            .as_ref()
            .is_some_and(|c| c.state == proto::ContainerState::ContainerRunning as i32)
    }

    /// Exit code of the current container once it exited.
    pub fn exit_code(&self) -> Option<i32> {
        self.current
            .as_ref()
            .filter(|c| c.state == proto::ContainerState::ContainerExited as i32)
            .map(|c| c.exit_code)
    }
}

/// Sandbox facts for the status.
#[derive(Clone, Debug, Default)]
pub struct SandboxFacts {
    pub ready: bool,
    pub ips: Vec<String>,
    pub host_ip: String,
    pub created_ns: i64,
}

pub fn time(ns: i64) -> Option<Time> {
    (ns > 0)
        .then(|| Timestamp::from_nanosecond(i128::from(ns)).ok())
        .flatten()
        .map(Time)
}

pub fn now() -> Time {
    Time(Timestamp::now())
}

fn terminated(c: &proto::ContainerStatus) -> ContainerStateTerminated {
    ContainerStateTerminated {
        container_id: Some(format!("{ID_PREFIX}{}", c.id)),
        exit_code: c.exit_code,
        reason: Some(if c.reason.is_empty() {
            if c.exit_code == 0 {
                "Completed"
            } else {
                "Error"
            }
            .to_string()
        } else {
            c.reason.clone()
        }),
        message: (!c.message.is_empty()).then(|| c.message.clone()),
        started_at: time(c.started_at),
        finished_at: time(c.finished_at),
        signal: None,
    }
}

/// One container's status.
pub fn container_status(spec: &Container, t: &Track, default_waiting: &str) -> ContainerStatus {
    let waiting = |reason: &str, message: &str| ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message: (!message.is_empty()).then(|| message.to_string()),
        }),
        ..Default::default()
    };
    let (state, last) = match (&t.current, &t.waiting) {
        // Exited and held back (CrashLoopBackOff): waiting, last = that run.
        (Some(c), Some((r, m))) if c.state == proto::ContainerState::ContainerExited as i32 => (
            waiting(r, m),
            Some(ContainerState {
                terminated: Some(terminated(c)),
                ..Default::default()
            }),
        ),
        (Some(c), _) if c.state == proto::ContainerState::ContainerRunning as i32 => (
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: time(c.started_at),
                }),
                ..Default::default()
            },
            None,
        ),
        (Some(c), _) if c.state == proto::ContainerState::ContainerExited as i32 => (
            ContainerState {
                terminated: Some(terminated(c)),
                ..Default::default()
            },
            None,
        ),
        (_, Some((r, m))) => (waiting(r, m), None),
        _ => (waiting(default_waiting, ""), None),
    };
    let last = last.or_else(|| {
        t.previous.as_ref().map(|p| ContainerState {
            terminated: Some(terminated(p)),
            ..Default::default()
        })
    });
    let cur = t.current.as_ref();
    ContainerStatus {
        name: spec.name.clone(),
        image: spec.image.clone().unwrap_or_default(),
        image_id: cur.map(|c| c.image_ref.clone()).unwrap_or_default(),
        container_id: cur.map(|c| format!("{ID_PREFIX}{}", c.id)),
        ready: t.ready && t.running(),
        started: Some(t.started && t.running()),
        restart_count: t.restarts,
        state: Some(state),
        last_state: last,
        ..Default::default()
    }
}

/// Is `c` (an init container) a sidecar (`restartPolicy: Always`)?
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Everything the pod status is computed from.
pub struct Observed<'a> {
    pub pod: &'a Pod,
    pub sandbox: &'a SandboxFacts,
    pub tracks: &'a BTreeMap<String, Track>,
    /// Init containers (non-sidecar) all succeeded and sidecars started.
    pub initialized: bool,
    /// Set when the pod is finished: Succeeded or Failed.
    pub terminal: Option<&'static str>,
    pub start_time: Option<Time>,
    pub previous: Option<&'a PodStatus>,
    /// A pod-level message (e.g. why it failed).
    pub message: Option<String>,
    /// A pod-level reason (e.g. DeadlineExceeded).
    pub reason: Option<String>,
}

fn condition(prev: Option<&PodStatus>, kind: &str, v: crate::conditions::Verdict) -> PodCondition {
    let status = if v.ok { "True" } else { "False" };
    // Keep the transition time while the status stays the same.
    let since = prev
        .and_then(|p| p.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == kind))
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(now);
    PodCondition {
        type_: kind.to_string(),
        status: status.to_string(),
        last_transition_time: Some(since),
        reason: v.reason,
        message: v.message,
        ..Default::default()
    }
}

pub fn pod_status(o: &Observed<'_>) -> PodStatus {
    use crate::conditions;
    let spec = o.pod.spec.clone().unwrap_or_default();
    let track = |c: &Container| o.tracks.get(&c.name).cloned().unwrap_or_default();
    let inits: Vec<ContainerStatus> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| {
            let t = track(c);
            let mut s = container_status(c, &t, "PodInitializing");
            if !is_sidecar(c) {
                // A finished init container is Ready (the kubelet's prober
                // says so of one that exited 0).
                s.ready = t.exit_code() == Some(0);
            }
            s
        })
        .collect();
    let apps_waiting = if o.initialized {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let apps: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| container_status(c, &track(c), apps_waiting))
        .collect();
    let phase = o
        .terminal
        .unwrap_or_else(|| conditions::phase(&spec, &inits, &apps))
        .to_string();
    let api_conditions = o
        .pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let conditions = vec![
        condition(
            o.previous,
            "Initialized",
            conditions::initialized(&spec, &inits, &phase),
        ),
        condition(
            o.previous,
            "Ready",
            conditions::ready(&spec, &api_conditions, &apps, &phase),
        ),
        condition(
            o.previous,
            "ContainersReady",
            conditions::containers_ready(&spec, &apps, &phase),
        ),
        condition(o.previous, "PodScheduled", conditions::Verdict::yes()),
    ];
    let ips: Vec<PodIP> = o
        .sandbox
        .ips
        .iter()
        .map(|ip| PodIP { ip: ip.clone() })
        .collect();
    PodStatus {
        phase: Some(phase),
        conditions: Some(conditions),
        container_statuses: Some(apps),
        init_container_statuses: (!inits.is_empty()).then_some(inits),
        host_ip: (!o.sandbox.host_ip.is_empty()).then(|| o.sandbox.host_ip.clone()),
        pod_ip: o.sandbox.ips.first().cloned(),
        pod_ips: (!ips.is_empty()).then_some(ips),
        start_time: o.start_time.clone(),
        qos_class: Some(crate::resources::qos_class(&spec).to_string()),
        message: o.message.clone(),
        reason: o.reason.clone(),
        ..Default::default()
    }
}
