//! Security contexts over the CRI socket, with real containers:
//! capabilities (within the daemon's own bounding set), privileged,
//! users and supplemental groups, recursive read-only mounts.

mod common;

use std::path::Path;
use std::process::Command;

use common::{
    block_on, channel, container_config, ok, pull, registry_and_daemon, run_sandbox,
    sandbox_config, stop_and_remove_sandbox, wait_state, Daemon,
};
use podctl_cri::proto;
use podctl_cri::proto::image_service_client::ImageServiceClient;
use podctl_cri::proto::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_CHOWN: u32 = 0;

/// A capability mask line (`CapBnd:`, `CapEff:`) of a /proc status text.
fn cap_mask(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

struct Pod {
    rt: RuntimeServiceClient<Channel>,
    id: String,
    config: proto::PodSandboxConfig,
}

impl Pod {
    async fn create(&mut self, cfg: proto::ContainerConfig) -> Result<String, tonic::Status> {
        self.rt
            .create_container(proto::CreateContainerRequest {
                pod_sandbox_id: self.id.clone(),
                config: Some(cfg),
                sandbox_config: Some(self.config.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id)
    }

    /// Create and start `cfg`; wait until it runs.
    async fn run(&mut self, cfg: proto::ContainerConfig) -> String {
        let id = ok(self.create(cfg).await);
        ok(self
            .rt
            .start_container(proto::StartContainerRequest {
                container_id: id.clone(),
            })
            .await);
        let st = wait_state(&mut self.rt, &id, proto::ContainerState::ContainerRunning).await;
        assert_eq!(st.state, proto::ContainerState::ContainerRunning as i32);
        id
    }

    async fn exec(&mut self, id: &str, cmd: &[&str]) -> proto::ExecSyncResponse {
        ok(self
            .rt
            .exec_sync(proto::ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: 10,
            })
            .await)
        .into_inner()
    }
}

fn sleeper(name: &str, sc: proto::LinuxContainerSecurityContext) -> proto::ContainerConfig {
    proto::ContainerConfig {
        linux: Some(proto::LinuxContainerConfig {
            security_context: Some(sc),
            ..Default::default()
        }),
        ..container_config(name, "busybox", "exec sleep 1000")
    }
}

#[test]
fn security_contexts() {
    let (reg, _pubd, daemon) = registry_and_daemon();
    block_on(check(&daemon));
    drop(reg);
}

async fn check(daemon: &Daemon) {
    let ch = channel(&daemon.socket).await;
    let mut rt = RuntimeServiceClient::new(ch.clone());
    let mut img = ImageServiceClient::new(ch);

    // Features are advertised for the default handler.
    let st = ok(rt.status(proto::StatusRequest { verbose: false }).await).into_inner();
    let default = st.runtime_handlers.iter().find(|h| h.name.is_empty());
    assert!(
        default
            .and_then(|h| h.features)
            .is_some_and(|f| f.recursive_read_only_mounts),
        "{:?}",
        st.runtime_handlers
    );
    assert!(st.features.is_some_and(|f| f.supplemental_groups_policy));

    pull(&mut img, "busybox").await;
    let logs = daemon.dir.path().join("logs");
    let mut config = sandbox_config("secure", 0, &logs);
    config.linux = Some(proto::LinuxPodSandboxConfig {
        security_context: Some(proto::LinuxSandboxSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = run_sandbox(&mut rt, &config).await;
    let mut pod = Pod {
        rt: rt.clone(),
        id: id.clone(),
        config,
    };
    capabilities(&mut pod).await;
    users(&mut pod).await;
    readonly_mounts(&mut pod).await;
    kubelet_cgroup_parent(&mut rt, daemon).await;

    stop_and_remove_sandbox(&mut rt, id).await;
}

async fn capabilities(pod: &mut Pod) {
    let ours = cap_mask(&ok(std::fs::read_to_string("/proc/self/status")), "CapBnd:");

    // Privileged: every capability the daemon holds, nothing it lacks.
    let privileged = pod
        .run(sleeper(
            "privileged",
            proto::LinuxContainerSecurityContext {
                privileged: true,
                ..Default::default()
            },
        ))
        .await;
    let out = pod.exec(&privileged, &["cat", "/proc/self/status"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(cap_mask(&text, "CapEff:"), ours, "{text}");

    // Default set, one added and one dropped; ALL dropped leaves none.
    let tuned = pod
        .run(sleeper(
            "tuned",
            proto::LinuxContainerSecurityContext {
                capabilities: Some(proto::Capability {
                    add_capabilities: vec!["NET_ADMIN".into()],
                    drop_capabilities: vec!["CHOWN".into()],
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
        .await;
    let out = pod.exec(&tuned, &["cat", "/proc/self/status"]).await;
    let eff = cap_mask(&String::from_utf8_lossy(&out.stdout), "CapEff:");
    assert_ne!(eff & (1 << CAP_NET_ADMIN), 0, "NET_ADMIN added: {eff:x}");
    assert_eq!(eff & (1 << CAP_CHOWN), 0, "CHOWN dropped: {eff:x}");
    assert_eq!(
        eff & (1 << CAP_SYS_ADMIN),
        0,
        "SYS_ADMIN not default: {eff:x}"
    );
    let none = pod
        .run(sleeper(
            "none",
            proto::LinuxContainerSecurityContext {
                capabilities: Some(proto::Capability {
                    drop_capabilities: vec!["ALL".into()],
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
        .await;
    let out = pod.exec(&none, &["cat", "/proc/self/status"]).await;
    assert_eq!(
        cap_mask(&String::from_utf8_lossy(&out.stdout), "CapEff:"),
        0
    );
}

async fn users(pod: &mut Pod) {
    // A group without a user is refused.
    let bad = pod
        .create(sleeper(
            "group-only",
            proto::LinuxContainerSecurityContext {
                run_as_group: Some(proto::Int64Value { value: 3000 }),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(
        bad.err().map(|e| e.code()),
        Some(tonic::Code::InvalidArgument)
    );

    // uid/gid and supplemental groups, reported and in effect.
    let c = pod
        .run(sleeper(
            "strict",
            proto::LinuxContainerSecurityContext {
                run_as_user: Some(proto::Int64Value { value: 1000 }),
                run_as_group: Some(proto::Int64Value { value: 2000 }),
                supplemental_groups: vec![1234],
                supplemental_groups_policy: proto::SupplementalGroupsPolicy::Strict as i32,
                ..Default::default()
            },
        ))
        .await;
    let st = ok(pod
        .rt
        .container_status(proto::ContainerStatusRequest {
            container_id: c.clone(),
            verbose: false,
        })
        .await)
    .into_inner()
    .status
    .unwrap_or_default();
    let user = st.user.and_then(|u| u.linux).unwrap_or_default();
    assert_eq!(
        (user.uid, user.gid, user.supplemental_groups),
        (1000, 2000, vec![2000, 1234])
    );
    let out = pod.exec(&c, &["id", "-G"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2000 1234");
}

/// A host directory with a tmpfs mounted below it; unmounted on drop.
struct HostTree(tempfile::TempDir);

impl HostTree {
    fn new() -> Self {
        let dir = ok(tempfile::tempdir());
        let sub = dir.path().join("sub");
        ok(std::fs::create_dir(&sub));
        let st = ok(Command::new("mount")
            .args(["-t", "tmpfs", "none"])
            .arg(&sub)
            .status());
        assert!(st.success());
        HostTree(dir)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for HostTree {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.0.path().join("sub"))
            .status();
    }
}

async fn readonly_mounts(pod: &mut Pod) {
    let tree = HostTree::new();
    let mount = |rro: bool, propagation: proto::MountPropagation| proto::Mount {
        host_path: tree.path().display().to_string(),
        container_path: "/mnt".into(),
        readonly: true,
        recursive_read_only: rro,
        propagation: propagation as i32,
        ..Default::default()
    };
    let with = |name: &str, m: proto::Mount| proto::ContainerConfig {
        mounts: vec![m],
        ..container_config(name, "busybox", "exec sleep 1000")
    };
    let touch = ["sh", "-c", "touch /mnt/sub/f 2>&1; echo rc=$?"];

    // Read-only: the submount stays writable. Recursive: it does not.
    let plain = pod
        .run(with(
            "ro",
            mount(false, proto::MountPropagation::PropagationPrivate),
        ))
        .await;
    let out = pod.exec(&plain, &touch).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "rc=0");
    let rro = pod
        .run(with(
            "rro",
            mount(true, proto::MountPropagation::PropagationPrivate),
        ))
        .await;
    let out = pod.exec(&rro, &touch).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Read-only file system"), "{text}");

    // Recursive read-only with propagation, or writable, is refused.
    let bad = pod
        .create(with(
            "rro-slave",
            mount(true, proto::MountPropagation::PropagationHostToContainer),
        ))
        .await;
    assert_eq!(
        bad.err().map(|e| e.code()),
        Some(tonic::Code::InvalidArgument)
    );
    let mut rw = mount(true, proto::MountPropagation::PropagationPrivate);
    rw.readonly = false;
    let bad = pod.create(with("rro-rw", rw)).await;
    assert_eq!(
        bad.err().map(|e| e.code()),
        Some(tonic::Code::InvalidArgument)
    );
    // Containers go before the tree is unmounted.
    for c in [plain, rro] {
        ok(pod
            .rt
            .remove_container(proto::RemoveContainerRequest { container_id: c })
            .await);
    }
}

/// A sandbox given a cgroup parent (as a kubelet does): its containers go
/// directly under it, and removing the pod leaves the parent alone.
async fn kubelet_cgroup_parent(rt: &mut RuntimeServiceClient<Channel>, daemon: &common::Daemon) {
    let parent = "/podctl-cri-test/kubepods/podk1";
    let logs = daemon.dir.path().join("logs");
    let mut config = sandbox_config("kubeletish", 0, &logs);
    config.linux = Some(proto::LinuxPodSandboxConfig {
        cgroup_parent: parent.into(),
        ..Default::default()
    });
    let id = run_sandbox(rt, &config).await;
    let mut pod = Pod {
        rt: rt.clone(),
        id: id.clone(),
        config,
    };
    let c = pod
        .run(container_config("in-parent", "busybox", "exec sleep 1000"))
        .await;
    let out = pod.exec(&c, &["cat", "/proc/self/cgroup"]).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.lines().any(|l| l.ends_with(&format!("{parent}/{c}"))),
        "{text}"
    );
    stop_and_remove_sandbox(rt, id).await;
    // The parent is the kubelet's: still there; this test removes it.
    let mut seen = false;
    for h in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let d = h.path().join(parent.trim_start_matches('/'));
        if d.is_dir() {
            seen = true;
            let _ = std::fs::remove_dir(&d);
            let _ = std::fs::remove_dir(d.parent().unwrap_or(&d));
        }
    }
    assert!(seen, "the pod parent cgroup was removed with the pod");
}
