//! A pod that cannot start says why, at once, and leaves nothing behind:
//! `podctl run` without a shim fails before anything is made, naming
//! where it looked; a sandbox that fails (a CNI plugin that is not there)
//! fails `podctl run` within seconds with FailedCreatePodSandBox and the
//! plugin's name, and no supervisor, mount, record or directory remains;
//! a supervisor left to retry backs off exponentially and shows the
//! reason in `podctl pods` (REASON) and in `-o yaml`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::podenv::setup;
use podctl_tests::fixtures::Published;

/// Private state directories and a network whose plugin does not exist.
struct Env {
    dir: tempfile::TempDir,
    podctl: PathBuf,
    plugin: String,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let plugin = podctl_tests::unique_name("nosuchcni");
        let conf = dir.path().join("cni");
        std::fs::create_dir_all(&conf).unwrap_or_else(|e| panic!("{e}"));
        let list = serde_json::json!({"cniVersion": "1.0.0", "name": "broken",
            "plugins": [{"type": plugin}]});
        std::fs::write(conf.join("10-broken.conflist"), list.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        Env {
            dir,
            podctl: podctl_tests::workspace_bin("podctl"),
            plugin,
        }
    }

    fn cmd(&self) -> Command {
        let mut c = podctl_tests::podctl_command(&self.podctl, self.dir.path());
        c.env("PODCTL_BACKOFF_INITIAL_MS", "400")
            .env("PODCTL_BACKOFF_MAX_MS", "3200");
        c
    }

    fn podctl(&self, args: &[&str]) -> (bool, String, String) {
        podctl_tests::output(self.cmd().args(args))
    }

    fn manifest(&self, name: &str, pubd: &Published) -> PathBuf {
        let text = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: token}}\nstringData: {{key: value}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n  - name: c\n    \
             image: {}\n    command: [sleep, '100']\n    volumeMounts: [{{name: s, mountPath: /s}}]\n  \
             volumes: [{{name: s, secret: {{secretName: token}}}}]\n",
            pubd.busybox
        );
        let f = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&f, text).unwrap_or_else(|e| panic!("{e}"));
        f
    }

    /// Everything of a pod that could be left: processes started from
    /// these directories, mounts below them, and the entries of the state
    /// directories.
    fn leftovers(&self) -> Vec<String> {
        leftovers(self.dir.path())
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for e in std::fs::read_dir(self.dir.path().join("run/pods"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let n = e.file_name().to_string_lossy().replacen('_', "/", 1);
            let _ = self.podctl(&["rm", "--timeout", "0", &n]);
        }
    }
}

fn leftovers(d: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let me = d.display().to_string();
    for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&me) {
            out.push(format!(
                "process {}: {cmdline}",
                p.file_name().to_string_lossy()
            ));
        }
    }
    for m in podctl_tests::mounts_under(d) {
        out.push(format!("mount {m}"));
    }
    for sub in [
        "run/pods",
        "run/sandboxes",
        "run/containers",
        "run/netns",
        "run/cri/sandboxes",
        "run/cri/containers",
        "var/pods",
        "var/containers",
        "logs",
    ] {
        for e in std::fs::read_dir(d.join(sub))
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push(format!("{sub}/{}", e.file_name().to_string_lossy()));
        }
    }
    out
}

#[test]
fn without_a_shim_run_fails_at_once_naming_where_it_looked() {
    let (_reg, pubd) = setup();
    let env = Env::new();
    // podctl alone in a directory, and a $PATH without any shim.
    let bin = env.dir.path().join("bin");
    let nobin = env.dir.path().join("nobin");
    for d in [&bin, &nobin] {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{e}"));
    }
    std::fs::copy(&env.podctl, bin.join("podctl")).unwrap_or_else(|e| panic!("{e}"));
    let alone = Env {
        dir: tempfile::tempdir().unwrap_or_else(|e| panic!("{e}")),
        podctl: bin.join("podctl"),
        plugin: env.plugin.clone(),
    };
    let f = alone.manifest("noshim", &pubd);
    let t0 = Instant::now();
    let out = alone
        .cmd()
        .env("PATH", &nobin)
        .args(["run", &f.display().to_string()])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let took = t0.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let want = format!(
        "podctl: cannot run pods: podctl-shim not found (looked in {}, {})",
        bin.join("podctl-shim").display(),
        nobin.join("podctl-shim").display()
    );
    assert!(err.starts_with(&want), "{err}");
    assert_eq!(alone.leftovers(), Vec::<String>::new());

    // The preflight says the same, with the fix.
    let out = alone
        .cmd()
        .env("PATH", &nobin)
        .arg("info")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("FAIL  shim "))
        .unwrap_or_else(|| panic!("no shim line: {text}"));
    assert!(
        line.contains(&bin.join("podctl-shim").display().to_string()),
        "{line}"
    );
    assert!(
        text.contains("fix: cargo build --release -p podctl -p podctl-shim"),
        "{text}"
    );
}

