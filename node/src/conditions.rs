//! The pod phase and the Initialized, ContainersReady and Ready
//! conditions, computed from container statuses the way the kubelet
//! computes them (so the reasons and messages are the ones clients and
//! the e2e suite read).

use k8s_openapi::api::core::v1::{Container, ContainerStatus, PodCondition, PodSpec};

/// A condition's status, reason and message (the type and times are the
/// caller's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    pub reason: Option<String>,
    pub message: Option<String>,
}

impl Verdict {
    pub fn yes() -> Verdict {
        Verdict {
            ok: true,
            reason: None,
            message: None,
        }
    }

    fn no(reason: &str, message: Option<String>) -> Verdict {
        Verdict {
            ok: false,
            reason: Some(reason.to_string()),
            message,
        }
    }
}

fn find<'a>(statuses: &'a [ContainerStatus], name: &str) -> Option<&'a ContainerStatus> {
    statuses.iter().find(|s| s.name == name)
}

fn last_exit(s: &ContainerStatus) -> Option<i32> {
    s.last_state
        .as_ref()
        .and_then(|l| l.terminated.as_ref())
        .map(|t| t.exit_code)
}

/// The phase of a pod that has not been ended by the node (deadline,
/// eviction): from its containers' states and its restart policy.
pub fn phase(spec: &PodSpec, inits: &[ContainerStatus], apps: &[ContainerStatus]) -> &'static str {
    let mut pending_init = 0;
    let mut failed_init = 0;
    for c in spec.init_containers.iter().flatten() {
        let Some(s) = find(inits, &c.name) else {
            pending_init += 1;
            continue;
        };
        let st = s.state.clone().unwrap_or_default();
        let sidecar = c.restart_policy.as_deref() == Some("Always");
        if sidecar {
            // A sidecar (restartable init container) is done initializing
            // once it has started; it then runs beside the app containers.
            if !(st.running.is_some() && s.started == Some(true)) {
                pending_init += 1;
            }
        } else if st.running.is_some() {
            pending_init += 1;
        } else if let Some(t) = &st.terminated {
            failed_init += usize::from(t.exit_code != 0);
        } else if st.waiting.is_some() {
            match last_exit(s) {
                Some(code) => failed_init += usize::from(code != 0),
                None => pending_init += 1,
            }
        } else {
            pending_init += 1;
        }
    }
    let (mut unknown, mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0, 0);
    for c in &spec.containers {
        let Some(s) = find(apps, &c.name) else {
            unknown += 1;
            continue;
        };
        let st = s.state.clone().unwrap_or_default();
        if st.running.is_some() {
            running += 1;
        } else if let Some(t) = &st.terminated {
            stopped += 1;
            succeeded += usize::from(t.exit_code == 0);
        } else if st.waiting.is_some() {
            if last_exit(s).is_some() {
                stopped += 1;
            } else {
                waiting += 1;
            }
        } else {
            unknown += 1;
        }
    }
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    if failed_init > 0 && policy == "Never" {
        return "Failed";
    }
    if pending_init > 0 || waiting > 0 {
        return "Pending";
    }
    if running > 0 && unknown == 0 {
        return "Running";
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        return match policy {
            "Always" => "Running",
            _ if stopped == succeeded => "Succeeded",
            "Never" => "Failed",
            _ => "Running",
        };
    }
    "Pending"
}

/// `[a b c]`, the way the kubelet lists names in messages.
fn names(v: &[String]) -> String {
    format!("[{}]", v.join(" "))
}

/// The containers among `specs` with no status and those not ready.
fn unknown_and_unready(
    specs: &[Container],
    statuses: &[ContainerStatus],
) -> (Vec<String>, Vec<String>) {
    let mut unknown = Vec::new();
    let mut unready = Vec::new();
    for c in specs {
        match find(statuses, &c.name) {
            Some(s) if !s.ready => unready.push(c.name.clone()),
            Some(_) => {}
            None => unknown.push(c.name.clone()),
        }
    }
    (unknown, unready)
}

/// The kubelet's message for containers without status and those not
/// `word` ("incomplete" for init containers, "unready" for the others).
fn not_ready_message(unknown: &[String], unready: &[String], word: &str) -> Option<String> {
    let mut msgs = Vec::new();
    if !unknown.is_empty() {
        msgs.push(format!(
            "containers with unknown status: {}",
            names(unknown)
        ));
    }
    if !unready.is_empty() {
        msgs.push(format!("containers with {word} status: {}", names(unready)));
    }
    (!msgs.is_empty()).then(|| msgs.join(", "))
}

/// `Initialized`: every init container finished (Ready).
pub fn initialized(spec: &PodSpec, inits: &[ContainerStatus], phase: &str) -> Verdict {
    let specs = spec.init_containers.as_deref().unwrap_or_default();
    let (unknown, unready) = unknown_and_unready(specs, inits);
    if phase == "Succeeded" && unknown.is_empty() {
        return Verdict {
            ok: true,
            reason: Some("PodCompleted".into()),
            message: None,
        };
    }
    match not_ready_message(&unknown, &unready, "incomplete") {
        None => Verdict::yes(),
        Some(m) => Verdict::no("ContainersNotInitialized", Some(m)),
    }
}

