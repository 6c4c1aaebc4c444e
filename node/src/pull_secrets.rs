//! Registry credentials from a pod's `imagePullSecrets`, as the kubelet
//! reads them: Secrets of type `kubernetes.io/dockerconfigjson`
//! (`.dockerconfigjson`, `{"auths": {...}}`) or `kubernetes.io/dockercfg`
//! (`.dockercfg`, the map alone), each entry keyed by a registry (with or
//! without scheme and path) and holding `auth` (base64 `user:password`)
//! or `username`/`password`. The entry whose registry matches the image's
//! host (and path prefix) the closest is used.

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Pod, Secret};
use podctl_cri::proto;
use serde_json::Value;

use crate::sources::Sources;

/// `https://host:port/path` → (`host:port`, `path`).
fn split_key(key: &str) -> (String, String) {
    let rest = key
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(key)
        .trim_end_matches('/');
    match rest.split_once('/') {
        Some((h, p)) => (h.to_lowercase(), p.to_string()),
        None => (rest.to_lowercase(), String::new()),
    }
}

/// The image reference's registry host and repository path.
fn image_location(image: &str) -> (String, String) {
    match podctl_images::Reference::parse(image) {
        Ok(r) => (r.registry.to_lowercase(), r.repository),
        Err(_) => (String::new(), String::new()),
    }
}

fn entry_auth(v: &Value) -> Option<proto::AuthConfig> {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (mut username, mut password) = (s("username"), s("password"));
    let auth = s("auth");
    if username.is_empty() && !auth.is_empty() {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (u, p) = text.split_once(':')?;
        username = u.to_string();
        password = p.to_string();
    }
    (!username.is_empty()).then(|| proto::AuthConfig {
        username,
        password,
        ..Default::default()
    })
}

/// The entries (`registry key` → value) of a pull secret.
fn entries(secret: &Secret) -> Vec<(String, Value)> {
    let data = secret.data.clone().unwrap_or_default();
    // A manifest's Secret may carry stringData (the API server folds it
    // into data; a standalone pod's file does not go through one).
    let text = secret.string_data.clone().unwrap_or_default();
    let parsed = |k: &str| -> Option<Value> {
        data.get(k)
            .and_then(|b| serde_json::from_slice::<Value>(&b.0).ok())
            .or_else(|| text.get(k).and_then(|t| serde_json::from_str(t).ok()))
    };
    let map = parsed(".dockerconfigjson")
        .and_then(|v| v.get("auths").cloned())
        .or_else(|| parsed(".dockercfg"));
    map.and_then(|m| m.as_object().cloned())
        .map(|o| o.into_iter().collect())
        .unwrap_or_default()
}

/// The best credentials among `secrets` for `image`.
pub fn auth_for(secrets: &[Secret], image: &str) -> Option<proto::AuthConfig> {
    let (host, path) = image_location(image);
    let mut best: Option<(usize, proto::AuthConfig)> = None;
    for s in secrets {
        for (key, v) in entries(s) {
            let (kh, kp) = split_key(&key);
            // docker.io images match the index's historical keys too.
            let host_ok = kh == host
                || (host == "docker.io"
                    && matches!(kh.as_str(), "index.docker.io" | "registry-1.docker.io"));
            if !host_ok || !(kp.is_empty() || path.starts_with(&kp)) {
                continue;
            }
            let score = kp.len() + 1;
            if best.as_ref().is_none_or(|(b, _)| score > *b) {
                if let Some(a) = entry_auth(&v) {
                    best = Some((score, a));
                }
            }
        }
    }
    best.map(|(_, a)| a)
}

/// Credentials for `image` from the pod's pull secrets (missing secrets
/// are skipped, as the kubelet does).
pub async fn for_pod(
    pod: &Pod,
    ns: &str,
    image: &str,
    sources: &dyn Sources,
) -> Option<proto::AuthConfig> {
    let names: Vec<String> = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.name)
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return None;
    }
    let mut secrets = Vec::new();
    for n in names {
        match sources.secret(ns, &n).await {
            Ok(Some(s)) => secrets.push(s),
            Ok(None) => tracing::warn!(secret = %n, %ns, "image pull secret not found"),
            Err(e) => tracing::warn!(secret = %n, %ns, error = %e, "image pull secret"),
        }
    }
    auth_for(&secrets, image)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(key: &str, json: &str) -> Secret {
        Secret {
            data: Some([(key.to_string(), ByteString(json.as_bytes().to_vec()))].into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_matching_registry_entry_gives_the_credentials() {
        let auth = base64::engine::general_purpose::STANDARD.encode("me:pw");
        let s = secret(
            ".dockerconfigjson",
            &format!(
                r#"{{"auths": {{"https://other.example": {{"auth": "{auth}"}},
                   "http://127.0.0.1:5000": {{"username": "u", "password": "p"}},
                   "127.0.0.1:5000/team": {{"auth": "{auth}"}}}}}}"#
            ),
        );
        let a = auth_for(std::slice::from_ref(&s), "127.0.0.1:5000/team/app:v1");
        assert_eq!(
            a.map(|a| (a.username, a.password)),
            Some(("me".into(), "pw".into()))
        );
        let a = auth_for(std::slice::from_ref(&s), "127.0.0.1:5000/other/app:v1");
        assert_eq!(
            a.map(|a| (a.username, a.password)),
            Some(("u".into(), "p".into()))
        );
        assert_eq!(auth_for(&[s], "quay.io/x/y:1"), None);
        let legacy = secret(
            ".dockercfg",
            &format!(r#"{{"docker.io": {{"auth": "{auth}"}}}}"#),
        );
        assert!(auth_for(&[legacy], "busybox").is_some());
    }
}
