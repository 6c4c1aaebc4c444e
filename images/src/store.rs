//! On-disk store: content blobs by digest, layer snapshots by chain ID and
//! the image metadata database.
//!
//! ```text
//! ROOT/blobs/sha256/<hex>          verified content, written by rename
//! ROOT/ingest/<hex>.partial        download in progress (resumable)
//! ROOT/ingest/<hex>.lock           single-flight lock for that blob
//! ROOT/snapshots/<chain hex>/fs    one layer's diff, overlay format
//! ROOT/snapshots/.tmp-*            unpack in progress (never used)
//! ROOT/images.json                 image records, written atomically
//! ROOT/images.lock                 lock around read-modify-write of it
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{ImageError, IoContext, Result};
use crate::fsutil::{self, FileLock};
use crate::manifest::RunConfig;
use crate::reference::Reference;

/// One layer of a stored image.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LayerRecord {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub diff_id: Digest,
    pub chain_id: Digest,
}

/// A stored image. Its ID is the digest of its config.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    pub id: Digest,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// Digest of the manifest that was run (platform-specific).
    pub manifest_digest: Digest,
    /// Compressed size of config and layers, as registries report it.
    pub size: u64,
    pub architecture: String,
    pub os: String,
    pub config: RunConfig,
    pub layers: Vec<LayerRecord>,
    /// Seconds since the epoch when it was pulled.
    pub pulled_at: u64,
    #[serde(default)]
    pub pinned: bool,
}

impl ImageRecord {
    /// The image's `User` split the way CRI reports it: a numeric uid, or
    /// a user name.
    pub fn user(&self) -> (Option<i64>, String) {
        let user = self.config.user.split(':').next().unwrap_or("");
        match user.parse::<i64>() {
            Ok(uid) => (Some(uid), String::new()),
            Err(_) => (None, user.to_string()),
        }
    }

