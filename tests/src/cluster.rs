//! A throw-away control plane for the node agent test: a CA and
//! certificates made with openssl, a stock etcd, kube-apiserver (Node and
//! RBAC authorizers, NodeRestriction), kube-controller-manager and
//! kube-scheduler on loopback (or on an address nodes in network
//! namespaces reach: [`Cluster::start_at`]), and kubectl to drive them.
//!
//! Binaries are looked up as envtest does: `$KUBEBUILDER_ASSETS`, then
//! `/usr/local/kubebuilder/bin`, then `$PATH` (Debian's `etcd-server`
//! package puts etcd in /usr/bin).

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BINARIES: [&str; 5] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
];

/// Where a control-plane binary is, if anywhere: $E2E_BIN,
/// $KUBEBUILDER_ASSETS, /usr/local/kubebuilder/bin, then PATH.
pub fn find(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = ["E2E_BIN", "KUBEBUILDER_ASSETS"]
        .iter()
        .filter_map(std::env::var_os)
        .map(PathBuf::from)
        .collect();
    dirs.push(PathBuf::from("/usr/local/kubebuilder/bin"));
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("free port: {e}"))
}

pub use crate::pki::Pki;

/// Hard eviction levels for node agents under test, as the e2e kubelet's
/// configuration has them: low enough that a shared, fuller disk (the
/// kubelet's defaults evict below 10% nodefs and 15% imagefs free) does
/// not put the test node under DiskPressure.
pub const TEST_EVICTION_HARD: &str =
    "--eviction-hard=memory.available<50Mi,nodefs.available<1%,imagefs.available<1%,nodefs.inodesFree<1%";

/// Child processes killed (by PID) on drop.
#[derive(Default)]
pub struct Procs(pub Vec<(String, Child)>);

impl Procs {
    pub fn spawn(&mut self, name: &str, log_dir: &Path, cmd: &mut Command) {
        let log = std::fs::File::create(log_dir.join(format!("{name}.log")))
            .unwrap_or_else(|e| panic!("{e}"));
        let child = crate::signals::unblocked(cmd)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        self.0.push((name.to_string(), child));
    }
}

