//! A CRI container configuration turned into the runtime's: the image's
//! entrypoint, command, environment, working directory and user merged
//! with the request (as Docker and containerd merge them), mounts,
//! resources and security settings.

use std::path::PathBuf;

use podctl_images::ImageRecord;
use podctl_runtime::apparmor::AppArmor;
use podctl_runtime::{ContainerConfig, Mount, Propagation, Resources, Seccomp, Security};

use crate::error::{CriError, Result};
use crate::proto;

pub(crate) fn runtime_container(
    c: &proto::ContainerConfig,
    sandbox: &proto::PodSandboxConfig,
    img: &ImageRecord,
    lower_dirs: Vec<PathBuf>,
    log_path: &str,
) -> Result<ContainerConfig> {
    let name = c
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let ic = &img.config;
    let (command, args) = match (c.command.is_empty(), c.args.is_empty()) {
        (false, _) => (c.command.clone(), c.args.clone()),
        (true, false) => (ic.entrypoint.clone().unwrap_or_default(), c.args.clone()),
        (true, true) => (
            ic.entrypoint.clone().unwrap_or_default(),
            ic.cmd.clone().unwrap_or_default(),
        ),
    };
    if command.is_empty() && args.is_empty() {
        return Err(CriError::invalid(
            format!("container {name}"),
            "no command: neither the request nor the image has one",
        ));
    }
    let mut env: Vec<String> = ic.env.clone().unwrap_or_default();
    for kv in &c.envs {
        if kv.key.is_empty() {
            return Err(CriError::invalid(
                format!("container {name} env"),
                "empty variable name",
            ));
        }
        env.retain(|e| e.split('=').next() != Some(kv.key.as_str()));
        // The OCI spec holds environment variables as strings; bytes that
        // are not UTF-8 become U+FFFD.
        env.push(format!("{}={}", kv.key, String::from_utf8_lossy(&kv.value)));
    }
    let lin = c.linux.as_ref();
    let sc = lin.and_then(|l| l.security_context.as_ref());
    let user = user_of(&name, sc, &ic.user)?;
    let mut mounts = Vec::new();
    for m in &c.mounts {
        if m.container_path.is_empty() || !m.container_path.starts_with('/') {
            return Err(CriError::invalid(
                format!("container {name} mount"),
                format!("container path {:?} is not absolute", m.container_path),
            ));
        }
        if m.image.is_some() {
            // crate::image_volume::prepare turns these into host mounts.
            return Err(CriError::Internal(format!(
                "container {name} mount {}: image volume not prepared",
                m.container_path
            )));
        }
        if m.host_path.is_empty() {
            return Err(CriError::invalid(
                format!("container {name} mount {}", m.container_path),
                "empty host path",
            ));
        }
        if m.recursive_read_only
            && (!m.readonly || m.propagation != proto::MountPropagation::PropagationPrivate as i32)
        {
            return Err(CriError::invalid(
                format!("container {name} mount {}", m.container_path),
                "recursive read-only needs readonly and private propagation",
            ));
        }
        mounts.push(Mount {
            recursive_readonly: m.recursive_read_only,
            host_path: PathBuf::from(&m.host_path),
            container_path: m.container_path.clone(),
            readonly: m.readonly,
            propagation: match proto::MountPropagation::try_from(m.propagation) {
                Ok(proto::MountPropagation::PropagationHostToContainer) => {
                    Propagation::HostToContainer
                }
                Ok(proto::MountPropagation::PropagationBidirectional) => Propagation::Bidirectional,
                _ => Propagation::Private,
            },
        });
    }
    let resources = lin
        .and_then(|l| l.resources.as_ref())
        .map(resources_of)
        .unwrap_or_default();
    let sysctls = sandbox
        .linux
        .as_ref()
        .map(|l| l.sysctls.clone().into_iter().collect())
        .unwrap_or_default();
    let security = security_of(&name, sc, lin.and_then(|l| l.resources.as_ref()))?;
    Ok(ContainerConfig {
        name,
        image: c
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default(),
        lower_dirs,
        command,
        args,
        env,
        working_dir: if c.working_dir.is_empty() {
            ic.working_dir.clone()
        } else {
            c.working_dir.clone()
        },
        user,
        hostname: String::new(),
        readonly_rootfs: sc.is_some_and(|s| s.readonly_rootfs),
        privileged: sc.is_some_and(|s| s.privileged),
        mounts,
        resources,
        rlimits: vec![],
        sysctls,
        namespaces: Default::default(),
        log_path: PathBuf::from(if log_path.is_empty() {
            "/dev/null"
        } else {
            log_path
        }),
        labels: c.labels.clone().into_iter().collect(),
        security,
        stdin: c.stdin,
        stdin_once: c.stdin_once,
        tty: c.tty,
        // The pod's, filled in by the runtime.
        userns: None,
    })
}

