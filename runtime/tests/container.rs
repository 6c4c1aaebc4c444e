//! Real containers on this host (run as root): a busybox rootfs copied from
//! the host, run by libcontainer inside the detached podctl-shim monitor.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use podctl_runtime::{ContainerConfig, ContainerState, Resources, Rlimit, Runtime, RuntimeError};

fn config(lower: &Path, logs: &Path, name: &str, script: &str) -> ContainerConfig {
    ContainerConfig {
        name: name.into(),
        image: "busybox".into(),
        lower_dirs: vec![lower.to_path_buf()],
        command: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![
            "PATH=/bin:/usr/bin:/sbin:/usr/sbin".into(),
            "FOO=bar baz".into(),
        ],
        hostname: "box".into(),
        log_path: logs.join(format!("{name}.log")),
        ..Default::default()
    }
}

#[test]
fn logs_identity_env_workdir_and_exit_code() {
    let dir = ok(tempfile::tempdir(), "tempdir");
    let lower = busybox_rootfs(dir.path());
    let cg = cgroup_parent("run");
    let _t = Teardown::new(dir.path(), &cg, None);
    let rt = runtime(dir.path(), &cg, None);
    let script = "echo hello; echo oops >&2; id -u; id -G; pwd; echo \"$FOO\"; hostname; \
                  head -c 20000 /dev/zero | tr '\\0' x; echo; printf tail; exit 3";
    let mut cfg = config(&lower, &dir.path().join("logs"), "hello", script);
    cfg.user = "www-data".into();
    cfg.working_dir = "/var/www".into();
    let id = ok(rt.create(cfg.clone()), "create");
    assert_eq!(
        rt.container_status(&id).map(|s| s.state).ok(),
        Some(ContainerState::Created)
    );
    ok(rt.start_container(&id), "start");
    let st = ok(rt.wait_container(&id, Duration::from_secs(20)), "wait");
    assert_eq!(
        (st.state, st.exit_code, st.reason.as_str()),
        (ContainerState::Exited, Some(3), "Error")
    );
    assert!(st.finished_at_ns >= st.started_at_ns && st.started_at_ns > st.created_at_ns);

    let lines = parse_log(&cfg.log_path);
    let stdout: Vec<(&str, &str)> = lines
        .iter()
        .filter(|l| l.1 == "stdout")
        .map(|l| (l.2.as_str(), l.3.as_str()))
        .collect();
    let long = "x".repeat(20000);
    let (p1, rest) = long.split_at(16 * 1024);
    assert_eq!(
        stdout,
        [
            ("F", "hello"),
            ("F", "33"),
            ("F", "33 800"),
            ("F", "/var/www"),
            ("F", "bar baz"),
            ("F", "box"),
            ("P", p1),
            ("F", rest),
            // No newline at the end: a partial record, as containerd writes it.
            ("P", "tail"),
        ]
    );
    let stderr: Vec<&str> = lines
        .iter()
        .filter(|l| l.1 == "stderr")
        .map(|l| l.3.as_str())
        .collect();
    assert_eq!(stderr, ["oops"]);

    ok(rt.remove_container(&id), "remove");
    assert!(matches!(
        rt.container_status(&id),
        Err(RuntimeError::NotFound { .. })
    ));
    ok(rt.remove_container(&id), "removing twice");
    assert!(!dir.path().join("lib/containers").join(&id).exists());
}

/// Re-invoked as a separate process by the tests below: creates and starts
/// the container described in $PODCTL_TEST_STARTER, prints its ID and
/// sleeps until killed.
#[test]
#[ignore]
fn starter_helper() {
    let Ok(spec) = std::env::var("PODCTL_TEST_STARTER") else {
        return;
    };
    let (state, cg, cfg): (String, String, ContainerConfig) =
        ok(serde_json::from_str(&spec), "starter spec");
    let rt = runtime(Path::new(&state), &cg, None);
    let id = ok(rt.create(cfg), "create");
    ok(rt.start_container(&id), "start");
    println!("ID {id}");
    std::thread::sleep(Duration::from_secs(600));
}

