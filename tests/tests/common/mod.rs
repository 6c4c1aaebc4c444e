#![allow(dead_code)]

pub mod podenv;
pub mod proxy;

use std::path::Path;
use std::sync::Arc;

use podctl_images::{
    ImageError, ImageRecord, PullOptions, PullStats, Puller, RegistryClient, RegistryConfig, Store,
};

pub fn rt() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("tokio runtime: {e}"),
    }
}

pub fn puller(root: &Path, cfg: RegistryConfig) -> Puller {
    let store = Arc::new(Store::open(root).unwrap_or_else(|e| panic!("open store: {e}")));
    let client = Arc::new(RegistryClient::new(cfg).unwrap_or_else(|e| panic!("client: {e}")));
    Puller::new(store, client)
}

pub fn pull(p: &Puller, reference: &str) -> Result<(ImageRecord, PullStats), ImageError> {
    rt().block_on(p.pull_with_stats(reference, &PullOptions::default()))
}

pub fn pull_with(
    p: &Puller,
    reference: &str,
    opts: &PullOptions,
) -> Result<(ImageRecord, PullStats), ImageError> {
    rt().block_on(p.pull_with_stats(reference, opts))
}

/// Everything below `dir`, relative, sorted.
pub fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap_or(&p).display().to_string());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Mount the image's layers read-only with overlayfs at `target`.
pub struct Overlay(std::path::PathBuf);

impl Overlay {
    pub fn mount(lowers: &[std::path::PathBuf], target: &Path) -> Overlay {
        std::fs::create_dir_all(target).unwrap_or_else(|e| panic!("mkdir: {e}"));
        let lower: Vec<String> = lowers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        let opts = format!("lowerdir={}", lower.join(":"));
        let st = std::process::Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(target)
            .status()
            .unwrap_or_else(|e| panic!("mount: {e}"));
        assert!(st.success(), "mounting overlay {opts}");
        Overlay(target.to_path_buf())
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}
