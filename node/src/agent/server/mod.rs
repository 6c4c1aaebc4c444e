//! The kubelet API on :10250 over TLS: `/healthz`, `/pods`,
//! `/containerLogs`, `/exec`, `/attach`, `/portForward`,
//! `/stats/summary`, `/metrics`. Callers are authenticated by client
//! certificate or TokenReview and authorized by SubjectAccessReview.

mod auth;
mod logs;
mod stats;
mod stream;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use podctl_cri::proto;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tonic::Request as CriRequest;

use super::pods::PodView;
use crate::cri::Cri;
use crate::error::{NodeError, Result};
pub use auth::User;

pub type Body = BoxBody<Bytes, Infallible>;

pub(crate) fn empty() -> Body {
    Full::new(Bytes::new()).boxed()
}

/// A response with `body` and its content type.
fn respond(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

const TEXT: &str = "text/plain; charset=utf-8";

pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    respond(status, TEXT, Full::new(body.into()).boxed())
}

fn json(v: &impl serde::Serialize) -> Response<Body> {
    match serde_json::to_vec(v) {
        Ok(b) => respond(
            StatusCode::OK,
            "application/json",
            Full::new(Bytes::from(b)).boxed(),
        ),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Where the API listens and its TLS files.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub addr: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA for client certificates (the API server's kubelet client cert);
    /// without it only bearer tokens authenticate.
    pub client_ca: Option<PathBuf>,
}

/// What the handlers need.
pub struct Kubelet<C: Cri> {
    pub cri: C,
    pub client: Client,
    pub node: String,
    /// The node's root dir: its filesystem is the summary's node `fs`.
    pub root: PathBuf,
    pub pods: PodView,
}

fn server_err(reason: String) -> NodeError {
    NodeError::Server { reason }
}

fn tls(cfg: &ServerConfig) -> Result<rustls::ServerConfig> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| server_err(format!("{}: {e}", p.display())));
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &read(&cfg.cert)?[..])
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| server_err(format!("{}: {e}", cfg.cert.display())))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &read(&cfg.key)?[..])
        .map_err(|e| server_err(format!("{}: {e}", cfg.key.display())))?
        .ok_or_else(|| server_err(format!("{}: no private key", cfg.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| server_err(e.to_string()))?;
    let builder = match &cfg.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut &read(ca)?[..]) {
                let c = c.map_err(|e| server_err(format!("{}: {e}", ca.display())))?;
                roots
                    .add(c)
                    .map_err(|e| server_err(format!("{}: {e}", ca.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| server_err(format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut c = builder
        .with_single_cert(certs, key)
        .map_err(|e| server_err(format!("{}: {e}", cfg.cert.display())))?;
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(c)
}

/// Bind and serve until the task is dropped.
pub async fn serve<C: Cri>(k: Arc<Kubelet<C>>, cfg: ServerConfig) -> Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(tls(&cfg)?));
    let listener = TcpListener::bind(cfg.addr)
        .await
        .map_err(|e| server_err(format!("bind {}: {e}", cfg.addr)))?;
    tracing::info!(addr = %cfg.addr, "kubelet API listening");
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let k = k.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake");
                    return;
                }
            };
            let cert_user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| auth::from_certificate(c));
            let svc = hyper::service::service_fn(move |req| {
                let k = k.clone();
                let user = cert_user.clone();
                async move { Ok::<_, Infallible>(handle(k, user, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, error = %e, "kubelet API connection");
            }
        });
    }
}

fn query(req: &Request<Incoming>) -> HashMap<String, Vec<String>> {
    let mut q: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        q.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    q
}

