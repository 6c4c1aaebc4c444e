//! Registry v2 / OCI distribution pull client: manifests and blobs over
//! HTTP(S), with Basic and Bearer-token authentication and mirrors.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, RANGE, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};
use serde::Deserialize;

use crate::config::{Credentials, Endpoint, RegistryConfig};
use crate::error::{ImageError, Result};
use crate::media;

/// The HTTP client for registries.
pub struct RegistryClient {
    config: RegistryConfig,
    http: reqwest::Client,
    http_insecure: reqwest::Client,
    /// Bearer tokens by (endpoint host, scope).
    tokens: Mutex<HashMap<(String, String), String>>,
}

/// What to request from a repository.
#[derive(Clone, Debug)]
pub struct Target<'a> {
    pub endpoint: &'a Endpoint,
    pub repository: &'a str,
    /// Per-request credentials (CRI auth config), overriding configured ones.
    pub credentials: Option<&'a Credentials>,
}

impl RegistryClient {
    pub fn new(config: RegistryConfig) -> Result<Self> {
        let build = |insecure: bool| {
            reqwest::Client::builder()
                .user_agent(concat!("podctl/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(15))
                .read_timeout(Duration::from_secs(60))
                .danger_accept_invalid_certs(insecure)
                .build()
                .map_err(|e| ImageError::Http {
                    url: "(client setup)".into(),
                    source: e,
                })
        };
        Ok(RegistryClient {
            config,
            http: build(false)?,
            http_insecure: build(true)?,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// GET a manifest; the response carries the body and content type.
    pub async fn get_manifest(&self, t: &Target<'_>, object: &str) -> Result<Response> {
        let url = format!(
            "{}/v2/{}/manifests/{}",
            t.endpoint.base, t.repository, object
        );
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(media::MANIFEST_ACCEPT));
        self.get(t, &url, headers).await
    }

    /// GET a blob, from byte `offset` on (a Range request when > 0).
    pub async fn get_blob(&self, t: &Target<'_>, digest: &str, offset: u64) -> Result<Response> {
        let url = format!("{}/v2/{}/blobs/{}", t.endpoint.base, t.repository, digest);
        let mut headers = HeaderMap::new();
        if offset > 0 {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes={offset}-")) {
                headers.insert(RANGE, v);
            }
        }
        self.get(t, &url, headers).await
    }

    async fn get(&self, t: &Target<'_>, url: &str, headers: HeaderMap) -> Result<Response> {
        let client = if t.endpoint.skip_verify {
            &self.http_insecure
        } else {
            &self.http
        };
        let scope = format!("repository:{}:pull", t.repository);
        let key = (t.endpoint.host.clone(), scope.clone());
        let creds = t
            .credentials
            .or_else(|| self.config.credentials_for(&t.endpoint.host));
        let mut auth = self.cached_token(&key).map(|tok| format!("Bearer {tok}"));
        if auth.is_none() {
            auth = creds
                .filter(|c| !c.registry_token.is_empty())
                .map(|c| format!("Bearer {}", c.registry_token));
        }
        for attempt in 0..2 {
            let mut req = client.get(url).headers(headers.clone());
            if let Some(a) = &auth {
                req = req.header(AUTHORIZATION, a);
            }
            let resp = req.send().await.map_err(|e| ImageError::Http {
                url: url.to_string(),
                source: e,
            })?;
            if resp.status() != StatusCode::UNAUTHORIZED || attempt == 1 {
                return check_status(url, resp).await;
            }
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            auth = Some(
                self.authorize(client, url, &challenge, &scope, creds, &key)
                    .await?,
            );
        }
        Err(ImageError::Unauthorized {
            url: url.to_string(),
            reason: "credentials were refused".into(),
        })
    }

    fn cached_token(&self, key: &(String, String)) -> Option<String> {
        self.tokens.lock().ok()?.get(key).cloned()
    }

    async fn authorize(
        &self,
        client: &reqwest::Client,
        url: &str,
        challenge: &str,
        scope: &str,
        creds: Option<&Credentials>,
        key: &(String, String),
    ) -> Result<String> {
        let basic = creds.and_then(|c| c.basic());
        let (scheme, params) = parse_challenge(challenge);
        if scheme.eq_ignore_ascii_case("basic") {
            let (u, p) = basic.ok_or_else(|| ImageError::Unauthorized {
                url: url.to_string(),
                reason: "registry asks for Basic auth and no credentials are configured".into(),
            })?;
            let enc = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            return Ok(format!("Basic {enc}"));
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ImageError::Unauthorized {
                url: url.to_string(),
                reason: format!("unsupported challenge {challenge:?}"),
            });
        }
        let realm = params
            .get("realm")
            .ok_or_else(|| ImageError::Unauthorized {
                url: url.to_string(),
                reason: "bearer challenge without realm".into(),
            })?;
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = params.get("service") {
            query.push(("service", s));
        }
        let scope = params.get("scope").map(String::as_str).unwrap_or(scope);
        query.push(("scope", scope));
        let mut req = client.get(realm).query(&query);
        if let Some((u, p)) = &basic {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req.send().await.map_err(|e| ImageError::Http {
            url: realm.clone(),
            source: e,
        })?;
        if !resp.status().is_success() {
            return Err(ImageError::Unauthorized {
                url: realm.clone(),
                reason: format!("token endpoint answered {}", resp.status()),
            });
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
        }
        let body: TokenResponse = resp.json().await.map_err(|e| ImageError::Http {
            url: realm.clone(),
            source: e,
        })?;
        let token = if body.token.is_empty() {
            body.access_token
        } else {
            body.token
        };
        if token.is_empty() {
            return Err(ImageError::Unauthorized {
                url: realm.clone(),
                reason: "token endpoint returned no token".into(),
            });
        }
        if let Ok(mut map) = self.tokens.lock() {
            map.insert(key.clone(), token.clone());
        }
        Ok(format!("Bearer {token}"))
    }
}

async fn check_status(url: &str, resp: Response) -> Result<Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(ImageError::Unauthorized {
            url: url.to_string(),
            reason: format!("{status}: {body}"),
        });
    }
    Err(ImageError::Registry {
        url: url.to_string(),
        reason: format!("{status}: {body}"),
    })
}

/// Whether an error means "not here, try the next endpoint".
pub(crate) fn is_not_found(e: &ImageError) -> bool {
    match e {
        ImageError::Registry { reason, .. } => reason.starts_with("404"),
        _ => false,
    }
}

/// Parse `Bearer realm="..",service="..",scope=".."`.
pub(crate) fn parse_challenge(h: &str) -> (String, HashMap<String, String>) {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let Some((k, after)) = rest.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let (v, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        params.insert(k, v.to_string());
        rest = remaining.trim_start_matches(',').trim();
    }
    (scheme.to_string(), params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="http://127.0.0.1:1/token",service="reg",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(s, "Bearer");
        assert_eq!(
            p.get("realm").map(String::as_str),
            Some("http://127.0.0.1:1/token")
        );
        assert_eq!(p.get("service").map(String::as_str), Some("reg"));
        assert_eq!(
            p.get("scope").map(String::as_str),
            Some("repository:a/b:pull,push")
        );
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(s, "Basic");
        assert_eq!(p.get("realm").map(String::as_str), Some("Registry Realm"));
    }
}
