//! podctl's pods and containers as NRI describes them: the CRI request
//! they were made from (metadata, labels, annotations, command, mounts)
//! and the runtime's state (process, address, times).

use podctl_runtime::{ContainerState, ContainerStatus, SandboxStatus};

use super::api;
use crate::proto;
use crate::records::SandboxRecord;

/// The pod of `rec`, with its process and address when `st` is known.
pub fn pod(rec: &SandboxRecord, st: Option<&SandboxStatus>) -> api::PodSandbox {
    pod_of(&rec.id, &rec.config, &rec.runtime_handler, st)
}

/// The pod made from `config`.
pub fn pod_of(
    id: &str,
    config: &proto::PodSandboxConfig,
    runtime_handler: &str,
    st: Option<&SandboxStatus>,
) -> api::PodSandbox {
    let meta = config.metadata.clone().unwrap_or_default();
    let pid = st.and_then(|s| s.pid).unwrap_or(0);
    api::PodSandbox {
        id: id.into(),
        name: meta.name,
        uid: meta.uid,
        namespace: meta.namespace,
        labels: config.labels.clone(),
        annotations: config.annotations.clone(),
        runtime_handler: runtime_handler.into(),
        linux: Some(api::LinuxPodSandbox {
            cgroup_parent: config
                .linux
                .as_ref()
                .map(|l| l.cgroup_parent.clone())
                .unwrap_or_default(),
            namespaces: st
                .filter(|_| pid > 0)
                .map(|_| {
                    ["net", "ipc", "uts"]
                        .iter()
                        .map(|ns| api::LinuxNamespace {
                            r#type: (*ns).into(),
                            path: format!("/proc/{pid}/ns/{ns}"),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }),
        pid: u32::try_from(pid).unwrap_or(0),
        ips: st.and_then(|s| s.ip.clone()).into_iter().collect(),
    }
}

/// The container `id` of pod `sandbox_id` made from `config`, in the
/// state `st` tells (created when it is not known yet).
pub fn container(
    id: &str,
    sandbox_id: &str,
    config: &proto::ContainerConfig,
    st: Option<&ContainerStatus>,
) -> api::Container {
    let state = match st.map(|s| s.state) {
        None | Some(ContainerState::Created) => api::ContainerState::Created,
        Some(ContainerState::Running) => api::ContainerState::Running,
        Some(ContainerState::Exited) => api::ContainerState::Stopped,
        Some(ContainerState::Unknown) => api::ContainerState::Unknown,
    };
    let mounts = config
        .mounts
        .iter()
        .map(|m| api::Mount {
            destination: m.container_path.clone(),
            r#type: "bind".into(),
            source: m.host_path.clone(),
            options: vec!["rbind".into(), if m.readonly { "ro" } else { "rw" }.into()],
        })
        .collect();
    api::Container {
        id: id.into(),
        pod_sandbox_id: sandbox_id.into(),
        name: config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default(),
        state: state as i32,
        labels: config.labels.clone(),
        annotations: config.annotations.clone(),
        args: config
            .command
            .iter()
            .chain(config.args.iter())
            .cloned()
            .collect(),
        env: config
            .envs
            .iter()
            .map(|kv| format!("{}={}", kv.key, String::from_utf8_lossy(&kv.value)))
            .collect(),
        mounts,
        pid: st
            .and_then(|s| s.pid)
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0),
        created_at: st.map(|s| s.created_at_ns).unwrap_or(0),
        started_at: st.map(|s| s.started_at_ns).unwrap_or(0),
        finished_at: st.map(|s| s.finished_at_ns).unwrap_or(0),
        exit_code: st.and_then(|s| s.exit_code).unwrap_or(0),
        status_reason: st.map(|s| s.reason.clone()).unwrap_or_default(),
        status_message: st.map(|s| s.message.clone()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_cri_metadata_names() {
        let cfg = proto::PodSandboxConfig {
            metadata: Some(proto::PodSandboxMetadata {
                name: "web".into(),
                uid: "u1".into(),
                namespace: "prod".into(),
                attempt: 2,
            }),
            ..Default::default()
        };
        let p = pod_of("abc", &cfg, "runc", None);
        assert_eq!(
            (&*p.id, &*p.name, &*p.uid, &*p.namespace, p.pid),
            ("abc", "web", "u1", "prod", 0)
        );
        let c = proto::ContainerConfig {
            metadata: Some(proto::ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            command: vec!["sh".into()],
            args: vec!["-c".into(), "true".into()],
            envs: vec![proto::KeyValue {
                key: "A".into(),
                value: b"1".to_vec(),
            }],
            ..Default::default()
        };
        let n = container("c1", "abc", &c, None);
        assert_eq!(
            (&*n.name, n.state),
            ("app", api::ContainerState::Created as i32)
        );
        assert_eq!(n.args, ["sh", "-c", "true"]);
        assert_eq!(n.env, ["A=1"]);
    }
}
