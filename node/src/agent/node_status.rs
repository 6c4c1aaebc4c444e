//! The Node object as the kubelet registers and updates it: capacity and
//! allocatable read off the machine, addresses, nodeInfo, labels and the
//! Ready / MemoryPressure / DiskPressure / PIDPressure conditions.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::AgentConfig;
use crate::eviction::thresholds::Signal;
use crate::eviction::Pressure;

/// What the machine has, read from /proc and statvfs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Machine {
    pub cpus: u64,
    pub memory_bytes: u64,
    pub memory_available: u64,
    pub disk_bytes: u64,
    pub disk_available: u64,
    pub inodes: u64,
    pub inodes_free: u64,
    pub pids: u64,
    pub pid_max: u64,
    pub kernel: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
}

fn meminfo(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

fn first_line(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.lines().next().unwrap_or("").trim().to_string())
        .unwrap_or_default()
}

impl Machine {
    /// Read the machine; disk figures are for the filesystem holding `root`.
    pub fn read(root: &Path) -> Machine {
        let (disk_bytes, disk_available, inodes, inodes_free) = nix::sys::statvfs::statvfs(root)
            .map(|s| {
                let f = s.fragment_size();
                (
                    s.blocks() * f,
                    s.blocks_available() * f,
                    s.files(),
                    s.files_available(),
                )
            })
            .unwrap_or((0, 0, 0, 0));
        let os_image = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("PRETTY_NAME=")
                        .map(|v| v.trim_matches('"').to_string())
                })
            })
            .unwrap_or_else(|| "Linux".into());
        let pids = std::fs::read_dir("/proc")
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                    .count() as u64
            })
            .unwrap_or(0);
        Machine {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get() as u64)
                .unwrap_or(1),
            memory_bytes: meminfo("MemTotal:"),
            memory_available: meminfo("MemAvailable:"),
            disk_bytes,
            disk_available,
            inodes,
            inodes_free,
            pids,
            pid_max: first_line("/proc/sys/kernel/pid_max")
                .parse()
                .unwrap_or(32768),
            kernel: first_line("/proc/sys/kernel/osrelease"),
            os_image,
            machine_id: first_line("/etc/machine-id"),
            boot_id: first_line("/proc/sys/kernel/random/boot_id"),
        }
    }
}

/// The Go architecture name Kubernetes uses (amd64, arm64, ...).
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn q(s: impl Into<String>) -> Quantity {
    Quantity(s.into())
}

fn condition(kind: &str, on: bool, reason: &str, message: &str, now: &Time) -> NodeCondition {
    NodeCondition {
        type_: kind.into(),
        status: if on { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    }
}

/// The node's conditions, the pressure ones as the eviction manager
/// found them (`crate::eviction`).
pub fn conditions(p: Pressure, now: &Time) -> Vec<NodeCondition> {
    let (memory, disk, pids) = (p.memory, p.disk, p.pids);
    vec![
        condition(
            "MemoryPressure",
            memory,
            if memory {
                "KubeletHasInsufficientMemory"
            } else {
                "KubeletHasSufficientMemory"
            },
            if memory {
                "node has memory pressure"
            } else {
                "node has sufficient memory available"
            },
            now,
        ),
        condition(
            "DiskPressure",
            disk,
            if disk {
                "KubeletHasDiskPressure"
            } else {
                "KubeletHasNoDiskPressure"
            },
            if disk {
                "node has disk pressure"
            } else {
                "node has no disk pressure"
            },
            now,
        ),
        condition(
            "PIDPressure",
            pids,
            if pids {
                "KubeletHasInsufficientPID"
            } else {
                "KubeletHasSufficientPID"
            },
            if pids {
                "node has PID pressure"
            } else {
                "node has sufficient PID available"
            },
            now,
        ),
        condition(
            "Ready",
            true,
            "KubeletReady",
            "podctl is posting ready status",
            now,
        ),
    ]
}

/// Keep a condition's lastTransitionTime when its status did not change.
pub fn carry_transitions(new: &mut [NodeCondition], old: &[NodeCondition]) {
    for c in new {
        if let Some(o) = old.iter().find(|o| o.type_ == c.type_) {
            if o.status == c.status {
                c.last_transition_time = o.last_transition_time.clone();
            }
        }
    }
}

/// What pods may use: capacity less reserved, less hard eviction levels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allocatable {
    pub cpu_milli: u64,
    pub memory: u64,
    pub ephemeral_storage: u64,
}

