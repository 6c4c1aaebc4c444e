//! Errors of the runtime, each naming the container or path involved.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{id}: no such container or sandbox")]
    NotFound { id: String },
    #[error("sandbox {id}: {reason}")]
    Sandbox { id: String, reason: String },
    #[error("sandbox {id}: CNI: {reason}")]
    Cni { id: String, reason: String },
    #[error("container {id}: {reason}")]
    Container { id: String, reason: String },
    #[error("container {id}: user {user:?}: {reason}")]
    User {
        id: String,
        user: String,
        reason: String,
    },
    #[error("shim {cmd} for container {id} failed: {reason}")]
    Shim {
        id: String,
        cmd: String,
        reason: String,
    },
    #[error(
        "podctl-shim not found (looked in {}); build it with podctl \
         (`cargo build --release -p podctl -p podctl-shim` puts it next to podctl), \
         install the podctl package, or set `shim` in the configuration",
        .looked_in.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    ShimNotFound { looked_in: Vec<PathBuf> },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("container {id}: invalid OCI spec: {reason}")]
    Spec { id: String, reason: String },
    #[error("runtime configuration: {reason}")]
    Config { reason: String },
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| RuntimeError::Io {
            op,
            path: path.into(),
            source,
        })
    }
}
