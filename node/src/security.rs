//! A container's CRI security context as the kubelet builds it: the
//! container's securityContext over the pod's (runAsUser, runAsGroup,
//! runAsNonRoot, seccompProfile), the pod's fsGroup and supplementalGroups,
//! `allowPrivilegeEscalation: false` as no_new_privs, capabilities, the
//! default masked and read-only /proc paths unless `procMount: Unmasked`,
//! and the runAsNonRoot check against the image's user.

use k8s_openapi::api::core::v1::{Container, Pod, SeccompProfile};
use podctl_cri::proto;

/// /proc and /sys paths hidden from containers unless procMount is
/// Unmasked (the set container runtimes share).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];
/// /proc paths mounted read-only unless procMount is Unmasked.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The image's user as ImageStatus reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageUser {
    pub uid: Option<i64>,
    pub username: String,
}

/// The settings that apply to `c`: the container's, else the pod's.
struct Effective {
    run_as_user: Option<i64>,
    run_as_group: Option<i64>,
    run_as_non_root: Option<bool>,
    seccomp: Option<SeccompProfile>,
}

fn effective(pod: &Pod, c: &Container) -> Effective {
    let p = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let s = c.security_context.as_ref();
    Effective {
        run_as_user: s
            .and_then(|s| s.run_as_user)
            .or(p.and_then(|p| p.run_as_user)),
        run_as_group: s
            .and_then(|s| s.run_as_group)
            .or(p.and_then(|p| p.run_as_group)),
        run_as_non_root: s
            .and_then(|s| s.run_as_non_root)
            .or(p.and_then(|p| p.run_as_non_root)),
        seccomp: s
            .and_then(|s| s.seccomp_profile.clone())
            .or(p.and_then(|p| p.seccomp_profile.clone())),
    }
}

/// Refuse to run a runAsNonRoot container as root (or as a user that
/// cannot be checked); the message is the container's waiting reason's.
pub fn verify_non_root(pod: &Pod, c: &Container, image: &ImageUser) -> Result<(), String> {
    let e = effective(pod, c);
    if e.run_as_non_root != Some(true) {
        return Ok(());
    }
    let who = format!(
        "pod: {:?}, container: {}",
        format!(
            "{}_{}({})",
            pod.metadata.name.as_deref().unwrap_or(""),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            pod.metadata.uid.as_deref().unwrap_or("")
        ),
        c.name
    );
    match (e.run_as_user, image.uid, image.username.as_str()) {
        (Some(0), _, _) => Err(format!(
            "container's runAsUser breaks non-root policy ({who})"
        )),
        (Some(_), _, _) => Ok(()),
        (None, Some(0), _) => Err(format!(
            "container has runAsNonRoot and image will run as root ({who})"
        )),
        (None, None, name) if !name.is_empty() => Err(format!(
            "container has runAsNonRoot and image has non-numeric user ({name}), cannot verify user is non-root ({who})"
        )),
        _ => Ok(()),
    }
}

fn seccomp(p: Option<&SeccompProfile>, profile_root: &str) -> Option<proto::SecurityProfile> {
    let p = p?;
    use proto::security_profile::ProfileType;
    Some(match p.type_.as_str() {
        "RuntimeDefault" => proto::SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        },
        "Localhost" => proto::SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: format!(
                "{}/{}",
                profile_root.trim_end_matches('/'),
                p.localhost_profile.as_deref().unwrap_or("")
            ),
        },
        _ => proto::SecurityProfile {
            profile_type: ProfileType::Unconfined as i32,
            localhost_ref: String::new(),
        },
    })
}

