//! Image volumes over the CRI socket: a container gets other images'
//! root filesystems (or a directory inside one) read-only at mount
//! points, with their layers stacked as the image defines them; what
//! the kubelet cannot use is refused; removal leaves no mount behind.

mod common;

use common::{
    block_on, channel, container_config, exec_sh, ok, pull, registry_and_daemon, run_sandbox,
    sandbox_config, wait_state, Daemon,
};
use podctl_cri::proto;
use podctl_cri::proto::image_service_client::ImageServiceClient;
use podctl_cri::proto::runtime_service_client::RuntimeServiceClient;
use podctl_tests::fixtures::Published;

#[test]
fn image_volumes_mount_read_only_and_go_away_with_the_container() {
    let (reg, pubd, daemon) = registry_and_daemon();
    block_on(run(&pubd, &daemon));
    drop(reg);
}

fn volume(path: &str, image_id: &str, user: &str, sub: &str) -> proto::Mount {
    proto::Mount {
        container_path: path.into(),
        readonly: true,
        image: Some(proto::ImageSpec {
            image: image_id.into(),
            user_specified_image: user.into(),
            ..Default::default()
        }),
        image_sub_path: sub.into(),
        ..Default::default()
    }
}

/// Image-volume overlays the daemon has mounted (from /proc/self/mountinfo).
fn volume_mounts(daemon: &Daemon) -> Vec<String> {
    podctl_tests::mounts_under(&daemon.dir.path().join("root").join("image-volumes"))
}

async fn run(pubd: &Published, daemon: &Daemon) {
    let ch = channel(&daemon.socket).await;
    let mut rt = RuntimeServiceClient::new(ch.clone());
    let mut img = ImageServiceClient::new(ch);
    let busybox = pull(&mut img, &pubd.busybox).await;
    let layered = pull(&mut img, &pubd.layered).await;
    let single = pull(&mut img, &pubd.multiarch).await;

    let logs = daemon.dir.path().join("logs");
    let pod = sandbox_config("imgvol", 0, &logs);
    let sb = run_sandbox(&mut rt, &pod).await;

    let create = |name: &str, mounts: Vec<proto::Mount>| {
        let mut c = container_config(name, &busybox, "sleep 3600");
        c.mounts = mounts;
        proto::CreateContainerRequest {
            pod_sandbox_id: sb.clone(),
            config: Some(c),
            sandbox_config: Some(pod.clone()),
        }
    };

    // Refusals: a writable image volume, a sub path the image lacks, one
    // that climbs out of it. Nothing stays mounted after them.
    let mut rw = volume("/mnt/vol", &layered, &pubd.layered, "");
    rw.readonly = false;
    for (what, m) in [
        ("writable", rw),
        (
            "missing-sub-path",
            volume("/mnt/vol", &layered, "", "not-there"),
        ),
        (
            "escaping-sub-path",
            volume("/mnt/vol", &layered, "", "../.."),
        ),
    ] {
        let e = rt
            .create_container(create(what, vec![m]))
            .await
            .err()
            .unwrap_or_else(|| panic!("{what}: CreateContainer succeeded"));
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{what}: {e}");
    }
    assert_eq!(volume_mounts(daemon), Vec::<String>::new());

    let c = ok(rt
        .create_container(create(
            "reader",
            vec![
                volume("/mnt/vol", &layered, &pubd.layered, ""),
                volume("/mnt/sub", &layered, &pubd.layered, "dir/sub"),
                volume("/mnt/one", &single, &pubd.multiarch, ""),
            ],
        ))
        .await)
    .into_inner()
    .container_id;
    assert_eq!(
        volume_mounts(daemon).len(),
        3,
        "{:?}",
        volume_mounts(daemon)
    );

    // ContainerStatus reports each volume's image and what it resolved to.
    let st = ok(rt
        .container_status(proto::ContainerStatusRequest {
            container_id: c.clone(),
            verbose: false,
        })
        .await)
    .into_inner()
    .status
    .unwrap_or_default();
    let reported: Vec<_> = st
        .mounts
        .iter()
        .map(|m| {
            let i = m.image.clone().unwrap_or_default();
            (
                m.container_path.as_str(),
                i.image_ref,
                i.user_specified_image,
                m.image_sub_path.as_str(),
                m.host_path.as_str(),
            )
        })
        .collect();
    assert_eq!(
        reported,
        vec![
            ("/mnt/vol", layered.clone(), pubd.layered.clone(), "", ""),
            (
                "/mnt/sub",
                layered.clone(),
                pubd.layered.clone(),
                "dir/sub",
                ""
            ),
            ("/mnt/one", single.clone(), pubd.multiarch.clone(), "", ""),
        ]
    );
    assert_eq!(
        st.image.unwrap_or_default().image_ref,
        busybox,
        "the container's own image spec carries its image ID"
    );

    ok(rt
        .start_container(proto::StartContainerRequest {
            container_id: c.clone(),
        })
        .await);
    wait_state(&mut rt, &c, proto::ContainerState::ContainerRunning).await;

    // The layers are stacked with their whiteouts and opaque directories.
    let (code, out) = exec_sh(&mut rt,
        &c,
        "cat /mnt/vol/replaced /mnt/vol/a/keep /mnt/vol/dir/sub/fresh /mnt/sub/fresh /mnt/one/arch; \
         ls /mnt/vol/doomed /mnt/vol/a/gone /mnt/vol/dir/old1 /mnt/sub/old2 2>/dev/null; \
         ls /mnt/sub",
    )
    .await;
    assert_eq!(
        (code, out.as_str()),
        (0, "second\nkeep\nfresh\nfresh\namd64\nfresh\n"),
    );
    // Read-only: no writes, no new files, whether at the root or below.
    for target in [
        "/mnt/vol/new",
        "/mnt/vol/a/keep",
        "/mnt/sub/fresh",
        "/mnt/one/x",
    ] {
        let (code, out) = exec_sh(&mut rt, &c, &format!("echo x > {target}")).await;
        assert_ne!(code, 0, "writing {target} succeeded: {out}");
        assert!(out.contains("Read-only file system"), "{target}: {out}");
    }
    let (code, out) = exec_sh(&mut rt, &c, "grep ' /mnt/vol ' /proc/mounts").await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.split_whitespace()
            .nth(3)
            .is_some_and(|o| o.split(',').any(|f| f == "ro")),
        "{out}"
    );
    // The container's own root stays writable.
    assert_eq!(
        exec_sh(&mut rt, &c, "echo ok > /tmp/f && cat /tmp/f").await,
        (0, "ok\n".into())
    );

    // Removal undoes the mounts; so does removing a sandbox with such a
    // container still in it.
    ok(rt
        .remove_container(proto::RemoveContainerRequest {
            container_id: c.clone(),
        })
        .await);
    assert_eq!(volume_mounts(daemon), Vec::<String>::new());
    let leftover = ok(rt
        .create_container(create("leftover", vec![volume("/v", &single, "", "")]))
        .await)
    .into_inner()
    .container_id;
    assert!(!leftover.is_empty());
    assert_eq!(volume_mounts(daemon).len(), 1);
    ok(rt
        .stop_pod_sandbox(proto::StopPodSandboxRequest {
            pod_sandbox_id: sb.clone(),
        })
        .await);
    ok(rt
        .remove_pod_sandbox(proto::RemovePodSandboxRequest {
            pod_sandbox_id: sb.clone(),
        })
        .await);
    assert_eq!(volume_mounts(daemon), Vec::<String>::new());
    let dir = daemon.dir.path().join("root").join("image-volumes");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != ".empty")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
