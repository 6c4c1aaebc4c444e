//! Shared set-up of the CRI socket tests: a `podctl serve` daemon over
//! temporary directories with its own CNI bridge, a tonic client channel,
//! request builders and waits.
#![allow(dead_code)] // each test binary uses a different part

pub mod node;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use podctl_cri::proto;
use podctl_cri::proto::image_service_client::ImageServiceClient;
use podctl_cri::proto::runtime_service_client::RuntimeServiceClient;
use podctl_tests::fixtures::{publish, Published};
use podctl_tests::registry::Registry;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

pub fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// A running daemon over temporary directories.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Child,
    pub socket: PathBuf,
    pub bridge: String,
    pub subnet: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
        // The test's parent cgroup, in every hierarchy.
        for c in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_dir(c.path().join("podctl-cri-test"));
        }
    }
}

/// A registry with the test images and a `podctl serve` mirroring it
/// (the registry must outlive the daemon's pulls: keep it).
pub fn registry_and_daemon() -> (Registry, Published, Daemon) {
    let reg = ok(Registry::start());
    let pubd = ok(publish(&reg, None));
    let daemon = start_daemon(&pubd);
    (reg, pubd, daemon)
}

/// `f` run to its end on a two-worker tokio runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build())
    .block_on(f)
}

/// CreateContainer and StartContainer of `cfg` in sandbox `sb`, waiting
/// until it runs; its ID.
/// PullImage of `image`; its image reference.
pub async fn pull(img: &mut ImageServiceClient<Channel>, image: &str) -> String {
    ok(img
        .pull_image(proto::PullImageRequest {
            image: Some(proto::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await)
    .into_inner()
    .image_ref
}

/// RunPodSandbox of `sc` with the default handler; the sandbox ID.
pub async fn run_sandbox(
    rt: &mut RuntimeServiceClient<Channel>,
    sc: &proto::PodSandboxConfig,
) -> String {
    ok(rt
        .run_pod_sandbox(proto::RunPodSandboxRequest {
            config: Some(sc.clone()),
            runtime_handler: String::new(),
        })
        .await)
    .into_inner()
    .pod_sandbox_id
}

/// StopPodSandbox then RemovePodSandbox, each asserted to succeed.
pub async fn stop_and_remove_sandbox(rt: &mut RuntimeServiceClient<Channel>, sb: String) {
    ok(rt
        .stop_pod_sandbox(proto::StopPodSandboxRequest {
            pod_sandbox_id: sb.clone(),
        })
        .await);
    ok(rt
        .remove_pod_sandbox(proto::RemovePodSandboxRequest { pod_sandbox_id: sb })
        .await);
}

pub async fn run_container(
    rt: &mut RuntimeServiceClient<Channel>,
    sb: &str,
    sc: &proto::PodSandboxConfig,
    cfg: proto::ContainerConfig,
) -> String {
    let id = ok(rt
        .create_container(proto::CreateContainerRequest {
            pod_sandbox_id: sb.into(),
            config: Some(cfg),
            sandbox_config: Some(sc.clone()),
        })
        .await)
    .into_inner()
    .container_id;
    ok(rt
        .start_container(proto::StartContainerRequest {
            container_id: id.clone(),
        })
        .await);
    wait_state(rt, &id, proto::ContainerState::ContainerRunning).await;
    id
}

/// ExecSync of `sh -c script` (20 s timeout): its exit code and its
/// stdout followed by its stderr.
pub async fn exec_sh(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
    script: &str,
) -> (i32, String) {
    let r = ok(rt
        .exec_sync(proto::ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout: 20,
        })
        .await)
    .into_inner();
    (
        r.exit_code,
        format!(
            "{}{}",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        ),
    )
}

pub fn start_daemon(pubd: &Published) -> Daemon {
    start_with_config(pubd, "cgroup_parent = \"/podctl-cri-test\"\n")
}

/// A `podctl serve` with `extra` configuration lines.
fn start_with_config(pubd: &Published, extra: &str) -> Daemon {
    setup(pubd, extra).start()
}

/// A `podctl serve` whose CNI configuration is a template
/// (`[cni] conf_template`, the bridge conflist with `{{.PodCIDR}}` for its
/// subnet): no pod network until UpdateRuntimeConfig brings the pod CIDR.
pub fn start_daemon_with_cni_template(pubd: &Published) -> Daemon {
    let s = setup(pubd, "cgroup_parent = \"/podctl-cri-test\"\n");
    let conflist = s.dir.path().join("cni/10-test.conflist");
    let template = s.dir.path().join("cni.template");
    let text = ok(std::fs::read_to_string(&conflist))
        .replace(&format!("{}.0/24", s.subnet), "{{.PodCIDR}}");
    ok(std::fs::write(&template, text));
    ok(std::fs::remove_file(&conflist));
    let toml = ok(std::fs::read_to_string(&s.config)).replace(
        "[cni]\n",
        &format!("[cni]\nconf_template = \"{}\"\n", template.display()),
    );
    ok(std::fs::write(&s.config, toml));
    s.start()
}

impl Setup {
    /// Start `podctl serve` on this setup.
    pub fn start(self) -> Daemon {
        let child = spawn_daemon(self.dir.path(), &self.socket, &[]);
        Daemon {
            dir: self.dir,
            child,
            socket: self.socket,
            bridge: self.bridge,
            subnet: self.subnet,
        }
    }
}

/// `podctl serve --config <dir>/podctl.toml` with `env` added, its log
/// appended to `<dir>/daemon.log`; returns once it serves on `socket`.
fn spawn_daemon(dir: &Path, socket: &Path, env: &[(&str, &str)]) -> Child {
    // A stale socket of a daemon that died must not count as the new one's.
    let _ = std::fs::remove_file(socket);
    let log = ok(std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("daemon.log")));
    let mut child = ok(Command::new(podctl_tests::workspace_bin("podctl"))
        .arg("serve")
        .arg("--config")
        .arg(dir.join("podctl.toml"))
        .envs(env.iter().copied())
        .stderr(log)
        .spawn());
    // Ready when it accepts a connection: the file exists from bind(2) on,
    // a moment before listen(2) (a connect then is refused).
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
            panic!("daemon exited with {status} before serving {socket:?}:\n{log}");
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not serve {socket:?} within 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

impl Daemon {
    /// Stop this daemon (SIGTERM, unless it has died already) and start a
    /// new one over the same directories with `env` added.
    pub fn respawn(&mut self, env: &[(&str, &str)]) {
        if ok(self.child.try_wait()).is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
        }
        let _ = self.child.wait();
        self.child = spawn_daemon(self.dir.path(), &self.socket, env);
    }
}

/// Entries of a directory (none when it is missing).
pub fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect()
}

