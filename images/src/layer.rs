//! Fetching one layer blob into the content store while unpacking it into
//! a snapshot in the same pass. A partial download is resumed with an HTTP
//! Range request; the bytes already on disk are re-hashed, never trusted.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::digest::Digest;
use crate::error::{ImageError, IoContext, Result};
use crate::fsutil;
use crate::manifest::Descriptor;
use crate::media::Compression;
use crate::store::Store;
use crate::unpack::{unpack_layer, LayerContext, UnpackOptions, UnpackStats};

/// Progress callback: (layer digest, bytes done, total bytes).
pub type ByteProgress = Arc<dyn Fn(&Digest, u64, u64) + Send + Sync>;

/// Reads the bytes already in the partial file, then chunks from the
/// network, appending those to the partial file. Everything is hashed.
struct TeeReader {
    existing: Option<File>,
    partial: File,
    partial_path: PathBuf,
    rx: Option<mpsc::Receiver<std::result::Result<Bytes, String>>>,
    pending: Bytes,
    hasher: Sha256,
    count: u64,
    limit: u64,
    digest: Digest,
    progress: Option<ByteProgress>,
    /// Set when the network side reported a broken connection.
    stream_error: Option<String>,
}

impl Read for TeeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(f) = &mut self.existing {
            let n = f.read(buf)?;
            if n > 0 {
                return Ok(self.account(&buf[..n]));
            }
            self.existing = None;
        }
        while self.pending.is_empty() {
            let Some(rx) = &mut self.rx else { return Ok(0) };
            match rx.blocking_recv() {
                Some(Ok(chunk)) => {
                    if self.count + chunk.len() as u64 > self.limit {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "blob is larger than the {} bytes the manifest says",
                                self.limit
                            ),
                        ));
                    }
                    self.partial.write_all(&chunk).map_err(|e| {
                        io::Error::new(e.kind(), format!("{}: {e}", self.partial_path.display()))
                    })?;
                    if self.count + (chunk.len() as u64) < self.limit {
                        // Only part of the layer is in the file.
                        crate::failpoint::hit("pull.layer_partial");
                    }
                    self.pending = chunk;
                }
                Some(Err(msg)) => {
                    self.stream_error = Some(msg.clone());
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, msg));
                }
                None => {
                    self.rx = None;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        let _ = self.pending.split_to(n);
        Ok(self.account(&buf[..n]))
    }
}

impl TeeReader {
    fn account(&mut self, data: &[u8]) -> usize {
        self.hasher.update(data);
        self.count += data.len() as u64;
        if let Some(p) = &self.progress {
            p(&self.digest, self.count, self.limit);
        }
        data.len()
    }
}

/// One layer to materialise.
pub(crate) struct LayerJob {
    pub desc: Descriptor,
    pub compression: Compression,
    pub diff_id: Digest,
    pub chain_id: Digest,
    pub ctx: LayerContext,
}

/// Outcome of one attempt.
pub(crate) enum Attempt {
    Done {
        downloaded: u64,
        resumed_from: u64,
    },
    /// The network stream broke; the partial file keeps what arrived.
    Interrupted(ImageError),
}

/// What the network side needs: a response already opened at `offset`,
/// or none when the partial file already holds the whole blob.
pub(crate) struct Download {
    pub response: Option<reqwest::Response>,
    /// Byte offset the response body starts at.
    pub offset: u64,
}

/// Length of the partial download on disk (0 if none or unusable).
pub(crate) fn partial_len(store: &Store, desc: &Descriptor) -> u64 {
    let p = store.partial_path(&desc.digest);
    match fs::metadata(&p) {
        Ok(m) if m.len() <= desc.size => m.len(),
        Ok(_) => {
            let _ = fs::remove_file(&p);
            0
        }
        Err(_) => 0,
    }
}

/// Forget a partial download.
pub(crate) fn discard_partial(store: &Store, desc: &Descriptor) {
    let _ = fs::remove_file(store.partial_path(&desc.digest));
}

/// Stream `download` into the store and, unless the snapshot exists,
/// unpack it on the way.
pub(crate) async fn fetch_and_unpack(
    store: Arc<Store>,
    job: Arc<LayerJob>,
    download: Download,
    opts: UnpackOptions,
    progress: Option<ByteProgress>,
) -> Result<Attempt> {
    let (tx, rx) = mpsc::channel::<std::result::Result<Bytes, String>>(64);
    let partial_path = store.partial_path(&job.desc.digest);
    if download.offset == 0 {
        let _ = fs::remove_file(&partial_path);
    }
    let resumed_from = download.offset;
    let worker = {
        let store = store.clone();
        let job = job.clone();
        tokio::task::spawn_blocking(move || {
            consume(&store, &job, Some(rx), resumed_from, &opts, progress)
        })
    };
    let mut net_err = None;
    let mut stream = match download.response {
        Some(r) => r.bytes_stream().boxed(),
        None => futures::stream::empty().boxed(),
    };
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => {
                if tx.send(Ok(chunk)).await.is_err() {
                    break; // the worker stopped (bad data); its error wins
                }
            }
            Err(e) => {
                let msg = format!("connection broke: {e}");
                net_err = Some(msg.clone());
                let _ = tx.send(Err(msg)).await;
                break;
            }
        }
    }
    drop(tx);
    let res = worker.await.map_err(|e| ImageError::Task(e.to_string()))?;
    match res {
        Ok(()) => Ok(Attempt::Done {
            downloaded: job.desc.size - resumed_from,
            resumed_from,
        }),
        Err(e @ ImageError::Truncated { .. }) => Ok(Attempt::Interrupted(e)),
        Err(e) if net_err.is_some() && matches!(e, ImageError::Layer { .. }) => {
            Ok(Attempt::Interrupted(e))
        }
        Err(e) => Err(e),
    }
}