async fn handle<C: Cri>(
    k: Arc<Kubelet<C>>,
    cert_user: Option<User>,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    tracing::debug!(method = %req.method(), uri = %req.uri(), upgrade = ?req.headers().get(hyper::header::UPGRADE), "kubelet API request");
    let parts: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    if parts == ["healthz"] {
        return text(StatusCode::OK, "ok");
    }
    let user = match cert_user {
        Some(u) => u,
        None => {
            let token = req
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_string);
            match token {
                Some(t) => match auth::from_token(&k.client, &t).await {
                    Some(u) => u,
                    None => return text(StatusCode::UNAUTHORIZED, "Unauthorized"),
                },
                None => return text(StatusCode::UNAUTHORIZED, "Unauthorized"),
            }
        }
    };
    let verb = auth::verb(req.method());
    let sub = auth::subresource(&path);
    if !auth::allowed(&k.client, &user, &k.node, verb, sub).await {
        return text(
            StatusCode::FORBIDDEN,
            format!(
                "Forbidden (user={}, verb={verb}, resource=nodes, subresource={sub})",
                user.name
            ),
        );
    }
    let p: Vec<&str> = parts.iter().map(String::as_str).collect();
    match p.as_slice() {
        ["pods"] => {
            let items: Vec<Pod> = k.pods().into_values().collect();
            json(&serde_json::json!({
                "kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items,
            }))
        }
        ["stats", "summary"] => json(&stats::summary(&k.cri, &k.node, &k.root, &k.pods()).await),
        ["metrics"] => text(StatusCode::OK, stats::metrics(&k.pods())),
        ["containerLogs", ns, pod, container] => k.logs(ns, pod, container, &query(&req)).await,
        ["exec", ns, pod, container] | ["exec", ns, pod, _, container] => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            k.stream(req, Streaming::Exec, &ns, &pod, &container).await
        }
        ["attach", ns, pod, container] | ["attach", ns, pod, _, container] => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            k.stream(req, Streaming::Attach, &ns, &pod, &container)
                .await
        }
        ["portForward", ns, pod] | ["portForward", ns, pod, _] => {
            let (ns, pod) = (ns.to_string(), pod.to_string());
            k.port_forward(req, &ns, &pod).await
        }
        _ => text(StatusCode::NOT_FOUND, format!("404 page not found: {path}")),
    }
}

/// Which streaming call a path asks for.
#[derive(Clone, Copy)]
enum Streaming {
    Exec,
    Attach,
}

fn no_container(ns: &str, pod: &str, container: &str) -> Response<Body> {
    text(
        StatusCode::NOT_FOUND,
        format!("container {container} of pod {ns}/{pod} not found"),
    )
}

fn flag(q: &HashMap<String, Vec<String>>, k: &str) -> bool {
    q.get(k)
        .and_then(|v| v.first())
        .is_some_and(|v| v == "1" || v == "true")
}

impl<C: Cri> Kubelet<C> {
    fn pods(&self) -> std::collections::BTreeMap<String, Pod> {
        super::pods::lock(&self.pods).clone()
    }

    fn pod(&self, ns: &str, name: &str) -> Option<Pod> {
        self.pods().into_values().find(|p| {
            p.metadata.name.as_deref() == Some(name)
                && p.metadata.namespace.as_deref().unwrap_or("default") == ns
        })
    }

    /// The runtime's ID of a container of a pod (its previous instance
    /// with `previous`).
    fn container_id(&self, ns: &str, pod: &str, name: &str, previous: bool) -> Option<String> {
        let p = self.pod(ns, pod)?;
        let st = p.status?;
        let all = st
            .container_statuses
            .unwrap_or_default()
            .into_iter()
            .chain(st.init_container_statuses.unwrap_or_default());
        let cs = all.into_iter().find(|c| c.name == name)?;
        let id = if previous {
            cs.last_state?.terminated?.container_id?
        } else {
            cs.container_id?
        };
        Some(
            id.strip_prefix(crate::status::ID_PREFIX)
                .unwrap_or(&id)
                .to_string(),
        )
    }

