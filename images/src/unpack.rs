//! Applying one layer tar to an empty snapshot directory, in the form
//! overlayfs expects: whiteouts become 0/0 character devices and opaque
//! directories carry `trusted.overlay.opaque=y`.
//!
//! Every entry is checked before anything is written: absolute names, `..`
//! components, writes through symlinks, symlinks whose relative target climbs
//! out of the layer, hard links to anything outside it, and device nodes when
//! the caller may not create them are refused with [`ImageError::HostileEntry`].

use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tar::EntryType;

use crate::digest::Digest;
use crate::error::{ImageError, IoContext, Result};
use crate::media::Compression;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// What may be created while unpacking.
#[derive(Clone, Debug)]
pub struct UnpackOptions {
    /// Create device nodes and whiteouts (needs CAP_MKNOD) and chown entries.
    pub privileged: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            privileged: nix::unistd::geteuid().is_root(),
        }
    }
}

/// What an unpack produced.
#[derive(Clone, Debug)]
pub struct UnpackStats {
    /// sha256 of the uncompressed tar stream.
    pub diff_id: Digest,
    /// Sum of regular file sizes.
    pub size: u64,
    pub entries: u64,
}

/// Names used in error messages.
#[derive(Clone, Debug)]
pub struct LayerContext {
    pub image: String,
    pub layer: String,
}

impl LayerContext {
    fn hostile(&self, entry: &Path, reason: impl Into<String>) -> ImageError {
        ImageError::HostileEntry {
            image: self.image.clone(),
            layer: self.layer.clone(),
            entry: entry.display().to_string(),
            reason: reason.into(),
        }
    }

    fn layer_err(&self, reason: impl Into<String>) -> ImageError {
        ImageError::Layer {
            image: self.image.clone(),
            layer: self.layer.clone(),
            reason: reason.into(),
        }
    }
}

/// Hashes everything read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Decompress `blob` and apply it to `dest` (an existing empty directory).
pub fn unpack_layer(
    blob: impl Read,
    compression: Compression,
    dest: &Path,
    opts: &UnpackOptions,
    ctx: &LayerContext,
) -> Result<UnpackStats> {
    let reader: Box<dyn Read> = match compression {
        Compression::None => Box::new(blob),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(blob)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(blob)
                .map_err(|e| ctx.layer_err(format!("zstd: {e}")))?,
        ),
    };
    let mut hashing = HashingReader {
        inner: reader,
        hasher: Sha256::new(),
    };
    let (size, entries) = apply_tar(&mut hashing, dest, opts, ctx)?;
    // Hash the rest of the stream (end-of-archive padding) too.
    io::copy(&mut hashing, &mut io::sink())
        .map_err(|e| ctx.layer_err(format!("reading past the end of the archive: {e}")))?;
    Ok(UnpackStats {
        diff_id: Digest::from_hasher(hashing.hasher),
        size,
        entries,
    })
}

