//! `/exec`, `/attach`, `/portForward`: the CRI call gives a streaming
//! server URL; the caller's upgrade request (SPDY/3.1 or WebSocket, as the
//! API server relays it) is replayed there and, once both sides switched
//! protocols, bytes are spliced between them.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HOST};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{text, Body};

/// Replay `req` at `url` (the runtime's streaming server) and splice.
pub async fn proxy(mut req: Request<Incoming>, url: &str) -> Response<Body> {
    match forward(&mut req, url).await {
        Ok(r) => r,
        Err(e) => text(
            StatusCode::BAD_GATEWAY,
            format!("streaming server {url}: {e}"),
        ),
    }
}

async fn forward(req: &mut Request<Incoming>, url: &str) -> Result<Response<Body>, String> {
    let uri: Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let host = uri.host().ok_or("URL without host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let mut path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    if uri.query().is_none() {
        if let Some(q) = req.uri().query() {
            path = format!("{path}?{q}");
        }
    }
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "streaming upstream connection");
        }
    });
    let mut out = Request::builder()
        .method(req.method().clone())
        .uri(path)
        .header(HOST, format!("{host}:{port}"));
    for (k, v) in req.headers() {
        if k != HOST && k != AUTHORIZATION {
            out = out.header(k, v);
        }
    }
    let out = out.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let client_upgrade = hyper::upgrade::on(req);
    let mut resp = sender.send_request(out).await.map_err(|e| e.to_string())?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Ok(text(status, String::from_utf8_lossy(&body).into_owned()));
    }
    let mut answer = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for (k, v) in resp.headers() {
        answer = answer.header(k, v);
    }
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        let (c, u) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "stream upgrade");
                return;
            }
        };
        let (mut c, mut u) = (TokioIo::new(c), TokioIo::new(u));
        if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
            tracing::debug!(error = %e, "stream ended");
        }
    });
    answer.body(super::empty()).map_err(|e| e.to_string())
}
