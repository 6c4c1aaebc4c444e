//! A registry v2 push client (monolithic uploads) with Basic and Bearer
//! token auth, enough to publish test images.

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
        let start = format!("{}/v2/{repo}/blobs/uploads/", self.base);
        let r = self.send(repo, &start, |c| c.post(&start))?;
        if r.status().as_u16() != 202 {
            return Err(self.err(&start, format!("upload start: {}", r.status())));
        }
        let loc = r
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.err(&start, "no Location"))?
            .to_string();
        let loc = if loc.starts_with('/') {
            format!("{}{loc}", self.base)
        } else {
            loc
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let put = format!("{loc}{sep}digest={digest}");
        let body = data.to_vec();
        let r = self.send(repo, &put, |c| {
            c.put(&put)
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(body.clone())
        })?;
        if r.status().as_u16() != 201 {
            let s = r.status();
            return Err(self.err(
                &put,
                format!("upload: {s}: {}", r.text().unwrap_or_default()),
            ));
        }
        Ok(digest)
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
        Ok(sha256(bytes))
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
