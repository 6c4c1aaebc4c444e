//! Two `podctl node` agents under one stock control plane, as a cluster's
//! nodes: `kubectl drain` evicts through the eviction API honouring a
//! PodDisruptionBudget and the Deployment's pods move to the other node;
//! a lost node (its agent killed) turns NotReady, the controller-manager's
//! taint evicts its pods and their replacements run on the other node;
//! the agent back stops and removes what is no longer its own. The
//! controller-manager allocates each node a pod CIDR
//! (`--allocate-node-cidrs`), which the agent hands to its runtime
//! (UpdateRuntimeConfig) and the runtime renders into its CNI bridge
//! configuration (`[cni] conf_template`): pods get IPs in their node's range.
//!
//! Both agents run on loopback (their own kubelet ports, root, state,
//! cgroup parent and bridge); pod-to-pod traffic across nodes is not part
//! of this test. Skipped (with a message) unless the Kubernetes binaries
//! are found, as the node agent test.

use std::path::Path;
use std::process::Command;

use podctl_tests::cluster::{
    free_port, in_cidr, node_command, node_config_pod_cidr, processes_with_arg,
    skip_without_binaries, Cluster, NodeCleanup,
};
use podctl_tests::fixtures::publish;
use podctl_tests::registry::Registry;

/// The app's pods that are not being deleted: (name, node, phase).
fn app_pods(c: &Cluster) -> Vec<(String, String, String)> {
    let v = c
        .get_json(&["pods", "-l", "app=spread", "-n", "default"])
        .unwrap_or_default();
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
            (
                s(&p["metadata"]["name"]),
                s(&p["spec"]["nodeName"]),
                s(&p["status"]["phase"]),
            )
        })
        .collect()
}

fn all_running_on(c: &Cluster, node: &str, n: usize) -> bool {
    let pods = app_pods(c);
    pods.len() == n
        && pods
            .iter()
            .all(|(_, on, phase)| on == node && phase == "Running")
}

struct Agent {
    name: String,
    cmd: Command,
}

fn agent(c: &Cluster, dir: &Path, name: &str, registry: &str, cleanup: &NodeCleanup) -> Agent {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
    let (crt, key) = c.pki.cert(
        name,
        &format!("/O=system:nodes/CN=system:node:{name}"),
        false,
    );
    let kubeconfig = c.pki.kubeconfig(name, &c.server, &crt, &key);
    let (scrt, skey) = c
        .pki
        .cert(&format!("{name}-serving"), &format!("/CN={name}"), true);
    let config = node_config_pod_cidr(dir, registry, cleanup);
    let mut cmd = node_command(&config, &kubeconfig, name, free_port(), (&scrt, &skey));
    cmd.args(["--node-status-update-frequency", "2"])
        .arg(podctl_tests::cluster::TEST_EVICTION_HARD);
    Agent {
        name: name.into(),
        cmd,
    }
}

#[test]
fn drain_and_node_loss_move_pods_between_podctl_nodes() {
    if skip_without_binaries("cluster") {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let pid = std::process::id();
    let cleanups: Vec<NodeCleanup> = ["a", "b"]
        .iter()
        .map(|n| NodeCleanup {
            dir: d.join(n),
            cgroup_parent: format!("/podctl-cluster-test-{pid}-{n}"),
            bridge: podctl_tests::unique_name(&format!("podcl{n}")),
        })
        .collect();
    let reg = Registry::start().unwrap_or_else(|e| panic!("{e}"));
    let pubd = publish(&reg, None).unwrap_or_else(|e| panic!("{e}"));
    // Pod CIDRs: a free /24 of this host, a /26 per node.
    let cluster_cidr = podctl_tests::free_subnet(pid).unwrap_or_else(|e| panic!("{e}"));
    let mut c = Cluster::start_with(
        d,
        &[
            "--allocate-node-cidrs=true",
            &format!("--cluster-cidr={cluster_cidr}"),
            "--node-cidr-mask-size=26",
        ],
    );
    let (na, nb) = (format!("podctl-a-{pid}"), format!("podctl-b-{pid}"));
    let mut a = agent(&c, &d.join("a"), &na, &pubd.host, &cleanups[0]);
    let mut b = agent(&c, &d.join("b"), &nb, &pubd.host, &cleanups[1]);
    c.procs.spawn(&a.name.clone(), d, &mut a.cmd);
    c.procs.spawn(&b.name.clone(), d, &mut b.cmd);
    for n in [&na, &nb] {
        c.wait("both Nodes Ready", 120, || c.node_ready(n));
    }
    let cidr_of = |c: &Cluster, n: &str| {
        c.get_json(&["node", n])
            .and_then(|v| v["spec"]["podCIDR"].as_str().map(str::to_string))
    };
    c.wait("pod CIDRs allocated", 60, || {
        cidr_of(&c, &na).is_some() && cidr_of(&c, &nb).is_some()
    });
    let (ca, cb) = (
        cidr_of(&c, &na).unwrap_or_default(),
        cidr_of(&c, &nb).unwrap_or_default(),
    );
    assert_ne!(ca, cb);
    println!("check: two podctl nodes registered and Ready, pod CIDRs {ca} and {cb}: ok");

    // Two replicas, at most one down at a time; tolerating a lost node
    // for 5 s (the default is 300 s).
    let mark = (200_000 + pid % 100_000).to_string();
    c.apply(&format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: spread, namespace: default}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: spread}}}}
  template:
    metadata: {{labels: {{app: spread}}}}
    spec:
      nodeSelector: {{kubernetes.io/hostname: {na}}}
      terminationGracePeriodSeconds: 2
      tolerations:
      - {{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 5}}
      - {{key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 5}}
      containers:
      - name: app
        image: {}/library/busybox:latest
        command: [sh, -c, 'exec sleep {mark}']
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: spread, namespace: default}}
spec:
  maxUnavailable: 1
  selector: {{matchLabels: {{app: spread}}}}
