//! A cluster of three `podctl node` agents under one stock control plane,
//! each node in its own network namespace with its own address and kubelet
//! API on :10250 (tests/src/fabric.rs), root, state, log dirs and cgroup
//! parent. Proved with kubectl and from inside pods:
//!
//! - the controller-manager allocates each node a pod CIDR
//!   (`--allocate-node-cidrs`), which the agent hands to its runtime
//!   (UpdateRuntimeConfig) and the runtime renders into its CNI bridge
//!   configuration (`[cni] conf_template`); with routes between the nodes,
//!   a pod reaches pods on the other nodes by their IPs;
//! - kube-proxy, built from the same Kubernetes tree, runs as a DaemonSet
//!   pod on every node (hostNetwork, privileged, hostPath /run/xtables.lock
//!   and /lib/modules): a ClusterIP Service reaches pods on other nodes and
//!   a NodePort answers on each node's address;
//! - `kubectl drain` evicts through the eviction API honouring a
//!   PodDisruptionBudget, and the Deployment's pods move to another node;
//! - a lost node (its agent killed) turns NotReady, the controller-manager's
//!   taint evicts its pods and their replacements run on another node; the
//!   agent back stops and removes what is no longer its own;
//! - node 0 joins by TLS bootstrap with `--rotate-certificates` under a
//!   signer issuing 2-minute certificates: it renews its client certificate
//!   by its own CSR while the rest goes on, and stays Ready past the first
//!   certificate's end.
//!
//! Node-pressure eviction has its own test (node_eviction.rs): one node,
//! its memory and disk squeezed.
//!
//! Skipped (with a message) unless the Kubernetes binaries are found,
//! kube-proxy and agnhost among them.

use std::collections::BTreeSet;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use podctl_tests::cluster::{
    find, in_cidr, node_command_at, node_config_pod_cidr, processes_with_arg,
    skip_without_binaries, Cluster, NodeCleanup, AUTORENEW_RBAC, BOOTSTRAP_RBAC, BOOTSTRAP_TOKEN,
    TEST_EVICTION_HARD,
};
use podctl_tests::fabric::Fabric;
use podctl_tests::pki::{client_cert_of, serial_and_end};
use podctl_tests::registry::Registry;

const NODES: usize = 3;

/// `curl` in pod `pod`: the body, or why not.
fn curl_in(c: &Cluster, pod: &str, url: &str) -> Result<String, String> {
    c.kubectl(&["exec", pod, "--", "curl", "-s", "--max-time", "3", url])
        .map(|s| s.trim().to_string())
}

