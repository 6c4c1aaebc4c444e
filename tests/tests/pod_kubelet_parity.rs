//! What Kubernetes' e2e [NodeConformance] suite checks of a kubelet,
//! through the lifecycle engine the node agent shares with `podctl run`
//! (so CI, which has no Kubernetes binaries, keeps it): a hostname cut to
//! 63 characters, the managed /etc/hosts and resolv.conf, init container
//! statuses and conditions, and a container whose executable is missing.

mod common;

use common::podenv::{condition, container, setup, Env};
use k8s_openapi::api::core::v1::Pod;
use podctl_tests::fixtures::publish;
use podctl_tests::registry::Registry;

fn phase(p: &Pod) -> Option<String> {
    p.status.as_ref()?.phase.clone()
}

fn logs(env: &Env, pod: &str, container: &str) -> String {
    let (ok, out, err) = env.podctl(&["logs", pod, "-c", container]);
    assert!(ok, "podctl logs {pod} -c {container}: {err}");
    out
}

#[test]
fn long_names_hosts_and_resolv_conf() {
    let (_reg, pubd) = setup();
    let env = Env::new(11);
    // 70 characters; the 63rd is a '-', which goes too.
    let name = format!("{}-{}", "a".repeat(62), "tail-end");
    let hosts_dir = env.dir.path().join("own-hosts");
    std::fs::create_dir_all(&hosts_dir).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(hosts_dir.join("hosts"), "10.1.1.1 mine\n").unwrap_or_else(|e| panic!("{e}"));
    env.run(
        "names",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: Never
  dnsPolicy: None
  dnsConfig:
    nameservers: [192.0.2.10]
    searches: [one.example, two.example]
    options: [{{name: ndots, value: "2"}}, {{name: edns0}}]
  hostAliases:
  - ip: 123.45.67.89
    hostnames: [foo.local, bar.local]
  volumes:
  - name: own
    hostPath: {{path: {own}}}
  containers:
  - name: managed
    image: {bb}
    command: [sh, -c, 'hostname; cat /etc/hosts; cat /etc/resolv.conf']
  - name: own
    image: {bb}
    command: [sh, -c, 'cat /etc/hosts']
    volumeMounts: [{{name: own, mountPath: /etc/hosts, subPath: hosts}}]
"#,
            bb = pubd.busybox,
            own = hosts_dir.display(),
        ),
    );
    let p = env.until(&name, 60, |p| {
        (phase(p).as_deref() == Some("Succeeded")).then(|| p.clone())
    });
    let ip = p
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default();
    let short = "a".repeat(62);
    let out = logs(&env, &name, "managed");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(short.as_str()), "{out}");
    assert!(
        out.contains("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"),
        "{out}"
    );
    assert!(out.contains(&format!("{ip}\t{short}\n")), "{out}");
    assert!(
        out.contains("\n# Entries added by HostAliases.\n123.45.67.89\tfoo.local\tbar.local\n"),
        "{out}"
    );
    assert!(out.contains("nameserver 192.0.2.10\n"), "{out}");
    assert!(out.contains("search one.example two.example\n"), "{out}");
    assert!(out.contains("options ndots:2 edns0"), "{out}");
    // A container that mounts /etc/hosts itself keeps its own.
    assert_eq!(logs(&env, &name, "own"), "10.1.1.1 mine\n");
}

#[test]
fn init_container_statuses_and_conditions() {
    let (_reg, pubd) = setup();
    let env = Env::new(12);
    env.run(
        "inits",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: inits}}
spec:
  restartPolicy: Never
  initContainers:
  - {{name: init1, image: {bb}, command: [sh, -c, 'true']}}
  - {{name: init2, image: {bb}, command: [sh, -c, 'exit 7']}}
  containers:
  - {{name: app, image: {bb}, command: [sh, -c, 'echo must-not-run']}}