"#,
        pubd.host
    ));
    c.wait("both replicas Running on node a", 120, || {
        all_running_on(&c, &na, 2)
    });
    let ips: Vec<String> = c
        .get_json(&["pods", "-l", "app=spread", "-n", "default"])
        .unwrap_or_default()["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ips.len(), 2);
    for ip in &ips {
        assert!(in_cidr(ip, &ca), "pod IP {ip} outside node a's {ca}");
    }
    println!("check: pods on node a have IPs in its pod CIDR ({ips:?}): ok");
    // Let them go anywhere from now on.
    c.kubectl(&[
        "patch",
        "deployment",
        "spread",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/template/spec/nodeSelector"}]"#,
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    c.wait("the rollout Running on node a or b", 120, || {
        let pods = app_pods(&c);
        pods.len() == 2 && pods.iter().all(|(_, _, p)| p == "Running")
    });
    // Gather both on a by cordoning b and draining it.
    if app_pods(&c).iter().any(|(_, on, _)| on == &nb) {
        c.kubectl(&["drain", &nb, "--ignore-daemonsets", "--timeout=120s"])
            .unwrap_or_else(|e| panic!("{e}"));
        c.kubectl(&["uncordon", &nb])
            .unwrap_or_else(|e| panic!("{e}"));
    }
    c.wait("both replicas on a", 120, || all_running_on(&c, &na, 2));

    // Drain a: evictions one at a time (the PDB), replacements on b.
    let out = c
        .kubectl(&["drain", &na, "--ignore-daemonsets", "--timeout=180s"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains("evicted"), "{out}");
    let node_a = c.get_json(&["node", &na]).unwrap_or_default();
    assert_eq!(node_a["spec"]["unschedulable"], true);
    c.wait("both replicas Running on b", 120, || {
        all_running_on(&c, &nb, 2)
    });
    assert_eq!(
        processes_with_arg(&mark).len(),
        2,
        "only b's two containers run the app"
    );
    println!("check: kubectl drain evicted a's pods under the PDB, replacements Running on b: ok");
    c.kubectl(&["uncordon", &na])
        .unwrap_or_else(|e| panic!("{e}"));

    // Lose b: its agent killed (its containers keep running, as on a
    // machine cut off the network).
    c.procs.kill(&nb);
    c.wait("node b not Ready", 120, || !c.node_ready(&nb));
    c.wait("replacements Running on a", 180, || {
        all_running_on(&c, &na, 2)
    });
    println!("check: a lost node turns NotReady, its pods are replaced on the other node: ok");

    // b back: it stops what the control plane took from it.
    c.procs.spawn(&b.name.clone(), d, &mut b.cmd);
    c.wait("node b Ready again", 120, || c.node_ready(&nb));
    c.wait("b's old pods gone from the API", 120, || {
        let v = c
            .get_json(&["pods", "-l", "app=spread", "-n", "default"])
            .unwrap_or_default();
        v["items"]
            .as_array()
            .is_some_and(|ps| ps.iter().all(|p| p["spec"]["nodeName"] == na.as_str()))
    });
    c.wait("b's old containers stopped", 60, || {
        processes_with_arg(&mark).len() == 2
    });
    assert!(all_running_on(&c, &na, 2));
    println!("check: the returning node removes its evicted pods and their containers: ok");
    let _ = c.kubectl(&["delete", "deployment", "spread", "--wait=false"]);
    drop(c);
    drop(cleanups);
}
