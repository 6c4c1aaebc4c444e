//! Real containers from real images: the shim runs them with libcontainer,
//! writes CRI logs, records exit codes and outlives whoever started it.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{pull, puller};
use podctl_images::RegistryConfig;
use podctl_runtime::{ContainerConfig, ContainerState, Resources, Runtime, RuntimeConfig};
use podctl_tests::fixtures::publish;
use podctl_tests::registry::Registry;

struct Bed {
    _reg: Registry,
    dir: tempfile::TempDir,
    lowers: Vec<PathBuf>,
    rt: Runtime,
    cgroup_parent: String,
}

fn bed(tag: &str) -> Bed {
    let reg = Registry::start().unwrap_or_else(|e| panic!("{e}"));
    let pubd = publish(&reg, None).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = puller(&dir.path().join("images"), RegistryConfig::default());
    let (rec, _) = pull(&p, &pubd.busybox).unwrap_or_else(|e| panic!("{e}"));
    let lowers = p.store().layer_dirs(&rec).unwrap_or_else(|e| panic!("{e}"));
    let cgroup_parent = format!("/podctl-test-{tag}-{}", std::process::id());
    let rt = Runtime::new(RuntimeConfig {
        state_dir: dir.path().join("run"),
        root_dir: dir.path().join("lib"),
        shim: Some(podctl_tests::workspace_bin("podctl-shim")),
        cgroup_parent: cgroup_parent.clone(),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    Bed {
        _reg: reg,
        dir,
        lowers,
        rt,
        cgroup_parent,
    }
}

impl Drop for Bed {
    /// Remove the (empty) parent cgroup the test's containers lived under.
    fn drop(&mut self) {
        let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        for ctrl in rd.flatten() {
            let _ =
                std::fs::remove_dir(ctrl.path().join(self.cgroup_parent.trim_start_matches('/')));
        }
    }
}

fn config(b: &Bed, name: &str, script: &str) -> ContainerConfig {
    ContainerConfig {
        name: name.into(),
        image: "busybox".into(),
        lower_dirs: b.lowers.clone(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![
            "PATH=/bin:/usr/bin:/sbin:/usr/sbin".into(),
            "FOO=bar baz".into(),
        ],
        hostname: "podhost".into(),
        log_path: b.dir.path().join(format!("logs/{name}.log")),
        ..Default::default()
    }
}

/// The CRI log as (stream, tag, text) triples, checking each line's format.
fn log_lines(path: &std::path::Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| {
            let mut parts = l.splitn(4, ' ');
            let ts = parts.next().unwrap_or_default();
            assert_eq!(ts.len(), 30, "RFC 3339 with nanoseconds: {l}");
            assert!(
                ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.',
                "{l}"
            );
            let stream = parts.next().unwrap_or_default().to_string();
            let tag = parts.next().unwrap_or_default().to_string();
            (stream, tag, parts.next().unwrap_or_default().to_string())
        })
        .collect()
}

#[test]
fn runs_a_container_with_logs_identity_env_and_exit_code() {
    let b = bed("run");
    let mut cfg = config(
        &b,
        "hello",
        "echo hello; echo oops >&2; id -u; id -g; pwd; echo \"$FOO\"; hostname; exit 3",
    );
    cfg.user = "www-data".into();
    cfg.working_dir = "/var/www".into();
    let id = b.rt.create(cfg.clone()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        b.rt.status(&id).map(|s| s.state).ok(),
        Some(ContainerState::Created)
    );
    b.rt.start(&id).unwrap_or_else(|e| panic!("{e}"));
    let st =
        b.rt.wait(&id, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(st.state, ContainerState::Exited);
    assert_eq!(st.exit_code, Some(3));
    assert_eq!(st.reason, "Error");
    assert!(st.finished_at_ns >= st.started_at_ns && st.started_at_ns > 0);
    let lines = log_lines(&cfg.log_path);
    let out: Vec<&str> = lines
        .iter()
        .filter(|l| l.0 == "stdout")
        .map(|l| l.2.as_str())
        .collect();
    assert_eq!(out, ["hello", "33", "33", "/var/www", "bar baz", "podhost"]);
    assert!(lines
        .iter()
        .any(|l| l.0 == "stderr" && l.1 == "F" && l.2 == "oops"));
    assert!(lines.iter().all(|l| l.1 == "F"));
    b.rt.remove(&id).unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(
        b.rt.status(&id),
        Err(podctl_runtime::RuntimeError::NotFound { .. })
    ));
    b.rt.remove(&id)
        .unwrap_or_else(|e| panic!("removing twice: {e}"));
}

#[test]
fn cgroup_limits_are_applied_and_the_monitor_outlives_its_starter() {
    let b = bed("limits");
    let mut cfg = config(&b, "sleeper", "echo up; exec sleep 1000");
    cfg.resources = Resources {
        memory_limit: Some(64 << 20),
        pids_limit: Some(42),
        cpu_shares: Some(512),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
    };
    let id = b.rt.create(cfg).unwrap_or_else(|e| panic!("{e}"));
    b.rt.start(&id).unwrap_or_else(|e| panic!("{e}"));
    let cg = format!("{}/{id}", b.cgroup_parent);
    let read = |ctrl: &str, file: &str| {
        let v1 = format!("/sys/fs/cgroup/{ctrl}{cg}/{file}");
        std::fs::read_to_string(&v1)
            .unwrap_or_else(|e| panic!("{v1}: {e}"))
            .trim()
            .to_string()
    };
    assert_eq!(
        read("memory", "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(read("pids", "pids.max"), "42");
    assert_eq!(read("cpu", "cpu.shares"), "512");
    assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");

    // The monitor is not our child: it lives in its own session, so this
    // process (its starter) can die without taking the container along.
    let mon: i32 = std::fs::read_to_string(
        b.dir
            .path()
            .join(format!("run/containers/{id}/monitor.pid")),
    )
    .ok()
    .and_then(|s| s.trim().parse().ok())
    .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{mon}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ppid: u32 = fields.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let sid: i32 = fields.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
    assert_ne!(ppid, std::process::id());
    assert_eq!(sid, mon, "monitor leads its own session");

    // A fresh runtime (a restarted daemon, another CLI) sees it running.
    let rt2 = Runtime::new(RuntimeConfig {
        state_dir: b.dir.path().join("run"),
        root_dir: b.dir.path().join("lib"),
        shim: Some(podctl_tests::workspace_bin("podctl-shim")),
        cgroup_parent: b.cgroup_parent.clone(),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let st = rt2.status(&id).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(st.state, ContainerState::Running);
    assert!(st.pid.is_some());
    assert_eq!(rt2.list().map(|l| l.len()).ok(), Some(1));

    // sleep as PID 1 ignores SIGTERM: stop escalates to SIGKILL.
    rt2.stop(&id, Duration::from_millis(500))
        .unwrap_or_else(|e| panic!("{e}"));
    let st = rt2.status(&id).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (st.state, st.exit_code),
        (ContainerState::Exited, Some(137))
    );
    rt2.stop(&id, Duration::from_secs(1))
        .unwrap_or_else(|e| panic!("stopping twice: {e}"));
    rt2.remove(&id).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !std::path::Path::new(&format!("/sys/fs/cgroup/memory{cg}")).exists(),
        "cgroup removed"
    );
    let _ = std::fs::remove_dir(format!("/sys/fs/cgroup/memory{}", b.cgroup_parent));
    for c in [
        "pids",
        "cpu,cpuacct",
        "cpuset",
        "devices",
        "freezer",
        "blkio",
        "hugetlb",
        "net_cls,net_prio",
        "perf_event",
    ] {
        let _ = std::fs::remove_dir(format!("/sys/fs/cgroup/{c}{}", b.cgroup_parent));
    }
}

#[test]
fn exits_while_nobody_watches_are_recorded() {
    let b = bed("unwatched");
    let cfg = config(&b, "brief", "sleep 1; exit 7");
    let id = b.rt.create(cfg).unwrap_or_else(|e| panic!("{e}"));
    b.rt.start(&id).unwrap_or_else(|e| panic!("{e}"));
    // Nobody watches: this runtime forgets the container; a new one looks later.
    std::thread::sleep(Duration::from_millis(1500));
    let rt = Runtime::new(RuntimeConfig {
        state_dir: b.dir.path().join("run"),
        root_dir: b.dir.path().join("lib"),
        shim: Some(podctl_tests::workspace_bin("podctl-shim")),
        cgroup_parent: b.cgroup_parent.clone(),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let st = rt
        .wait(&id, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((st.state, st.exit_code), (ContainerState::Exited, Some(7)));
    rt.remove(&id).unwrap_or_else(|e| panic!("{e}"));
}
