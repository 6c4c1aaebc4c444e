//! `/stats/summary` (the kubelet's Summary API, the parts metrics-server
//! and `kubectl top` read) and `/metrics` (Prometheus text).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use podctl_cri::proto;
use serde_json::{json, Value};
use tonic::Request;

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
pub async fn summary<C: Cri>(cri: &C, node: &str, pods: &BTreeMap<String, Pod>) -> Value {
    let now = crate::status::now();
    let m = super::super::node_status::Machine::read(std::path::Path::new("/"));
    let stats = cri
        .list_container_stats(Request::new(proto::ListContainerStatsRequest {
            filter: None,
        }))
        .await
        .map(|r| r.into_inner().stats)
        .unwrap_or_default();
    // Container ID → pod UID, from the statuses the engine reported.
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    for p in pods.values() {
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let st = p.status.as_ref();
        let all = st
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .chain(st.and_then(|s| s.init_container_statuses.as_ref()))
            .flatten();
        for c in all {
            if let Some(id) = &c.container_id {
                let id = id.strip_prefix(crate::status::ID_PREFIX).unwrap_or(id);
                owner.insert(id.to_string(), uid.clone());
            }
        }
    }
    let mut by_pod: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut totals: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for s in &stats {
        let Some(attr) = &s.attributes else { continue };
        let Some(uid) = owner.get(&attr.id).cloned() else {
            continue;
        };
        let name = attr
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let cpu = s
            .cpu
            .as_ref()
            .and_then(|c| c.usage_core_nano_seconds.as_ref())
            .map(|v| v.value)
            .unwrap_or(0);
        let mem = s
            .memory
            .as_ref()
            .and_then(|m| m.working_set_bytes.as_ref())
            .map(|v| v.value)
            .unwrap_or(0);
        let t = totals.entry(uid.clone()).or_default();
        t.0 += cpu;
        t.1 += mem;
        by_pod.entry(uid).or_default().push(json!({
            "name": name,
            "cpu": {"time": now, "usageCoreNanoSeconds": cpu},
            "memory": {"time": now, "workingSetBytes": mem, "usageBytes": mem},
        }));
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
