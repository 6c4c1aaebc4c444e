//! Images a container needs before it is created: its own and those of
//! the image volumes it mounts, each pulled by its pull policy (default
//! `Always` for `:latest` or no tag, else `IfNotPresent`), with events
//! and back-off as the kubelet gives them.

use std::time::Instant;

use k8s_openapi::api::core::v1::Container;
use podctl_cri::proto;
use tonic::Request;

use super::PodWorker;
use crate::cri::Cri;
use crate::error::{CriContext, NodeError, Result};
use crate::events::EventType;

/// Whether an image can be used: its ID, or why the container waits.
pub(super) enum Image {
    Ready(String),
    Waiting(String, String),
}

/// The pull policy the API server would default to for `image`.
fn default_policy(image: &str) -> &'static str {
    let latest = !image.contains('@')
        && image
            .rsplit('/')
            .next()
            .is_none_or(|last| !last.contains(':') || last.ends_with(":latest"));
    if latest {
        "Always"
    } else {
        "IfNotPresent"
    }
}

impl<C: Cri> PodWorker<C> {
    /// The container's own image.
    pub(super) async fn ensure_image(&mut self, c: &Container) -> Result<Image> {
        let image =
            c.image
                .clone()
                .filter(|i| !i.is_empty())
                .ok_or_else(|| NodeError::Container {
                    pod: self.full_name(),
                    container: c.name.clone(),
                    reason: "no image".into(),
                })?;
        let policy = c.image_pull_policy.clone();
        self.ensure(&c.name, &format!("image:{}", c.name), &image, policy)
            .await
    }

    /// The images of the image volumes `c` mounts; the first one not
    /// ready says why `c` waits.
    pub(super) async fn ensure_volume_images(&mut self, c: &Container) -> Result<Image> {
        let mounted: Vec<(String, String, Option<String>)> = self
            .pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .filter(|v| c.volume_mounts.iter().flatten().any(|m| m.name == v.name))
            .filter_map(|v| {
                let i = v.image.as_ref()?;
                let reference = i.reference.clone().unwrap_or_default();
                Some((v.name.clone(), reference, i.pull_policy.clone()))
            })
            .collect();
        let mut last = Image::Ready(String::new());
        for (volume, reference, policy) in mounted {
            if reference.is_empty() {
                return Err(NodeError::Container {
                    pod: self.full_name(),
                    container: c.name.clone(),
                    reason: format!("image volume {volume:?} has no reference"),
                });
            }
            let key = format!("image-volume:{volume}");
            last = self.ensure(&c.name, &key, &reference, policy).await?;
            if matches!(last, Image::Waiting(..)) {
                break;
            }
        }
        Ok(last)
    }

    /// `image` present by `policy` (pulled if need be) for container
    /// `container`; `key` names its pull back-off.
    async fn ensure(
        &mut self,
        container: &str,
        key: &str,
        image: &str,
        policy: Option<String>,
    ) -> Result<Image> {
        let policy = policy.unwrap_or_else(|| default_policy(image).into());
        let spec = proto::ImageSpec {
            image: image.to_string(),
            ..Default::default()
        };
        let present = self
            .cri
            .image_status(Request::new(proto::ImageStatusRequest {
                image: Some(spec.clone()),
                verbose: false,
            }))
            .await
            .cri("ImageStatus")?
            .image;
        match (policy.as_str(), present) {
            ("IfNotPresent" | "Never", Some(i)) => return Ok(Image::Ready(i.id)),
            ("Never", None) => {
                return Ok(Image::Waiting(
                    "ErrImageNeverPull".into(),
                    format!("image {image} is not present with pull policy of Never"),
                ))
            }
            _ => {}
        }
        let now = Instant::now();
        if !self.backoff.remaining(key, now).is_zero() {
            return Ok(Image::Waiting(
                "ImagePullBackOff".into(),
                format!("Back-off pulling image {image:?}"),
            ));
        }
        self.event(
            Some(container),
            EventType::Normal,
            "Pulling",
            format!("Pulling image {image:?}"),
        );
        let t0 = Instant::now();
        match self
            .cri
            .pull_image(Request::new(proto::PullImageRequest {
                image: Some(spec),
                auth: crate::pull_secrets::for_pod(
                    &self.pod,
                    &self.ns,
                    image,
                    self.sources.as_ref(),
                )
                .await,
                sandbox_config: self.sandbox.as_ref().map(|s| s.1.clone()),
            }))
            .await
        {
            Ok(r) => {
                self.backoff.forget(key);
                self.event(
                    Some(container),
                    EventType::Normal,
                    "Pulled",
                    format!(
                        "Successfully pulled image {image:?} in {:.3}s",
                        t0.elapsed().as_secs_f64()
                    ),
                );
                Ok(Image::Ready(r.into_inner().image_ref))
            }
            Err(s) => {
                self.backoff
                    .exited(key, Instant::now(), std::time::Duration::ZERO);
                let msg = format!("Failed to pull image {image:?}: {}", s.message());
                self.event(Some(container), EventType::Warning, "Failed", msg.clone());
                Ok(Image::Waiting("ErrImagePull".into(), msg))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::default_policy;

    #[test]
    fn latest_or_untagged_images_are_always_pulled() {
        assert_eq!(default_policy("busybox"), "Always");
        assert_eq!(default_policy("reg:5000/busybox"), "Always");
        assert_eq!(default_policy("reg:5000/busybox:latest"), "Always");
        assert_eq!(default_policy("reg:5000/busybox:1.36"), "IfNotPresent");
        assert_eq!(default_policy("busybox@sha256:0123"), "IfNotPresent");
    }
}
