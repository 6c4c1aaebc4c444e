//! Registry host configuration (mirrors, plain-HTTP hosts) and credentials.
//!
//! The TOML shape is modelled on containerd's per-host configuration:
//!
//! ```toml
//! [hosts."docker.io"]
//! mirrors = ["http://127.0.0.1:5000"]
//!
//! [hosts."127.0.0.1:5000"]
//! insecure = true          # plain HTTP
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::{ImageError, IoContext, Result};

/// Per-registry settings.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Mirror base URLs (with scheme), tried in order before the upstream.
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// Talk plain HTTP to the upstream (and to scheme-less mirrors).
    #[serde(default)]
    pub insecure: bool,
    /// Accept invalid TLS certificates from this host.
    #[serde(default)]
    pub skip_verify: bool,
    /// Upstream base URL override (e.g. `https://registry-1.docker.io`).
    #[serde(default)]
    pub server: Option<String>,
    /// Skip the upstream entirely and use only mirrors.
    #[serde(default)]
    pub mirrors_only: bool,
}

/// All registry settings.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    #[serde(default)]
    pub hosts: BTreeMap<String, HostConfig>,
    /// Static credentials per registry host.
    #[serde(default)]
    pub auths: BTreeMap<String, Credentials>,
}

/// One endpoint to try for a registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Base URL without trailing slash, e.g. `http://127.0.0.1:5000`.
    pub base: String,
    /// Host part used to look up credentials.
    pub host: String,
    pub skip_verify: bool,
    pub is_mirror: bool,
}

/// Credentials for one registry (CRI `AuthConfig` has the same fields).
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// Base64 `user:password` as in docker's config.json.
    #[serde(default)]
    pub auth: String,
    /// A bearer token to send as is.
    #[serde(default)]
    pub registry_token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Username and password, decoding `auth` if needed.
    pub fn basic(&self) -> Option<(String, String)> {
        if !self.username.is_empty() {
            return Some((self.username.clone(), self.password.clone()));
        }
        if self.auth.is_empty() {
            return None;
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(self.auth.trim())
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (u, p) = text.split_once(':')?;
        Some((u.to_string(), p.to_string()))
    }
}

impl RegistryConfig {
    /// Load from a TOML file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).ctx("read", path)?;
        toml::from_str(&text).map_err(|e| ImageError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Merge the `auths` of a docker `config.json` (entries do not override
    /// credentials already configured).
    pub fn load_docker_config(&mut self, path: &Path) -> Result<()> {
        #[derive(Deserialize)]
        struct DockerConfig {
            #[serde(default)]
            auths: BTreeMap<String, DockerAuth>,
        }
        #[derive(Deserialize)]
        struct DockerAuth {
            #[serde(default)]
            auth: String,
            #[serde(default)]
            username: String,
            #[serde(default)]
            password: String,
            #[serde(default, rename = "registrytoken")]
            registry_token: String,
        }
        let text = std::fs::read_to_string(path).ctx("read", path)?;
        let cfg: DockerConfig = serde_json::from_str(&text).map_err(|e| ImageError::Config {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        for (server, a) in cfg.auths {
            let host = normalise_auth_host(&server);
            self.auths.entry(host).or_insert(Credentials {
                username: a.username,
                password: a.password,
                auth: a.auth,
                registry_token: a.registry_token,
            });
        }
        Ok(())
    }

    /// Endpoints for a registry host: mirrors first, then the upstream.
    pub fn endpoints(&self, registry: &str) -> Vec<Endpoint> {
        let host_cfg = self.hosts.get(registry).cloned().unwrap_or_default();
        let mut out = Vec::new();
        for m in &host_cfg.mirrors {
            let base = if m.contains("://") {
                m.trim_end_matches('/').to_string()
            } else {
                let mirror_cfg = self.hosts.get(m.as_str());
                let scheme = if mirror_cfg.map(|c| c.insecure).unwrap_or(false) || is_local(m) {
                    "http"
                } else {
                    "https"
                };
                format!("{scheme}://{}", m.trim_end_matches('/'))
            };
            let host = host_of(&base);
            let skip_verify = self
                .hosts
                .get(&host)
                .map(|c| c.skip_verify)
                .unwrap_or(false);
            out.push(Endpoint {
                base,
                host,
                skip_verify,
                is_mirror: true,
            });
        }
        if !host_cfg.mirrors_only || out.is_empty() {
            let base = match &host_cfg.server {
                Some(s) => s.trim_end_matches('/').to_string(),
                None if registry == crate::reference::DEFAULT_REGISTRY => {
                    "https://registry-1.docker.io".to_string()
                }
                None if host_cfg.insecure || is_local(registry) => format!("http://{registry}"),
                None => format!("https://{registry}"),
            };
            out.push(Endpoint {
                base,
                host: registry.to_string(),
                skip_verify: host_cfg.skip_verify,
                is_mirror: false,
            });
        }
        out
    }

    /// Static credentials for a host, if any.
    pub fn credentials_for(&self, host: &str) -> Option<&Credentials> {
        self.auths.get(host)
    }
}

fn is_local(host: &str) -> bool {
    let h = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    h == "localhost" || h == "127.0.0.1" || h == "[::1]" || h.starts_with("127.")
}

fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.split('/').next().unwrap_or(rest).to_string()
}

fn normalise_auth_host(server: &str) -> String {
    let h = host_of(server);
    match h.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        _ => h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_come_first() {
        let cfg: RegistryConfig = toml::from_str(
            r#"
            [hosts."docker.io"]
            mirrors = ["http://127.0.0.1:5000", "mirror.example"]
            [hosts."reg.example:5000"]
            insecure = true
            "#,
        )
        .unwrap_or_default();
        let eps = cfg.endpoints("docker.io");
        let bases: Vec<_> = eps.iter().map(|e| e.base.as_str()).collect();
        assert_eq!(
            bases,
            [
                "http://127.0.0.1:5000",
                "https://mirror.example",
                "https://registry-1.docker.io"
            ]
        );
        assert_eq!(
            cfg.endpoints("reg.example:5000")[0].base,
            "http://reg.example:5000"
        );
        assert_eq!(cfg.endpoints("quay.io")[0].base, "https://quay.io");
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<RegistryConfig>("[hosts.\"a\"]\nmirorrs = []").is_err());
    }

    #[test]
    fn decodes_docker_auth() {
        let c = Credentials {
            auth: "dXNlcjpwYXNz".into(),
            ..Default::default()
        };
        assert_eq!(c.basic(), Some(("user".into(), "pass".into())));
    }
}