/// Start a container from another process; return (starter child, id).
fn start_elsewhere(state: &Path, cg: &str, cfg: &ContainerConfig) -> (std::process::Child, String) {
    let spec = ok(serde_json::to_string(&(state, cg, cfg)), "json");
    let mut child = ok(
        Command::new(ok(std::env::current_exe(), "exe"))
            .args(["--exact", "starter_helper", "--ignored", "--nocapture"])
            .env("PODCTL_TEST_STARTER", spec)
            .stdout(Stdio::piped())
            .spawn(),
        "spawn starter",
    );
    let out = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let id = BufReader::new(out)
        .lines()
        .map_while(|l| l.ok())
        .find_map(|l| l.strip_prefix("ID ").map(str::to_string))
        .unwrap_or_else(|| panic!("starter printed no ID"));
    (child, id)
}

#[test]
fn survives_its_starter_limits_apply_and_status_comes_from_disk() {
    let dir = ok(tempfile::tempdir(), "tempdir");
    let lower = busybox_rootfs(dir.path());
    let cg = cgroup_parent("detach");
    let _t = Teardown::new(dir.path(), &cg, None);
    let logs = dir.path().join("logs");
    let mut cfg = config(&lower, &logs, "sleeper", "echo up; exec sleep 1000");
    cfg.resources = Resources {
        memory_limit: Some(64 << 20),
        pids_limit: Some(42),
        cpu_shares: Some(512),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
    };
    let (mut starter, id) = start_elsewhere(dir.path(), &cg, &cfg);
    // kill -9 the process that started the container.
    ok(starter.kill(), "kill starter");
    let _ = starter.wait();

    // A fresh runtime (another CLI, a restarted daemon) sees it running.
    let rt = runtime(dir.path(), &cg, None);
    let st = ok(rt.container_status(&id), "status");
    assert_eq!(st.state, ContainerState::Running);
    let pid = st.pid.unwrap_or_else(|| panic!("no pid"));
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(ok(rt.list_containers(), "list").len(), 1);

    // The monitor is in its own session, not a child of the starter.
    let mon: i32 = ok(
        std::fs::read_to_string(dir.path().join(format!("run/containers/{id}/monitor.pid"))),
        "monitor.pid",
    )
    .trim()
    .parse()
    .unwrap_or(0);
    let (ppid, sid) = ppid_sid(mon);
    assert_eq!(sid, mon, "monitor leads its own session");
    assert_ne!(ppid as u32, starter.id());
    let rss = rss_kib(mon).unwrap_or(u64::MAX);
    eprintln!("monitor {mon} VmRSS: {rss} KiB");
    // podctl-shim-watch: ~2.0 MiB in release builds, ~2.2 MiB in debug.
    let max = if cfg!(debug_assertions) { 3072 } else { 2048 };
    assert!(rss <= max, "monitor RSS {rss} KiB");

    // Limits, read back from the cgroup files.
    let path = ok(rt.cgroups_path(&id), "cgroups path");
    assert_eq!(path, format!("{cg}/{id}"));
    let read = |ctrl: &str, v1: &str, v2: &str| {
        let p1 = format!("/sys/fs/cgroup/{ctrl}{path}/{v1}");
        let p2 = format!("/sys/fs/cgroup{path}/{v2}");
        std::fs::read_to_string(&p1)
            .or_else(|_| std::fs::read_to_string(&p2))
            .unwrap_or_else(|e| panic!("{p1} / {p2}: {e}"))
            .trim()
            .to_string()
    };
    assert_eq!(
        read("memory", "memory.limit_in_bytes", "memory.max"),
        (64u64 << 20).to_string()
    );
    assert_eq!(read("pids", "pids.max", "pids.max"), "42");
    if Path::new("/sys/fs/cgroup/cpu").exists() {
        assert_eq!(read("cpu", "cpu.shares", "cpu.weight"), "512");
        assert_eq!(read("cpu", "cpu.cfs_quota_us", "cpu.max"), "50000");
        assert_eq!(read("cpu", "cpu.cfs_period_us", "cpu.max"), "100000");
    }
    let procs = read("pids", "cgroup.procs", "cgroup.procs");
    assert_eq!(
        procs,
        pid.to_string(),
        "container's process is in its cgroup"
    );

    // Log rotation: move the file away, SIGUSR1 reopens it.
    let log = logs.join("sleeper.log");
    assert!(
        wait_for(Duration::from_secs(5), || parse_log(&log)
            .iter()
            .any(|l| l.3 == "up")
            .then_some(()))
        .is_some(),
        "first line logged"
    );
    ok(std::fs::rename(&log, logs.join("sleeper.log.1")), "rotate");
    ok(rt.reopen_container_log(&id), "reopen");
    assert!(wait_for(Duration::from_secs(5), || log.exists().then_some(())).is_some());

    // sleep as PID 1 ignores SIGTERM: stop escalates to SIGKILL.
    ok(rt.stop_container(&id, Duration::from_millis(500)), "stop");
    let st = ok(rt.container_status(&id), "status");
    assert_eq!(
        (st.state, st.exit_code, st.reason.as_str()),
        (ContainerState::Exited, Some(137), "Error")
    );
    assert!(wait_for(Duration::from_secs(5), || (!Path::new(&format!(
        "/proc/{mon}"
    ))
    .exists())
    .then_some(()))
    .is_some());
    ok(
        rt.stop_container(&id, Duration::from_secs(1)),
        "stopping twice",
    );
    ok(rt.remove_container(&id), "remove");
    assert!(
        !Path::new(&format!("/sys/fs/cgroup/memory{path}")).exists(),
        "cgroup removed"
    );
}