/// Unpack a blob that is already complete in the store.
pub(crate) fn unpack_stored(store: &Store, job: &LayerJob, opts: &UnpackOptions) -> Result<()> {
    let path = store.blob_path(&job.desc.digest);
    let file = File::open(&path).ctx("open", &path)?;
    let tmp = store.tmp_snapshot(&job.chain_id)?;
    let res = unpack_layer(file, job.compression, &tmp.join("fs"), opts, &job.ctx)
        .and_then(|stats| commit_snapshot(store, job, &tmp, &stats));
    if res.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    res
}

fn consume(
    store: &Store,
    job: &LayerJob,
    rx: Option<mpsc::Receiver<std::result::Result<Bytes, String>>>,
    offset: u64,
    opts: &UnpackOptions,
    progress: Option<ByteProgress>,
) -> Result<()> {
    let partial_path = store.partial_path(&job.desc.digest);
    let existing = if offset > 0 {
        Some(File::open(&partial_path).ctx("open", &partial_path)?)
    } else {
        None
    };
    let partial = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&partial_path)
        .ctx("open", &partial_path)?;
    if partial.metadata().ctx("stat", &partial_path)?.len() != offset {
        partial.set_len(offset).ctx("truncate", &partial_path)?;
    }
    let mut tee = TeeReader {
        existing,
        partial,
        partial_path: partial_path.clone(),
        rx,
        pending: Bytes::new(),
        hasher: Sha256::new(),
        count: 0,
        limit: job.desc.size,
        digest: job.desc.digest.clone(),
        progress,
        stream_error: None,
    };
    let need_unpack = !store.has_snapshot(&job.chain_id);
    let tmp = if need_unpack {
        Some(store.tmp_snapshot(&job.chain_id)?)
    } else {
        None
    };
    let result = (|| {
        let stats = tmp
            .as_ref()
            .map(|t| unpack_layer(&mut tee, job.compression, &t.join("fs"), opts, &job.ctx));
        // Whatever the unpacker left unread still belongs to the blob; read
        // it all so the digest decides whether bad data was the registry's
        // (or a stale partial file's) fault or the layer's own.
        let drained = io::copy(&mut tee, &mut io::sink());
        if let Some(why) = &tee.stream_error {
            return Err(truncated(job, tee.count, why.clone()));
        }
        if let Err(e) = drained {
            return Err(match stats {
                Some(Err(unpack_err)) => unpack_err,
                _ => ImageError::Layer {
                    image: job.ctx.image.clone(),
                    layer: job.ctx.layer.clone(),
                    reason: e.to_string(),
                },
            });
        }
        if tee.count != job.desc.size {
            return Err(truncated(job, tee.count, "stream ended early".into()));
        }
        let actual = Digest::from_hasher(std::mem::take(&mut tee.hasher));
        if actual != job.desc.digest {
            let _ = fs::remove_file(&partial_path);
            return Err(ImageError::DigestMismatch {
                image: job.ctx.image.clone(),
                digest: job.desc.digest.to_string(),
                actual: actual.to_string(),
            });
        }
        let stats = stats.transpose()?;
        tee.partial.sync_all().ctx("fsync", &partial_path)?;
        let blob = store.blob_path(&job.desc.digest);
        fs::rename(&partial_path, &blob).ctx("rename", &blob)?;
        if let Some(dir) = blob.parent() {
            fsutil::sync_dir(dir)?;
        }
        if let (Some(t), Some(stats)) = (&tmp, stats) {
            commit_snapshot(store, job, t, &stats)?;
        }
        Ok(())
    })();
    if result.is_err() {
        if let Some(t) = &tmp {
            let _ = fs::remove_dir_all(t);
        }
    }
    result
}

fn truncated(job: &LayerJob, received: u64, why: String) -> ImageError {
    tracing::debug!(layer = %job.desc.digest, received, %why, "layer download interrupted");
    ImageError::Truncated {
        image: job.ctx.image.clone(),
        digest: job.desc.digest.to_string(),
        received,
        expected: job.desc.size,
    }
}

/// Verify the diff ID and make the snapshot visible with one rename.
fn commit_snapshot(store: &Store, job: &LayerJob, tmp: &Path, stats: &UnpackStats) -> Result<()> {
    if stats.diff_id != job.diff_id {
        return Err(ImageError::Layer {
            image: job.ctx.image.clone(),
            layer: job.ctx.layer.clone(),
            reason: format!(
                "uncompressed content has digest {}, the config says {}",
                stats.diff_id, job.diff_id
            ),
        });
    }
    let meta = serde_json::json!({
        "chain_id": job.chain_id,
        "diff_id": job.diff_id,
        "blob": job.desc.digest,
        "size": stats.size,
        "entries": stats.entries,
    });
    let meta_path = tmp.join("meta.json");
    fs::write(&meta_path, meta.to_string()).ctx("write", &meta_path)?;
    // One syncfs for the whole snapshot instead of an fsync per file.
    let dir = File::open(tmp).ctx("open", tmp)?;
    nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir))
        .map_err(|e| io::Error::from_raw_os_error(e as i32))
        .ctx("syncfs", tmp)?;
    let dest = store.snapshot_dir(&job.chain_id);
    match fs::rename(tmp, &dest) {
        Ok(()) => {}
        Err(_) if dest.join("fs").is_dir() => {
            // Someone else committed the same snapshot first.
            fs::remove_dir_all(tmp).ctx("remove", tmp)?;
        }
        Err(e) => return Err(e).ctx("rename", &dest),
    }
    if let Some(parent) = dest.parent() {
        fsutil::sync_dir(parent)?;
    }
    Ok(())
}
