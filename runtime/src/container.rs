//! Container lifecycle: create, start, stop, remove, status.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use podctl_shim::logfmt::{now_ns, rfc3339_nano};
use podctl_shim::state::{read_pid, write_atomic};
use podctl_shim::ExitRecord;

use crate::error::{IoContext, Result, RuntimeError};
use crate::{rootfs, shim, spec, user};

/// Which cgroup manager libcontainer uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    #[default]
    Cgroupfs,
    Systemd,
}

/// Where state lives and which shim runs containers.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Volatile state (`/run/podctl`).
    pub state_dir: PathBuf,
    /// The shim binary; found next to the current executable when `None`.
    pub shim: Option<PathBuf>,
    pub cgroup_driver: CgroupDriver,
    /// Parent cgroup (cgroupfs path or systemd slice).
    pub cgroup_parent: String,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            state_dir: PathBuf::from("/run/podctl"),
            shim: None,
            cgroup_driver: CgroupDriver::Cgroupfs,
            cgroup_parent: "/podctl".into(),
        }
    }
}

/// Resource limits.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Resources {
    pub memory_limit: Option<i64>,
    pub cpu_shares: Option<u64>,
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
    pub hostname: String,
    pub readonly_rootfs: bool,
    pub privileged: bool,
    pub mounts: Vec<Mount>,
    pub resources: Resources,
    pub sysctls: BTreeMap<String, String>,
    /// Namespace kind → path to join, or `"host"`; missing kinds are new.
    pub namespaces: BTreeMap<String, String>,
    /// CRI log file the shim writes.
    pub log_path: PathBuf,
    pub labels: BTreeMap<String, String>,
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
    pub state: ContainerState,
    pub pid: Option<i32>,
    pub created_at_ns: i64,
    pub started_at_ns: i64,
    pub finished_at_ns: i64,
    pub exit_code: Option<i32>,
    pub reason: String,
    pub log_path: PathBuf,
    pub labels: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    config: ContainerConfig,
    created_at_ns: i64,
    started_at_ns: i64,
    cgroups_path: String,
}

/// Runs containers through the shim.
pub struct Runtime {
    cfg: RuntimeConfig,
    shim: PathBuf,
}

const META: &str = "meta.json";

impl Runtime {
    pub fn new(cfg: RuntimeConfig) -> Result<Self> {
        for d in [cfg.state_dir.join("containers"), cfg.state_dir.join("runc")] {
            std::fs::create_dir_all(&d).ctx("create", &d)?;
        }
        let shim = shim::locate(cfg.shim.as_deref());
        Ok(Runtime { cfg, shim })
    }

    pub(crate) fn state_dir(&self) -> &Path {
        &self.cfg.state_dir
    }

    pub(crate) fn shim_path(&self) -> &Path {
        &self.shim
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.cfg.state_dir.join("containers").join(id)
    }

    fn libcontainer_root(&self) -> PathBuf {
        self.cfg.state_dir.join("runc")
    }

