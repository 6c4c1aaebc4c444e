//! Image volumes (`volumes[].image`) through `podctl run`: an image's
//! files mounted read-only into a container, whole or by subPath (the
//! CRI's `Mount.image` and `image_sub_path`), pulled by the volume's own
//! pull policy; a volume whose image cannot be pulled fails the run with the
//! pull's reason (ErrImagePull), as `podctl run` reports any pod that
//! cannot start.

mod common;

use common::podenv::{setup, Env};

fn pod(name: &str, busybox: &str, volume_image: &str, policy: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {busybox}
    command: [sleep, '1000']
    volumeMounts:
    - {{name: tree, mountPath: /tree}}
    - {{name: tree, mountPath: /sub, subPath: dir}}
  volumes:
  - name: tree
    image: {{reference: "{volume_image}", pullPolicy: {policy}}}
"#
    )
}

#[test]
fn an_image_volume_mounts_the_image_read_only_whole_and_by_sub_path() {
    let (reg, pubd) = setup();
    let env = Env::new(31);
    // The image is not on the node yet: the volume's pull brings it.
    env.run(
        "imgvol",
        &pod("imgvol", &pubd.busybox, &pubd.layered, "IfNotPresent"),
    );
    let sh = |cmd: &str| env.podctl(&["exec", "imgvol", "--", "sh", "-c", cmd]);
    let (ok, out, err) = sh("cat /tree/replaced /tree/a/keep /sub/new; ls /sub");
    assert!(ok, "{out}{err}");
    // The layers applied: the upper 'replaced', whiteouts and the opaque
    // directory honoured.
    assert_eq!(out, "second\nkeep\nnew\nnew\nsub\n", "{err}");
    let (ok, out, _) =
        sh("test -e /tree/a/gone || test -e /tree/doomed || test -e /sub/old1; echo $?");
    assert!(ok);
    assert_eq!(out.trim(), "1", "whited-out files are visible");
    let (_, out, _) = sh("touch /tree/new 2>&1; echo rc=$?; touch /sub/x 2>&1; echo rc=$?");
    assert!(
        out.contains("Read-only file system") && !out.contains("rc=0"),
        "an image volume is writable: {out}"
    );
    let (ok, events, _) = env.podctl(&["pods", "-o", "json"]);
    assert!(ok);
    assert!(events.contains("Running"), "{events}");
    let (ok, out, err) = env.podctl(&["rm", "--timeout", "0", "imgvol"]);
    assert!(ok, "{out}{err}");
    drop(reg);
}

#[test]
fn an_image_volume_that_cannot_be_pulled_fails_the_run_with_err_image_pull() {
    let (reg, pubd) = setup();
    let env = Env::new(32);
    let missing = format!("{}/library/no-such-image:1", pubd.host);
    let f = env.dir.path().join("missing.yaml");
    std::fs::write(&f, pod("novol", &pubd.busybox, &missing, "IfNotPresent"))
        .unwrap_or_else(|e| panic!("{e}"));
    let (ok, out, err) = env.podctl(&["run", &f.display().to_string()]);
    assert!(!ok, "a pod with a missing volume image ran: {out}");
    assert!(
        err.contains("container app: ErrImagePull") && err.contains("no-such-image"),
        "{err}"
    );
    // Nothing left behind.
    let (_, pods, _) = env.podctl(&["pods"]);
    assert_eq!(pods.lines().count(), 1, "{pods}");
    drop(reg);
}
