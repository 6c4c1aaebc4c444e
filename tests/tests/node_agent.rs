//! `podctl node` against a stock control plane (etcd, kube-apiserver with
//! the Node authorizer and NodeRestriction, controller-manager, scheduler):
//! the node registers and turns Ready, a Deployment's pod runs on it with
//! its Secret volume, `kubectl logs` and `kubectl exec` reach it through
//! the API server, and deleting the pod ends its containers.
//!
//! Skipped (with a message) unless all of etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and kubectl are found
//! (`$KUBEBUILDER_ASSETS`, `/usr/local/kubebuilder/bin`, `$PATH`); see the
//! README for how to get them.

mod common;

use std::path::Path;
use std::process::Command;

use podctl_tests::cluster::{
    cleanup_for, free_port, node_command, node_config, processes_with_arg, skip_without_binaries,
    Cluster, BOOTSTRAP_RBAC, BOOTSTRAP_TOKEN,
};
use podctl_tests::fixtures::publish;
use podctl_tests::registry::Registry;

const NODE: &str = "podctl-test-node";

fn first_pod(c: &Cluster) -> Option<serde_json::Value> {
    c.get_json(&["pods", "-l", "app=web", "-n", "default"])?
        .get("items")?
        .as_array()?
        .iter()
        .find(|p| p["metadata"]["deletionTimestamp"].is_null())
        .cloned()
}

/// The reasons of the Events about one object.
fn event_reasons(c: &Cluster, name: &str) -> Vec<String> {
    let events = c
        .get_json(&[
            "events",
            "--field-selector",
            &format!("involvedObject.name={name}"),
        ])
        .unwrap_or_default();
    events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["reason"].as_str().map(str::to_string))
        .collect()
}

fn ready(p: &serde_json::Value) -> bool {
    p["status"]["phase"] == "Running"
        && p["status"]["containerStatuses"][0]["ready"] == serde_json::Value::Bool(true)
}

