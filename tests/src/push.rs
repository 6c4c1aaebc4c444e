//! A registry v2 push client (monolithic uploads) with Basic and Bearer
//! token auth, enough to publish test images.
//!
//! Protocol: `HEAD /v2/REPO/blobs/DIGEST` (present → skip), else
//! `POST /v2/REPO/blobs/uploads/` → `Location`, then
//! `PUT LOCATION?digest=DIGEST` with the whole blob; finally
//! `PUT /v2/REPO/manifests/REF` with the manifest's media type as
//! `Content-Type`. A 401 is answered once: `Basic` with the credentials,
//! `Bearer realm=..,service=..` by fetching a token from the realm (Basic
//! credentials, `scope=repository:REPO:pull,push`); the token is then reused
//! for that repository.
//!
//! # Hostile content against a real registry
//!
//! docker-registry 2.8 checks what it is given, which limits what a test can
//! publish:
//! - a blob upload whose `?digest=` does not match the body is refused
//!   (`400 DIGEST_INVALID`, see [`Pusher::blob_claiming`]);
//! - a manifest naming a blob the repository does not have is refused
//!   (`400 MANIFEST_BLOB_UNKNOWN`);
//! - a manifest whose descriptor *size* differs from the blob's, or whose
//!   layer media type is unknown, is accepted — so a size mismatch can be
//!   published with [`push_manifest_raw`] (or by editing `Layer::blob` after
//!   computing the manifest);
//! - a config whose `diff_ids` do not match the layers is accepted (the
//!   registry never looks inside layers);
//! - a truncated or garbage layer is fine as long as it is uploaded under its
//!   own digest;
//! - content that does not match its digest can only be served by changing
//!   the stored file afterwards: [`crate::registry::Registry::tamper_blob`]
//!   (the filesystem driver serves the file as it is, with its new length).

use std::collections::HashMap;

use base64::Engine as _;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};

use crate::oci::{Image, Index};
use crate::{sha256, Result, TestbedError};

/// Pushes blobs and manifests to one registry.
pub struct Pusher {
    base: String,
    client: Client,
    creds: Option<(String, String)>,
    auth: HashMap<String, String>,
}

impl Pusher {
    /// `base` like `http://127.0.0.1:5000`.
    pub fn new(base: &str, creds: Option<(&str, &str)>) -> Self {
        Pusher {
            base: base.trim_end_matches('/').to_string(),
            // Test registries use self-signed certificates.
            client: Client::builder()
                .danger_accept_invalid_certs(true)
                .build()
                .unwrap_or_default(),
            creds: creds.map(|(u, p)| (u.to_string(), p.to_string())),
            auth: HashMap::new(),
        }
    }

    fn err(&self, url: &str, reason: impl Into<String>) -> TestbedError {
        TestbedError::Registry {
            url: url.to_string(),
            reason: reason.into(),
        }
    }