"#,
            bb = pubd.busybox
        ),
    );
    let p = env.until("inits", 60, |p| {
        (phase(p).as_deref() == Some("Failed")).then(|| p.clone())
    });
    let init1 = container(&p, "init1").cloned().unwrap_or_default();
    assert!(init1.ready, "a finished init container is Ready: {init1:?}");
    let init2 = container(&p, "init2").cloned().unwrap_or_default();
    assert!(!init2.ready);
    let t = init2.state.and_then(|s| s.terminated).unwrap_or_default();
    assert_eq!((t.exit_code, t.reason.as_deref()), (7, Some("Error")));
    // The app container never ran.
    let app = container(&p, "app").cloned().unwrap_or_default();
    let w = app
        .state
        .clone()
        .and_then(|s| s.waiting)
        .unwrap_or_default();
    assert_eq!(w.reason.as_deref(), Some("PodInitializing"), "{app:?}");
    assert!(app.container_id.is_none());
    let init = condition(&p, "Initialized").unwrap_or_default();
    assert_eq!(
        (
            init.status.as_str(),
            init.reason.as_deref(),
            init.message.as_deref()
        ),
        (
            "False",
            Some("ContainersNotInitialized"),
            Some("containers with incomplete status: [init2]")
        )
    );
    let ready = condition(&p, "Ready").unwrap_or_default();
    assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
    assert_eq!(
        ready.message.as_deref(),
        Some("containers with unready status: [app]")
    );
}

#[test]
fn a_missing_executable_fails_its_start_and_is_retried() {
    let (_reg, pubd) = setup();
    let env = Env::new(13);
    env.run(
        "noexec",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: noexec}}
spec:
  containers:
  - {{name: ok, image: {bb}, command: [sh, -c, 'exec sleep 600']}}
  - {{name: bad, image: {bb}, command: [/no/such/program]}}
"#,
            bb = pubd.busybox
        ),
    );
    // The pod runs (one container up), the other is retried with back-off.
    let p = env.until("noexec", 60, |p| {
        let bad = container(p, "bad")?;
        let last = bad.last_state.as_ref()?.terminated.as_ref()?;
        (bad.restart_count >= 1 && phase(p).as_deref() == Some("Running")).then(|| {
            assert_eq!(
                (last.exit_code, last.reason.as_deref()),
                (128, Some("StartError"))
            );
            assert!(
                last.message
                    .as_deref()
                    .is_some_and(|m| m.contains("/no/such/program")),
                "{last:?}"
            );
            p.clone()
        })
    });
    let ok = container(&p, "ok").cloned().unwrap_or_default();
    assert!(ok.ready, "{ok:?}");
}

#[test]
fn image_pull_secrets_authenticate_the_pull() {
    let reg = Registry::start_basic_auth("puller", "s3cret").unwrap_or_else(|e| panic!("{e}"));
    let pubd = publish(&reg, Some(("puller", "s3cret"))).unwrap_or_else(|e| panic!("{e}"));
    let env = Env::new(14);
    let config = serde_json::json!({"auths": {format!("http://{}", pubd.host): {"username": "puller", "password": "s3cret"}}});
    let pod = |name: &str, secrets: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: Never
{secrets}  containers:
  - {{name: c, image: {bb}, imagePullPolicy: Always, command: [sh, -c, 'echo pulled']}}
"#,
            bb = pubd.busybox
        )
    };
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: regcred}}\ntype: kubernetes.io/dockerconfigjson\n\
         stringData:\n  .dockerconfigjson: '{config}'\n---\n"
    );
    env.run(
        "with",
        &format!(
            "{secret}{}",
            pod("with", "  imagePullSecrets: [{name: regcred}]\n")
        ),
    );
    env.until("with", 60, |p| {
        (phase(p).as_deref() == Some("Succeeded")).then_some(())
    });
    assert_eq!(logs(&env, "with", "c"), "pulled\n");
    // Without the secret the registry refuses, and the pod says so.
    let f = env.dir.path().join("without.yaml");
    std::fs::write(&f, pod("without", "")).unwrap_or_else(|e| panic!("{e}"));
    let (ok, out, err) = env.podctl(&["run", &f.display().to_string()]);
    assert!(!ok, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("auth"),
        "the failure names the authentication: {out}{err}"
    );
}