/// Whether `pid` runs (a zombie waiting for its reaper does not).
pub fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// Addresses the host-local IPAM of a test daemon's network (`setup`)
/// has handed out: one file per address under `<dir>/ipam/<network>`.
pub fn ipam_allocations(dir: &Path) -> Vec<String> {
    entries(&dir.join("ipam/podctl-cri-test"))
        .into_iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect()
}

/// The cgroup driver a test daemon runs with: cgroupfs on build hosts,
/// systemd in the VM of tests/vm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    Cgroupfs,
    Systemd,
}

/// A test daemon's own cgroup parent (a name without dashes: systemd
/// nests slices by dashes).
pub struct Parent {
    pub driver: Driver,
    pub name: String,
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

impl Parent {
    pub fn new(driver: Driver) -> Self {
        Parent {
            driver,
            name: podctl_tests::unique_name("ptest"),
        }
    }

    /// The daemon's configuration lines for it.
    pub fn config(&self) -> String {
        match self.driver {
            Driver::Cgroupfs => format!("cgroup_parent = \"/{}\"\n", self.name),
            Driver::Systemd => format!(
                "cgroup_driver = \"systemd\"\ncgroup_parent = \"{}.slice\"\n",
                self.name
            ),
        }
    }

    /// The parent's directories, in every hierarchy (existing or not).
    fn roots(&self) -> Vec<PathBuf> {
        let root = Path::new(CGROUP_ROOT);
        match self.driver {
            Driver::Systemd => vec![root.join(format!("{}.slice", self.name))],
            Driver::Cgroupfs => std::iter::once(root.to_path_buf())
                .chain(
                    std::fs::read_dir(root)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| p.is_dir()),
                )
                .map(|h| h.join(&self.name))
                .collect(),
        }
    }

