//! A one-node Kubernetes cluster on loopback for Kubernetes' own e2e
//! suite: the e2e images in local registries ([`crate::e2e_images`]), a
//! stock control plane ([`crate::cluster`]) and one node agent, which is
//! one of
//!
//! - `podctl`: `podctl node` (the node agent under test);
//! - `kubelet`: a stock kubelet on `podctl serve`'s CRI socket;
//! - `kubelet-containerd`: a stock kubelet on a private containerd, the
//!   baseline.
//!
//! Everything the agent makes lives under the work directory, its own
//! cgroup parent and its own bridge on a free subnet; [`Env`]'s drop
//! stops the agent, kills what ran under it, unmounts and deletes the
//! bridge, then stops the control plane and the registries.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cluster::{free_port, Cluster, NodeCleanup};
use crate::registry::Registry;

/// Which node agent joins the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agent {
    Podctl,
    KubeletOnPodctl,
    KubeletOnContainerd,
}

impl Agent {
    pub fn parse(s: &str) -> Option<Agent> {
        match s {
            "podctl" => Some(Agent::Podctl),
            "kubelet" | "kubelet-podctl" => Some(Agent::KubeletOnPodctl),
            "kubelet-containerd" | "containerd" => Some(Agent::KubeletOnContainerd),
            _ => None,
        }
    }
}

impl Agent {
    /// The binaries a cluster with this agent needs besides etcd.
    pub fn needs(self) -> Vec<&'static str> {
        let mut v = vec![
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubectl",
            "agnhost",
        ];
        if self != Agent::Podctl {
            v.push("kubelet");
        }
        v
    }
}

/// For a test: a cluster whose node is `agent` (podctl from the
/// workspace), in a new temporary directory that goes with the [`Env`];
/// `None`, after saying what is missing, when $E2E_BIN or
/// $KUBEBUILDER_ASSETS lacks a binary or there is no etcd.
pub fn start_for_test(agent: Agent) -> Option<Env> {
    let needs = agent.needs();
    let Some(bin) = ["E2E_BIN", "KUBEBUILDER_ASSETS"]
        .iter()
        .filter_map(std::env::var_os)
        .map(PathBuf::from)
        .find(|d| needs.iter().all(|b| d.join(b).is_file()))
    else {
        eprintln!(
            "skipped: needs {} in $E2E_BIN or $KUBEBUILDER_ASSETS (see README)",
            needs.join(", ")
        );
        return None;
    };
    if crate::cluster::find("etcd").is_none() && !bin.join("etcd").is_file() {
        eprintln!("skipped: needs etcd (apt-get install etcd-server)");
        return None;
    }
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut env = Env::start(&Options {
        bin,
        work: work.path().to_path_buf(),
        agent,
        podctl: crate::workspace_bin("podctl"),
        cluster_dns: "10.96.0.10".into(),
    });
    env._work = Some(work);
    Some(env)
}

/// What to start.
pub struct Options {
    /// Directory with the Kubernetes binaries (and agnhost).
    pub bin: PathBuf,
    pub work: PathBuf,
    pub agent: Agent,
    pub podctl: PathBuf,
    /// The cluster DNS address pods are given (no server answers there).
    pub cluster_dns: String,
}

/// The running environment.
pub struct Env {
    pub node: String,
    pub admin: PathBuf,
    pub repo_list: PathBuf,
    pub docker_config: PathBuf,
    pub log_root: PathBuf,
    // Dropped in field order: the agent's leftovers after the control
    // plane is down would be re-created by nothing, so the cluster (and
    // with it the agent, its last process) goes first.
    pub cluster: Cluster,
    _cleanup: NodeCleanup,
    _auth: Registry,
    open: Registry,
    /// The work directory when [`start_for_test`] made it: removed last.
    _work: Option<tempfile::TempDir>,
}

const AUTH_USER: &str = "e2e-puller";
const AUTH_PASS: &str = "e2e-secret";

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

