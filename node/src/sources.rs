//! Where ConfigMaps, Secrets and service-account tokens come from: the
//! YAML stream (or files) next to the pod in standalone mode, the API
//! server in node mode. The engine only sees this trait.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};

use crate::error::Result;

/// A service-account token (TokenRequest's answer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub token: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// What a token is requested for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    pub namespace: String,
    pub service_account: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub audience: Option<String>,
    pub expiration_seconds: i64,
}

pub trait Sources: Send + Sync {
    /// The ConfigMap, `None` if it does not exist.
    fn config_map<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<ConfigMap>>>;

    /// The Secret, `None` if it does not exist.
    fn secret<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Secret>>>;

    /// A token for the pod's service account, `None` where there is no
    /// token issuer (standalone).
    fn token<'a>(&'a self, req: &'a TokenRequest) -> BoxFuture<'a, Result<Option<Token>>>;

    /// The Services whose environment variables a pod in `namespace`
    /// gets (`default/kubernetes` always; the namespace's own when
    /// `links`, i.e. enableServiceLinks). None in standalone mode.
    fn services<'a>(
        &'a self,
        _namespace: &'a str,
        _links: bool,
    ) -> BoxFuture<'a, Result<Vec<Service>>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// ConfigMaps and Secrets given up front (standalone mode), keyed by
/// (namespace, name). No token issuer.
#[derive(Clone, Debug, Default)]
pub struct StaticSources {
    pub config_maps: BTreeMap<(String, String), ConfigMap>,
    pub secrets: BTreeMap<(String, String), Secret>,
}

impl StaticSources {
    pub fn add_config_map(&mut self, cm: ConfigMap) {
        let ns = cm
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = cm.metadata.name.clone().unwrap_or_default();
        self.config_maps.insert((ns, name), cm);
    }

    pub fn add_secret(&mut self, s: Secret) {
        let ns = s
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = s.metadata.name.clone().unwrap_or_default();
        self.secrets.insert((ns, name), s);
    }
}

impl Sources for StaticSources {
    fn config_map<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<ConfigMap>>> {
        let v = self
            .config_maps
            .get(&(namespace.to_string(), name.to_string()))
            .cloned();
        Box::pin(async move { Ok(v) })
    }

    fn secret<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Secret>>> {
        let v = self
            .secrets
            .get(&(namespace.to_string(), name.to_string()))
            .cloned();
        Box::pin(async move { Ok(v) })
    }

    fn token<'a>(&'a self, _req: &'a TokenRequest) -> BoxFuture<'a, Result<Option<Token>>> {
        Box::pin(async { Ok(None) })
    }
}
