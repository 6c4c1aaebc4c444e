//! Resolving an image/pod user (`name`, `uid`, `uid:gid`, `name:group`)
//! through the container's own /etc/passwd and /etc/group.

use std::path::Path;

use crate::container::Runtime;
use crate::error::{Result, RuntimeError};

/// Resolved identity.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

fn read_db(rootfs: &Path, file: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(rootfs.join(file))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').map(str::to_string).collect())
        .collect()
}

/// Resolve `spec` (empty means root) inside `rootfs`.
pub fn resolve(id: &str, rootfs: &Path, spec: &str) -> Result<Identity> {
    let err = |reason: String| RuntimeError::User {
        id: id.into(),
        user: spec.into(),
        reason,
    };
    let passwd = read_db(rootfs, "etc/passwd");
    let groups = read_db(rootfs, "etc/group");
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let entry = passwd.iter().find(|e| {
        e.len() >= 4
            && (e[0] == user
                || user.parse::<u32>().ok().map(|u| u.to_string()) == Some(e[2].clone()))
    });
    let (uid, mut gid, name) = match (user.parse::<u32>(), entry) {
        (_, Some(e)) => (
            e[2].parse()
                .map_err(|_| err(format!("bad uid {:?} in /etc/passwd", e[2])))?,
            e[3].parse()
                .map_err(|_| err(format!("bad gid {:?} in /etc/passwd", e[3])))?,
            Some(e[0].clone()),
        ),
        (Ok(uid), None) => (uid, 0, None),
        (Err(_), None) => return Err(err("no such user in the image's /etc/passwd".into())),
    };
    if let Some(g) = group {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|e| e.len() >= 3 && e[0] == g)
                .and_then(|e| e[2].parse().ok())
                .ok_or_else(|| err(format!("no group {g:?} in the image's /etc/group")))?,
        };
    }
    let mut additional_gids = vec![gid];
    if let Some(name) = &name {
        for e in &groups {
            if e.len() >= 4 && e[3].split(',').any(|m| m == name) {
                if let Ok(g) = e[2].parse::<u32>() {
                    if !additional_gids.contains(&g) {
                        additional_gids.push(g);
                    }
                }
            }
        }
    }
    Ok(Identity {
        uid,
        gid,
        additional_gids,
    })
}

impl Runtime {
    /// The identity the container's process runs as (uid, gid and every
    /// group, the primary one first), from its OCI spec.
    pub fn process_identity(&self, id: &str) -> Result<Identity> {
        if let Some(who) = self.meta(id)?.identity {
            return Ok(who);
        }
        let path = self.dir(id).join("config.json");
        let spec = oci_spec::runtime::Spec::load(&path).map_err(|e| RuntimeError::Spec {
            id: id.into(),
            reason: format!("{}: {e}", path.display()),
        })?;
        Ok(identity_of(&spec))
    }
}

/// The process's user in `spec`: UID, GID, and the GID first among the
/// additional ones.
pub(crate) fn identity_of(spec: &oci_spec::runtime::Spec) -> Identity {
    let user = spec
        .process()
        .as_ref()
        .map(|p| p.user().clone())
        .unwrap_or_default();
    let mut additional_gids = vec![user.gid()];
    for g in user.additional_gids().clone().unwrap_or_default() {
        if !additional_gids.contains(&g) {
            additional_gids.push(g);
        }
    }
    Identity {
        uid: user.uid(),
        gid: user.gid(),
        additional_gids,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names_numbers_and_groups() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let etc = dir.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            etc.join("passwd"),
            "root:x:0:0::/root:/bin/sh\nwww-data:x:33:33::/var/www:/bin/false\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            etc.join("group"),
            "root:x:0:\nwww-data:x:33:\nweb:x:800:www-data,other\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let r = |s: &str| resolve("c", dir.path(), s).ok();
        assert_eq!(
            r(""),
            Some(Identity {
                uid: 0,
                gid: 0,
                additional_gids: vec![0]
            })
        );
        assert_eq!(
            r("www-data"),
            Some(Identity {
                uid: 33,
                gid: 33,
                additional_gids: vec![33, 800]
            })
        );
        assert_eq!(
            r("33"),
            Some(Identity {
                uid: 33,
                gid: 33,
                additional_gids: vec![33, 800]
            })
        );
        assert_eq!(
            r("1234:web"),
            Some(Identity {
                uid: 1234,
                gid: 800,
                additional_gids: vec![800]
            })
        );
        assert!(r("nobody-here").is_none());
    }
}