    fn meta(&self, id: &str) -> Result<Meta> {
        let p = self.dir(id).join(META);
        let b = std::fs::read(&p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RuntimeError::NotFound { id: id.into() },
            _ => RuntimeError::Io {
                op: "read",
                path: p.clone(),
                source: e,
            },
        })?;
        serde_json::from_slice(&b).map_err(|e| RuntimeError::Container {
            id: id.into(),
            reason: format!("corrupt {}: {e}", p.display()),
        })
    }

    fn save_meta(&self, id: &str, m: &Meta) -> Result<()> {
        let p = self.dir(id).join(META);
        let b = serde_json::to_vec_pretty(m).map_err(|e| RuntimeError::Container {
            id: id.into(),
            reason: e.to_string(),
        })?;
        write_atomic(&p, &b).ctx("write", &p)
    }

    /// Create a container (rootfs mounted, process created but not started).
    pub fn create(&self, cfg: ContainerConfig) -> Result<String> {
        let id = new_id()?;
        let dir = self.dir(&id);
        std::fs::create_dir_all(&dir).ctx("create", &dir)?;
        let res = self.create_in(&id, &dir, cfg);
        if res.is_err() {
            let _ = rootfs::unmount(&dir.join("rootfs"));
            let _ = std::fs::remove_dir_all(&dir);
        }
        res.map(|()| id)
    }

    fn create_in(&self, id: &str, dir: &Path, cfg: ContainerConfig) -> Result<()> {
        let root = dir.join("rootfs");
        rootfs::mount_overlay(
            id,
            &cfg.lower_dirs,
            &dir.join("upper"),
            &dir.join("work"),
            &root,
        )?;
        let who = user::resolve(id, &root, &cfg.user)?;
        let cgroups_path = match self.cfg.cgroup_driver {
            CgroupDriver::Cgroupfs => {
                format!("{}/{id}", self.cfg.cgroup_parent.trim_end_matches('/'))
            }
            CgroupDriver::Systemd => format!("{}:podctl:{id}", self.cfg.cgroup_parent),
        };
        let spec = spec::build(id, &cfg, &root, &who, &cgroups_path)?;
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
                created_at_ns: now_ns(),
                started_at_ns: 0,
                cgroups_path,
            },
        )?;
        let root_s = self.libcontainer_root().display().to_string();
        let dir_s = dir.display().to_string();
        let log_s = cfg.log_path.display().to_string();
        let mut args = vec![
            "--id", id, "--bundle", &dir_s, "--root", &root_s, "--dir", &dir_s, "--log", &log_s,
        ];
        if self.cfg.cgroup_driver == CgroupDriver::Systemd {
            args.push("--systemd");
        }
        shim::run(&self.shim, id, "create", &args)?;
        Ok(())
    }

    /// Start a created container.
    pub fn start(&self, id: &str) -> Result<()> {
        let mut m = self.meta(id)?;
        let root = self.libcontainer_root().display().to_string();
        shim::run(&self.shim, id, "start", &["--id", id, "--root", &root])?;
        m.started_at_ns = now_ns();
        self.save_meta(id, &m)
    }

    /// SIGTERM, then SIGKILL after `timeout`. Stopping a stopped container succeeds.
    pub fn stop(&self, id: &str, timeout: Duration) -> Result<()> {
        let st = self.status(id)?;
        if st.state == ContainerState::Exited {
            return Ok(());
        }
        let root = self.libcontainer_root().display().to_string();
        if !timeout.is_zero() {
            let _ = shim::run(
                &self.shim,
                id,
                "kill",
                &["--id", id, "--root", &root, "--signal", "TERM"],
            );
            if self.wait_exit(id, timeout) {
                return Ok(());
            }
        }
        let _ = shim::run(
            &self.shim,
            id,
            "kill",
            &["--id", id, "--root", &root, "--signal", "KILL", "--all"],
        );
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
        while Instant::now() < deadline {
            if matches!(ExitRecord::read(&self.dir(id)), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Wait until the container exits (or `timeout`), returning its status.
    pub fn wait(&self, id: &str, timeout: Duration) -> Result<ContainerStatus> {
        self.wait_exit(id, timeout);
        self.status(id)
    }

    /// Remove a container; a running one is killed first. Removing a
    /// removed container succeeds.
    pub fn remove(&self, id: &str) -> Result<()> {
        let dir = self.dir(id);
        if !dir.exists() {
            return Ok(());
        }
        if self
            .status(id)
            .map(|s| s.state != ContainerState::Exited)
            .unwrap_or(false)
        {
            self.stop(id, Duration::ZERO)?;
        }
        let root = self.libcontainer_root().display().to_string();
        if self.libcontainer_root().join(id).exists() {
            shim::run(
                &self.shim,
                id,
                "delete",
                &["--id", id, "--root", &root, "--force"],
            )?;
        }
        rootfs::unmount(&dir.join("rootfs"))?;
        std::fs::remove_dir_all(&dir).ctx("remove", &dir)
    }

    /// Status from the state directory alone.
    pub fn status(&self, id: &str) -> Result<ContainerStatus> {
        let m = self.meta(id)?;
        let dir = self.dir(id);
        let exit = ExitRecord::read(&dir).ctx("read", dir.join(podctl_shim::EXIT_FILE))?;
        let pid = read_pid(&dir.join(podctl_shim::PID_FILE)).ok();
        let alive = pid.is_some_and(process_alive);
        let (state, reason) = match (&exit, alive, m.started_at_ns) {
            (Some(e), _, _) if e.oom_killed => (ContainerState::Exited, "OOMKilled"),
            (Some(e), _, _) if e.exit_code == 0 => (ContainerState::Exited, "Completed"),
            (Some(_), _, _) => (ContainerState::Exited, "Error"),
            (None, true, 0) => (ContainerState::Created, ""),
            (None, true, _) => (ContainerState::Running, ""),
            (None, false, _) if pid.is_none() => (ContainerState::Unknown, ""),
            (None, false, _) => (ContainerState::Exited, "Unknown"),
        };
        Ok(ContainerStatus {
            id: id.into(),
            name: m.config.name.clone(),
            image: m.config.image.clone(),
            state,
            pid: if alive { pid } else { None },
            created_at_ns: m.created_at_ns,
            started_at_ns: m.started_at_ns,
            finished_at_ns: exit.as_ref().map(|e| e.finished_at_ns).unwrap_or(0),
            exit_code: exit.as_ref().map(|e| e.exit_code),
            reason: reason.into(),
            log_path: m.config.log_path.clone(),
            labels: m.config.labels.clone(),
        })
    }

    /// All containers this state directory knows.
    pub fn list(&self) -> Result<Vec<ContainerStatus>> {
        let d = self.cfg.state_dir.join("containers");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&d).ctx("read", &d)?.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if let Ok(s) = self.status(&id) {
                out.push(s);
            }
        }
        out.sort_by_key(|s| s.created_at_ns);
        Ok(out)
    }

    /// The cgroup path given to the container.
    pub fn cgroups_path(&self, id: &str) -> Result<String> {
        Ok(self.meta(id)?.cgroups_path)
    }
}

fn process_alive(pid: i32) -> bool {
    // A zombie counts as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// 64 hex characters from the kernel's random source, like containerd's IDs.
pub(crate) fn new_id() -> Result<String> {
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
