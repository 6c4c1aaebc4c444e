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

use crate::cni::{first_ip, Attachment, CniConfig};
use crate::container::{Mount, Runtime};
use crate::error::{IoContext, Result, RuntimeError};
use crate::shim;

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
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Directory the pod's container logs go to.
    pub log_directory: PathBuf,
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

#[derive(Serialize, Deserialize)]
struct SandboxMeta {
    config: SandboxConfig,
    created_at_ns: i64,
    ip: Option<String>,
    cni_result: Option<serde_json::Value>,
    netns: Option<PathBuf>,
    stopped: bool,
}

impl Runtime {
    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.state_dir().join("sandboxes").join(id)
    }

    fn sandbox_meta(&self, id: &str) -> Result<SandboxMeta> {
        let p = self.sandbox_dir(id).join("meta.json");
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

    fn save_sandbox_meta(&self, id: &str, m: &SandboxMeta) -> Result<()> {
        let p = self.sandbox_dir(id).join("meta.json");
        let b = serde_json::to_vec_pretty(m).map_err(|e| RuntimeError::Container {
            id: id.into(),
            reason: e.to_string(),
        })?;
        write_atomic(&p, &b).ctx("write", &p)
    }

    /// Start the pause process, pin its network namespace, attach CNI.
    pub fn run_sandbox(&self, cfg: SandboxConfig, cni: Option<&CniConfig>) -> Result<String> {
        let id = crate::container::new_id()?;
        let dir = self.sandbox_dir(&id);
        std::fs::create_dir_all(&dir).ctx("create", &dir)?;
        let res = self.run_sandbox_in(&id, &dir, &cfg, cni);
        if let Err(e) = res {
            let _ = self.remove_sandbox(&id, cni);
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        Ok(id)
    }

    fn run_sandbox_in(
        &self,
        id: &str,
        dir: &Path,
        cfg: &SandboxConfig,
        cni: Option<&CniConfig>,
    ) -> Result<()> {
        let mut meta = SandboxMeta {
            config: cfg.clone(),
            created_at_ns: now_ns(),
            ip: None,
            cni_result: None,
            netns: None,
            stopped: false,
        };
        self.save_sandbox_meta(id, &meta)?;
        let mut ns = vec!["uts"];
        if !cfg.host_network {
            ns.push("network");
        }
        if !cfg.host_ipc {
            ns.push("ipc");
        }
        let dir_s = dir.display().to_string();
        let ns_s = ns.join(",");
        shim::run(
            self.shim_path(),
            id,
            "pause",
            &[
                "--dir",
                &dir_s,
                "--hostname",
                &cfg.hostname,
                "--namespaces",
                &ns_s,
            ],
        )?;
        let pid = read_pid(&dir.join("pause.pid")).ctx("read", dir.join("pause.pid"))?;
        if !cfg.host_network {
            let pin = self.state_dir().join("netns").join(id);
            std::fs::create_dir_all(self.state_dir().join("netns"))
                .ctx("create", self.state_dir().join("netns"))?;
            std::fs::File::create(&pin).ctx("create", &pin)?;
            let src = PathBuf::from(format!("/proc/{pid}/ns/net"));
            mount(
                Some(&src),
                &pin,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| RuntimeError::Container {
                id: id.into(),
                reason: format!("pinning {} at {}: {e}", src.display(), pin.display()),
            })?;
            meta.netns = Some(pin.clone());
            self.save_sandbox_meta(id, &meta)?;
            if let Some(cni) = cni {
                let att = Attachment {
                    container_id: id,
                    netns: &pin,
                    ifname: "eth0",
                };
                cni.loopback(&att, "ADD")?;
                let result = cni.add(&att)?;
                meta.ip = first_ip(&result);
                meta.cni_result = Some(result);
            }
        }
        self.write_pod_files(dir, cfg, meta.ip.as_deref())?;
        self.save_sandbox_meta(id, &meta)
    }

    fn write_pod_files(&self, dir: &Path, cfg: &SandboxConfig, ip: Option<&str>) -> Result<()> {
        let hostname = if cfg.hostname.is_empty() {
            "localhost"
        } else {
            cfg.hostname.as_str()
        };
        let mut hosts =
            String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        if let Some(ip) = ip {
            hosts.push_str(&format!("{ip}\t{hostname}\n"));
        }
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        for (name, data) in [
            ("hostname", format!("{hostname}\n")),
            ("hosts", hosts),
            ("resolv.conf", resolv),
        ] {
            let p = dir.join(name);
            write_atomic(&p, data.as_bytes()).ctx("write", &p)?;
        }
        Ok(())
    }

    /// Namespaces and files a container of this pod joins and mounts.
    pub fn sandbox_attachments(&self, id: &str) -> Result<(BTreeMap<String, String>, Vec<Mount>)> {
        let m = self.sandbox_meta(id)?;
        let dir = self.sandbox_dir(id);
        let pid = read_pid(&dir.join("pause.pid")).ctx("read", dir.join("pause.pid"))?;
        let mut ns = BTreeMap::new();
        ns.insert("uts".to_string(), format!("/proc/{pid}/ns/uts"));
        ns.insert(
            "ipc".to_string(),
            if m.config.host_ipc {
                "host".to_string()
            } else {
                format!("/proc/{pid}/ns/ipc")
            },
        );
        ns.insert(
            "network".to_string(),
            match &m.netns {
                Some(p) => p.display().to_string(),
                None => "host".to_string(),
            },
        );
        let mounts = ["hostname", "hosts", "resolv.conf"]
            .iter()
            .map(|f| Mount {
                host_path: dir.join(f),
                container_path: format!("/etc/{f}"),
                readonly: false,
            })
            .collect();
        Ok((ns, mounts))
    }

    /// Stop the pause process and detach the network. Idempotent.
    pub fn stop_sandbox(&self, id: &str, cni: Option<&CniConfig>) -> Result<()> {
        let mut m = match self.sandbox_meta(id) {
            Ok(m) => m,
            Err(RuntimeError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        if let (Some(cni), Some(netns)) = (cni, &m.netns) {
            if !m.stopped {
                let att = Attachment {
                    container_id: id,
                    netns,
                    ifname: "eth0",
                };
                cni.del(&att, m.cni_result.as_ref())?;
            }
        }
        if let Ok(pid) = read_pid(&self.sandbox_dir(id).join("pause.pid")) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Path::new(&format!("/proc/{pid}")).exists()
                && !is_zombie(pid)
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        m.stopped = true;
        self.save_sandbox_meta(id, &m)
    }

    /// Stop, unpin the network namespace and delete the sandbox. Idempotent.
    pub fn remove_sandbox(&self, id: &str, cni: Option<&CniConfig>) -> Result<()> {
        let dir = self.sandbox_dir(id);
        if !dir.exists() {
            return Ok(());
        }
        self.stop_sandbox(id, cni)?;
        let pin = self.state_dir().join("netns").join(id);
        if pin.exists() {
            match umount2(&pin, MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
                Err(e) => return Err(std::io::Error::from(e)).ctx("unmount", &pin),
            }
            std::fs::remove_file(&pin).ctx("remove", &pin)?;
        }
        std::fs::remove_dir_all(&dir).ctx("remove", &dir)
    }

    /// Status of a sandbox.
    pub fn sandbox_status(&self, id: &str) -> Result<SandboxStatus> {
        let m = self.sandbox_meta(id)?;
        let pid = read_pid(&self.sandbox_dir(id).join("pause.pid")).ok();
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists() && !is_zombie(p));
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

    /// All sandboxes.
    pub fn list_sandboxes(&self) -> Result<Vec<SandboxStatus>> {
        let d = self.state_dir().join("sandboxes");
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if let Ok(s) = self.sandbox_status(&e.file_name().to_string_lossy()) {
                    out.push(s);
                }
            }
        }
        out.sort_by_key(|s| s.created_at_ns);
        Ok(out)
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}
