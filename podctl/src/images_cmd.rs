//! `podctl pull`, `podctl images`, `podctl rmi`.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::output::{print_machine, Output};
use anyhow::Context as _;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use podctl_images::{
    Credentials, Digest, PullEvent, PullOptions, Puller, RegistryClient, RegistryConfig, Store,
};

/// Where things live, from global flags.
pub struct Context {
    pub root: PathBuf,
    pub registry_config: Option<PathBuf>,
}

impl Context {
    pub fn store(&self) -> anyhow::Result<Store> {
        Ok(Store::open(self.root.join("images"))?)
    }

    pub fn registry_config(&self) -> anyhow::Result<RegistryConfig> {
        let default = Path::new("/etc/podctl/registries.toml");
        let mut cfg = match &self.registry_config {
            Some(p) => RegistryConfig::load(p)?,
            None if default.exists() => RegistryConfig::load(default)?,
            None => RegistryConfig::default(),
        };
        if let Some(home) = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
        {
            let p = home.join("config.json");
            if p.exists() {
                cfg.load_docker_config(&p)?;
            }
        }
        Ok(cfg)
    }

    pub fn puller(&self) -> anyhow::Result<Puller> {
        let store = Arc::new(self.store()?);
        let client = Arc::new(RegistryClient::new(self.registry_config()?)?);
        Ok(Puller::new(store, client))
    }
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Image reference, e.g. busybox or 127.0.0.1:5000/library/busybox:latest.
    pub image: String,
    /// Credentials as USER:PASSWORD.
    #[arg(long)]
    pub creds: Option<String>,
    /// Platform to pick from a multi-arch index (os/arch[/variant]).
    #[arg(long)]
    pub platform: Option<String>,
    /// No progress bars and no summary (progress bars are only drawn
    /// when stderr is a terminal).
    #[arg(long, short)]
    pub quiet: bool,
}

pub async fn pull(ctx: &Context, a: PullArgs) -> anyhow::Result<()> {
    let puller = ctx.puller()?;
    let mut opts = PullOptions::default();
    if let Some(c) = &a.creds {
        let (u, p) = c.split_once(':').context("--creds must be USER:PASSWORD")?;
        opts.credentials = Some(Credentials {
            username: u.into(),
            password: p.into(),
            ..Default::default()
        });
    }
    if let Some(p) = &a.platform {
        opts.platform = Some(parse_platform(p)?);
    }
    if !a.quiet && std::io::stderr().is_terminal() {
        opts.observer = Some(progress_observer());
    }
    let start = Instant::now();
    let (rec, stats) = puller.pull_with_stats(&a.image, &opts).await?;
    let secs = start.elapsed().as_secs_f64();
    println!("{}", rec.id);
    if !a.quiet {
        eprintln!(
            "pulled {} ({} layers, {} fetched, {} resumed, {} cached) in {secs:.2}s",
            rec.repo_tags
                .first()
                .or(rec.repo_digests.first())
                .map(String::as_str)
                .unwrap_or("image"),
            rec.layers.len(),
            stats.layers_fetched,
            stats.layers_resumed,
            stats.layers_cached
        );
    }
    Ok(())
}

fn parse_platform(s: &str) -> anyhow::Result<podctl_images::Platform> {
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [os, arch] => Ok(podctl_images::Platform {
            os: (*os).into(),
            architecture: (*arch).into(),
            variant: None,
        }),
        [os, arch, v] => Ok(podctl_images::Platform {
            os: (*os).into(),
            architecture: (*arch).into(),
            variant: Some((*v).into()),
        }),
        _ => anyhow::bail!("--platform {s:?}: expected os/arch[/variant]"),
    }
}

fn progress_observer() -> podctl_images::PullObserver {
    let multi = MultiProgress::new();
    let bars: Mutex<HashMap<Digest, ProgressBar>> = Mutex::new(HashMap::new());
    let style = ProgressStyle::with_template(
        "{prefix:.bold} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    Arc::new(move |ev| {
        let Ok(mut bars) = bars.lock() else { return };
        match ev {
            PullEvent::Resolved { layers, .. } => {
                for (d, size) in layers {
                    let pb = multi.add(ProgressBar::new(size));
                    pb.set_style(style.clone());
                    pb.set_prefix(d.short().to_string());
                    bars.insert(d, pb);
                }
            }
            PullEvent::Progress { layer, done, .. } => {
                if let Some(pb) = bars.get(&layer) {
                    pb.set_position(done);
                }
            }
            PullEvent::LayerDone { layer, cached } => {
                if let Some(pb) = bars.get(&layer) {
                    if cached {
                        pb.finish_with_message("exists");
                    } else {
                        pb.finish();
                    }
                }
            }
        }
    })
}

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Only print image IDs.
    #[arg(long, short)]
    pub quiet: bool,
    /// Output format: the image records as JSON or YAML.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
    /// Same as `-o json`.
    #[arg(long, hide = true)]
    pub json: bool,
}

pub fn images(ctx: &Context, a: ImagesArgs) -> anyhow::Result<()> {
    let list = ctx.store()?.list()?;
    let format = if a.json { Output::Json } else { a.output };
    if print_machine(format, &list)? {
        return Ok(());
    }
    if a.quiet {
        for i in &list {
            println!("{}", i.id);
        }
        return Ok(());
    }
    println!(
        "{:<60} {:<16} {:<14} {:>10}",
        "IMAGE", "TAG", "IMAGE ID", "SIZE"
    );
    for i in &list {
        let names: Vec<(String, String)> = if i.repo_tags.is_empty() {
            i.repo_digests
                .iter()
                .map(|d| {
                    (
                        d.split('@').next().unwrap_or(d).to_string(),
                        "<none>".into(),
                    )
                })
                .collect()
        } else {
            i.repo_tags
                .iter()
                .map(|t| match t.rsplit_once(':') {
                    Some((n, tag)) => (n.to_string(), tag.to_string()),
                    None => (t.clone(), String::new()),
                })
                .collect()
        };
        for (name, tag) in names {
            println!(
                "{name:<60} {tag:<16} {:<14} {:>10}",
                i.id.short(),
                human(i.size)
            );
        }
    }
    Ok(())
}

fn human(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.1}{}", units[u])
    }
}

#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Tags, digests or image IDs.
    #[arg(required = true)]
    pub images: Vec<String>,
}

pub fn rmi(ctx: &Context, a: RmiArgs) -> anyhow::Result<()> {
    let store = ctx.store()?;
    let mut failed = false;
    for q in &a.images {
        match store.untag(q) {
            Ok(Some(rec)) => println!("Deleted: {}", rec.id),
            Ok(None) => println!("Untagged: {q}"),
            Err(e) => {
                eprintln!("podctl: {e}");
                failed = true;
            }
        }
    }
    if failed {
        anyhow::bail!("some images could not be removed");
    }
    Ok(())
}
