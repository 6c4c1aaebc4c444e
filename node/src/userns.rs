//! Host ID ranges for pods with `hostUsers: false`: a block of 65536 IDs
//! per pod (container IDs 0–65535), kept in the pod's directory
//! (`<pods_root>/<uid>/userns`) as the kubelet keeps its own, so a
//! re-created sandbox gets the same range and a removed pod's range is
//! free again once its directory goes. Blocks are handed out under an
//! advisory lock (`<pods_root>/.userns.lock`): node agents, standalone
//! supervisors and CLI commands sharing the directory never hand out one
//! block twice.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{IoContext, NodeError, Result};

/// IDs per pod.
pub const BLOCK: u32 = 65_536;
/// The first block handed out: host IDs from 64 Mi up, above ordinary
/// users, /etc/subuid's usual ranges and systemd's dynamic users.
pub const FIRST_BLOCK: u32 = 1024;
/// How many blocks there are (host IDs up to 320 Mi).
pub const BLOCKS: u32 = 4096;

const FILE: &str = "userns";
const LOCK: &str = ".userns.lock";

/// The first host ID of pod `uid`'s range: the one it has, else a free one.
pub fn host_id(pods_root: &Path, uid: &str) -> Result<u32> {
    std::fs::create_dir_all(pods_root).ctx("create", pods_root)?;
    let lock_path = pods_root.join(LOCK);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .ctx("open", &lock_path)?;
    // SAFETY: flock on a descriptor we own; it touches no memory.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error()).ctx("lock", &lock_path);
    }
    let mine = pods_root.join(uid).join(FILE);
    if let Some(id) = read(&mine)? {
        return Ok(id);
    }
    let mut used = std::collections::HashSet::new();
    for e in std::fs::read_dir(pods_root)
        .ctx("read", pods_root)?
        .flatten()
    {
        if let Ok(Some(id)) = read(&e.path().join(FILE)) {
            used.insert(id / BLOCK);
        }
    }
    // Start where the pod's UID points, so concurrent pods of different
    // processes rarely even look at the same block.
    let start = uid
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        % BLOCKS;
    let block = (0..BLOCKS)
        .map(|i| FIRST_BLOCK + (start + i) % BLOCKS)
        .find(|b| !used.contains(b))
        .ok_or_else(|| NodeError::Config {
            pod: uid.into(),
            reason: format!(
                "hostUsers: false: all {BLOCKS} user namespace ranges of this node are in use"
            ),
        })?;
    let id = block * BLOCK;
    let dir = pods_root.join(uid);
    std::fs::create_dir_all(&dir).ctx("create", &dir)?;
    let tmp = dir.join(format!(".{FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp).ctx("create", &tmp)?;
    f.write_all(format!("{id}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .ctx("write", &tmp)?;
    std::fs::rename(&tmp, &mine).ctx("rename", &mine)?;
    Ok(id)
}

/// Give the sandbox of a pod with `hostUsers: false` a user namespace of
/// its own: container IDs 0–65535 over the pod's block of host IDs.
pub fn apply(
    pod: &k8s_openapi::api::core::v1::Pod,
    config: &mut podctl_cri::proto::PodSandboxConfig,
    pods_root: &Path,
    uid: &str,
) -> Result<()> {
    use podctl_cri::proto;
    if pod.spec.as_ref().and_then(|s| s.host_users) != Some(false) {
        return Ok(());
    }
    let host = host_id(pods_root, uid)?;
    let map = vec![proto::IdMapping {
        container_id: 0,
        host_id: host,
        length: BLOCK,
    }];
    let nso = config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options
        .get_or_insert_with(Default::default);
    nso.userns_options = Some(proto::UserNamespace {
        mode: proto::NamespaceMode::Pod as i32,
        uids: map.clone(),
        gids: map,
    });
    Ok(())
}

/// The host ID recorded at `path`; `None` when there is none.
fn read(path: &Path) -> Result<Option<u32>> {
    match std::fs::read_to_string(path) {
        Ok(s) => s
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|id| id % BLOCK == 0 && *id >= FIRST_BLOCK * BLOCK)
            .map(Some)
            .ok_or_else(|| NodeError::Config {
                pod: path.display().to_string(),
                reason: format!("{} holds no user namespace range: {s:?}", path.display()),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).ctx("read", path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_keeps_its_range_and_no_two_pods_share_one() {
        let root = tempfile::tempdir().unwrap();
        let a = host_id(root.path(), "pod-a").unwrap();
        assert_eq!(a % BLOCK, 0);
        assert!((FIRST_BLOCK * BLOCK..(FIRST_BLOCK + BLOCKS) * BLOCK).contains(&a));
        assert_eq!(host_id(root.path(), "pod-a").unwrap(), a);
        let mut seen = std::collections::HashSet::from([a]);
        for i in 0..200 {
            assert!(seen.insert(host_id(root.path(), &format!("p{i}")).unwrap()));
        }
        // A removed pod's range is free again; a damaged record is named.
        std::fs::remove_dir_all(root.path().join("pod-a")).unwrap();
        std::fs::create_dir_all(root.path().join("bad")).unwrap();
        std::fs::write(root.path().join("bad/userns"), "12\n").unwrap();
        let e = host_id(root.path(), "bad").unwrap_err().to_string();
        assert!(
            e.contains("bad/userns holds no user namespace range"),
            "{e}"
        );
    }
}
