//! The seccomp profiles on real containers (run as root): the
//! RuntimeDefault allow-list refuses what containerd's refuses, allows
//! what it allows, widens with capabilities; Unconfined and Localhost
//! profiles; ordinary programs (busybox, Debian's nginx) run unchanged.
//!
//! The verdicts come from `seccomp_probe.c`, compiled with `gcc -static`
//! into the busybox rootfs: each probe makes one syscall with harmless
//! arguments in a child process and prints the errno (0: success).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use podctl_runtime::{ContainerConfig, ContainerState, Runtime, Seccomp, Security};
use podctl_tests::critest_images::{nginx_conf, NGINX_INDEX, NSSWITCH};

const EPERM: i32 = libc::EPERM;
const ENOSYS: i32 = libc::ENOSYS;

/// What a probe must report.
#[derive(Clone, Copy, Debug)]
enum V {
    /// The call succeeded.
    Ok,
    /// EPERM: refused (by the filter, or by the kernel where noted).
    Denied,
    /// Exactly this errno.
    Errno(i32),
    /// Reached the kernel: anything but EPERM and ENOSYS.
    Passed,
    /// Not checked under this profile (the kernel's answer depends on the
    /// host: capabilities it checks first, features built in).
    Any,
}

impl V {
    fn accepts(self, got: i32) -> bool {
        match self {
            V::Ok => got == 0,
            V::Denied => got == EPERM,
            V::Errno(e) => got == e,
            V::Passed => got >= 0 && got != EPERM && got != ENOSYS,
            V::Any => got >= 0,
        }
    }
}

/// (probe, RuntimeDefault, RuntimeDefault + CAP_SYS_ADMIN, Unconfined).
const TABLE: &[(&str, V, V, V)] = &[
    // Ordinary calls.
    ("getpid", V::Ok, V::Ok, V::Ok),
    (
        "read",
        V::Errno(libc::EBADF),
        V::Errno(libc::EBADF),
        V::Errno(libc::EBADF),
    ),
    ("write", V::Ok, V::Ok, V::Ok),
    ("futex", V::Ok, V::Ok, V::Ok),
    ("pipe2", V::Ok, V::Ok, V::Ok),
    ("fork", V::Ok, V::Ok, V::Ok),
    ("socket_inet", V::Ok, V::Ok, V::Ok),
    ("personality_linux", V::Ok, V::Ok, V::Ok),
    ("personality_query", V::Ok, V::Ok, V::Ok),
    ("chroot", V::Ok, V::Ok, V::Ok),
    // Argument filters.
    ("clone_newns", V::Denied, V::Ok, V::Any),
    ("clone_newuser", V::Denied, V::Ok, V::Ok),
    ("clone3", V::Errno(ENOSYS), V::Passed, V::Passed),
    ("personality_bad", V::Denied, V::Denied, V::Ok),
    ("socket_vsock", V::Denied, V::Denied, V::Any),
    // CAP_SYS_ADMIN's calls.
    ("unshare_user", V::Denied, V::Ok, V::Ok),
    ("unshare_ns", V::Denied, V::Ok, V::Any),
    (
        "setns",
        V::Denied,
        V::Errno(libc::EBADF),
        V::Errno(libc::EBADF),
    ),
    ("mount", V::Denied, V::Ok, V::Any),
    ("umount2", V::Denied, V::Passed, V::Any),
    ("sethostname", V::Denied, V::Ok, V::Any),
    ("bpf", V::Denied, V::Passed, V::Any),
    ("perf_event_open", V::Denied, V::Passed, V::Passed),
    // The kernel wants CAP_SYSLOG for it (checked with that below).
    ("syslog", V::Denied, V::Any, V::Any),
    ("lookup_dcookie", V::Denied, V::Any, V::Any),
    // Never allowed by the default profile.
    ("pivot_root", V::Denied, V::Denied, V::Any),
    ("keyctl", V::Denied, V::Denied, V::Passed),
    ("add_key", V::Denied, V::Denied, V::Passed),
    ("request_key", V::Denied, V::Denied, V::Passed),
    ("kexec_load", V::Denied, V::Denied, V::Any),
    ("swapon", V::Denied, V::Denied, V::Any),
    ("userfaultfd", V::Denied, V::Denied, V::Any),
    ("io_uring_setup", V::Denied, V::Denied, V::Any),
    // Other capabilities' calls (none of them in the default set).
    ("open_by_handle_at", V::Denied, V::Denied, V::Any),
    ("init_module", V::Denied, V::Denied, V::Any),
    ("delete_module", V::Denied, V::Denied, V::Any),
    ("reboot", V::Denied, V::Denied, V::Any),
    ("settimeofday", V::Denied, V::Denied, V::Any),
    ("clock_settime", V::Denied, V::Denied, V::Passed),
    ("acct", V::Denied, V::Denied, V::Any),
    ("kcmp", V::Denied, V::Denied, V::Any),
    ("mbind", V::Denied, V::Denied, V::Any),
    // Allowed as containerd does; the kernel refuses without
    // CAP_SYS_PTRACE (the target runs as another user).
    ("ptrace_other", V::Denied, V::Denied, V::Denied),
];

