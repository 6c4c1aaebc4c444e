//! Pod admission: what the node refuses to run, before anything of the
//! pod is made. A refused pod ends Failed with the reason and message the
//! kubelet gives and a Warning Event.
//!
//! Sysctls: only the safe set (`kernel.shm_rmid_forced`,
//! `net.ipv4.ip_local_port_range`, `net.ipv4.tcp_syncookies`,
//! `net.ipv4.ping_group_range`, `net.ipv4.ip_unprivileged_port_start`)
//! and those allowed with `--allowed-unsafe-sysctls` (names or `prefix*`)
//! are admitted, and none of a namespace the pod shares with the host.

use k8s_openapi::api::core::v1::Pod;

/// Why a pod is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: &'static str,
    pub message: String,
}

/// Refusals under node pressure, as the kubelet's eviction admission:
/// BestEffort pods under memory pressure, every pod under disk or PID
/// pressure. Critical pods ([`crate::agent::pods::is_critical`]) pass.
pub fn under_pressure(pod: &Pod, p: crate::eviction::Pressure) -> Result<(), Rejection> {
    if crate::agent::pods::is_critical(pod) {
        return Ok(());
    }
    let best_effort = pod
        .spec
        .as_ref()
        .is_some_and(|s| crate::resources::qos_class(s) == "BestEffort");
    let condition = if p.disk {
        "DiskPressure"
    } else if p.pids {
        "PIDPressure"
    } else if p.memory && best_effort {
        "MemoryPressure"
    } else {
        return Ok(());
    };
    Err(Rejection {
        reason: "Evicted",
        message: format!("Pod The node had condition: [{condition}]. "),
    })
}

/// Sysctls every pod may set.
pub const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ns {
    Ipc,
    Net,
}

impl Ns {
    fn name(self) -> &'static str {
        match self {
            Ns::Ipc => "ipc",
            Ns::Net => "net",
        }
    }
}

/// The namespace a sysctl belongs to, if it is namespaced at all.
fn namespace_of(name: &str) -> Option<Ns> {
    if name.starts_with("net.") {
        return Some(Ns::Net);
    }
    let ipc = ["kernel.shm", "kernel.msg", "fs.mqueue."];
    (ipc.iter().any(|p| name.starts_with(p)) || name == "kernel.sem").then_some(Ns::Ipc)
}

/// `kernel/shm_rmid_forced` → `kernel.shm_rmid_forced` (a name whose
/// first separator is `/` uses `/` between parts and `.` inside them).
pub fn normalize(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(i) if name.as_bytes()[i] == b'/' => name
            .chars()
            .map(|c| match c {
                '/' => '.',
                '.' => '/',
                c => c,
            })
            .collect(),
        _ => name.to_string(),
    }
}

fn allowed(name: &str, unsafe_allowed: &[String]) -> bool {
    SAFE_SYSCTLS.contains(&name)
        || unsafe_allowed.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(&normalize(prefix)),
            None => normalize(p) == name,
        })
}

/// Admit `pod`, or say why not.
pub fn admit(pod: &Pod, unsafe_allowed: &[String]) -> Result<(), Rejection> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(());
    };
    let sysctls = spec
        .security_context
        .as_ref()
        .and_then(|s| s.sysctls.clone())
        .unwrap_or_default();
    let host_net = spec.host_network.unwrap_or(false);
    let host_ipc = spec.host_ipc.unwrap_or(false);
    for s in sysctls {
        let name = normalize(&s.name);
        let why = if !allowed(&name, unsafe_allowed) {
            Some(format!("{name:?} not allowlisted"))
        } else {
            match namespace_of(&name) {
                Some(ns) if (ns == Ns::Net && host_net) || (ns == Ns::Ipc && host_ipc) => Some(
                    format!("{name:?} not allowed with host {} enabled", ns.name()),
                ),
                None => Some(format!("{name:?} is not known to be namespaced")),
                _ => None,
            }
        };
        if let Some(why) = why {
            return Err(Rejection {
                reason: "SysctlForbidden",
                message: format!("Pod forbidden sysctl: {why}"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSecurityContext, PodSpec, Sysctl};

    fn pod(sysctls: &[&str], host_net: bool) -> Pod {
        Pod {
            spec: Some(PodSpec {
                host_network: Some(host_net),
                security_context: Some(PodSecurityContext {
                    sysctls: Some(
                        sysctls
                            .iter()
                            .map(|n| Sysctl {
                                name: n.to_string(),
                                value: "1".into(),
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn safe_sysctls_pass_and_unsafe_ones_are_refused() {
        assert_eq!(admit(&pod(&["kernel.shm_rmid_forced"], false), &[]), Ok(()));
        assert_eq!(admit(&pod(&["kernel/shm_rmid_forced"], false), &[]), Ok(()));
        let r = admit(&pod(&["kernel.msgmax"], false), &[]).err();
        assert_eq!(
            r,
            Some(Rejection {
                reason: "SysctlForbidden",
                message: "Pod forbidden sysctl: \"kernel.msgmax\" not allowlisted".into()
            })
        );
        assert_eq!(
            admit(&pod(&["kernel.msgmax"], false), &["kernel.msg*".into()]),
            Ok(())
        );
        let r = admit(&pod(&["net.ipv4.tcp_syncookies"], true), &[]).err();
        assert!(r.is_some_and(|r| r.message.contains("host net")));
    }

    #[test]
    fn slashes_become_dots() {
        assert_eq!(
            normalize("net/ipv4/conf/eno2.100/rp_filter"),
            "net.ipv4.conf.eno2/100.rp_filter"
        );
        assert_eq!(normalize("net.ipv4.ip_forward"), "net.ipv4.ip_forward");
    }
}
