//! podctl's CRI v1 service: the RuntimeService and ImageService over
//! podctl's runtime and image store, served on a unix socket, plus the
//! streaming server for Exec, Attach and PortForward.
//!
//! [`CriService`] implements the generated tonic traits
//! ([`proto::runtime_service_server::RuntimeService`],
//! [`proto::image_service_server::ImageService`]); the gRPC server and
//! in-process callers (`podctl run`, the node agent) go through those
//! same traits.

pub mod authority;
mod config;
mod container;
mod error;
mod image_service;
mod images;
mod netcheck;
mod records;
mod runtime_service;
mod sandbox;
pub mod server;
mod service;
mod spec;
pub mod stats;
pub mod stream;
mod stream_backend;
mod usage;

/// The CRI v1 protocol (`runtime.v1`), generated at build time from the
/// `api.proto` that the `k8s-cri` crate ships.
pub use k8s_cri::v1 as proto;

pub use config::{CniSection, CriConfig};
pub use error::{CriError, Result};
pub use runtime_service::{RUNTIME_API_VERSION, RUNTIME_NAME};
pub use service::{CriService, StreamUrls};
pub use stream_backend::RuntimeBackend;