/// A busybox rootfs with the probe at /bin/probe.
fn probe_rootfs(dir: &Path) -> PathBuf {
    let root = busybox_rootfs(dir);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/seccomp_probe.c");
    let out = ok(
        Command::new("gcc")
            .args(["-static", "-O1", "-o"])
            .arg(root.join("bin/probe"))
            .arg(&src)
            .output(),
        "run gcc",
    );
    assert!(
        out.status.success(),
        "gcc -static {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    root
}

fn config(lower: &Path, logs: &Path, name: &str, command: Vec<String>) -> ContainerConfig {
    ContainerConfig {
        name: name.into(),
        image: "busybox".into(),
        lower_dirs: vec![lower.to_path_buf()],
        command,
        env: vec!["PATH=/bin:/usr/bin:/sbin:/usr/sbin".into()],
        hostname: "box".into(),
        log_path: logs.join(format!("{name}.log")),
        ..Default::default()
    }
}

/// Run the container to its end; (exit code, stdout lines, stderr lines).
fn run(rt: &Runtime, cfg: ContainerConfig) -> (Option<i32>, Vec<String>, Vec<String>) {
    let log = cfg.log_path.clone();
    let id = ok(rt.create(cfg), "create");
    ok(rt.start_container(&id), "start");
    let st = ok(rt.wait_container(&id, Duration::from_secs(60)), "wait");
    assert_eq!(st.state, ContainerState::Exited);
    let lines = parse_log(&log);
    let pick = |s: &str| {
        lines
            .iter()
            .filter(|l| l.1 == s)
            .map(|l| l.3.clone())
            .collect::<Vec<_>>()
    };
    let r = (st.exit_code, pick("stdout"), pick("stderr"));
    ok(rt.remove_container(&id), "remove");
    r
}

/// The probes' errnos under `security`.
fn probe(
    rt: &Runtime,
    lower: &Path,
    logs: &Path,
    name: &str,
    security: Security,
    probes: &[&str],
) -> BTreeMap<String, i32> {
    let mut command = vec!["/bin/probe".to_string()];
    command.extend(probes.iter().map(|p| p.to_string()));
    let mut cfg = config(lower, logs, name, command);
    cfg.security = security;
    let (code, out, err) = run(rt, cfg);
    assert_eq!(code, Some(0), "{name}: {out:?} {err:?}");
    out.iter()
        .filter_map(|l| {
            let (n, e) = l.split_once(' ')?;
            Some((n.to_string(), e.parse().ok()?))
        })
        .collect()
}

fn check(
    profile: &str,
    got: &BTreeMap<String, i32>,
    want: impl Iterator<Item = (&'static str, V)>,
) {
    let mut wrong = Vec::new();
    for (name, v) in want {
        match got.get(name) {
            Some(e) if v.accepts(*e) => {}
            other => wrong.push(format!("{name}: want {v:?}, got errno {other:?}")),
        }
    }
    assert!(wrong.is_empty(), "{profile}:\n{}", wrong.join("\n"));
}

#[test]
fn runtime_default_verdicts_by_capability_and_unconfined() {
    let dir = ok(tempfile::tempdir(), "tempdir");
    let lower = probe_rootfs(dir.path());
    let logs = dir.path().join("logs");
    let cg = cgroup_parent("seccomp");
    let _t = Teardown::new(dir.path(), &cg, None);
    let rt = runtime(dir.path(), &cg, None);
    let names: Vec<&str> = TABLE.iter().map(|r| r.0).collect();

    let got = probe(&rt, &lower, &logs, "default", Security::default(), &names);
    check("RuntimeDefault", &got, TABLE.iter().map(|r| (r.0, r.1)));

    let admin = Security {
        cap_add: vec!["CAP_SYS_ADMIN".into()],
        ..Default::default()
    };
    let got = probe(&rt, &lower, &logs, "admin", admin, &names);
    check(
        "RuntimeDefault + CAP_SYS_ADMIN",
        &got,
        TABLE.iter().map(|r| (r.0, r.2)),
    );

    let unconfined = Security {
        seccomp: Seccomp::Unconfined,
        ..Default::default()
    };
    let got = probe(&rt, &lower, &logs, "unconfined", unconfined, &names);
    check("Unconfined", &got, TABLE.iter().map(|r| (r.0, r.3)));

    // The other capabilities unlock their own calls only.
    let more = Security {
        cap_add: ["SYS_PTRACE", "SYS_TIME", "SYS_NICE", "SYSLOG"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    };
    let want = [
        ("ptrace_other", V::Ok),
        ("kcmp", V::Passed),
        ("settimeofday", V::Ok),
        ("clock_settime", V::Passed),
        ("mbind", V::Passed),
        ("syslog", V::Passed),
        ("mount", V::Denied),
        ("unshare_user", V::Denied),
        ("clone3", V::Errno(ENOSYS)),
        ("reboot", V::Denied),
    ];
    let names: Vec<&str> = want.iter().map(|w| w.0).collect();
    let got = probe(&rt, &lower, &logs, "caps", more, &names);
    check(
        "RuntimeDefault + ptrace/time/nice/syslog",
        &got,
        want.into_iter(),
    );
}

#[test]
fn localhost_profiles_are_loaded_or_refused_by_name() {
    let dir = ok(tempfile::tempdir(), "tempdir");
    let lower = busybox_rootfs(dir.path());
    let logs = dir.path().join("logs");
    let cg = cgroup_parent("seccomp-local");
    let _t = Teardown::new(dir.path(), &cg, None);
    let rt = runtime(dir.path(), &cg, None);
    let sh = |script: &str| vec!["sh".into(), "-c".into(), script.into()];

    let missing = dir.path().join("profiles/missing.json");
    let mut cfg = config(&lower, &logs, "missing", sh("true"));
    cfg.security.seccomp = Seccomp::Localhost(missing.clone());
    let err = rt
        .create(cfg)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains(&missing.display().to_string()), "{err}");

    let bad = dir.path().join("bad.json");
    ok(
        std::fs::write(
            &bad,
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": "x"}]}"#,
        ),
        "write bad profile",
    );
    let mut cfg = config(&lower, &logs, "bad", sh("true"));
    cfg.security.seccomp = Seccomp::Localhost(bad.clone());
    let err = rt
        .create(cfg)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains(&bad.display().to_string()) && err.contains("not an OCI seccomp profile"),
        "{err}"
    );

    let good = dir.path().join("no-mkdir.json");
    let profile = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EACCES}],
    });
    ok(std::fs::write(&good, profile.to_string()), "write profile");
    let mut cfg = config(
        &lower,
        &logs,
        "good",
        sh("mkdir /tmp/x; echo $?; touch /tmp/y && echo touched"),
    );
    cfg.security.seccomp = Seccomp::Localhost(good);
    let (code, out, err) = run(&rt, cfg);
    assert_eq!(
        (code, out),
        (Some(0), vec!["1".to_string(), "touched".to_string()])
    );
    assert!(
        err.iter().any(|l| l.contains("Permission denied")),
        "{err:?}"
    );
}

