//! A stock kubelet on `podctl serve`'s socket, with no proxy between them:
//! the kubelet registers its node and runs a pod through podctl (its gRPC
//! client of the 1.24 era sends the socket path as `:authority`).
//!
//! Skipped (with a message) unless the Kubernetes binaries are found in
//! `$E2E_BIN` (or `$KUBEBUILDER_ASSETS`): kube-apiserver,
//! kube-controller-manager, kube-scheduler, kubectl, kubelet and agnhost,
//! plus etcd; see the README for building them by hand.

use podctl_tests::e2e_env::{start_for_test, Agent};

#[test]
fn a_stock_kubelet_runs_a_pod_through_podctl_serve() {
    let Some(env) = start_for_test(Agent::KubeletOnPodctl) else {
        return;
    };
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

    let image = format!("{}/busybox:1.29-2", env.e2e_registry());
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
