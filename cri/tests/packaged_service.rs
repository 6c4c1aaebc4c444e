//! The Debian package on a real node: installed with dpkg, the packaged
//! `podctl.service` started by the package, driven with systemctl (restart,
//! stop, start), its logs read with journalctl, a pod run through it over
//! the CRI socket with the packaged configuration and network, and the
//! package purged again. It runs inside the VM of `tests/vm`
//! (`tests/vm/suite.sh`, with `PODCTL_DEB` naming the package); on a build
//! host it is ignored. Each check prints a `check:` line.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::node::{check, is, prop, sh, wait_until};
use common::{channel, container_config, ok, pull, run_sandbox, sandbox_config, wait_state};
use podctl_cri::proto;
use podctl_cri::proto::image_service_client::ImageServiceClient;
use podctl_cri::proto::runtime_service_client::RuntimeServiceClient;
use podctl_tests::fixtures::publish;
use podctl_tests::registry::Registry;

const UNIT: &str = "podctl.service";
const SOCKET: &str = "/run/podctl/podctl.sock";
const CONFLIST: &str = "/etc/podctl/cni/10-podctl.conflist";

fn rt() -> tokio::runtime::Runtime {
    ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build())
}

struct Cri {
    rt: RuntimeServiceClient<tonic::transport::Channel>,
    img: ImageServiceClient<tonic::transport::Channel>,
}

async fn cri() -> Cri {
    let ch = channel(Path::new(SOCKET)).await;
    Cri {
        rt: RuntimeServiceClient::new(ch.clone()),
        img: ImageServiceClient::new(ch),
    }
}

