//! The benchmark image: deterministic generated content, built once and
//! cached on disk under `$TMPDIR/podctl-testbed-cache/big-v<N>-<bytes>/`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::fixtures::noise;
use crate::oci::{image, Compression, Image, ImageSpec, Layer, LayerBuilder};
use crate::{io_err, sha256, Result, TestbedError};

/// Bump when the generator changes, so stale caches are not used.
const GENERATOR_VERSION: u32 = 3;
const LAYERS: usize = 5;

const WORDS: &[&str] = &[
    "podctl",
    "pulls",
    "layers",
    "while",
    "it",
    "unpacks",
    "them",
    "into",
    "overlay",
    "snapshots",
    "the",
    "registry",
    "answers",
    "with",
    "blobs",
    "digest",
    "verified",
    "container",
    "runtime",
    "and",
    "a",
    "of",
    "to",
    "is",
];

/// Text made of pseudo-random words (compresses about 3:1).
fn text(seed: u64, len: usize) -> Vec<u8> {
    let picks = noise(seed ^ 0x5EED, len / 4 + 8);
    let mut out = Vec::with_capacity(len + 16);
    let mut i = 0;
    while out.len() < len {
        let w = WORDS[usize::from(picks[i % picks.len()]) % WORDS.len()];
        out.extend_from_slice(w.as_bytes());
        out.push(if i % 13 == 12 { b'\n' } else { b' ' });
        i += 1;
    }
    out.truncate(len);
    out
}

/// One layer of about `bytes`: a fifth in many small files (512 B–16 KiB),
/// the rest in files of 256 KiB, 1 MiB and 4 MiB; every other file
/// incompressible noise, the others text.
fn build_layer(li: usize, bytes: usize) -> Result<Layer> {
    let seed = li as u64 * 1_000_003;
    let mut b = LayerBuilder::new().dir(&format!("data{li}"), 0o755);
    let small_budget = bytes / 5;
    let mut done = 0usize;
    let mut i = 0u64;
    let sizes = noise(seed ^ 0xABCD, 4096);
    while done < small_budget {
        if i.is_multiple_of(100) {
            b = b.dir(&format!("data{li}/small{:03}", i / 100), 0o755);
        }
        let pick = u16::from_le_bytes([
            sizes[(2 * i as usize) % sizes.len()],
            sizes[(2 * i as usize + 1) % sizes.len()],
        ]);
        let size = (512 + usize::from(pick) % (16 << 10)).min(small_budget - done);
        let data = if i.is_multiple_of(2) {
            noise(seed + i, size)
        } else {
            text(seed + i, size)
        };
        b = b.file(
            &format!("data{li}/small{:03}/f{i:05}", i / 100),
            0o644,
            &data,
        );
        done += size;
        i += 1;
    }
    let mut j = 0u64;
    while done < bytes {
        let size = [256 << 10, 1 << 20, 4 << 20][(j % 3) as usize].min(bytes - done);
        let data = if (j / 3).is_multiple_of(2) {
            noise(seed + 500_000 + j, size)
        } else {
            text(seed + 500_000 + j, size)
        };
        let mode = if j.is_multiple_of(7) { 0o755 } else { 0o644 };
        b = b.file(&format!("data{li}/large{j:04}"), mode, &data);
        done += size;
        j += 1;
    }
    b.try_finish(Compression::Gzip)
}

/// Build the benchmark image without the cache (layers in parallel).
pub fn big_uncached(total: usize) -> Result<Image> {
    let per_layer = (total / LAYERS).max(1);
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<Result<Layer>>>> = Mutex::new((0..LAYERS).map(|_| None).collect());
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(LAYERS);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let li = next.fetch_add(1, Ordering::SeqCst);
                if li >= LAYERS {
                    break;
                }
                let layer = build_layer(li, per_layer);
                if let Ok(mut v) = slots.lock() {
                    v[li] = Some(layer);
                }
            });
        }
    });
    let slots = slots.into_inner().map_err(|_| TestbedError::Command {
        cmd: "build big image".into(),
        reason: "a layer builder panicked".into(),
    })?;
    let mut layers = Vec::with_capacity(LAYERS);
    for (li, slot) in slots.into_iter().enumerate() {
        layers.push(slot.ok_or_else(|| TestbedError::Command {
            cmd: "build big image".into(),
            reason: format!("layer {li} was not built"),
        })??);
    }
    Ok(image(layers, &ImageSpec::default()))
}

