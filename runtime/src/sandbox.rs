//! Pod sandboxes: a built-in pause process owning the pod's namespaces,
//! the network namespace pinned by a bind mount (so CNI DEL works after
//! pause is gone), CNI networking, and the pod's hostname/hosts/resolv.conf
//! files that every container of the pod mounts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use podctl_shim::logfmt::now_ns;
use podctl_shim::state::{read_pid, write_atomic};

use crate::cni::{first_ip, Attachment, PortMapping};
use crate::container::{ContainerState, Mount, Runtime};
use crate::error::{IoContext, Result, RuntimeError};
use crate::liveness::process_alive;
use crate::pod_files::{host_name, pod_hostname};
use crate::{cgroup, lock, shim};

/// What a pod sandbox is made from.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SandboxConfig {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
    pub hostname: String,
    pub host_network: bool,
    pub host_ipc: bool,
    pub host_pid: bool,
    /// One PID namespace for the whole pod (owned by pause) instead of
    /// one per container. Ignored with `host_pid`.
    pub share_pid: bool,
    pub port_mappings: Vec<PortMapping>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Directory the pod's container logs go to.
    pub log_directory: PathBuf,
    /// The pod's `/etc/resolv.conf`; the host's is copied when `None`.
    #[serde(default)]
    pub dns: Option<DnsConfig>,
    /// Pod-level limits (the sum of its containers', as the kubelet sets
    /// them) on the pod's cgroup; cgroupfs driver only, and only for pods
    /// in podctl's own cgroup parent.
    #[serde(default)]
    pub resources: Option<crate::container::Resources>,
    /// The pod's cgroup as its creator manages it (a kubelet's pod cgroup):
    /// containers go under it and podctl neither limits nor removes it.
    #[serde(default)]
    pub cgroup_parent: Option<String>,
    /// A user namespace of the pod's own with these ID maps (`None`: the
    /// host's). Needs the pod's own network, IPC and PID namespaces.
    #[serde(default)]
    pub userns: Option<crate::userns::UserNs>,
}

/// What goes into a pod's `/etc/resolv.conf`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl DnsConfig {
    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for s in &self.servers {
            out.push_str(&format!("nameserver {s}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// A running pod sandbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sandbox {
    pub id: String,
    /// The pod's IPv4 address from CNI.
    pub ip: Option<String>,
    /// The pinned network namespace (`None` with host networking).
    pub netns_path: Option<PathBuf>,
    /// Host PID of the pause process.
    pub pid: i32,
}

/// CRI sandbox states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    Ready,
    NotReady,
}

/// What a sandbox is doing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SandboxStatus {
    pub id: String,
    pub config: SandboxConfig,
    pub state: SandboxState,
    pub pid: Option<i32>,
    pub ip: Option<String>,
    pub netns: Option<PathBuf>,
    pub created_at_ns: i64,
}

/// A sandbox's lock, held by its creator until the sandbox is recorded
/// ([`Runtime::run_sandbox_claimed`]).
pub struct SandboxClaim {
    _lock: lock::Lock,
}

/// What a container of the pod joins and mounts.
pub struct PodAttachments {
    pub namespaces: BTreeMap<String, String>,
    /// The pod's user namespace maps (its path is `namespaces["user"]`).
    pub userns: Option<crate::userns::UserNs>,
    pub mounts: Vec<Mount>,
    pub hostname: String,
}

#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct SandboxMeta {
    config: SandboxConfig,
    created_at_ns: i64,
    ip: Option<String>,
    cni_result: Option<serde_json::Value>,
    netns: Option<PathBuf>,
    stopped: bool,
}

const PAUSE_PID: &str = "pause.pid";

