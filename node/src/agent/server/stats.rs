//! `/stats/summary` (the kubelet's Summary API, the parts metrics-server
//! and `kubectl top` read) and `/metrics` (Prometheus text).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use crate::cri::Cri;

fn node_cpu_nanos() -> u64 {
    // First line of /proc/stat: user nice system ... in USER_HZ (100/s).
    let ticks: u64 = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines().next().map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .take(3)
                    .filter_map(|v| v.parse::<u64>().ok())
                    .sum()
            })
        })
        .unwrap_or(0);
    ticks * 10_000_000
}

/// The summary: node CPU/memory, and per pod its containers' CPU and memory.
pub async fn summary<C: Cri>(
    cri: &C,
    node: &str,
    root: &std::path::Path,
    pods: &BTreeMap<String, Pod>,
) -> Value {
    let now = crate::status::now();
    let m = super::super::node_status::Machine::read(root);
    // The containers the pods' statuses name now: a restarted container's
    // earlier instance still has stats (its writable layer) but is not
    // part of the pod any more.
    let current: std::collections::BTreeSet<String> = pods
        .values()
        .filter_map(|p| p.status.as_ref())
        .flat_map(|st| {
            st.container_statuses
                .iter()
                .chain(st.init_container_statuses.iter())
                .flatten()
        })
        .filter_map(|c| c.container_id.as_deref())
        .map(|id| {
            id.strip_prefix(crate::status::ID_PREFIX)
                .unwrap_or(id)
                .to_string()
        })
        .collect();
    let usage = crate::cri::usage_by_pod(cri).await;
    let mut by_pod: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut totals: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (uid, cs) in usage.into_iter().filter(|(uid, _)| pods.contains_key(uid)) {
        let t = totals.entry(uid.clone()).or_default();
        for c in cs.into_iter().filter(|c| current.contains(&c.id)) {
            t.0 += c.cpu_nanos;
            t.1 += c.memory_working_set;
            by_pod.entry(uid.clone()).or_default().push(json!({
                "name": c.name,
                "cpu": {"time": now, "usageCoreNanoSeconds": c.cpu_nanos},
                "memory": {"time": now, "workingSetBytes": c.memory_working_set, "usageBytes": c.memory_working_set},
            }));
        }
    }
    let pods: Vec<Value> = pods
        .values()
        .map(|p| {
            let uid = p.metadata.uid.clone().unwrap_or_default();
            let (cpu, mem) = totals.get(&uid).copied().unwrap_or_default();
            json!({
                "podRef": {
                    "name": p.metadata.name,
                    "namespace": p.metadata.namespace,
                    "uid": uid,
                },
                "startTime": p.status.as_ref().and_then(|s| s.start_time.clone()),
                "containers": by_pod.get(&uid).cloned().unwrap_or_default(),
                "cpu": {"time": now, "usageCoreNanoSeconds": cpu},
                "memory": {"time": now, "workingSetBytes": mem, "usageBytes": mem},
            })
        })
        .collect();
    json!({
        "node": {
            "nodeName": node,
            "cpu": {"time": now, "usageCoreNanoSeconds": node_cpu_nanos()},
            "memory": {
                "time": now,
                "availableBytes": m.memory_available,
                "usageBytes": m.memory_bytes.saturating_sub(m.memory_available),
                "workingSetBytes": m.memory_bytes.saturating_sub(m.memory_available),
            },
            "fs": {"time": now, "availableBytes": m.disk_available, "capacityBytes": m.disk_bytes},
        },
        "pods": pods,
    })
}

/// Prometheus text: running pods and containers, node memory.
pub fn metrics(pods: &BTreeMap<String, Pod>) -> String {
    let running_containers: usize = pods
        .values()
        .filter_map(|p| p.status.as_ref()?.container_statuses.as_ref())
        .flatten()
        .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        .count();
    format!(
        "# HELP kubelet_running_pods Number of pods this node runs.\n\
         # TYPE kubelet_running_pods gauge\nkubelet_running_pods {}\n\
         # HELP kubelet_running_containers Number of running containers.\n\
         # TYPE kubelet_running_containers gauge\nkubelet_running_containers {}\n",
        pods.len(),
        running_containers
    )
}
