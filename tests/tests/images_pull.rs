//! The image pipeline against a real registry with images built from
//! Debian packages.

mod common;

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use common::{pull, pull_with, puller, rt, tree, Overlay};
use podctl_images::{Credentials, HostConfig, ImageError, Platform, PullOptions, RegistryConfig};
use podctl_tests::fixtures::{self, publish};
use podctl_tests::registry::{Auth, Registry};

fn setup() -> (Registry, fixtures::Published, tempfile::TempDir) {
    let reg = Registry::start().unwrap_or_else(|e| panic!("{e}"));
    let pubd = publish(&reg, None).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    (reg, pubd, dir)
}

#[test]
fn pulls_busybox_and_records_metadata() {
    let (_reg, pubd, dir) = setup();
    let p = puller(dir.path(), RegistryConfig::default());
    let (rec, stats) = pull(&p, &pubd.busybox).unwrap_or_else(|e| panic!("{e}"));
    let img = &pubd.busybox_image;
    assert_eq!(
        rec.id.to_string(),
        img.config_digest,
        "image ID is the config digest"
    );
    assert_eq!(rec.repo_tags, vec![pubd.busybox.clone()]);
    assert_eq!(
        rec.repo_digests,
        vec![format!(
            "{}/library/busybox@{}",
            pubd.host, img.manifest_digest
        )]
    );
    let expected_size: usize =
        img.config.len() + img.layers.iter().map(|l| l.blob.len()).sum::<usize>();
    assert_eq!(rec.size, expected_size as u64);
    assert_eq!(rec.config.cmd, Some(vec!["sh".to_string()]));
    assert_eq!(stats.layers_fetched, 2);
    assert_eq!(
        stats.bytes_downloaded,
        img.layers.iter().map(|l| l.blob.len() as u64).sum::<u64>()
    );

    // Layers are real overlay lower dirs: busybox runs from the merged tree.
    let lowers = p.store().layer_dirs(&rec).unwrap_or_else(|e| panic!("{e}"));
    let merged = dir.path().join("merged");
    let _m = Overlay::mount(&lowers, &merged);
    let sh = std::fs::metadata(merged.join("bin/sh")).unwrap_or_else(|e| panic!("{e}"));
    let bb = std::fs::metadata(merged.join("bin/busybox")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sh.ino(), bb.ino(), "applets are hard links to busybox");
    assert!(sh.nlink() > 100);
    let passwd = std::fs::read_to_string(merged.join("etc/passwd")).unwrap_or_default();
    assert!(passwd.contains("www-data:x:33:33"));
    assert_eq!(
        std::fs::metadata(merged.join("tmp"))
            .map(|m| m.mode() & 0o7777)
            .ok(),
        Some(0o1777)
    );
    let out = std::process::Command::new("chroot")
        .arg(&merged)
        .args(["/bin/sh", "-c", "echo hi from $(basename $0)"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi from sh\n");

    // Status by tag, by ID, by short ID, by digest reference.
    let s = p.store();
    for q in [
        pubd.busybox.clone(),
        rec.id.to_string(),
        rec.id.hex()[..12].to_string(),
        rec.repo_digests[0].clone(),
    ] {
        assert_eq!(
            s.get(&q).map(|r| r.id).ok(),
            Some(rec.id.clone()),
            "lookup {q}"
        );
    }
    let (bytes, inodes) = s.usage();
    assert!(bytes > 1_000_000 && inodes > 100, "usage {bytes} {inodes}");
}

#[test]
fn docker_schema2_zstd_and_user_from_config() {
    let (_reg, pubd, dir) = setup();
    let p = puller(dir.path(), RegistryConfig::default());
    let (d, _) = pull(&p, &pubd.busybox_docker).unwrap_or_else(|e| panic!("{e}"));
    let (z, _) = pull(&p, &pubd.busybox_zstd).unwrap_or_else(|e| panic!("{e}"));
    // Same uncompressed layers: zstd and gzip variants share snapshots.
    let dc: Vec<_> = d.chain_ids().cloned().collect();
    let zc: Vec<_> = z.chain_ids().cloned().collect();
    assert_eq!(dc, zc);
    let (web, stats) = pull(&p, &pubd.httpd).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(web.user(), (None, "www-data".to_string()));
    assert_eq!(web.config.working_dir, "/www");
    // httpd shares busybox's two layers: they were neither fetched nor unpacked again.
    // The Docker variant has the same gzip blobs: only httpd's own layer is new.
    assert_eq!((stats.layers_fetched, stats.layers_cached), (1, 2));
    let lowers = p.store().layer_dirs(&web).unwrap_or_else(|e| panic!("{e}"));
    let index = std::fs::read(lowers[2].join("www/index.html")).unwrap_or_default();
    assert_eq!(index, fixtures::HTTPD_INDEX);
}

#[test]
fn shared_layers_are_unpacked_once() {
    let (reg, pubd, dir) = setup();
    let p = puller(dir.path(), RegistryConfig::default());
    let (bb, _) = pull(&p, &pubd.busybox).unwrap_or_else(|e| panic!("{e}"));
    let first = p.store().snapshot_dir(&bb.layers[1].chain_id);
    let ino = std::fs::metadata(&first).map(|m| m.ino()).unwrap_or(0);
    let (_web, stats) = pull(&p, &pubd.httpd).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.layers_cached, 2);
    assert_eq!(stats.layers_fetched, 1);
    assert_eq!(std::fs::metadata(&first).map(|m| m.ino()).unwrap_or(1), ino);
    for l in &bb.layers {
        assert_eq!(
            reg.blob_gets(&l.digest.to_string()),
            1,
            "layer {} fetched once",
            l.digest
        );
    }
}

#[test]
fn whiteouts_and_opaque_dirs_apply_like_overlayfs() {
    let (_reg, pubd, dir) = setup();
    let p = puller(dir.path(), RegistryConfig::default());
    let (rec, _) = pull(&p, &pubd.layered).unwrap_or_else(|e| panic!("{e}"));
    let lowers = p.store().layer_dirs(&rec).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lowers.len(), 3);
    let merged = dir.path().join("merged");
    let _m = Overlay::mount(&lowers, &merged);
    let want: Vec<String> = fixtures::LAYERED_TREE
        .iter()
        .map(|(p, _)| p.to_string())
        .collect();
    assert_eq!(tree(&merged), want);
    for (path, content) in fixtures::LAYERED_TREE {
        if let Some(c) = content {
            assert_eq!(
                std::fs::read_to_string(merged.join(path)).unwrap_or_default(),
                *c,
                "{path}"
            );
        }
    }
    assert_eq!(
        std::fs::read_link(merged.join("link-to-keep")).ok(),
        Some(std::path::PathBuf::from("a/keep"))
    );
    // The on-disk form is overlayfs': a 0/0 char device and the opaque xattr.
    let wh = std::fs::symlink_metadata(lowers[1].join("a/gone")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(wh.mode() & libc::S_IFMT, libc::S_IFCHR);
    assert_eq!(wh.rdev(), 0);
    let opaque = xattr(&lowers[1].join("dir"), "trusted.overlay.opaque");
    assert_eq!(opaque.as_deref(), Some(&b"y"[..]));
}

fn xattr(path: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0u8; 64];
    // SAFETY: valid NUL-terminated strings and a live buffer of the given length.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

#[test]
fn multiarch_index_resolves_to_the_host_or_requested_platform() {
    let (_reg, pubd, dir) = setup();
    let p = puller(dir.path(), RegistryConfig::default());
    let (rec, _) = pull(&p, &pubd.multiarch).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rec.architecture, "amd64");
    assert_eq!(
        rec.repo_digests[0],
        format!(
            "{}/podctl/multiarch@{}",
            pubd.host, pubd.multiarch_index.digest
        )
    );
    let lowers = p.store().layer_dirs(&rec).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        std::fs::read_to_string(lowers[0].join("arch")).unwrap_or_default(),
        "amd64\n"
    );

    let dir2 = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p2 = puller(dir2.path(), RegistryConfig::default());
    let opts = PullOptions {
        platform: Some(Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: None,
        }),
        ..Default::default()
    };
    let (arm, _) = pull_with(&p2, &pubd.multiarch, &opts).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(arm.architecture, "arm64");
    let lowers = p2
        .store()
        .layer_dirs(&arm)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        std::fs::read_to_string(lowers[0].join("arch")).unwrap_or_default(),
        "arm64\n"
    );

    let opts = PullOptions {
        platform: Some(Platform {
            os: "linux".into(),
            architecture: "s390x".into(),
            variant: None,
        }),
        ..Default::default()
    };
    let err = pull_with(&p2, &pubd.multiarch, &opts).err();
    assert!(
        matches!(err, Some(ImageError::NoMatchingPlatform { .. })),
        "{err:?}"
    );
}