/// `curl` from the host's network namespace.
fn curl_here(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "3", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

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

/// The cluster: control plane, nodes on the fabric, their agents'
/// commands (to start one again) and pod CIDRs.
struct Nodes {
    names: Vec<String>,
    agents: Vec<Command>,
    cidrs: Vec<String>,
    rotating: Rotating,
}

/// Node 0's kubeconfig (bootstrapped, then rotated), its first
/// certificate's file, serial and end, and when it joined.
struct Rotating {
    kubeconfig: PathBuf,
    first: PathBuf,
    serial: String,
    end: String,
    joined: Instant,
}

/// Starts the agents, waits for them Ready with their pod CIDRs, routes
/// the CIDRs between the nodes.
fn start_nodes(
    c: &mut Cluster,
    fabric: &Fabric,
    d: &Path,
    reg: &str,
    cleanups: &[NodeCleanup],
) -> Nodes {
    let pid = std::process::id();
    let names: Vec<String> = (0..NODES).map(|i| format!("podctl-{i}-{pid}")).collect();
    let mut agents = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let nd = d.join(format!("n{i}"));
        std::fs::create_dir_all(&nd).unwrap_or_else(|e| panic!("{e}"));
        // Node 0 asks for its client certificate (TLS bootstrap) and
        // renews it; the others get theirs from the test's CA.
        let kubeconfig = if i == 0 {
            nd.join("node.kubeconfig")
        } else {
            let (crt, key) = c.pki.cert(
                name,
                &format!("/O=system:nodes/CN=system:node:{name}"),
                false,
            );
            c.pki.kubeconfig(name, &c.server, &crt, &key)
        };
        let (scrt, skey) = c.pki.server_cert(
            &format!("{name}-serving"),
            &format!("/CN={name}"),
            &[fabric.node_ip(i)],
        );
        let config = node_config_pod_cidr(&nd, reg, &cleanups[i]);
        let mut cmd = node_command_at(
            fabric.command(i, podctl_tests::workspace_bin("podctl")),
            &config,
            &kubeconfig,
            name,
            SocketAddrV4::new(fabric.node_ip(i), 10250),
            (&scrt, &skey),
        );
        // The API server's kubelet client certificate (exec) is signed by
        // the cluster CA.
        cmd.args(["--node-status-update-frequency", "2"])
            .arg("--client-ca-file")
            .arg(c.pki.dir.join("ca.crt"))
            .arg(TEST_EVICTION_HARD);
        if i == 0 {
            let boot = c
                .pki
                .token_kubeconfig("bootstrap", &c.server, BOOTSTRAP_TOKEN);
            cmd.arg("--bootstrap-kubeconfig")
                .arg(boot)
                .arg("--cert-dir")
                .arg(nd.join("pki"))
                .arg("--rotate-certificates");
        }
        c.procs.spawn(name, d, &mut cmd);
        agents.push(cmd);
    }
    for n in &names {
        c.wait("the Nodes Ready", 120, || c.node_ready(n));
    }
    let kubeconfig0 = d.join("n0").join("node.kubeconfig");
    let first = client_cert_of(&kubeconfig0);
    let (serial, end) = serial_and_end(&first);
    assert!(!serial.is_empty(), "no certificate at {}", first.display());
    let rotating = Rotating {
        kubeconfig: kubeconfig0,
        first,
        serial,
        end,
        joined: Instant::now(),
    };
    let mut cidrs = Vec::new();
    for (i, n) in names.iter().enumerate() {
        c.wait("pod CIDRs allocated", 60, || {
            c.get_json(&["node", n])
                .is_some_and(|v| v["spec"]["podCIDR"].is_string())
        });
        let node = c.get_json(&["node", n]).unwrap_or_default();
        let cidr = node["spec"]["podCIDR"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let internal: Vec<&str> = node["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["type"] == "InternalIP")
            .filter_map(|a| a["address"].as_str())
            .collect();
        assert_eq!(
            internal,
            [fabric.node_ip(i).to_string()],
            "{n}'s InternalIP"
        );
        fabric.route_to(i, &cidr).unwrap_or_else(|e| panic!("{e}"));
        cidrs.push(cidr);
    }
    assert_eq!(
        cidrs.iter().collect::<BTreeSet<_>>().len(),
        NODES,
        "{cidrs:?}"
    );
    Nodes {
        names,
        agents,
        cidrs,
        rotating,
    }
}

/// kube-proxy on every node, as a DaemonSet pod with a client certificate
/// of the user the default RBAC names (system:kube-proxy).
fn start_kube_proxy(c: &Cluster, d: &Path, image: &str, cluster_cidr: &str) {
    let (crt, key) = c.pki.cert("kube-proxy", "/CN=system:kube-proxy", false);
    let kubeconfig = c.pki.kubeconfig("kube-proxy", &c.server, &crt, &key);
    // This machine has no /lib/modules (kube-proxy only reads it for IPVS):
    // an empty directory of the test's stands in.
    let modules = if Path::new("/lib/modules").is_dir() {
        "/lib/modules".to_string()
    } else {
        let m = d.join("lib-modules");
        std::fs::create_dir_all(&m).unwrap_or_else(|e| panic!("{e}"));
        m.display().to_string()
    };
    c.apply(&format!(
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: kube-proxy, namespace: kube-system}}
spec:
  selector: {{matchLabels: {{k8s-app: kube-proxy}}}}
  template:
    metadata: {{labels: {{k8s-app: kube-proxy}}}}
    spec:
      hostNetwork: true
      priorityClassName: system-node-critical
      tolerations: [{{operator: Exists}}]
      containers:
      - name: kube-proxy
        image: {image}
        args: [--kubeconfig={kc}, --hostname-override=$(NODE_NAME), --proxy-mode=iptables,
               --cluster-cidr={cluster_cidr}, --conntrack-max-per-core=0,
               --conntrack-tcp-timeout-established=0, --conntrack-tcp-timeout-close-wait=0]
        env: [{{name: NODE_NAME, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}]
        securityContext: {{privileged: true}}
        volumeMounts:
        - {{name: pki, mountPath: {pki}, readOnly: true}}
        - {{name: xtables-lock, mountPath: /run/xtables.lock}}
        - {{name: lib-modules, mountPath: /lib/modules, readOnly: true}}
      volumes:
      - {{name: pki, hostPath: {{path: {pki}}}}}
      - {{name: xtables-lock, hostPath: {{path: /run/xtables.lock, type: FileOrCreate}}}}
      - {{name: lib-modules, hostPath: {{path: {modules}}}}}
"#,
        kc = kubeconfig.display(),
        pki = c.pki.dir.display(),
    ));
    c.wait("kube-proxy ready on every node", 180, || {
        c.get_json(&["daemonset", "kube-proxy", "-n", "kube-system"])
            .is_some_and(|v| v["status"]["numberReady"].as_u64() == Some(NODES as u64))
    });
}

/// A client on node 0, web servers on nodes 1 and 2, a NodePort Service
/// over the servers: pod-to-pod, ClusterIP and NodePort traffic.
fn check_traffic(c: &Cluster, fabric: &Fabric, nodes: &Nodes, image: &str) {
    let mut pods = String::new();
    for (pod, node, app) in [
        ("client", 0, "client"),
        ("web-1", 1, "web"),
        ("web-2", 2, "web"),
    ] {
        pods.push_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: default, labels: {{app: {app}}}}}\n\
             spec:\n  nodeSelector: {{kubernetes.io/hostname: {n}}}\n  terminationGracePeriodSeconds: 1\n\
             \x20 containers:\n  - name: web\n    image: {image}\n---\n",
            n = nodes.names[node]
        ));
    }
    pods.push_str(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n\
         spec:\n  type: NodePort\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n",
    );
    c.apply(&pods);
    for p in ["client", "web-1", "web-2"] {
        c.wait("the pods Running", 120, || {
            c.pod_str(p, &["status", "phase"]) == "Running"
        });
    }
    for (p, i) in [("client", 0), ("web-1", 1), ("web-2", 2)] {
        let ip = c.pod_str(p, &["status", "podIP"]);
        let cidr = &nodes.cidrs[i];
        assert!(
            in_cidr(&ip, cidr),
            "{p}'s IP {ip} outside node {i}'s {cidr}"
        );
    }
    for (p, i) in [("web-1", 1), ("web-2", 2)] {
        let ip = c.pod_str(p, &["status", "podIP"]);
        // Running is not yet listening: a few tries.
        let mut got = Err(String::new());
        for _ in 0..10 {
            got = curl_in(c, "client", &format!("http://{ip}:8080/hostname"));
            if got.as_deref() == Ok(p) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        assert_eq!(
            got.as_deref(),
            Ok(p),
            "client (node 0) → {p} at {ip}\n{}\n{}",
            fabric.describe(0),
            fabric.describe(i)
        );
    }
    println!("check: a pod on node 0 reaches pods on nodes 1 and 2 by their pod IPs: ok");

    let svc = c.get_json(&["service", "web"]).unwrap_or_default();
    let cluster_ip = svc["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let node_port = svc["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .unwrap_or_default();
    let mut seen = BTreeSet::new();
    c.wait("the ClusterIP to reach both servers", 90, || {
        if let Ok(b) = curl_in(c, "client", &format!("http://{cluster_ip}/hostname")) {
            seen.insert(b);
        }
        seen.contains("web-1") && seen.contains("web-2")
    });
    assert!(
        seen.iter().all(|s| s == "web-1" || s == "web-2"),
        "{seen:?}"
    );
    println!("check: ClusterIP {cluster_ip} from node 0 reaches the servers on nodes 1 and 2: ok");

    for i in 0..NODES {
        let url = format!("http://{}:{node_port}/hostname", fabric.node_ip(i));
        let mut got = None;
        c.wait("the NodePort to answer", 60, || {
            got = curl_here(&url);
            got.is_some()
        });
        let got = got.unwrap_or_default();
        assert!(got == "web-1" || got == "web-2", "{url}: {got}");
    }
    println!("check: NodePort {node_port} answers on each node's address: ok");
}

/// Drain under a PDB, then node loss, with node 0 cordoned throughout so
/// that the replicas can only move between nodes 1 and 2.
fn check_drain_and_node_loss(c: &mut Cluster, d: &Path, nodes: &mut Nodes, image: &str) {
    let kubectl = |c: &Cluster, args: &[&str]| c.kubectl(args).unwrap_or_else(|e| panic!("{e}"));
    let (n0, n1, n2) = (
        nodes.names[0].clone(),
        nodes.names[1].clone(),
        nodes.names[2].clone(),
    );
    kubectl(c, &["cordon", &n0]);
    kubectl(c, &["cordon", &n2]);
    // Two replicas, at most one down at a time; tolerating a lost node
    // for 5 s (the default is 300 s).
    let mark = (200_000 + std::process::id() % 100_000).to_string();
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
      terminationGracePeriodSeconds: 2
      tolerations:
      - {{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 5}}
      - {{key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 5}}
      containers:
      - name: app
        image: {image}
        command: [sh, -c, 'exec sleep {mark}']
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: spread, namespace: default}}
spec:
  maxUnavailable: 1
  selector: {{matchLabels: {{app: spread}}}}