fn apply_tar(
    reader: &mut dyn Read,
    dest: &Path,
    opts: &UnpackOptions,
    ctx: &LayerContext,
) -> Result<(u64, u64)> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(opts.privileged);
    archive.set_unpack_xattrs(opts.privileged);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    let mut size = 0u64;
    let mut count = 0u64;
    let entries = archive
        .entries()
        .map_err(|e| ctx.layer_err(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ctx.layer_err(format!("corrupt tar stream: {e}")))?;
        let raw = entry.path_bytes().into_owned();
        let shown = PathBuf::from(OsStr::from_bytes(&raw));
        let rel = clean_path(&raw).map_err(|r| ctx.hostile(&shown, r))?;
        count += 1;
        if rel.as_os_str().is_empty() {
            continue; // the layer root itself
        }
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        ensure_parents(dest, &rel).map_err(|r| ctx.hostile(&shown, r))?;
        let target = dest.join(&rel);
        if name == OPAQUE_MARKER {
            let dir = target.parent().unwrap_or(dest);
            set_opaque(dir)
                .map_err(|e| ctx.layer_err(format!("marking {} opaque: {e}", shown.display())))?;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if !opts.privileged {
                return Err(ctx.hostile(&shown, "whiteouts need CAP_MKNOD to unpack"));
            }
            let victim = target.with_file_name(hidden);
            remove_any(&victim).ctx("remove", &victim)?;
            make_node(&victim, libc::S_IFCHR, 0).ctx("mknod whiteout", &victim)?;
            continue;
        }
        let kind = entry.header().entry_type();
        match kind {
            EntryType::Directory => {
                if let Ok(md) = fs::symlink_metadata(&target) {
                    if !md.is_dir() {
                        remove_any(&target).ctx("remove", &target)?;
                    }
                }
                entry
                    .unpack(&target)
                    .map_err(|e| ctx.layer_err(format!("{}: {}", shown.display(), chain(&e))))?;
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                remove_any(&target).ctx("remove", &target)?;
                size += entry.size();
                entry
                    .unpack(&target)
                    .map_err(|e| ctx.layer_err(format!("{}: {}", shown.display(), chain(&e))))?;
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| ctx.hostile(&shown, "symlink without a target"))?
                    .into_owned();
                check_symlink(&rel, &link).map_err(|r| ctx.hostile(&shown, r))?;
                remove_any(&target).ctx("remove", &target)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&link), &target)
                    .ctx("symlink", &target)?;
                chown_entry(&entry, &target, opts)?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| ctx.hostile(&shown, "hard link without a target"))?
                    .into_owned();
                let src_rel = clean_path(&link)
                    .map_err(|r| ctx.hostile(&shown, format!("hard link target: {r}")))?;
                if src_rel.as_os_str().is_empty() {
                    return Err(ctx.hostile(&shown, "hard link to the layer root"));
                }
                check_no_symlink_parents(dest, &src_rel)
                    .map_err(|r| ctx.hostile(&shown, format!("hard link target: {r}")))?;
                let src = dest.join(&src_rel);
                match fs::symlink_metadata(&src) {
                    Ok(md) if md.is_dir() => {
                        return Err(ctx.hostile(&shown, "hard link to a directory"))
                    }
                    Ok(_) => {}
                    Err(_) => {
                        return Err(ctx.hostile(
                            &shown,
                            format!(
                                "hard link target {} is not in this layer",
                                src_rel.display()
                            ),
                        ))
                    }
                }
                if src != target {
                    remove_any(&target).ctx("remove", &target)?;
                    fs::hard_link(&src, &target).ctx("link", &target)?;
                }
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                if kind != EntryType::Fifo && !opts.privileged {
                    return Err(ctx.hostile(&shown, "device node in a layer unpacked without root"));
                }
                let hdr = entry.header();
                let mode = hdr.mode().unwrap_or(0o600) & 0o7777;
                let major = hdr.device_major().ok().flatten().unwrap_or(0);
                let minor = hdr.device_minor().ok().flatten().unwrap_or(0);
                let fmt = match kind {
                    EntryType::Char => libc::S_IFCHR,
                    EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                remove_any(&target).ctx("remove", &target)?;
                make_node(&target, fmt | mode, libc::makedev(major, minor))
                    .ctx("mknod", &target)?;
                chown_entry(&entry, &target, opts)?;
            }
            EntryType::XGlobalHeader | EntryType::XHeader => {}
            other => {
                return Err(ctx.hostile(&shown, format!("unsupported entry type {other:?}")));
            }
        }
    }
    Ok((size, count))
}

/// An error with its causes, `outer: inner: ...`.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// Normalise an archive path: strip `./`, refuse absolute paths and `..`.
fn clean_path(raw: &[u8]) -> std::result::Result<PathBuf, String> {
    if raw.first() == Some(&b'/') {
        return Err("absolute path".into());
    }
    if raw.contains(&0) {
        return Err("NUL byte in path".into());
    }
    let mut out = PathBuf::new();
    for comp in Path::new(OsStr::from_bytes(raw)).components() {
        match comp {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => return Err("path contains '..'".into()),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path".into()),
        }
    }
    Ok(out)
}