#[test]
fn exit_while_nobody_watches_is_recorded() {
    let dir = ok(tempfile::tempdir(), "tempdir");
    let lower = busybox_rootfs(dir.path());
    let cg = cgroup_parent("unwatched");
    let _t = Teardown::new(dir.path(), &cg, None);
    let cfg = config(&lower, &dir.path().join("logs"), "brief", "sleep 1; exit 7");
    let (mut starter, id) = start_elsewhere(dir.path(), &cg, &cfg);
    ok(starter.kill(), "kill starter");
    let _ = starter.wait();
    // Nobody watches; a new runtime looks later.
    std::thread::sleep(Duration::from_millis(2500));
    let rt = runtime(dir.path(), &cg, None);
    let st = ok(rt.container_status(&id), "status");
    assert_eq!((st.state, st.exit_code), (ContainerState::Exited, Some(7)));
    assert!(st.finished_at_ns > st.started_at_ns);
    ok(rt.remove_container(&id), "remove");
}

#[test]
fn exec_security_and_oom() {
    let dir = ok(tempfile::tempdir(), "tempdir");
    let lower = busybox_rootfs(dir.path());
    let cg = cgroup_parent("exec");
    let _t = Teardown::new(dir.path(), &cg, None);
    let rt = runtime(dir.path(), &cg, None);
    let logs = dir.path().join("logs");
    let mut cfg = config(&lower, &logs, "target", "exec sleep 1000");
    cfg.readonly_rootfs = true;
    cfg.working_dir = "/tmp".into();
    cfg.user = "www-data".into();
    cfg.rlimits = vec![Rlimit {
        kind: "RLIMIT_NOFILE".into(),
        soft: 512,
        hard: 512,
    }];
    let id = ok(rt.create(cfg), "create");
    ok(rt.start_container(&id), "start");
    let sh = |script: &str| vec!["sh".to_string(), "-c".to_string(), script.to_string()];

    let r = ok(
        rt.exec_sync(
            &id,
            &sh("id -u; id -G; pwd; echo \"$FOO\"; echo err >&2; exit 5"),
            Duration::from_secs(10),
        ),
        "exec",
    );
    // Same user, groups, cwd and environment as the container's process.
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        "33\n33 800\n/tmp\nbar baz\n"
    );
    assert_eq!(String::from_utf8_lossy(&r.stderr), "err\n");
    assert_eq!((r.exit_code, r.timed_out), (5, false));

    let r = ok(
        rt.exec_sync(
            &id,
            &sh("cat /proc/self/status; ulimit -n; touch /x"),
            Duration::from_secs(10),
        ),
        "exec",
    );
    let out = String::from_utf8_lossy(&r.stdout);
    let field = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(field("NoNewPrivs:"), "1");
    assert_eq!(field("Seccomp:"), "2", "seccomp filter active");
    // The runtime-default capability set (containerd's 14 capabilities)
    // bounds the process; a non-root user has none effective.
    assert_eq!(field("CapBnd:"), "00000000a80425fb");
    assert_eq!(field("CapEff:"), "0000000000000000");
    assert!(out.lines().any(|l| l == "512"), "{out}");
    assert_ne!(r.exit_code, 0, "read-only rootfs: touch fails");
    assert!(String::from_utf8_lossy(&r.stderr).contains("Read-only"));

    let t0 = std::time::Instant::now();
    let r = ok(
        rt.exec_sync(
            &id,
            &sh("echo started; sleep 30"),
            Duration::from_millis(700),
        ),
        "exec with timeout",
    );
    assert!(r.timed_out);
    assert_eq!(String::from_utf8_lossy(&r.stdout), "started\n");
    assert!(t0.elapsed() < Duration::from_secs(10));
    ok(rt.remove_container(&id), "remove running");

    // OOM: a 16 MiB container allocating 64 MiB.
    let mut cfg = config(
        &lower,
        &logs,
        "hog",
        "dd if=/dev/zero of=/dev/null bs=64M count=1",
    );
    cfg.resources.memory_limit = Some(16 << 20);
    let id = ok(rt.create(cfg), "create hog");
    ok(rt.start_container(&id), "start hog");
    let st = ok(rt.wait_container(&id, Duration::from_secs(20)), "wait hog");
    assert_eq!(
        (st.state, st.exit_code, st.reason.as_str()),
        (ContainerState::Exited, Some(137), "OOMKilled")
    );
    ok(rt.remove_container(&id), "remove hog");
}