/// `ContainersReady`: every app container Ready.
pub fn containers_ready(spec: &PodSpec, apps: &[ContainerStatus], phase: &str) -> Verdict {
    let (unknown, unready) = unknown_and_unready(&spec.containers, apps);
    if phase == "Succeeded" && unknown.is_empty() {
        return Verdict::no("PodCompleted", None);
    }
    match not_ready_message(&unknown, &unready, "unready") {
        None => Verdict::yes(),
        Some(m) => Verdict::no("ContainersNotReady", Some(m)),
    }
}

/// `Ready`: containers ready and every readiness gate's condition True
/// (`conditions` are the pod's as the API has them: gates are set by
/// others).
pub fn ready(
    spec: &PodSpec,
    conditions: &[PodCondition],
    apps: &[ContainerStatus],
    phase: &str,
) -> Verdict {
    let c = containers_ready(spec, apps, phase);
    if !c.ok {
        return c;
    }
    let mut msgs = Vec::new();
    for g in spec.readiness_gates.iter().flatten() {
        match conditions.iter().find(|c| c.type_ == g.condition_type) {
            None => msgs.push(format!(
                "corresponding condition of pod readiness gate {:?} does not exist.",
                g.condition_type
            )),
            Some(c) if c.status != "True" => msgs.push(format!(
                "the status of pod readiness gate {:?} is not \"True\", but {}",
                g.condition_type, c.status
            )),
            Some(_) => {}
        }
    }
    if msgs.is_empty() {
        Verdict::yes()
    } else {
        Verdict::no("ReadinessGatesNotReady", Some(msgs.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
        ContainerStateWaiting, PodReadinessGate,
    };

    fn c(name: &str) -> Container {
        Container {
            name: name.into(),
            ..Default::default()
        }
    }

    fn running(name: &str, ready: bool) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            ready,
            state: Some(ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn exited(name: &str, code: i32) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            ready: code == 0,
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn backing_off(name: &str, last: i32) -> ContainerStatus {
        let mut s = exited(name, last);
        s.last_state = s.state.take();
        s.state = Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("CrashLoopBackOff".into()),
                ..Default::default()
            }),
            ..Default::default()
        });
        s.ready = false;
        s
    }

    fn spec(inits: &[&str], apps: &[&str], policy: &str) -> PodSpec {
        PodSpec {
            init_containers: Some(inits.iter().map(|n| c(n)).collect()),
            containers: apps.iter().map(|n| c(n)).collect(),
            restart_policy: Some(policy.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_crash_looping_container_keeps_an_always_pod_running() {
        let s = spec(&[], &["a"], "Always");
        assert_eq!(phase(&s, &[], &[backing_off("a", 1)]), "Running");
        let s = spec(&[], &["a"], "OnFailure");
        assert_eq!(phase(&s, &[], &[backing_off("a", 1)]), "Running");
        let s = spec(&[], &["a", "b"], "Never");
        assert_eq!(phase(&s, &[], &[exited("a", 0), exited("b", 1)]), "Failed");
        assert_eq!(
            phase(&s, &[], &[exited("a", 0), exited("b", 0)]),
            "Succeeded"
        );
        assert_eq!(phase(&s, &[], &[exited("a", 0)]), "Pending");
    }

    #[test]
    fn init_containers_gate_the_pod() {
        let s = spec(&["i1", "i2"], &["a"], "Never");
        let inits = [exited("i1", 0), running("i2", false)];
        assert_eq!(phase(&s, &inits, &[]), "Pending");
        let v = initialized(&s, &inits, "Pending");
        assert_eq!(
            (v.ok, v.reason.as_deref(), v.message.as_deref()),
            (
                false,
                Some("ContainersNotInitialized"),
                Some("containers with incomplete status: [i2]")
            )
        );
        assert_eq!(phase(&s, &[exited("i1", 1)], &[]), "Failed");
        let s = spec(&["i1", "i2"], &["a"], "Always");
        let v = initialized(&s, &[], "Pending");
        assert_eq!(
            v.message.as_deref(),
            Some("containers with unknown status: [i1 i2]")
        );
        assert!(initialized(&s, &[exited("i1", 0), exited("i2", 0)], "Running").ok);
    }

    #[test]
    fn a_started_sidecar_lets_the_pod_run() {
        let mut s = spec(&["side"], &["a"], "Always");
        if let Some(i) = s.init_containers.as_mut() {
            i[0].restart_policy = Some("Always".into());
        }
        let mut side = running("side", true);
        side.started = Some(false);
        assert_eq!(phase(&s, &[side.clone()], &[]), "Pending");
        side.started = Some(true);
        assert_eq!(phase(&s, &[side.clone()], &[running("a", true)]), "Running");
        assert!(initialized(&s, &[side], "Running").ok);
    }

    #[test]
    fn readiness_gates_hold_back_ready() {
        let mut s = spec(&[], &["a"], "Always");
        s.readiness_gates = Some(vec![PodReadinessGate {
            condition_type: "k8s.io/test-condition1".into(),
        }]);
        let apps = [running("a", true)];
        assert!(containers_ready(&s, &apps, "Running").ok);
        let v = ready(&s, &[], &apps, "Running");
        assert_eq!(v.reason.as_deref(), Some("ReadinessGatesNotReady"));
        let set = PodCondition {
            type_: "k8s.io/test-condition1".into(),
            status: "True".into(),
            ..Default::default()
        };
        assert!(ready(&s, &[set], &apps, "Running").ok);
        let v = ready(&s, &[], &[running("a", false)], "Running");
        assert_eq!(
            v.message.as_deref(),
            Some("containers with unready status: [a]")
        );
    }
}