#[test]
fn busybox_scripts_run_unchanged_under_the_default_profile() {
    let dir = ok(tempfile::tempdir(), "tempdir");
    let lower = busybox_rootfs(dir.path());
    let logs = dir.path().join("logs");
    let cg = cgroup_parent("seccomp-sh");
    let _t = Teardown::new(dir.path(), &cg, None);
    let rt = runtime(dir.path(), &cg, None);
    // Pipes, subshells, background jobs and wait, signals and traps, file
    // work, process listing, time, threads of nothing special.
    let script = r#"
        set -e
        seq 1 200 | sort -rn | head -1
        (cd /tmp && mkdir -p a/b && echo hi > a/b/f && cat a/b/f && rm -r a)
        sleep 0.1 & wait $!; echo waited
        trap 'echo trapped' USR1; kill -USR1 $$
        ps -o comm | grep -c '^ps$'
        date +%Y >/dev/null && echo dated
        echo abc | sed s/b/x/ | tr a-z A-Z
        id -u
    "#;
    let cfg = config(
        &lower,
        &logs,
        "sh",
        vec!["sh".into(), "-c".into(), script.into()],
    );
    let want = ["200", "hi", "waited", "trapped", "1", "dated", "AXC", "0"];
    let (code, out, err) = run(&rt, cfg.clone());
    assert_eq!(code, Some(0), "{out:?} {err:?}");
    assert_eq!(out, want);
    // Without no_new_privs libcontainer loads the filter before it drops
    // capabilities: what it does after that must be allowed too.
    let mut cfg = cfg;
    cfg.name = "sh-nnp-off".into();
    cfg.log_path = logs.join("sh-nnp-off.log");
    cfg.security.no_new_privs = Some(false);
    let (code, out, err) = run(&rt, cfg);
    assert_eq!(code, Some(0), "{out:?} {err:?}");
    assert_eq!(out, want);
}

