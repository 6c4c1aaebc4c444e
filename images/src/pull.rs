//! Pulling an image: resolve the reference on the first endpoint that has
//! it (mirrors first), pick the host platform from an index, fetch config
//! and layers in parallel, unpack, and record the image.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::stream::{self, StreamExt, TryStreamExt};
use reqwest::StatusCode;

use crate::config::{Credentials, Endpoint};
use crate::digest::{chain_ids, Digest};
use crate::error::{ImageError, Result};
use crate::fsutil::FileLock;
use crate::layer::{self, Attempt, ByteProgress, Download, LayerJob};
use crate::manifest::{ConfigFile, Descriptor, Index, Manifest, Platform, Probe};
use crate::media;
use crate::reference::Reference;
use crate::registry::{self, RegistryClient, Target};
use crate::store::{ImageRecord, LayerRecord, Store};
use crate::unpack::{LayerContext, UnpackOptions};

/// Largest manifest or index accepted.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Largest image config accepted.
pub const MAX_CONFIG_BYTES: u64 = 8 << 20;
/// Most layers an image may have.
pub const MAX_LAYERS: usize = 512;
/// Attempts per layer when the connection breaks (each resumes).
const LAYER_ATTEMPTS: usize = 4;

/// Events reported while pulling.
#[derive(Clone, Debug)]
pub enum PullEvent {
    /// The manifest is known: layers with their compressed sizes.
    Resolved {
        reference: String,
        manifest: Digest,
        layers: Vec<(Digest, u64)>,
    },
    /// Bytes of a layer done so far.
    Progress {
        layer: Digest,
        done: u64,
        total: u64,
    },
    /// A layer is in place (`cached` when nothing had to be fetched).
    LayerDone { layer: Digest, cached: bool },
}

/// Callback for [`PullEvent`]s.
pub type PullObserver = Arc<dyn Fn(PullEvent) + Send + Sync>;

/// Options of one pull.
#[derive(Clone, Default)]
pub struct PullOptions {
    pub credentials: Option<Credentials>,
    /// Platform to pick from an index; the host's when `None`.
    pub platform: Option<Platform>,
    pub observer: Option<PullObserver>,
}

/// What a pull did, for tests and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PullStats {
    /// Layer bytes fetched over the network.
    pub bytes_downloaded: u64,
    /// Layers fetched (fully or partly).
    pub layers_fetched: usize,
    /// Layers that continued a partial download.
    pub layers_resumed: usize,
    /// Layers already in place.
    pub layers_cached: usize,
    /// Endpoint the manifest came from.
    pub endpoint: String,
}

/// Pulls images into a [`Store`]. Concurrent pulls of the same layer, in
/// this process or another, download it once.
pub struct Puller {
    store: Arc<Store>,
    client: Arc<RegistryClient>,
    inflight: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
    unpack: UnpackOptions,
    /// Layers fetched at once.
    pub concurrency: usize,
}

impl Puller {
    pub fn new(store: Arc<Store>, client: Arc<RegistryClient>) -> Self {
        Puller {
            store,
            client,
            inflight: Mutex::new(HashMap::new()),
            unpack: UnpackOptions::default(),
            concurrency: 4,
        }
    }

