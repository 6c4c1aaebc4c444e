//! podctl's runtime: turns a container configuration into an OCI bundle
//! (overlayfs rootfs over image snapshots + `config.json`) and drives it
//! through the `podctl-shim` monitor, never calling libcontainer in this
//! (possibly multi-threaded) process.
//!
//! State of a container lives in `STATE/containers/<id>/`: the bundle, the
//! overlay upper/work dirs, `meta.json` (what it was created from, when it
//! was started) and the shim's `pid` and `exit.json`. Everything a fresh
//! process needs to report status is in that directory, so a CLI and a
//! daemon (or a restarted daemon) see the same containers.

pub mod cni;
mod error;
mod rootfs;
mod shim;
mod spec;
mod user;

pub mod container;
pub mod sandbox;

pub use cni::CniConfig;
pub use container::{CgroupDriver, Mount};
pub use container::{
    ContainerConfig, ContainerState, ContainerStatus, Resources, Runtime, RuntimeConfig,
};
pub use error::{Result, RuntimeError};
pub use sandbox::{SandboxConfig, SandboxState, SandboxStatus};
