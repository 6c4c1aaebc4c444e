//! podctl's image pipeline: references, the registry v2 pull client, the
//! content store, layer snapshots for overlayfs and image metadata.
//!
//! [`Puller::pull`] is the entry point; [`Store`] answers everything about
//! what is already on disk.

pub mod config;
pub mod digest;
pub mod error;
pub mod failpoint;
mod fsutil;
mod layer;
pub mod manifest;
pub mod media;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod store;
pub mod unpack;

pub use config::{Credentials, HostConfig, RegistryConfig};
pub use digest::Digest;
pub use error::{ImageError, Result};
pub use fsutil::FileLock;
pub use manifest::Platform;
pub use pull::{PullEvent, PullObserver, PullOptions, PullStats, Puller};
pub use reference::Reference;
pub use registry::RegistryClient;
pub use store::{ImageRecord, LayerRecord, Store};

/// Default store location.
pub const DEFAULT_ROOT: &str = "/var/lib/podctl/images";

#[cfg(test)]
mod fuzz_tests;
