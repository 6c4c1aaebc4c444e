//! Errors of the pod lifecycle engine, each naming the pod (and the
//! container, volume or key) it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The pod spec cannot be run as written (the kubelet's
    /// CreateContainerConfigError and admission errors).
    #[error("pod {pod}: {reason}")]
    Config { pod: String, reason: String },
    /// A container's configuration refers to something missing or invalid
    /// (env from a missing ConfigMap key, a bad subPath, ...).
    #[error("pod {pod} container {container}: {reason}")]
    Container {
        pod: String,
        container: String,
        reason: String,
    },
    /// A volume could not be set up.
    #[error("pod {pod} volume {volume}: {reason}")]
    Volume {
        pod: String,
        volume: String,
        reason: String,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A CRI call failed (the status's message: its code is in `status`).
    #[error("{call}: {}", status.message())]
    Cri {
        call: &'static str,
        status: tonic::Status,
    },
    /// A call to the Kubernetes API server failed.
    #[error("API server: {what}: {source}")]
    Api {
        what: String,
        #[source]
        source: Box<kube::Error>,
    },
    /// The kubelet API server could not start (address, TLS files).
    #[error("{flag}: {reason}")]
    Flag { flag: &'static str, reason: String },
    #[error("kubelet API: {reason}")]
    Server { reason: String },
    /// Reading ConfigMaps, Secrets or tokens from their source failed.
    #[error("{what}: {reason}")]
    Source { what: String, reason: String },
}

pub type Result<T> = std::result::Result<T, NodeError>;

/// `.ctx("open", path)` on io results.
pub trait IoContext<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| NodeError::Io {
            op,
            path: path.into(),
            source,
        })
    }
}

/// `.cri("CreateContainer")` on tonic results.
pub trait CriContext<T> {
    fn cri(self, call: &'static str) -> Result<T>;
}

impl<T> CriContext<T> for std::result::Result<tonic::Response<T>, tonic::Status> {
    fn cri(self, call: &'static str) -> Result<T> {
        self.map(tonic::Response::into_inner)
            .map_err(|status| NodeError::Cri { call, status })
    }
}

/// `.api("create Node n1")` on kube results.
pub trait ApiContext<T> {
    fn api(self, what: impl Into<String>) -> Result<T>;
}

impl<T> ApiContext<T> for std::result::Result<T, kube::Error> {
    fn api(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|source| NodeError::Api {
            what: what.into(),
            source: Box::new(source),
        })
    }
}

/// The HTTP status code of an API error (409 Conflict, 404 Not Found...).
pub fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}
