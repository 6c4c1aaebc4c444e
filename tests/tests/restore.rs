//! Standalone pods across a reboot, on this host: a reboot is what it
//! does to podctl's state — every process of the pods gone, every mount
//! gone, the state directory (a tmpfs) and the address allocations in it
//! emptied, the pod cgroups gone — while the persistent root (images,
//! writable layers, emptyDir volumes) stays. `podctl restore` (run at boot
//! by podctl-restore.service) then brings back exactly the pods that
//! should run: restartPolicy Always, not stopped; the image is not pulled
//! again (the registry is gone by then), the emptyDir keeps its content,
//! the Secret is mounted again, and the dead containers' writable layers
//! are collected. The real reboot is the VM suite's (tests/reboot_vm.rs).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::podenv::{container, setup, Env};

/// PIDs in the pid files podctl keeps for the processes of its pods.
fn pod_processes(run: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    for (sub, files) in [
        ("pods", &["supervisor.pid"][..]),
        ("sandboxes", &["pause.pid"][..]),
        ("containers", &["pid", "monitor.pid"][..]),
    ] {
        for e in std::fs::read_dir(run.join(sub))
            .into_iter()
            .flatten()
            .flatten()
        {
            for f in files {
                if let Some(pid) = std::fs::read_to_string(e.path().join(f))
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                {
                    pids.push(pid);
                }
            }
        }
    }
    pids
}

/// Whether `pid` is still one of this test's: its command line names the
/// test's directory (supervisors, monitors) or its cgroup one of the
/// test's sandboxes (pause, containers). A stale pid file may name a
/// number some other process has by now.
fn ours(pid: i32, dir: &Path, sandboxes: &[String]) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let want = dir.display().to_string();
    if String::from_utf8_lossy(&cmdline)
        .split('\0')
        .any(|a| a.contains(&want))
    {
        return true;
    }
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    sandboxes.iter().any(|sb| cg.contains(sb.as_str()))
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// What a reboot does to the pods of `env` (see the module documentation).
fn reboot(env: &Env) {
    let dir = env.dir.path();
    let run = dir.join("run");
    let sandboxes: Vec<String> = std::fs::read_dir(run.join("sandboxes"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let pids: Vec<i32> = pod_processes(&run)
        .into_iter()
        .filter(|&p| alive(p) && ours(p, dir, &sandboxes))
        .collect();
    assert!(!pids.is_empty(), "no process found");
    for &pid in &pids {
        // SAFETY: kill(2) of a process of this test's pods (supervisor,
        // pause, monitor, container init), named by podctl's pid files in
        // this test's own state directory and checked by `ours` just now.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while pids.iter().any(|&p| alive(p)) {
        assert!(Instant::now() < deadline, "still alive: {pids:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut mounts = podctl_tests::mounts_under(dir);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = std::process::Command::new("umount")
            .args(["-l", &m])
            .status();
    }
    for ctl in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        for sb in &sandboxes {
            let pod = ctl.path().join("podctl").join(sb);
            for c in std::fs::read_dir(&pod).into_iter().flatten().flatten() {
                let _ = std::fs::remove_dir(c.path());
            }
            let _ = std::fs::remove_dir(&pod);
        }
    }
    for d in [run, dir.join("ipam")] {
        std::fs::remove_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
    }
}

fn layers(env: &Env) -> Vec<String> {
    podctl_tests::names_in(&env.dir.path().join("var/containers"))
}

fn running(env: &Env, name: &str) {
    env.until(name, 60, |p| {
        let c = container(p, "app")?;
        (c.state.as_ref()?.running.is_some() && c.ready).then_some(())
    });
}

#[test]
fn restore_brings_back_the_pods_that_should_run() {
    let (reg, pubd) = setup();
    let env = Env::new(11);
    let pod = |name: &str, policy: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: {policy}\n  terminationGracePeriodSeconds: 1\n  \
             containers:\n  - name: app\n    image: {img}\n    imagePullPolicy: IfNotPresent\n    \
             command: [sh, -c, 'echo up >> /data/boots; cat /s/key > /data/key; exec sleep 3600']\n    \
             volumeMounts: [{{name: data, mountPath: /data}}, {{name: s, mountPath: /s}}]\n  \
             volumes: [{{name: data, emptyDir: {{}}}}, {{name: s, secret: {{secretName: token}}}}]\n",
            img = pubd.busybox
        )
    };
    let secret =
        "apiVersion: v1\nkind: Secret\nmetadata: {name: token}\nstringData: {key: s3cret}\n";
    env.run(
        "keeper",
        &format!(
            "{secret}---\n{}---\n{}",
            pod("keeper", "Always"),
            pod("once", "Never")
        ),
    );
    env.run(
        "halted",
        &format!("{secret}---\n{}", pod("halted", "Always")),
    );
    for p in ["keeper", "once", "halted"] {
        running(&env, p);
    }
    let boot = env.dir.path().join("var/boot");
    let kept = |n: &str| boot.join(format!("default_{n}.json")).exists();
    assert!(kept("keeper") && kept("halted") && !kept("once"));
    let (ok, out, err) = env.podctl(&["stop", "halted"]);
    assert!(ok, "{out}{err}");
    assert!(!kept("halted"), "a stopped pod is not brought back");
    let before = layers(&env);
    assert_eq!(before.len(), 3, "{before:?}");

    // A shutdown first stops the supervisors (SIGTERM, as systemd stops
    // their units): the pod stops, and stays kept for the next boot.
    let sup = env
        .dir
        .path()
        .join("run/pods/default_keeper/supervisor.pid");
    let pid: i32 = std::fs::read_to_string(&sup)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {}", sup.display()));
    assert!(ours(pid, env.dir.path(), &[]));
    // SAFETY: kill(2) of the keeper pod's supervisor, named by its pid
    // file in this test's state directory and checked by `ours`.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(60);
    while alive(pid) {
        assert!(Instant::now() < deadline, "the supervisor did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        kept("keeper"),
        "a pod stopped by a shutdown is brought back"
    );

    reboot(&env);
    drop(reg); // nothing is pulled again

    let (ok, out, err) = env.podctl(&["restore"]);
    assert!(ok, "{out}{err}");
    assert_eq!(out.trim(), "pod/default/keeper restored (Running)", "{err}");
    running(&env, "keeper");
    let exec = |cmd: &str| {
        let (ok, out, err) = env.podctl(&["exec", "keeper", "--", "cat", cmd]);
        assert!(ok, "{out}{err}");
        out
    };
    assert_eq!(
        exec("/data/boots"),
        "up\nup\n",
        "the emptyDir kept its content"
    );
    assert_eq!(exec("/data/key"), "s3cret", "the Secret is mounted again");
    let (ok, out, _) = env.podctl(&["pods"]);
    assert!(
        ok && !out.contains("once") && !out.contains("halted"),
        "{out}"
    );

    // The dead containers' writable layers are collected.
    let after = layers(&env);
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(!before.contains(&after[0]), "{before:?} {after:?}");

    // Twice is once.
    let (ok, out, err) = env.podctl(&["restore"]);
    assert!(ok && out.trim().is_empty(), "{out}{err}");

    let (ok, out, err) = env.podctl(&["rm", "keeper"]);
    assert!(ok, "{out}{err}");
    assert!(!kept("keeper"), "a removed pod is not brought back");
}
