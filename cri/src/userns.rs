//! The CRI's user namespace options (`NamespaceOption.userns_options`) as
//! the runtime takes them.

use podctl_runtime::userns::{IdMap, UserNs};

use crate::error::{CriError, Result};
use crate::proto;

/// The pod's user namespace: `None` for mode NODE (or no options), the
/// maps for mode POD. POD needs exactly one UID and one GID mapping that
/// map container ID 0; CONTAINER and TARGET are refused, as with
/// containerd and CRI-O (Kubernetes asks for neither).
pub(crate) fn pod_userns(nso: Option<&proto::NamespaceOption>) -> Result<Option<UserNs>> {
    let Some((o, u)) = nso.and_then(|o| o.userns_options.as_ref().map(|u| (o, u))) else {
        return Ok(None);
    };
    let what = "user namespace options";
    match proto::NamespaceMode::try_from(u.mode) {
        Ok(proto::NamespaceMode::Node) => return Ok(None),
        Ok(proto::NamespaceMode::Pod) => {}
        Ok(other) => {
            return Err(CriError::invalid(
                what,
                format!(
                    "mode {} is not supported (NODE or POD)",
                    other.as_str_name()
                ),
            ))
        }
        Err(_) => return Err(CriError::invalid(what, format!("unknown mode {}", u.mode))),
    }
    let node = proto::NamespaceMode::Node as i32;
    for (ns, mode) in [("network", o.network), ("IPC", o.ipc), ("PID", o.pid)] {
        if mode == node {
            return Err(CriError::invalid(
                what,
                format!("mode POD cannot be combined with the host's {ns} namespace"),
            ));
        }
    }
    let one = |maps: &[proto::IdMapping], kind: &str| match maps {
        [m] => Ok(IdMap {
            container_id: m.container_id,
            host_id: m.host_id,
            length: m.length,
        }),
        _ => Err(CriError::invalid(
            what,
            format!(
                "mode POD takes exactly one {kind} mapping, {} given",
                maps.len()
            ),
        )),
    };
    let ns = UserNs {
        uids: one(&u.uids, "UID")?,
        gids: one(&u.gids, "GID")?,
    };
    ns.validate().map_err(|e| CriError::invalid(what, e))?;
    Ok(Some(ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(mode: proto::NamespaceMode, uids: Vec<(u32, u32, u32)>) -> proto::NamespaceOption {
        let maps: Vec<proto::IdMapping> = uids
            .into_iter()
            .map(|(c, h, l)| proto::IdMapping {
                container_id: c,
                host_id: h,
                length: l,
            })
            .collect();
        proto::NamespaceOption {
            userns_options: Some(proto::UserNamespace {
                mode: mode as i32,
                uids: maps.clone(),
                gids: maps,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn modes_and_mappings_as_critest_asks() {
        use proto::NamespaceMode::*;
        assert_eq!(pod_userns(None).ok(), Some(None));
        assert_eq!(pod_userns(Some(&opts(Node, vec![]))).ok(), Some(None));
        let ok = pod_userns(Some(&opts(Pod, vec![(0, 1000, 100_000)])));
        let want = IdMap {
            container_id: 0,
            host_id: 1000,
            length: 100_000,
        };
        assert_eq!(
            ok.ok().flatten(),
            Some(UserNs {
                uids: want,
                gids: want
            })
        );
        for (o, needle) in [
            (
                opts(Pod, vec![(0, 1000, 100_000), (0, 2000, 100_000)]),
                "exactly one UID mapping, 2 given",
            ),
            (opts(Pod, vec![(1, 1000, 100_000)]), "container ID 0"),
            (opts(Pod, vec![]), "exactly one UID mapping, 0 given"),
            (opts(Container, vec![]), "mode CONTAINER is not supported"),
            (opts(Target, vec![]), "mode TARGET is not supported"),
            (
                proto::NamespaceOption {
                    network: Node as i32,
                    ..opts(Pod, vec![(0, 1000, 100_000)])
                },
                "cannot be combined with the host's network namespace",
            ),
        ] {
            let e = pod_userns(Some(&o)).expect_err(needle).to_string();
            assert!(e.contains(needle), "{e}");
            assert!(e.contains("user namespace options"), "{e}");
        }
    }
}
