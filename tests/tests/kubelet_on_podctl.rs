//! A stock kubelet on `podctl serve`'s socket, with no proxy between them:
//! the kubelet registers its node and runs a pod through podctl (its gRPC
//! client of the 1.24 era sends the socket path as `:authority`).
//!
//! Skipped (with a message) unless the Kubernetes binaries are found in
//! `$E2E_BIN` (or `$KUBEBUILDER_ASSETS`): kube-apiserver,
//! kube-controller-manager, kube-scheduler, kubectl, kubelet and agnhost,
//! plus etcd; see the README for building them by hand.

use std::path::PathBuf;

use podctl_tests::e2e_env::{Agent, Env, Options};

const NEEDED: [&str; 6] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "agnhost",
];

fn bin_dir() -> Option<PathBuf> {
    ["E2E_BIN", "KUBEBUILDER_ASSETS"]
        .iter()
        .filter_map(std::env::var_os)
        .map(PathBuf::from)
        .find(|d| NEEDED.iter().all(|b| d.join(b).is_file()))
}

#[test]
fn a_stock_kubelet_runs_a_pod_through_podctl_serve() {
    let Some(bin) = bin_dir() else {
        eprintln!(
            "skipped: needs {} in $E2E_BIN or $KUBEBUILDER_ASSETS (see README)",
            NEEDED.join(", ")
        );
        return;
    };
    if podctl_tests::cluster::find("etcd").is_none() && !bin.join("etcd").is_file() {
        eprintln!("skipped: needs etcd (apt-get install etcd-server)");
        return;
    }
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let env = Env::start(&Options {
        bin,
        work: work.path().to_path_buf(),
        agent: Agent::KubeletOnPodctl,
        podctl: podctl_tests::workspace_bin("podctl"),
        cluster_dns: "10.96.0.10".into(),
    });
    let c = &env.cluster;
    let node = c.get_json(&["node", &env.node]).unwrap_or_default();
    assert_eq!(
        node["status"]["nodeInfo"]["containerRuntimeVersion"]
            .as_str()
            .map(|v| v.starts_with("podctl://")),
        Some(true),
        "{node}"
    );
    println!(
        "check: the kubelet registered node {} on podctl: ok",
        env.node
    );

    let image = std::fs::read_to_string(&env.repo_list)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("promoterE2eRegistry: "))
        .map(|r| format!("{r}/busybox:1.29-2"))
        .unwrap_or_default();
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: hello, namespace: default}}\n\
         spec:\n  nodeName: {node}\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: {image}\n    \
         command: [sh, -c, 'echo -n hello-from-podctl']\n",
        node = env.node,
    ));
    c.wait("the pod to succeed", 120, || {
        c.get_json(&["pod", "hello", "-n", "default"])
            .is_some_and(|p| p["status"]["phase"] == "Succeeded")
    });
    let pod = c
        .get_json(&["pod", "hello", "-n", "default"])
        .unwrap_or_default();
    let id = pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(id.starts_with("podctl://"), "{pod}");
    let logs = c.kubectl(&["logs", "hello", "-n", "default"]);
    // A final chunk without a newline stays without one (a P record).
    assert_eq!(logs.as_deref(), Ok("hello-from-podctl"));
    println!("check: a pod ran through podctl, kubectl logs reads it: ok");
}