impl Procs {
    /// SIGTERM one process (by its PID) and wait for it.
    pub fn stop(&mut self, name: &str) {
        if let Some(i) = self.0.iter().position(|(n, _)| n == name) {
            let (_, mut c) = self.0.remove(i);
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

impl Procs {
    /// SIGKILL one process (by its PID), as a machine that is lost, and
    /// reap it.
    pub fn kill(&mut self, name: &str) {
        if let Some(i) = self.0.iter().position(|(n, _)| n == name) {
            let (_, mut c) = self.0.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        // Last started first: the node before the control plane.
        for (_, c) in self.0.iter_mut().rev() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The control plane.
pub struct Cluster {
    pub pki: Pki,
    pub server: String,
    pub admin: PathBuf,
    pub kubectl: PathBuf,
    pub procs: Procs,
}

impl Cluster {
    pub fn start(dir: &Path) -> Cluster {
        Cluster::start_with(dir, &[])
    }

    /// As [`Cluster::start`], with extra kube-controller-manager flags.
    pub fn start_with(dir: &Path, controller_manager_flags: &[&str]) -> Cluster {
        Cluster::start_at(dir, controller_manager_flags, Ipv4Addr::LOCALHOST)
    }

    /// As [`Cluster::start_with`], the API server on `ip` (an address of
    /// this host that nodes in network namespaces reach) instead of
    /// loopback; its certificate names `ip` too.
    pub fn start_at(dir: &Path, controller_manager_flags: &[&str], ip: Ipv4Addr) -> Cluster {
        let bin = |n: &str| find(n).unwrap_or_else(|| panic!("{n} not found"));
        let pki = Pki::new(dir);
        let (api_crt, api_key) = pki.server_cert("apiserver", "/CN=kube-apiserver", &[ip]);
        let (kc_crt, kc_key) = pki.cert(
            "apiserver-kubelet-client",
            "/O=system:masters/CN=kube-apiserver-kubelet-client",
            false,
        );
        let (adm_crt, adm_key) = pki.cert("admin", "/O=system:masters/CN=admin", false);
        let etcd_port = free_port();
        let peer_port = free_port();
        let api_port = free_port();
        let server = format!("https://{ip}:{api_port}");
        let admin = pki.kubeconfig("admin", &server, &adm_crt, &adm_key);
        let mut procs = Procs::default();
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        procs.spawn(
            "etcd",
            dir,
            Command::new(bin("etcd"))
                .arg("--data-dir")
                .arg(dir.join("etcd"))
                .args([
                    "--listen-client-urls",
                    &etcd_url,
                    "--advertise-client-urls",
                    &etcd_url,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer_url,
                    "--initial-advertise-peer-urls",
                    &peer_url,
                ])
                .arg(format!("--initial-cluster=default={peer_url}")),
        );
        let p = |f: &str| dir.join(f).display().to_string();
        procs.spawn(
            "kube-apiserver",
            dir,
            Command::new(bin("kube-apiserver")).args([
                format!("--etcd-servers={etcd_url}"),
                format!("--bind-address={ip}"),
                format!("--advertise-address={ip}"),
                format!("--secure-port={api_port}"),
                format!("--cert-dir={}", p("apiserver-certs")),
                format!("--tls-cert-file={}", api_crt.display()),
                format!("--tls-private-key-file={}", api_key.display()),
                format!("--client-ca-file={}", p("ca.crt")),
                format!("--service-account-key-file={}", p("sa.pub")),
                format!("--service-account-signing-key-file={}", p("sa.key")),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                "--authorization-mode=Node,RBAC".into(),
                "--enable-bootstrap-token-auth=true".into(),
                "--enable-admission-plugins=NodeRestriction".into(),
                format!("--kubelet-client-certificate={}", kc_crt.display()),
                format!("--kubelet-client-key={}", kc_key.display()),
                "--kubelet-preferred-address-types=InternalIP".into(),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                "--allow-privileged=true".into(),
            ]),
        );
        let kubectl = bin("kubectl");
        let c = Cluster {
            pki,
            server,
            admin,
            kubectl,
            procs,
        };
        c.wait("the API server", 90, || {
            c.kubectl(&["get", "--raw", "/readyz"]).is_ok()
        });
        let admin_s = c.admin.display().to_string();
        let mut c = c;
        c.procs.spawn(
            "kube-controller-manager",
            dir,
            Command::new(bin("kube-controller-manager"))
                .args([
                    format!("--kubeconfig={admin_s}"),
                    format!("--authentication-kubeconfig={admin_s}"),
                    format!("--authorization-kubeconfig={admin_s}"),
                    format!("--service-account-private-key-file={}", p("sa.key")),
                    format!("--root-ca-file={}", p("ca.crt")),
                    format!("--cluster-signing-cert-file={}", p("ca.crt")),
                    format!("--cluster-signing-key-file={}", p("ca.key")),
                    "--leader-elect=false".into(),
                    "--bind-address=127.0.0.1".into(),
                    format!("--secure-port={}", free_port()),
                    "--controllers=*".into(),
                ])
                .args(controller_manager_flags),
        );
        c.procs.spawn(
            "kube-scheduler",
            dir,
            Command::new(bin("kube-scheduler")).args([
                format!("--kubeconfig={admin_s}"),
                format!("--authentication-kubeconfig={admin_s}"),
                format!("--authorization-kubeconfig={admin_s}"),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", free_port()),
            ]),
        );
        c
    }

    /// kubectl as admin: stdout, or stderr as the error.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.admin)
            .args(["--request-timeout", "60s"])
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "kubectl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// kubectl with the manifest on stdin.
    pub fn apply(&self, manifest: &str) {
        use std::io::Write as _;
        let mut child = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.admin)
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("kubectl: {e}"));
        if let Some(mut i) = child.stdin.take() {
            i.write_all(manifest.as_bytes())
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `kubectl get ... -o json` parsed.
    pub fn get_json(&self, args: &[&str]) -> Option<serde_json::Value> {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        self.kubectl(&a)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
    }

    pub fn wait(&self, what: &str, secs: u64, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Undoes what a node agent under test left behind when the test failed
/// half-way (containers outlive the agent by design): kills the
/// containers in the test's cgroup parent and the pods' pause processes,
/// unmounts everything under the test directory and deletes the bridge.
pub struct NodeCleanup {
    pub dir: PathBuf,
    pub cgroup_parent: String,
    pub bridge: String,
}

impl Drop for NodeCleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep the component logs of a failed run.
            let keep = Path::new("/tmp/podctl-node-test-logs");
            let _ = std::fs::create_dir_all(keep);
            for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                if e.path().extension().is_some_and(|x| x == "log") {
                    let _ = std::fs::copy(e.path(), keep.join(e.file_name()));
                }
            }
            eprintln!("component logs kept in {}", keep.display());
        }
        let parent = self.cgroup_parent.trim_matches('/');
        let mut pids: Vec<i32> = Vec::new();
        for root in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            collect_procs(&root.path().join(parent), &mut pids);
        }
        collect_procs(&Path::new("/sys/fs/cgroup").join(parent), &mut pids);
        let sandboxes = self.dir.join("state/sandboxes");
        for sb in std::fs::read_dir(&sandboxes)
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(p) = std::fs::read_to_string(sb.path().join("pause.pid")) {
                pids.extend(p.trim().parse::<i32>().ok());
            }
        }
        // Monitors and shims of the agent's runtime name its directories.
        let marker = self.dir.display().to_string();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            if pid != std::process::id() as i32
                && String::from_utf8_lossy(&cmdline).contains(&marker)
            {
                pids.push(pid);
            }
        }
        for pid in pids {
            // SAFETY: kill(2) on PIDs of processes this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(300));
        for root in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            remove_cgroups(&root.path().join(parent));
        }
        remove_cgroups(&Path::new("/sys/fs/cgroup").join(parent));
        let prefix = self.dir.display().to_string();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/mounts")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(1).map(str::to_string))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").args(["-l", &m]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}

/// Remove a cgroup directory and those below it, deepest first (only
/// empty cgroups can go; a busy one stays).
fn remove_cgroups(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            remove_cgroups(&e.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

fn collect_procs(dir: &Path, out: &mut Vec<i32>) {
    if let Ok(s) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            collect_procs(&e.path(), out);
        }
    }
}

/// What the node leaves behind, undone even when the test fails: made
/// before the control plane so that it is dropped after the agent.
pub fn cleanup_for(dir: &Path) -> NodeCleanup {
    NodeCleanup {
        dir: dir.to_path_buf(),
        cgroup_parent: format!("/podctl-node-test-{}", std::process::id()),
        bridge: crate::unique_name("podnode"),
    }
}

/// The agent's configuration file and the free a.b.c.0/24 of its bridge.
pub fn node_config(dir: &Path, registry: &str, cleanup: &NodeCleanup) -> (PathBuf, String) {
    let subnet = crate::free_subnet(std::process::id()).unwrap_or_else(|e| panic!("{e}"));
    crate::write_bridge_conflist(dir, "podctl-node-test", &cleanup.bridge, &subnet, true)
        .unwrap_or_else(|e| panic!("{e}"));
    (write_node_toml(dir, registry, cleanup, ""), subnet)
}

/// The agent's configuration file with a CNI template instead of a fixed
/// conflist: its bridge gets the Node's `spec.podCIDR` once allocated.
pub fn node_config_pod_cidr(dir: &Path, registry: &str, cleanup: &NodeCleanup) -> PathBuf {
    let t = crate::write_bridge_conflist(
        &dir.join("template"),
        "podctl-node-test",
        &cleanup.bridge,
        "{{.PodCIDR}}",
        true,
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .join("10-test.conflist");
    write_node_toml(
        dir,
        registry,
        cleanup,
        &format!("conf_template = \"{}\"\n", t.display()),
    )
}

fn write_node_toml(dir: &Path, registry: &str, cleanup: &NodeCleanup, cni_extra: &str) -> PathBuf {
    let cfg = format!(
        "socket = \"{d}/podctl.sock\"\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
         cgroup_parent = \"{cg}\"\nlog_level = \"info,podctl=debug\"\n\n\
         [cni]\nconf_dir = \"{d}/cni\"\nbin_dirs = [\"/usr/lib/cni\", \"/opt/cni/bin\"]\n{cni_extra}\n\
         [registry.hosts.\"{registry}\"]\ninsecure = true\n",
        d = dir.display(),
        cg = cleanup.cgroup_parent,
    );
    let p = dir.join("podctl.toml");
    std::fs::write(&p, cfg).unwrap_or_else(|e| panic!("{e}"));
    p
}

/// Whether a control-plane test must skip: prints which binaries are
/// missing (CI has none of them) and returns true.
pub fn skip_without_binaries(test: &str) -> bool {
    let missing: Vec<&str> = BINARIES.into_iter().filter(|b| find(b).is_none()).collect();
    if missing.is_empty() {
        return false;
    }
    eprintln!(
        "skipped: the {test} test needs {} (set E2E_BIN or KUBEBUILDER_ASSETS; see README)",
        missing.join(", ")
    );
    true
}

/// `podctl node` on loopback with its configuration, credentials, name,
/// kubelet API port and serving certificate; callers add the rest.
pub fn node_command(
    config: &Path,
    kubeconfig: &Path,
    name: &str,
    kubelet_port: u16,
    serving: (&Path, &Path),
) -> Command {
    let at = std::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, kubelet_port);
    node_command_at(
        Command::new(crate::workspace_bin("podctl")),
        config,
        kubeconfig,
        name,
        at,
        serving,
    )
}

/// As [`node_command`], the node's address and kubelet API at `at`, the
/// `podctl` program given by `podctl` (a command that runs it in a
/// network namespace, [`crate::fabric::Fabric::command`]).
pub fn node_command_at(
    mut podctl: Command,
    config: &Path,
    kubeconfig: &Path,
    name: &str,
    at: std::net::SocketAddrV4,
    serving: (&Path, &Path),
) -> Command {
    // Pod logs beside the configuration, not in the host's /var/log/pods:
    // a failed test's pods leave nothing there.
    let logs = config.parent().unwrap_or(config).join("pod-logs");
    podctl
        .arg("--log-root")
        .arg(logs)
        .arg("node")
        .arg("--config")
        .arg(config)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--node-name", name, "--node-ip", &at.ip().to_string()])
        .arg(format!("--kubelet-address={at}"))
        .arg("--tls-cert-file")
        .arg(serving.0)
        .arg("--tls-private-key-file")
        .arg(serving.1);
    podctl
}

/// A bootstrap token `<id>.<secret>` allowed to ask for node client
/// certificates, which the controller-manager approves and signs.
pub const BOOTSTRAP_RBAC: &str = r#"apiVersion: v1
kind: Secret
metadata: {name: bootstrap-token-abcdef, namespace: kube-system}
type: bootstrap.kubernetes.io/token
stringData:
  token-id: abcdef
  token-secret: 0123456789abcdef
  usage-bootstrap-authentication: "true"
  auth-extra-groups: system:bootstrappers:podctl
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: podctl-node-bootstrapper}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:node-bootstrapper"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:bootstrappers"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: podctl-node-autoapprove}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:certificates.k8s.io:certificatesigningrequests:nodeclient"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:bootstrappers"}]
"#;

/// Nodes may renew their own client certificates (kubeadm's binding).
pub const AUTORENEW_RBAC: &str = r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: podctl-node-autorenew}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:nodes"}]
"#;

/// The token of [`BOOTSTRAP_RBAC`].
pub const BOOTSTRAP_TOKEN: &str = "abcdef.0123456789abcdef";

/// PIDs of processes with `marker` as an argument.
pub fn processes_with_arg(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| c.split(|b| *b == 0).any(|a| a == marker.as_bytes()))
                .unwrap_or(false)
        })
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect()
}

/// Whether IPv4 `ip` lies in `cidr`.
pub fn in_cidr(ip: &str, cidr: &str) -> bool {
    let Some((net, len)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(ip), Ok(net), Ok(len)) = (
        ip.parse::<std::net::Ipv4Addr>(),
        net.parse::<std::net::Ipv4Addr>(),
        len.parse::<u32>(),
    ) else {
        return false;
    };
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - len.min(32))
    };
    u32::from(ip) & mask == u32::from(net) & mask
}