/// The CRI security context of `c` in `pod`; `seccomp_root` is where
/// `Localhost` profiles are (the kubelet's `<root>/seccomp`).
pub fn container_context(
    pod: &Pod,
    c: &Container,
    image: &ImageUser,
    seccomp_root: &str,
) -> proto::LinuxContainerSecurityContext {
    let e = effective(pod, c);
    let s = c.security_context.as_ref();
    let podsc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let mut groups: Vec<i64> = Vec::new();
    if let Some(g) = podsc.and_then(|p| p.fs_group) {
        groups.push(g);
    }
    groups.extend(
        podsc
            .and_then(|p| p.supplemental_groups.clone())
            .unwrap_or_default(),
    );
    let unmasked = s.and_then(|s| s.proc_mount.as_deref()) == Some("Unmasked");
    let paths = |v: &[&str]| {
        if unmasked {
            Vec::new()
        } else {
            v.iter().map(|p| p.to_string()).collect()
        }
    };
    let (run_as_user, run_as_username) = match e.run_as_user {
        Some(u) => (Some(u), String::new()),
        None => (image.uid, image.username.clone()),
    };
    proto::LinuxContainerSecurityContext {
        capabilities: s
            .and_then(|s| s.capabilities.as_ref())
            .map(|caps| proto::Capability {
                add_capabilities: caps.add.clone().unwrap_or_default(),
                drop_capabilities: caps.drop.clone().unwrap_or_default(),
                ..Default::default()
            }),
        privileged: s.and_then(|s| s.privileged).unwrap_or(false),
        run_as_user: run_as_user.map(|value| proto::Int64Value { value }),
        run_as_username,
        run_as_group: e.run_as_group.map(|value| proto::Int64Value { value }),
        readonly_rootfs: s.and_then(|s| s.read_only_root_filesystem).unwrap_or(false),
        supplemental_groups: groups,
        no_new_privs: s.and_then(|s| s.allow_privilege_escalation) == Some(false),
        masked_paths: paths(MASKED_PATHS),
        readonly_paths: paths(READONLY_PATHS),
        seccomp: seccomp(e.seccomp.as_ref(), seccomp_root),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSecurityContext, PodSpec, SecurityContext};

    fn pod(psc: PodSecurityContext) -> Pod {
        Pod {
            spec: Some(PodSpec {
                security_context: Some(psc),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn container(sc: SecurityContext) -> Container {
        Container {
            name: "c".into(),
            security_context: Some(sc),
            ..Default::default()
        }
    }

    #[test]
    fn the_container_overrides_the_pod_and_groups_add_up() {
        let p = pod(PodSecurityContext {
            run_as_user: Some(1000),
            run_as_group: Some(3000),
            fs_group: Some(2000),
            supplemental_groups: Some(vec![4000]),
            ..Default::default()
        });
        let c = container(SecurityContext {
            run_as_user: Some(1001),
            allow_privilege_escalation: Some(false),
            ..Default::default()
        });
        let sc = container_context(&p, &c, &ImageUser::default(), "/var/lib/podctl/seccomp");
        assert_eq!(sc.run_as_user.map(|v| v.value), Some(1001));
        assert_eq!(sc.run_as_group.map(|v| v.value), Some(3000));
        assert_eq!(sc.supplemental_groups, [2000, 4000]);
        assert!(sc.no_new_privs);
        assert_eq!(sc.masked_paths.len(), MASKED_PATHS.len());
        // Without a user anywhere, the image's is sent.
        let image = ImageUser {
            uid: None,
            username: "www-data".into(),
        };
        let sc = container_context(&pod(Default::default()), &c, &image, "/x");
        assert_eq!(sc.run_as_user.map(|v| v.value), Some(1001));
        let plain = Container::default();
        let sc = container_context(&pod(Default::default()), &plain, &image, "/x");
        assert_eq!(
            (sc.run_as_user, sc.run_as_username.as_str()),
            (None, "www-data")
        );
        assert!(!sc.no_new_privs);
    }

    #[test]
    fn run_as_non_root_is_checked_against_the_image() {
        let p = pod(PodSecurityContext {
            run_as_non_root: Some(true),
            ..Default::default()
        });
        let c = Container::default();
        let root = ImageUser {
            uid: Some(0),
            username: String::new(),
        };
        let named = ImageUser {
            uid: None,
            username: "nobody".into(),
        };
        let numeric = ImageUser {
            uid: Some(1234),
            username: String::new(),
        };
        assert!(verify_non_root(&p, &c, &root).is_err_and(|e| e.contains("image will run as root")));
        assert!(
            verify_non_root(&p, &c, &named).is_err_and(|e| e.contains("non-numeric user (nobody)"))
        );
        assert_eq!(verify_non_root(&p, &c, &numeric), Ok(()));
        let explicit_root = container(SecurityContext {
            run_as_user: Some(0),
            ..Default::default()
        });
        assert!(verify_non_root(&p, &explicit_root, &numeric)
            .is_err_and(|e| e.contains("runAsUser breaks non-root policy")));
    }
}
