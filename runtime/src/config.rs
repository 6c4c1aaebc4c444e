//! Runtime configuration: where state lives, which shim runs containers,
//! which cgroup driver and parent, and the CNI setup for pods.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cni::CniConfig;

/// Which cgroup manager libcontainer uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    /// Cgroup directories written directly (`<parent>/<pod>/<container>`).
    #[default]
    Cgroupfs,
    /// A systemd slice and a transient scope per container
    /// (`<slice>:podctl:<id>`). libcontainer falls back to cgroupfs when
    /// systemd is not PID 1.
    Systemd,
}

/// Where state lives and which shim runs containers.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Volatile state: pid files, exit records, bundles, pinned netns
    /// (`/run/podctl`).
    pub state_dir: PathBuf,
    /// Persistent data: containers' writable layers (`/var/lib/podctl`).
    pub root_dir: PathBuf,
    /// The shim binary; found next to the current executable, then on
    /// `$PATH`, when `None`.
    pub shim: Option<PathBuf>,
    pub cgroup_driver: CgroupDriver,
    /// Parent cgroup (cgroupfs path such as `/podctl`, or a systemd slice).
    pub cgroup_parent: String,
    /// Pod networking; pods get only loopback when `None`.
    pub cni: Option<CniConfig>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            state_dir: PathBuf::from("/run/podctl"),
            root_dir: PathBuf::from("/var/lib/podctl"),
            shim: None,
            cgroup_driver: CgroupDriver::Cgroupfs,
            cgroup_parent: "/podctl".into(),
            cni: None,
        }
    }
}
