//! podctl's CRI v1 service.

pub mod stream;

/// The CRI v1 protocol (`runtime.v1`), generated at build time from the
/// `api.proto` that the `k8s-cri` crate ships.
pub use k8s_cri::v1 as proto;
