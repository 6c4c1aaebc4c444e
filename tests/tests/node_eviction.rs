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
//! Disk pressure the same way, on a node whose root is a 256 MiB tmpfs of
//! the test's with `nodefs.available<40%`: a BestEffort pod writing 170 MiB
//! into its container crosses the line; the node first removes the images
//! no container uses (the kubelet's image garbage collection), then, still
//! short, evicts the writer while a Guaranteed pod runs on; DiskPressure
//! and its taint; the writer's layer goes with it and the pressure clears.
//!
//! Skipped (with a message) unless the Kubernetes binaries are found, as
//! the node agent test (crictl too for the disk test).

use podctl_tests::cluster::{
    cleanup_for, find, free_port, node_command, node_config, skip_without_binaries, Cluster,
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
        c.pod("hog")["status"]["reason"] == "Evicted"
    });
    let hog = c.pod("hog");
    assert_eq!(hog["status"]["phase"], "Failed", "{}", hog["status"]);
    let msg = hog["status"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("The node was low on resource: memory.")
            && msg.contains("Threshold quantity: 300Mi"),
        "{msg}"
    );
    let g = c.pod("guaranteed");
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
        c.pod("late")["status"]["reason"] == "Evicted"
    });
    let late = c.pod("late");
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
    assert_eq!(c.pod("guaranteed")["status"]["phase"], "Running");
    println!(
        "check: pressure clears after the transition period, the Guaranteed pod still runs: ok"
    );
    let _ = c.kubectl(&["delete", "pod", "--all", "--wait=false"]);
    drop(c);
    drop(cleanup);
}

/// Whether the node's image store (through its CRI socket) has `image`.
fn has_image(crictl: &std::path::Path, socket: &std::path::Path, image: &str) -> bool {
    let out = std::process::Command::new(crictl)
        .arg("--runtime-endpoint")
        .arg(format!("unix://{}", socket.display()))
        .args(["images", "-o", "json"])
        .output()
        .unwrap_or_else(|e| panic!("crictl: {e}"));
    assert!(
        out.status.success(),
        "crictl images: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["images"].as_array().into_iter().flatten().any(|i| {
        i["repoTags"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t.as_str() == Some(image))
    })
}

