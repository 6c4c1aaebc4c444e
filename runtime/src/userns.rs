//! User namespaces for pods (CRI `NamespaceMode::POD` user namespaces,
//! Kubernetes' `hostUsers: false`).
//!
//! The pause process creates the pod's user namespace together with its
//! other namespaces, so they are owned by it; the shim writes the ID maps
//! from outside. Containers join it by path. Files keep their owners on
//! disk: the container sees them through idmapped mounts made from the
//! pod's namespace — each image layer is cloned as an idmapped mount and
//! the overlay is built on those clones (overlayfs itself cannot be
//! idmapped, its layers can), and every bind-mounted volume is cloned the
//! same way under the container's state directory. The container's upper
//! dir belongs to the pod's root user on the host, so what the container
//! writes is owned by the IDs it maps to.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::container::{Mount, Propagation};
use crate::error::{IoContext, Result, RuntimeError};

/// One contiguous range: container IDs `container_id..container_id+length`
/// are host IDs `host_id..host_id+length`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

impl IdMap {
    /// The line `/proc/<pid>/{uid,gid}_map` takes.
    pub fn line(&self) -> String {
        format!("{} {} {}", self.container_id, self.host_id, self.length)
    }

    /// `container:host:length`, as the shim's arguments carry it.
    pub fn arg(&self) -> String {
        format!("{}:{}:{}", self.container_id, self.host_id, self.length)
    }

    /// Parse [`IdMap::arg`]'s form.
    pub fn parse_arg(s: &str) -> Option<IdMap> {
        let mut it = s.split(':').map(|p| p.parse::<u32>().ok());
        let m = IdMap {
            container_id: it.next()??,
            host_id: it.next()??,
            length: it.next()??,
        };
        it.next().is_none().then_some(m)
    }
}

/// A pod's user namespace: one UID and one GID range, each mapping
/// container ID 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserNs {
    pub uids: IdMap,
    pub gids: IdMap,
}

impl UserNs {
    /// Check what the kernel would refuse or what would leave the pod
    /// without a root user; the message names the offending range.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (what, m) in [("uid", &self.uids), ("gid", &self.gids)] {
            if m.container_id != 0 {
                return Err(format!(
                    "{what} mapping {} does not map container ID 0",
                    m.arg()
                ));
            }
            if m.length == 0 {
                return Err(format!("{what} mapping {} has length 0", m.arg()));
            }
            if m.host_id == 0 {
                return Err(format!(
                    "{what} mapping {} maps the container's root to the host's",
                    m.arg()
                ));
            }
            if m.host_id.checked_add(m.length).is_none() {
                return Err(format!("{what} mapping {} overflows", m.arg()));
            }
        }
        Ok(())
    }

    /// The host user and group the container's root is.
    pub fn root_owner(&self) -> (u32, u32) {
        (self.uids.host_id, self.gids.host_id)
    }
}

/// The pause process's arguments for the pod's user namespace (none for
/// the host's); refuses what it cannot be combined with.
pub(crate) fn pause_args(id: &str, cfg: &crate::sandbox::SandboxConfig) -> Result<Vec<String>> {
    let Some(u) = &cfg.userns else {
        return Ok(vec![]);
    };
    if cfg.host_network || cfg.host_ipc || cfg.host_pid {
        return Err(RuntimeError::Sandbox {
            id: id.into(),
            reason: "a user namespace of the pod's own needs the pod's own network, \
                     IPC and PID namespaces (host namespaces asked for)"
                .into(),
        });
    }
    u.validate().map_err(|reason| RuntimeError::Sandbox {
        id: id.into(),
        reason: format!("user namespace: {reason}"),
    })?;
    Ok(vec![
        "--uid-map".into(),
        u.uids.arg(),
        "--gid-map".into(),
        u.gids.arg(),
    ])
}

/// Whether this kernel has the new mount API that idmapped mounts need
/// (`mount_setattr`, Linux 5.12): probed once per process (the kernel
/// does not change under it); a syscall refused for its arguments means
/// it exists.
pub fn supported() -> bool {
    static SUPPORTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SUPPORTED.get_or_init(probe)
}

