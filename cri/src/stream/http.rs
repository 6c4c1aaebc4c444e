//! The streaming server's HTTP side: `/exec/{token}`, `/attach/{token}`,
//! `/portforward/{token}`, upgraded to SPDY/3.1 with the sub-protocol
//! negotiated through `X-Stream-Protocol-Version`.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming as Body};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::backend::StreamBackend;
use super::portforward;
use super::remotecommand::{self, Want};
use super::spdy::Connection;
use super::token::{Pending, Tokens};

fn plain(code: StatusCode, msg: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(msg.to_string())));
    *r.status_mut() = code;
    r
}

/// The first protocol of ours the client offers.
fn negotiate(req: &Request<Body>, ours: &[&'static str]) -> Option<&'static str> {
    let offered: Vec<String> = req
        .headers()
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    ours.iter()
        .copied()
        .find(|p| offered.iter().any(|o| o == p))
}

fn wants_spdy(req: &Request<Body>) -> bool {
    req.headers()
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("spdy/3.1"))
}

pub async fn handle(
    mut req: Request<Body>,
    tokens: Arc<Tokens>,
    backend: Arc<dyn StreamBackend>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (kind, token) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !matches!(kind, "exec" | "attach" | "portforward") {
        return Ok(plain(StatusCode::NOT_FOUND, "not found"));
    }
    let Some(pending) = tokens.take(token) else {
        return Ok(plain(StatusCode::NOT_FOUND, "unknown or expired token"));
    };
    let matches_kind = matches!(
        (kind, &pending),
        ("exec", Pending::Exec(_))
            | ("attach", Pending::Attach(_))
            | ("portforward", Pending::PortForward(_))
    );
    if !matches_kind {
        return Ok(plain(
            StatusCode::NOT_FOUND,
            "token is for another kind of request",
        ));
    }
    if !wants_spdy(&req) {
        return Ok(plain(
            StatusCode::BAD_REQUEST,
            "upgrade to SPDY/3.1 required (Connection: Upgrade, Upgrade: SPDY/3.1)",
        ));
    }
    let ours: &[&'static str] = if kind == "portforward" {
        &[portforward::PROTOCOL]
    } else {
        remotecommand::PROTOCOLS
    };
    let Some(protocol) = negotiate(&req, ours) else {
        return Ok(plain(
            StatusCode::FORBIDDEN,
            &format!(
                "no supported X-Stream-Protocol-Version; supported: {}",
                ours.join(", ")
            ),
        ));
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::warn!(error = %e, "streaming: upgrade failed");
                return;
            }
        };
        let (conn, incoming) = Connection::start(io);
        match pending {
            Pending::Exec(r) => {
                let want = Want {
                    stdin: r.stdin,
                    stdout: r.stdout,
                    stderr: r.stderr,
                    tty: r.tty,
                };
                let b = backend.clone();
                remotecommand::serve(conn, incoming, protocol, want, move |io| {
                    b.exec(r.container_id, r.cmd, io)
                })
                .await;
            }
            Pending::Attach(r) => {
                let want = Want {
                    stdin: r.stdin,
                    stdout: r.stdout,
                    stderr: r.stderr,
                    tty: r.tty,
                };
                let b = backend.clone();
                remotecommand::serve(conn, incoming, protocol, want, move |io| {
                    let f = b.attach(r.container_id, io);
                    Box::pin(async move { f.await.map(|()| 0) })
                })
                .await;
            }
            Pending::PortForward(r) => {
                portforward::serve(conn, incoming, backend, r.pod_sandbox_id).await;
            }
        }
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        hyper::header::UPGRADE,
        hyper::header::HeaderValue::from_static("SPDY/3.1"),
    );
    h.insert(
        "X-Stream-Protocol-Version",
        hyper::header::HeaderValue::from_static(protocol),
    );
    Ok(resp)
}