#[test]
fn disk_pressure_removes_unused_images_then_evicts_a_best_effort_pod() {
    if skip_without_binaries("eviction") {
        return;
    }
    let Some(crictl) = find("crictl") else {
        eprintln!("skipped: the disk eviction test needs crictl beside the control plane");
        return;
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    // The node's root, state and socket on a filesystem of the test's own.
    let disk = d.join("disk");
    std::fs::create_dir_all(&disk).unwrap_or_else(|e| panic!("{e}"));
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256m", "podctl-evict-test"])
        .arg(&disk)
        .status()
        .unwrap_or_else(|e| panic!("mount: {e}"));
    assert!(st.success(), "mount tmpfs on {}", disk.display());
    let cleanup = cleanup_for(&disk);
    let reg = Registry::start().unwrap_or_else(|e| panic!("{e}"));
    let pubd = publish(&reg, None).unwrap_or_else(|e| panic!("{e}"));
    let mut c = Cluster::start(d);
    let node = "podctl-disk-node";
    let (crt, key) = c.pki.cert(
        "disk-node",
        &format!("/O=system:nodes/CN=system:node:{node}"),
        false,
    );
    let kubeconfig = c.pki.kubeconfig("disk-node", &c.server, &crt, &key);
    let (scrt, skey) = c.pki.cert("disk-serving", &format!("/CN={node}"), true);
    let (config, _subnet) = node_config(&disk, &pubd.host, &cleanup);
    let mut cmd = node_command(&config, &kubeconfig, node, free_port(), (&scrt, &skey));
    cmd.arg("--eviction-hard=memory.available<50Mi,nodefs.available<40%,imagefs.available<40%")
        .args(["--housekeeping-interval", "1s"])
        .args(["--eviction-pressure-transition-period", "20s"])
        .args(["--node-status-update-frequency", "2"]);
    c.procs.spawn("podctl-node", d, &mut cmd);
    c.wait("Node Ready", 120, || c.node_ready(node));
    assert_eq!(
        c.node_condition(node, "DiskPressure").as_deref(),
        Some("False")
    );

    // An image left unused: its pod ran and was deleted.
    let pod_yaml = |name: &str, image: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\n\
             spec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n  restartPolicy: Never\n\
             \x20 containers:\n  - name: app\n    image: {image}\n{extra}"
        )
    };
    c.apply(&pod_yaml("once", &pubd.httpd, ""));
    c.wait("the httpd pod started", 120, || {
        c.pod("once")["status"]["containerStatuses"][0]["imageID"]
            .as_str()
            .is_some_and(|i| !i.is_empty())
    });
    c.kubectl(&["delete", "pod", "once", "--grace-period=1"])
        .unwrap_or_else(|e| panic!("{e}"));
    let socket = disk.join("podctl.sock");
    assert!(
        has_image(&crictl, &socket, &pubd.httpd),
        "{} pulled",
        pubd.httpd
    );

    let busybox = format!("{}/library/busybox:latest", pubd.host);
    c.apply(&format!(
        "{}---\n{}",
        pod_yaml(
            "guaranteed",
            &busybox,
            "    command: [sh, -c, 'exec sleep 100000']\n    resources:\n      \
             limits: {cpu: 100m, memory: 64Mi}\n      requests: {cpu: 100m, memory: 64Mi}\n"
        ),
        pod_yaml(
            "writer",
            &busybox,
            "    command: [sh, -c, 'sleep 2; dd if=/dev/zero of=/fill bs=1M count=170 2>/dev/null; exec sleep 100000']\n"
        )
    ));
    c.wait("the writer evicted", 180, || {
        c.pod("writer")["status"]["reason"] == "Evicted"
    });
    let w = c.pod("writer");
    assert_eq!(w["status"]["phase"], "Failed", "{}", w["status"]);
    let msg = w["status"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("The node was low on resource: ephemeral-storage."),
        "{msg}"
    );
    let g = c.pod("guaranteed");
    assert_eq!(g["status"]["phase"], "Running", "{}", g["status"]);
    assert_eq!(g["status"]["containerStatuses"][0]["restartCount"], 0);
    assert!(
        !has_image(&crictl, &socket, &pubd.httpd),
        "the unused image removed under disk pressure"
    );
    assert!(
        has_image(&crictl, &socket, &busybox),
        "the image in use kept"
    );
    let log = std::fs::read_to_string(d.join("podctl-node.log")).unwrap_or_default();
    let (removed, evicted) = (
        log.find("disk pressure: removed an unused image"),
        log.find("evicting"),
    );
    assert!(
        removed.is_some() && removed < evicted,
        "images removed before any eviction (at {removed:?}, eviction at {evicted:?})"
    );
    println!("check: under disk pressure the unused image went first, then the BestEffort writer was evicted (ephemeral-storage), the Guaranteed pod runs on: ok");

    c.wait("DiskPressure True on the Node", 20, || {
        c.node_condition(node, "DiskPressure").as_deref() == Some("True")
    });
    c.wait("the disk-pressure taint", 30, || {
        c.get_json(&["node", node]).is_some_and(|n| {
            n["spec"]["taints"].as_array().is_some_and(|t| {
                t.iter()
                    .any(|x| x["key"] == "node.kubernetes.io/disk-pressure")
            })
        })
    });
    println!("check: Node DiskPressure=True and tainted node.kubernetes.io/disk-pressure: ok");
    c.wait("DiskPressure False again", 120, || {
        c.node_condition(node, "DiskPressure").as_deref() == Some("False")
    });
    assert_eq!(c.pod("guaranteed")["status"]["phase"], "Running");
    println!("check: the writer's layer went with it, the pressure clears: ok");
    let _ = c.kubectl(&["delete", "pod", "--all", "--wait=false"]);
    drop(c);
    drop(cleanup);
}
