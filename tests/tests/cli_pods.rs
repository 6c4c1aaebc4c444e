//! `podctl run pod.yaml` and the standalone commands, end to end, as a
//! user would type them.

use std::process::Command;
use std::time::{Duration, Instant};

use podctl_tests::fixtures::{publish, HTTPD_INDEX};
use podctl_tests::registry::Registry;

struct Env {
    dir: tempfile::TempDir,
    bridge: String,
    /// The free a.b.c.0/24 of the bridge.
    subnet: String,
}

impl Env {
    fn podctl(&self, args: &[&str]) -> (bool, String, String) {
        let bin = podctl_tests::workspace_bin("podctl");
        podctl_tests::output(podctl_tests::podctl_command(&bin, self.dir.path()).args(args))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.podctl(&["rm", "--timeout", "0", "web"]);
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
        // The default parent cgroup, if no other pod uses it.
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for c in rd.flatten() {
                let _ = std::fs::remove_dir(c.path().join("podctl"));
            }
        }
    }
}

fn setup() -> (Registry, podctl_tests::fixtures::Published, Env) {
    let reg = Registry::start().unwrap_or_else(|e| panic!("{e}"));
    let pubd = publish(&reg, None).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bridge = podctl_tests::unique_name("podctl-c");
    let subnet = podctl_tests::free_subnet(std::process::id()).unwrap_or_else(|e| panic!("{e}"));
    podctl_tests::write_bridge_conflist(dir.path(), "podctl-cli-test", &bridge, &subnet, false)
        .unwrap_or_else(|e| panic!("{e}"));
    (
        reg,
        pubd,
        Env {
            dir,
            bridge,
            subnet,
        },
    )
}

