//! crictl (kubernetes-sigs/cri-tools), unmodified, against `podctl serve`
//! — when it is installed: `$CRICTL` or `crictl` on PATH. Without it the
//! test says so and passes (CI has no crictl; it is never vendored).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{ok, start_daemon, Daemon};
use podctl_tests::fixtures::publish;
use podctl_tests::registry::Registry;

fn crictl() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CRICTL") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join("crictl"))
        .find(|p| p.is_file())
}

fn run(bin: &PathBuf, d: &Daemon, args: &[&str]) -> String {
    let ep = format!("unix://{}", d.socket.display());
    let out = ok(Command::new(bin)
        .args([
            "--runtime-endpoint",
            &ep,
            "--image-endpoint",
            &ep,
            "--timeout",
            "60s",
        ])
        .args(args)
        .output());
    assert!(
        out.status.success(),
        "crictl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn crictl_drives_podctl() {
    let Some(bin) = crictl() else {
        eprintln!("crictl not found ($CRICTL or PATH): skipping the crictl test");
        return;
    };
    let reg = ok(Registry::start());
    let pubd = ok(publish(&reg, None));
    let d = start_daemon(&pubd);
    let dir = d.dir.path();

    assert!(run(&bin, &d, &["version"]).contains("RuntimeName:  podctl"));
    assert!(run(&bin, &d, &["info"]).contains("\"NetworkReady\""));
    run(&bin, &d, &["pull", "busybox"]);
    assert!(run(&bin, &d, &["images"]).contains("docker.io/library/busybox"));

    let pod = dir.join("pod.json");
    ok(std::fs::write(
        &pod,
        serde_json::json!({
            "metadata": {"name": "crictl-pod", "namespace": "default", "uid": "crictl-uid", "attempt": 0},
            "log_directory": dir.join("pod-logs"),
        })
        .to_string(),
    ));
    let ctr = dir.join("ctr.json");
    ok(std::fs::write(
        &ctr,
        serde_json::json!({
            "metadata": {"name": "c"},
            "image": {"image": "busybox"},
            "command": ["sh", "-c", "echo from-crictl; exec sleep 1000"],
            "log_path": "c.log",
        })
        .to_string(),
    ));
    let (pod_s, ctr_s) = (pod.display().to_string(), ctr.display().to_string());
    let pid = run(&bin, &d, &["runp", &pod_s]);
    let cid = run(&bin, &d, &["create", &pid, &ctr_s, &pod_s]);
    run(&bin, &d, &["start", &cid]);
    assert!(run(&bin, &d, &["ps"]).contains("Running"));
    // Exec goes through the streaming server (SPDY).
    assert_eq!(
        run(&bin, &d, &["exec", &cid, "sh", "-c", "echo $((6*7))"]),
        "42"
    );
    assert_eq!(run(&bin, &d, &["exec", "-s", &cid, "echo", "sync"]), "sync");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !run(&bin, &d, &["logs", &cid]).contains("from-crictl") {
        assert!(std::time::Instant::now() < deadline, "no log line");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(run(&bin, &d, &["inspect", &cid]).contains("\"state\": \"CONTAINER_RUNNING\""));
    run(&bin, &d, &["stop", "-t", "1", &cid]);
    run(&bin, &d, &["rm", &cid]);
    run(&bin, &d, &["stopp", &pid]);
    run(&bin, &d, &["rmp", &pid]);
    assert_eq!(run(&bin, &d, &["pods", "-q"]), "");
    drop(reg);
}
