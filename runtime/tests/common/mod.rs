//! Test bed for the runtime's integration tests: a busybox root filesystem
//! built from the host's `/bin/busybox`, a runtime rooted in a temp dir,
//! and cleanup of the cgroups the tests create.
//!
//! The tests need root and the `podctl-shim` binary next to the test
//! executable: run them with `cargo test -p podctl-shim -p podctl-runtime`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use podctl_runtime::{CniConfig, Runtime, RuntimeConfig};

pub fn ok<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The shim binary next to this test executable, (re)built once per test
/// process with the cargo that built the tests (cargo does not build other
/// packages' binaries for integration tests). `PODCTL_SHIM` overrides.
pub fn shim_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PODCTL_SHIM") {
        return PathBuf::from(p);
    }
    let exe = ok(std::env::current_exe(), "current_exe");
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        // target/<profile>/deps/<test> → target
        let target = exe.ancestors().nth(3).map(Path::to_path_buf);
        let release = exe
            .ancestors()
            .nth(2)
            .is_some_and(|p| p.ends_with("release"));
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-q", "-p", "podctl-shim", "--bins"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if release {
            cmd.arg("--release");
        }
        if let Some(t) = target {
            cmd.arg("--target-dir").arg(t);
        }
        let st = ok(cmd.status(), "cargo build -p podctl-shim");
        assert!(st.success(), "building podctl-shim failed");
    });
    for dir in exe.ancestors().skip(1).take(2) {
        let cand = dir.join("podctl-shim");
        if cand.is_file() {
            return cand;
        }
    }
    panic!("podctl-shim not built: run `cargo test -p podctl-shim -p podctl-runtime` or set PODCTL_SHIM")
}

/// A busybox root filesystem: the binary, its libraries, applet links,
/// users root/nobody/www-data, a web root.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("busybox-lower");
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "www", "tmp", "var/www", "root",
    ] {
        ok(std::fs::create_dir_all(root.join(d)), d);
    }
    ok(
        std::fs::copy("/bin/busybox", root.join("bin/busybox")),
        "copy busybox",
    );
    let ldd = ok(Command::new("ldd").arg("/bin/busybox").output(), "ldd");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let lib = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from);
        if let Some(lib) = lib {
            let dest = root.join(lib.strip_prefix("/").unwrap_or(&lib));
            if let Some(p) = dest.parent() {
                ok(std::fs::create_dir_all(p), "lib dir");
            }
            ok(std::fs::copy(&lib, &dest), "copy lib");
        }
    }
    let list = ok(
        Command::new("/bin/busybox").arg("--list-full").output(),
        "busybox --list-full",
    );
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let dest = root.join(applet);
        if applet != "bin/busybox" && !dest.exists() {
            ok(
                std::fs::hard_link(root.join("bin/busybox"), &dest),
                "applet link",
            );
        }
    }
    let files = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        (
            "etc/group",
            "root:x:0:\nwww-data:x:33:\nweb:x:800:www-data\nnogroup:x:65534:\n",
        ),
        ("www/index.html", "hello from the pod\n"),
    ];
    for (f, text) in files {
        ok(std::fs::write(root.join(f), text), f);
    }
    root
}

/// A runtime whose state lives under `dir`, cgroups under `cgroup_parent`.
pub fn runtime(dir: &Path, cgroup_parent: &str, cni: Option<CniConfig>) -> Runtime {
    ok(
        Runtime::new(RuntimeConfig {
            state_dir: dir.join("run"),
            root_dir: dir.join("lib"),
            shim: Some(shim_bin()),
            cgroup_parent: cgroup_parent.into(),
            cni,
            ..Default::default()
        }),
        "Runtime::new",
    )
}

/// On drop (pass or fail): removes every sandbox and container left in the
/// test's state dir (killing their processes), then the test's cgroups.
pub struct Teardown {
    pub dir: PathBuf,
    pub cgroup_parent: String,
    pub cni: Option<CniConfig>,
}