#[test]
fn rejects_bad_input() {
    let dir = ok(tempfile::tempdir(), "tempdir");
    let lower = busybox_rootfs(dir.path());
    let cg = cgroup_parent("bad");
    let _t = Teardown::new(dir.path(), &cg, None);
    let rt: Runtime = runtime(dir.path(), &cg, None);
    let mut cfg = config(&lower, &dir.path().join("logs"), "nouser", "true");
    cfg.user = "no-such-user".into();
    assert!(matches!(rt.create(cfg), Err(RuntimeError::User { .. })));
    let mut cfg = config(&lower, &dir.path().join("logs"), "nocmd", "true");
    cfg.command.clear();
    assert!(matches!(rt.create(cfg), Err(RuntimeError::Spec { .. })));
    let cfg = config(&lower, &dir.path().join("logs"), "nobin", "true");
    let cfg = ContainerConfig {
        command: vec!["/no/such/binary".into()],
        ..cfg
    };
    // As with containerd: the create succeeds, the start fails, and the
    // container is then exited with StartError, 128 and the reason.
    let id = ok(rt.create(cfg), "create with a missing executable");
    assert_eq!(
        ok(rt.container_status(&id), "status").state,
        ContainerState::Created
    );
    let started = rt.start_container(&id);
    let err = started.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("/no/such/binary"), "{err}");
    let st = ok(rt.container_status(&id), "status");
    assert_eq!(
        (st.state, st.exit_code, st.reason.as_str()),
        (ContainerState::Exited, Some(128), "StartError")
    );
    assert!(st.message.contains("/no/such/binary"), "{}", st.message);
    assert!(rt.start_container(&id).is_err(), "a second start");
    ok(rt.stop_container(&id, Duration::ZERO), "stop");
    ok(rt.remove_container(&id), "remove");
    // A failure inside libcontainer's init (here: a bind mount whose
    // source is missing) names its cause, not only "failed to prepare rootfs".
    let cfg = config(&lower, &dir.path().join("logs"), "nosource", "true");
    let missing = dir.path().join("no-such-source");
    let cfg = ContainerConfig {
        mounts: vec![podctl_runtime::Mount {
            host_path: missing.clone(),
            container_path: "/data".into(),
            readonly: false,
            propagation: Default::default(),
            recursive_readonly: false,
        }],
        ..cfg
    };
    let err = match rt.create(cfg) {
        Ok(id) => {
            let err = rt.start_container(&id).err().map(|e| e.to_string());
            let _ = rt.remove_container(&id);
            err.unwrap_or_default()
        }
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("cause:") && err.contains("canonicalize") && err.contains("no-such-source"),
        "the error names the cause: {err}"
    );
    // A created container that is never started stops and goes quietly.
    let cfg = config(&lower, &dir.path().join("logs"), "never", "true");
    let id = ok(rt.create(cfg), "create");
    ok(
        rt.stop_container(&id, Duration::from_secs(1)),
        "stop a created one",
    );
    assert_eq!(
        ok(rt.container_status(&id), "status").state,
        ContainerState::Created
    );
    ok(rt.remove_container(&id), "remove a created one");
    assert!(ok(rt.list_containers(), "list").is_empty());
    assert!(matches!(
        rt.exec_sync("nope", &["true".into()], Duration::from_secs(1)),
        Err(RuntimeError::NotFound { .. })
    ));
}
