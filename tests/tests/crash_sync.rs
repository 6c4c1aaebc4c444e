//! Crash consistency of the pod sync (the node crate's pod worker, which
//! both `podctl node` and a standalone pod's supervisor run): a supervisor
//! dies (`PODCTL_CRASH_AT`, see podctl_images::failpoint) right after
//! RunPodSandbox answered, and right after CreateContainer answered; the
//! next `podctl pods` starts a new supervisor, which adopts what the dead
//! one made instead of making a second sandbox or container, and the pod
//! runs. Removing it leaves no mount, no state, no address allocated and
//! no process of the pod.

mod common;

use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;

use common::podenv::{container, setup, Env};

fn entries(dir: PathBuf) -> Vec<String> {
    podctl_tests::names_in(&dir)
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// Addresses the pods' host-local IPAM holds (one file per address).
fn allocations(env: &Env) -> Vec<String> {
    entries(env.dir.path().join("ipam/podctl-lifecycle"))
        .into_iter()
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect()
}

/// Live processes whose command line names the test's directory
/// (supervisors, monitors).
fn processes(env: &Env) -> Vec<i32> {
    let want = env.dir.path().display().to_string();
    entries(PathBuf::from("/proc"))
        .into_iter()
        .filter_map(|n| n.parse::<i32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmd).contains(&want)
        })
        .collect()
}

/// Hand the pod `name` to a supervisor set to die at `point`, as `podctl
/// run` hands it over; returns once that supervisor died there.
fn supervise_and_die(env: &Env, name: &str, image: &str, point: &str) {
    let dir = env
        .dir
        .path()
        .join("run/pods")
        .join(format!("default_{name}"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let file = serde_json::json!({
        "pod": {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"containers": [{"name": "app", "image": image, "command": ["sleep", "3600"]}]},
        },
        "configMaps": [], "secrets": [],
    });
    std::fs::write(dir.join("pod.json"), file.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let bin = podctl_tests::workspace_bin("podctl");
    let st = podctl_tests::podctl_command(&bin, env.dir.path())
        .env("PODCTL_CRASH_AT", point)
        .env("PODCTL_SUPERVISOR_UNITS", "0")
        .arg("supervise")
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        st.signal(),
        Some(libc::SIGKILL),
        "{point}: the supervisor said {st}"
    );
}

#[test]
fn a_sync_cut_at_each_crash_point_is_adopted_by_the_next_supervisor() {
    let (_reg, pubd) = setup();
    let env = Env::new(13);
    let points = ["pod_sync.sandbox_created", "pod_sync.container_created"];
    for (i, point) in points.iter().enumerate() {
        let name = format!("cut{i}");
        supervise_and_die(&env, &name, &pubd.busybox, point);
        assert_eq!(
            entries(env.dir.path().join("run/sandboxes")).len(),
            1,
            "{point}"
        );
        // `podctl pods` revives the pod; the new supervisor adopts.
        env.until(&name, 60, |p| {
            let c = container(p, "app")?;
            (c.state.as_ref()?.running.is_some() && c.restart_count == 0).then_some(())
        });
        let sandboxes = entries(env.dir.path().join("run/sandboxes"));
        let containers = entries(env.dir.path().join("run/containers"));
        assert_eq!(
            (sandboxes.len(), containers.len()),
            (1, 1),
            "{point}: {sandboxes:?} {containers:?}"
        );
        assert_eq!(allocations(&env).len(), 1, "{point}");
        assert!(
            processes(&env).len() >= 2,
            "{point}: supervisor and monitor"
        );
        let (ok, out, err) = env.podctl(&["rm", "--timeout", "0", &name]);
        assert!(ok, "{out}{err}");
        assert_eq!(
            podctl_tests::mounts_under(env.dir.path()),
            Vec::<String>::new(),
            "{point}"
        );
        assert_eq!(
            entries(env.dir.path().join("run/containers")),
            Vec::<String>::new()
        );
        assert_eq!(
            entries(env.dir.path().join("run/sandboxes")),
            Vec::<String>::new()
        );
        assert_eq!(allocations(&env), Vec::<String>::new(), "{point}");
        assert_eq!(processes(&env), Vec::<i32>::new(), "{point}");
    }
    println!(
        "crash points covered: {} ({})",
        points.len(),
        points.join(", ")
    );
}