"#
    ));
    c.wait("both replicas Running on node 1", 120, || {
        all_running_on(c, &n1, 2)
    });
    kubectl(c, &["uncordon", &n2]);

    // Drain node 1: evictions one at a time (the PDB), replacements on 2.
    let out = kubectl(
        c,
        &[
            "drain",
            &n1,
            "--ignore-daemonsets",
            "--force",
            "--timeout=180s",
        ],
    );
    assert!(out.contains("evicted"), "{out}");
    let node1 = c.get_json(&["node", &n1]).unwrap_or_default();
    assert_eq!(node1["spec"]["unschedulable"], true);
    c.wait("both replicas Running on node 2", 120, || {
        all_running_on(c, &n2, 2)
    });
    assert_eq!(
        processes_with_arg(&mark).len(),
        2,
        "only node 2's two containers run the app"
    );
    println!("check: kubectl drain evicted node 1's pods under the PDB, replacements Running on node 2: ok");
    kubectl(c, &["uncordon", &n1]);

    // Lose node 2: its agent killed (its containers keep running, as on a
    // machine cut off the network).
    c.procs.kill(&n2);
    c.wait("node 2 not Ready", 120, || !c.node_ready(&n2));
    c.wait("replacements Running on node 1", 180, || {
        all_running_on(c, &n1, 2)
    });
    println!("check: a lost node turns NotReady, its pods are replaced on another node: ok");

    // Node 2 back: it stops what the control plane took from it.
    c.procs.spawn(&n2, d, &mut nodes.agents[2]);
    c.wait("node 2 Ready again", 120, || c.node_ready(&n2));
    c.wait("node 2's old pods gone from the API", 120, || {
        let v = c
            .get_json(&["pods", "-l", "app=spread", "-n", "default"])
            .unwrap_or_default();
        v["items"]
            .as_array()
            .is_some_and(|ps| ps.iter().all(|p| p["spec"]["nodeName"] == n1.as_str()))
    });
    c.wait("node 2's old containers stopped", 60, || {
        processes_with_arg(&mark).len() == 2
    });
    assert!(all_running_on(c, &n1, 2));
    println!("check: the returning node removes its evicted pods and their containers: ok");
    kubectl(c, &["uncordon", &n0]);
    let _ = c.kubectl(&["delete", "deployment", "spread", "--wait=false"]);
}

