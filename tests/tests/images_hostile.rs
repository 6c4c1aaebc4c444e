//! Hostile registries and layers: every case fails with an error naming the
//! image and the entry, writes nothing outside the store and leaves no
//! snapshot visible.

mod common;

use std::path::{Path, PathBuf};

use common::{pull, puller};
use podctl_images::unpack::UnpackOptions;
use podctl_images::{ImageError, RegistryConfig};
use podctl_tests::oci::{image, Compression, ImageSpec, Layer, LayerBuilder};
use podctl_tests::push::Pusher;
use podctl_tests::registry::Registry;
use tar::EntryType;

struct Case {
    reg: Registry,
    dir: tempfile::TempDir,
    reference: String,
}

fn publish(name: &str, layers: Vec<Layer>) -> Case {
    let reg = Registry::start().unwrap_or_else(|e| panic!("{e}"));
    let img = image(layers, &ImageSpec::default());
    let mut p = Pusher::new(&reg.url(), None);
    p.image(&format!("hostile/{name}"), "v1", &img)
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    Case {
        reference: format!("{}/hostile/{name}:v1", reg.host()),
        reg,
        dir,
    }
}

fn benign() -> LayerBuilder {
    LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/ok", 0o644, b"ok\n")
}

/// Nothing is visible in the store after a refused pull.
fn assert_nothing_committed(root: &Path) {
    let snaps = common::tree(&root.join("snapshots"));
    assert!(snaps.is_empty(), "snapshots left: {snaps:?}");
    let images = podctl_images::Store::open(root)
        .and_then(|s| s.list())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(images.is_empty());
}

fn expect_hostile(case: &Case, entry: &str, reason_part: &str) {
    let p = puller(case.dir.path(), RegistryConfig::default());
    let err = match pull(&p, &case.reference) {
        Ok(_) => panic!("{} was accepted", case.reference),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(matches!(err, ImageError::HostileEntry { .. }), "{msg}");
    assert!(msg.contains(&case.reference), "names the image: {msg}");
    assert!(msg.contains(entry), "names the entry {entry}: {msg}");
    assert!(msg.contains(reason_part), "says why ({reason_part}): {msg}");
    assert_nothing_committed(case.dir.path());
}

fn sentinel(tag: &str) -> PathBuf {
    PathBuf::from(format!("/tmp/podctl-hostile-{tag}-{}", std::process::id()))
}

#[test]
fn dot_dot_entries_are_refused() {
    let target = sentinel("dotdot");
    let name = format!("../../../../../../../..{}", target.display());
    let l = benign()
        .raw(EntryType::Regular, name.as_bytes(), b"", b"pwned\n")
        .finish(Compression::Gzip);
    let case = publish("dotdot", vec![l]);
    expect_hostile(&case, &name, "'..'");
    assert!(!target.exists());
}

#[test]
fn absolute_entries_are_refused() {
    let target = sentinel("abs");
    let name = target.display().to_string();
    let l = benign()
        .raw(EntryType::Regular, name.as_bytes(), b"", b"pwned\n")
        .finish(Compression::Gzip);
    let case = publish("absolute", vec![l]);
    expect_hostile(&case, &name, "absolute path");
    assert!(!target.exists());
}

#[test]
fn writing_through_a_symlink_is_refused() {
    let outside = sentinel("symdir");
    std::fs::create_dir_all(&outside).unwrap_or_else(|e| panic!("{e}"));
    let l = benign()
        .symlink("escape", &outside.display().to_string())
        .file("escape/pwned", 0o644, b"pwned\n")
        .finish(Compression::Gzip);
    let case = publish("symlink-parent", vec![l]);
    expect_hostile(&case, "escape/pwned", "through the symlink escape");
    let left: Vec<_> = std::fs::read_dir(&outside)
        .map(|r| r.count())
        .into_iter()
        .collect();
    let _ = std::fs::remove_dir(&outside);
    assert_eq!(left, vec![0], "nothing was written outside");
}

#[test]
fn relative_symlinks_climbing_out_are_refused() {
    let l = benign()
        .symlink("etc/up", "../../../../etc/shadow")
        .finish(Compression::Gzip);
    let case = publish("symlink-out", vec![l]);
    expect_hostile(&case, "etc/up", "points outside the layer");
}

#[test]
fn hard_links_outside_or_to_missing_targets_are_refused() {
    let l = benign()
        .raw(EntryType::Link, b"etc/hl", b"../../../etc/passwd", b"")
        .finish(Compression::Gzip);
    let case = publish("hardlink-out", vec![l]);
    expect_hostile(&case, "etc/hl", "hard link target: path contains '..'");

    let l = benign()
        .raw(EntryType::Link, b"etc/hl", b"/etc/passwd", b"")
        .finish(Compression::Gzip);
    let case = publish("hardlink-abs", vec![l]);
    expect_hostile(&case, "etc/hl", "hard link target: absolute path");

    let l = benign()
        .hardlink("etc/hl", "etc/missing")
        .finish(Compression::Gzip);
    let case = publish("hardlink-missing", vec![l]);
    expect_hostile(&case, "etc/hl", "is not in this layer");
}

#[test]
fn device_nodes_need_privilege() {
    let l = benign()
        .device("dev-null", EntryType::Char, 1, 3)
        .finish(Compression::Gzip);
    let case = publish("device", vec![l]);
    let mut p = puller(case.dir.path(), RegistryConfig::default());
    p.set_unpack_options(UnpackOptions { privileged: false });
    let err = pull(&p, &case.reference)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("dev-null") && err.contains("device node"),
        "{err}"
    );
    assert!(err.contains(&case.reference), "{err}");
    assert_nothing_committed(case.dir.path());

    // As root the same layer unpacks and the node is real.
    let p = puller(case.dir.path(), RegistryConfig::default());
    let (rec, _) = pull(&p, &case.reference).unwrap_or_else(|e| panic!("{e}"));
    let lowers = p.store().layer_dirs(&rec).unwrap_or_else(|e| panic!("{e}"));
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md =
        std::fs::symlink_metadata(lowers[0].join("dev-null")).unwrap_or_else(|e| panic!("{e}"));
    assert!(md.file_type().is_char_device());
    assert_eq!(md.rdev(), libc::makedev(1, 3));
}

