//! A Kubernetes Pod turned into CRI requests, the way the kubelet builds
//! them: sandbox metadata, DNS, namespaces and port mappings; container
//! command, args, env, working dir, user, limits, log path.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use podctl_cri::proto;

use crate::error::{NodeError, Result};
use crate::quantity;

/// The pod's name, namespace and UID (generated when the manifest has none).
pub fn identity(pod: &Pod) -> Result<(String, String, String)> {
    let name = pod.metadata.name.clone().ok_or_else(|| NodeError::Config {
        pod: "(unnamed)".into(),
        reason: "no metadata.name".into(),
    })?;
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let uid = match &pod.metadata.uid {
        Some(u) => u.clone(),
        None => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let d = podctl_images::Digest::of(format!("{ns}/{name}/{now}").as_bytes());
            let x = d.hex();
            format!(
                "{}-{}-{}-{}-{}",
                &x[0..8],
                &x[8..12],
                &x[12..16],
                &x[16..20],
                &x[20..32]
            )
        }
    };
    Ok((name, ns, uid))
}

/// RunPodSandbox's configuration for `pod`, but for its hostname and
/// DNS, which need the node's settings: the pod worker's `name_sandbox`
/// sets those.
pub fn sandbox_config(
    pod: &Pod,
    name: &str,
    ns: &str,
    uid: &str,
    log_dir: &std::path::Path,
) -> Result<proto::PodSandboxConfig> {
    let spec = pod.spec.as_ref().ok_or_else(|| NodeError::Config {
        pod: format!("{ns}/{name}"),
        reason: "no spec".into(),
    })?;
    let node = proto::NamespaceMode::Node as i32;
    let pod_mode = proto::NamespaceMode::Pod as i32;
    let container_mode = proto::NamespaceMode::Container as i32;
    let ns_opts = proto::NamespaceOption {
        network: if spec.host_network == Some(true) {
            node
        } else {
            pod_mode
        },
        ipc: if spec.host_ipc == Some(true) {
            node
        } else {
            pod_mode
        },
        pid: if spec.host_pid == Some(true) {
            node
        } else if spec.share_process_namespace == Some(true) {
            pod_mode
        } else {
            container_mode
        },
        ..Default::default()
    };
    let mut ports = Vec::new();
    for c in &spec.containers {
        for p in c.ports.iter().flatten() {
            let Some(host_port) = p.host_port else {
                continue;
            };
            ports.push(proto::PortMapping {
                protocol: match p.protocol.as_deref() {
                    Some("UDP") => proto::Protocol::Udp,
                    Some("SCTP") => proto::Protocol::Sctp,
                    _ => proto::Protocol::Tcp,
                } as i32,
                container_port: p.container_port,
                host_port,
                host_ip: p.host_ip.clone().unwrap_or_default(),
            });
        }
    }
    let sysctls: HashMap<String, String> = spec
        .security_context
        .as_ref()
        .and_then(|s| s.sysctls.as_ref())
        .map(|v| {
            v.iter()
                .map(|s| (s.name.clone(), s.value.clone()))
                .collect()
        })
        .unwrap_or_default();
    Ok(proto::PodSandboxConfig {
        metadata: Some(proto::PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: ns.into(),
            attempt: 0,
        }),
        log_directory: log_dir.display().to_string(),
        port_mappings: ports,
        labels: pod
            .metadata
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .chain([
                ("io.kubernetes.pod.name".to_string(), name.to_string()),
                ("io.kubernetes.pod.namespace".to_string(), ns.to_string()),
                (crate::cri::POD_UID_LABEL.to_string(), uid.to_string()),
            ])
            .collect(),
        annotations: pod
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        linux: Some(proto::LinuxPodSandboxConfig {
            security_context: Some(proto::LinuxSandboxSecurityContext {
                namespace_options: Some(ns_opts),
                ..Default::default()
            }),
            sysctls,
            resources: pod_resources(spec),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// CreateContainer's configuration for one container of the pod.
pub fn container_config(c: &Container, image: &str) -> Result<proto::ContainerConfig> {
    let bad = |reason: String| NodeError::Container {
        pod: String::new(),
        container: c.name.clone(),
        reason,
    };
    let mut envs = Vec::new();
    for e in c.env.iter().flatten() {
        if e.value_from.is_some() {
            return Err(bad(format!(
                "env {}: valueFrom is not supported yet",
                e.name
            )));
        }
        envs.push(proto::KeyValue {
            key: e.name.clone(),
            value: e.value.clone().unwrap_or_default().into_bytes(),
        });
    }
    let sc = c.security_context.as_ref();
    let mut res = proto::LinuxContainerResources::default();
    if let Some(limits) = c.resources.as_ref().and_then(|r| r.limits.as_ref()) {
        if let Some(m) = limits.get("memory") {
            res.memory_limit_in_bytes = quantity::parse(&m.0, 1.0)
                .ok_or_else(|| bad(format!("bad memory limit {:?}", m.0)))?;
        }
        if let Some(cpu) = limits.get("cpu") {
            let milli = quantity::parse(&cpu.0, 1000.0)
                .ok_or_else(|| bad(format!("bad cpu limit {:?}", cpu.0)))?;
            res.cpu_quota = milli * 100;
            res.cpu_period = 100_000;
        }
    }
    if let Some(cpu) = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("cpu"))
    {
        let milli = quantity::parse(&cpu.0, 1000.0)
            .ok_or_else(|| bad(format!("bad cpu request {:?}", cpu.0)))?;
        res.cpu_shares = (milli * 1024 / 1000).max(2);
    }
    Ok(proto::ContainerConfig {
        metadata: Some(proto::ContainerMetadata {
            name: c.name.clone(),
            attempt: 0,
        }),
        image: Some(proto::ImageSpec {
            image: image.into(),
            // What the manifest says, as the kubelet passes it along with
            // the resolved image (`podctl ps`, crictl show this one).
            user_specified_image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: c.command.clone().unwrap_or_default(),
        args: c.args.clone().unwrap_or_default(),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs,
        labels: [("io.kubernetes.container.name".to_string(), c.name.clone())].into(),
        log_path: format!("{}/0.log", c.name),
        stdin: c.stdin == Some(true),
        stdin_once: c.stdin_once == Some(true),
        tty: c.tty == Some(true),
        linux: Some(proto::LinuxContainerConfig {
            resources: Some(res),
            security_context: Some(proto::LinuxContainerSecurityContext {
                privileged: sc.and_then(|s| s.privileged).unwrap_or(false),
                readonly_rootfs: sc
                    .and_then(|s| s.read_only_root_filesystem)
                    .unwrap_or(false),
                run_as_user: sc
                    .and_then(|s| s.run_as_user)
                    .map(|value| proto::Int64Value { value }),
                run_as_group: sc
                    .and_then(|s| s.run_as_group)
                    .map(|value| proto::Int64Value { value }),
                ..Default::default()
            }),
        }),
        ..Default::default()
    })
}

/// Pod-level resources as the kubelet computes them: CPU shares from the
/// sum of CPU requests; a memory limit and CPU quota only when every
/// container has one (sum of app containers, at least the largest init
/// container's).
pub fn pod_resources(
    spec: &k8s_openapi::api::core::v1::PodSpec,
) -> Option<proto::LinuxContainerResources> {
    let get = |c: &Container, which: &str, res: &str, scale: f64| {
        c.resources
            .as_ref()
            .and_then(|r| {
                if which == "limits" {
                    r.limits.as_ref()
                } else {
                    r.requests.as_ref()
                }
            })
            .and_then(|m| m.get(res))
            .and_then(|q| quantity::parse(&q.0, scale))
    };
    let sum = |res: &str, which: &str, scale: f64| -> Option<i64> {
        let apps: Option<i64> = spec
            .containers
            .iter()
            .map(|c| get(c, which, res, scale))
            .sum();
        let init_max = spec
            .init_containers
            .iter()
            .flatten()
            .filter_map(|c| get(c, which, res, scale))
            .max()
            .unwrap_or(0);
        apps.map(|a| a.max(init_max))
    };
    let memory = sum("memory", "limits", 1.0);
    let cpu_limit = sum("cpu", "limits", 1000.0);
    let cpu_req: i64 = spec
        .containers
        .iter()
        .filter_map(|c| {
            get(c, "requests", "cpu", 1000.0).or_else(|| get(c, "limits", "cpu", 1000.0))
        })
        .sum();
    if memory.is_none() && cpu_limit.is_none() && cpu_req == 0 {
        return None;
    }
    Some(proto::LinuxContainerResources {
        memory_limit_in_bytes: memory.unwrap_or(0),
        cpu_quota: cpu_limit.map(|m| m * 100).unwrap_or(0),
        cpu_period: if cpu_limit.is_some() { 100_000 } else { 0 },
        cpu_shares: if cpu_req > 0 {
            (cpu_req * 1024 / 1000).max(2)
        } else {
            0
        },
        ..Default::default()
    })
}