/// Node 0's client certificate renewed by its own CSR, and the node still
/// Ready, its Lease renewed, once the first certificate has expired.
fn check_rotation(c: &Cluster, nodes: &Nodes) {
    let Rotating {
        kubeconfig,
        first,
        serial: serial1,
        end: end1,
        joined,
    } = &nodes.rotating;
    let n0 = &nodes.names[0];
    let (serial2, end2) = c.wait_renewed(n0, kubeconfig, (first, serial1), 150);
    c.check_alive_past(n0, *joined, Duration::from_secs(125));
    println!("check: node 0 bootstrapped with a 2-minute certificate ({serial1}, until {end1}), renewed it by its own CSR ({serial2}, until {end2}), Ready past the first's end: ok");
}

#[test]
fn three_podctl_nodes_route_pods_and_services_drain_survive_node_loss_and_renew_certificates() {
    if skip_without_binaries("cluster") {
        return;
    }
    let (Some(kube_proxy), Some(agnhost)) = (find("kube-proxy"), find("agnhost")) else {
        eprintln!(
            "skipped: the cluster test needs kube-proxy and agnhost beside the control plane (see README)"
        );
        return;
    };
    // Dropped last: the namespaces outlive the processes in them.
    let fabric = Fabric::new(NODES).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let pid = std::process::id();
    let cleanups: Vec<NodeCleanup> = (0..NODES)
        .map(|i| NodeCleanup {
            dir: d.join(format!("n{i}")),
            cgroup_parent: format!("/podctl-cluster-test-{pid}-{i}"),
            bridge: podctl_tests::unique_name("podcl"),
        })
        .collect();
    let reg = Registry::start_at(fabric.host_ip()).unwrap_or_else(|e| panic!("{e}"));
    let (kp_image, web_image) = podctl_tests::cluster_images::publish(
        &reg,
        &kube_proxy.display().to_string(),
        &agnhost.display().to_string(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // Pods live inside the node namespaces; a /24 the host does not use
    // keeps them apart from the fabric and any neighbour, a /26 a node.
    let cluster_cidr = podctl_tests::free_subnet(pid + 1).unwrap_or_else(|e| panic!("{e}"));
    let mut c = Cluster::start_at(
        d,
        &[
            "--allocate-node-cidrs=true",
            &format!("--cluster-cidr={cluster_cidr}"),
            "--node-cidr-mask-size=26",
            "--cluster-signing-duration=2m",
        ],
        fabric.host_ip(),
    );
    // Bootstrap tokens may ask for node client certificates, nodes may
    // renew their own (kubeadm's bindings).
    c.apply(BOOTSTRAP_RBAC);
    c.apply(AUTORENEW_RBAC);
    let mut nodes = start_nodes(&mut c, &fabric, d, &reg.host(), &cleanups);
    println!(
        "check: three podctl nodes Ready, each in its own network namespace on its own address ({}..{}), pod CIDRs {:?}: ok",
        fabric.node_ip(0),
        fabric.node_ip(NODES - 1),
        nodes.cidrs
    );
    start_kube_proxy(&c, d, &kp_image, &cluster_cidr);
    println!("check: kube-proxy runs as a DaemonSet pod on all three nodes: ok");
    check_traffic(&c, &fabric, &nodes, &web_image);
    check_drain_and_node_loss(&mut c, d, &mut nodes, &web_image);
    check_rotation(&c, &nodes);
    let _ = c.kubectl(&["delete", "pod", "client", "web-1", "web-2", "--wait=false"]);
    drop(c);
    drop(cleanups);
    drop(reg);
    drop(fabric);
}
