//! Writing a volume's files (ConfigMap, Secret, downward API, projected)
//! the kubelet's way: the payload goes into a fresh timestamped directory,
//! `..data` is switched to it with one rename, and the visible names are
//! symlinks through `..data` — a reader never sees a half-written set.

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path};

use crate::error::{IoContext, Result};

/// One file: relative path → (content, mode).
pub type Payload = BTreeMap<String, (Vec<u8>, u32)>;

/// Refuse item paths that are absolute, climb (`..`) or are empty.
pub fn check_item_path(p: &str) -> std::result::Result<(), String> {
    if p.is_empty() {
        return Err("empty path".into());
    }
    let path = Path::new(p);
    if path.is_absolute() {
        return Err(format!("path {p:?} is absolute"));
    }
    if path
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(format!("path {p:?} must not contain '..' or '.'"));
    }
    if p.starts_with("..") {
        return Err(format!("path {p:?} must not start with '..'"));
    }
    Ok(())
}

/// Write `payload` into `dir` atomically (see the module comment).
pub fn write_atomic(dir: &Path, payload: &Payload) -> Result<()> {
    std::fs::create_dir_all(dir).ctx("create", dir)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let ts = dir.join(format!("..{stamp}"));
    std::fs::create_dir(&ts).ctx("create", &ts)?;
    std::fs::set_permissions(&ts, std::fs::Permissions::from_mode(0o755)).ctx("chmod", &ts)?;
    for (rel, (data, mode)) in payload {
        let f = ts.join(rel);
        if let Some(parent) = f.parent() {
            std::fs::create_dir_all(parent).ctx("create", parent)?;
        }
        std::fs::write(&f, data).ctx("write", &f)?;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(*mode & 0o7777))
            .ctx("chmod", &f)?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    let target = ts.file_name().map(|n| n.to_owned()).unwrap_or_default();
    symlink(&target, &tmp).ctx("symlink", &tmp)?;
    std::fs::rename(&tmp, dir.join("..data")).ctx("rename", dir.join("..data"))?;
    let mut tops: Vec<String> = payload
        .keys()
        .filter_map(|k| k.split('/').next().map(str::to_string))
        .collect();
    tops.dedup();
    for top in tops {
        let link = dir.join(&top);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(&top), &link).ctx("symlink", &link)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_paths_cannot_escape() {
        assert!(check_item_path("a/b.txt").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "..data/x", "./a"] {
            assert!(check_item_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn files_appear_through_data_with_their_modes() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut p = Payload::new();
        p.insert("key".into(), (b"v1".to_vec(), 0o400));
        p.insert("dir/nested".into(), (b"n".to_vec(), 0o644));
        write_atomic(d.path(), &p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            std::fs::read(d.path().join("key")).unwrap_or_default(),
            b"v1"
        );
        assert_eq!(
            std::fs::read(d.path().join("dir/nested")).unwrap_or_default(),
            b"n"
        );
        let mode = std::fs::metadata(d.path().join("key")).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.unwrap_or(0), 0o400);
        // An update swaps the whole set.
        p.insert("key".into(), (b"v2".to_vec(), 0o400));
        write_atomic(d.path(), &p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            std::fs::read(d.path().join("key")).unwrap_or_default(),
            b"v2"
        );
    }
}