#[derive(Serialize, Deserialize)]
struct CachedLayer {
    media_type: String,
    digest: String,
    diff_id: String,
}

/// Cache directory of `big(total)`.
pub fn big_cache_dir(total: usize) -> PathBuf {
    std::env::temp_dir()
        .join("podctl-testbed-cache")
        .join(format!("big-v{GENERATOR_VERSION}-{total}"))
}

fn load(dir: &Path) -> Result<Vec<Layer>> {
    let meta = dir.join("layers.json");
    let text = std::fs::read(&meta).map_err(io_err("read", meta.display()))?;
    let list: Vec<CachedLayer> =
        serde_json::from_slice(&text).map_err(|e| TestbedError::Command {
            cmd: format!("parse {}", meta.display()),
            reason: e.to_string(),
        })?;
    let mut layers = Vec::with_capacity(list.len());
    for l in list {
        let path = dir.join(l.digest.trim_start_matches("sha256:"));
        let blob = std::fs::read(&path).map_err(io_err("read", path.display()))?;
        if sha256(&blob) != l.digest {
            return Err(TestbedError::Command {
                cmd: format!("load {}", path.display()),
                reason: "cached blob does not match its digest".into(),
            });
        }
        layers.push(Layer {
            media_type: l.media_type,
            digest: l.digest,
            diff_id: l.diff_id,
            blob,
        });
    }
    Ok(layers)
}

fn store(dir: &Path, img: &Image) -> Result<()> {
    let parent = dir.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).map_err(io_err("create", parent.display()))?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("big"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io_err("create", tmp.display()))?;
    let mut list = Vec::new();
    for l in &img.layers {
        let path = tmp.join(l.digest.trim_start_matches("sha256:"));
        std::fs::write(&path, &l.blob).map_err(io_err("write", path.display()))?;
        list.push(CachedLayer {
            media_type: l.media_type.clone(),
            digest: l.digest.clone(),
            diff_id: l.diff_id.clone(),
        });
    }
    let meta = tmp.join("layers.json");
    let json = serde_json::to_vec(&list).unwrap_or_default();
    std::fs::write(&meta, json).map_err(io_err("write", meta.display()))?;
    // Another process may have won the race; its copy is as good as ours.
    if std::fs::rename(&tmp, dir).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(())
}

/// The benchmark image of about `total` bytes (uncompressed) in five gzip
/// layers, about half incompressible: loaded from the on-disk cache when it
/// is there, else generated (and cached). Cache problems are reported on
/// stderr and otherwise ignored; generation itself cannot fail.
pub fn big(total: usize) -> Image {
    let dir = big_cache_dir(total);
    if dir.exists() {
        match load(&dir) {
            Ok(layers) => return image(layers, &ImageSpec::default()),
            Err(e) => {
                eprintln!("podctl-testbed: ignoring cache {}: {e}", dir.display());
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
    let img = match big_uncached(total) {
        Ok(img) => img,
        Err(e) => panic!("generating the benchmark image: {e}"),
    };
    if let Err(e) = store(&dir, &img) {
        eprintln!("podctl-testbed: not caching {}: {e}", dir.display());
    }
    img
}

#[cfg(test)]
mod tests {
    /// `cargo test -p podctl-tests --release --lib -- --ignored --nocapture big_build_time`
    #[test]
    #[ignore = "slow: builds the 200 MB benchmark image"]
    fn big_build_time() -> crate::Result<()> {
        let t = std::time::Instant::now();
        let img = super::big_uncached(200 << 20)?;
        let compressed: u64 = img.layers.iter().map(|l| l.size()).sum();
        eprintln!(
            "200 MiB in {:.1}s, {} layers, {:.1} MB compressed",
            t.elapsed().as_secs_f64(),
            img.layers.len(),
            compressed as f64 / 1e6
        );
        Ok(())
    }
}
