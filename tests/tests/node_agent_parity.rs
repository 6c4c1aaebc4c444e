//! `podctl node` behaving as the kubelet where Kubernetes' e2e suite
//! found it did not: logs of a pod that completed, an image changed in
//! place (`kubectl set image`), activeDeadlineSeconds set on a running
//! pod, a pod refused for an unsafe sysctl, a readiness gate holding back
//! Ready, and labels reaching a downward API volume.
//!
//! Skipped (with a message) unless kube-apiserver,
//! kube-controller-manager, kube-scheduler, kubectl and agnhost are found
//! in `$E2E_BIN` (or `$KUBEBUILDER_ASSETS`), with etcd; see the README.

use podctl_tests::e2e_env::{start_for_test, Agent, Env};
use serde_json::Value;

fn pod(env: &Env, name: &str) -> Value {
    env.cluster
        .get_json(&["pod", name, "-n", "default"])
        .unwrap_or_default()
}

fn wait_pod(env: &Env, name: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    env.cluster.wait(what, 120, || f(&pod(env, name)));
    pod(env, name)
}

#[test]
fn the_node_agent_follows_pods_as_the_kubelet_does() {
    let Some(env) = start_for_test(Agent::Podctl) else {
        return;
    };
    let c = &env.cluster;
    let reg = env.e2e_registry();
    let node = env.node.clone();
    let manifest = |name: &str, extra_spec: &str, image: &str, cmd: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default, labels: {{tier: one}}}}\n\
             spec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 1\n{extra_spec}  containers:\n  - name: c\n    image: {image}\n    \
             command: [sh, -c, '{cmd}']\n"
        )
    };

    // Logs of a pod that completed stay readable until it is deleted.
    c.apply(&manifest(
        "done",
        "  restartPolicy: Never\n",
        &format!("{reg}/busybox:1.29-2"),
        "echo first; echo -n last",
    ));
    wait_pod(&env, "done", "pod done to succeed", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(
        c.kubectl(&["logs", "done", "-n", "default"]).as_deref(),
        Ok("first\nlast")
    );
    // The same over a WebSocket through the API server (its relay drops
    // bytes that come with the end of the kubelet's body).
    let d = &c.pki.dir;
    let ws = std::process::Command::new("curl")
        .args([
            "-s",
            "--no-buffer",
            "--http1.1",
            "--max-time",
            "5",
            "--cacert",
        ])
        .arg(d.join("ca.crt"))
        .arg("--cert")
        .arg(d.join("admin.crt"))
        .arg("--key")
        .arg(d.join("admin.key"))
        .args(["-H", "Connection: Upgrade", "-H", "Upgrade: websocket"])
        .args(["-H", "Sec-WebSocket-Version: 13"])
        .args(["-H", "Sec-WebSocket-Key: cG9kY3RsLXdzLWxvZ3MtdGVzdA=="])
        .args(["-H", "Sec-WebSocket-Protocol: binary.k8s.io"])
        .arg(format!(
            "{}/api/v1/namespaces/default/pods/done/log?container=c",
            c.server
        ))
        .output()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    let frames = String::from_utf8_lossy(&ws.stdout).into_owned();
    assert!(frames.contains("first\nlast"), "{frames:?}");
    println!("check: logs of a completed pod, also over WebSocket: ok");

    // The image of a running bare pod changed in place.
    c.apply(&manifest(
        "img",
        "",
        &format!("{reg}/nginx:1.14-2"),
        "exec sleep 600",
    ));
    wait_pod(&env, "img", "pod img to run", |p| {
        p["status"]["containerStatuses"][0]["state"]["running"].is_object()
    });
    let new_image = format!("{reg}/nginx:1.15-2");
    c.kubectl(&[
        "set",
        "image",
        "pod/img",
        "-n",
        "default",
        &format!("c={new_image}"),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let p = wait_pod(&env, "img", "the new image to run", |p| {
        let s = &p["status"]["containerStatuses"][0];
        s["image"] == new_image.as_str()
            && s["state"]["running"].is_object()
            && s["restartCount"] == 1
    });
    assert_eq!(p["status"]["phase"], "Running");
    println!("check: kubectl set image restarts the container with the new image: ok");

    // activeDeadlineSeconds set on the running pod ends it.
    c.kubectl(&[
        "patch",
        "pod",
        "img",
        "-n",
        "default",
        "-p",
        r#"{"spec":{"activeDeadlineSeconds":5}}"#,
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let p = wait_pod(&env, "img", "the deadline to end the pod", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(p["status"]["reason"], "DeadlineExceeded", "{p}");
    println!("check: activeDeadlineSeconds on a running pod: ok");

    // An unsafe sysctl is refused before anything runs.
    c.apply(&manifest(
        "sysctl",
        "  securityContext:\n    sysctls: [{name: kernel.msgmax, value: \"10000\"}]\n",
        &format!("{reg}/busybox:1.29-2"),
        "true",
    ));
    let p = wait_pod(&env, "sysctl", "the sysctl pod to be refused", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(p["status"]["reason"], "SysctlForbidden", "{p}");
    println!("check: an unsafe sysctl is refused (SysctlForbidden): ok");

    // A readiness gate holds Ready back until its condition is True; the
    // pod's labels reach its downward API volume.
    c.apply(&manifest(
        "gated",
        "  readinessGates: [{conditionType: example.com/gate}]\n  volumes:\n  - name: info\n    downwardAPI:\n      items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]\n",
        &format!("{reg}/busybox:1.29-2"),
        "exec sleep 600",
    )
    .replace(
        "command: [sh, -c, 'exec sleep 600']\n",
        "command: [sh, -c, 'exec sleep 600']\n    volumeMounts: [{name: info, mountPath: /info}]\n",
    ));
    let p = wait_pod(&env, "gated", "the gated pod to run", |p| {
        p["status"]["containerStatuses"][0]["ready"] == true
    });
    let ready = |p: &Value| {
        p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready")
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(ready(&p)["status"], "False", "{p}");
    assert_eq!(ready(&p)["reason"], "ReadinessGatesNotReady", "{p}");
    // The gate's condition is set on the status subresource (with curl:
    // kubectl of this age has no --subresource).
    let d = &c.pki.dir;
    let ok = std::process::Command::new("curl")
        .args(["-sSf", "-X", "PATCH", "--cacert"])
        .arg(d.join("ca.crt"))
        .arg("--cert")
        .arg(d.join("admin.crt"))
        .arg("--key")
        .arg(d.join("admin.key"))
        .args([
            "-H",
            "Content-Type: application/strategic-merge-patch+json",
            "-d",
        ])
        .arg(r#"{"status":{"conditions":[{"type":"example.com/gate","status":"True"}]}}"#)
        .arg(format!(
            "{}/api/v1/namespaces/default/pods/gated/status",
            c.server
        ))
        .output()
        .unwrap_or_else(|e| panic!("curl: {e}"));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    wait_pod(&env, "gated", "Ready once the gate is True", |p| {
        ready(p)["status"] == "True"
    });
    c.kubectl(&[
        "label",
        "pod",
        "gated",
        "-n",
        "default",
        "tier=two",
        "--overwrite",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    c.wait("the new label in the volume", 60, || {
        c.kubectl(&[
            "exec",
            "gated",
            "-n",
            "default",
            "--",
            "cat",
            "/info/labels",
        ])
        .is_ok_and(|s| s.contains("tier=\"two\""))
    });
    println!("check: readiness gate and downward API label update: ok");
}