    /// Override what the unpacker may create (tests use this to act as an
    /// unprivileged user).
    pub fn set_unpack_options(&mut self, opts: UnpackOptions) {
        self.unpack = opts;
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Pull `reference` and return the stored image.
    pub async fn pull(&self, reference: &str, opts: &PullOptions) -> Result<ImageRecord> {
        Ok(self.pull_with_stats(reference, opts).await?.0)
    }

    /// Pull and report what was transferred.
    pub async fn pull_with_stats(
        &self,
        reference: &str,
        opts: &PullOptions,
    ) -> Result<(ImageRecord, PullStats)> {
        let r = Reference::parse(reference)?;
        let shown = r.to_string();
        let (endpoint, top_digest, top_bytes) = self.resolve(&r, opts).await?;
        let target = Target {
            endpoint: &endpoint,
            repository: &r.repository,
            credentials: opts.credentials.as_ref(),
        };
        let mut stats = PullStats {
            endpoint: endpoint.base.clone(),
            ..Default::default()
        };
        let media_type = sniff_media_type(&shown, &top_bytes)?;
        let (manifest_digest, manifest_bytes) = if media::is_index(&media_type) {
            let index: Index = parse_json(&shown, "index", &top_bytes)?;
            let want = opts.platform.clone().unwrap_or_else(Platform::host);
            let desc = index
                .manifests
                .iter()
                .find(|d| d.platform.as_ref().is_some_and(|p| want.matches(p)))
                .ok_or_else(|| ImageError::NoMatchingPlatform {
                    image: shown.clone(),
                    platform: want.to_string(),
                })?;
            self.store.put_blob(&top_digest, &top_bytes)?;
            let bytes = self
                .fetch_small(&target, &shown, "manifest", desc, MAX_MANIFEST_BYTES, true)
                .await?;
            (desc.digest.clone(), bytes)
        } else {
            (top_digest.clone(), top_bytes)
        };
        let mt = sniff_media_type(&shown, &manifest_bytes)?;
        if !media::is_manifest(&mt) {
            return Err(ImageError::UnsupportedMediaType {
                image: shown,
                what: "manifest".into(),
                media_type: mt,
            });
        }
        let manifest: Manifest = parse_json(&shown, "manifest", &manifest_bytes)?;
        if manifest.layers.len() > MAX_LAYERS {
            return Err(ImageError::TooLarge {
                image: shown,
                what: "layer count".into(),
                size: manifest.layers.len() as u64,
                limit: MAX_LAYERS as u64,
            });
        }
        let config_bytes = self
            .fetch_small(
                &target,
                &shown,
                "config",
                &manifest.config,
                MAX_CONFIG_BYTES,
                false,
            )
            .await?;
        let config: ConfigFile = parse_json(&shown, "config", &config_bytes)?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::Malformed {
                image: shown,
                what: "config".into(),
                reason: format!(
                    "{} diff_ids for {} layers",
                    config.rootfs.diff_ids.len(),
                    manifest.layers.len()
                ),
            });
        }
        let chains = chain_ids(&config.rootfs.diff_ids);
        let mut jobs = Vec::new();
        for (i, desc) in manifest.layers.iter().enumerate() {
            let compression = media::layer_compression(&desc.media_type).ok_or_else(|| {
                ImageError::UnsupportedMediaType {
                    image: shown.clone(),
                    what: format!("layer {}", desc.digest),
                    media_type: desc.media_type.clone(),
                }
            })?;
            jobs.push(Arc::new(LayerJob {
                desc: desc.clone(),
                compression,
                diff_id: config.rootfs.diff_ids[i].clone(),
                chain_id: chains[i].clone(),
                ctx: LayerContext {
                    image: shown.clone(),
                    layer: desc.digest.to_string(),
                },
            }));
        }
        if let Some(obs) = &opts.observer {
            obs(PullEvent::Resolved {
                reference: shown.clone(),
                manifest: manifest_digest.clone(),
                layers: jobs
                    .iter()
                    .map(|j| (j.desc.digest.clone(), j.desc.size))
                    .collect(),
            });
        }
        let results: Vec<LayerOutcome> = stream::iter(jobs.iter().cloned())
            .map(|job| self.ensure_layer(&target, job, opts))
            .buffer_unordered(self.concurrency.max(1))
            .try_collect()
            .await?;
        for o in results {
            match o {
                LayerOutcome::Cached => stats.layers_cached += 1,
                LayerOutcome::Fetched { bytes, resumed } => {
                    stats.layers_fetched += 1;
                    stats.bytes_downloaded += bytes;
                    stats.layers_resumed += usize::from(resumed);
                }
            }
        }
        crate::failpoint::hit("pull.layers_committed");
        self.store
            .put_blob(&manifest.config.digest, &config_bytes)?;
        self.store.put_blob(&manifest_digest, &manifest_bytes)?;
        let size = manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>();
        let record = ImageRecord {
            id: manifest.config.digest.clone(),
            repo_tags: r
                .digest
                .is_none()
                .then(|| r.tagged())
                .flatten()
                .into_iter()
                .collect(),
            repo_digests: vec![r.with_digest(&top_digest)],
            manifest_digest,
            size,
            architecture: config.architecture,
            os: config.os,
            config: config.config.unwrap_or_default(),
            layers: jobs
                .iter()
                .map(|j| LayerRecord {
                    digest: j.desc.digest.clone(),
                    media_type: j.desc.media_type.clone(),
                    size: j.desc.size,
                    diff_id: j.diff_id.clone(),
                    chain_id: j.chain_id.clone(),
                })
                .collect(),
            pulled_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            pinned: false,
        };
        let record = self.store.put(record)?;
        Ok((record, stats))
    }

    /// Find the manifest (or index) on the first endpoint that serves it.
    async fn resolve(
        &self,
        r: &Reference,
        opts: &PullOptions,
    ) -> Result<(Endpoint, Digest, Vec<u8>)> {
        let shown = r.to_string();
        let mut last: Option<ImageError> = None;
        let mut all_not_found = true;
        for ep in self.client.config().endpoints(&r.registry) {
            let target = Target {
                endpoint: &ep,
                repository: &r.repository,
                credentials: opts.credentials.as_ref(),
            };
            let attempt = async {
                let resp = self.client.get_manifest(&target, &r.object()).await?;
                read_limited(resp, &shown, "manifest", MAX_MANIFEST_BYTES).await
            };
            match attempt.await {
                Ok(bytes) => {
                    let digest = Digest::of(&bytes);
                    if let Some(want) = &r.digest {
                        if want != &digest {
                            return Err(ImageError::DigestMismatch {
                                image: shown,
                                digest: want.to_string(),
                                actual: digest.to_string(),
                            });
                        }
                    }
                    return Ok((ep, digest, bytes));
                }
                Err(e) => {
                    tracing::debug!(endpoint = %ep.base, error = %e, "manifest not available here");
                    all_not_found &= registry::is_not_found(&e);
                    if ep.is_mirror && !matches!(e, ImageError::TooLarge { .. }) {
                        last = Some(e);
                        continue;
                    }
                    last = Some(e);
                }
            }
        }
        match last {
            Some(e) if all_not_found => Err(ImageError::RemoteNotFound {
                image: shown,
                registry: r.registry.clone(),
                detail: e.to_string(),
            }),
            Some(e) => Err(e),
            None => Err(ImageError::RemoteNotFound {
                image: shown,
                registry: r.registry.clone(),
                detail: "no endpoints".into(),
            }),
        }
    }

    /// Fetch and verify a small blob (manifest or config), bounded in size.
    async fn fetch_small(
        &self,
        target: &Target<'_>,
        image: &str,
        what: &str,
        desc: &Descriptor,
        limit: u64,
        is_manifest: bool,
    ) -> Result<Vec<u8>> {
        if desc.size > limit {
            return Err(ImageError::TooLarge {
                image: image.to_string(),
                what: what.to_string(),
                size: desc.size,
                limit,
            });
        }
        if self.store.has_blob(&desc.digest) {
            return self.store.read_blob(&desc.digest);
        }
        let resp = if is_manifest {
            self.client
                .get_manifest(target, &desc.digest.to_string())
                .await?
        } else {
            self.client
                .get_blob(target, &desc.digest.to_string(), 0)
                .await?
        };
        let bytes = read_limited(resp, image, what, desc.size).await?;
        if bytes.len() as u64 != desc.size {
            return Err(ImageError::SizeMismatch {
                image: image.to_string(),
                digest: desc.digest.to_string(),
                expected: desc.size,
                actual: bytes.len() as u64,
            });
        }
        let actual = Digest::of(&bytes);
        if actual != desc.digest {
            return Err(ImageError::DigestMismatch {
                image: image.to_string(),
                digest: desc.digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    async fn ensure_layer(
        &self,
        target: &Target<'_>,
        job: Arc<LayerJob>,
        opts: &PullOptions,
    ) -> Result<LayerOutcome> {
        let digest = job.desc.digest.clone();
        let key = {
            let mut map = self
                .inflight
                .lock()
                .map_err(|_| ImageError::Task("in-flight table poisoned".into()))?;
            map.entry(digest.clone()).or_default().clone()
        };
        let _inproc = key.lock().await;
        let lock_path = self.store.blob_lock_path(&digest);
        let _xproc = tokio::task::spawn_blocking(move || FileLock::acquire(&lock_path))
            .await
            .map_err(|e| ImageError::Task(e.to_string()))??;
        let outcome = self.ensure_layer_locked(target, &job, opts).await;
        if let Some(obs) = &opts.observer {
            if let Ok(o) = &outcome {
                obs(PullEvent::LayerDone {
                    layer: digest.clone(),
                    cached: matches!(o, LayerOutcome::Cached),
                });
            }
        }
        outcome
    }

    async fn ensure_layer_locked(
        &self,
        target: &Target<'_>,
        job: &Arc<LayerJob>,
        opts: &PullOptions,
    ) -> Result<LayerOutcome> {
        let has_snap = self.store.has_snapshot(&job.chain_id);
        if self.store.has_blob(&job.desc.digest) {
            if !has_snap {
                let store = self.store.clone();
                let job = job.clone();
                let unpack = self.unpack.clone();
                tokio::task::spawn_blocking(move || layer::unpack_stored(&store, &job, &unpack))
                    .await
                    .map_err(|e| ImageError::Task(e.to_string()))??;
            }
            return Ok(LayerOutcome::Cached);
        }
        let progress: Option<ByteProgress> = opts.observer.clone().map(|obs| {
            Arc::new(move |d: &Digest, done: u64, total: u64| {
                obs(PullEvent::Progress {
                    layer: d.clone(),
                    done,
                    total,
                })
            }) as ByteProgress
        });
        let mut downloaded = 0;
        let mut resumed = false;
        let mut restarted_after_mismatch = false;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let offset = layer::partial_len(&self.store, &job.desc);
            let (response, start) = if offset == job.desc.size {
                (None, offset) // all bytes are here; verify and unpack them
            } else {
                let resp = match self
                    .client
                    .get_blob(target, &job.desc.digest.to_string(), offset)
                    .await
                {
                    Ok(r) => r,
                    Err(ImageError::Registry { reason, .. })
                        if offset > 0 && reason.starts_with("416") && attempts < LAYER_ATTEMPTS =>
                    {
                        // The registry cannot continue this partial file: start over.
                        layer::discard_partial(&self.store, &job.desc);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let start = if offset > 0 && resp.status() == StatusCode::PARTIAL_CONTENT {
                    offset
                } else {
                    0
                };
                (Some(resp), start)
            };
            let res = layer::fetch_and_unpack(
                self.store.clone(),
                job.clone(),
                Download {
                    response,
                    offset: start,
                },
                self.unpack.clone(),
                progress.clone(),
            )
            .await;
            match res {
                Ok(Attempt::Done {
                    downloaded: d,
                    resumed_from,
                }) => {
                    downloaded += d;
                    resumed |= resumed_from > 0;
                    return Ok(LayerOutcome::Fetched {
                        bytes: downloaded,
                        resumed,
                    });
                }
                Ok(Attempt::Interrupted(e)) => {
                    let now = layer::partial_len(&self.store, &job.desc);
                    downloaded += now.saturating_sub(start);
                    resumed = true;
                    if attempts >= LAYER_ATTEMPTS {
                        return Err(e);
                    }
                    tracing::info!(layer = %job.desc.digest, at = now, "resuming interrupted layer download");
                }
                Err(ImageError::DigestMismatch { .. })
                    if start > 0 && !restarted_after_mismatch =>
                {
                    // The partial file on disk was bad; start over once.
                    restarted_after_mismatch = true;
                    downloaded += job.desc.size - start;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

enum LayerOutcome {
    Cached,
    Fetched { bytes: u64, resumed: bool },
}

async fn read_limited(
    mut resp: reqwest::Response,
    image: &str,
    what: &str,
    limit: u64,
) -> Result<Vec<u8>> {
    let url = resp.url().to_string();
    if let Some(len) = resp.content_length() {
        if len > limit {
            return Err(ImageError::TooLarge {
                image: image.to_string(),
                what: what.to_string(),
                size: len,
                limit,
            });
        }
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| ImageError::Http {
        url: url.clone(),
        source: e,
    })? {
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(ImageError::TooLarge {
                image: image.to_string(),
                what: what.to_string(),
                size: out.len() as u64 + chunk.len() as u64,
                limit,
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn parse_json<T: serde::de::DeserializeOwned>(image: &str, what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::Malformed {
        image: image.to_string(),
        what: what.to_string(),
        reason: e.to_string(),
    })
}

/// The media type a document declares, or what its shape says.
pub(crate) fn sniff_media_type(image: &str, bytes: &[u8]) -> Result<String> {
    let probe: Probe = parse_json(image, "manifest", bytes)?;
    if let Some(mt) = probe.media_type.filter(|m| !m.is_empty()) {
        return Ok(mt);
    }
    match (probe.schema_version, probe.manifests.is_some()) {
        (Some(2), true) => Ok(media::OCI_INDEX.to_string()),
        (Some(2), false) => Ok(media::OCI_MANIFEST.to_string()),
        (v, _) => Err(ImageError::UnsupportedMediaType {
            image: image.to_string(),
            what: "manifest".into(),
            media_type: format!("schemaVersion {v:?}"),
        }),
    }
}