fn probe() -> bool {
    if !Path::new("/proc/self/ns/user").exists() {
        return false;
    }
    // SAFETY: mount_setattr with a null attribute pointer and size 0 reads
    // no memory of ours; it fails with EINVAL (or EBADF) when it exists
    // and ENOSYS when it does not.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1,
            std::ptr::null::<libc::c_char>(),
            0,
            std::ptr::null::<u8>(),
            0usize,
        )
    };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS)
}

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` of the kernel's uapi.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Make `target` (created as a file or directory like `src`) an idmapped
/// clone of `src`, mapped through the user namespace at `userns` (a
/// `/proc/<pid>/ns/user` path). Fails when the filesystem of `src` cannot
/// be idmapped; nothing is left mounted then.
pub fn idmapped_clone(src: &Path, target: &Path, userns: &Path) -> Result<()> {
    let ns = std::fs::File::open(userns).ctx("open", userns)?;
    let c_src = cpath(src)?;
    let c_target = cpath(target)?;
    // SAFETY: open_tree reads the NUL-terminated path we pass and returns
    // a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c_src.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as u32,
        )
    };
    let tree = crate::sys::owned_fd(fd).ctx("open_tree", src)?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: ns.as_raw_fd() as u64,
    };
    let empty = c"";
    // SAFETY: mount_setattr reads `attr` (size given) and the empty path;
    // both outlive the call. The tree descriptor is ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).ctx("idmap the mount of", src);
    }
    if src.is_dir() {
        std::fs::create_dir_all(target).ctx("create", target)?;
    } else {
        if let Some(p) = target.parent() {
            std::fs::create_dir_all(p).ctx("create", p)?;
        }
        std::fs::File::create(target).ctx("create", target)?;
    }
    // SAFETY: move_mount reads the two NUL-terminated paths, which outlive
    // the call; the tree descriptor is ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            c_target.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).ctx("mount an idmapped clone at", target);
    }
    Ok(())
}

/// Detach every mount at the entries of `dir` (the idmapped clones of one
/// container) and remove the entries. A missing `dir` is fine.
pub fn detach_all(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).ctx("read", dir),
    };
    for e in entries.flatten() {
        let p = e.path();
        crate::rootfs::unmount(&p)?;
        let _ = if p.is_dir() {
            std::fs::remove_dir(&p)
        } else {
            std::fs::remove_file(&p)
        };
    }
    let _ = std::fs::remove_dir(dir);
    Ok(())
}

/// Idmapped clones of the image layers, for an overlay a pod with its own
/// user namespace can use; they live under `dir` (numbered) until the
/// overlay is mounted on them, then [`detach_all`] drops them (the overlay
/// keeps its layers).
pub fn idmapped_layers(lowers: &[PathBuf], dir: &Path, userns: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::with_capacity(lowers.len());
    for (i, l) in lowers.iter().enumerate() {
        let t = dir.join(format!("l{i}"));
        idmapped_clone(l, &t, userns).inspect_err(|_| {
            let _ = detach_all(dir);
        })?;
        out.push(t);
    }
    Ok(out)
}

/// Where a container's idmapped layer clones live while its overlay is
/// mounted (under its state directory).
pub const LAYERS: &str = "idmap-layers";
/// Where its idmapped volume clones live, until it is removed.
pub const VOLUMES: &str = "idmap";

/// A container of a pod with its own user namespace: what its rootfs and
/// volumes are mounted through.
pub(crate) struct Mapped {
    userns: UserNs,
    /// `/proc/<pause>/ns/user`.
    path: PathBuf,
}

impl Mapped {
    pub(crate) fn of(cfg: &crate::ContainerConfig) -> Option<Mapped> {
        Some(Mapped {
            userns: cfg.userns?,
            path: PathBuf::from(cfg.namespaces.get("user")?),
        })
    }

    /// The layers to mount the overlay on (idmapped clones under `dir`);
    /// `upper` is made and given to the pod's root user.
    pub(crate) fn layers(
        &self,
        id: &str,
        dir: &Path,
        lowers: &[PathBuf],
        upper: &Path,
    ) -> Result<Vec<PathBuf>> {
        reachable(id, dir)?;
        std::fs::create_dir_all(upper).ctx("create", upper)?;
        let (uid, gid) = self.userns.root_owner();
        nix::unistd::chown(
            upper,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(|e| RuntimeError::Container {
            id: id.into(),
            reason: format!("giving {} to {uid}:{gid}: {e}", upper.display()),
        })?;
        idmapped_layers(lowers, &dir.join(LAYERS), &self.path).map_err(|e| {
            RuntimeError::Container {
                id: id.into(),
                reason: format!("idmapping the image's layers for the pod's user namespace: {e}"),
            }
        })
    }

    /// The volumes with their sources replaced by idmapped clones under
    /// `dir`, so the pod's root owns what the host's root owns. A volume
    /// whose filesystem cannot be idmapped, or that propagates mounts, is
    /// mounted as it is (its files then show as the overflow ID).
    pub(crate) fn volumes(&self, id: &str, dir: &Path, mounts: &[Mount]) -> Vec<Mount> {
        mounts
            .iter()
            .enumerate()
            .map(|(i, m)| {
                if m.propagation != Propagation::Private || m.host_path.as_os_str().is_empty() {
                    return m.clone();
                }
                let t = dir.join(VOLUMES).join(format!("m{i}"));
                match idmapped_clone(&m.host_path, &t, &self.path) {
                    Ok(()) => Mount {
                        host_path: t,
                        ..m.clone()
                    },
                    Err(e) => {
                        tracing::warn!(%id, volume = %m.host_path.display(), error = %e,
                            "volume not idmapped; the pod's user namespace sees its owners as nobody");
                        m.clone()
                    }
                }
            })
            .collect()
    }
}

/// libcontainer mounts the rootfs (under the container's state directory
/// `dir`) as the pod's root, an unprivileged user on the host: every
/// directory above it must be searchable by others.
fn reachable(id: &str, dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for d in dir.ancestors().skip(1) {
        let mode = std::fs::metadata(d).ctx("stat", d)?.permissions().mode();
        if mode & 0o001 == 0 {
            return Err(RuntimeError::Container {
                id: id.into(),
                reason: format!(
                    "{} (mode {:o}) is not searchable by others, so the pod's user namespace \
                     cannot reach the container's rootfs below it: make it so (chmod o+x) or \
                     move the state directory",
                    d.display(),
                    mode & 0o7777
                ),
            });
        }
    }
    Ok(())
}

fn cpath(p: &Path) -> Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| RuntimeError::Config {
        reason: format!("path {} contains a NUL byte", p.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(c: u32, h: u32, l: u32) -> IdMap {
        IdMap {
            container_id: c,
            host_id: h,
            length: l,
        }
    }

    #[test]
    fn mappings_are_checked_and_named() {
        let ok = UserNs {
            uids: m(0, 1000, 100_000),
            gids: m(0, 1000, 100_000),
        };
        assert_eq!(ok.validate(), Ok(()));
        let no_root = UserNs {
            uids: m(1, 1000, 100_000),
            ..ok
        };
        let e = no_root.validate().unwrap_err();
        assert!(e.contains("uid mapping 1:1000:100000"), "{e}");
        assert!(e.contains("container ID 0"), "{e}");
        let host_root = UserNs {
            gids: m(0, 0, 65536),
            ..ok
        };
        assert!(host_root
            .validate()
            .unwrap_err()
            .contains("gid mapping 0:0:65536"));
        let overflow = UserNs {
            uids: m(0, u32::MAX - 5, 10),
            ..ok
        };
        assert!(overflow.validate().unwrap_err().contains("overflows"));
        let empty = UserNs {
            uids: m(0, 1000, 0),
            ..ok
        };
        assert!(empty.validate().unwrap_err().contains("length 0"));
    }

    #[test]
    fn shim_arguments_round_trip() {
        let x = m(0, 165536, 65536);
        assert_eq!(IdMap::parse_arg(&x.arg()), Some(x));
        assert_eq!(x.line(), "0 165536 65536");
        for bad in ["", "0:1", "0:1:2:3", "a:1:2", "-1:2:3"] {
            assert_eq!(IdMap::parse_arg(bad), None, "{bad:?}");
        }
    }
}