impl Env {
    /// The open registry's e2e repository (`host:port/e2e-test-images`).
    pub fn e2e_registry(&self) -> String {
        format!("{}/{}", self.open.host(), crate::e2e_images::E2E)
    }

    pub fn start(o: &Options) -> Env {
        std::fs::create_dir_all(&o.work).unwrap_or_else(|e| panic!("{e}"));
        let d = o.work.as_path();
        // The cluster module finds its binaries here.
        std::env::set_var("KUBEBUILDER_ASSETS", &o.bin);
        let pid = std::process::id();
        let node = format!("e2e-node-{}", pid % 100_000);
        let subnet = crate::free_subnet(pid).unwrap_or_else(|e| panic!("{e}"));
        let cleanup = NodeCleanup {
            dir: d.to_path_buf(),
            cgroup_parent: format!("/podctl-e2e-{pid}"),
            bridge: crate::unique_name("e2ebr"),
        };

        eprintln!("e2e-env: building and publishing the e2e images");
        let open = Registry::start().unwrap_or_else(|e| panic!("registry: {e}"));
        let auth = Registry::start_basic_auth(AUTH_USER, AUTH_PASS)
            .unwrap_or_else(|e| panic!("auth registry: {e}"));
        let agnhost = o.bin.join("agnhost");
        let images = crate::e2e_images::build(&agnhost.display().to_string())
            .unwrap_or_else(|e| panic!("e2e images: {e}"));
        crate::critest_images::publish_images(&open, None, &images)
            .unwrap_or_else(|e| panic!("{e}"));
        let private = crate::e2e_images::build_authenticated().unwrap_or_else(|e| panic!("{e}"));
        crate::critest_images::publish_images(&auth, Some((AUTH_USER, AUTH_PASS)), &private)
            .unwrap_or_else(|e| panic!("{e}"));
        let repo_list = d.join("repo-list.yaml");
        write(
            &repo_list,
            &crate::e2e_images::repo_list(&open.host(), &auth.host()),
        );
        let docker_config = d.join("docker-config.json");
        write(
            &docker_config,
            &crate::e2e_images::docker_config(&auth.host(), AUTH_USER, AUTH_PASS),
        );

        eprintln!("e2e-env: starting the control plane");
        let mut cluster = Cluster::start(d);
        let log_root = d.join("pod-logs");
        crate::write_bridge_conflist(d, "e2e", &cleanup.bridge, &subnet, true)
            .unwrap_or_else(|e| panic!("{e}"));
        // The node's address is the bridge's gateway: a kubelet refuses a
        // loopback node IP, and pods reach the node there.
        let node_ip = gateway(&subnet);
        make_bridge(&cleanup.bridge, &node_ip);
        let (ncrt, nkey) = cluster.pki.cert(
            "node-client",
            &format!("/O=system:nodes/CN=system:node:{node}"),
            false,
        );
        let kubeconfig = cluster
            .pki
            .kubeconfig("node", &cluster.server, &ncrt, &nkey);
        let (scrt, skey) = cluster
            .pki
            .cert("kubelet-serving", &format!("/CN={node}"), true);
        let ca = cluster.pki.dir.join("ca.crt");
        let port = free_port();
        let registries = [open.host(), auth.host()];
        eprintln!("e2e-env: starting the node agent ({:?})", o.agent);
        match o.agent {
            Agent::Podctl => {
                let config = podctl_config(d, &cleanup.cgroup_parent, &registries, "podctl.sock");
                let mut cmd = Command::new(&o.podctl);
                cmd.arg("--log-root")
                    .arg(&log_root)
                    .arg("node")
                    .arg("--config")
                    .arg(&config)
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .args(["--node-name", &node, "--node-ip", &node_ip])
                    .arg(format!("--kubelet-address={node_ip}:{port}"))
                    .arg("--tls-cert-file")
                    .arg(&scrt)
                    .arg("--tls-private-key-file")
                    .arg(&skey)
                    .arg("--client-ca-file")
                    .arg(&ca)
                    .args(["--cluster-dns", &o.cluster_dns])
                    .args(["--cluster-domain", "cluster.local"])
                    // The kubelet's evictionHard below, for a fair count.
                    .arg(crate::cluster::TEST_EVICTION_HARD);
                cluster.procs.spawn("podctl-node", d, &mut cmd);
            }
            Agent::KubeletOnPodctl | Agent::KubeletOnContainerd => {
                make_cgroup_root(&cleanup.cgroup_parent);
                let socket = if o.agent == Agent::KubeletOnPodctl {
                    let config =
                        podctl_config(d, &cleanup.cgroup_parent, &registries, "podctl.sock");
                    let mut cmd = Command::new(&o.podctl);
                    cmd.arg("serve").arg("--config").arg(&config);
                    cluster.procs.spawn("podctl-serve", d, &mut cmd);
                    wait_for(&d.join("podctl.sock"), "podctl's socket");
                    d.join("podctl.sock")
                } else {
                    let config = containerd_config(d, &registries);
                    let mut cmd = Command::new("containerd");
                    cmd.arg("--config").arg(&config);
                    cluster.procs.spawn("containerd", d, &mut cmd);
                    wait_for(&d.join("containerd/containerd.sock"), "containerd's socket");
                    d.join("containerd/containerd.sock")
                };
                let sock = format!("unix://{}", socket.display());
                let mut cmd = kubelet(
                    o,
                    d,
                    &node,
                    &node_ip,
                    port,
                    &kubeconfig,
                    &scrt,
                    &skey,
                    &ca,
                    &sock,
                );
                cluster.procs.spawn("kubelet", d, &mut cmd);
            }
        }
        cluster.wait("the node to be Ready", 180, || {
            cluster.get_json(&["node", &node]).is_some_and(|n| {
                n["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|x| x["type"] == "Ready" && x["status"] == "True")
                })
            })
        });
        // The e2e framework waits for the default service account.
        cluster.wait("the default service account", 60, || {
            cluster
                .kubectl(&["get", "serviceaccount", "default", "-n", "default"])
                .is_ok()
        });
        Env {
            node,
            admin: cluster.admin.clone(),
            repo_list,
            docker_config,
            log_root,
            cluster,
            _cleanup: cleanup,
            _auth: auth,
            open,
            _work: None,
        }
    }

    /// `KEY=value` lines for the script that runs `e2e.test`.
    pub fn env_lines(&self) -> String {
        format!(
            "KUBECONFIG={}\nKUBE_TEST_REPO_LIST={}\nDOCKER_CONFIG_FILE={}\nNODE_NAME={}\n",
            self.admin.display(),
            self.repo_list.display(),
            self.docker_config.display(),
            self.node
        )
    }
}

