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
mod cgroup_detail;
mod cni_template;
mod collect;
mod config;
mod container;
mod container_filter;
mod error;
mod image_service;
mod image_volume;
mod images;
mod metrics;
mod netcheck;
pub mod nri;
mod records;
mod runtime_service;
mod sandbox;
pub mod server;
mod service;
mod spec;
pub mod stats;
pub mod stream;
mod stream_backend;
mod streams;
mod usage;
mod userns;

/// The CRI v1 protocol (`runtime.v1`): messages, clients and servers
/// generated at build time from podctl's `proto/runtime.proto`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("runtime.v1");
}

pub use config::{CniSection, CriConfig};
pub use error::{CriError, Result};
pub use nri::NriSection;
pub use runtime_service::{RUNTIME_API_VERSION, RUNTIME_NAME};
pub use service::{CriService, StreamUrls};
pub use stream_backend::RuntimeBackend;

#[cfg(test)]
mod fuzz_tests;
