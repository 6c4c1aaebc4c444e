//! Fuzz targets of the parsers that read what registries and layers send
//! (see `podctl_tests::fuzz`; seeds in `tests/fuzz/<target>/`).

use std::io::Cursor;

use podctl_tests::fuzz;

use crate::digest::{chain_ids, Digest};
use crate::manifest::{ConfigFile, Index, Manifest, Platform};
use crate::media::Compression;
use crate::reference::Reference;
use crate::unpack::{unpack_layer, LayerContext, UnpackOptions};

#[test]
fn fuzz_image_reference() {
    let tokens: &[&[u8]] = &[
        b"@sha256:",
        b":latest",
        b"docker.io/",
        b"localhost:5000/",
        b"//",
    ];
    fuzz::run("image_reference", 20_000, tokens, |b| {
        let s = String::from_utf8_lossy(b);
        if let Ok(r) = Reference::parse(&s) {
            // What a parsed reference prints parses again to the same.
            let shown = r.to_string();
            let again =
                Reference::parse(&shown).unwrap_or_else(|e| panic!("{s:?} -> {shown:?}: {e}"));
            assert_eq!(again, r, "{s:?} -> {shown:?}");
        }
    });
}

#[test]
fn fuzz_registry_challenge() {
    let tokens: &[&[u8]] = &[b"Bearer ", b"Basic ", b"realm=", b"\"", b",", b"scope="];
    fuzz::run("registry_challenge", 20_000, tokens, |b| {
        let (scheme, params) = crate::registry::parse_challenge(&String::from_utf8_lossy(b));
        assert!(scheme.len() <= b.len() * 3 + 3 && params.len() <= b.len());
    });
}

#[test]
fn fuzz_manifest() {
    let tokens: &[&[u8]] = &[
        b"\"mediaType\"",
        b"\"schemaVersion\":2",
        b"\"manifests\":[",
        b"\"digest\":\"sha256:",
        b"\"diff_ids\":[",
        b"null",
        b"{}",
    ];
    let host = Platform::host();
    fuzz::run("manifest", 20_000, tokens, |b| {
        let _ = crate::pull::sniff_media_type("fuzz", b);
        if let Ok(idx) = serde_json::from_slice::<Index>(b) {
            let _ = idx
                .manifests
                .iter()
                .find(|d| d.platform.as_ref().is_some_and(|p| host.matches(p)));
        }
        if let Ok(m) = serde_json::from_slice::<Manifest>(b) {
            let _ = m
                .layers
                .iter()
                .map(|l| l.size)
                .fold(0u64, u64::saturating_add);
        }
        if let Ok(c) = serde_json::from_slice::<ConfigFile>(b) {
            let ids: Vec<Digest> = c.rootfs.diff_ids.clone();
            assert_eq!(chain_ids(&ids).len(), ids.len());
        }
        let _ = Digest::parse(&String::from_utf8_lossy(b));
    });
}

/// Hostile or broken tar streams: the unpack may refuse them, never write
/// outside its directory and never panic.
#[test]
fn fuzz_layer_tar() {
    let tokens: &[&[u8]] = &[
        b"../",
        b"/etc/",
        b".wh.",
        b".wh..wh..opq",
        b"ustar\x0000",
        b"\0\0\0\0",
    ];
    let base = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ctx = LayerContext {
        image: "fuzz".into(),
        layer: "sha256:fuzz".into(),
    };
    let opts = UnpackOptions { privileged: false };
    fuzz::run("layer_tar", 1_000, tokens, |b| {
        // Each execution unpacks into a fresh directory.
        let root = base.path().join("run");
        let dest = root.join("dest");
        std::fs::create_dir_all(&dest).unwrap_or_else(|e| panic!("{e}"));
        let _ = unpack_layer(Cursor::new(b), Compression::None, &dest, &opts, &ctx);
        let beside: Vec<_> = std::fs::read_dir(&root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(beside, ["dest"], "an entry escaped the layer directory");
        let _ = std::process::Command::new("chmod")
            .args(["-R", "u+rwX", &root.display().to_string()])
            .status();
        std::fs::remove_dir_all(&root).unwrap_or_else(|e| panic!("{e}"));
    });
}