#[test]
fn pull_by_digest_verifies_it() {
    let (_reg, pubd, dir) = setup();
    let p = puller(dir.path(), RegistryConfig::default());
    let by_digest = format!(
        "{}/podctl/layered@{}",
        pubd.host, pubd.layered_image.manifest_digest
    );
    let (rec, _) = pull(&p, &by_digest).unwrap_or_else(|e| panic!("{e}"));
    assert!(rec.repo_tags.is_empty());
    assert_eq!(rec.repo_digests, vec![by_digest]);
    // A digest the tag does not have is refused by the registry: not found.
    let wrong = format!(
        "{}/podctl/layered@{}",
        pubd.host, pubd.busybox_image.manifest_digest
    );
    let err = pull(&p, &wrong).err();
    assert!(
        matches!(err, Some(ImageError::RemoteNotFound { .. })),
        "{err:?}"
    );
}

#[test]
fn basic_and_token_auth() {
    for auth in [
        Auth::Basic {
            user: "alice".into(),
            pass: "s3cret".into(),
        },
        Auth::Token {
            user: "alice".into(),
            pass: "s3cret".into(),
        },
    ] {
        let is_token = matches!(auth, Auth::Token { .. });
        let reg = Registry::start_with(auth).unwrap_or_else(|e| panic!("{e}"));
        let mut pusher = podctl_tests::push::Pusher::new(&reg.url(), Some(("alice", "s3cret")));
        pusher
            .image("podctl/layered", "v1", &fixtures::layered())
            .unwrap_or_else(|e| panic!("{e}"));
        let reference = format!("{}/podctl/layered:v1", reg.host());
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));

        let p = puller(dir.path(), RegistryConfig::default());
        let err = pull(&p, &reference).err();
        assert!(
            matches!(err, Some(ImageError::Unauthorized { .. })),
            "anonymous: {err:?}"
        );

        let bad = PullOptions {
            credentials: Some(Credentials {
                username: "alice".into(),
                password: "nope".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = pull_with(&p, &reference, &bad).err();
        assert!(
            matches!(err, Some(ImageError::Unauthorized { .. })),
            "bad password: {err:?}"
        );

        let before = reg.token_requests();
        let good = PullOptions {
            credentials: Some(Credentials {
                username: "alice".into(),
                password: "s3cret".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (rec, _) = pull_with(&p, &reference, &good).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rec.layers.len(), 3);
        if is_token {
            assert!(reg.token_requests() > before, "bearer token was requested");
        }

        // Credentials from a docker config.json work too.
        let cfg_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let cfg_path = cfg_dir.path().join("config.json");
        let auth = base64_encode("alice:s3cret");
        std::fs::write(
            &cfg_path,
            format!(
                r#"{{"auths":{{"http://{}":{{"auth":"{auth}"}}}}}}"#,
                reg.host()
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut cfg = RegistryConfig::default();
        cfg.load_docker_config(&cfg_path)
            .unwrap_or_else(|e| panic!("{e}"));
        let dir2 = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p2 = puller(dir2.path(), cfg);
        assert!(pull(&p2, &reference).is_ok());
    }
}

fn base64_encode(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn mirrors_serve_docker_io_names_and_dead_mirrors_are_skipped() {
    let (reg, _pubd, dir) = setup();
    let dead = podctl_tests::registry::free_port().unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = RegistryConfig::default();
    cfg.hosts.insert(
        "docker.io".into(),
        HostConfig {
            mirrors: vec![format!("http://127.0.0.1:{dead}"), reg.url()],
            mirrors_only: true,
            ..Default::default()
        },
    );
    let p = puller(dir.path(), cfg);
    let (rec, stats) = pull(&p, "busybox").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        rec.repo_tags,
        vec!["docker.io/library/busybox:latest".to_string()]
    );
    assert_eq!(stats.endpoint, reg.url());
}

#[test]
fn concurrent_pulls_download_each_layer_once() {
    let (reg, pubd, dir) = setup();
    let p = Arc::new(puller(dir.path(), RegistryConfig::default()));
    let rt = rt();
    let (a, b) = rt.block_on(async {
        let o = PullOptions::default();
        tokio::join!(
            p.pull_with_stats(&pubd.httpd, &o),
            p.pull_with_stats(&pubd.httpd, &o)
        )
    });
    let (a, sa) = a.unwrap_or_else(|e| panic!("{e}"));
    let (b, sb) = b.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.id, b.id);
    assert_eq!(sa.layers_fetched + sb.layers_fetched, 3);
    assert_eq!(sa.layers_cached + sb.layers_cached, 3);
    for l in &a.layers {
        assert_eq!(reg.blob_gets(&l.digest.to_string()), 1);
    }

    // Two processes at once, sharing one store: still one download per layer.
    let dir2 = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bin = podctl_tests::workspace_bin("podctl");
    let spawn = || {
        std::process::Command::new(&bin)
            .arg("--root")
            .arg(dir2.path())
            .args(["pull", "--quiet", &pubd.layered])
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", bin.display()))
    };
    let (mut c1, mut c2) = (spawn(), spawn());
    assert!(c1.wait().map(|s| s.success()).unwrap_or(false));
    assert!(c2.wait().map(|s| s.success()).unwrap_or(false));
    for l in &pubd.layered_image.layers {
        assert_eq!(
            reg.blob_gets(&l.digest),
            1,
            "layer {} fetched once across processes",
            l.digest
        );
    }
}

#[test]
fn partial_download_resumes_after_a_crash() {
    let (_reg, pubd, dir) = setup();
    let img = &pubd.httpd_image;
    // A crashed pull left the first half of the busybox layer behind.
    let big = &img.layers[1];
    let ingest = dir.path().join("ingest");
    std::fs::create_dir_all(&ingest).unwrap_or_else(|e| panic!("{e}"));
    let half = big.blob.len() / 2;
    let partial = ingest.join(format!("{}.partial", &big.digest[7..]));
    std::fs::write(&partial, &big.blob[..half]).unwrap_or_else(|e| panic!("{e}"));
    let p = puller(dir.path(), RegistryConfig::default());
    let (rec, stats) = pull(&p, &pubd.httpd).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.layers_resumed, 1);
    let total: u64 = img.layers.iter().map(|l| l.blob.len() as u64).sum();
    assert_eq!(stats.bytes_downloaded, total - half as u64);
    assert!(!partial.exists());
    let stored = std::fs::read(p.store().blob_path(&rec.layers[1].digest)).unwrap_or_default();
    assert_eq!(stored, big.blob);

    // A corrupt partial file is detected by the digest and downloaded again.
    let dir2 = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ingest = dir2.path().join("ingest");
    std::fs::create_dir_all(&ingest).unwrap_or_else(|e| panic!("{e}"));
    let mut junk = big.blob[..half].to_vec();
    junk[10] ^= 0xff;
    std::fs::write(ingest.join(format!("{}.partial", &big.digest[7..])), &junk)
        .unwrap_or_else(|e| panic!("{e}"));
    let p2 = puller(dir2.path(), RegistryConfig::default());
    let (rec2, _) = pull(&p2, &pubd.httpd).unwrap_or_else(|e| panic!("{e}"));
    let stored = std::fs::read(p2.store().blob_path(&rec2.layers[1].digest)).unwrap_or_default();
    assert_eq!(stored, big.blob);
}

#[test]
fn broken_connection_mid_layer_resumes_with_a_range_request() {
    let (reg, pubd, dir) = setup();
    let upstream: std::net::SocketAddr = reg.host().parse().unwrap_or_else(|e| panic!("{e}"));
    let proxy =
        common::proxy::CuttingProxy::start(upstream, 400_000, 1).unwrap_or_else(|e| panic!("{e}"));
    let p = puller(dir.path(), RegistryConfig::default());
    let reference = format!("{}/library/busybox:latest", proxy.host());
    let (rec, stats) = pull(&p, &reference).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        proxy.cuts.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one connection was cut"
    );
    assert!(stats.layers_resumed >= 1, "{stats:?}");
    assert!(
        reg.log().contains("206"),
        "registry served a partial content response"
    );
    assert_eq!(rec.id.to_string(), pubd.busybox_image.config_digest);
}

#[test]
fn cli_pull_images_rmi() {
    let (_reg, pubd, dir) = setup();
    let bin = podctl_tests::workspace_bin("podctl");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&bin)
            .arg("--root")
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(&["pull", &pubd.busybox]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), pubd.busybox_image.config_digest);
    assert!(err.contains("pulled"), "{err}");
    let (ok, _, err) = run(&["pull", "--quiet", &pubd.busybox_docker]);
    assert!(ok, "{err}");
    let (ok, out, _) = run(&["images"]);
    assert!(ok);
    assert!(
        out.contains(&format!("{}/library/busybox", pubd.host)) && out.contains("latest"),
        "{out}"
    );
    assert!(
        out.contains(&pubd.busybox_image.config_digest[7..19]),
        "{out}"
    );

    let store =
        podctl_images::Store::open(dir.path().join("images")).unwrap_or_else(|e| panic!("{e}"));
    let before = store.usage().0;
    // Both variants share one config, so they are one image with two tags.
    let (ok, out, _) = run(&["rmi", &pubd.busybox]);
    assert!(ok);
    assert_eq!(out.trim(), format!("Untagged: {}", pubd.busybox));
    let (ok, _, err) = run(&["rmi", &pubd.busybox]);
    assert!(!ok && err.contains("not found"), "{err}");
    let left = store.list().unwrap_or_default();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].repo_tags, vec![pubd.busybox_docker.clone()]);
    assert!(store.layer_dirs(&left[0]).is_ok());
    // By ID: the image, all its tags, its blobs and snapshots go.
    let (ok, out, _) = run(&["rmi", &left[0].id.hex()[..12]]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), format!("Deleted: {}", left[0].id));
    assert!(store.list().unwrap_or_default().is_empty());
    assert!(store.usage().0 < before);
    assert_eq!(
        common::tree(&dir.path().join("images/snapshots")),
        Vec::<String>::new()
    );
    assert_eq!(
        common::tree(&dir.path().join("images/blobs/sha256")),
        Vec::<String>::new()
    );

    let (ok, _, err) = run(&["pull", "UPPER/case"]);
    assert!(
        !ok && err.contains("invalid image reference \"UPPER/case\""),
        "{err}"
    );
}

