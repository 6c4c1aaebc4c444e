//! The daemon's configuration file (TOML). Every field has a default, so
//! an empty file is a valid configuration:
//!
//! ```toml
//! socket = "/run/podctl/podctl.sock"
//! root = "/var/lib/podctl"          # images, writable layers
//! state = "/run/podctl"             # volatile runtime state
//! cgroup_driver = "systemd"         # or "cgroupfs"
//! cgroup_parent = "podctl.slice"
//! stream_address = "127.0.0.1:0"    # Exec/Attach/PortForward server
//! log_level = "info"
//! runtime_handlers = ["runc"]       # accepted RuntimeClass handlers besides ""
//! sandbox_image = "registry.k8s.io/pause:3.10"  # reported pinned; never pulled
//! pids_limit = 0                    # pids.max per container (0: unlimited)
//! pod_pids_limit = 0                # pids.max per pod cgroup (0: unlimited)
//! gc_interval_secs = 300            # collect what crashed processes left (0: only at start)
//!
//! [cni]
//! conf_dir = "/etc/cni/net.d"
//! bin_dirs = ["/opt/cni/bin", "/usr/lib/cni"]
//! # conf_template = "/etc/podctl/cni.template"  # rendered with {{.PodCIDR}} on UpdateRuntimeConfig
//!
//! [nri]                             # NRI plugins (off by default)
//! enable = true
//! socket = "/var/run/nri/nri.sock"
//! request_timeout_ms = 2000
//!
//! [registry.hosts."docker.io"]
//! mirrors = ["http://127.0.0.1:5000"]
//! [registry.hosts."127.0.0.1:5000"]
//! insecure = true
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use podctl_images::RegistryConfig;
use podctl_runtime::CgroupDriver;
use serde::{Deserialize, Serialize};

use crate::error::{CriError, IoContext, Result};

/// CNI locations.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CniSection {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
    /// A conflist with `{{.PodCIDR}}`, rendered into
    /// `<conf_dir>/10-podctl-net.conflist` when the pod CIDR arrives
    /// (UpdateRuntimeConfig), as containerd's `conf_template`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conf_template: Option<PathBuf>,
}

impl Default for CniSection {
    fn default() -> Self {
        let d = podctl_runtime::CniConfig::default();
        CniSection {
            conf_dir: d.conf_dir,
            bin_dirs: d.bin_dirs,
            conf_template: None,
        }
    }
}

/// Everything the daemon reads from its configuration file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CriConfig {
    pub socket: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub cgroup_driver: CgroupDriver,
    pub cgroup_parent: String,
    pub stream_address: SocketAddr,
    /// Advertised base URL of the streaming server (defaults to its bound
    /// address).
    pub stream_base_url: Option<String>,
    pub log_level: String,
    pub runtime_handlers: Vec<String>,
    pub sandbox_image: String,
    /// pids.max of every container (CRI-O's `pids_limit`); 0: unlimited.
    pub pids_limit: i64,
    /// pids.max of every pod's cgroup (the kubelet's `podPidsLimit`);
    /// 0: unlimited.
    pub pod_pids_limit: i64,
    /// Seconds between two collections of what crashed processes sharing
    /// the state left (a CLI killed mid-create); 0: only at start.
    pub gc_interval_secs: u64,
    /// The shim binary (next to the daemon's executable when unset).
    pub shim: Option<PathBuf>,
    pub cni: CniSection,
    pub nri: crate::nri::NriSection,
    pub registry: RegistryConfig,
}

impl Default for CriConfig {
    fn default() -> Self {
        CriConfig {
            socket: PathBuf::from("/run/podctl/podctl.sock"),
            root: PathBuf::from("/var/lib/podctl"),
            state: PathBuf::from("/run/podctl"),
            cgroup_driver: CgroupDriver::Cgroupfs,
            cgroup_parent: "/podctl".into(),
            stream_address: SocketAddr::from(([127, 0, 0, 1], 0)),
            stream_base_url: None,
            log_level: "info".into(),
            runtime_handlers: vec!["runc".into(), "podctl".into()],
            sandbox_image: "registry.k8s.io/pause:3.10".into(),
            pids_limit: 0,
            pod_pids_limit: 0,
            gc_interval_secs: 300,
            shim: None,
            cni: CniSection::default(),
            nri: Default::default(),
            registry: RegistryConfig::default(),
        }
    }
}

impl CriConfig {
    /// Read a TOML file; unknown keys are refused with their name.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).ctx("read", path)?;
        Self::parse(&text).map_err(|reason| CriError::Config {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parse TOML text.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let cfg: CriConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        if cfg.cgroup_driver == CgroupDriver::Systemd && cfg.cgroup_parent == "/podctl" {
            return Ok(CriConfig {
                cgroup_parent: "podctl.slice".into(),
                ..cfg
            });
        }
        Ok(cfg)
    }

    /// The runtime's configuration derived from this one.
    pub fn runtime(&self) -> podctl_runtime::RuntimeConfig {
        podctl_runtime::RuntimeConfig {
            state_dir: self.state.clone(),
            root_dir: self.root.clone(),
            shim: self.shim.clone(),
            cgroup_driver: self.cgroup_driver,
            cgroup_parent: self.cgroup_parent.clone(),
            cni: Some(podctl_runtime::CniConfig {
                conf_dir: self.cni.conf_dir.clone(),
                bin_dirs: self.cni.bin_dirs.clone(),
            }),
        }
    }

    /// Where the image store lives (shared with the `podctl` CLI).
    pub fn image_root(&self) -> PathBuf {
        self.root.join("images")
    }
}
