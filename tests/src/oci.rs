//! Deterministic OCI layers, images and indexes: same inputs, same bytes,
//! same digests on every run (mtime 0, fixed owners, fixed creation date,
//! JSON with sorted keys).

use std::io::Write;

use serde_json::{json, Value};

use crate::sha256;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Layer compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// A built layer.
#[derive(Clone, Debug)]
pub struct Layer {
    pub media_type: String,
    pub blob: Vec<u8>,
    pub digest: String,
    pub diff_id: String,
}

/// Builds one layer tar.
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

impl LayerBuilder {
    pub fn new() -> Self {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Deterministic);
        LayerBuilder { tar }
    }

    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        let mut h = header(tar::EntryType::Directory, mode, 0);
        let _ = self.tar.append_data(&mut h, path, std::io::empty());
        self
    }

    pub fn file(self, path: &str, mode: u32, data: &[u8]) -> Self {
        self.file_owned(path, mode, 0, 0, data)
    }

    pub fn file_owned(mut self, path: &str, mode: u32, uid: u64, gid: u64, data: &[u8]) -> Self {
        let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        let _ = self.tar.append_data(&mut h, path, data);
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        let _ = self.tar.append_link(&mut h, path, target);
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Link, 0o644, 0);
        let _ = self.tar.append_link(&mut h, path, target);
        self
    }

    /// Hide `path` of lower layers (`dir/.wh.name`).
    pub fn whiteout(self, path: &str) -> Self {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let wh = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&wh, 0o644, b"")
    }

    /// Make `dir` opaque (`dir/.wh..wh..opq`).
    pub fn opaque(self, dir: &str) -> Self {
        self.file(&format!("{dir}/.wh..wh..opq"), 0o644, b"")
    }

    /// An entry whose name and link name are written as raw bytes into the
    /// header, bypassing the tar crate's checks (for hostile archives).
    pub fn raw(mut self, kind: tar::EntryType, name: &[u8], link: &[u8], data: &[u8]) -> Self {
        let mut h = header(kind, 0o644, data.len() as u64);
        {
            let old = h.as_old_mut();
            let n = name.len().min(99);
            old.name = [0; 100];
            old.name[..n].copy_from_slice(&name[..n]);
            let l = link.len().min(99);
            old.linkname = [0; 100];
            old.linkname[..l].copy_from_slice(&link[..l]);
        }
        h.set_cksum();
        let _ = self.tar.append(&h, data);
        self
    }

    /// A character or block device node.
    pub fn device(mut self, path: &str, kind: tar::EntryType, major: u32, minor: u32) -> Self {
        let mut h = header(kind, 0o666, 0);
        let _ = h.set_device_major(major);
        let _ = h.set_device_minor(minor);
        let _ = self.tar.append_data(&mut h, path, std::io::empty());
        self
    }

    /// The uncompressed tar bytes.
    pub fn into_tar(self) -> Vec<u8> {
        self.tar.into_inner().unwrap_or_default()
    }

    pub fn finish(self, compression: Compression) -> Layer {
        layer_from_tar(self.into_tar(), compression)
    }
}

/// Compress a tar into a layer.
pub fn layer_from_tar(tar: Vec<u8>, compression: Compression) -> Layer {
    let (blob, media_type) = match compression {
        Compression::None => (tar.clone(), "application/vnd.oci.image.layer.v1.tar"),
        Compression::Gzip => {
            let mut enc = flate2::GzBuilder::new()
                .mtime(0)
                .write(Vec::new(), flate2::Compression::new(6));
            let _ = enc.write_all(&tar);
            (
                enc.finish().unwrap_or_default(),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        }
        Compression::Zstd => (
            zstd::encode_all(&tar[..], 3).unwrap_or_default(),
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
    };
    Layer {
        media_type: media_type.into(),
        digest: sha256(&blob),
        diff_id: sha256(&tar),
        blob,
    }
}

/// A built image.
#[derive(Clone, Debug)]
pub struct Image {
    pub config: Vec<u8>,
    pub config_digest: String,
    pub layers: Vec<Layer>,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    pub media_type: String,
    pub architecture: String,
}

/// Image construction options.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    pub architecture: String,
    /// Docker schema 2 media types instead of OCI.
    pub docker: bool,
    /// The config's `config` section (Env, Cmd, User, ...).
    pub run: Value,
}

impl Default for ImageSpec {
    fn default() -> Self {
        ImageSpec {
            architecture: "amd64".into(),
            docker: false,
            run: json!({}),
        }
    }
}

/// Assemble config and manifest for `layers`.
pub fn image(layers: Vec<Layer>, spec: &ImageSpec) -> Image {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let history: Vec<Value> = layers
        .iter()
        .map(|l| json!({"created": "2024-01-01T00:00:00Z", "created_by": format!("podctl-testbed {}", &l.diff_id[7..19])}))
        .collect();
    let config = json!({
        "architecture": spec.architecture,
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": spec.run,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    });
    let config = serde_json::to_vec(&config).unwrap_or_default();
    let (mt, cfg_mt) = if spec.docker {
        (DOCKER_MANIFEST, DOCKER_CONFIG)
    } else {
        (OCI_MANIFEST, OCI_CONFIG)
    };
    let layer_descs: Vec<Value> = layers
        .iter()
        .map(|l| {
            let lmt = if spec.docker {
                match l.media_type.as_str() {
                    "application/vnd.oci.image.layer.v1.tar+gzip" => {
                        "application/vnd.docker.image.rootfs.diff.tar.gzip".to_string()
                    }
                    other => other.to_string(),
                }
            } else {
                l.media_type.clone()
            };
            json!({"mediaType": lmt, "digest": l.digest, "size": l.blob.len()})
        })
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": mt,
        "config": {"mediaType": cfg_mt, "digest": sha256(&config), "size": config.len()},
        "layers": layer_descs,
    });
    let manifest = serde_json::to_vec(&manifest).unwrap_or_default();
    Image {
        config_digest: sha256(&config),
        config,
        layers,
        manifest_digest: sha256(&manifest),
        manifest,
        media_type: mt.into(),
        architecture: spec.architecture.clone(),
    }
}

/// An index over platform images.
#[derive(Clone, Debug)]
pub struct Index {
    pub images: Vec<Image>,
    pub bytes: Vec<u8>,
    pub digest: String,
    pub media_type: String,
}

pub fn index(images: Vec<Image>, docker: bool) -> Index {
    let mt = if docker { DOCKER_LIST } else { OCI_INDEX };
    let manifests: Vec<Value> = images
        .iter()
        .map(|i| {
            json!({
                "mediaType": i.media_type, "digest": i.manifest_digest, "size": i.manifest.len(),
                "platform": {"architecture": i.architecture, "os": "linux"},
            })
        })
        .collect();
    let bytes =
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": mt, "manifests": manifests}))
            .unwrap_or_default();
    Index {
        digest: sha256(&bytes),
        bytes,
        images,
        media_type: mt.into(),
    }
}
