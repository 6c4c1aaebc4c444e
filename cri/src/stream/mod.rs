//! The CRI streaming server (Exec, Attach, PortForward): the CRI calls
//! return a URL with a one-time token; the client (crictl, critest, the
//! kubelet's proxy) connects there and upgrades to SPDY/3.1. See
//! [`backend`] for what it needs from the runtime.

pub mod backend;
mod http;
mod portforward;
pub(crate) mod remotecommand;
pub mod spdy;
mod token;
pub(crate) mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub use backend::{BackendError, Duplex, StreamBackend, StreamIo, TermSize};

use crate::proto;
use crate::service::StreamUrls;
use token::{Pending, Tokens};

/// The running server: hands out URLs, serves them.
pub struct StreamServer {
    base: String,
    tokens: Arc<Tokens>,
}

impl StreamServer {
    /// Listen on `addr`; URLs start with `base_url` (default
    /// `http://<bound address>`).
    pub async fn start(
        addr: SocketAddr,
        base_url: Option<String>,
        backend: Arc<dyn StreamBackend>,
    ) -> std::io::Result<Arc<StreamServer>> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let base = base_url
            .unwrap_or_else(|| format!("http://{local}"))
            .trim_end_matches('/')
            .to_string();
        let tokens = Arc::new(Tokens::default());
        let t = tokens.clone();
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let (t, b) = (t.clone(), backend.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| http::handle(req, t.clone(), b.clone()));
                    if let Err(e) = http1::Builder::new()
                        .serve_connection(TokioIo::new(sock), svc)
                        .with_upgrades()
                        .await
                    {
                        tracing::debug!(error = %e, "streaming connection");
                    }
                });
            }
        });
        tracing::info!(url = %base, "streaming server listening");
        Ok(Arc::new(StreamServer { base, tokens }))
    }

    fn url(&self, kind: &str, p: Pending) -> Result<String, tonic::Status> {
        match self.tokens.insert(p) {
            Ok(Some(t)) => Ok(format!("{}/{kind}/{t}", self.base)),
            Ok(None) => Err(tonic::Status::resource_exhausted(
                "too many pending streaming requests",
            )),
            Err(e) => Err(tonic::Status::internal(format!("token: {e}"))),
        }
    }
}

fn check_streams(
    id: &str,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
) -> Result<(), tonic::Status> {
    if id.is_empty() {
        return Err(tonic::Status::invalid_argument("container_id is empty"));
    }
    if !(stdin || stdout || stderr) {
        return Err(tonic::Status::invalid_argument(
            "one of stdin, stdout or stderr must be set",
        ));
    }
    if tty && stderr {
        return Err(tonic::Status::invalid_argument(
            "tty and stderr cannot both be set",
        ));
    }
    Ok(())
}

impl StreamUrls for StreamServer {
    fn get_exec(&self, r: &proto::ExecRequest) -> Result<proto::ExecResponse, tonic::Status> {
        check_streams(&r.container_id, r.stdin, r.stdout, r.stderr, r.tty)?;
        if r.cmd.is_empty() {
            return Err(tonic::Status::invalid_argument("cmd is empty"));
        }
        Ok(proto::ExecResponse {
            url: self.url("exec", Pending::Exec(r.clone()))?,
        })
    }

    fn get_attach(&self, r: &proto::AttachRequest) -> Result<proto::AttachResponse, tonic::Status> {
        check_streams(&r.container_id, r.stdin, r.stdout, r.stderr, r.tty)?;
        Ok(proto::AttachResponse {
            url: self.url("attach", Pending::Attach(r.clone()))?,
        })
    }

    fn get_port_forward(
        &self,
        r: &proto::PortForwardRequest,
    ) -> Result<proto::PortForwardResponse, tonic::Status> {
        if r.pod_sandbox_id.is_empty() {
            return Err(tonic::Status::invalid_argument("pod_sandbox_id is empty"));
        }
        Ok(proto::PortForwardResponse {
            url: self.url("portforward", Pending::PortForward(r.clone()))?,
        })
    }
}
