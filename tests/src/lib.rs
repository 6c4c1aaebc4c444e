//! podctl's test bed: a real registry on 127.0.0.1 (Debian's
//! `docker-registry`), deterministic OCI images built from this machine's
//! Debian packages, and a small registry v2 push client to upload them.
//!
//! - [`registry`]: [`registry::Registry`] (open, Basic, token or TLS), killed
//!   on drop; [`token`]: the bearer-token realm behind token auth.
//! - [`layer`]: deterministic layer tars, hostile entries included;
//!   [`oci`]: configs, manifests (OCI or Docker schema 2) and indexes.
//! - [`push`]: the push client ([`push::Pusher`], [`push::push_image`], ...).
//! - [`fixtures`]: busybox, httpd, layered, multiarch, zstd and the
//!   [`big`] benchmark image, and [`fixtures::push_standard`].
//!
//! Everything is blocking; call it outside async runtimes (or in
//! `spawn_blocking`).

pub mod big;
pub mod cluster;
pub mod cluster_images;
pub mod cluster_query;
pub mod critest_images;
pub mod e2e_env;
pub mod e2e_images;
pub mod fabric;
pub mod fixtures;
pub mod fuzz;
pub mod layer;
pub mod oci;
pub mod pki;
pub mod push;
pub mod registry;
pub mod signals;
pub mod token;

/// Errors of the test bed.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("command {cmd}: {reason}")]
    Command { cmd: String, reason: String },
    #[error("registry at {url}: {reason}")]
    Registry { url: String, reason: String },
    #[error("http {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

/// Result alias of the test bed.
pub type Result<T, E = TestbedError> = std::result::Result<T, E>;

pub(crate) fn io_err(
    what: &'static str,
    path: impl std::fmt::Display,
) -> impl FnOnce(std::io::Error) -> TestbedError {
    let path = path.to_string();
    move |source| TestbedError::Io { what, path, source }
}

/// sha256 digest string of bytes.
pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Path of a workspace binary (`podctl`) built next to the test executables.
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let mut dir = exe.parent().map(|p| p.to_path_buf()).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(name)
}

/// `podctl` (the binary `bin`) over private state below `dir`, as a user
/// types it: images in `dir/var`, state in `dir/run`, CNI configuration in
/// `dir/cni`, container logs in `dir/logs`.
pub fn podctl_command(bin: &std::path::Path, dir: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(bin);
    c.arg("--root")
        .arg(dir.join("var"))
        .arg("--state-dir")
        .arg(dir.join("run"))
        .arg("--cni-conf-dir")
        .arg(dir.join("cni"))
        .arg("--log-root")
        .arg(dir.join("logs"));
    c
}

/// Runs `cmd` to its end: whether it succeeded, its stdout and stderr.
pub fn output(cmd: &mut std::process::Command) -> (bool, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{:?}: {e}", cmd.get_program()));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A CNI bridge network for a test's own daemon or runtime: writes
/// `<dir>/cni/10-test.conflist` (bridge `bridge`, host-local addresses from
/// `subnet` kept in `<dir>/ipam`, and the portmap plugin when `portmap`)
/// and returns the configuration directory.
pub fn write_bridge_conflist(
    dir: &std::path::Path,
    name: &str,
    bridge: &str,
    subnet: &str,
    portmap: bool,
) -> std::io::Result<std::path::PathBuf> {
    let conf = dir.join("cni");
    std::fs::create_dir_all(&conf)?;
    let mut plugins = vec![serde_json::json!({
        "type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": dir.join("ipam"),
                 "routes": [{"dst": "0.0.0.0/0"}]},
    })];
    if portmap {
        plugins
            .push(serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}}));
    }
    let v = serde_json::json!({"cniVersion": "1.0.0", "name": name, "plugins": plugins});
    std::fs::write(conf.join("10-test.conflist"), v.to_string())?;
    Ok(conf)
}

/// A `/24` in 10.0.0.0/8 that no route or address of this host touches,
/// for a test's own bridge (a neighbour's leftover bridge on a fixed
/// subnet would route the test's traffic away). `seed` spreads callers.
pub fn free_subnet(seed: u32) -> std::io::Result<String> {
    let out = std::process::Command::new("ip")
        .args(["-4", "route", "show", "table", "all"])
        .output()?;
    let addrs = std::process::Command::new("ip")
        .args(["-4", "-o", "addr"])
        .output()?;
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&addrs.stdout)
    );
    let used: Vec<(u32, u32)> = text
        .split_whitespace()
        .filter_map(|w| {
            let (ip, len) = w.split_once('/').unwrap_or((w, "32"));
            let ip: std::net::Ipv4Addr = ip.parse().ok()?;
            let len: u32 = len.parse().ok()?;
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - len.min(32))
            };
            Some((u32::from(ip) & mask, mask))
        })
        .filter(|(_, mask)| *mask != 0)
        .collect();
    for i in 0..60_000u32 {
        let n = (seed.wrapping_mul(7919).wrapping_add(i * 131)) % 60_000 + 2_000;
        let net = (10u32 << 24) | (n << 8);
        let clash = used
            .iter()
            .any(|(u, mask)| (net & mask) == *u || (u & 0xffff_ff00) == net);
        if !clash && reserve_subnet(net) {
            let ip = std::net::Ipv4Addr::from(net);
            return Ok(format!("{ip}/24"));
        }
    }
    Err(std::io::Error::other("no free /24 in 10.0.0.0/8"))
}

/// Claims the /24 at `net` for this process, so that two tests (of this
/// process or of another running at the same time) that ask before either
/// bridge is up never get the same one: a process-wide set, and a file
/// `$TMPDIR/podctl-test-subnets/<net>` holding the claimant's PID, which
/// counts only while that process lives.
fn reserve_subnet(net: u32) -> bool {
    static MINE: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());
    let mut mine = MINE.lock().unwrap_or_else(|e| e.into_inner());
    if mine.contains(&net) {
        return false;
    }
    let dir = std::env::temp_dir().join("podctl-test-subnets");
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join(std::net::Ipv4Addr::from(net).to_string());
    let me = std::process::id().to_string();
    let claimed = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&file)
    {
        Ok(mut f) => std::io::Write::write_all(&mut f, me.as_bytes()).is_ok(),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let holder = std::fs::read_to_string(&file).unwrap_or_default();
            let alive = holder
                .trim()
                .parse::<u32>()
                .is_ok_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
            // A dead claimant's file is taken over.
            !alive && std::fs::write(&file, &me).is_ok()
        }
        // No place to record claims: the process-wide set still holds.
        Err(_) => true,
    };
    if claimed {
        mine.push(net);
    }
    claimed
}

/// The names in directory `dir`, sorted (none when it is missing).
pub fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Mount points at or below `dir` (from /proc/self/mountinfo).
pub fn mounts_under(dir: &std::path::Path) -> Vec<String> {
    let want = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&want))
        .map(str::to_string)
        .collect()
}

/// A name no other test run uses at the same time: `prefix` plus this
/// process's ID and a per-process counter, at most 15 bytes (a network
/// interface name's limit).
pub fn unique_name(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tail = format!("{:x}{n}", std::process::id());
    let keep = 15usize.saturating_sub(tail.len()).min(prefix.len());
    format!("{}{tail}", &prefix[..keep])
}
