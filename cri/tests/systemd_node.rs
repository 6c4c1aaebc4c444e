//! The systemd cgroup driver on a real node: systemd as PID 1, pure cgroup
//! v2. These tests run inside the VM of `tests/vm` (`tests/vm/suite.sh`
//! runs them with `--ignored`); on a build host they are ignored.
//!
//! The daemon runs as a systemd service with `Delegate=yes` and
//! `KillMode=process`, as a node would run it, and is driven over its
//! socket. Each check prints a `check:` line so the CI log shows it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{
    channel, container_config, ok, pull, run_sandbox, sandbox_config, setup, wait_state, Setup,
};
use podctl_cri::proto;
use podctl_cri::proto::image_service_client::ImageServiceClient;
use podctl_cri::proto::runtime_service_client::RuntimeServiceClient;
use podctl_tests::fixtures::publish;
use podctl_tests::registry::Registry;
use tonic::transport::Channel;

const UNIT: &str = "podctl-vmtest.service";
const CG: &str = "/sys/fs/cgroup";

/// The daemon, started once for the whole binary as a systemd service.
struct Node {
    setup: Setup,
    busybox: String,
}

fn node() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(|| {
        let comm = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
        assert_eq!(comm.trim(), "systemd", "PID 1 must be systemd");
        assert!(
            Path::new(CG).join("cgroup.controllers").exists()
                && !Path::new(CG).join("memory").exists(),
            "{CG} must be the unified (v2) hierarchy"
        );
        check("PID 1 is systemd and /sys/fs/cgroup is cgroup2");
        // The registry lives as long as the test process (the VM).
        let reg = Box::leak(Box::new(ok(Registry::start())));
        let pubd = ok(publish(reg, None));
        let setup = setup(
            &pubd,
            "cgroup_driver = \"systemd\"\npids_limit = 64\npod_pids_limit = 200\n",
        );
        let unit = format!(
            "[Unit]\nDescription=podctl test daemon\n\n[Service]\nType=notify\n\
             ExecStart={bin} serve --config {cfg}\nDelegate=yes\nKillMode=process\n\
             StandardError=append:{log}\n",
            bin = podctl_tests::workspace_bin("podctl").display(),
            cfg = setup.config.display(),
            log = setup.dir.path().join("daemon.log").display(),
        );
        ok(std::fs::write(format!("/run/systemd/system/{UNIT}"), unit));
        systemctl(&["daemon-reload"]);
        systemctl(&["start", UNIT]);
        Node {
            setup,
            busybox: format!("{}/library/busybox:latest", pubd.host),
        }
    })
}

fn check(what: &str) {
    println!("check: {what}: ok");
}

fn systemctl(args: &[&str]) -> String {
    let out = ok(Command::new("systemctl").args(args).output());
    assert!(
        out.status.success(),
        "systemctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `systemctl show -p P --value UNIT`.
fn unit_prop(unit: &str, prop: &str) -> String {
    systemctl(&["show", "-p", prop, "--value", unit])
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

/// Runs `f` after the node is up (its set-up blocks on its own runtime,
/// so it must not run inside this one).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    node();
    ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build())
    .block_on(f)
}

struct Cri {
    rt: RuntimeServiceClient<Channel>,
    img: ImageServiceClient<Channel>,
}

async fn cri() -> Cri {
    let ch = channel(&node().setup.socket).await;
    Cri {
        rt: RuntimeServiceClient::new(ch.clone()),
        img: ImageServiceClient::new(ch),
    }
}

fn resources(memory: i64, quota: i64, shares: i64) -> proto::LinuxContainerResources {
    proto::LinuxContainerResources {
        memory_limit_in_bytes: memory,
        cpu_quota: quota,
        cpu_period: 100_000,
        cpu_shares: shares,
        ..Default::default()
    }
}

/// Run a pod (with pod-level limits) and return its id and config.
async fn run_pod(c: &mut Cri, name: &str) -> (String, proto::PodSandboxConfig) {
    let logs = node().setup.dir.path().join("logs").join(name);
    let mut cfg = sandbox_config(name, 0, &logs);
    cfg.linux = Some(proto::LinuxPodSandboxConfig {
        resources: Some(resources(256 << 20, 50_000, 512)),
        ..Default::default()
    });
    let id = run_sandbox(&mut c.rt, &cfg).await;
    (id, cfg)
}

async fn start(
    c: &mut Cri,
    pod: &str,
    pod_cfg: &proto::PodSandboxConfig,
    name: &str,
    script: &str,
    limits: proto::LinuxContainerResources,
) -> String {
    pull(&mut c.img, &node().busybox).await;
    let mut cc = container_config(name, &node().busybox, script);
    cc.linux = Some(proto::LinuxContainerConfig {
        resources: Some(limits),
        ..Default::default()
    });
    let id = ok(c
        .rt
        .create_container(proto::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(cc),
            sandbox_config: Some(pod_cfg.clone()),
        })
        .await)
    .into_inner()
    .container_id;
    ok(c.rt
        .start_container(proto::StartContainerRequest {
            container_id: id.clone(),
        })
        .await);
    id
}

