//! The shim binary's command line (also makes `cargo test -p podctl-shim`
//! build the binary the runtime's integration tests use).

use std::process::Command;

#[test]
fn rejects_unknown_and_incomplete_commands() {
    let shim = env!("CARGO_BIN_EXE_podctl-shim");
    for args in [&[][..], &["frobnicate"][..], &["create", "--id", "x"][..]] {
        let out = Command::new(shim)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{shim}: {e}"));
        assert!(!out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with("podctl-shim: "),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A container that cannot be made: `create` fails naming it, with
/// libcontainer's reason from the pod monitor's builder, and the monitor
/// it started ends with nothing to watch (its socket goes with it).
#[test]
fn a_failed_create_is_reported_and_the_idle_pod_monitor_exits() {
    let tmp = std::env::temp_dir().join(format!("podctl-shim-cli-{}", std::process::id()));
    let (pod, ctr, root) = (tmp.join("pod"), tmp.join("ctr"), tmp.join("root"));
    for d in [&pod, &ctr, &root] {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
    }
    let bundle = tmp.join("no-such-bundle");
    let out = Command::new(env!("CARGO_BIN_EXE_podctl-shim"))
        .args(["create", "--id", "cli-broken", "--bundle"])
        .arg(&bundle)
        .arg("--root")
        .arg(&root)
        .arg("--dir")
        .arg(&ctr)
        .arg("--log")
        .arg(ctr.join("log"))
        .arg("--pod-dir")
        .arg(&pod)
        .output()
        .unwrap_or_else(|e| panic!("podctl-shim create: {e}"));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("create container cli-broken"), "{err}");
    // The monitor ran (it made the socket) and exits once idle.
    let sock = pod.join("monitor.sock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while sock.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(pod.join("monitor.lock").exists(), "the monitor's lock");
    assert!(!sock.exists(), "an idle monitor keeps {}", sock.display());
    assert!(!ctr.join("monitor.pid").exists());
    let _ = std::fs::remove_dir_all(&tmp);
}