/// Create missing parent directories of `rel`, refusing to pass through a
/// symlink or a non-directory.
fn ensure_parents(root: &Path, rel: &Path) -> std::result::Result<(), String> {
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    let mut cur = root.to_path_buf();
    for comp in parent.components() {
        cur.push(comp);
        match fs::symlink_metadata(&cur) {
            Ok(md) if md.is_dir() => {}
            Ok(md) if md.file_type().is_symlink() => {
                return Err(format!(
                    "would be written through the symlink {}",
                    cur.strip_prefix(root).unwrap_or(&cur).display()
                ))
            }
            Ok(_) => {
                return Err(format!(
                    "parent {} is not a directory",
                    cur.strip_prefix(root).unwrap_or(&cur).display()
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&cur).map_err(|e| format!("creating {}: {e}", cur.display()))?;
            }
            Err(e) => return Err(format!("{}: {e}", cur.display())),
        }
    }
    Ok(())
}

fn check_no_symlink_parents(root: &Path, rel: &Path) -> std::result::Result<(), String> {
    let mut cur = root.to_path_buf();
    if let Some(parent) = rel.parent() {
        for comp in parent.components() {
            cur.push(comp);
            if let Ok(md) = fs::symlink_metadata(&cur) {
                if !md.is_dir() {
                    return Err(format!("passes through non-directory {}", cur.display()));
                }
            }
        }
    }
    Ok(())
}

/// A relative symlink target must not climb above the layer root.
fn check_symlink(rel: &Path, target: &[u8]) -> std::result::Result<(), String> {
    if target.is_empty() {
        return Err("empty symlink target".into());
    }
    if target.first() == Some(&b'/') {
        return Ok(()); // resolved inside the container's root at run time
    }
    let mut depth: i64 = rel
        .parent()
        .map(|p| p.components().count() as i64)
        .unwrap_or(0);
    for comp in Path::new(OsStr::from_bytes(target)).components() {
        match comp {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!(
                        "symlink target {:?} points outside the layer",
                        String::from_utf8_lossy(target)
                    ));
                }
            }
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    Ok(())
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn make_node(path: &Path, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    let c = cpath(path)?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mknod(c.as_ptr(), mode, dev) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_opaque(dir: &Path) -> io::Result<()> {
    let c = cpath(dir)?;
    let name = c"trusted.overlay.opaque";
    let value = b"y";
    // SAFETY: valid NUL-terminated path and attribute name; value pointer and
    // length describe a live byte slice.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn chown_entry<R: Read>(
    entry: &tar::Entry<'_, R>,
    path: &Path,
    opts: &UnpackOptions,
) -> Result<()> {
    if !opts.privileged {
        return Ok(());
    }
    let hdr = entry.header();
    let uid = hdr.uid().ok().and_then(|u| u32::try_from(u).ok());
    let gid = hdr.gid().ok().and_then(|g| u32::try_from(g).ok());
    std::os::unix::fs::lchown(path, uid, gid).ctx("lchown", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_path_refuses_escapes() {
        assert_eq!(clean_path(b"./a/b").ok(), Some(PathBuf::from("a/b")));
        assert_eq!(clean_path(b"./").ok(), Some(PathBuf::new()));
        assert!(clean_path(b"/etc/passwd").is_err());
        assert!(clean_path(b"a/../../b").is_err());
        assert!(clean_path(b"..").is_err());
    }

    #[test]
    fn symlink_targets() {
        assert!(check_symlink(Path::new("bin/sh"), b"busybox").is_ok());
        assert!(check_symlink(Path::new("bin/sh"), b"/bin/busybox").is_ok());
        assert!(check_symlink(Path::new("usr/bin/x"), b"../../bin/busybox").is_ok());
        assert!(check_symlink(Path::new("usr/bin/x"), b"../../../etc").is_err());
        assert!(check_symlink(Path::new("x"), b"../etc").is_err());
    }
}