#[test]
fn a_stock_control_plane_runs_a_deployment_on_podctl_node() {
    if skip_without_binaries("node agent") {
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let d = dir.path();
    // Sleep lengths unique to this run mark its containers' processes.
    let app_mark = (100_000 + std::process::id() % 100_000 * 2).to_string();
    let static_mark = (100_001 + std::process::id() % 100_000 * 2).to_string();
    let cleanup = cleanup_for(d);
    let reg = Registry::start().unwrap_or_else(|e| panic!("{e}"));
    let pubd = publish(&reg, None).unwrap_or_else(|e| panic!("{e}"));
    let mut c = Cluster::start(d);

    // TLS bootstrap, as a kubelet joins: a bootstrap token allowed to ask
    // for node client certificates, which the controller-manager approves
    // and signs; the node writes its own kubeconfig.
    c.apply(BOOTSTRAP_RBAC);
    let boot = c
        .pki
        .token_kubeconfig("bootstrap", &c.server, BOOTSTRAP_TOKEN);
    let kubeconfig = d.join("node.kubeconfig");
    let (scrt, skey) = c.pki.cert("kubelet-serving", &format!("/CN={NODE}"), true);
    let (config, subnet) = node_config(d, &pubd.host, &cleanup);
    let port = free_port();
    let manifests = d.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        manifests.join("static.yaml"),
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: static-web, namespace: default}}\n\
             spec:\n  containers:\n  - name: app\n    image: {}/library/busybox:latest\n    \
             command: [sh, -c, 'echo static-ok; exec sleep {static_mark}']\n",
            pubd.host,
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let ca = c.pki.dir.join("ca.crt");
    let node_cmd = || {
        let mut cmd = node_command(&config, &kubeconfig, NODE, port, (&scrt, &skey));
        cmd.arg("--bootstrap-kubeconfig")
            .arg(&boot)
            .arg("--cert-dir")
            .arg(d.join("pki"))
            .arg("--client-ca-file")
            .arg(&ca)
            .arg("--pod-manifest-path")
            .arg(&manifests)
            .args(["--sync-frequency", "2"])
            .arg(podctl_tests::cluster::TEST_EVICTION_HARD);
        cmd
    };
    let mut cmd = node_cmd();
    c.procs.spawn("podctl-node", d, &mut cmd);

    // Registered, Ready, heartbeating.
    c.wait("Node Ready", 120, || c.node_ready(NODE));
    let node = c.get_json(&["node", NODE]).unwrap_or_default();
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/hostname"], NODE);
    assert!(node["status"]["capacity"]["cpu"].is_string(), "{node}");
    assert_eq!(node["status"]["addresses"][0]["address"], "127.0.0.1");
    assert!(c
        .kubectl(&["get", "lease", "-n", "kube-node-lease", NODE])
        .is_ok());
    println!("check: Node {NODE} registered, Ready, Lease renewed: ok");
    assert!(kubeconfig.exists(), "bootstrap wrote no kubeconfig");
    let subject = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-in"])
        .arg(d.join("pki/node-client.crt"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(
        subject.contains(&format!("system:node:{NODE}")) && subject.contains("system:nodes"),
        "{subject}"
    );
    let csrs = c.get_json(&["csr"]).unwrap_or_default();
    assert!(
        csrs["items"].as_array().into_iter().flatten().any(|x| {
            x["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet"
                && x["status"]["conditions"][0]["type"] == "Approved"
        }),
        "{csrs}"
    );
    println!("check: TLS bootstrap: CSR approved and signed, node kubeconfig written: ok");

    // The kubelet API wants credentials (healthz aside).
    let http = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let base = format!("https://127.0.0.1:{port}");
    let get = |p: &str| {
        http.get(format!("{base}{p}"))
            .send()
            .map(|r| r.status().as_u16())
    };
    assert_eq!(get("/healthz").ok(), Some(200));
    assert_eq!(get("/pods").ok(), Some(401));
    let forbidden = http
        .get(format!("{base}/pods"))
        .bearer_auth("not-a-token")
        .send()
        .map(|r| r.status().as_u16());
    assert_eq!(forbidden.ok(), Some(401));
    println!("check: kubelet API refuses anonymous and bad-token callers (401): ok");

    // The static pod runs and is mirrored.
    let mirror = format!("static-web-{NODE}");
    c.wait("the static pod's mirror Running", 120, || {
        c.get_json(&["pod", &mirror])
            .is_some_and(|p| p["status"]["phase"] == "Running")
    });
    let m = c.get_json(&["pod", &mirror]).unwrap_or_default();
    assert!(
        m["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string(),
        "{m}"
    );
    let logs = c
        .kubectl(&["logs", &mirror])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(logs, "static-ok\n");
    println!("check: static pod runs, mirror pod {mirror} Running, its logs: ok");

    let image = format!("{}/library/busybox:latest", pubd.host);
    c.apply(&format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: app-secret, namespace: default}}
stringData: {{key: s3cret}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: default}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: app
        image: {image}
        command: ["sh", "-c", "cat /etc/secret/key; echo; echo started; httpd -p 8080 -h /etc/secret; exec sleep {app_mark}"]
        volumeMounts: [{{name: s, mountPath: /etc/secret, readOnly: true}}]
        readinessProbe: {{exec: {{command: ["true"]}}, periodSeconds: 1}}
      volumes: [{{name: s, secret: {{secretName: app-secret}}}}]
"#
    ));
    c.wait("the Deployment's pod Running and Ready", 180, || {
        first_pod(&c).is_some_and(|p| ready(&p))
    });
    let pod = first_pod(&c).unwrap_or_default();
    let name = pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(pod["spec"]["nodeName"], NODE);
    let cs = &pod["status"]["containerStatuses"][0];
    assert!(cs["state"]["running"].is_object(), "{cs}");
    assert!(
        cs["containerID"]
            .as_str()
            .unwrap_or("")
            .starts_with("podctl://"),
        "{cs}"
    );
    assert!(
        cs["imageID"].as_str().unwrap_or("").contains("sha256:"),
        "{cs}"
    );
    assert_eq!(pod["status"]["hostIP"], "127.0.0.1");
    assert!(
        pod["status"]["podIP"]
            .as_str()
            .unwrap_or("")
            .starts_with(subnet.trim_end_matches("0/24")),
        "{pod}"
    );
    println!("check: Deployment pod {name} Running and Ready with its status: ok");

    // Through the API server to the kubelet API.
    let logs = c
        .kubectl(&["logs", &name])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        logs.contains("s3cret") && logs.contains("started"),
        "{logs}"
    );
    let out = c
        .kubectl(&["exec", &name, "--", "cat", "/etc/secret/key"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out, "s3cret");
    println!("check: kubectl logs and kubectl exec (Secret volume content): ok");
    let exec = |args: &[&str]| {
        let mut a = vec!["exec", name.as_str(), "--"];
        a.extend_from_slice(args);
        c.kubectl(&a).unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(
        exec(&["sh", "-c", "echo $KUBERNETES_SERVICE_HOST"]),
        "10.96.0.1\n"
    );
    assert_eq!(
        exec(&["sh", "-c", "echo $KUBERNETES_PORT_443_TCP_PORT"]),
        "443\n"
    );
    let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
    assert_eq!(exec(&["cat", &format!("{sa}/namespace")]), "default");
    assert!(exec(&["cat", &format!("{sa}/ca.crt")]).contains("BEGIN CERTIFICATE"));
    let token = exec(&["cat", &format!("{sa}/token")]);
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    println!("check: service env vars, projected SA token, namespace and kube-root-ca.crt: ok");

    // kubectl port-forward: SPDY through the API server to the kubelet API.
    let local = free_port();
    let mut pf = Command::new(&c.kubectl)
        .arg("--kubeconfig")
        .arg(&c.admin)
        .args([
            "port-forward",
            &format!("pod/{name}"),
            &format!("{local}:8080"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("kubectl port-forward: {e}"));
    let mut body = String::new();
    c.wait("a response through kubectl port-forward", 30, || {
        body = reqwest::blocking::get(format!("http://127.0.0.1:{local}/key"))
            .and_then(|r| r.text())
            .unwrap_or_default();
        body == "s3cret"
    });
    let _ = pf.kill();
    let _ = pf.wait();
    println!("check: kubectl port-forward reaches the pod's port 8080: ok");

    // Restarting the agent adopts the running pod: same process, no restart.
    let before = processes_with_arg(&app_mark);
    c.procs.stop("podctl-node");
    let mut cmd = node_cmd();
    c.procs.spawn("podctl-node", d, &mut cmd);
    std::thread::sleep(std::time::Duration::from_secs(5));
    c.wait("the pod Ready under the restarted agent", 60, || {
        first_pod(&c).is_some_and(|p| ready(&p) && p["metadata"]["name"] == name.as_str())
    });
    assert_eq!(
        processes_with_arg(&app_mark),
        before,
        "the container was replaced"
    );
    let p = first_pod(&c).unwrap_or_default();
    assert_eq!(
        p["status"]["containerStatuses"][0]["restartCount"], 0,
        "{p}"
    );
    let out = c.kubectl(&["exec", &name, "--", "cat", "/etc/secret/key"]);
    assert_eq!(out.ok().as_deref(), Some("s3cret"));
    println!("check: a restarted agent adopts the running pod (same process, no restart): ok");
    c.kubectl(&[
        "patch",
        "secret",
        "app-secret",
        "-p",
        r#"{"stringData":{"key":"n3w"}}"#,
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    c.wait("the Secret volume to follow the update", 60, || {
        c.kubectl(&["exec", &name, "--", "cat", "/etc/secret/key"])
            .is_ok_and(|s| s == "n3w")
    });
    println!("check: an updated Secret reaches the running pod's volume: ok");
    let summary = c
        .kubectl(&[
            "get",
            "--raw",
            &format!("/api/v1/nodes/{NODE}/proxy/stats/summary"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(summary.contains(&name), "{summary}");
    let reasons = event_reasons(&c, &name);
    for r in ["Scheduled", "Pulled", "Created", "Started"] {
        assert!(reasons.iter().any(|x| x == r), "{r} not in {reasons:?}");
    }
    println!("check: stats/summary through the API server, Events {reasons:?}: ok");

    // Deleting the pod ends its container; the Deployment replaces it.
    let old = processes_with_arg(&app_mark);
    assert_eq!(old.len(), 1, "one container running the app");
    c.kubectl(&["delete", "pod", &name, "--wait=true", "--timeout=90s"])
        .unwrap_or_else(|e| panic!("{e}"));
    // The object goes only once its containers are gone.
    assert!(
        !Path::new(&format!("/proc/{}", old[0])).exists(),
        "the deleted pod's container still runs"
    );
    println!("check: deleting the pod ended its container before the object went: ok");
    let reasons = event_reasons(&c, &name);
    assert!(
        reasons.iter().any(|r| r == "Killing"),
        "no Killing event: {reasons:?}"
    );
    c.wait("the replacement pod Ready", 180, || {
        first_pod(&c).is_some_and(|p| p["metadata"]["name"] != name.as_str() && ready(&p))
    });
    assert!(
        c.get_json(&["pod", &name]).is_none(),
        "deleted pod object still there"
    );
    assert_eq!(
        processes_with_arg(&app_mark).len(),
        1,
        "only the replacement's container runs"
    );
    c.kubectl(&["delete", "deployment", "web", "--wait=true"])
        .unwrap_or_else(|e| panic!("{e}"));
    c.wait("all containers gone", 90, || {
        processes_with_arg(&app_mark).is_empty()
    });
    println!("check: replacement pod Ready; deleting the Deployment ends it: ok");
    std::fs::remove_file(manifests.join("static.yaml")).unwrap_or_else(|e| panic!("{e}"));
    c.wait("the static pod and its mirror gone", 90, || {
        processes_with_arg(&static_mark).is_empty() && c.get_json(&["pod", &mirror]).is_none()
    });
    println!("check: removing the manifest stops the static pod and deletes its mirror: ok");
    drop(c);
    drop(cleanup);
    drop(reg);
}