#[test]
fn tampered_blob_is_a_digest_mismatch() {
    let l = benign()
        .file("etc/big", 0o644, &podctl_tests::fixtures::noise(7, 200_000))
        .finish(Compression::Gzip);
    let digest = l.digest.clone();
    let case = publish("tampered", vec![l]);
    // The registry's storage is altered behind its back, as a compromised
    // registry or a bit flip on its disk would do.
    let data = case.reg.blob_data_path(&digest);
    let mut bytes = std::fs::read(&data).unwrap_or_else(|e| panic!("{e}"));
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&data, &bytes).unwrap_or_else(|e| panic!("{e}"));

    let p = puller(case.dir.path(), RegistryConfig::default());
    let err = pull(&p, &case.reference).err();
    let msg = err.as_ref().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        matches!(err, Some(ImageError::DigestMismatch { .. })),
        "{msg}"
    );
    assert!(
        msg.contains(&case.reference) && msg.contains(&digest),
        "{msg}"
    );
    assert_nothing_committed(case.dir.path());
    assert!(!p
        .store()
        .blob_path(&digest.parse().unwrap_or_else(|e| panic!("{e}")))
        .exists());
    assert!(common::tree(&case.dir.path().join("ingest"))
        .iter()
        .all(|f| f.ends_with(".lock")));
}