    async fn logs(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        q: &HashMap<String, Vec<String>>,
    ) -> Response<Body> {
        let o = logs::LogOptions::from_query(q);
        let Some(id) = self.container_id(ns, pod, container, o.previous) else {
            return no_container(ns, pod, container);
        };
        let st = match self
            .cri
            .container_status(CriRequest::new(proto::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            }))
            .await
        {
            Ok(r) => r.into_inner().status.unwrap_or_default(),
            Err(s) => return text(StatusCode::NOT_FOUND, s.message().to_string()),
        };
        let path = PathBuf::from(&st.log_path);
        if !o.follow {
            return match logs::read_all(&path, &o) {
                Ok(s) => respond(StatusCode::OK, TEXT, logs::flushed_body(s)),
                Err(e) => text(StatusCode::NOT_FOUND, format!("{}: {e}", path.display())),
            };
        }
        let cri = self.cri.clone();
        let running = move || -> futures::future::BoxFuture<'static, bool> {
            let cri = cri.clone();
            let id = id.clone();
            Box::pin(async move {
                cri.container_status(CriRequest::new(proto::ContainerStatusRequest {
                    container_id: id,
                    verbose: false,
                }))
                .await
                .map(|r| {
                    r.into_inner()
                        .status
                        .is_some_and(|s| s.state == proto::ContainerState::ContainerRunning as i32)
                })
                .unwrap_or(false)
            })
        };
        let rx = logs::follow(path, o, running);
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
        });
        respond(
            StatusCode::OK,
            TEXT,
            BodyExt::boxed(StreamBody::new(SyncStream(stream.boxed()))),
        )
    }

    /// `/exec` and `/attach`: the CRI call for a streaming URL, then the
    /// caller's upgrade replayed there.
    async fn stream(
        &self,
        req: Request<Incoming>,
        kind: Streaming,
        ns: &str,
        pod: &str,
        container: &str,
    ) -> Response<Body> {
        let q = query(&req);
        let Some(id) = self.container_id(ns, pod, container, false) else {
            return no_container(ns, pod, container);
        };
        let (tty, stdin) = (flag(&q, "tty"), flag(&q, "input") || flag(&q, "stdin"));
        let stdout = flag(&q, "output") || flag(&q, "stdout");
        let stderr = flag(&q, "error") || flag(&q, "stderr");
        let url = match kind {
            Streaming::Exec => self
                .cri
                .exec(CriRequest::new(proto::ExecRequest {
                    container_id: id,
                    cmd: q.get("command").cloned().unwrap_or_default(),
                    tty,
                    stdin,
                    stdout,
                    stderr,
                }))
                .await
                .map(|r| r.into_inner().url),
            Streaming::Attach => self
                .cri
                .attach(CriRequest::new(proto::AttachRequest {
                    container_id: id,
                    tty,
                    stdin,
                    stdout,
                    stderr,
                }))
                .await
                .map(|r| r.into_inner().url),
        };
        match url {
            Ok(url) => stream::proxy(req, &url).await,
            Err(s) => text(StatusCode::BAD_REQUEST, s.message().to_string()),
        }
    }

    async fn port_forward(&self, req: Request<Incoming>, ns: &str, pod: &str) -> Response<Body> {
        let uid = self
            .pod(ns, pod)
            .and_then(|p| p.metadata.uid)
            .unwrap_or_default();
        let filter = proto::PodSandboxFilter {
            label_selector: [(crate::cri::POD_UID_LABEL.to_string(), uid)].into(),
            state: Some(proto::PodSandboxStateValue {
                state: proto::PodSandboxState::SandboxReady as i32,
            }),
            ..Default::default()
        };
        let sandbox = self
            .cri
            .list_pod_sandbox(CriRequest::new(proto::ListPodSandboxRequest {
                filter: Some(filter),
            }))
            .await
            .ok()
            .and_then(|r| r.into_inner().items.into_iter().next());
        let Some(sb) = sandbox else {
            return text(StatusCode::NOT_FOUND, format!("pod {ns}/{pod} not found"));
        };
        let ports = query(&req)
            .get("port")
            .map(|v| v.iter().filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_default();
        match self
            .cri
            .port_forward(CriRequest::new(proto::PortForwardRequest {
                pod_sandbox_id: sb.id,
                port: ports,
            }))
            .await
        {
            Ok(r) => stream::proxy(req, &r.into_inner().url).await,
            Err(s) => text(StatusCode::BAD_REQUEST, s.message().to_string()),
        }
    }
}

/// A `Send` stream made `Sync` for the boxed body (it is only ever polled
/// through `&mut`).
pub(crate) struct SyncStream<S>(pub(crate) S);

// SAFETY: `SyncStream` exposes no `&self` access to the inner stream: it is
// only polled through `Pin<&mut Self>`, so sharing `&SyncStream` across
// threads cannot touch `S` concurrently.
unsafe impl<S: Send> Sync for SyncStream<S> {}

impl<S: futures::Stream + Unpin> futures::Stream for SyncStream<S> {
    type Item = S::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        std::pin::Pin::new(&mut self.0).poll_next(cx)
    }
}