/// The runtime's security settings from a CRI security context.
#[allow(deprecated)] // seccomp_profile_path: older kubelets still send it
fn security_of(
    name: &str,
    sc: Option<&proto::LinuxContainerSecurityContext>,
    res: Option<&proto::LinuxContainerResources>,
) -> Result<Security> {
    let mut s = Security {
        oom_score_adj: res.map(|r| r.oom_score_adj as i32).filter(|v| *v != 0),
        cpuset_cpus: res.map(|r| r.cpuset_cpus.clone()).unwrap_or_default(),
        cpuset_mems: res.map(|r| r.cpuset_mems.clone()).unwrap_or_default(),
        ..Default::default()
    };
    let Some(sc) = sc else {
        s.seccomp = Seccomp::Unconfined;
        return Ok(s);
    };
    if let Some(c) = &sc.capabilities {
        s.cap_add = c.add_capabilities.clone();
        s.cap_drop = c.drop_capabilities.clone();
    }
    s.no_new_privs = Some(sc.no_new_privs);
    s.supplemental_groups_strict =
        sc.supplemental_groups_policy == proto::SupplementalGroupsPolicy::Strict as i32;
    s.masked_paths = sc.masked_paths.clone();
    s.readonly_paths = sc.readonly_paths.clone();
    for g in &sc.supplemental_groups {
        s.supplemental_groups.push(u32::try_from(*g).map_err(|_| {
            CriError::invalid(
                format!("container {name} supplemental group"),
                format!("{g} out of range"),
            )
        })?);
    }
    s.seccomp = match &sc.seccomp {
        Some(p) => match proto::security_profile::ProfileType::try_from(p.profile_type) {
            Ok(proto::security_profile::ProfileType::RuntimeDefault) => Seccomp::RuntimeDefault,
            Ok(proto::security_profile::ProfileType::Localhost) => {
                if !p.localhost_ref.starts_with('/') {
                    return Err(CriError::invalid(
                        format!("container {name} seccomp"),
                        format!(
                            "localhost profile {:?} is not an absolute path",
                            p.localhost_ref
                        ),
                    ));
                }
                Seccomp::Localhost(PathBuf::from(&p.localhost_ref))
            }
            _ => Seccomp::Unconfined,
        },
        None => match sc.seccomp_profile_path.as_str() {
            "runtime/default" | "docker/default" => Seccomp::RuntimeDefault,
            p if p.starts_with("localhost/") => {
                Seccomp::Localhost(PathBuf::from(&p["localhost".len()..]))
            }
            _ => Seccomp::Unconfined,
        },
    };
    s.apparmor = apparmor_of(name, sc)?;
    Ok(s)
}

/// The AppArmor profile asked for: the `apparmor` field, else the
/// deprecated `apparmor_profile` string. A named profile may come with or
/// without its `localhost/` prefix.
#[allow(deprecated)] // apparmor_profile: older kubelets still send it
fn apparmor_of(name: &str, sc: &proto::LinuxContainerSecurityContext) -> Result<AppArmor> {
    use proto::security_profile::ProfileType;
    let localhost = |r: &str| AppArmor::Localhost(r.strip_prefix("localhost/").unwrap_or(r).into());
    Ok(match &sc.apparmor {
        Some(p) => match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => AppArmor::RuntimeDefault,
            Ok(ProfileType::Unconfined) => AppArmor::Unconfined,
            Ok(ProfileType::Localhost) => localhost(&p.localhost_ref),
            Err(_) => {
                return Err(CriError::invalid(
                    format!("container {name} apparmor"),
                    format!("unknown profile type {}", p.profile_type),
                ))
            }
        },
        None => match sc.apparmor_profile.as_str() {
            "" => AppArmor::Unspecified,
            "runtime/default" => AppArmor::RuntimeDefault,
            "unconfined" => AppArmor::Unconfined,
            p if p.starts_with("localhost/") => localhost(p),
            other => {
                return Err(CriError::invalid(
                    format!("container {name} apparmor_profile"),
                    format!(
                        "{other:?} is none of runtime/default, unconfined, localhost/<profile>"
                    ),
                ))
            }
        },
    })
}

/// `uid[:gid]`, `name[:gid]` from the security context, else the image's.
/// A group without a user is refused, as containerd and CRI-O do.
fn user_of(
    name: &str,
    sc: Option<&proto::LinuxContainerSecurityContext>,
    image_user: &str,
) -> Result<String> {
    let Some(sc) = sc else {
        return Ok(image_user.to_string());
    };
    if sc.run_as_group.is_some() && sc.run_as_user.is_none() && sc.run_as_username.is_empty() {
        return Err(CriError::invalid(
            format!("container {name} security context"),
            "run_as_group is set without run_as_user or run_as_username",
        ));
    }
    let user = match (&sc.run_as_user, sc.run_as_username.as_str()) {
        (Some(u), _) => u.value.to_string(),
        (None, n) if !n.is_empty() => n.to_string(),
        _ => image_user.split(':').next().unwrap_or("").to_string(),
    };
    Ok(match &sc.run_as_group {
        Some(g) => format!("{user}:{}", g.value),
        None if sc.run_as_user.is_none() && sc.run_as_username.is_empty() => image_user.to_string(),
        None => user,
    })
}

pub(crate) fn resources_of(r: &proto::LinuxContainerResources) -> Resources {
    Resources {
        memory_limit: (r.memory_limit_in_bytes > 0).then_some(r.memory_limit_in_bytes),
        cpu_shares: (r.cpu_shares > 0).then_some(r.cpu_shares as u64),
        cpu_quota: (r.cpu_quota > 0).then_some(r.cpu_quota),
        cpu_period: (r.cpu_period > 0).then_some(r.cpu_period as u64),
        pids_limit: None,
    }
}
