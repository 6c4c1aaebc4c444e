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
use super::websocket;

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

fn wants_websocket(req: &Request<Body>) -> bool {
    req.headers()
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn want_of(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Want {
    Want {
        stdin,
        stdout,
        stderr,
        tty,
    }
}

/// Answer a WebSocket handshake (RFC 6455) with the first sub-protocol of
/// ours the client offers, then serve the request on the socket.
fn websocket_upgrade(
    mut req: Request<Body>,
    pending: Pending,
    backend: Arc<dyn StreamBackend>,
) -> Response<Full<Bytes>> {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let Some(key) = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| k.as_bytes().to_vec())
    else {
        return plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    let ours = match pending {
        Pending::PortForward(_) => websocket::PORTFORWARD,
        _ => websocket::REMOTECOMMAND,
    };
    let offered: Vec<String> = req
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let Some(protocol) = ours
        .iter()
        .copied()
        .find(|p| offered.iter().any(|o| o == p))
    else {
        return plain(
            StatusCode::FORBIDDEN,
            &format!(
                "no supported Sec-WebSocket-Protocol; supported: {}",
                ours.join(", ")
            ),
        );
    };
    let ports: Vec<u16> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| {
            kv.strip_prefix("port=")
                .or_else(|| kv.strip_prefix("ports="))
        })
        .flat_map(|v| {
            v.split(',')
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u16>>()
        })
        .collect();
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::warn!(error = %e, "streaming: websocket upgrade failed");
                return;
            }
        };
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        match pending {
            Pending::Exec(r) => {
                let want = want_of(r.stdin, r.stdout, r.stderr, r.tty);
                let b = backend.clone();
                websocket::serve_remotecommand(ws, protocol, want, move |io| {
                    b.exec(r.container_id, r.cmd, io)
                })
                .await;
            }
            Pending::Attach(r) => {
                let want = want_of(r.stdin, r.stdout, r.stderr, r.tty);
                let b = backend.clone();
                websocket::serve_remotecommand(ws, protocol, want, move |io| {
                    let f = b.attach(r.container_id, io);
                    Box::pin(async move { f.await.map(|()| 0) })
                })
                .await;
            }
            Pending::PortForward(r) if protocol == websocket::TUNNEL_PORTFORWARD => {
                let (conn, incoming) = Connection::start(websocket::Tunnel::new(ws));
                portforward::serve(conn, incoming, backend, r.pod_sandbox_id).await;
            }
            Pending::PortForward(r) => {
                let ports = if ports.is_empty() {
                    r.port
                        .iter()
                        .filter_map(|p| u16::try_from(*p).ok())
                        .collect()
                } else {
                    ports
                };
                websocket::serve_portforward(ws, ports, backend, r.pod_sandbox_id).await;
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
        hyper::header::HeaderValue::from_static("websocket"),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(&derive_accept_key(&key)) {
        h.insert("Sec-WebSocket-Accept", v);
    }
    h.insert(
        "Sec-WebSocket-Protocol",
        hyper::header::HeaderValue::from_static(protocol),
    );
    resp
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
    if wants_websocket(&req) {
        return Ok(websocket_upgrade(req, pending, backend));
    }
    if !wants_spdy(&req) {
        return Ok(plain(
            StatusCode::BAD_REQUEST,
            "upgrade required: SPDY/3.1 or websocket (Connection: Upgrade)",
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
