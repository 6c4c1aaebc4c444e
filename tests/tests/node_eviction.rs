//! Node-pressure eviction on `podctl node` against a stock control plane.
//! The node keeps all but 700Mi of the machine's memory from pods
//! (`--system-reserved`) and evicts below 300Mi of allocatable memory left
//! (`--eviction-hard allocatableMemory.available<300Mi`), so a BestEffort
//! pod filling a memory-backed emptyDir crosses the line whatever else the
//! machine runs. It is evicted — Failed, reason Evicted, a Warning Event —
//! while a Guaranteed pod keeps running; the Node shows MemoryPressure and
//! the controller-manager taints it; a BestEffort pod sent to the node
//! meanwhile is refused; after the transition period the pressure clears.
//!
//! Skipped (with a message) unless the Kubernetes binaries are found, as
//! the node agent test.

use podctl_tests::cluster::{
    cleanup_for, free_port, node_command, node_config, skip_without_binaries, Cluster,
};
use podctl_tests::fixtures::publish;
use podctl_tests::registry::Registry;

const NODE: &str = "podctl-evict-node";

fn mem_total_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn pod(c: &Cluster, name: &str) -> serde_json::Value {
    c.get_json(&["pod", name]).unwrap_or_default()
}

#[test]
fn a_best_effort_pod_is_evicted_under_memory_pressure_and_a_guaranteed_one_stays() {
    if skip_without_binaries("eviction") {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let cleanup = cleanup_for(d);
    let reg = Registry::start().unwrap_or_else(|e| panic!("{e}"));
    let pubd = publish(&reg, None).unwrap_or_else(|e| panic!("{e}"));
    let mut c = Cluster::start(d);
    let (crt, key) = c.pki.cert(
        "evict-node",
        &format!("/O=system:nodes/CN=system:node:{NODE}"),
        false,
    );
    let kubeconfig = c.pki.kubeconfig("evict-node", &c.server, &crt, &key);
    let (scrt, skey) = c.pki.cert("evict-serving", &format!("/CN={NODE}"), true);
    let (config, _subnet) = node_config(d, &pubd.host, &cleanup);
    let reserved_kib = mem_total_kib().saturating_sub(700 * 1024);
    assert!(reserved_kib > 0, "this machine has under 700Mi of memory");
    let mut cmd = node_command(&config, &kubeconfig, NODE, free_port(), (&scrt, &skey));
    cmd.arg(format!("--system-reserved=memory={reserved_kib}Ki"))
        .arg("--eviction-hard=allocatableMemory.available<300Mi")
        .args(["--housekeeping-interval", "1s"])
        .args(["--eviction-pressure-transition-period", "40s"])
        .args(["--node-status-update-frequency", "2"]);
    c.procs.spawn("podctl-node", d, &mut cmd);
    c.wait("Node Ready", 120, || c.node_ready(NODE));
    let node = c.get_json(&["node", NODE]).unwrap_or_default();
    assert_eq!(
        node["status"]["allocatable"]["memory"], "700Mi",
        "allocatable = capacity - system-reserved (no hard memory.available): {}",
        node["status"]["allocatable"]
    );
    assert_eq!(
        c.node_condition(NODE, "MemoryPressure").as_deref(),
        Some("False")
    );
    println!("check: allocatable memory is capacity less --system-reserved: ok");

    let image = format!("{}/library/busybox:latest", pubd.host);
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: guaranteed, namespace: default}}
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {image}
    command: [sh, -c, 'exec sleep 100000']
    resources:
      limits: {{cpu: 100m, memory: 64Mi}}
      requests: {{cpu: 100m, memory: 64Mi}}
---
apiVersion: v1
kind: Pod
metadata: {{name: hog, namespace: default}}
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 30
  restartPolicy: Never
  volumes: [{{name: mem, emptyDir: {{medium: Memory}}}}]
  containers:
  - name: fill
    image: {image}
    volumeMounts: [{{name: mem, mountPath: /mem}}]
    command: [sh, -c, 'sleep 2; for i in 1 2 3 4 5 6 7 8 9 10; do dd if=/dev/zero of=/mem/f$i bs=1M count=50 2>/dev/null; sleep 0.5; done; exec sleep 100000']
"#
    ));
    c.wait("the BestEffort pod evicted", 180, || {
        pod(&c, "hog")["status"]["reason"] == "Evicted"
    });
    let hog = pod(&c, "hog");
    assert_eq!(hog["status"]["phase"], "Failed", "{}", hog["status"]);
    let msg = hog["status"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("The node was low on resource: memory.")
            && msg.contains("Threshold quantity: 300Mi"),
        "{msg}"
    );
    let g = pod(&c, "guaranteed");
    assert_eq!(g["status"]["phase"], "Running", "{}", g["status"]);
    assert_eq!(g["status"]["containerStatuses"][0]["restartCount"], 0);
    let events = c
        .get_json(&["events", "--field-selector", "involvedObject.name=hog"])
        .unwrap_or_default();
    assert!(
        events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["reason"] == "Evicted" && e["type"] == "Warning"),
        "{events}"
    );
    println!("check: BestEffort pod Failed/Evicted with the kubelet's message and a Warning Event, Guaranteed pod Running: ok");

    c.wait("MemoryPressure True on the Node", 20, || {
        c.node_condition(NODE, "MemoryPressure").as_deref() == Some("True")
    });
    c.wait("the memory-pressure taint", 30, || {
        c.get_json(&["node", NODE]).is_some_and(|n| {
            n["spec"]["taints"].as_array().is_some_and(|t| {
                t.iter()
                    .any(|x| x["key"] == "node.kubernetes.io/memory-pressure")
            })
        })
    });
    println!("check: Node MemoryPressure=True and tainted node.kubernetes.io/memory-pressure: ok");

    // Sent to the node under pressure (no scheduler to keep it away).
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: late, namespace: default}}\n\
         spec:\n  nodeName: {NODE}\n  containers:\n  - name: app\n    image: {image}\n    \
         command: [sleep, '100000']\n"
    ));
    c.wait("the late BestEffort pod refused", 30, || {
        pod(&c, "late")["status"]["reason"] == "Evicted"
    });
    let late = pod(&c, "late");
    assert_eq!(late["status"]["phase"], "Failed");
    assert!(
        late["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("MemoryPressure")),
        "{}",
        late["status"]
    );
    println!("check: a BestEffort pod arriving under memory pressure is refused: ok");

    // The hog's memory went with its pod: pressure clears after the
    // transition period.
    c.wait("MemoryPressure False again", 120, || {
        c.node_condition(NODE, "MemoryPressure").as_deref() == Some("False")
    });
    assert_eq!(pod(&c, "guaranteed")["status"]["phase"], "Running");
    println!(
        "check: pressure clears after the transition period, the Guaranteed pod still runs: ok"
    );
    let _ = c.kubectl(&["delete", "pod", "--all", "--wait=false"]);
    drop(c);
    drop(cleanup);
}