/// The node's allocatable resources. Pods' memory is measured against
/// capacity less reserved (`allocatableMemory.available`); what is shown
/// also leaves the hard `memory.available` and `nodefs.available` levels.
pub fn allocatable(cfg: &AgentConfig, m: &Machine) -> Allocatable {
    let r = &cfg.reserved;
    Allocatable {
        cpu_milli: (m.cpus * 1000).saturating_sub(r.cpu_milli),
        memory: m.memory_bytes.saturating_sub(r.memory).saturating_sub(
            cfg.eviction
                .hard_reserve(Signal::MemoryAvailable, m.memory_bytes),
        ),
        ephemeral_storage: m
            .disk_bytes
            .saturating_sub(r.ephemeral_storage)
            .saturating_sub(
                cfg.eviction
                    .hard_reserve(Signal::NodefsAvailable, m.disk_bytes),
            ),
    }
}

/// The status part: capacity, allocatable, addresses, nodeInfo, conditions.
pub fn status(cfg: &AgentConfig, m: &Machine, p: Pressure, now: &Time) -> NodeStatus {
    let capacity: BTreeMap<String, Quantity> = [
        ("cpu".to_string(), q(m.cpus.to_string())),
        (
            "memory".to_string(),
            q(format!("{}Ki", m.memory_bytes / 1024)),
        ),
        ("pods".to_string(), q(cfg.max_pods.to_string())),
        (
            "ephemeral-storage".to_string(),
            q(format!("{}Ki", m.disk_bytes / 1024)),
        ),
    ]
    .into();
    // Allocatable: capacity less what is reserved for the system and the
    // node agent, and less the hard eviction thresholds (as the kubelet).
    let a = allocatable(cfg, m);
    let mut allocatable = capacity.clone();
    allocatable.insert("cpu".into(), q(format!("{}m", a.cpu_milli)));
    allocatable.insert("memory".into(), q(format!("{}Ki", a.memory / 1024)));
    allocatable.insert(
        "ephemeral-storage".into(),
        q(format!("{}Ki", a.ephemeral_storage / 1024)),
    );
    NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: cfg.node_ip.clone(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: cfg.node_name.clone(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(cfg.kubelet_addr.port()),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: arch().into(),
            operating_system: "linux".into(),
            kernel_version: m.kernel.clone(),
            os_image: m.os_image.clone(),
            machine_id: m.machine_id.clone(),
            boot_id: m.boot_id.clone(),
            system_uuid: m.machine_id.clone(),
            container_runtime_version: cfg.runtime_version.clone(),
            kubelet_version: cfg.kubelet_version.clone(),
            ..Default::default()
        }),
        conditions: Some(conditions(p, now)),
        ..Default::default()
    }
}

/// The Node object to register.
pub fn node(cfg: &AgentConfig, m: &Machine, p: Pressure, now: &Time) -> Node {
    let arch = arch().to_string();
    let mut labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname".to_string(), cfg.node_name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch.clone()),
        ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
        ("beta.kubernetes.io/arch".to_string(), arch),
    ]
    .into();
    labels.extend(cfg.labels.clone());
    Node {
        metadata: ObjectMeta {
            name: Some(cfg.node_name.clone()),
            labels: Some(labels),
            annotations: Some(
                [(
                    "volumes.kubernetes.io/controller-managed-attach-detach".to_string(),
                    "true".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        spec: None,
        status: Some(status(cfg, m, p, now)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::Reserved;

    #[test]
    fn pressure_becomes_conditions() {
        let now = crate::status::now();
        let st = |c: &[NodeCondition], k: &str| {
            c.iter().find(|x| x.type_ == k).map(|x| x.status.clone())
        };
        let c = conditions(Pressure::default(), &now);
        assert_eq!(st(&c, "Ready").as_deref(), Some("True"));
        assert_eq!(st(&c, "MemoryPressure").as_deref(), Some("False"));
        let c = conditions(
            Pressure {
                memory: true,
                disk: true,
                pids: true,
            },
            &now,
        );
        for k in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
            assert_eq!(st(&c, k).as_deref(), Some("True"), "{k}");
        }
    }

    #[test]
    fn allocatable_leaves_reserved_and_hard_eviction_levels() {
        let m = Machine {
            cpus: 2,
            memory_bytes: 4 << 30,
            disk_bytes: 100 << 30,
            ..Default::default()
        };
        let cfg = AgentConfig {
            reserved: Reserved {
                cpu_milli: 500,
                memory: 1 << 30,
                ephemeral_storage: 0,
            },
            ..Default::default()
        };
        let a = allocatable(&cfg, &m);
        assert_eq!(a.cpu_milli, 1500);
        assert_eq!(
            a.memory,
            (3 << 30) - (100 << 20),
            "default hard memory.available<100Mi"
        );
        assert_eq!(
            a.ephemeral_storage,
            90 << 30,
            "default hard nodefs.available<10%"
        );
    }
}