#[test]
fn run_ps_logs_stop_rm() {
    let (_reg, pubd, env) = setup();
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: server
    image: {httpd}
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    resources:
      limits: {{memory: 64Mi, cpu: 500m}}
  - name: client
    image: {busybox}
    command: ["sh", "-c"]
    args: ["for i in $(seq 1 50); do wget -qO- http://127.0.0.1:8080/ && break; sleep 0.2; done; echo user=$(id -u) dir=$(pwd) greeting=$GREETING host=$(hostname); exec sleep 1000"]
    workingDir: /tmp
    env:
    - {{name: GREETING, value: hello}}
    securityContext:
      runAsUser: 65534
"#,
        httpd = pubd.httpd,
        busybox = pubd.busybox
    );
    let file = env.dir.path().join("pod.yaml");
    std::fs::write(&file, &manifest).unwrap_or_else(|e| panic!("{e}"));
    let file_s = file.display().to_string();
    let (ok, out, err) = env.podctl(&["run", &file_s]);
    assert!(ok, "{err}");
    let prefix = format!(
        "pod/web Running (ip {}",
        env.subnet.trim_end_matches("0/24")
    );
    assert!(out.starts_with(&prefix), "{out}");

    let (ok, out, err) = env.podctl(&["run", &file_s]);
    assert!(
        !ok && err.contains("pod default/web already exists"),
        "{out} {err}"
    );

    // `podctl run` has exited: the containers live on, and a new process sees them.
    let (_, ps, _) = env.podctl(&["ps"]);
    assert_eq!(
        ps.lines()
            .filter(|l| l.contains(" web ") && l.contains("Running"))
            .count(),
        2,
        "{ps}"
    );
    let (_, pods, _) = env.podctl(&["pods"]);
    assert!(
        pods.lines()
            .any(|l| l.contains("web") && l.contains("Running") && l.contains(" 2/2 ")),
        "{pods}"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let logs = loop {
        let (_, out, _) = env.podctl(&["logs", "web", "-c", "client"]);
        if out.contains("user=") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        logs,
        format!(
            "{}user=65534 dir=/tmp greeting=hello host=web\n",
            String::from_utf8_lossy(HTTPD_INDEX)
        )
    );

    // Limits from the manifest, read back from the cgroup of the server.
    let run = env.dir.path().join("run/containers");
    let mut limits = Vec::new();
    let sandboxes: Vec<String> = std::fs::read_dir(env.dir.path().join("run/sandboxes"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(sandboxes.len(), 1);
    for e in std::fs::read_dir(&run).into_iter().flatten().flatten() {
        let id = e.file_name().to_string_lossy().into_owned();
        // cgroupfs layout: /podctl/<sandbox>/<container>.
        let cg = format!("podctl/{}/{id}", sandboxes[0]);
        let mem =
            std::fs::read_to_string(format!("/sys/fs/cgroup/memory/{cg}/memory.limit_in_bytes"));
        let quota = std::fs::read_to_string(format!("/sys/fs/cgroup/cpu/{cg}/cpu.cfs_quota_us"));
        if let (Ok(m), Ok(q)) = (mem, quota) {
            limits.push((m.trim().to_string(), q.trim().to_string()));
        }
    }
    assert!(
        limits.contains(&((64u64 << 20).to_string(), "50000".to_string())),
        "{limits:?}"
    );

    // exec runs in the container with its identity and environment and
    // passes the exit code through.
    let (ok, out, err) = env.podctl(&[
        "exec",
        "web",
        "-c",
        "client",
        "--",
        "sh",
        "-c",
        "echo $(id -u) $GREETING $(hostname); exit 4",
    ]);
    assert!(!ok, "{err}");
    assert_eq!(out, "65534 hello web\n");
    let (ok, out, _) = env.podctl(&["exec", "web", "--", "cat", "/www/index.html"]);
    assert!(ok);
    assert_eq!(out.as_bytes(), HTTPD_INDEX);

    let (ok, out, err) = env.podctl(&["stop", "--timeout", "1", "web"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "pod/web stopped");
    let (_, ps, _) = env.podctl(&["ps"]);
    assert_eq!(
        ps.lines().filter(|l| l.contains("Exited")).count(),
        2,
        "{ps}"
    );
    let (ok, out, err) = env.podctl(&["rm", "web"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "pod/web removed");
    let (_, pods, _) = env.podctl(&["pods"]);
    assert_eq!(pods.lines().count(), 1, "{pods}");
    assert!(std::fs::read_dir(&run).map(|r| r.count()).unwrap_or(0) == 0);
}

#[test]
fn bad_manifests_are_refused_clearly_and_leave_nothing() {
    let (_reg, pubd, env) = setup();
    let cases = [
        ("broken.yaml", "apiVersion: v1\nkind: Pod\nmetadata: [\n".to_string(), "invalid YAML"),
        (
            "unknown.yaml",
            format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: x}}\nspec:\n  containers:\n  - name: c\n    image: {}\n    comand: [sh]\n", pubd.busybox),
            "unknown field \"spec.containers[0].comand\"",
        ),
        ("deploy.yaml", "apiVersion: apps/v1\nkind: Deployment\n".to_string(), "unsupported kind apps/v1/Deployment"),
        (
            "missing.yaml",
            format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\nspec:\n  containers:\n  - name: c\n    image: {}/no/such:v1\n", pubd.host),
            "Failed to pull image",
        ),
    ];
    for (name, text, want) in cases {
        let f = env.dir.path().join(name);
        std::fs::write(&f, text).unwrap_or_else(|e| panic!("{e}"));
        let (ok, _, err) = env.podctl(&["run", &f.display().to_string()]);
        assert!(!ok, "{name} accepted");
        assert!(err.contains(want), "{name}: {err}");
        assert!(
            err.contains(name) || name == "missing.yaml",
            "{name} named: {err}"
        );
    }
    // The failed pull left no sandbox, pod record or container behind.
    let (_, pods, _) = env.podctl(&["pods"]);
    assert_eq!(pods.lines().count(), 1, "{pods}");
    let sandboxes = std::fs::read_dir(env.dir.path().join("run/sandboxes"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(sandboxes, 0);
}
