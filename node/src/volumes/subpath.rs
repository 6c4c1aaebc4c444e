//! `subPath`: a path inside a volume, opened one component at a time
//! without following symlinks (a symlink anywhere on the way is refused,
//! so nothing the container wrote into the volume can point the mount
//! elsewhere), then bind-mounted from the open descriptor onto a stable
//! path under the pod's directory that the runtime mounts in turn.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path};

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, mkdirat, Mode, SFlag};

fn own(raw: std::os::fd::RawFd) -> OwnedFd {
    // SAFETY: `raw` was just returned by open/openat and nothing else owns it.
    unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) }
}

/// Open `sub` under `base`, creating missing directories; the open
/// descriptor (O_PATH) and whether it is a directory. Symlinks met on the
/// way are followed by hand and only while they stay inside the volume
/// (relative targets that do not climb above it); absolute or escaping
/// links are refused.
pub fn open_within(base: &Path, sub: &str) -> Result<(OwnedFd, bool), String> {
    let rel = Path::new(sub);
    if rel.is_absolute() {
        return Err(format!("subPath {sub:?} is absolute"));
    }
    if rel.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("subPath {sub:?} must not contain '..'"));
    }
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let root = nix::fcntl::open(base, flags | OFlag::O_DIRECTORY, Mode::empty())
        .map(own)
        .map_err(|e| format!("open volume {}: {e}", base.display()))?;
    // Directories from the volume root down to where we are.
    let mut stack: Vec<OwnedFd> = vec![root];
    let mut queue: std::collections::VecDeque<std::ffi::OsString> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_owned()),
            _ => None,
        })
        .collect();
    let mut hops = 0;
    let mut last: Option<(OwnedFd, bool)> = None;
    while let Some(part) = queue.pop_front() {
        if let Some((fd, is_dir)) = last.take() {
            if !is_dir {
                return Err(format!(
                    "subPath {sub:?}: a path component is not a directory"
                ));
            }
            stack.push(fd);
        }
        if part == ".." {
            if stack.len() <= 1 {
                return Err(format!(
                    "subPath {sub:?}: a symlink on the way points outside the volume"
                ));
            }
            stack.pop();
            continue;
        }
        if part == "." || part.is_empty() {
            continue;
        }
        let top = stack.last().map(|f| f.as_raw_fd()).unwrap_or(-1);
        let raw = match openat(Some(top), part.as_os_str(), flags, Mode::empty()) {
            Ok(r) => r,
            Err(nix::errno::Errno::ENOENT) => {
                mkdirat(Some(top), part.as_os_str(), Mode::from_bits_truncate(0o755))
                    .map_err(|e| format!("subPath {sub:?}: mkdir {part:?}: {e}"))?;
                openat(Some(top), part.as_os_str(), flags, Mode::empty())
                    .map_err(|e| format!("subPath {sub:?}: {part:?}: {e}"))?
            }
            Err(e) => return Err(format!("subPath {sub:?}: {part:?}: {e}")),
        };
        let fd = own(raw);
        let st = fstat(fd.as_raw_fd()).map_err(|e| format!("subPath {sub:?}: stat: {e}"))?;
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFLNK {
            hops += 1;
            if hops > 40 {
                return Err(format!("subPath {sub:?}: too many symlinks"));
            }
            let target = nix::fcntl::readlinkat(Some(top), part.as_os_str())
                .map_err(|e| format!("subPath {sub:?}: readlink {part:?}: {e}"))?;
            let t = Path::new(&target);
            if t.is_absolute() {
                return Err(format!(
                    "subPath {sub:?}: {part:?} is a symlink to {} outside the volume",
                    t.display()
                ));
            }
            for c in t.components().rev() {
                match c {
                    Component::Normal(p) => queue.push_front(p.to_owned()),
                    Component::ParentDir => queue.push_front("..".into()),
                    _ => {}
                }
            }
            continue;
        }
        last = Some((fd, kind == SFlag::S_IFDIR));
    }
    match last {
        Some(l) => Ok(l),
        None => {
            let fd = stack
                .pop()
                .ok_or_else(|| format!("subPath {sub:?} is empty"))?;
            Ok((fd, true))
        }
    }
}

/// Bind the opened `sub` of `base` onto `target` (created).
pub fn bind(base: &Path, sub: &str, target: &Path) -> Result<(), String> {
    let (fd, is_dir) = open_within(base, sub)?;
    if let Some(p) = target.parent() {
        std::fs::create_dir_all(p).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    if is_dir {
        std::fs::create_dir_all(target).map_err(|e| format!("{}: {e}", target.display()))?;
    } else if !target.exists() {
        std::fs::write(target, b"").map_err(|e| format!("{}: {e}", target.display()))?;
    }
    let src = format!("/proc/self/fd/{}", fd.as_raw_fd());
    nix::mount::mount(
        Some(src.as_str()),
        target,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("bind subPath {sub:?} onto {}: {e}", target.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_and_climbing_are_refused() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let v = d.path();
        std::fs::create_dir_all(v.join("ok/inner")).unwrap_or_else(|e| panic!("{e}"));
        let _ = std::os::unix::fs::symlink("/", v.join("escape"));
        let _ = std::os::unix::fs::symlink("ok", v.join("alias"));
        let _ = std::os::unix::fs::symlink("../../..", v.join("ok/up"));
        std::fs::write(v.join("ok/file"), b"x").unwrap_or_else(|e| panic!("{e}"));
        let _ = std::os::unix::fs::symlink("ok/file", v.join("filelink"));
        assert!(open_within(v, "ok/inner").is_ok_and(|(_, dir)| dir));
        // Links that stay inside the volume are fine (ConfigMap files are
        // links through ..data).
        assert!(open_within(v, "alias/inner").is_ok_and(|(_, dir)| dir));
        assert!(open_within(v, "filelink").is_ok_and(|(_, dir)| !dir));
        assert!(open_within(v, "new/dir").is_ok());
        assert!(v.join("new/dir").is_dir());
        for bad in [
            "escape",
            "escape/etc",
            "ok/up",
            "ok/up/etc",
            "../x",
            "/etc",
            "ok/../..",
        ] {
            let e = open_within(v, bad).err().unwrap_or_default();
            assert!(!e.is_empty(), "{bad} accepted");
        }
        assert!(open_within(v, "escape/etc")
            .err()
            .unwrap_or_default()
            .contains("outside the volume"));
    }
}
