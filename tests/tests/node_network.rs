//! Three `podctl node` agents, each in its own network namespace with its
//! own address and kubelet API on :10250 (tests/src/fabric.rs), under one
//! stock control plane reached over that network: the controller-manager
//! allocates each node a pod CIDR, each node's CNI bridge takes it, routes
//! between the nodes carry pod-to-pod traffic across them; kube-proxy,
//! built from the same Kubernetes tree, runs as a DaemonSet pod on every
//! node (hostNetwork, privileged, hostPath /run/xtables.lock and
//! /lib/modules): a ClusterIP Service reaches pods on other nodes from
//! inside a pod, and a NodePort answers on each node's address.
//!
//! Skipped (with a message) unless the Kubernetes binaries are found,
//! kube-proxy and agnhost among them.

use std::collections::BTreeSet;
use std::net::SocketAddrV4;

use podctl_tests::cluster::{
    find, node_command_at, node_config_pod_cidr, skip_without_binaries, Cluster, NodeCleanup,
    TEST_EVICTION_HARD,
};
use podctl_tests::fabric::Fabric;
use podctl_tests::registry::Registry;

const NODES: usize = 3;

/// `curl` in pod `pod`: the body, or why not.
fn curl_in(c: &Cluster, pod: &str, url: &str) -> Result<String, String> {
    c.kubectl(&["exec", pod, "--", "curl", "-s", "--max-time", "3", url])
        .map(|s| s.trim().to_string())
}

/// `curl` from the host's network namespace.
fn curl_here(url: &str) -> Option<String> {
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "3", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn pod_field(c: &Cluster, pod: &str, path: &[&str]) -> String {
    let mut v = c.get_json(&["pod", pod]).unwrap_or_default();
    for p in path {
        v = v[*p].clone();
    }
    v.as_str().unwrap_or_default().to_string()
}

#[test]
fn pods_and_services_cross_three_nodes_in_their_own_network_namespaces() {
    if skip_without_binaries("node network") {
        return;
    }
    let (Some(kube_proxy), Some(agnhost)) = (find("kube-proxy"), find("agnhost")) else {
        eprintln!("skipped: the node network test needs kube-proxy and agnhost beside the control plane (see README)");
        return;
    };
    let fabric = Fabric::new(NODES).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    let pid = std::process::id();
    let cleanups: Vec<NodeCleanup> = (0..NODES)
        .map(|i| NodeCleanup {
            dir: d.join(format!("n{i}")),
            cgroup_parent: format!("/podctl-net-test-{pid}-{i}"),
            bridge: podctl_tests::unique_name("podnet"),
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
        ],
        fabric.host_ip(),
    );
    let names: Vec<String> = (0..NODES)
        .map(|i| format!("podctl-net-{i}-{pid}"))
        .collect();
    for (i, name) in names.iter().enumerate() {
        let nd = d.join(format!("n{i}"));
        std::fs::create_dir_all(&nd).unwrap_or_else(|e| panic!("{e}"));
        let (crt, key) = c.pki.cert(
            name,
            &format!("/O=system:nodes/CN=system:node:{name}"),
            false,
        );
        let kubeconfig = c.pki.kubeconfig(name, &c.server, &crt, &key);
        let (scrt, skey) = c.pki.server_cert(
            &format!("{name}-serving"),
            &format!("/CN={name}"),
            &[fabric.node_ip(i)],
        );
        let config = node_config_pod_cidr(&nd, &reg.host(), &cleanups[i]);
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
        c.procs.spawn(name, d, &mut cmd);
    }
    for n in &names {
        c.wait("the Nodes Ready", 120, || c.node_ready(n));
    }
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
    println!("check: three podctl nodes Ready, each on its own address ({}, ...) with its pod CIDR {cidrs:?}: ok", fabric.node_ip(0));

    // kube-proxy on every node, as a DaemonSet pod with a client
    // certificate of the user the default RBAC names (system:kube-proxy).
    let (kp_crt, kp_key) = c.pki.cert("kube-proxy", "/CN=system:kube-proxy", false);
    let kp_kubeconfig = c.pki.kubeconfig("kube-proxy", &c.server, &kp_crt, &kp_key);
    // This machine has no /lib/modules (kube-proxy only reads it for IPVS):
    // an empty directory of the test's stands in.
    let modules = if std::path::Path::new("/lib/modules").is_dir() {
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
        image: {kp_image}
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
        kc = kp_kubeconfig.display(),
        pki = d.display(),
    ));
    c.wait("kube-proxy ready on every node", 180, || {
        c.get_json(&["daemonset", "kube-proxy", "-n", "kube-system"])
            .is_some_and(|v| v["status"]["numberReady"].as_u64() == Some(NODES as u64))
    });
    println!("check: kube-proxy runs as a DaemonSet pod on all three nodes: ok");

    // A client on node 0, web servers on nodes 1 and 2, a NodePort
    // Service over the servers.
    let mut pods = String::new();
    for (pod, node, app) in [
        ("client", 0, "client"),
        ("web-1", 1, "web"),
        ("web-2", 2, "web"),
    ] {
        pods.push_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {pod}, namespace: default, labels: {{app: {app}}}}}\n\
             spec:\n  nodeSelector: {{kubernetes.io/hostname: {n}}}\n  terminationGracePeriodSeconds: 1\n\
             \x20 containers:\n  - name: web\n    image: {web_image}\n---\n",
            n = names[node]
        ));
    }
    pods.push_str(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n\
         spec:\n  type: NodePort\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n",
    );
    c.apply(&pods);
    for p in ["client", "web-1", "web-2"] {
        c.wait("the pods Running", 120, || {
            pod_field(&c, p, &["status", "phase"]) == "Running"
        });
    }
    for (p, i) in [("client", 0), ("web-1", 1), ("web-2", 2)] {
        let ip = pod_field(&c, p, &["status", "podIP"]);
        assert!(
            podctl_tests::cluster::in_cidr(&ip, &cidrs[i]),
            "{p}'s IP {ip} outside node {i}'s {}",
            cidrs[i]
        );
    }
    for (p, i) in [("web-1", 1), ("web-2", 2)] {
        let ip = pod_field(&c, p, &["status", "podIP"]);
        // Running is not yet listening: a few tries.
        let mut got = Err(String::new());
        for _ in 0..10 {
            got = curl_in(&c, "client", &format!("http://{ip}:8080/hostname"));
            if got.as_deref() == Ok(p) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
        if got.as_deref() != Ok(p) {
            let url = format!("http://{ip}:8080/hostname");
            let from = |n: usize| {
                fabric
                    .command(n, "curl")
                    .args(["-sS", "--max-time", "3", &url])
                    .output()
                    .map(|o| {
                        format!(
                            "{}{}",
                            String::from_utf8_lossy(&o.stdout),
                            String::from_utf8_lossy(&o.stderr)
                        )
                    })
                    .unwrap_or_default()
            };
            panic!(
                "client (node 0) → {p} at {ip}: {got:?}\nfrom node 0's namespace: {}\nfrom node {i}'s: {}\nin {p}: {:?}\n{}\n{}",
                from(0),
                from(i),
                curl_in(&c, p, "http://127.0.0.1:8080/hostname"),
                fabric.describe(0),
                fabric.describe(i)
            );
        }
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
        if let Ok(b) = curl_in(&c, "client", &format!("http://{cluster_ip}/hostname")) {
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
    let _ = c.kubectl(&["delete", "pod", "client", "web-1", "web-2", "--wait=false"]);
    drop(c);
    drop(cleanups);
    drop(reg);
    drop(fabric);
}