/// The first address of `subnet` (`10.a.b.0/24` → `10.a.b.1`).
fn gateway(subnet: &str) -> String {
    let net = subnet.split('/').next().unwrap_or(subnet);
    match net.rsplit_once('.') {
        Some((head, _)) => format!("{head}.1"),
        None => net.to_string(),
    }
}

/// The CNI bridge, made before the agent starts with the gateway
/// address on it (the bridge plugin then finds it as it wants it).
fn make_bridge(name: &str, ip: &str) {
    let run = |args: &[&str]| {
        let ok = Command::new("ip")
            .args(args)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip {args:?} failed");
    };
    run(&["link", "add", name, "type", "bridge"]);
    run(&["addr", "add", &format!("{ip}/24"), "dev", name]);
    run(&["link", "set", name, "up"]);
}

/// The kubelet's `cgroupRoot` must exist in every hierarchy it uses.
fn make_cgroup_root(parent: &str) {
    for e in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.path().is_dir() {
            let _ = std::fs::create_dir_all(e.path().join(parent.trim_start_matches('/')));
        }
    }
}

fn wait_for(path: &Path, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no {what} at {}",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `podctl.toml` for `podctl node` or `podctl serve` over `d`.
fn podctl_config(d: &Path, cgroup_parent: &str, registries: &[String], socket: &str) -> PathBuf {
    let mut cfg = format!(
        "socket = \"{d}/{socket}\"\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
         cgroup_parent = \"{cgroup_parent}\"\nlog_level = \"info,podctl=debug\"\n\n\
         [cni]\nconf_dir = \"{d}/cni\"\nbin_dirs = [\"/usr/lib/cni\", \"/opt/cni/bin\"]\n\n",
        d = d.display(),
    );
    for r in registries {
        cfg.push_str(&format!("[registry.hosts.\"{r}\"]\ninsecure = true\n\n"));
    }
    let p = d.join("podctl.toml");
    write(&p, &cfg);
    p
}

/// A private containerd over `d` (its own root, state, socket and CNI).
/// `restrict_oom_score_adj`: where root lacks CAP_SYS_RESOURCE (build
/// hosts in containers), runc cannot lower a sandbox's OOM score to -998
/// and every RunPodSandbox would fail.
fn containerd_config(d: &Path, registries: &[String]) -> PathBuf {
    let mut cfg = format!(
        "version = 2\nroot = \"{d}/containerd/root\"\nstate = \"{d}/containerd/state\"\n\
         [grpc]\n  address = \"{d}/containerd/containerd.sock\"\n\
         [ttrpc]\n  address = \"{d}/containerd/containerd-ttrpc.sock\"\n\
         [plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"{pause}/pause:3.6\"\n\
         restrict_oom_score_adj = true\n\
         [plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = \"/usr/lib/cni\"\n  conf_dir = \"{d}/cni\"\n",
        d = d.display(),
        pause = registries[0],
    );
    for r in registries {
        cfg.push_str(&format!(
            "[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"{r}\"]\n  endpoint = [\"http://{r}\"]\n"
        ));
    }
    std::fs::create_dir_all(d.join("containerd")).unwrap_or_else(|e| panic!("{e}"));
    let p = d.join("containerd.toml");
    write(&p, &cfg);
    p
}

/// The stock kubelet on the CRI socket `endpoint`.
#[allow(clippy::too_many_arguments)]
fn kubelet(
    o: &Options,
    d: &Path,
    node: &str,
    node_ip: &str,
    port: u16,
    kubeconfig: &Path,
    crt: &Path,
    key: &Path,
    ca: &Path,
    endpoint: &str,
) -> Command {
    let cfg = format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         address: {node_ip}\nport: {port}\nreadOnlyPort: 0\nhealthzPort: {health}\n\
         authentication:\n  anonymous: {{enabled: false}}\n  webhook: {{enabled: true}}\n  x509: {{clientCAFile: {ca}}}\n\
         authorization: {{mode: Webhook}}\n\
         tlsCertFile: {crt}\ntlsPrivateKeyFile: {key}\n\
         cgroupDriver: cgroupfs\ncgroupRoot: /podctl-e2e-{pid}\ncgroupsPerQOS: true\nenforceNodeAllocatable: []\n\
         failSwapOn: false\nclusterDNS: [{dns}]\nclusterDomain: cluster.local\n\
         evictionHard: {{memory.available: 50Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}}\n\
         imageGCHighThresholdPercent: 100\nimageGCLowThresholdPercent: 99\nserializeImagePulls: false\n",
        health = free_port(),
        ca = ca.display(),
        crt = crt.display(),
        key = key.display(),
        pid = std::process::id(),
        dns = o.cluster_dns,
    );
    let p = d.join("kubelet.yaml");
    write(&p, &cfg);
    let mut cmd = Command::new(o.bin.join("kubelet"));
    cmd.arg("--config")
        .arg(&p)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--container-runtime=remote")
        .arg(format!("--container-runtime-endpoint={endpoint}"))
        .arg("--root-dir")
        .arg(d.join("kubelet"))
        .arg("--cert-dir")
        .arg(d.join("kubelet-pki"))
        .args(["--hostname-override", node, "--node-ip", node_ip, "--v=2"]);
    cmd
}
