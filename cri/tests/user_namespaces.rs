//! Pods with a user namespace of their own (CRI `NamespaceMode::POD`
//! user namespaces; Kubernetes' `hostUsers: false`), over the CRI socket:
//! the container's root is an unprivileged host user, yet it owns the
//! image's files and the pod's volumes through idmapped mounts; what it
//! writes lands on the host as the IDs it maps to; removal leaves no
//! mount behind and never touches a volume's files.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{
    block_on, channel, container_config, exec_sh, ok, pull, registry_and_daemon, run_container,
    run_sandbox, sandbox_config, stop_and_remove_sandbox, Daemon,
};
use podctl_cri::proto;
use podctl_cri::proto::image_service_client::ImageServiceClient;
use podctl_cri::proto::runtime_service_client::RuntimeServiceClient;
use podctl_tests::fixtures::Published;

/// The host IDs the pod's root maps to.
const HOST_ID: u32 = 431_072;
const LENGTH: u32 = 65_536;

#[test]
fn a_pod_in_its_own_user_namespace_owns_its_files() {
    let (reg, pubd, daemon) = registry_and_daemon();
    // The pod's root must reach the container's rootfs below the daemon's
    // directory (a 0700 temporary directory).
    ok(std::fs::set_permissions(
        daemon.dir.path(),
        std::fs::Permissions::from_mode(0o711),
    ));
    block_on(run(&pubd, &daemon));
    drop(reg);
}

fn userns(mode: proto::NamespaceMode, host_id: u32) -> proto::NamespaceOption {
    let map = vec![proto::IdMapping {
        container_id: 0,
        host_id,
        length: LENGTH,
    }];
    proto::NamespaceOption {
        userns_options: Some(proto::UserNamespace {
            mode: mode as i32,
            uids: map.clone(),
            gids: map,
        }),
        ..Default::default()
    }
}

fn uid_of_process(pid: u32) -> u32 {
    let status = ok(std::fs::read_to_string(format!("/proc/{pid}/status")));
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("no Uid in /proc/{pid}/status"))
}

async fn run(pubd: &Published, daemon: &Daemon) {
    let ch = channel(&daemon.socket).await;
    let mut rt = RuntimeServiceClient::new(ch.clone());
    let mut img = ImageServiceClient::new(ch);
    let busybox = pull(&mut img, &pubd.busybox).await;

    // The runtime says it can.
    let status = ok(rt.status(proto::StatusRequest { verbose: false }).await).into_inner();
    let default = status
        .runtime_handlers
        .iter()
        .find(|h| h.name.is_empty())
        .and_then(|h| h.features)
        .unwrap_or_default();
    assert!(default.user_namespaces, "{:?}", status.runtime_handlers);

    // Refused, with the reason: a host network namespace with it.
    let logs = daemon.dir.path().join("logs");
    let mut bad = sandbox_config("userns-hostnet", 0, &logs);
    bad.linux = Some(proto::LinuxPodSandboxConfig {
        security_context: Some(proto::LinuxSandboxSecurityContext {
            namespace_options: Some(proto::NamespaceOption {
                network: proto::NamespaceMode::Node as i32,
                ..userns(proto::NamespaceMode::Pod, HOST_ID)
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let e = rt
        .run_pod_sandbox(proto::RunPodSandboxRequest {
            config: Some(bad),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("a user namespace with the host's network was accepted");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains("host's network namespace"), "{e}");

    let mut pod = sandbox_config("userns", 0, &logs);
    pod.linux = Some(proto::LinuxPodSandboxConfig {
        security_context: Some(proto::LinuxSandboxSecurityContext {
            namespace_options: Some(userns(proto::NamespaceMode::Pod, HOST_ID)),
            ..Default::default()
        }),
        ..Default::default()
    });
    let sb = run_sandbox(&mut rt, &pod).await;

    // A volume of the host's root with a file in it.
    let vol = daemon.dir.path().join("vol");
    ok(std::fs::create_dir_all(&vol));
    ok(std::fs::write(vol.join("kept"), "host data\n"));

    let mut c = container_config("app", &busybox, "sleep 3600");
    c.mounts = vec![proto::Mount {
        container_path: "/vol".into(),
        host_path: vol.display().to_string(),
        ..Default::default()
    }];
    let id = run_container(&mut rt, &sb, &pod, c).await;

    // Inside: root of a namespace mapped to HOST_ID.., owning the image's
    // files, the pod's /etc files and the volume.
    let (code, out) = exec_sh(
        &mut rt,
        &id,
        "cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g; \
         stat -c '%n %u:%g' / /bin/sh /etc/hosts /vol /vol/kept; \
         echo new > /made-inside && echo more >> /vol/kept && echo v > /vol/made && echo wrote",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let want_map = format!("0 {HOST_ID} {LENGTH}");
    let maps: Vec<String> = out
        .lines()
        .take(2)
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(maps, vec![want_map.clone(), want_map], "{out}");
    for owned in [
        "/ 0:0",
        "/bin/sh 0:0",
        "/etc/hosts 0:0",
        "/vol 0:0",
        "/vol/kept 0:0",
    ] {
        assert!(out.lines().any(|l| l == owned), "{owned:?} not in:\n{out}");
    }
    assert!(out.lines().any(|l| l == "wrote"), "{out}");

    // Outside: the container's processes are HOST_ID; what it wrote in its
    // rootfs is HOST_ID's, what it wrote in the volume is the host root's
    // (the volume is idmapped), and the image's layers were not touched.
    let st = ok(rt
        .container_status(proto::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: true,
        })
        .await)
    .into_inner();
    let pid = st
        .info
        .get("info")
        .and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok())
        .and_then(|v| v["pid"].as_u64())
        .unwrap_or_else(|| panic!("no pid in verbose status: {:?}", st.info));
    assert_eq!(uid_of_process(pid as u32), HOST_ID);
    let upper = daemon
        .dir
        .path()
        .join("root/containers")
        .join(&id)
        .join("upper");
    let made = ok(std::fs::metadata(upper.join("made-inside")));
    assert_eq!((made.uid(), made.gid()), (HOST_ID, HOST_ID));
    let in_vol = ok(std::fs::metadata(vol.join("made")));
    assert_eq!((in_vol.uid(), in_vol.gid()), (0, 0));
    assert_eq!(
        ok(std::fs::read_to_string(vol.join("kept"))),
        "host data\nmore\n"
    );

    // Another pod, with the host's user namespace, sees the host's IDs.
    let plain = sandbox_config("plain", 0, &logs);
    let sb2 = run_sandbox(&mut rt, &plain).await;
    let c2 = run_container(
        &mut rt,
        &sb2,
        &plain,
        container_config("plain", &busybox, "sleep 3600"),
    )
    .await;
    let (code, out) = exec_sh(&mut rt, &c2, "cat /proc/self/uid_map").await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        vec!["0", "0", "4294967295"]
    );

    // Removal: nothing of the pod stays mounted, the volume keeps its files.
    stop_and_remove_sandbox(&mut rt, sb).await;
    stop_and_remove_sandbox(&mut rt, sb2).await;
    // (A removed container's unmounts finish in the background.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut left = podctl_tests::mounts_under(daemon.dir.path());
    while !left.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        left = podctl_tests::mounts_under(daemon.dir.path());
    }
    assert_eq!(left, Vec::<String>::new());
    assert_eq!(
        ok(std::fs::read_to_string(vol.join("kept"))),
        "host data\nmore\n"
    );
    assert!(vol.join("made").exists());
}