#[test]
fn truncated_layer_stream_is_refused() {
    let full = benign()
        .file("etc/big", 0o644, &podctl_tests::fixtures::noise(9, 100_000))
        .finish(Compression::Gzip);
    // A blob that is a valid upload (its digest matches) but holds half a gzip stream.
    let half = full.blob[..full.blob.len() / 2].to_vec();
    let l = Layer {
        media_type: full.media_type.clone(),
        digest: podctl_tests::sha256(&half),
        diff_id: full.diff_id.clone(),
        blob: half,
    };
    let case = publish("truncated", vec![l]);
    let p = puller(case.dir.path(), RegistryConfig::default());
    let msg = pull(&p, &case.reference)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        msg.contains(&case.reference) && msg.contains("etc/big"),
        "{msg}"
    );
    assert!(msg.contains("incomplete deflate stream"), "{msg}");
    assert_nothing_committed(case.dir.path());
}

#[test]
fn wrong_diff_id_is_refused() {
    let mut l = benign().finish(Compression::Gzip);
    l.diff_id = podctl_tests::sha256(b"something else");
    let case = publish("diffid", vec![l]);
    let p = puller(case.dir.path(), RegistryConfig::default());
    let msg = pull(&p, &case.reference)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        msg.contains(&case.reference) && msg.contains("the config says"),
        "{msg}"
    );
    assert_nothing_committed(case.dir.path());
}

#[test]
fn oversized_config_is_refused_before_download() {
    let reg = Registry::start().unwrap_or_else(|e| panic!("{e}"));
    let label = "x".repeat(9 << 20);
    let img = image(
        vec![benign().finish(Compression::Gzip)],
        &ImageSpec {
            run: serde_json::json!({"Labels": {"big": label}}),
            ..Default::default()
        },
    );
    let mut p = Pusher::new(&reg.url(), None);
    p.image("hostile/bigconfig", "v1", &img)
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let reference = format!("{}/hostile/bigconfig:v1", reg.host());
    let pl = puller(dir.path(), RegistryConfig::default());
    let err = pull(&pl, &reference).err();
    let msg = err.as_ref().map(|e| e.to_string()).unwrap_or_default();
    assert!(matches!(err, Some(ImageError::TooLarge { .. })), "{msg}");
    assert!(msg.contains("config") && msg.contains(&reference), "{msg}");
    assert_eq!(reg.blob_gets(&img.config_digest), 0, "never fetched");
}

#[test]
fn malformed_manifest_and_unknown_layer_types_are_refused() {
    let reg = Registry::start().unwrap_or_else(|e| panic!("{e}"));
    let mut p = Pusher::new(&reg.url(), None);
    let mut img = image(
        vec![benign().finish(Compression::Gzip)],
        &ImageSpec::default(),
    );
    img.layers[0].media_type = "application/x-podctl-unknown".into();
    let img = image(img.layers, &ImageSpec::default());
    p.image("hostile/mediatype", "v1", &img)
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pl = puller(dir.path(), RegistryConfig::default());
    let reference = format!("{}/hostile/mediatype:v1", reg.host());
    let msg = pull(&pl, &reference)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        msg.contains("unsupported media type") && msg.contains("application/x-podctl-unknown"),
        "{msg}"
    );
}

/// A hostile registry (the real one refuses manifests over 4 MiB on upload)
/// that answers every request with a huge JSON document.
fn serve_huge_manifests(size: usize, chunked: bool) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let host = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut s = stream;
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = format!(
                "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"annotations\":{{\"x\":\"{}\"}}}}",
                "a".repeat(size)
            );
            let head = if chunked {
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n".to_string()
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
            };
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(body.as_bytes());
        }
    });
    host
}

#[test]
fn oversized_manifests_are_refused() {
    for chunked in [false, true] {
        let host = serve_huge_manifests(5 << 20, chunked);
        let reference = format!("{host}/hostile/huge:v1");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = puller(dir.path(), RegistryConfig::default());
        let err = pull(&p, &reference).err();
        let msg = err.as_ref().map(|e| e.to_string()).unwrap_or_default();
        assert!(matches!(err, Some(ImageError::TooLarge { .. })), "{msg}");
        assert!(
            msg.contains("manifest") && msg.contains(&reference) && msg.contains("4194304"),
            "{msg}"
        );
    }
}
