//! Pods across a real reboot of a systemd node, in the VM of `tests/vm`
//! (`tests/vm/suite.sh` runs this test once per boot: `PODCTL_VM_BOOT` 1,
//! then, after the guest rebooted with its disk, 2). Each check prints a
//! `check:` line.
//!
//! Boot 1: the package installed (podctl.service and podctl-restore.service
//! enabled); `podctl run` of a pod with restartPolicy Always and one with
//! Never; a pod through the daemon's CRI socket, as a kubelet makes it.
//!
//! Boot 2: podctl-restore.service brought the Always pod back (same UID,
//! its emptyDir kept, under a new supervisor unit), not the Never one; the
//! daemon lists none of the client's pods (its state went with /run) but still has the image
//! (the registry went with boot 1), and the client makes its pod again as
//! the kubelet does; the dead containers' writable layers are collected.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::node::{check, is, journal, sh, wait_until};
use common::{channel, container_config, ok, pull, run_container, run_sandbox, sandbox_config};
use podctl_cri::proto;
use podctl_cri::proto::image_service_client::ImageServiceClient;
use podctl_cri::proto::runtime_service_client::RuntimeServiceClient;
use podctl_tests::fixtures::publish;
use podctl_tests::registry::Registry;
use serde::{Deserialize, Serialize};

const SOCKET: &str = "/run/podctl/podctl.sock";
const RESTORE: &str = "podctl-restore.service";
/// What boot 1 leaves for boot 2, on the guest's disk.
const NOTES: &str = "/var/tmp/podctl-reboot-test.json";
const LAYERS: &str = "/var/lib/podctl/containers";

#[derive(Serialize, Deserialize)]
struct Notes {
    image: String,
    uid: String,
    layers: Vec<String>,
}

fn layers() -> Vec<String> {
    podctl_tests::names_in(Path::new(LAYERS))
}

/// `podctl pods -o json` items by name: (phase, uid).
fn pods() -> Vec<(String, String, String)> {
    let out = sh("podctl", &["pods", "-o", "json"]);
    let v: serde_json::Value = ok(serde_json::from_str(&out));
    v["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
            (
                s(&p["metadata"]["name"]),
                s(&p["status"]["phase"]),
                s(&p["metadata"]["uid"]),
            )
        })
        .collect()
}

