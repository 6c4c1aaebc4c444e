//! Container lifecycle: create, start, stop, remove, status, list.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use podctl_shim::logfmt::{now_ns, rfc3339_nano};
use podctl_shim::state::{read_pid, write_atomic};
use podctl_shim::ExitRecord;

use crate::config::RuntimeConfig;
use crate::error::{IoContext, Result, RuntimeError};
use crate::file_cache::Cache;
use crate::launch::Begun;
use crate::liveness::process_alive;
use crate::status_index::StatusIndex;
use crate::{cgroup, lock, rootfs, shim, spec, user};

/// Resource limits (cgroup).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Resources {
    /// Bytes.
    pub memory_limit: Option<i64>,
    /// Relative CPU weight (v1 `cpu.shares`).
    pub cpu_shares: Option<u64>,
    /// Microseconds per period; with `cpu_period` (default 100000).
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub pids_limit: Option<i64>,
}

/// A bind mount into the container.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Mount {
    pub host_path: PathBuf,
    pub container_path: String,
    pub readonly: bool,
    #[serde(default)]
    pub propagation: Propagation,
    /// Read-only all the way down (submounts too; kernel 5.12+).
    #[serde(default)]
    pub recursive_readonly: bool,
}

/// Mount propagation of a bind mount (Kubernetes `mountPropagation`).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Propagation {
    /// `rprivate`: nothing propagates.
    #[default]
    Private,
    /// `rslave`: mounts made on the host appear in the container.
    HostToContainer,
    /// `rshared`: both ways (privileged containers only).
    Bidirectional,
}

/// A process resource limit (`RLIMIT_*`). Raising a hard limit above the
/// shim's needs CAP_SYS_RESOURCE.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Rlimit {
    /// OCI name, e.g. `RLIMIT_NOFILE`.
    pub kind: String,
    pub soft: u64,
    pub hard: u64,
}

/// What to run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ContainerConfig {
    pub name: String,
    /// Image reference shown in status.
    pub image: String,
    /// Overlay lower dirs, bottom layer first (from the image store).
    pub lower_dirs: Vec<PathBuf>,
    /// Entrypoint (image's unless overridden).
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: String,
    /// `user`, `uid`, `uid:gid` or `user:group`, resolved in the rootfs.
    pub user: String,
    /// Defaults to the pod's hostname inside a sandbox.
    pub hostname: String,
    pub readonly_rootfs: bool,
    /// All capabilities, all devices, no masked paths, no seccomp.
    pub privileged: bool,
    pub mounts: Vec<Mount>,
    pub resources: Resources,
    pub rlimits: Vec<Rlimit>,
    pub sysctls: BTreeMap<String, String>,
    /// Namespace kind (`pid`, `ipc`, `uts`, `network`, `mount`) → path to
    /// join, or `"host"`; missing kinds are new. Filled from the sandbox by
    /// [`Runtime::create_container`].
    pub namespaces: BTreeMap<String, String>,
    /// CRI log file the shim writes.
    pub log_path: PathBuf,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub security: crate::security::Security,
    /// Keep a pipe to the container's stdin for attach (CRI `stdin`).
    #[serde(default)]
    pub stdin: bool,
    /// Close that stdin when the first attached client closes its own.
    #[serde(default)]
    pub stdin_once: bool,
    /// A pseudo-terminal as the container's stdio (CRI `tty`).
    #[serde(default)]
    pub tty: bool,
    /// The pod's user namespace maps, when it has one (joined through
    /// `namespaces["user"]`); set by [`Runtime::create_container`].
    #[serde(default)]
    pub userns: Option<crate::userns::UserNs>,
}

/// Lifecycle state as CRI names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    Unknown,
}

/// What a container is doing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub id: String,
    pub name: String,
    pub image: String,
    /// The pod it belongs to, if any.
    pub sandbox_id: Option<String>,
    pub state: ContainerState,
    pub pid: Option<i32>,
    pub created_at_ns: i64,
    pub started_at_ns: i64,
    pub finished_at_ns: i64,
    pub exit_code: Option<i32>,
    /// `Completed`, `Error`, `OOMKilled`, `StartError` or `Unknown` once
    /// exited.
    pub reason: String,
    /// Why, for a `StartError`.
    #[serde(default)]
    pub message: String,
    pub log_path: PathBuf,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub(crate) config: ContainerConfig,
    pub(crate) sandbox_id: Option<String>,
    pub(crate) created_at_ns: i64,
    pub(crate) started_at_ns: i64,
    pub(crate) cgroups_path: String,
    /// The process's user as the spec has it (absent in containers made
    /// by older versions: read from the spec then).
    #[serde(default)]
    pub(crate) identity: Option<user::Identity>,
}