async fn remove_pod(c: &mut Cri, pod: &str) {
    ok(c.rt
        .stop_pod_sandbox(proto::StopPodSandboxRequest {
            pod_sandbox_id: pod.into(),
        })
        .await);
    ok(c.rt
        .remove_pod_sandbox(proto::RemovePodSandboxRequest {
            pod_sandbox_id: pod.into(),
        })
        .await);
}

fn pod_slice(pod: &str) -> String {
    format!("podctl-pod{pod}.slice")
}

fn scope_dir(pod: &str, unit: &str) -> PathBuf {
    Path::new(CG)
        .join("podctl.slice")
        .join(pod_slice(pod))
        .join(unit)
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "needs systemd as PID 1 on cgroup v2: runs in the VM (tests/vm/suite.sh)"]
fn pod_slice_and_container_scopes_carry_the_pods_limits() {
    block_on(async {
        let mut c = cri().await;
        let driver = ok(c.rt.runtime_config(proto::RuntimeConfigRequest {}).await)
            .into_inner()
            .linux
            .map(|l| l.cgroup_driver)
            .unwrap_or(-1);
        assert_eq!(driver, proto::CgroupDriver::Systemd as i32);
        check("RuntimeConfig reports the systemd cgroup driver");

        let (pod, pod_cfg) = run_pod(&mut c, "limits").await;
        let slice = pod_slice(&pod);
        assert_eq!(unit_prop(&slice, "ActiveState"), "active");
        let pause = format!("podctl-{pod}.scope");
        assert_eq!(unit_prop(&pause, "ActiveState"), "active");
        assert_eq!(unit_prop(&pause, "Slice"), slice);
        check(&format!("pod slice {slice} and pause scope are active"));
        let pod_dir = Path::new(CG).join("podctl.slice").join(&slice);
        assert_eq!(read(&pod_dir.join("memory.max")), "268435456");
        assert_eq!(read(&pod_dir.join("cpu.max")), "50000 100000");
        assert_eq!(read(&pod_dir.join("pids.max")), "200");
        check("pod slice memory.max, cpu.max and pids.max match the pod");

        let id = start(
            &mut c,
            &pod,
            &pod_cfg,
            "app",
            "cat /proc/self/cgroup; sleep 600",
            resources(64 << 20, 20_000, 256),
        )
        .await;
        let st = wait_state(&mut c.rt, &id, proto::ContainerState::ContainerRunning).await;
        assert_eq!(st.state, proto::ContainerState::ContainerRunning as i32);
        let scope = format!("podctl-{id}.scope");
        assert_eq!(unit_prop(&scope, "ActiveState"), "active");
        assert_eq!(unit_prop(&scope, "Slice"), slice);
        check(&format!(
            "container scope {scope} is active in the pod slice"
        ));
        let dir = scope_dir(&pod, &scope);
        assert_eq!(read(&dir.join("memory.max")), "67108864");
        assert_eq!(read(&dir.join("cpu.max")), "20000 100000");
        assert_eq!(read(&dir.join("pids.max")), "64");
        check("container scope memory.max, cpu.max and pids.max match the container");
        let want = format!("0::/podctl.slice/{slice}/{scope}");
        let log = common::read_log(&st.log_path, &want);
        assert!(log.contains(&want), "container's /proc/self/cgroup: {log}");
        check("the container sees itself in its scope");

        remove_pod(&mut c, &pod).await;
        wait_until("units to go", || {
            unit_prop(&scope, "ActiveState") != "active"
                && unit_prop(&slice, "ActiveState") != "active"
        });
        assert!(
            !dir.exists() && !pod_dir.exists(),
            "{pod_dir:?} left behind"
        );
        let listed = systemctl(&["list-units", "--all", "--plain", "--no-legend", "podctl*"]);
        assert!(!listed.contains(&pod) && !listed.contains(&id), "{listed}");
        check("slice and scopes are gone after the pod is removed");
    });
}

