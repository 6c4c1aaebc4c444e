//! Crash consistency of PullImage: `podctl serve` dies (a SIGKILL it
//! sends itself, `PODCTL_CRASH_AT`, see podctl_images::failpoint) while a
//! layer is half downloaded and half unpacked, and again when every layer
//! is committed but the image not yet recorded. A restarted daemon removes
//! the half-unpacked snapshot, does not list the image, and a pull asked
//! again completes it, leaving no partial
//! file behind.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{channel, entries, ok, registry_and_daemon, Daemon};
use podctl_cri::proto;
use podctl_cri::proto::image_service_client::ImageServiceClient;

fn images(daemon: &Daemon) -> PathBuf {
    daemon.dir.path().join("root/images")
}

/// Names in `dir` that end with `suffix` or start with `prefix`.
fn named(dir: &Path, prefix: &str, suffix: &str) -> Vec<String> {
    entries(dir)
        .into_iter()
        .filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
        .filter(|n| n.starts_with(prefix) && n.ends_with(suffix))
        .collect()
}

async fn pull(socket: &Path, image: &str) -> Result<String, tonic::Status> {
    let mut img = ImageServiceClient::new(channel(socket).await);
    let r = img
        .pull_image(proto::PullImageRequest {
            image: Some(proto::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?;
    Ok(r.into_inner().image_ref)
}

async fn known(socket: &Path, image: &str) -> bool {
    let mut img = ImageServiceClient::new(channel(socket).await);
    ok(img
        .image_status(proto::ImageStatusRequest {
            image: Some(proto::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await)
    .into_inner()
    .image
    .is_some()
}

/// Pull `image` on a daemon set to die at `point`; returns once it died.
fn pull_and_die(daemon: &mut Daemon, point: &str, image: &str) {
    daemon.respawn(&[("PODCTL_CRASH_AT", point)]);
    let r = common::block_on(pull(&daemon.socket, image));
    assert!(r.is_err(), "{point}: the pull answered {r:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while ok(daemon.child.try_wait()).is_none() {
        assert!(
            Instant::now() < deadline,
            "{point}: the daemon did not die: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An image whose one layer (8 MiB of noise, not compressed) reaches the
/// daemon in many chunks, pushed to `reg`; its reference.
fn large_image(reg: &podctl_tests::registry::Registry) -> String {
    use podctl_tests::oci::{image, Compression, ImageSpec, LayerBuilder};
    let layer = LayerBuilder::new()
        .file("noise", 0o644, &podctl_tests::fixtures::noise(7, 8 << 20))
        .finish(Compression::None);
    let img = image(vec![layer], &ImageSpec::default());
    ok(podctl_tests::push::push_image(
        &reg.url(),
        "crash/large",
        "v1",
        &img,
        None,
    ));
    format!("{}/crash/large:v1", reg.host())
}

#[test]
fn a_pull_cut_at_each_crash_point_is_finished_when_asked_again() {
    let (reg, _pubd, mut daemon) = registry_and_daemon();
    let image = large_image(&reg);
    let root = images(&daemon);
    let mut covered = 0;

    pull_and_die(&mut daemon, "pull.layer_partial", &image);
    let partial = named(&root.join("ingest"), "", ".partial");
    assert_eq!(partial.len(), 1, "one layer was cut: {partial:?}");
    assert_eq!(named(&root.join("snapshots"), ".tmp-", "").len(), 1);
    daemon.respawn(&[]);
    assert_eq!(
        named(&root.join("snapshots"), ".tmp-", ""),
        Vec::<String>::new(),
        "the half-unpacked snapshot is collected at start"
    );
    assert!(!common::block_on(known(&daemon.socket, &image)));
    ok(common::block_on(pull(&daemon.socket, &image)));
    assert!(common::block_on(known(&daemon.socket, &image)));
    assert_eq!(
        named(&root.join("ingest"), "", ".partial"),
        Vec::<String>::new()
    );
    covered += 1;

    common::block_on(async {
        let mut img = ImageServiceClient::new(channel(&daemon.socket).await);
        ok(img
            .remove_image(proto::RemoveImageRequest {
                image: Some(proto::ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
            })
            .await)
    });
    pull_and_die(&mut daemon, "pull.layers_committed", &image);
    daemon.respawn(&[]);
    assert!(
        !common::block_on(known(&daemon.socket, &image)),
        "an image whose record was never written is not listed"
    );
    ok(common::block_on(pull(&daemon.socket, &image)));
    assert!(common::block_on(known(&daemon.socket, &image)));
    assert_eq!(
        named(&root.join("snapshots"), ".tmp-", ""),
        Vec::<String>::new()
    );
    covered += 1;
    println!("crash points covered: {covered} (pull.layer_partial, pull.layers_committed)");
}
