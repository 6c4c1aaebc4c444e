//! The CRI daemon (`podctl serve`) driven over its unix socket with a
//! generated tonic client: real registry, real images, real containers,
//! real CNI bridge.

mod common;

use std::time::{Duration, Instant};

use common::{
    block_on, channel, container_config, ok, pull, read_log, registry_and_daemon, run_container,
    run_sandbox, sandbox_config, start_daemon_in, stop_and_remove_sandbox, wait_state, Daemon,
    Driver, Parent,
};
use podctl_cri::proto;
use podctl_cri::proto::image_service_client::ImageServiceClient;
use podctl_cri::proto::runtime_service_client::RuntimeServiceClient;
use podctl_tests::fixtures::Published;

#[test]
fn every_rpc_over_the_socket() {
    let (reg, pubd, daemon) = registry_and_daemon();
    block_on(every_rpc(&pubd, &daemon));
    drop(reg);
}

/// A daemon stopped with SIGTERM removes its socket file and its cgroup
/// parent once no pod is left in it, in every hierarchy.
#[test]
fn a_stopped_daemon_leaves_no_socket_and_no_empty_cgroup_parent() {
    let reg = ok(podctl_tests::registry::Registry::start());
    let pubd = ok(podctl_tests::fixtures::publish(&reg, None));
    let parent = Parent::new(Driver::Cgroupfs);
    let daemon = start_daemon_in(&pubd, &parent);
    block_on(async {
        let ch = channel(&daemon.socket).await;
        let mut rt = RuntimeServiceClient::new(ch.clone());
        pull(&mut ImageServiceClient::new(ch), &pubd.busybox).await;
        let logs = daemon.dir.path().join("stop-logs");
        ok(std::fs::create_dir_all(&logs));
        let sc = sandbox_config("stopper", 0, &logs);
        let sb = run_sandbox(&mut rt, &sc).await;
        let cfg = container_config("c", &pubd.busybox, "sleep 1000");
        run_container(&mut rt, &sb, &sc, cfg).await;
        assert!(
            !parent.left_after_stop().is_empty(),
            "no cgroup parent {} made",
            parent.name
        );
        stop_and_remove_sandbox(&mut rt, sb).await;
    });
    let socket = daemon.socket.clone();
    drop(daemon);
    assert!(!socket.exists(), "{} left behind", socket.display());
    assert_eq!(parent.left_after_stop(), Vec::<std::path::PathBuf>::new());
    drop(reg);
}