#[test]
#[ignore = "needs systemd as PID 1 on cgroup v2: runs in the VM (tests/vm/suite.sh)"]
fn a_container_over_its_memory_limit_is_oom_killed() {
    block_on(async {
        let mut c = cri().await;
        let (pod, pod_cfg) = run_pod(&mut c, "oom").await;
        // tail buffers /dev/zero looking for a newline that never comes.
        let id = start(
            &mut c,
            &pod,
            &pod_cfg,
            "hog",
            "tail /dev/zero",
            resources(32 << 20, 0, 0),
        )
        .await;
        let st = wait_state(&mut c.rt, &id, proto::ContainerState::ContainerExited).await;
        assert_eq!(st.state, proto::ContainerState::ContainerExited as i32);
        assert_eq!(st.reason, "OOMKilled", "status {st:?}");
        assert_eq!(st.exit_code, 137);
        check("a container over memory.max is reported OOMKilled (137)");
        remove_pod(&mut c, &pod).await;
    });
}

#[test]
#[ignore = "needs systemd as PID 1 on cgroup v2: runs in the VM (tests/vm/suite.sh)"]
fn restarting_the_daemon_under_systemd_keeps_containers() {
    block_on(async {
        let mut c = cri().await;
        let (pod, pod_cfg) = run_pod(&mut c, "restart").await;
        let id = start(
            &mut c,
            &pod,
            &pod_cfg,
            "long",
            "sleep 600",
            resources(0, 0, 0),
        )
        .await;
        wait_state(&mut c.rt, &id, proto::ContainerState::ContainerRunning).await;
        let procs = scope_dir(&pod, &format!("podctl-{id}.scope")).join("cgroup.procs");
        let before = read(&procs);
        assert!(!before.is_empty());
        let main_before = unit_prop(UNIT, "MainPID");

        systemctl(&["restart", UNIT]);
        let main_after = unit_prop(UNIT, "MainPID");
        assert_ne!(main_before, main_after, "the daemon was not restarted");
        assert_eq!(read(&procs), before, "container processes changed");
        check("systemctl restart of the daemon leaves the container's processes");

        let mut c = cri().await;
        let st = wait_state(&mut c.rt, &id, proto::ContainerState::ContainerRunning).await;
        assert_eq!(st.state, proto::ContainerState::ContainerRunning as i32);
        let out = ok(c
            .rt
            .exec_sync(proto::ExecSyncRequest {
                container_id: id.clone(),
                cmd: vec!["echo".into(), "still here".into()],
                timeout: 30,
            })
            .await)
        .into_inner();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "still here\n");
        check("the restarted daemon reports the container Running and execs in it");

        systemctl(&["stop", UNIT]);
        assert_eq!(read(&procs), before);
        systemctl(&["start", UNIT]);
        check("stopping the daemon leaves containers running (KillMode=process)");

        let mut c = cri().await;
        remove_pod(&mut c, &pod).await;
        assert!(!procs.exists());
    });
}
