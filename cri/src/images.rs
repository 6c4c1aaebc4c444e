//! ImageService: ListImages, ImageStatus, PullImage, RemoveImage,
//! ImageFsInfo.

use std::collections::HashMap;

use podctl_images::{Credentials, ImageError, ImageRecord, PullOptions};

use crate::error::{CriError, Result};
use crate::proto;
use crate::service::CriService;

impl CriService {
    fn image_of(&self, rec: &ImageRecord) -> proto::Image {
        let (uid, username) = rec.user();
        proto::Image {
            id: rec.id.to_string(),
            repo_tags: rec.repo_tags.clone(),
            repo_digests: rec.repo_digests.clone(),
            size: rec.size,
            uid: uid.map(|value| proto::Int64Value { value }),
            username,
            spec: Some(proto::ImageSpec {
                image: rec.id.to_string(),
                image_ref: rec.id.to_string(),
                ..Default::default()
            }),
            pinned: rec.pinned || rec.repo_tags.contains(&self.config().sandbox_image),
        }
    }

    /// Images, optionally only the one the filter names.
    pub(crate) async fn list_images(
        &self,
        filter: Option<proto::ImageFilter>,
    ) -> Result<Vec<proto::Image>> {
        let want = filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.is_empty());
        // The store's reads take no lock and parse images.json only when
        // it changed: done in place, not on the blocking pool.
        let store = &self.inner.store;
        let recs = match want {
            Some(q) => match store.get(&q) {
                Ok(r) => vec![r],
                Err(ImageError::NotFound { .. }) => vec![],
                Err(e) => return Err(e.into()),
            },
            None => store.list()?,
        };
        Ok(recs.iter().map(|r| self.image_of(r)).collect())
    }

    /// One image, `None` when not present (not an error, per CRI).
    pub(crate) async fn image_status(
        &self,
        spec: Option<proto::ImageSpec>,
        verbose: bool,
    ) -> Result<proto::ImageStatusResponse> {
        let q = spec.map(|s| s.image).unwrap_or_default();
        if q.is_empty() {
            return Err(CriError::invalid("image spec", "image is empty"));
        }
        // In place, as in list_images.
        let rec = match self.inner.store.get(&q) {
            Ok(r) => r,
            Err(ImageError::NotFound { .. }) => return Ok(proto::ImageStatusResponse::default()),
            Err(e) => return Err(e.into()),
        };
        let mut info = HashMap::new();
        if verbose {
            let v = serde_json::json!({
                "manifestDigest": rec.manifest_digest.to_string(),
                "config": rec.config,
                "architecture": rec.architecture,
                "os": rec.os,
                "layers": rec.layers.iter().map(|l| l.digest.to_string()).collect::<Vec<_>>(),
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(proto::ImageStatusResponse {
            image: Some(self.image_of(&rec)),
            info,
        })
    }

    /// Pull an image; returns its ID (the config digest).
    pub(crate) async fn pull_image(
        &self,
        spec: Option<proto::ImageSpec>,
        auth: Option<proto::AuthConfig>,
    ) -> Result<String> {
        let image = spec.map(|s| s.image).unwrap_or_default();
        if image.is_empty() {
            return Err(CriError::invalid("image spec", "image is empty"));
        }
        let mut opts = PullOptions::default();
        if let Some(a) = auth {
            let token = if a.registry_token.is_empty() {
                a.identity_token
            } else {
                a.registry_token
            };
            opts.credentials = Some(Credentials {
                username: a.username,
                password: a.password,
                auth: a.auth,
                registry_token: token,
            });
        }
        let started = std::time::Instant::now();
        let rec = self.inner.puller.pull(&image, &opts).await?;
        tracing::info!(%image, id = %rec.id, elapsed = ?started.elapsed(), "pulled");
        if rec.repo_tags.contains(&self.config().sandbox_image) {
            let store = self.inner.store.clone();
            let id = rec.id.to_string();
            let _ = tokio::task::spawn_blocking(move || store.set_pinned(&id, true)).await;
        }
        Ok(rec.id.to_string())
    }

    /// Remove an image with all its tags; a missing image is not an error.
    pub(crate) async fn remove_image(&self, spec: Option<proto::ImageSpec>) -> Result<()> {
        let q = spec.map(|s| s.image).unwrap_or_default();
        if q.is_empty() {
            return Err(CriError::invalid("image spec", "image is empty"));
        }
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || store.remove(&q))
            .await
            .map_err(|e| CriError::Internal(e.to_string()))??;
        Ok(())
    }

    /// Bytes and inodes used by the image store and by writable layers.
    pub(crate) async fn image_fs_info(&self) -> Result<proto::ImageFsInfoResponse> {
        let store = self.inner.store.clone();
        let root = self.config().root.join("containers");
        let (images, containers) =
            tokio::task::spawn_blocking(move || (store.usage(), crate::stats::dir_usage(&root)))
                .await
                .map_err(|e| CriError::Internal(e.to_string()))?;
        let now = podctl_shim::logfmt::now_ns();
        let fs = |mount: String, (bytes, inodes): (u64, u64)| proto::FilesystemUsage {
            timestamp: now,
            fs_id: Some(proto::FilesystemIdentifier { mountpoint: mount }),
            used_bytes: Some(proto::UInt64Value { value: bytes }),
            inodes_used: Some(proto::UInt64Value { value: inodes }),
        };
        Ok(proto::ImageFsInfoResponse {
            image_filesystems: vec![fs(self.config().image_root().display().to_string(), images)],
            container_filesystems: vec![fs(
                self.config().root.join("containers").display().to_string(),
                containers,
            )],
        })
    }
}
