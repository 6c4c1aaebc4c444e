//! Error type of the image pipeline. Every variant names what it is about
//! (image reference, digest, path or tar entry) so a user can act on it.

use std::path::PathBuf;

/// Errors of the image pipeline.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest { digest: String, reason: String },

    #[error("image {image:?} not found in the local store")]
    NotFound { image: String },

    #[error("image {image:?} not found on any endpoint of {registry} ({detail})")]
    RemoteNotFound {
        image: String,
        registry: String,
        detail: String,
    },

    #[error("registry {url}: {reason}")]
    Registry { url: String, reason: String },

    #[error("registry {url}: authentication failed: {reason}")]
    Unauthorized { url: String, reason: String },

    #[error("http request to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("image {image:?}: blob {digest} digest mismatch (got {actual})")]
    DigestMismatch {
        image: String,
        digest: String,
        actual: String,
    },

    #[error("image {image:?}: blob {digest} has {actual} bytes, the manifest says {expected}")]
    SizeMismatch {
        image: String,
        digest: String,
        expected: u64,
        actual: u64,
    },

    #[error("image {image:?}: blob {digest} was truncated after {received} of {expected} bytes")]
    Truncated {
        image: String,
        digest: String,
        received: u64,
        expected: u64,
    },

    #[error("image {image:?}: {what} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        image: String,
        what: String,
        size: u64,
        limit: u64,
    },

    #[error("image {image:?}: unsupported media type {media_type:?} for {what}")]
    UnsupportedMediaType {
        image: String,
        what: String,
        media_type: String,
    },

    #[error("image {image:?}: no manifest for platform {platform} in the index")]
    NoMatchingPlatform { image: String, platform: String },

    #[error("image {image:?}: malformed {what}: {reason}")]
    Malformed {
        image: String,
        what: String,
        reason: String,
    },

    #[error("image {image:?}: layer {layer}: hostile tar entry {entry:?}: {reason}")]
    HostileEntry {
        image: String,
        layer: String,
        entry: String,
        reason: String,
    },

    #[error("image {image:?}: layer {layer}: {reason}")]
    Layer {
        image: String,
        layer: String,
        reason: String,
    },

    #[error("image {image:?} is ambiguous: {reason}")]
    Ambiguous { image: String, reason: String },

    #[error("config file {path}: {reason}")]
    Config { path: PathBuf, reason: String },

    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("background task failed: {0}")]
    Task(String),
}

/// Result alias of the image pipeline.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;

/// Attach the operation and path to an I/O error.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| ImageError::Io {
            op,
            path: path.into(),
            source,
        })
    }
}
