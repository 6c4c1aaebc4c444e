//! `podctl serve`: the CRI daemon on a unix socket.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use podctl_cri::{server, CriConfig, CriService};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Daemon configuration (TOML); built-in defaults when absent.
    #[arg(long, short, env = "PODCTL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Socket to serve on (overrides the configuration's `socket`).
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

impl ServeArgs {
    pub fn load(&self) -> anyhow::Result<CriConfig> {
        let mut cfg = match &self.config {
            Some(p) => CriConfig::load(p)?,
            None => CriConfig::default(),
        };
        if let Some(s) = &self.socket {
            cfg.socket = s.clone();
        }
        Ok(cfg)
    }
}

/// How long a stopping daemon waits for clients to close their
/// connections (a kubelet's stays open; one that is never read would
/// otherwise hold `systemctl stop` until systemd kills the daemon).
const DRAIN: Duration = Duration::from_secs(5);

pub async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let cfg = a.load()?;
    let socket = cfg.socket.clone();
    let svc = CriService::new(cfg).context("opening the runtime and image store")?;
    svc.watch_state();
    crate::stream::start(&svc).await?;
    svc.collect_periodically();
    svc.start_nri().context("starting NRI")?;
    let listener = server::bind(&socket)?;
    let _socket = server::SocketFile::new(&socket);
    let runtime = svc.runtime().clone();
    tracing::info!(socket = %socket.display(), "serving CRI");
    let (stopping_tx, stopping) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown_signal().await;
        let _ = stopping_tx.send(());
    };
    let server = server::serve(svc, listener, shutdown);
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r?,
        _ = async {
            if stopping.await.is_ok() {
                tokio::time::sleep(DRAIN).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!(after = ?DRAIN, "clients still connected; stopping without them");
        }
    }
    runtime.remove_cgroup_parent_if_empty();
    tracing::info!("CRI server stopped");
    Ok(())
}

pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; serving until killed");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
    }
}