/// Runs pods and containers through the shim. Cheap to create: all state
/// is in the state directory, so any number of instances (a daemon, CLIs,
/// a restarted daemon) see the same pods and containers.
pub struct Runtime {
    pub(crate) cfg: RuntimeConfig,
    pub(crate) shim: PathBuf,
    /// `meta.json`s last read, of containers and of sandboxes.
    pub(crate) metas: Cache<Meta>,
    pub(crate) sandbox_metas: Cache<crate::sandbox::SandboxMeta>,
    /// Containers' and sandboxes' statuses for list calls, once
    /// [`Runtime::watch_state`] turned them on.
    pub(crate) container_index: StatusIndex<ContainerStatus>,
    pub(crate) sandbox_index: StatusIndex<crate::sandbox::SandboxStatus>,
}

pub(crate) const META: &str = "meta.json";

impl Runtime {
    pub fn new(cfg: RuntimeConfig) -> Result<Self> {
        for d in [
            cfg.state_dir.join("containers"),
            cfg.state_dir.join("sandboxes"),
            cfg.state_dir.join("runc"),
            cfg.root_dir.join("containers"),
        ] {
            std::fs::create_dir_all(&d).ctx("create", &d)?;
        }
        crate::pairing::claim_root(&cfg)?;
        let shim = shim::locate_or_name(cfg.shim.as_deref());
        let rt = Runtime {
            cfg,
            shim,
            metas: Cache::default(),
            sandbox_metas: Cache::default(),
            container_index: StatusIndex::default(),
            sandbox_index: StatusIndex::default(),
        };
        rt.collect_half_created();
        Ok(rt)
    }

    pub(crate) fn dir(&self, id: &str) -> PathBuf {
        self.cfg.state_dir.join("containers").join(id)
    }

    pub(crate) fn data_dir(&self, id: &str) -> PathBuf {
        self.cfg.root_dir.join("containers").join(id)
    }

    pub(crate) fn locks(&self) -> PathBuf {
        self.cfg.state_dir.join("locks")
    }

    pub(crate) fn libcontainer_root(&self) -> PathBuf {
        self.cfg.state_dir.join("runc")
    }

    pub(crate) fn meta(&self, id: &str) -> Result<Meta> {
        read_meta_cached(id, &self.dir(id).join(META), &self.metas, |id, reason| {
            RuntimeError::Container { id, reason }
        })
    }

    pub(crate) fn save_meta(&self, id: &str, m: &Meta) -> Result<()> {
        let p = self.dir(id).join(META);
        let b = serde_json::to_vec_pretty(m).map_err(|e| RuntimeError::Container {
            id: id.into(),
            reason: e.to_string(),
        })?;
        write_atomic(&p, &b).ctx("write", &p)
    }

    /// Create a container in a pod: it joins the pod's network, IPC and UTS
    /// namespaces and mounts the pod's `/etc/hostname`, `/etc/hosts` and
    /// `/etc/resolv.conf`. Returns the container ID.
    pub fn create_container(&self, sandbox_id: &str, cfg: ContainerConfig) -> Result<String> {
        let id = new_id()?;
        self.create_container_as(sandbox_id, &id, cfg)?;
        Ok(id)
    }

