//! Volumes and environment through `podctl run`, with real containers:
//! ConfigMap and Secret files with their contents and modes (the secret on
//! a tmpfs), downward API files, an emptyDir shared with an init
//! container, a subPath into a ConfigMap, env from ConfigMaps, Secrets,
//! fields and resources, and a subPath symlink escape refused.

mod common;

use common::podenv::Env;
use podctl_tests::fixtures::publish;
use podctl_tests::registry::Registry;

fn manifest(busybox: &str, app_cmd: &str, extra_mount: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: settings}}
data: {{greeting: hello, app.conf: "a=1\n"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds}}
stringData: {{password: s3cret}}
data: {{token: dG9rZW4=}}
---
apiVersion: v1
kind: Pod
metadata: {{name: vols, labels: {{app: vols, tier: web}}}}
spec:
  initContainers:
  - name: writer
    image: {busybox}
    command: [sh, -c, 'echo from-init > /shared/note; ln -s / /shared/escape']
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  containers:
  - name: app
    image: {busybox}
    command: [sh, -c, '{app_cmd}']
    resources: {{limits: {{memory: 64Mi}}}}
    env:
    - {{name: GREETING, valueFrom: {{configMapKeyRef: {{name: settings, key: greeting}}}}}}
    - {{name: PASSWORD, valueFrom: {{secretKeyRef: {{name: creds, key: password}}}}}}
    - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: MEM_MI, valueFrom: {{resourceFieldRef: {{resource: limits.memory, divisor: 1Mi}}}}}}
    - {{name: COMBINED, value: "$(GREETING)-$(POD_NAME)"}}
    envFrom: [{{configMapRef: {{name: settings}}, prefix: CM_}}]
    volumeMounts:
    - {{name: shared, mountPath: /shared}}
    - {{name: config, mountPath: /etc/config}}
    - {{name: secret, mountPath: /etc/secret}}
    - {{name: info, mountPath: /etc/info}}
    - {{name: config, mountPath: /etc/app.conf, subPath: app.conf}}
{extra_mount}
  volumes:
  - {{name: shared, emptyDir: {{}}}}
  - name: config
    configMap:
      name: settings
      items: [{{key: greeting, path: greet.txt, mode: 0600}}, {{key: app.conf, path: app.conf}}]
  - {{name: secret, secret: {{secretName: creds, defaultMode: 0400}}}}
  - name: info
    downwardAPI:
      items: [{{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}, {{path: name, fieldRef: {{fieldPath: metadata.name}}}}]
"#
    )
}

#[test]
fn files_env_and_subpaths() {
    let reg = Registry::start().unwrap_or_else(|e| panic!("{e}"));
    let pubd = publish(&reg, None).unwrap_or_else(|e| panic!("{e}"));
    let env = Env::new(11);
    env.run("vols", &manifest(&pubd.busybox, "exec sleep 1000", ""));
    let exec = |cmd: &str| {
        let (ok, out, err) = env.podctl(&["exec", "vols", "-c", "app", "--", "sh", "-c", cmd]);
        assert!(ok, "{cmd}: {err}");
        out
    };
    // ConfigMap items with their modes; the file seen through ..data.
    assert_eq!(exec("cat /etc/config/greet.txt"), "hello");
    assert_eq!(
        exec("stat -L -c %a /etc/config/greet.txt /etc/config/app.conf"),
        "600\n644\n"
    );
    assert_eq!(exec("readlink /etc/config/greet.txt"), "..data/greet.txt\n");
    // Secret keys as files, 0400, on a tmpfs, read-only.
    assert_eq!(
        exec("cat /etc/secret/password; echo; cat /etc/secret/token"),
        "s3cret\ntoken"
    );
    assert_eq!(exec("stat -L -c %a /etc/secret/password"), "400\n");
    assert_eq!(exec("stat -f -c %T /etc/secret"), "tmpfs\n");
    assert!(exec("touch /etc/secret/x 2>&1; echo rc=$?").contains("Read-only file system"));
    // Downward API.
    assert_eq!(exec("cat /etc/info/labels"), "app=\"vols\"\ntier=\"web\"");
    assert_eq!(exec("cat /etc/info/name"), "vols");
    // emptyDir written by the init container; subPath to one ConfigMap key.
    assert_eq!(exec("cat /shared/note"), "from-init\n");
    assert_eq!(exec("cat /etc/app.conf"), "a=1\n");
    // Environment.
    assert_eq!(
        exec("echo $GREETING $PASSWORD $POD_NAME $MEM_MI $COMBINED $CM_greeting"),
        "hello s3cret vols 64 hello-vols hello\n"
    );
    // The pod-level cgroup carries the pod's memory limit (the sum of its
    // containers', as the kubelet sets it).
    let sandboxes: Vec<String> = std::fs::read_dir(env.dir.path().join("run/sandboxes"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(sandboxes.len(), 1);
    let v1 = format!(
        "/sys/fs/cgroup/memory/podctl/{}/memory.limit_in_bytes",
        sandboxes[0]
    );
    let v2 = format!("/sys/fs/cgroup/podctl/{}/memory.max", sandboxes[0]);
    let limit = std::fs::read_to_string(&v1).or_else(|_| std::fs::read_to_string(&v2));
    assert_eq!(limit.unwrap_or_default().trim(), (64u64 << 20).to_string());
    // Secrets are on tmpfs on the host too, and go with the pod.
    let vols = env.dir.path().join("var/pods");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(mounts
        .lines()
        .any(|l| l.contains("kubernetes.io~secret") && l.contains(" - tmpfs ")));
    let (ok, _, err) = env.podctl(&["rm", "--timeout", "0", "vols"]);
    assert!(ok, "{err}");
    let after = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(
        !after.contains(&vols.display().to_string()),
        "mounts left under {}",
        vols.display()
    );
    drop(reg);
}

#[test]
fn subpath_symlink_escape_is_refused() {
    let reg = Registry::start().unwrap_or_else(|e| panic!("{e}"));
    let pubd = publish(&reg, None).unwrap_or_else(|e| panic!("{e}"));
    let env = Env::new(12);
    let f = env.dir.path().join("escape.yaml");
    let text = manifest(
        &pubd.busybox,
        "exec sleep 1000",
        "    - {name: shared, mountPath: /host, subPath: escape}",
    );
    std::fs::write(&f, text).unwrap_or_else(|e| panic!("{e}"));
    let (ok, out, err) = env.podctl(&["run", &f.display().to_string()]);
    assert!(!ok, "escape accepted: {out}");
    assert!(
        err.contains("CreateContainerConfigError")
            && err.contains("subPath \"escape\"")
            && err.contains("outside the volume"),
        "{err}"
    );
    // Nothing left behind.
    let (_, pods, _) = env.podctl(&["pods"]);
    assert_eq!(pods.lines().count(), 1, "{pods}");
    drop(reg);
}
