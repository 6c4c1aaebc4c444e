//! Deterministic OCI / Docker schema 2 images and indexes: same inputs, same
//! bytes, same digests on every run (mtime 0, fixed owners, fixed creation
//! date, JSON from structs with a fixed field order; free-form maps such as
//! the config's `config` section are `serde_json::Value`s whose keys come
//! out sorted).
//!
//! Layers are built with [`crate::layer`] (re-exported here).

use serde::Serialize;
use serde_json::{json, Value};

pub use crate::layer::{
    compress, fix_checksum, layer_from_tar, Compression, Layer, LayerBuilder, RawEntry, TarFormat,
    DOCKER_LAYER_GZIP, LAYER_GZIP, LAYER_TAR, LAYER_ZSTD,
};
use crate::sha256;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// The fixed creation date of every fixture.
pub const CREATED: &str = "2024-01-01T00:00:00Z";

/// A content descriptor as it appears in manifests and indexes.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

#[derive(Serialize)]
struct ManifestJson<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Serialize)]
struct IndexJson<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    manifests: Vec<Descriptor>,
}

#[derive(Serialize)]
struct RootFs<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    diff_ids: Vec<&'a str>,
}

#[derive(Serialize)]
struct History {
    created: &'static str,
    created_by: String,
}

#[derive(Serialize)]
struct ConfigJson<'a> {
    created: &'static str,
    architecture: &'a str,
    os: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
    config: &'a Value,
    rootfs: RootFs<'a>,
    history: Vec<History>,
}

/// A built image.
#[derive(Clone, Debug)]
pub struct Image {
    pub config: Vec<u8>,
    pub config_digest: String,
    pub layers: Vec<Layer>,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
    /// Media type of the manifest.
    pub media_type: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Image {
    /// The descriptor an index uses for this image.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.manifest_digest.clone(),
            size: self.manifest.len() as u64,
            platform: Some(Platform {
                architecture: self.architecture.clone(),
                os: "linux".into(),
                variant: self.variant.clone(),
            }),
        }
    }
}

/// Image construction options.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    pub architecture: String,
    /// Platform variant (`v8` for arm64), none by default.
    pub variant: Option<String>,
    /// Docker schema 2 media types instead of OCI.
    pub docker: bool,
    /// The config's `config` section: `Env`, `Entrypoint`, `Cmd`,
    /// `WorkingDir`, `User`, `ExposedPorts`, `Labels`, ...
    pub run: Value,
}

impl Default for ImageSpec {
    fn default() -> Self {
        ImageSpec {
            architecture: "amd64".into(),
            variant: None,
            docker: false,
            run: json!({}),
        }
    }
}

/// The manifest media type a layer of `media_type` gets in a Docker schema 2
/// manifest (Docker has no zstd type; those stay OCI).
pub fn docker_layer_type(media_type: &str) -> &str {
    match media_type {
        LAYER_GZIP => DOCKER_LAYER_GZIP,
        LAYER_TAR => DOCKER_LAYER_TAR,
        other => other,
    }
}

/// Deterministic JSON (no pretty printing).
fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing these structs cannot fail: all map keys are strings.
    serde_json::to_vec(v).unwrap_or_default()
}

/// Assemble config and manifest for `layers`.
pub fn image(layers: Vec<Layer>, spec: &ImageSpec) -> Image {
    let config = to_json(&ConfigJson {
        created: CREATED,
        architecture: &spec.architecture,
        os: "linux",
        variant: spec.variant.as_deref(),
        config: &spec.run,
        rootfs: RootFs {
            kind: "layers",
            diff_ids: layers.iter().map(|l| l.diff_id.as_str()).collect(),
        },
        history: layers
            .iter()
            .map(|l| History {
                created: CREATED,
                created_by: format!(
                    "podctl-testbed {}",
                    l.diff_id.get(7..19).unwrap_or_default()
                ),
            })
            .collect(),
    });
    let (mt, cfg_mt) = if spec.docker {
        (DOCKER_MANIFEST, DOCKER_CONFIG)
    } else {
        (OCI_MANIFEST, OCI_CONFIG)
    };
    let manifest = to_json(&ManifestJson {
        schema_version: 2,
        media_type: mt,
        config: Descriptor {
            media_type: cfg_mt.into(),
            digest: sha256(&config),
            size: config.len() as u64,
            platform: None,
        },
        layers: layers
            .iter()
            .map(|l| Descriptor {
                media_type: if spec.docker {
                    docker_layer_type(&l.media_type).into()
                } else {
                    l.media_type.clone()
                },
                digest: l.digest.clone(),
                size: l.size(),
                platform: None,
            })
            .collect(),
    });
    Image {
        config_digest: sha256(&config),
        config,
        layers,
        manifest_digest: sha256(&manifest),
        manifest,
        media_type: mt.into(),
        architecture: spec.architecture.clone(),
        variant: spec.variant.clone(),
    }
}

/// An index (OCI image index or Docker manifest list) over platform images.
#[derive(Clone, Debug)]
pub struct Index {
    pub images: Vec<Image>,
    pub bytes: Vec<u8>,
    pub digest: String,
    pub media_type: String,
}

/// An OCI index (or, with `docker`, a Docker manifest list) over `images`.
pub fn index(images: Vec<Image>, docker: bool) -> Index {
    let mt = if docker { DOCKER_LIST } else { OCI_INDEX };
    let bytes = to_json(&IndexJson {
        schema_version: 2,
        media_type: mt,
        manifests: images.iter().map(Image::descriptor).collect(),
    });
    Index {
        digest: sha256(&bytes),
        bytes,
        images,
        media_type: mt.into(),
    }
}