#[test]
fn nginx_serves_under_the_default_profile() {
    if !Path::new("/usr/sbin/nginx").exists() {
        eprintln!("skipped: no /usr/sbin/nginx");
        return;
    }
    let dir = ok(tempfile::tempdir(), "tempdir");
    let root = busybox_rootfs(dir.path());
    host_binary(&root, "/usr/sbin/nginx");
    let port = ok(TcpListener::bind("127.0.0.1:0"), "bind")
        .local_addr()
        .map(|a| a.port())
        .unwrap_or(18080);
    for d in [
        "etc/nginx",
        "usr/share/nginx/html",
        "var/lib/nginx",
        "var/log/nginx",
        "run",
    ] {
        ok(std::fs::create_dir_all(root.join(d)), d);
    }
    ok(
        std::fs::write(root.join("etc/nginx/nginx.conf"), nginx_conf(port)),
        "conf",
    );
    ok(
        std::fs::copy("/etc/nginx/mime.types", root.join("etc/nginx/mime.types")),
        "mime",
    );
    ok(
        std::fs::write(root.join("etc/nsswitch.conf"), NSSWITCH),
        "nsswitch",
    );
    ok(
        std::fs::write(root.join("usr/share/nginx/html/index.html"), NGINX_INDEX),
        "index",
    );
    ok(
        std::os::unix::fs::symlink("/dev/stdout", root.join("var/log/nginx/access.log")),
        "log link",
    );
    ok(
        std::os::unix::fs::symlink("../run", root.join("var/run")),
        "run link",
    );

    let logs = dir.path().join("logs");
    let cg = cgroup_parent("seccomp-nginx");
    let _t = Teardown::new(dir.path(), &cg, None);
    let rt = runtime(dir.path(), &cg, None);
    let mut cfg = config(
        &root,
        &logs,
        "nginx",
        ["/usr/sbin/nginx", "-g", "daemon off;"]
            .map(String::from)
            .to_vec(),
    );
    // The host's network: the test reaches nginx on loopback.
    cfg.namespaces.insert("network".into(), "host".into());
    let log = cfg.log_path.clone();
    let id = ok(rt.create(cfg), "create");
    ok(rt.start_container(&id), "start");

    let get = || -> Option<Vec<u8>> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .ok()?;
        let mut body = Vec::new();
        s.read_to_end(&mut body).ok()?;
        Some(body)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        if let Some(b) = get() {
            break b;
        }
        assert!(
            Instant::now() < deadline,
            "nginx never answered on port {port}; log: {:?}",
            std::fs::read_to_string(&log)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(body.ends_with(NGINX_INDEX), "{text}");
    // The worker (forked, setuid www-data) served it; the master is still up.
    assert_eq!(
        rt.container_status(&id).map(|s| s.state).ok(),
        Some(ContainerState::Running)
    );
    ok(rt.stop_container(&id, Duration::from_secs(10)), "stop");
    ok(rt.remove_container(&id), "remove");
}