    /// Send a request, answering one auth challenge.
    fn send(
        &mut self,
        repo: &str,
        url: &str,
        build: impl Fn(&Client) -> RequestBuilder,
    ) -> Result<Response> {
        for attempt in 0..2 {
            let mut req = build(&self.client);
            if let Some(a) = self.auth.get(repo) {
                req = req.header("Authorization", a);
            }
            let resp = req.send().map_err(|e| TestbedError::Http {
                url: url.into(),
                source: e,
            })?;
            if resp.status().as_u16() != 401 || attempt == 1 {
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let value = self.answer(url, &challenge, repo)?;
            self.auth.insert(repo.to_string(), value);
        }
        Err(self.err(url, "unauthorized"))
    }

    fn answer(&self, url: &str, challenge: &str, repo: &str) -> Result<String> {
        let (u, p) = self
            .creds
            .clone()
            .ok_or_else(|| self.err(url, "registry wants credentials, none given"))?;
        if challenge.starts_with("Basic") {
            let enc = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            return Ok(format!("Basic {enc}"));
        }
        let param = |k: &str| {
            challenge
                .split(&format!("{k}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(str::to_string)
        };
        let realm =
            param("realm").ok_or_else(|| self.err(url, format!("challenge {challenge:?}")))?;
        let service = param("service").unwrap_or_default();
        let scope = format!("repository:{repo}:pull,push");
        let resp = self
            .client
            .get(&realm)
            .query(&[("service", service.as_str()), ("scope", scope.as_str())])
            .basic_auth(u, Some(p))
            .send()
            .map_err(|e| TestbedError::Http {
                url: realm.clone(),
                source: e,
            })?;
        let v: serde_json::Value = resp.json().map_err(|e| TestbedError::Http {
            url: realm.clone(),
            source: e,
        })?;
        let tok = v["token"]
            .as_str()
            .ok_or_else(|| self.err(&realm, "no token in answer"))?;
        Ok(format!("Bearer {tok}"))
    }

    /// Upload a blob under its true digest (skipped when present).
    pub fn blob(&mut self, repo: &str, data: &[u8]) -> Result<String> {
        let digest = sha256(data);
        let head = format!("{}/v2/{repo}/blobs/{digest}", self.base);
        let r = self.send(repo, &head, |c| c.head(&head))?;
        if r.status().is_success() {
            return Ok(digest);
        }
        let (status, body) = self.blob_claiming(repo, &digest, data)?;
        if status != 201 {
            let url = format!("{}/v2/{repo}/blobs/uploads/", self.base);
            return Err(self.err(&url, format!("upload: {status}: {body}")));
        }
        Ok(digest)
    }

    /// Try to upload `data` claiming it has digest `claimed` (which may be
    /// wrong); returns the registry's final status and body instead of
    /// failing on refusal.
    pub fn blob_claiming(
        &mut self,
        repo: &str,
        claimed: &str,
        data: &[u8],
    ) -> Result<(u16, String)> {
        let start = format!("{}/v2/{repo}/blobs/uploads/", self.base);
        let r = self.send(repo, &start, |c| c.post(&start))?;
        if r.status().as_u16() != 202 {
            return Err(self.err(&start, format!("upload start: {}", r.status())));
        }
        let loc = self.location(&start, &r)?;
        let sep = if loc.contains('?') { '&' } else { '?' };
        let put = format!("{loc}{sep}digest={claimed}");
        let body = data.to_vec();
        let r = self.send(repo, &put, |c| {
            c.put(&put)
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(body.clone())
        })?;
        let status = r.status().as_u16();
        Ok((status, r.text().unwrap_or_default()))
    }

    fn location(&self, url: &str, r: &Response) -> Result<String> {
        let loc = r
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.err(url, "no Location"))?
            .to_string();
        Ok(if loc.starts_with('/') {
            format!("{}{loc}", self.base)
        } else {
            loc
        })
    }

    /// An authenticated `GET /v2/REPO/manifests/REF` accepting `accept`:
    /// (status, content type, body).
    pub fn get_manifest(
        &mut self,
        repo: &str,
        reference: &str,
        accept: &str,
    ) -> Result<(u16, String, Vec<u8>)> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let accept = accept.to_string();
        let r = self.send(repo, &url, |c| c.get(&url).header("Accept", &accept))?;
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = r.bytes().map_err(|e| TestbedError::Http {
            url: url.clone(),
            source: e,
        })?;
        Ok((status, ct, body.to_vec()))
    }

    /// Put a manifest (or index) under `reference` (a tag or digest).
    pub fn manifest(
        &mut self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let body = bytes.to_vec();
        let mt = media_type.to_string();
        let r = self.send(repo, &url, |c| {
            c.put(&url).header(CONTENT_TYPE, &mt).body(body.clone())
        })?;
        if r.status().as_u16() != 201 {
            let s = r.status();
            return Err(self.err(
                &url,
                format!("manifest: {s}: {}", r.text().unwrap_or_default()),
            ));
        }
        let ours = sha256(bytes);
        let theirs = r
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(&ours);
        if theirs != ours {
            return Err(self.err(
                &url,
                format!("registry stored the manifest as {theirs}, expected {ours}"),
            ));
        }
        Ok(ours)
    }

    /// Push an image's blobs and manifest; returns the manifest digest.
    pub fn image(&mut self, repo: &str, tag: &str, img: &Image) -> Result<String> {
        self.blobs_of(repo, img)?;
        self.manifest(repo, tag, &img.media_type, &img.manifest)
    }

    fn blobs_of(&mut self, repo: &str, img: &Image) -> Result<()> {
        for l in &img.layers {
            self.blob(repo, &l.blob)?;
        }
        self.blob(repo, &img.config)?;
        Ok(())
    }

    /// Push an index with all its images; returns the index digest.
    pub fn index(&mut self, repo: &str, tag: &str, idx: &Index) -> Result<String> {
        for img in &idx.images {
            self.blobs_of(repo, img)?;
            self.manifest(repo, &img.manifest_digest, &img.media_type, &img.manifest)?;
        }
        self.manifest(repo, tag, &idx.media_type, &idx.bytes)
    }
}

/// Push `img` (blobs, then manifest under `tag`) to the registry at
/// `registry_url` (`http://127.0.0.1:PORT`); returns the manifest digest.
pub fn push_image(
    registry_url: &str,
    repo: &str,
    tag: &str,
    img: &Image,
    auth: Option<(&str, &str)>,
) -> Result<String> {
    Pusher::new(registry_url, auth).image(repo, tag, img)
}

/// Push every image of `idx` (by digest), then the index under `tag`;
/// returns the index digest.
pub fn push_index(
    registry_url: &str,
    repo: &str,
    tag: &str,
    idx: &Index,
    auth: Option<(&str, &str)>,
) -> Result<String> {
    Pusher::new(registry_url, auth).index(repo, tag, idx)
}

/// Upload one blob under its true digest; returns the digest.
pub fn push_blob(
    registry_url: &str,
    repo: &str,
    data: &[u8],
    auth: Option<(&str, &str)>,
) -> Result<String> {
    Pusher::new(registry_url, auth).blob(repo, data)
}

/// Put arbitrary manifest bytes under `reference` with `media_type` as
/// Content-Type (the blobs it names must already be in `repo`); returns the
/// sha256 of `bytes`.
pub fn push_manifest_raw(
    registry_url: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
    auth: Option<(&str, &str)>,
) -> Result<String> {
    Pusher::new(registry_url, auth).manifest(repo, reference, media_type, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::{image, Compression, ImageSpec, LayerBuilder, OCI_MANIFEST};
    use crate::registry::Registry;

    /// What the real registry lets a test publish (see the module docs).
    #[test]
    fn registry_checks_digests_but_not_sizes() -> Result<()> {
        let reg = Registry::start()?;
        let url = reg.url();
        let mut p = Pusher::new(&url, None);
        let a = LayerBuilder::new()
            .file("a", 0o644, b"a")
            .finish(Compression::Gzip);
        let b = LayerBuilder::new()
            .file("b", 0o644, &crate::fixtures::noise(1, 5000))
            .finish(Compression::Gzip);

        let (status, body) = p.blob_claiming("t/x", &a.digest, &b.blob)?;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("DIGEST_INVALID"), "{body}");

        // A manifest naming a blob the repository lacks is refused.
        let img = image(vec![a.clone()], &ImageSpec::default());
        push_blob(&url, "t/x", &img.config, None)?;
        let e = push_manifest_raw(&url, "t/x", "v1", OCI_MANIFEST, &img.manifest, None);
        assert!(
            e.as_ref()
                .is_err_and(|e| e.to_string().contains("MANIFEST_BLOB_UNKNOWN")),
            "{e:?}"
        );

        // Claiming A's digest with B's size is accepted.
        push_blob(&url, "t/x", &a.blob, None)?;
        let mut liar = a.clone();
        liar.blob = b.blob.clone();
        let lying = image(vec![liar], &ImageSpec::default());
        push_blob(&url, "t/x", &lying.config, None)?;
        let d = push_manifest_raw(&url, "t/x", "v1", OCI_MANIFEST, &lying.manifest, None)?;
        assert_eq!(d, lying.manifest_digest);

        // Serving content that does not match the digest: tamper with storage.
        reg.tamper_blob(&a.digest, &b.blob)?;
        let blob_url = format!("{url}/v2/t/x/blobs/{}", a.digest);
        let got = reqwest::blocking::get(&blob_url)
            .and_then(|r| r.bytes())
            .map_err(|source| TestbedError::Http {
                url: blob_url.clone(),
                source,
            })?;
        assert_eq!(&got[..], &b.blob[..]);
        Ok(())
    }

    #[test]
    fn docker_schema2_and_zstd_images_are_accepted() -> Result<()> {
        let reg = Registry::start()?;
        let l = LayerBuilder::new()
            .file("f", 0o644, b"f")
            .finish(Compression::Zstd);
        let oci = image(vec![l.clone()], &ImageSpec::default());
        assert_eq!(
            push_image(&reg.url(), "t/zstd", "v1", &oci, None)?,
            oci.manifest_digest
        );
        let l = LayerBuilder::new()
            .file("f", 0o644, b"f")
            .finish(Compression::Gzip);
        let docker = image(
            vec![l],
            &ImageSpec {
                docker: true,
                ..Default::default()
            },
        );
        let text = String::from_utf8_lossy(&docker.manifest).into_owned();
        assert!(text.contains(crate::oci::DOCKER_LAYER_GZIP), "{text}");
        assert!(text.contains(crate::oci::DOCKER_CONFIG), "{text}");
        let d = push_image(&reg.url(), "t/docker", "v1", &docker, None)?;
        let (status, ct, body) = Pusher::new(&reg.url(), None).get_manifest(
            "t/docker",
            "v1",
            crate::oci::DOCKER_MANIFEST,
        )?;
        assert_eq!((status, ct.as_str()), (200, crate::oci::DOCKER_MANIFEST));
        assert_eq!(sha256(&body), d);
        let idx = crate::fixtures::multiarch(true);
        assert_eq!(
            push_index(&reg.url(), "t/list", "v1", &idx, None)?,
            idx.digest
        );
        Ok(())
    }
}