impl Teardown {
    pub fn new(dir: &Path, cgroup_parent: &str, cni: Option<CniConfig>) -> Self {
        Teardown {
            dir: dir.to_path_buf(),
            cgroup_parent: cgroup_parent.into(),
            cni,
        }
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        if let Ok(rt) = Runtime::new(RuntimeConfig {
            state_dir: self.dir.join("run"),
            root_dir: self.dir.join("lib"),
            shim: Some(shim_bin()),
            cgroup_parent: self.cgroup_parent.clone(),
            cni: self.cni.take(),
            ..Default::default()
        }) {
            for s in rt.list_sandboxes().unwrap_or_default() {
                if let Err(e) = rt.remove_sandbox(&s.id) {
                    eprintln!("teardown: sandbox {}: {e}", s.id);
                }
            }
            for c in rt.list_containers().unwrap_or_default() {
                if let Err(e) = rt.remove_container(&c.id) {
                    eprintln!("teardown: container {}: {e}", c.id);
                }
            }
        }
        remove_cgroups(&self.cgroup_parent);
    }
}

/// Remove a test's (empty) parent cgroup and its children in every hierarchy.
fn remove_cgroups(parent: &str) {
    {
        let rel = parent.trim_start_matches('/');
        let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
        roots.extend(rd.flatten().map(|e| e.path()));
        for r in roots {
            let base = r.join(rel);
            // Children first (pod level), then the parent itself.
            if let Ok(kids) = std::fs::read_dir(&base) {
                for k in kids.flatten() {
                    if k.path().is_dir() {
                        let _ = std::fs::remove_dir(k.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(&base);
        }
    }
}

/// A unique cgroup parent for one test.
pub fn cgroup_parent(tag: &str) -> String {
    format!("/podctl-rt-test-{tag}-{}", std::process::id())
}

/// Poll `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One CRI log line split into (timestamp, stream, tag, text), asserting the format.
pub fn parse_log(path: &Path) -> Vec<(String, String, String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| {
            let mut p = l.splitn(4, ' ');
            let ts = p.next().unwrap_or_default().to_string();
            let stream = p.next().unwrap_or_default().to_string();
            let tag = p.next().unwrap_or_default().to_string();
            let body = p.next().unwrap_or_default().to_string();
            let b = ts.as_bytes();
            assert!(
                ts.len() == 30
                    && b[4] == b'-'
                    && b[7] == b'-'
                    && b[10] == b'T'
                    && b[13] == b':'
                    && b[16] == b':'
                    && b[19] == b'.'
                    && b[29] == b'Z'
                    && ts[20..29].bytes().all(|c| c.is_ascii_digit()),
                "timestamp is RFC 3339 with nanoseconds: {l:?}"
            );
            assert!(stream == "stdout" || stream == "stderr", "{l:?}");
            assert!(tag == "F" || tag == "P", "{l:?}");
            (ts, stream, tag, body)
        })
        .collect()
}

/// VmRSS of a process in KiB.
/// The monitor's RSS once it has re-executed into the small watcher (it
/// reports the container created just before that exec).
pub fn rss_kib(pid: i32) -> Option<u64> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|c| !c.starts_with("podctl-shim-wat"))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// (ppid, session id) of a process.
pub fn ppid_sid(pid: i32) -> (i32, i32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let n = |i: usize| f.get(i).and_then(|s| s.parse().ok()).unwrap_or(0);
    (n(1), n(3))
}

/// Copy a host binary and the libraries it loads into `root`.
pub fn host_binary(root: &Path, bin: &str) {
    let libs = ok(podctl_tests::critest_images::shared_libs(bin), "ldd");
    for f in std::iter::once(bin.to_string()).chain(libs) {
        let dest = root.join(f.trim_start_matches('/'));
        if dest.exists() {
            continue;
        }
        if let Some(p) = dest.parent() {
            ok(std::fs::create_dir_all(p), "mkdir");
        }
        ok(std::fs::copy(&f, &dest), "copy");
    }
}