    /// [`Runtime::create_container`] with the ID chosen by the caller
    /// (from [`new_id`]); an ID in use is refused.
    pub fn create_container_as(
        &self,
        sandbox_id: &str,
        id: &str,
        mut cfg: ContainerConfig,
    ) -> Result<()> {
        let pod = self.sandbox_attachments(sandbox_id)?;
        for (kind, path) in pod.namespaces {
            cfg.namespaces.entry(kind).or_insert(path);
        }
        cfg.userns = pod.userns;
        let mut mounts = pod.mounts;
        mounts.retain(|m| {
            !cfg.mounts
                .iter()
                .any(|u| u.container_path == m.container_path)
        });
        mounts.append(&mut cfg.mounts);
        cfg.mounts = mounts;
        if cfg.hostname.is_empty() {
            cfg.hostname = pod.hostname;
        }
        // Containers see their hostname in HOSTNAME too, as containerd and
        // CRI-O set it (a variable the container's own env sets wins).
        if !cfg.env.iter().any(|e| e.starts_with("HOSTNAME=")) {
            cfg.env.insert(0, format!("HOSTNAME={}", cfg.hostname));
        }
        self.create_in(Some(sandbox_id), id, cfg)
    }

    /// Create a container outside any pod (its own namespaces, or those
    /// named in `cfg.namespaces`).
    pub fn create(&self, cfg: ContainerConfig) -> Result<String> {
        let id = new_id()?;
        self.create_in(None, &id, cfg)?;
        Ok(id)
    }

