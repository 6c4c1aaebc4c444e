//! Which pod goes first, as the kubelet ranks them: pods using more of the
//! starved resource than they requested, then lower priority, then the
//! larger use over the request. BestEffort pods request nothing, so any use
//! puts them ahead; a Guaranteed pod within its requests comes last.

use std::cmp::Ordering;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::thresholds::Resource;

/// What one pod requests and uses.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
    pub uid: String,
    pub priority: i32,
    pub memory_request: u64,
    pub memory: u64,
    pub disk_request: u64,
    pub disk: u64,
    pub processes: u64,
}

fn request_of(c: &Container, res: &str) -> u64 {
    crate::resources::request_or_limit(c, res, 1.0).map_or(0, |v| v.max(0) as u64)
}

/// The pod's request of `res`: its app containers' sum, or its largest
/// init container's if that is more (they run one at a time, first).
pub fn pod_request(pod: &Pod, res: &str) -> u64 {
    let Some(spec) = pod.spec.as_ref() else {
        return 0;
    };
    let apps: u64 = spec.containers.iter().map(|c| request_of(c, res)).sum();
    let inits = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| request_of(c, res))
        .max()
        .unwrap_or(0);
    apps.max(inits)
}

/// A pod's requests, with its use still to be filled in.
pub fn usage_of(pod: &Pod) -> Usage {
    Usage {
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        priority: pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0),
        memory_request: pod_request(pod, "memory"),
        disk_request: pod_request(pod, "ephemeral-storage"),
        ..Default::default()
    }
}

fn use_and_request(u: &Usage, r: Resource) -> (u64, u64) {
    match r {
        Resource::Memory => (u.memory, u.memory_request),
        Resource::Disk => (u.disk, u.disk_request),
        Resource::Pids => (u.processes, 0),
    }
}

/// `a` before `b` when starved of `r`.
fn order(a: &Usage, b: &Usage, r: Resource) -> Ordering {
    let (ua, ra) = use_and_request(a, r);
    let (ub, rb) = use_and_request(b, r);
    let exceeds = |u: u64, q: u64| u > q;
    let first = match r {
        // PIDs have no requests: priority, then the most processes.
        Resource::Pids => Ordering::Equal,
        _ => exceeds(ub, rb).cmp(&exceeds(ua, ra)),
    };
    first
        .then(a.priority.cmp(&b.priority))
        .then_with(|| (ub as i128 - rb as i128).cmp(&(ua as i128 - ra as i128)))
        .then_with(|| a.uid.cmp(&b.uid))
}

/// `pods` in eviction order for a shortage of `r`.
pub fn rank(mut pods: Vec<Usage>, r: Resource) -> Vec<Usage> {
    pods.sort_by(|a, b| order(a, b, r));
    pods
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, req: u64, used: u64, priority: i32) -> Usage {
        Usage {
            uid: uid.into(),
            priority,
            memory_request: req,
            memory: used,
            ..Default::default()
        }
    }

    fn uids(v: Vec<Usage>) -> Vec<String> {
        v.into_iter().map(|u| u.uid).collect()
    }

    #[test]
    fn best_effort_then_burstable_over_requests_then_guaranteed() {
        let mi = 1u64 << 20;
        let pods = vec![
            pod("guaranteed", 512 * mi, 400 * mi, 0),
            pod("burstable-within", 256 * mi, 100 * mi, 0),
            pod("burstable-over", 64 * mi, 300 * mi, 0),
            pod("best-effort-small", 0, 10 * mi, 0),
            pod("best-effort-big", 0, 200 * mi, 0),
        ];
        assert_eq!(
            uids(rank(pods, Resource::Memory)),
            [
                // Over their requests, by how much: 236Mi, 200Mi, 10Mi.
                "burstable-over",
                "best-effort-big",
                "best-effort-small",
                // Within: the least headroom first (-112Mi before -156Mi).
                "guaranteed",
                "burstable-within",
            ]
        );
    }

    #[test]
    fn priority_before_use() {
        let pods = vec![pod("system", 0, 900, 2_000_000_000), pod("app", 0, 10, 0)];
        assert_eq!(uids(rank(pods, Resource::Memory)), ["app", "system"]);
    }

    #[test]
    fn requests_default_to_limits_and_inits_count_when_larger() {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"uid": "u"},
            "spec": {
                "initContainers": [{"name": "i", "resources": {"requests": {"memory": "1Gi"}}}],
                "containers": [
                    {"name": "a", "resources": {"limits": {"memory": "100Mi"}}},
                    {"name": "b", "resources": {"requests": {"memory": "50Mi"}}}
                ]
            }
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pod_request(&p, "memory"), 1 << 30);
        let mut p2 = p.clone();
        if let Some(s) = p2.spec.as_mut() {
            s.init_containers = None;
        }
        assert_eq!(pod_request(&p2, "memory"), 150 << 20);
    }
}