impl Runtime {
    pub(crate) fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.cfg.state_dir.join("sandboxes").join(id)
    }

    pub(crate) fn netns_pin(&self, id: &str) -> PathBuf {
        self.cfg.state_dir.join("netns").join(id)
    }

    fn sandbox_meta(&self, id: &str) -> Result<SandboxMeta> {
        crate::container::read_meta_cached(
            id,
            &self.sandbox_dir(id).join("meta.json"),
            &self.sandbox_metas,
            |id, reason| RuntimeError::Sandbox { id, reason },
        )
    }

    fn save_sandbox_meta(&self, id: &str, m: &SandboxMeta) -> Result<()> {
        let p = self.sandbox_dir(id).join("meta.json");
        let b = serde_json::to_vec_pretty(m).map_err(|e| RuntimeError::Sandbox {
            id: id.into(),
            reason: e.to_string(),
        })?;
        write_atomic(&p, &b).ctx("write", &p)
    }

    /// Start the pause process, pin its network namespace, attach CNI.
    pub fn run_sandbox(&self, cfg: SandboxConfig) -> Result<Sandbox> {
        self.run_sandbox_claimed(cfg).map(|(sb, _claim)| sb)
    }

    /// [`Runtime::run_sandbox`], keeping the sandbox's lock held in the
    /// returned claim: a caller that records the sandbox elsewhere (the CRI
    /// service) drops the claim once its record is written, and until then
    /// no collector (`CriService`'s, in any process) takes the sandbox for
    /// one a crash left unrecorded. Drop the claim before removing the
    /// sandbox (removal takes the same lock).
    pub fn run_sandbox_claimed(&self, cfg: SandboxConfig) -> Result<(Sandbox, SandboxClaim)> {
        let id = crate::container::new_id()?;
        let dir = self.sandbox_dir(&id);
        let claim = lock::exclusive(&self.locks(), &id)?;
        let res = std::fs::create_dir_all(&dir)
            .ctx("create", &dir)
            .and_then(|()| match (&cfg.resources, &cfg.cgroup_parent) {
                (Some(r), None) => cgroup::set_pod_limits(&self.cfg, &id, r),
                _ => Ok(()),
            })
            .and_then(|()| self.setup_sandbox(&id, &dir, &cfg));
        match res {
            Ok(sb) => {
                tracing::info!(%id, ip = ?sb.ip, pid = sb.pid, "sandbox running");
                Ok((sb, SandboxClaim { _lock: claim }))
            }
            Err(e) => {
                tracing::warn!(%id, error = %e, "sandbox failed; cleaning up");
                drop(claim);
                // What cannot be removed now keeps its directory: the
                // collector (`CriService`'s, the next `gc`) retries it.
                if let Err(e2) = self.remove_sandbox(&id) {
                    tracing::warn!(%id, error = %e2, "cleanup after failed sandbox");
                }
                Err(e)
            }
        }
    }

    fn setup_sandbox(&self, id: &str, dir: &Path, cfg: &SandboxConfig) -> Result<Sandbox> {
        let mut meta = SandboxMeta {
            config: cfg.clone(),
            created_at_ns: now_ns(),
            ip: None,
            cni_result: None,
            netns: None,
            stopped: false,
        };
        self.save_sandbox_meta(id, &meta)?;
        // A host-network pod shares the node's UTS namespace too (its
        // hostname is the node's), as with containerd and CRI-O.
        let mut ns = vec![];
        if !cfg.host_network {
            ns.push("uts");
            ns.push("network");
        }
        if !cfg.host_ipc {
            ns.push("ipc");
        }
        if cfg.share_pid && !cfg.host_pid {
            ns.push("pid");
        }
        let dir_s = dir.display().to_string();
        let ns_s = ns.join(",");
        let hostname = pod_hostname(cfg);
        let mut args = vec![
            "--dir".to_string(),
            dir_s,
            "--hostname".into(),
            hostname.into(),
            "--namespaces".into(),
            ns_s,
        ];
        args.extend(crate::userns::pause_args(id, cfg)?);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        shim::run(&self.shim, id, "pause", &args)?;
        let pid = read_pid(&dir.join(PAUSE_PID)).ctx("read", dir.join(PAUSE_PID))?;
        crate::failpoint::hit("run_sandbox.pause_started");
        if self.pod_slice_owned(cfg) {
            crate::systemd::start_pod(
                &self.cfg.cgroup_parent,
                id,
                pid as u32,
                cfg.resources.as_ref(),
            )?;
        }
        if !cfg.host_network {
            let pin = self.netns_pin(id);
            if let Some(parent) = pin.parent() {
                std::fs::create_dir_all(parent).ctx("create", parent)?;
            }
            std::fs::File::create(&pin).ctx("create", &pin)?;
            let src = PathBuf::from(format!("/proc/{pid}/ns/net"));
            mount(
                Some(&src),
                &pin,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| RuntimeError::Sandbox {
                id: id.into(),
                reason: format!("pinning {} at {}: {e}", src.display(), pin.display()),
            })?;
            meta.netns = Some(pin.clone());
            self.save_sandbox_meta(id, &meta)?;
            if let Some(cni) = &self.cfg.cni {
                let att = Attachment {
                    container_id: id,
                    netns: &pin,
                    ifname: "eth0",
                    port_mappings: &cfg.port_mappings,
                    args: cni_args(id, cfg),
                };
                cni.loopback(&att, "ADD")?;
                let result = cni.add(&att)?;
                crate::failpoint::hit("run_sandbox.network_attached");
                meta.ip = first_ip(&result);
                meta.cni_result = Some(result);
                self.save_sandbox_meta(id, &meta)?;
            }
        }
        crate::pod_files::write(dir, cfg, meta.ip.as_deref())?;
        self.save_sandbox_meta(id, &meta)?;
        Ok(Sandbox {
            id: id.into(),
            ip: meta.ip,
            netns_path: meta.netns,
            pid,
        })
    }

    /// Namespaces and files a container of this pod joins and mounts.
    pub fn sandbox_attachments(&self, id: &str) -> Result<PodAttachments> {
        let m = self.sandbox_meta(id)?;
        let dir = self.sandbox_dir(id);
        let pid = read_pid(&dir.join(PAUSE_PID)).ctx("read", dir.join(PAUSE_PID))?;
        if m.stopped || !process_alive(pid) {
            return Err(RuntimeError::Sandbox {
                id: id.into(),
                reason: "sandbox is not ready".into(),
            });
        }
        let c = &m.config;
        let mut ns = BTreeMap::new();
        let uts = if c.host_network {
            "host".into()
        } else {
            format!("/proc/{pid}/ns/uts")
        };
        ns.insert("uts".to_string(), uts);
        let ipc = if c.host_ipc {
            "host".into()
        } else {
            format!("/proc/{pid}/ns/ipc")
        };
        ns.insert("ipc".to_string(), ipc);
        let net = match &m.netns {
            // In its own user namespace the container opens the path as the
            // pod's root, who may not reach the pin: the same namespace
            // through pause (whose namespaces are the pod's) it may.
            Some(_) if c.userns.is_some() => format!("/proc/{pid}/ns/net"),
            Some(p) => p.display().to_string(),
            None => "host".to_string(),
        };
        ns.insert("network".to_string(), net);
        if c.userns.is_some() {
            ns.insert("user".to_string(), format!("/proc/{pid}/ns/user"));
        }
        if c.host_pid {
            ns.insert("pid".to_string(), "host".to_string());
        } else if c.share_pid {
            ns.insert("pid".to_string(), format!("/proc/{pid}/ns/pid"));
        }
        let mounts = ["hostname", "hosts", "resolv.conf"]
            .iter()
            .map(|f| Mount {
                host_path: dir.join(f),
                container_path: format!("/etc/{f}"),
                readonly: false,
                propagation: Default::default(),
                recursive_readonly: false,
            })
            .collect();
        Ok(PodAttachments {
            namespaces: ns,
            userns: c.userns,
            mounts,
            hostname: if c.host_network {
                host_name()
            } else {
                pod_hostname(c).to_string()
            },
        })
    }

    /// Stop the pod's containers and the pause process and detach the
    /// network (CNI DEL). Idempotent.
    pub fn stop_sandbox(&self, id: &str) -> Result<()> {
        for c in self.pod_containers(id)? {
            if c.state != ContainerState::Exited {
                self.stop_container(&c.id, Duration::from_secs(2))?;
            }
        }
        let _l = lock::exclusive(&self.locks(), id)?;
        let mut m = match self.sandbox_meta(id) {
            Ok(m) => m,
            Err(RuntimeError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        if let (Some(cni), Some(netns)) = (&self.cfg.cni, &m.netns) {
            // Whenever the namespace was pinned: an ADD cut short (a crash
            // before its result was saved, a plugin failing half-way) may
            // hold an address, and DEL of what was never added succeeds.
            if !m.stopped {
                let att = Attachment {
                    container_id: id,
                    netns,
                    ifname: "eth0",
                    port_mappings: &m.config.port_mappings,
                    args: cni_args(id, &m.config),
                };
                match (cni.del(&att, m.cni_result.as_ref()), &m.cni_result) {
                    (Ok(()), _) => {}
                    // A recorded attachment must be released: retry later.
                    (Err(e), Some(_)) => return Err(e),
                    // Nothing recorded (an ADD that failed or was cut): a
                    // DEL that fails too (say, a plugin missing) must not
                    // keep the pod's pause and namespace alive.
                    (Err(e), None) => {
                        tracing::warn!(%id, error = %e, "CNI DEL of an unfinished attachment")
                    }
                }
            }
        }
        crate::failpoint::hit("stop_sandbox.network_detached");
        if let Ok(pid) = read_pid(&self.sandbox_dir(id).join(PAUSE_PID)) {
            if process_alive(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while process_alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        m.stopped = true;
        self.save_sandbox_meta(id, &m)?;
        tracing::info!(%id, "sandbox stopped");
        Ok(())
    }

    /// Stop the sandbox, remove its containers, unpin the network
    /// namespace and delete its state. Idempotent.
    pub fn remove_sandbox(&self, id: &str) -> Result<()> {
        let dir = self.sandbox_dir(id);
        if !dir.exists() {
            return Ok(());
        }
        let meta = self.sandbox_meta(id).ok();
        let own_cgroup = meta
            .as_ref()
            .map(|m| m.config.cgroup_parent.is_none())
            .unwrap_or(true);
        let own_slice = meta
            .as_ref()
            .is_some_and(|m| self.pod_slice_owned(&m.config));
        self.stop_sandbox(id)?;
        for c in self.pod_containers(id)? {
            self.remove_container(&c.id)?;
        }
        // Containers retired but not yet finished keep cgroups inside the
        // pod's: finish them (or wait for their finishers) first.
        self.finish_retired(Some(id))?;
        crate::failpoint::hit("remove_sandbox.containers_removed");
        let _l = lock::exclusive(&self.locks(), id)?;
        let pin = self.netns_pin(id);
        if pin.exists() {
            unpin(&pin)?;
        }
        if own_cgroup {
            cgroup::remove_pod(&self.cfg, id);
        }
        if own_slice {
            crate::systemd::stop_pod(&self.cfg.cgroup_parent, id)?;
        }
        std::fs::remove_dir_all(&dir).ctx("remove", &dir)?;
        self.sandbox_metas.forget(id);
        lock::forget(&self.locks(), id);
        tracing::info!(%id, "sandbox removed");
        Ok(())
    }

    /// podctl makes (and removes) a systemd slice for this pod: systemd
    /// driver on a systemd host, no cgroup parent from the pod's creator.
    fn pod_slice_owned(&self, cfg: &SandboxConfig) -> bool {
        self.cfg.cgroup_driver == crate::CgroupDriver::Systemd
            && cfg.cgroup_parent.is_none()
            && cgroup::systemd_booted()
    }

    fn pod_containers(&self, id: &str) -> Result<Vec<crate::ContainerStatus>> {
        Ok(self
            .list_containers()?
            .into_iter()
            .filter(|c| c.sandbox_id.as_deref() == Some(id))
            .collect())
    }

    /// Status of a sandbox.
    pub fn sandbox_status(&self, id: &str) -> Result<SandboxStatus> {
        let m = self.sandbox_meta(id)?;
        let pid = read_pid(&self.sandbox_dir(id).join(PAUSE_PID)).ok();
        let alive = pid.is_some_and(process_alive);
        Ok(SandboxStatus {
            id: id.into(),
            config: m.config,
            state: if alive && !m.stopped {
                SandboxState::Ready
            } else {
                SandboxState::NotReady
            },
            pid: if alive { pid } else { None },
            ip: m.ip,
            netns: m.netns,
            created_at_ns: m.created_at_ns,
        })
    }

    /// All sandboxes, oldest first.
    pub fn list_sandboxes(&self) -> Result<Vec<SandboxStatus>> {
        // A ready sandbox changes when its pause process ends.
        let compute = |id: &str| {
            let st = self.sandbox_status(id).ok()?;
            let pid = st.pid.filter(|_| st.state == SandboxState::Ready);
            Some((st, pid))
        };
        // Sandboxes another process removed leave the cache here.
        let removed = |id: &str| self.sandbox_metas.forget(id);
        if let Some(mut all) = self.sandbox_index.list(compute, removed) {
            all.sort_by_key(|s| s.created_at_ns);
            return Ok(all);
        }
        let d = self.cfg.state_dir.join("sandboxes");
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                if let Ok(s) = self.sandbox_status(&id) {
                    out.push(s);
                }
                seen.insert(id);
            }
        }
        // Sandboxes another process removed leave the cache here.
        self.sandbox_metas.retain(|id| seen.contains(id));
        out.sort_by_key(|s| s.created_at_ns);
        Ok(out)
    }
}

/// Unmount a pinned network namespace and remove its file.
pub(crate) fn unpin(pin: &Path) -> Result<()> {
    match umount2(pin, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
        Err(e) => return Err(std::io::Error::from(e)).ctx("unmount", pin),
    }
    std::fs::remove_file(pin).ctx("remove", pin)
}

/// `CNI_ARGS` as Kubernetes runtimes pass them.
fn cni_args(id: &str, cfg: &SandboxConfig) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={id};K8S_POD_UID={}",
        cfg.namespace, cfg.name, cfg.uid
    )
}