    /// Chain IDs bottom-first.
    pub fn chain_ids(&self) -> impl Iterator<Item = &Digest> {
        self.layers.iter().map(|l| &l.chain_id)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Db {
    images: BTreeMap<String, ImageRecord>,
}

/// The image store rooted at one directory.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    /// `images.json` as last parsed, with the bytes it was parsed from
    /// (see [`Store::read_db`]).
    last: Mutex<Option<(Vec<u8>, Arc<Db>)>>,
}

impl Store {
    /// Open (creating if needed) a store and clear leftovers of interrupted
    /// unpacks. Partial downloads are kept so they can resume.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for d in ["blobs/sha256", "ingest", "snapshots"] {
            let p = root.join(d);
            fs::create_dir_all(&p).ctx("create", &p)?;
        }
        let store = Store {
            root,
            last: Mutex::new(None),
        };
        store.clean_tmp()?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn clean_tmp(&self) -> Result<()> {
        let snaps = self.root.join("snapshots");
        let _lock = FileLock::acquire(&self.root.join("images.lock"))?;
        for e in fs::read_dir(&snaps).ctx("read", &snaps)?.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".tmp-") && !tmp_owner_alive(&name) {
                let p = e.path();
                fs::remove_dir_all(&p).ctx("remove", &p)?;
            }
        }
        Ok(())
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    pub(crate) fn partial_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("ingest")
            .join(format!("{}.partial", d.hex()))
    }

    pub(crate) fn blob_lock_path(&self, d: &Digest) -> PathBuf {
        self.root.join("ingest").join(format!("{}.lock", d.hex()))
    }

    /// Directory of a committed snapshot.
    pub fn snapshot_dir(&self, chain_id: &Digest) -> PathBuf {
        self.root.join("snapshots").join(chain_id.hex())
    }

    /// The layer contents of a snapshot (an overlayfs lower dir).
    pub fn snapshot_fs(&self, chain_id: &Digest) -> PathBuf {
        self.snapshot_dir(chain_id).join("fs")
    }

    pub fn has_snapshot(&self, chain_id: &Digest) -> bool {
        self.snapshot_fs(chain_id).is_dir()
    }

    /// A fresh temporary snapshot directory for `chain_id`.
    pub(crate) fn tmp_snapshot(&self, chain_id: &Digest) -> Result<PathBuf> {
        let p = self.root.join("snapshots").join(format!(
            ".tmp-{}-{}",
            &chain_id.hex()[..16],
            fsutil::unique_suffix()
        ));
        let fs_dir = p.join("fs");
        fs::create_dir_all(&fs_dir).ctx("create", &fs_dir)?;
        Ok(p)
    }

    /// Store a small verified blob (manifest, config) atomically.
    pub fn put_blob(&self, d: &Digest, data: &[u8]) -> Result<()> {
        if self.has_blob(d) {
            return Ok(());
        }
        fsutil::write_atomic(&self.blob_path(d), data)
    }

    /// Read a stored blob fully.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let p = self.blob_path(d);
        fs::read(&p).ctx("read", &p)
    }

    /// Overlay lower dirs of an image, bottom layer first.
    pub fn layer_dirs(&self, image: &ImageRecord) -> Result<Vec<PathBuf>> {
        image
            .chain_ids()
            .map(|c| {
                let p = self.snapshot_fs(c);
                if p.is_dir() {
                    Ok(p)
                } else {
                    Err(ImageError::NotFound {
                        image: format!("{} (snapshot {c} missing)", image.id),
                    })
                }
            })
            .collect()
    }

    /// The database for reading: no lock (writes replace the file
    /// atomically, so a reader sees the old or the new one whole), parsed
    /// again only when its bytes changed.
    fn read_db(&self) -> Result<Arc<Db>> {
        let path = self.root.join("images.json");
        let b = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Arc::default()),
            Err(e) => return Err(e).ctx("read", &path),
        };
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((kept, db)) = last.as_ref() {
            if *kept == b {
                return Ok(db.clone());
            }
        }
        let db: Arc<Db> = Arc::new(serde_json::from_slice(&b).map_err(|e| ImageError::Config {
            path: path.clone(),
            reason: e.to_string(),
        })?);
        *last = Some((b, db.clone()));
        Ok(db)
    }

    fn with_db<T>(&self, write: bool, f: impl FnOnce(&mut Db) -> Result<T>) -> Result<T> {
        let _lock = FileLock::acquire(&self.root.join("images.lock"))?;
        let path = self.root.join("images.json");
        let mut db: Db = match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| ImageError::Config {
                path: path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Db::default(),
            Err(e) => return Err(e).ctx("read", &path),
        };
        let out = f(&mut db)?;
        if write {
            let bytes = serde_json::to_vec_pretty(&db).map_err(|e| ImageError::Config {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            fsutil::write_atomic(&path, &bytes)?;
        }
        Ok(out)
    }

    /// All images, ordered by ID.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        Ok(self.read_db()?.images.values().cloned().collect())
    }

    /// Find an image by ID (full or unique hex prefix), tag or digest reference.
    pub fn get(&self, query: &str) -> Result<ImageRecord> {
        find(self.read_db()?.as_ref(), query).cloned()
    }

    /// Record a pulled image; its tag moves here from any other image.
    pub fn put(&self, mut rec: ImageRecord) -> Result<ImageRecord> {
        self.with_db(true, |db| {
            for other in db.images.values_mut() {
                if other.id != rec.id {
                    other.repo_tags.retain(|t| !rec.repo_tags.contains(t));
                }
            }
            if let Some(old) = db.images.get(&rec.id.to_string()) {
                merge(&mut rec.repo_tags, &old.repo_tags);
                merge(&mut rec.repo_digests, &old.repo_digests);
                rec.pinned |= old.pinned;
            }
            db.images.insert(rec.id.to_string(), rec.clone());
            Ok(rec)
        })
    }

    /// Mark an image as pinned (never garbage collected by the kubelet).
    pub fn set_pinned(&self, query: &str, pinned: bool) -> Result<()> {
        self.with_db(true, |db| {
            let id = find(db, query)?.id.to_string();
            if let Some(r) = db.images.get_mut(&id) {
                r.pinned = pinned;
            }
            Ok(())
        })
    }

    /// Remove a tag; the image goes too when it was its last tag. Removing
    /// by ID or digest removes the image with all its tags. Returns the
    /// removed image if it was removed.
    pub fn untag(&self, query: &str) -> Result<Option<ImageRecord>> {
        let removed = self.with_db(true, |db| {
            let rec = find(db, query)?.clone();
            let tag = Reference::parse(query).ok().and_then(|r| {
                if r.digest.is_none() {
                    r.tagged()
                } else {
                    None
                }
            });
            match tag {
                Some(t) if rec.repo_tags.contains(&t) && rec.repo_tags.len() > 1 => {
                    if let Some(r) = db.images.get_mut(&rec.id.to_string()) {
                        r.repo_tags.retain(|x| x != &t);
                    }
                    Ok(None)
                }
                _ => Ok(db.images.remove(&rec.id.to_string())),
            }
        })?;
        if removed.is_some() {
            self.gc()?;
        }
        Ok(removed)
    }

    /// Remove an image and all its tags (CRI RemoveImage). Missing images
    /// are not an error.
    pub fn remove(&self, query: &str) -> Result<Option<ImageRecord>> {
        let removed = self.with_db(true, |db| match find(db, query) {
            Ok(rec) => {
                let id = rec.id.to_string();
                Ok(db.images.remove(&id))
            }
            Err(ImageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        })?;
        if removed.is_some() {
            self.gc()?;
        }
        Ok(removed)
    }

    /// Delete blobs and snapshots no image refers to.
    pub fn gc(&self) -> Result<()> {
        self.with_db(false, |db| {
            let mut keep_blobs = BTreeSet::new();
            let mut keep_snaps = BTreeSet::new();
            for r in db.images.values() {
                keep_blobs.insert(r.id.hex().to_string());
                keep_blobs.insert(r.manifest_digest.hex().to_string());
                for d in &r.repo_digests {
                    if let Some((_, dg)) = d.split_once('@') {
                        if let Ok(dg) = Digest::parse(dg) {
                            keep_blobs.insert(dg.hex().to_string());
                        }
                    }
                }
                for l in &r.layers {
                    keep_blobs.insert(l.digest.hex().to_string());
                    keep_snaps.insert(l.chain_id.hex().to_string());
                }
            }
            sweep(&self.root.join("blobs/sha256"), &keep_blobs)?;
            sweep(&self.root.join("snapshots"), &keep_snaps)?;
            Ok(())
        })
    }

    /// Bytes and inodes used by the store (CRI ImageFsInfo).
    pub fn usage(&self) -> (u64, u64) {
        fsutil::usage(&self.root)
    }
}

fn sweep(dir: &Path, keep: &BTreeSet<String>) -> Result<()> {
    for e in fs::read_dir(dir).ctx("read", dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || keep.contains(&name) {
            continue;
        }
        let p = e.path();
        let res = if p.is_dir() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        res.ctx("remove", &p)?;
    }
    Ok(())
}

fn merge(into: &mut Vec<String>, from: &[String]) {
    for x in from {
        if !into.contains(x) {
            into.push(x.clone());
        }
    }
}

fn find<'a>(db: &'a Db, query: &str) -> Result<&'a ImageRecord> {
    let not_found = || ImageError::NotFound {
        image: query.to_string(),
    };
    if let Some(r) = db.images.get(query) {
        return Ok(r);
    }
    let hex = query.strip_prefix("sha256:").unwrap_or(query);
    if hex.len() >= 6 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        let hits: Vec<_> = db
            .images
            .values()
            .filter(|r| r.id.hex().starts_with(hex))
            .collect();
        match hits.len() {
            1 => return Ok(hits[0]),
            0 => {}
            _ => {
                return Err(ImageError::Ambiguous {
                    image: query.to_string(),
                    reason: format!("{} images have IDs starting with it", hits.len()),
                })
            }
        }
    }
    let Ok(r) = Reference::parse(query) else {
        return Err(not_found());
    };
    let wanted = match &r.digest {
        Some(d) => r.with_digest(d),
        None => r.tagged().unwrap_or_default(),
    };
    db.images
        .values()
        .find(|i| {
            i.repo_tags.contains(&wanted)
                || i.repo_digests.contains(&wanted)
                || r.digest.as_ref() == Some(&i.manifest_digest)
                    && i.repo_digests.iter().any(|d| d.starts_with(&r.name()))
        })
        .ok_or_else(not_found)
}

/// Temporary snapshot names carry the PID of their creator; a live creator
/// is still unpacking.
fn tmp_owner_alive(name: &str) -> bool {
    let pid = name.split('-').nth(2).and_then(|p| p.parse::<i32>().ok());
    match pid {
        Some(pid) if pid as u32 != std::process::id() => {
            Path::new(&format!("/proc/{pid}")).exists()
        }
        _ => false,
    }
}