/// The installed package's network: the subnet of its bridge.
fn packaged_subnet() -> String {
    let v: serde_json::Value = ok(serde_json::from_str(&ok(std::fs::read_to_string(CONFLIST))));
    v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Whether `ip` is in the IPv4 `subnet` (a.b.c.d/len).
fn in_subnet(ip: &str, subnet: &str) -> bool {
    let parse = |s: &str| s.parse::<std::net::Ipv4Addr>().ok().map(u32::from);
    let Some((net, len)) = subnet.split_once('/') else {
        return false;
    };
    let (Some(ip), Some(net), Ok(len)) = (parse(ip), parse(net), len.parse::<u32>()) else {
        return false;
    };
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    ip & mask == net & mask
}

#[test]
#[ignore = "installs a .deb and needs systemd as PID 1: runs in the VM (tests/vm/suite.sh)"]
fn the_package_installs_and_its_service_runs_pods() {
    let deb = PathBuf::from(std::env::var("PODCTL_DEB").unwrap_or_default());
    assert!(deb.is_file(), "PODCTL_DEB must name the package: {deb:?}");

    // Install: files in place, the daemon enabled and started, the node
    // agent installed but left off.
    sh("dpkg", &["-i", &deb.display().to_string()]);
    for f in [
        "/usr/bin/podctl",
        "/usr/bin/podctl-shim",
        "/usr/bin/podctl-shim-watch",
        "/usr/lib/systemd/system/podctl.service",
        "/usr/lib/systemd/system/podctl-node.service",
        "/etc/podctl/podctl.toml",
        CONFLIST,
        "/usr/share/bash-completion/completions/podctl",
        "/usr/share/zsh/vendor-completions/_podctl",
        "/usr/share/fish/vendor_completions.d/podctl.fish",
    ] {
        assert!(Path::new(f).exists(), "{f} not installed");
    }
    // The guest's dpkg leaves out /usr/share/man (path-exclude): the pages
    // are checked in the package itself.
    let contents = sh("dpkg-deb", &["--contents", &deb.display().to_string()]);
    for page in [
        "podctl.1.gz",
        "podctl-run.1.gz",
        "podctl-serve.1.gz",
        "podctl-info.1.gz",
    ] {
        assert!(
            contents.contains(&format!("./usr/share/man/man1/{page}")),
            "{page} not in the package:\n{contents}"
        );
    }
    check("dpkg -i installs the binaries, units, configuration, man pages and completions");
    assert_eq!(is("is-enabled", UNIT), "enabled");
    wait_until("podctl.service to be active", || {
        is("is-active", UNIT) == "active"
    });
    assert_eq!(is("is-enabled", "podctl-node.service"), "disabled");
    assert_eq!(is("is-active", "podctl-node.service"), "inactive");
    check("the package enables and starts podctl.service, not podctl-node.service");
    assert_eq!(
        (
            prop(UNIT, "Type"),
            prop(UNIT, "Delegate"),
            prop(UNIT, "KillMode")
        ),
        (
            "notify".to_string(),
            "yes".to_string(),
            "process".to_string()
        )
    );
    check("podctl.service is Type=notify, Delegate=yes, KillMode=process");
    let info = ok(Command::new("podctl").arg("info").output());
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(info.status.success(), "podctl info:\n{text}");
    assert!(
        text.contains("ok    cgroup driver    systemd")
            && text.contains("ok    shim             /usr/bin/podctl-shim"),
        "{text}"
    );
    check("podctl info passes with the packaged configuration");
    let log = common::node::journal(UNIT);
    assert!(log.contains("serving CRI"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in the journal: {log:?}"
    );
    check("journalctl -u podctl shows the daemon's log, without colour escapes");

    // A pod through the packaged daemon, on the packaged network.
    let reg = ok(Registry::start());
    let pubd = ok(publish(&reg, None));
    let logs = PathBuf::from("/var/log/pods/default_pkg_uid-pkg");
    let rt = rt();
    let (pod, id) = rt.block_on(async {
        let mut c = cri().await;
        pull(&mut c.img, &pubd.busybox).await;
        let cfg = sandbox_config("pkg", 0, &logs);
        let pod = run_sandbox(&mut c.rt, &cfg).await;
        let st = ok(c
            .rt
            .pod_sandbox_status(proto::PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: false,
            })
            .await)
        .into_inner()
        .status
        .unwrap_or_default();
        let ip = st.network.map(|n| n.ip).unwrap_or_default();
        let subnet = packaged_subnet();
        assert!(in_subnet(&ip, &subnet), "pod IP {ip} not in {subnet}");
        let id = ok(c
            .rt
            .create_container(proto::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container_config(
                    "app",
                    &pubd.busybox,
                    "echo $GREETING from the package; sleep 600",
                )),
                sandbox_config: Some(cfg),
            })
            .await)
        .into_inner()
        .container_id;
        ok(c.rt
            .start_container(proto::StartContainerRequest {
                container_id: id.clone(),
            })
            .await);
        let st = wait_state(&mut c.rt, &id, proto::ContainerState::ContainerRunning).await;
        assert_eq!(st.state, proto::ContainerState::ContainerRunning as i32);
        let out = common::read_log(&st.log_path, "hello from the package");
        assert!(out.contains("stdout F hello from the package"), "{out}");
        (pod, id)
    });
    let slice = format!("podctl-pod{pod}.slice");
    assert_eq!(prop(&slice, "ActiveState"), "active");
    check(
        "a pod runs through the packaged service: IP from the packaged network, its log, its slice",
    );

    // systemctl restart and stop leave the container; the daemon comes
    // back to it.
    let procs = Path::new("/sys/fs/cgroup/podctl.slice")
        .join(&slice)
        .join(format!("podctl-{id}.scope/cgroup.procs"));
    let before = ok(std::fs::read_to_string(&procs));
    // This client's connection stays open and unread (its runtime is idle
    // between block_ons): the daemon must not wait for it to go.
    let main = prop(UNIT, "MainPID");
    let t0 = Instant::now();
    sh("systemctl", &["restart", UNIT]);
    assert_ne!(prop(UNIT, "MainPID"), main);
    assert_eq!(ok(std::fs::read_to_string(&procs)), before);
    sh("systemctl", &["stop", UNIT]);
    assert_eq!(is("is-active", UNIT), "inactive");
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "restart and stop took {took:?}"
    );
    assert_eq!(ok(std::fs::read_to_string(&procs)), before);
    sh("systemctl", &["start", UNIT]);
    assert_eq!(is("is-active", UNIT), "active");
    rt.block_on(async {
        let mut c = cri().await;
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
    });
    let log = common::node::journal(UNIT);
    assert!(log.matches("serving CRI").count() >= 3, "{log}");
    assert!(log.contains("SIGTERM: draining"), "{log}");
    check("systemctl restart, stop and start keep the container, an idle client holds up neither; journalctl shows each start and stop");

    rt.block_on(async {
        let mut c = cri().await;
        ok(c.rt
            .stop_pod_sandbox(proto::StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await);
        ok(c.rt
            .remove_pod_sandbox(proto::RemovePodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await);
    });
    wait_until("the pod slice to go", || {
        prop(&slice, "ActiveState") != "active"
    });
    sh("dpkg", &["--purge", "podctl"]);
    assert_eq!(is("is-active", UNIT), "inactive");
    assert!(
        !Path::new("/usr/bin/podctl").exists() && !Path::new("/etc/podctl/podctl.toml").exists()
    );
    check("dpkg --purge stops the service and removes the package and its configuration");
    drop(reg);
}
