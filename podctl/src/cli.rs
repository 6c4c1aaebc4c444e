//! Command-line surface.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::images_cmd;

/// podctl: run Kubernetes pods with or without a cluster.
#[derive(Parser, Debug)]
#[command(name = "podctl", version, about)]
pub struct Cli {
    /// Persistent state (images, snapshots).
    #[arg(
        long,
        global = true,
        env = "PODCTL_ROOT",
        default_value = "/var/lib/podctl"
    )]
    pub root: PathBuf,
    /// Registry hosts configuration (TOML: mirrors, insecure hosts, auths).
    #[arg(long, global = true, env = "PODCTL_REGISTRY_CONFIG")]
    pub registry_config: Option<PathBuf>,
    /// Log filter (tracing env-filter syntax); PODCTL_LOG overrides.
    #[arg(long, global = true, default_value = "warn")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Pull an image.
    Pull(images_cmd::PullArgs),
    /// List images.
    Images(images_cmd::ImagesArgs),
    /// Remove images (a tag, or an ID with all its tags).
    Rmi(images_cmd::RmiArgs),
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = images_cmd::Context {
        root: cli.root.clone(),
        registry_config: cli.registry_config.clone(),
    };
    match cli.command {
        Command::Pull(a) => images_cmd::pull(&ctx, a).await,
        Command::Images(a) => images_cmd::images(&ctx, a),
        Command::Rmi(a) => images_cmd::rmi(&ctx, a),
    }
}