    fn create_in(&self, sandbox: Option<&str>, id: &str, cfg: ContainerConfig) -> Result<()> {
        if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RuntimeError::Container {
                id: id.into(),
                reason: "a container ID is 64 hexadecimal digits".into(),
            });
        }
        let _l = lock::exclusive(&self.locks(), id)?;
        let dir = self.dir(id);
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).ctx("create", parent)?;
        }
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(RuntimeError::Container {
                    id: id.into(),
                    reason: "the ID is in use".into(),
                })
            }
            r => r.ctx("create", &dir)?,
        }
        let res = self.create_files(id, sandbox, &dir, cfg);
        if let Err(e) = res {
            tracing::warn!(%id, error = %e, "create failed; cleaning up");
            let _ = self.discard_unfinished(id);
            return Err(e);
        }
        tracing::info!(%id, ?sandbox, "container created");
        Ok(())
    }

    fn create_files(
        &self,
        id: &str,
        sandbox: Option<&str>,
        dir: &Path,
        cfg: ContainerConfig,
    ) -> Result<()> {
        let root = dir.join("rootfs");
        let data = self.data_dir(id);
        let mapped = crate::userns::Mapped::of(&cfg);
        let lowers = match &mapped {
            Some(m) => m.layers(id, dir, &cfg.lower_dirs, &data.join("upper"))?,
            None => cfg.lower_dirs.clone(),
        };
        rootfs::mount_overlay(id, &lowers, &data.join("upper"), &data.join("work"), &root)?;
        if mapped.is_some() {
            // The overlay holds its layers; their clones need no name.
            crate::userns::detach_all(&dir.join(crate::userns::LAYERS))?;
        }
        crate::failpoint::hit("create_container.rootfs_mounted");
        let who = user::resolve(id, &root, &cfg.user)?;
        let pod_parent = sandbox
            .and_then(|sb| self.sandbox_status(sb).ok())
            .and_then(|s| s.config.cgroup_parent)
            .filter(|p| !p.is_empty());
        let cgroups_path = cgroup::container_path(&self.cfg, sandbox, pod_parent.as_deref(), id);
        let spec = match &mapped {
            Some(m) => {
                let volumes = m.volumes(id, dir, &cfg.mounts);
                let c = ContainerConfig {
                    mounts: volumes,
                    ..cfg.clone()
                };
                spec::build(id, &c, &root, &who, &cgroups_path)?
            }
            None => spec::build(id, &cfg, &root, &who, &cgroups_path)?,
        };
        let identity = user::identity_of(&spec);
        let spec_path = dir.join("config.json");
        spec.save(&spec_path).map_err(|e| RuntimeError::Spec {
            id: id.into(),
            reason: e.to_string(),
        })?;
        if let Some(parent) = cfg.log_path.parent() {
            std::fs::create_dir_all(parent).ctx("create", parent)?;
        }
        self.save_meta(
            id,
            &Meta {
                config: cfg.clone(),
                sandbox_id: sandbox.map(str::to_string),
                created_at_ns: now_ns(),
                started_at_ns: 0,
                cgroups_path: cgroups_path.clone(),
                identity: Some(identity),
            },
        )?;
        // The runtime's create (the monitor, libcontainer's init) waits for
        // StartContainer, as containerd's task does: a missing executable
        // then fails the start, not the create.
        Ok(())
    }

    /// Undo a create that did not finish (the caller holds the container's
    /// lock): libcontainer's state, the rootfs mount, the state and data
    /// directories and the lock file. A rootfs that cannot be unmounted
    /// keeps its directories, for the next collection (`gc`) to retry:
    /// false then.
    pub(crate) fn discard_unfinished(&self, id: &str) -> bool {
        if self.libcontainer_root().join(id).exists() {
            let root = self.libcontainer_root().display().to_string();
            let args = ["--id", id, "--root", &root, "--force"];
            if let Err(e) = shim::run(&self.shim, id, "delete", &args) {
                tracing::warn!(%id, error = %e, "deleting half-created container");
            }
        }
        if let Err(e) = rootfs::unmount_container(&self.dir(id)) {
            tracing::warn!(%id, error = %e, "rootfs of a half-created container stays mounted");
            return false;
        }
        for d in [self.dir(id), self.data_dir(id)] {
            if let Err(e) = std::fs::remove_dir_all(&d) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(%id, path = %d.display(), error = %e, "removing");
                }
            }
        }
        lock::forget(&self.locks(), id);
        true
    }

    /// Start a created container: its monitor and init are made now
    /// ([`Runtime::launch`]), then released. A container that cannot be
    /// started is exited with reason `StartError` and the error as its
    /// message.
    pub fn start_container(&self, id: &str) -> Result<()> {
        let _l = lock::exclusive(&self.locks(), id)?;
        let mut m = self.meta(id)?;
        if m.started_at_ns != 0 || ExitRecord::read(&self.dir(id)).ok().flatten().is_some() {
            return Err(RuntimeError::Container {
                id: id.into(),
                reason: "container is not in the created state".into(),
            });
        }
        let root = self.libcontainer_root().display().to_string();
        let start = || {
            crate::failpoint::hit("start_container.launched");
            shim::run(&self.shim, id, "start", &["--id", id, "--root", &root]).map(drop)
        };
        // A start a crash cut short is finished, not repeated.
        let started = match self.begun(id) {
            Begun::Started(at) => {
                tracing::info!(%id, "recording a start a crash cut short");
                m.started_at_ns = at;
                return self.save_meta(id, &m);
            }
            Begun::Launched => start(),
            Begun::No => self.launch(id, &m).and_then(|()| start()),
        };
        if let Err(e) = started {
            self.start_failed(id, &e);
            return Err(e);
        }
        crate::failpoint::hit("start_container.started");
        m.started_at_ns = now_ns();
        self.save_meta(id, &m)?;
        tracing::info!(%id, "container started");
        Ok(())
    }

    /// SIGTERM, then SIGKILL (to every process of the container) after
    /// `timeout`. Stopping a stopped container succeeds.
    pub fn stop_container(&self, id: &str, timeout: Duration) -> Result<()> {
        let _l = lock::exclusive(&self.locks(), id)?;
        self.stop_locked(id, timeout)
    }

    pub(crate) fn stop_locked(&self, id: &str, timeout: Duration) -> Result<()> {
        let st = self.container_status(id)?;
        if st.state == ContainerState::Exited
            || (st.state == ContainerState::Created && st.pid.is_none())
        {
            return Ok(());
        }
        let root = self.libcontainer_root().display().to_string();
        if !timeout.is_zero() && st.state == ContainerState::Running {
            if let Err(e) = shim::run(
                &self.shim,
                id,
                "kill",
                &["--id", id, "--root", &root, "--signal", "TERM"],
            ) {
                tracing::debug!(%id, error = %e, "SIGTERM");
            }
            if self.wait_exit(id, timeout) {
                return Ok(());
            }
        }
        if let Err(e) = shim::run(
            &self.shim,
            id,
            "kill",
            &["--id", id, "--root", &root, "--signal", "KILL", "--all"],
        ) {
            tracing::debug!(%id, error = %e, "SIGKILL");
        }
        if self.wait_exit(id, Duration::from_secs(10)) {
            return Ok(());
        }
        Err(RuntimeError::Container {
            id: id.into(),
            reason: "did not exit after SIGKILL".into(),
        })
    }

    fn wait_exit(&self, id: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if matches!(ExitRecord::read(&self.dir(id)), Ok(Some(_))) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until the container exits (or `timeout`), returning its status.
    pub fn wait_container(&self, id: &str, timeout: Duration) -> Result<ContainerStatus> {
        self.wait_exit(id, timeout);
        self.container_status(id)
    }

    /// The cgroup path given to the container (`linux.cgroupsPath`).
    pub fn cgroups_path(&self, id: &str) -> Result<String> {
        Ok(self.meta(id)?.cgroups_path)
    }

    /// The container's directory, where its monitor's attach socket
    /// (`attach.sock`) is.
    pub fn container_dir(&self, id: &str) -> Result<PathBuf> {
        self.meta(id)?;
        Ok(self.dir(id))
    }

    /// Ask the container's monitor to reopen its log file (after rotation).
    pub fn reopen_container_log(&self, id: &str) -> Result<()> {
        let p = self.dir(id).join(podctl_shim::MONITOR_PID_FILE);
        let pid = read_pid(&p).ctx("read", &p)?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGUSR1,
        )
        .map_err(|e| RuntimeError::Container {
            id: id.into(),
            reason: format!("signalling monitor {pid}: {e}"),
        })?;
        // The monitor reopens asynchronously; answer once the file is
        // there again, as callers (the kubelet's log rotation) expect.
        let log = self.meta(id)?.config.log_path;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !log.as_os_str().is_empty() && !log.exists() {
            if std::time::Instant::now() > deadline || !process_alive(pid) {
                return Err(RuntimeError::Container {
                    id: id.into(),
                    reason: format!("monitor {pid} did not reopen {}", log.display()),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    // Short names kept for existing callers.

    /// Same as [`Runtime::start_container`].
    pub fn start(&self, id: &str) -> Result<()> {
        self.start_container(id)
    }
    /// Same as [`Runtime::stop_container`].
    pub fn stop(&self, id: &str, timeout: Duration) -> Result<()> {
        self.stop_container(id, timeout)
    }
    /// Same as [`Runtime::remove_container`].
    pub fn remove(&self, id: &str) -> Result<()> {
        self.remove_container(id)
    }
    /// Same as [`Runtime::container_status`].
    pub fn status(&self, id: &str) -> Result<ContainerStatus> {
        self.container_status(id)
    }
    /// Same as [`Runtime::list_containers`].
    pub fn list(&self) -> Result<Vec<ContainerStatus>> {
        self.list_containers()
    }
    /// Same as [`Runtime::wait_container`].
    pub fn wait(&self, id: &str, timeout: Duration) -> Result<ContainerStatus> {
        self.wait_container(id, timeout)
    }
}

/// [`read_meta`] through `cache`: parsed again only when the file changed.
pub(crate) fn read_meta_cached<T: serde::de::DeserializeOwned + Clone>(
    id: &str,
    path: &Path,
    cache: &Cache<T>,
    corrupt: fn(String, String) -> RuntimeError,
) -> Result<T> {
    cache.read(
        id,
        path,
        |b| {
            serde_json::from_slice(b)
                .map_err(|e| corrupt(id.into(), format!("corrupt {}: {e}", path.display())))
        },
        |e| match e.kind() {
            std::io::ErrorKind::NotFound => RuntimeError::NotFound { id: id.into() },
            _ => RuntimeError::Io {
                op: "read",
                path: path.to_path_buf(),
                source: e,
            },
        },
    )
}

/// Read a JSON record of `id`: missing means [`RuntimeError::NotFound`],
/// unparsable is reported through `corrupt`.
pub(crate) fn read_meta<T: serde::de::DeserializeOwned>(
    id: &str,
    path: &Path,
    corrupt: fn(String, String) -> RuntimeError,
) -> Result<T> {
    let b = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => RuntimeError::NotFound { id: id.into() },
        _ => RuntimeError::Io {
            op: "read",
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    serde_json::from_slice(&b)
        .map_err(|e| corrupt(id.into(), format!("corrupt {}: {e}", path.display())))
}

/// A fresh random object ID (64 hex digits).
pub fn new_id() -> Result<String> {
    let mut buf = [0u8; 32];
    let p = Path::new("/dev/urandom");
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut buf))
        .ctx("read", p)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Format a timestamp like the shim does (for status output).
pub fn format_ns(ns: i64) -> String {
    rfc3339_nano(ns)
}