fn exec(pod: &str, cmd: &[&str]) -> String {
    let mut args = vec!["exec", pod, "--"];
    args.extend(cmd);
    let out = ok(Command::new("podctl").args(&args).output());
    assert!(
        out.status.success(),
        "podctl {args:?}: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        diagnose(pod)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What the node knows of a standalone pod: its status, events and its
/// supervisor's log (for a failure message).
fn diagnose(pod: &str) -> String {
    let dir = format!("/run/podctl/pods/default_{pod}");
    let status = Command::new("podctl")
        .args(["pods", "-o", "yaml"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let file = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).unwrap_or_default();
    format!(
        "--- podctl pods -o yaml\n{status}\n--- {dir}/events.jsonl\n{}\n--- {dir}/supervisor.log\n{}",
        file("events.jsonl"),
        file("supervisor.log")
    )
}

fn logs_dir() -> PathBuf {
    PathBuf::from("/var/log/pods/default_crip_uid-crip")
}

async fn clients() -> (
    RuntimeServiceClient<tonic::transport::Channel>,
    ImageServiceClient<tonic::transport::Channel>,
) {
    let ch = channel(Path::new(SOCKET)).await;
    (
        RuntimeServiceClient::new(ch.clone()),
        ImageServiceClient::new(ch),
    )
}

/// The client's pod: a sandbox and one running container; their IDs.
async fn cri_pod(image: &str) -> (String, String) {
    let (mut rt, _) = clients().await;
    let cfg = sandbox_config("crip", 0, &logs_dir());
    let sb = run_sandbox(&mut rt, &cfg).await;
    let c = run_container(
        &mut rt,
        &sb,
        &cfg,
        container_config("app", image, "sleep 3600"),
    )
    .await;
    (sb, c)
}

const MANIFEST: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: survivor}\nspec:\n  \
    terminationGracePeriodSeconds: 2\n  containers:\n  - name: app\n    image: IMAGE\n    imagePullPolicy: IfNotPresent\n    \
    command: [sh, -c, 'echo up >> /data/boots; exec sleep 3600']\n    \
    volumeMounts: [{name: data, mountPath: /data}]\n  volumes: [{name: data, emptyDir: {}}]\n\
    ---\napiVersion: v1\nkind: Pod\nmetadata: {name: once}\nspec:\n  restartPolicy: Never\n  \
    containers:\n  - name: app\n    image: IMAGE\n    imagePullPolicy: IfNotPresent\n    \
    command: [sleep, '3600']\n";

fn before_reboot() {
    let deb = std::env::var("PODCTL_DEB").unwrap_or_default();
    assert!(
        Path::new(&deb).is_file(),
        "PODCTL_DEB must name the package: {deb:?}"
    );
    sh("dpkg", &["-i", &deb]);
    assert_eq!(is("is-enabled", RESTORE), "enabled");
    assert_eq!(is("is-enabled", "podctl.service"), "enabled");
    wait_until("podctl.service to be active", || {
        is("is-active", "podctl.service") == "active"
    });
    check("the package enables podctl-restore.service beside podctl.service");

    let reg = ok(Registry::start());
    let pubd = ok(publish(&reg, None));
    let file = "/var/tmp/podctl-reboot-pods.yaml";
    ok(std::fs::write(
        file,
        MANIFEST.replace("IMAGE", &pubd.busybox),
    ));
    let out = sh("podctl", &["run", file]);
    assert!(
        out.contains("pod/survivor Running") && out.contains("pod/once Running"),
        "{out}"
    );
    assert_eq!(exec("survivor", &["cat", "/data/boots"]), "up");
    let uid = pods()
        .into_iter()
        .find(|p| p.0 == "survivor")
        .map(|p| p.2)
        .unwrap_or_default();
    check("podctl run: a pod with restartPolicy Always and one with Never run");

    common::block_on(async {
        let (_, mut img) = clients().await;
        pull(&mut img, &pubd.busybox).await;
        cri_pod(&pubd.busybox).await
    });
    check("a client's pod runs through the daemon's socket");

    let notes = Notes {
        image: pubd.busybox.clone(),
        uid,
        layers: layers(),
    };
    assert_eq!(notes.layers.len(), 3, "{:?}", notes.layers);
    ok(std::fs::write(NOTES, ok(serde_json::to_vec(&notes))));
    sh("sync", &[]);
    drop(reg);
}

fn after_reboot() {
    let notes: Notes = ok(serde_json::from_slice(&ok(std::fs::read(NOTES))));
    wait_until("podctl-restore.service to finish", || {
        is("is-active", RESTORE) == "active"
    });
    let log = journal(RESTORE);
    assert!(
        log.contains("pod/default/survivor restored (Running)"),
        "{log}"
    );
    assert!(!log.contains("once"), "{log}");
    check("after the reboot podctl-restore.service started the Always pod, not the Never one");
    let listed = pods();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (
            listed[0].0.as_str(),
            listed[0].1.as_str(),
            listed[0].2.as_str()
        ),
        ("survivor", "Running", notes.uid.as_str())
    );
    assert_eq!(exec("survivor", &["cat", "/data/boots"]), "up\nup");
    let units = sh(
        "systemctl",
        &[
            "list-units",
            "--no-legend",
            "--state=active",
            "podctl-pod-default_survivor-*",
        ],
    );
    assert_eq!(units.lines().count(), 1, "{units}");
    check("the pod runs under its UID with its emptyDir kept, supervised by a systemd unit");

    common::block_on(async {
        let (mut rt, mut img) = clients().await;
        let listed = ok(rt
            .list_pod_sandbox(proto::ListPodSandboxRequest::default())
            .await)
        .into_inner()
        .items;
        // The standalone pod shares the state: only its sandbox is there.
        let names: Vec<String> = listed
            .iter()
            .filter_map(|s| s.metadata.as_ref().map(|m| m.name.clone()))
            .collect();
        assert_eq!(names, ["survivor"], "{listed:?}");
        let st = ok(img
            .image_status(proto::ImageStatusRequest {
                image: Some(proto::ImageSpec {
                    image: notes.image.clone(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await)
        .into_inner();
        assert!(st.image.is_some(), "the image is gone after the reboot");
        let (_, c) = cri_pod(&notes.image).await;
        let out = ok(rt
            .exec_sync(proto::ExecSyncRequest {
                container_id: c,
                cmd: vec!["echo".into(), "back".into()],
                timeout: 30,
            })
            .await)
        .into_inner();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "back\n");
    });
    check("the daemon lists none of the client's pods, keeps the image, and runs the client's pod made again");

    let now = layers();
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(
        now.iter().all(|l| !notes.layers.contains(l)),
        "before {:?}, now {now:?}",
        notes.layers
    );
    check("the writable layers of the containers the reboot ended are collected");

    sh("podctl", &["rm", "survivor"]);
    assert!(!Path::new("/var/lib/podctl/boot/default_survivor.json").exists());
    let status = ok(Command::new("podctl").arg("restore").output());
    assert!(status.status.success() && status.stdout.is_empty());
    check("podctl rm forgets the pod: restore has nothing to start");
}

#[test]
#[ignore = "reboots the machine: runs in the VM (tests/vm/suite.sh), once per boot"]
fn pods_come_back_after_a_reboot() {
    match std::env::var("PODCTL_VM_BOOT").as_deref() {
        Ok("1") => before_reboot(),
        Ok("2") => after_reboot(),
        other => panic!("PODCTL_VM_BOOT must be 1 or 2, not {other:?}"),
    }
}
