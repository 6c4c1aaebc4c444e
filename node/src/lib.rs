//! podctl's kubelet half. Given Kubernetes Pod specs (k8s-openapi types),
//! the pod lifecycle engine drives the runtime through the CRI service
//! traits until each pod is what its spec says, and reports a
//! Kubernetes-accurate `PodStatus`. `podctl run` and the node agent share
//! it; only where ConfigMaps, Secrets and tokens come from
//! ([`sources::Sources`]) and where status goes differ.

pub mod agent;
pub mod backoff;
pub mod conditions;
pub mod convert;
pub mod cri;
pub mod crilog;
pub mod dns;
pub mod envvars;
pub mod error;
pub mod events;
pub mod eviction;
pub mod hosts;
pub mod probe;
pub mod pull_secrets;
pub mod quantity;
pub mod resources;
pub mod security;
pub mod sources;
pub mod status;
pub mod userns;
pub mod volumes;
pub mod worker;

pub use error::{NodeError, Result};
