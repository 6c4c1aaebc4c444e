//! Attaching the streaming server (Exec, Attach, PortForward) to the CRI
//! service: it listens on the configured `stream_address` and serves the
//! runtime through [`podctl_cri::RuntimeBackend`].

use anyhow::Context as _;
use podctl_cri::stream::StreamServer;
use podctl_cri::{CriService, RuntimeBackend};

pub async fn start(svc: &CriService) -> anyhow::Result<()> {
    let cfg = svc.config();
    let server = StreamServer::start(
        cfg.stream_address,
        cfg.stream_base_url.clone(),
        RuntimeBackend::new(svc.clone()),
    )
    .await
    .with_context(|| format!("streaming server on {}", cfg.stream_address))?;
    svc.set_stream_server(server);
    Ok(())
}