    /// Processes in cgroups at or below the parent, as `cgroup: pid`.
    pub fn processes(&self) -> Vec<String> {
        fn walk(d: &Path, out: &mut Vec<String>) {
            if let Ok(p) = std::fs::read_to_string(d.join("cgroup.procs")) {
                out.extend(p.lines().map(|l| format!("{}: {l}", d.display())));
            }
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    walk(&e.path(), out);
                }
            }
        }
        let mut out = vec![];
        for r in self.roots() {
            walk(&r, &mut out);
        }
        out
    }

    /// What a stopped daemon must not leave: with cgroupfs the parent
    /// itself in any hierarchy (the daemon removes it once empty); with
    /// systemd any cgroup below the parent slice (systemd owns the slice).
    pub fn left_after_stop(&self) -> Vec<PathBuf> {
        match self.driver {
            Driver::Cgroupfs => self.roots().into_iter().filter(|p| p.is_dir()).collect(),
            Driver::Systemd => self
                .roots()
                .iter()
                .flat_map(|r| std::fs::read_dir(r).into_iter().flatten().flatten())
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect(),
        }
    }
}

/// A `podctl serve` whose pods go under `parent`.
pub fn start_daemon_in(pubd: &Published, parent: &Parent) -> Daemon {
    start_with_config(pubd, &parent.config())
}

/// A daemon's directories and configuration file, not yet started.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub bridge: String,
    pub subnet: String,
}

/// Temporary directories, a CNI bridge conflist and a `podctl.toml`
/// (registry mirrors pointing at `pubd`, plus `extra` TOML lines).
pub fn setup(pubd: &Published, extra: &str) -> Setup {
    let dir = ok(tempfile::tempdir());
    let d = dir.path();
    let bridge = podctl_tests::unique_name("podcri");
    let cidr = ok(podctl_tests::free_subnet(std::process::id()));
    // "a.b.c" of the free a.b.c.0/24, what pod IPs start with.
    let subnet = cidr.trim_end_matches(".0/24").to_string();
    ok(podctl_tests::write_bridge_conflist(
        d,
        "podctl-cri-test",
        &bridge,
        &cidr,
        true,
    ));
    let socket = d.join("podctl.sock");
    let config = format!(
        r#"socket = "{sock}"
root = "{root}"
state = "{state}"
{extra}log_level = "info,podctl=debug"

[cni]
conf_dir = "{cni}"
bin_dirs = ["/usr/lib/cni", "/opt/cni/bin"]

[registry.hosts."docker.io"]
mirrors = ["http://{host}"]
mirrors_only = true

[registry.hosts."{host}"]
insecure = true
"#,
        sock = socket.display(),
        root = d.join("root").display(),
        state = d.join("state").display(),
        cni = d.join("cni").display(),
        host = pubd.host,
    );
    ok(std::fs::write(d.join("podctl.toml"), config));
    Setup {
        config: d.join("podctl.toml"),
        socket,
        bridge,
        subnet,
        dir,
    }
}

pub async fn channel(socket: &Path) -> Channel {
    let path = socket.to_path_buf();
    ok(ok(Endpoint::try_from("http://[::]:50051"))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await)
}

pub fn sandbox_config(name: &str, attempt: u32, log_dir: &Path) -> proto::PodSandboxConfig {
    proto::PodSandboxConfig {
        metadata: Some(proto::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        labels: [("app".to_string(), name.to_string())].into(),
        annotations: [("note".to_string(), "cri-test".to_string())].into(),
        dns_config: Some(proto::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        ..Default::default()
    }
}

pub fn container_config(name: &str, image: &str, script: &str) -> proto::ContainerConfig {
    proto::ContainerConfig {
        metadata: Some(proto::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(proto::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), script.into()],
        envs: vec![proto::KeyValue {
            key: "GREETING".into(),
            value: "hello".into(),
        }],
        labels: [("tier".to_string(), name.to_string())].into(),
        log_path: format!("{name}/0.log"),
        ..Default::default()
    }
}

pub async fn wait_state(
    rt: &mut RuntimeServiceClient<Channel>,
    id: &str,
    state: proto::ContainerState,
) -> proto::ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = ok(rt
            .container_status(proto::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await)
        .into_inner()
        .status
        .unwrap_or_default();
        if st.state == state as i32 || Instant::now() > deadline {
            return st;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn read_log(path: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = std::fs::read_to_string(path).unwrap_or_default();
        if s.contains(want) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