#[test]
fn a_failing_sandbox_fails_run_within_seconds_and_leaves_nothing() {
    let (_reg, pubd) = setup();
    let env = Env::new();
    let f = env.manifest("nonet", &pubd);
    let t0 = Instant::now();
    let (ok, out, err) = env.podctl(&["run", &f.display().to_string()]);
    let took = t0.elapsed();
    assert!(!ok, "{out}{err}");
    assert!(took < Duration::from_secs(10), "took {took:?}: {err}");
    assert!(
        err.starts_with(
            "podctl: pod default/nonet: FailedCreatePodSandBox: Failed to create pod sandbox: "
        ),
        "{err}"
    );
    assert!(
        err.contains(&format!("plugin \"{}\" not found", env.plugin)),
        "{err}"
    );
    // No supervisor, pause, mount (netns pin, secret tmpfs), record or
    // directory of the pod is left.
    assert_eq!(env.leftovers(), Vec::<String>::new());
    let (_, pods, _) = env.podctl(&["pods"]);
    assert_eq!(pods.lines().count(), 1, "{pods}");
}

/// The FailedCreatePodSandBox Events the supervisor wrote so far.
fn sandbox_events(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"reason\":\"FailedCreatePodSandBox\""))
        .count()
}

#[test]
fn a_supervisor_retries_a_failing_sandbox_with_back_off_and_says_why() {
    let (_reg, pubd) = setup();
    let env = Env::new();
    // What `podctl run` hands a supervisor, without a `run` that gives up.
    let dir = env.dir.path().join("run/pods/default_retry");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let pod = serde_json::json!({"pod": {"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "retry", "namespace": "default", "uid": "3c5bb4a8-5b1e-4d0e-9d35-000000000015"},
        "spec": {"containers": [{"name": "c", "image": pubd.busybox, "command": ["sleep", "100"]}]}}});
    std::fs::write(dir.join("pod.json"), pod.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let mut sup = env
        .cmd()
        .arg("supervise")
        .arg(&dir)
        .stderr(std::fs::File::create(dir.join("supervisor.log")).unwrap_or_else(|e| panic!("{e}")))
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));

    // When each attempt's Event appeared (polled every 20 ms).
    let mut seen: Vec<Instant> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 5 {
        assert!(Instant::now() < deadline, "attempts seen: {}", seen.len());
        let n = sandbox_events(&dir);
        while seen.len() < n {
            seen.push(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut gaps: Vec<f64> = seen
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    // The kubelet's curve may retry once at once before backing off.
    if gaps[0] < 0.2 {
        gaps.remove(0);
    }
    // Back-off 400 ms, 800 ms, 1.6 s: each wait at least its delay (less
    // polling jitter), and each about twice the one before.
    assert!(
        gaps[0] >= 0.3 && gaps[1] >= 0.7 && gaps[2] >= 1.5,
        "{gaps:?}"
    );
    assert!(
        gaps[1] > 1.5 * gaps[0] && gaps[2] > 1.5 * gaps[1],
        "{gaps:?}"
    );

    // The reason, in the table and in the Pod's status.
    let (ok, table, err) = env.podctl(&["pods"]);
    assert!(ok, "{err}");
    let row = table
        .lines()
        .find(|l| l.starts_with("default "))
        .unwrap_or_else(|| panic!("{table}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        (cols[1], cols[2], cols.last().copied()),
        ("retry", "Pending", Some("FailedCreatePodSandBox")),
        "{table}"
    );
    let (ok, yaml, err) = env.podctl(&["pods", "-o", "yaml"]);
    assert!(ok, "{err}");
    let p: k8s_openapi::api::core::v1::Pod = serde_yaml_from(&yaml);
    let st = p.status.unwrap_or_default();
    assert_eq!(st.phase.as_deref(), Some("Pending"));
    assert_eq!(st.reason.as_deref(), Some("FailedCreatePodSandBox"));
    let msg = st.message.unwrap_or_default();
    assert!(
        msg.starts_with("Failed to create pod sandbox: ") && msg.contains(&env.plugin),
        "{msg}"
    );
    // The supervisor's log is plain text (stderr is a file, not a terminal).
    let log = std::fs::read_to_string(dir.join("supervisor.log")).unwrap_or_default();
    assert!(log.contains("Failed to create pod sandbox"), "{log}");
    assert!(!log.contains('\u{1b}'), "ANSI escapes in the log: {log:?}");

    let (ok, _, err) = env.podctl(&["rm", "retry"]);
    assert!(ok, "{err}");
    let status = sup.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "supervisor: {status}");
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

/// One YAML document into a Pod.
fn serde_yaml_from(text: &str) -> k8s_openapi::api::core::v1::Pod {
    serde_yaml::from_str(text.trim_start_matches("---\n")).unwrap_or_else(|e| panic!("{e}: {text}"))
}
