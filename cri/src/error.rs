//! Errors of the CRI service, each naming the object involved, and their
//! mapping to gRPC status codes.

use std::path::PathBuf;

use podctl_images::ImageError;
use podctl_runtime::RuntimeError;

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("name {name:?} is reserved for {kind} {id}")]
    NameReserved {
        kind: &'static str,
        name: String,
        id: String,
    },
    #[error("{0}")]
    Runtime(#[from] RuntimeError),
    #[error("{0}")]
    Image(#[from] ImageError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("{0}")]
    Unavailable(String),
    /// A CRI feature podctl does not have.
    #[error("{0}")]
    Unimplemented(String),
    #[error("{0}")]
    Internal(String),
    /// An NRI plugin refused a lifecycle event.
    #[error("NRI plugin {plugin} refused {event}: {reason}")]
    Nri {
        plugin: String,
        event: &'static str,
        reason: String,
    },
}

pub type Result<T, E = CriError> = std::result::Result<T, E>;

impl CriError {
    pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        CriError::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| CriError::Io {
            op,
            path: path.into(),
            source,
        })
    }
}

impl From<CriError> for tonic::Status {
    fn from(e: CriError) -> Self {
        let msg = e.to_string();
        match &e {
            CriError::Invalid { .. } | CriError::Config { .. } => {
                tonic::Status::invalid_argument(msg)
            }
            CriError::NotFound { .. }
            | CriError::Runtime(RuntimeError::NotFound { .. })
            | CriError::Image(ImageError::NotFound { .. }) => tonic::Status::not_found(msg),
            CriError::Image(ImageError::RemoteNotFound { .. }) => tonic::Status::not_found(msg),
            CriError::Image(ImageError::InvalidReference { .. }) => {
                tonic::Status::invalid_argument(msg)
            }
            CriError::NameReserved { .. } => tonic::Status::already_exists(msg),
            CriError::Unavailable(_) => tonic::Status::unavailable(msg),
            CriError::Unimplemented(_) => tonic::Status::unimplemented(msg),
            _ => tonic::Status::unknown(msg),
        }
    }
}