#[test]
fn https_registries_are_verified_unless_configured_otherwise() {
    let reg = Registry::start_with(Auth::Tls).unwrap_or_else(|e| panic!("{e}"));
    let mut pusher = podctl_tests::push::Pusher::new(&reg.url(), None);
    pusher
        .image("podctl/layered", "v1", &fixtures::layered())
        .unwrap_or_else(|e| panic!("{e}"));
    let reference = format!("{}/podctl/layered:v1", reg.host());
    let mut cfg = RegistryConfig::default();
    cfg.hosts.insert(
        reg.host(),
        HostConfig {
            server: Some(reg.url()),
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // The self-signed certificate is not in the system roots: refused.
    let p = puller(dir.path(), cfg.clone());
    let err = pull(&p, &reference)
        .err()
        .map(|e| format!("{e} {:?}", e))
        .unwrap_or_default();
    assert!(err.contains(&format!("https://{}", reg.host())), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // skip_verify for that host: accepted, over TLS.
    if let Some(h) = cfg.hosts.get_mut(&reg.host()) {
        h.skip_verify = true;
    }
    let p = puller(dir.path(), cfg);
    let (rec, stats) = pull(&p, &reference).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stats.endpoint, reg.url());
    assert_eq!(rec.layers.len(), 3);
}

#[test]
fn killed_pull_resumes_on_the_next_run() {
    let reg = Registry::start().unwrap_or_else(|e| panic!("{e}"));
    let img = fixtures::big(6 << 20);
    podctl_tests::push::Pusher::new(&reg.url(), None)
        .image("podctl/mid", "v1", &img)
        .unwrap_or_else(|e| panic!("{e}"));
    // A slow link, so the pull is still running when it is killed.
    let upstream: std::net::SocketAddr = reg.host().parse().unwrap_or_else(|e| panic!("{e}"));
    let proxy = common::proxy::CuttingProxy::start_with_delay(
        upstream,
        usize::MAX,
        0,
        std::time::Duration::from_millis(8),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let reference = format!("{}/podctl/mid:v1", proxy.host());
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bin = podctl_tests::workspace_bin("podctl");
    let mut child = std::process::Command::new(&bin)
        .arg("--root")
        .arg(dir.path())
        .args(["pull", "--quiet", &reference])
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let ingest = dir.path().join("images/ingest");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let partial_bytes = || -> u64 {
        std::fs::read_dir(&ingest)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    };
    while partial_bytes() < 200_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "download never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SIGKILL: no chance to clean up.
    let _ = child.kill();
    let _ = child.wait();
    let kept = partial_bytes();
    assert!(kept >= 200_000);
    let store =
        podctl_images::Store::open(dir.path().join("images")).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        store.list().unwrap_or_default().is_empty(),
        "no image recorded by the killed pull"
    );

    let out = std::process::Command::new(&bin)
        .arg("--root")
        .arg(dir.path())
        .args(["pull", &reference])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        img.config_digest
    );
    let resumed = stderr
        .split(" resumed")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    assert!(resumed >= 1, "{stderr}");
    let rec = store.get(&reference).unwrap_or_else(|e| panic!("{e}"));
    for (l, want) in rec.layers.iter().zip(&img.layers) {
        assert_eq!(
            std::fs::read(store.blob_path(&l.digest)).unwrap_or_default(),
            want.blob
        );
    }
    assert_eq!(partial_bytes(), 0);
}