async fn every_rpc(pubd: &Published, daemon: &Daemon) {
    let ch = channel(&daemon.socket).await;
    let mut rt = RuntimeServiceClient::new(ch.clone());
    let mut img = ImageServiceClient::new(ch);

    // Version, Status, RuntimeConfig.
    let v = ok(rt.version(proto::VersionRequest::default()).await).into_inner();
    assert_eq!(
        (v.runtime_name.as_str(), v.runtime_api_version.as_str()),
        ("podctl", "v1")
    );
    let st = ok(rt.status(proto::StatusRequest { verbose: true }).await).into_inner();
    let conds = st.status.unwrap_or_default().conditions;
    assert!(
        conds.iter().any(|c| c.r#type == "RuntimeReady" && c.status)
            && conds.iter().any(|c| c.r#type == "NetworkReady" && c.status),
        "{conds:?}"
    );
    assert!(st.info.contains_key("config"));
    let rc = ok(rt.runtime_config(proto::RuntimeConfigRequest {}).await).into_inner();
    assert_eq!(
        rc.linux.unwrap_or_default().cgroup_driver,
        proto::CgroupDriver::Cgroupfs as i32
    );

    // Images: pull through the docker.io mirror and directly.
    let mirrored = "docker.io/library/busybox:latest";
    let pulled = ok(img
        .pull_image(proto::PullImageRequest {
            image: Some(proto::ImageSpec {
                image: mirrored.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await)
    .into_inner();
    assert!(pulled.image_ref.starts_with("sha256:"), "{pulled:?}");
    let bad = img
        .pull_image(proto::PullImageRequest {
            image: Some(proto::ImageSpec {
                image: format!("{}/library/nothere:v1", pubd.host),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    assert!(bad.is_err(), "pulling a missing image must fail");
    pull(&mut img, &pubd.httpd).await;
    let status = ok(img
        .image_status(proto::ImageStatusRequest {
            image: Some(proto::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            verbose: true,
        })
        .await)
    .into_inner();
    let image = status.image.clone().unwrap_or_default();
    assert_eq!(image.id, pulled.image_ref);
    assert!(image.repo_tags.contains(&mirrored.to_string()), "{image:?}");
    assert!(image.size > 0);
    assert!(status.info.contains_key("info"));
    let missing = ok(img
        .image_status(proto::ImageStatusRequest {
            image: Some(proto::ImageSpec {
                image: "nothere:v9".into(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await)
    .into_inner();
    assert!(missing.image.is_none());
    let list = ok(img.list_images(proto::ListImagesRequest::default()).await).into_inner();
    assert_eq!(list.images.len(), 2, "{:?}", list.images);
    let fs = ok(img.image_fs_info(proto::ImageFsInfoRequest {}).await).into_inner();
    let used = fs.image_filesystems[0].used_bytes.unwrap_or_default().value;
    assert!(used > 1_000_000, "image fs usage {used}");

    // A sandbox; a retried RunPodSandbox returns the same one.
    let logs = daemon.dir.path().join("logs");
    let sc = sandbox_config("web", 0, &logs);
    let run = proto::RunPodSandboxRequest {
        config: Some(sc.clone()),
        runtime_handler: String::new(),
    };
    let sb = ok(rt.run_pod_sandbox(run.clone()).await)
        .into_inner()
        .pod_sandbox_id;
    let again = ok(rt.run_pod_sandbox(run).await)
        .into_inner()
        .pod_sandbox_id;
    assert_eq!(sb, again);
    let bad_handler = rt
        .run_pod_sandbox(proto::RunPodSandboxRequest {
            config: Some(sandbox_config("other", 0, &logs)),
            runtime_handler: "kata".into(),
        })
        .await;
    assert_eq!(
        bad_handler.err().map(|e| e.code()),
        Some(tonic::Code::InvalidArgument)
    );
    let sst = ok(rt
        .pod_sandbox_status(proto::PodSandboxStatusRequest {
            pod_sandbox_id: sb.clone(),
            verbose: true,
        })
        .await)
    .into_inner();
    let s = sst.status.clone().unwrap_or_default();
    assert_eq!(s.state, proto::PodSandboxState::SandboxReady as i32);
    let ip = s.network.clone().unwrap_or_default().ip;
    assert!(ip.starts_with(&daemon.subnet), "pod ip {ip}");
    assert_eq!(s.labels.get("app").map(String::as_str), Some("web"));
    assert!(sst.info.contains_key("info"));
    let listed = ok(rt
        .list_pod_sandbox(proto::ListPodSandboxRequest {
            filter: Some(proto::PodSandboxFilter {
                label_selector: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
        })
        .await)
    .into_inner()
    .items;
    assert_eq!(
        listed.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        vec![sb.clone()]
    );
    let none = ok(rt
        .list_pod_sandbox(proto::ListPodSandboxRequest {
            filter: Some(proto::PodSandboxFilter {
                label_selector: [("app".to_string(), "nope".to_string())].into(),
                ..Default::default()
            }),
        })
        .await)
    .into_inner()
    .items;
    assert!(none.is_empty());

    // A container: created (retry returns the same), started, logs.
    let cc = container_config(
        "main",
        "busybox",
        "echo $GREETING; echo oops >&2; cat /etc/resolv.conf; exec sleep 1000",
    );
    let create = proto::CreateContainerRequest {
        pod_sandbox_id: sb.clone(),
        config: Some(cc.clone()),
        sandbox_config: Some(sc.clone()),
    };
    let c = ok(rt.create_container(create.clone()).await)
        .into_inner()
        .container_id;
    let c2 = ok(rt.create_container(create).await)
        .into_inner()
        .container_id;
    assert_eq!(c, c2);
    let mut events = ok(rt.get_container_events(proto::GetEventsRequest {}).await).into_inner();
    let st = wait_state(&mut rt, &c, proto::ContainerState::ContainerCreated).await;
    assert_eq!(st.state, proto::ContainerState::ContainerCreated as i32);
    ok(rt
        .start_container(proto::StartContainerRequest {
            container_id: c.clone(),
        })
        .await);
    let ev = ok(tokio::time::timeout(Duration::from_secs(10), events.message()).await);
    let ev = ok(ev).unwrap_or_default();
    assert_eq!(
        (ev.container_id.as_str(), ev.container_event_type),
        (
            c.as_str(),
            proto::ContainerEventType::ContainerStartedEvent as i32
        )
    );
    let st = wait_state(&mut rt, &c, proto::ContainerState::ContainerRunning).await;
    assert_eq!(st.state, proto::ContainerState::ContainerRunning as i32);
    assert_eq!(st.image_id, pulled.image_ref);
    assert!(st.image_ref.contains("@sha256:") || st.image_ref.starts_with("sha256:"));
    let log_path = logs.join("main/0.log").display().to_string();
    assert_eq!(st.log_path, log_path);
    let log = read_log(&log_path, "ndots:5");
    assert!(log.contains(" stdout F hello\n"), "{log}");
    assert!(log.contains(" stderr F oops\n"), "{log}");
    assert!(log.contains("stdout F nameserver 10.96.0.10\n"), "{log}");
    assert!(
        log.contains("stdout F search default.svc.cluster.local\n"),
        "{log}"
    );

    // ExecSync: output, exit code, timeout.
    let ex = ok(rt
        .exec_sync(proto::ExecSyncRequest {
            container_id: c.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "echo out $GREETING; echo err >&2; exit 3".into(),
            ],
            timeout: 10,
        })
        .await)
    .into_inner();
    assert_eq!(
        (ex.stdout.as_slice(), ex.stderr.as_slice(), ex.exit_code),
        (&b"out hello\n"[..], &b"err\n"[..], 3)
    );
    let t0 = Instant::now();
    let ex = ok(rt
        .exec_sync(proto::ExecSyncRequest {
            container_id: c.clone(),
            cmd: vec!["sleep".into(), "30".into()],
            timeout: 1,
        })
        .await)
    .into_inner();
    assert_ne!(ex.exit_code, 0);
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());

    // Lists with filters.
    let by_label = ok(rt
        .list_containers(proto::ListContainersRequest {
            filter: Some(proto::ContainerFilter {
                pod_sandbox_id: sb.clone(),
                label_selector: [("tier".to_string(), "main".to_string())].into(),
                state: Some(proto::ContainerStateValue {
                    state: proto::ContainerState::ContainerRunning as i32,
                }),
                ..Default::default()
            }),
        })
        .await)
    .into_inner()
    .containers;
    assert_eq!(by_label.len(), 1);
    assert_eq!(by_label[0].id, c);
    let exited = ok(rt
        .list_containers(proto::ListContainersRequest {
            filter: Some(proto::ContainerFilter {
                state: Some(proto::ContainerStateValue {
                    state: proto::ContainerState::ContainerExited as i32,
                }),
                ..Default::default()
            }),
        })
        .await)
    .into_inner()
    .containers;
    assert!(exited.is_empty());

    // Stats.
    let cs = ok(rt
        .container_stats(proto::ContainerStatsRequest {
            container_id: c.clone(),
        })
        .await)
    .into_inner()
    .stats
    .unwrap_or_default();
    let mem = cs
        .memory
        .unwrap_or_default()
        .working_set_bytes
        .unwrap_or_default()
        .value;
    assert!(mem > 0, "working set {mem}");
    let all = ok(rt
        .list_container_stats(proto::ListContainerStatsRequest::default())
        .await)
    .into_inner()
    .stats;
    assert_eq!(all.len(), 1);
    let ps = ok(rt
        .pod_sandbox_stats(proto::PodSandboxStatsRequest {
            pod_sandbox_id: sb.clone(),
        })
        .await)
    .into_inner()
    .stats
    .unwrap_or_default();
    let lin = ps.linux.unwrap_or_default();
    assert_eq!(lin.containers.len(), 1);
    assert!(lin.network.unwrap_or_default().default_interface.is_some());
    let lps = ok(rt
        .list_pod_sandbox_stats(proto::ListPodSandboxStatsRequest::default())
        .await)
    .into_inner()
    .stats;
    assert_eq!(lps.len(), 1);

    // UpdateContainerResources reaches the cgroup.
    ok(rt
        .update_container_resources(proto::UpdateContainerResourcesRequest {
            container_id: c.clone(),
            linux: Some(proto::LinuxContainerResources {
                memory_limit_in_bytes: 96 << 20,
                cpu_quota: 20_000,
                cpu_period: 100_000,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await);
    let cg = format!("podctl-cri-test/{sb}/{c}");
    let limit =
        std::fs::read_to_string(format!("/sys/fs/cgroup/memory/{cg}/memory.limit_in_bytes"))
            .or_else(|_| std::fs::read_to_string(format!("/sys/fs/cgroup/{cg}/memory.max")));
    assert_eq!(ok(limit).trim(), (96u64 << 20).to_string());
    let st = wait_state(&mut rt, &c, proto::ContainerState::ContainerRunning).await;
    let res = st.resources.and_then(|r| r.linux).unwrap_or_default();
    assert_eq!(res.memory_limit_in_bytes, 96 << 20);

    // ReopenContainerLog after rotation: new output lands in a new file.
    let rotated = format!("{log_path}.1");
    ok(std::fs::rename(&log_path, &rotated));
    ok(rt
        .reopen_container_log(proto::ReopenContainerLogRequest {
            container_id: c.clone(),
        })
        .await);
    ok(rt
        .exec_sync(proto::ExecSyncRequest {
            container_id: c.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "echo after-rotate > /proc/1/fd/1".into(),
            ],
            timeout: 10,
        })
        .await);
    let fresh = read_log(&log_path, "after-rotate");
    assert!(fresh.contains("stdout F after-rotate\n"), "{fresh}");
    assert!(!ok(std::fs::read_to_string(&rotated)).contains("after-rotate"));

    // Stop with a grace period: `sleep` as PID 1 of its namespace ignores
    // SIGTERM, so SIGKILL comes after the 5 s grace period.
    let t0 = Instant::now();
    ok(rt
        .stop_container(proto::StopContainerRequest {
            container_id: c.clone(),
            timeout: 5,
        })
        .await);
    let st = wait_state(&mut rt, &c, proto::ContainerState::ContainerExited).await;
    assert_eq!(st.state, proto::ContainerState::ContainerExited as i32);
    assert_eq!(st.exit_code, 137, "{st:?}");
    assert!(
        t0.elapsed() >= Duration::from_millis(4900),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(st.reason, "Error");
    assert!(st.finished_at >= st.started_at && st.started_at > 0);
    ok(rt
        .stop_container(proto::StopContainerRequest {
            container_id: c.clone(),
            timeout: 0,
        })
        .await);

    // An exiting container: Completed with code 0.
    let done = ok(rt
        .create_container(proto::CreateContainerRequest {
            pod_sandbox_id: sb.clone(),
            config: Some(container_config("once", "busybox", "exit 0")),
            sandbox_config: Some(sc.clone()),
        })
        .await)
    .into_inner()
    .container_id;
    ok(rt
        .start_container(proto::StartContainerRequest {
            container_id: done.clone(),
        })
        .await);
    let st = wait_state(&mut rt, &done, proto::ContainerState::ContainerExited).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (0, "Completed"));

    // Remove is idempotent; a removed container is NotFound.
    for _ in 0..2 {
        ok(rt
            .remove_container(proto::RemoveContainerRequest {
                container_id: c.clone(),
            })
            .await);
    }
    let gone = rt
        .container_status(proto::ContainerStatusRequest {
            container_id: c.clone(),
            verbose: false,
        })
        .await;
    assert_eq!(gone.err().map(|e| e.code()), Some(tonic::Code::NotFound));

    // Stop and remove the sandbox (twice each).
    for _ in 0..2 {
        ok(rt
            .stop_pod_sandbox(proto::StopPodSandboxRequest {
                pod_sandbox_id: sb.clone(),
            })
            .await);
    }
    let s = ok(rt
        .pod_sandbox_status(proto::PodSandboxStatusRequest {
            pod_sandbox_id: sb.clone(),
            verbose: false,
        })
        .await)
    .into_inner()
    .status
    .unwrap_or_default();
    assert_eq!(s.state, proto::PodSandboxState::SandboxNotready as i32);
    for _ in 0..2 {
        ok(rt
            .remove_pod_sandbox(proto::RemovePodSandboxRequest {
                pod_sandbox_id: sb.clone(),
            })
            .await);
    }
    let left = ok(rt
        .list_containers(proto::ListContainersRequest::default())
        .await)
    .into_inner()
    .containers;
    assert!(left.is_empty(), "{left:?}");
    assert!(ok(rt
        .list_pod_sandbox(proto::ListPodSandboxRequest::default())
        .await)
    .into_inner()
    .items
    .is_empty());

    // RemoveImage, twice.
    for _ in 0..2 {
        ok(img
            .remove_image(proto::RemoveImageRequest {
                image: Some(proto::ImageSpec {
                    image: mirrored.into(),
                    ..Default::default()
                }),
            })
            .await);
    }
    let list = ok(img.list_images(proto::ListImagesRequest::default()).await).into_inner();
    assert_eq!(list.images.len(), 1);
}
