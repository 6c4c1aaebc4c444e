//! Image volumes: a CRI mount that names an image (`Mount.image`) rather
//! than a host path gets that image's root filesystem, read-only. The
//! image's layer snapshots are stacked as an overlay with no upper layer
//! (which the kernel mounts read-only) under `<root>/image-volumes/<id>`,
//! and the container bind-mounts that directory, or `image_sub_path`
//! inside it, read-only. The mounts live as long as the container; they
//! are listed in its CRI record and undone when it is removed.

use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use podctl_images::{ImageError, Store};
use serde::{Deserialize, Serialize};

use crate::error::{CriError, IoContext, Result};
use crate::proto;

/// One image volume of a container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageVolume {
    pub container_path: String,
    /// The image ID (`sha256:…`) the mount's image spec resolved to.
    pub image_id: String,
    /// The read-only overlay of the image on the host.
    pub mountpoint: PathBuf,
}

/// Mount every image volume of `mounts` and turn those mounts into
/// read-only bind mounts of the result. On error nothing stays mounted.
pub(crate) fn prepare(
    store: &Store,
    root: &Path,
    container: &str,
    mounts: &mut [proto::Mount],
) -> Result<Vec<ImageVolume>> {
    let mut done = Vec::new();
    for m in mounts.iter_mut() {
        let Some(spec) = m.image.clone() else {
            continue;
        };
        match prepare_one(store, root, container, m, spec) {
            Ok(v) => done.push(v),
            Err(e) => {
                release(&done);
                return Err(e);
            }
        }
    }
    Ok(done)
}

fn prepare_one(
    store: &Store,
    root: &Path,
    container: &str,
    m: &mut proto::Mount,
    spec: proto::ImageSpec,
) -> Result<ImageVolume> {
    let what = || format!("container {container} image volume {}", m.container_path);
    if !m.readonly {
        return Err(CriError::invalid(what(), "image volumes must be read-only"));
    }
    if !m.host_path.is_empty() {
        return Err(CriError::invalid(what(), "both an image and a host path"));
    }
    let sub = sub_path(&m.image_sub_path).map_err(|r| CriError::invalid(what(), r))?;
    let img = store.get(&spec.image).map_err(|e| match e {
        ImageError::NotFound { .. } => CriError::NotFound {
            kind: "image",
            id: spec.image.clone(),
        },
        e => e.into(),
    })?;
    let layers = store.layer_dirs(&img)?;
    let base = root.join("image-volumes");
    let id = podctl_runtime::container::new_id()?;
    let target = base.join(&id);
    mount_layers(&base, &layers, &target)?;
    let vol = ImageVolume {
        container_path: m.container_path.clone(),
        image_id: img.id.to_string(),
        mountpoint: target.clone(),
    };
    let source = match resolve_inside(&target, &sub) {
        Ok(p) => p,
        Err(reason) => {
            release(std::slice::from_ref(&vol));
            return Err(CriError::invalid(what(), reason));
        }
    };
    tracing::debug!(image = %vol.image_id, source = %source.display(), "image volume mounted");
    m.host_path = source.display().to_string();
    m.image = None;
    Ok(vol)
}

/// `image_sub_path` as a relative path with no `..`, `.` removed.
fn sub_path(s: &str) -> std::result::Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in Path::new(s).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "sub path {s:?} must be relative and stay inside the image"
                ))
            }
        }
    }
    Ok(out)
}

/// `root/sub` with symlinks resolved, refused unless it exists and is
/// still inside `root`.
fn resolve_inside(root: &Path, sub: &Path) -> std::result::Result<PathBuf, String> {
    let root = root
        .canonicalize()
        .map_err(|e| format!("{}: {e}", root.display()))?;
    let p = root.join(sub);
    let real = p.canonicalize().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("sub path {:?} does not exist in the image", sub),
        _ => format!("sub path {:?}: {e}", sub),
    })?;
    if !real.starts_with(&root) {
        return Err(format!("sub path {:?} leads out of the image", sub));
    }
    Ok(real)
}

/// Overlay `layers` (bottom first) read-only at `target`. overlayfs wants
/// at least two lower layers without an upper one; an empty directory
/// serves as the bottom for single-layer images.
fn mount_layers(base: &Path, layers: &[PathBuf], target: &Path) -> Result<()> {
    let empty = base.join(".empty");
    for d in [&empty, &target.to_path_buf()] {
        std::fs::create_dir_all(d).ctx("create", d)?;
    }
    if layers.is_empty() {
        let _ = std::fs::remove_dir(target);
        return Err(CriError::invalid("image volume", "the image has no layers"));
    }
    let mut lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    if lower.len() == 1 {
        lower.push(empty.display().to_string());
    }
    let opts = format!("lowerdir={}", lower.join(":"));
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
    let mut res = mount(
        Some("overlay"),
        target,
        Some("overlay"),
        flags,
        Some(opts.as_str()),
    );
    if res == Err(nix::errno::Errno::ENOENT) {
        // The collector (`collect_unmounted`) may have taken the empty
        // directory in between: once more.
        std::fs::create_dir_all(target).ctx("create", target)?;
        res = mount(
            Some("overlay"),
            target,
            Some("overlay"),
            flags,
            Some(opts.as_str()),
        );
    }
    res.map_err(|e| {
        let _ = std::fs::remove_dir(target);
        CriError::Io {
            op: "mount image overlay at",
            path: target.to_path_buf(),
            source: e.into(),
        }
    })
}

/// Remove the directories under `<root>/image-volumes` that nothing is
/// mounted on: what a reboot (or a crash between unmount and removal)
/// left. A mounted one is busy and stays; only empty directories go.
pub(crate) fn collect_unmounted(root: &Path) -> usize {
    let base = root.join("image-volumes");
    let mut removed = 0;
    for e in std::fs::read_dir(&base).into_iter().flatten().flatten() {
        if e.file_name() == ".empty" {
            continue;
        }
        if std::fs::remove_dir(e.path()).is_ok() {
            tracing::info!(path = %e.path().display(), "gc: removed an unmounted image volume");
            removed += 1;
        }
    }
    removed
}

/// Unmount and delete image volumes; failures are logged, not returned,
/// so that removing a container is never blocked by them.
pub(crate) fn release(vols: &[ImageVolume]) {
    for v in vols {
        match umount2(&v.mountpoint, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                tracing::warn!(path = %v.mountpoint.display(), error = %e, "image volume not unmounted");
                continue;
            }
        }
        if let Err(e) = std::fs::remove_dir(&v.mountpoint) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %v.mountpoint.display(), error = %e, "image volume directory left");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_paths_stay_relative() {
        assert_eq!(sub_path(""), Ok(PathBuf::new()));
        assert_eq!(sub_path("./etc/ssl/"), Ok(PathBuf::from("etc/ssl")));
        assert!(sub_path("/etc").is_err());
        assert!(sub_path("etc/../../x").is_err());
    }

    #[test]
    fn resolved_sub_paths_cannot_leave_the_image() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("/", root.join("out")).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink("etc", root.join("in")).unwrap_or_else(|e| panic!("{e}"));
        let real = root.canonicalize().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            resolve_inside(&root, Path::new("etc")),
            Ok(real.join("etc"))
        );
        assert_eq!(resolve_inside(&root, Path::new("in")), Ok(real.join("etc")));
        assert!(resolve_inside(&root, Path::new("out")).is_err());
        assert!(resolve_inside(&root, Path::new("missing")).is_err());
    }
}
