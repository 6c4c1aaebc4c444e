//! Command-line surface.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::{
    docs, images_cmd, info, listing, node_cmd, pods, restore, revive, run as run_cmd, serve,
    supervise,
};

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
    /// Volatile runtime state (containers, sandboxes, pods).
    #[arg(
        long,
        global = true,
        env = "PODCTL_STATE_DIR",
        default_value = "/run/podctl"
    )]
    pub state_dir: PathBuf,
    /// CNI network configuration directory (a default bridge network is
    /// written there when it has none).
    #[arg(
        long,
        global = true,
        env = "PODCTL_CNI_CONF_DIR",
        default_value = "/etc/podctl/cni"
    )]
    pub cni_conf_dir: PathBuf,
    /// Where container logs go (`<root>/<ns>_<pod>_<uid>/<container>/0.log`).
    #[arg(
        long,
        global = true,
        env = "PODCTL_LOG_ROOT",
        default_value = "/var/log/pods"
    )]
    pub log_root: PathBuf,
    /// Log filter (tracing env-filter syntax); PODCTL_LOG overrides.
    /// Defaults to `warn`, or the daemon configuration's `log_level`.
    #[arg(long, global = true)]
    pub log_level: Option<String>,
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
    /// Run the Pods of a manifest.
    Run(run_cmd::RunArgs),
    /// List pods (`-o yaml` prints Kubernetes Pods with their status).
    Pods(listing::PodsArgs),
    /// List containers.
    Ps(listing::PsArgs),
    /// Print a container's log.
    Logs(pods::LogsArgs),
    /// Run a command in a pod's container: `podctl exec POD [-c C] -- CMD...`.
    Exec(pods::ExecArgs),
    /// Stop pods (SIGTERM, then SIGKILL after --timeout).
    Stop(pods::PodArgs),
    /// Stop and remove pods.
    Rm(pods::PodArgs),
    /// Start again the pods a reboot took down (those with restartPolicy
    /// Always or OnFailure that were not stopped); run at boot by
    /// podctl-restore.service.
    Restore(restore::RestoreArgs),
    /// Keep one standalone pod (started by `podctl run`; internal).
    #[command(hide = true)]
    Supervise { dir: PathBuf },
    /// Serve the CRI (RuntimeService, ImageService) on a unix socket.
    #[command(alias = "daemon")]
    Serve(serve::ServeArgs),
    /// Join a Kubernetes cluster as a node, in place of the kubelet.
    Node(Box<node_cmd::NodeArgs>),
    /// Check that this machine has what podctl needs (shim, CNI, cgroups,
    /// overlayfs, kernel features, configuration); each line ok or a fix.
    #[command(alias = "check")]
    Info(info::InfoArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion(docs::CompletionArgs),
    /// Write podctl's man pages into a directory (packaging).
    #[command(hide = true)]
    Man(docs::ManArgs),
}

impl Cli {
    /// The log filter to start with.
    pub fn log_level(&self) -> String {
        if let Some(l) = &self.log_level {
            return l.clone();
        }
        match &self.command {
            Command::Serve(a) => a
                .load()
                .map(|c| c.log_level)
                .unwrap_or_else(|_| "info".into()),
            Command::Node(a) => a
                .serve
                .load()
                .map(|c| c.log_level)
                .unwrap_or_else(|_| "info".into()),
            Command::Supervise { .. } => "info".into(),
            _ => "warn".into(),
        }
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = images_cmd::Context {
        root: cli.root.clone(),
        registry_config: cli.registry_config.clone(),
    };
    let pctx = pods::PodContext {
        images: images_cmd::Context {
            root: cli.root.clone(),
            registry_config: cli.registry_config.clone(),
        },
        state_dir: cli.state_dir.clone(),
        cni_conf_dir: cli.cni_conf_dir.clone(),
        log_root: cli.log_root.clone(),
    };
    // Pods that lost their supervisor get a new one (`pods` does it itself,
    // to show them as Unknown meanwhile).
    if matches!(
        cli.command,
        Command::Run(_) | Command::Ps(_) | Command::Logs(_) | Command::Exec(_)
    ) {
        revive::revive_orphans(&pctx);
    }
    match cli.command {
        Command::Pull(a) => images_cmd::pull(&ctx, a).await,
        Command::Images(a) => images_cmd::images(&ctx, a),
        Command::Rmi(a) => images_cmd::rmi(&ctx, a),
        Command::Run(a) => run_cmd::run(&pctx, a).await,
        Command::Pods(a) => listing::pods(&pctx, a).await,
        Command::Supervise { dir } => supervise::supervise(&pctx, dir).await,
        Command::Ps(a) => listing::ps(&pctx, a).await,
        Command::Logs(a) => pods::logs(&pctx, a).await,
        Command::Exec(a) => {
            let code = pods::exec(&pctx, a).await?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Command::Stop(a) => pods::stop(&pctx, a).await,
        Command::Rm(a) => pods::rm(&pctx, a).await,
        Command::Restore(a) => restore::restore(&pctx, a).await,
        Command::Serve(a) => serve::serve(a).await,
        Command::Node(a) => node_cmd::node(*a, cli.log_root.clone()).await,
        Command::Info(a) => info::info(&pctx, a),
        Command::Completion(a) => docs::completion(a),
        Command::Man(a) => docs::man(a),
    }
}
