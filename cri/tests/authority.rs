//! gRPC over the CRI socket as clients of the kubelet's age speak it: the
//! socket path (or its percent-encoding, or nothing) as `:authority`.
//! The client here writes HTTP/2 frames by hand so that it can send what
//! no current Rust client would.

use std::path::Path;
use std::time::Duration;

use podctl_cri::{proto, server, CriConfig, CriService};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

async fn read_frame(s: &mut UnixStream) -> Frame {
    let mut h = [0u8; 9];
    ok(s.read_exact(&mut h).await);
    let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
    let mut payload = vec![0u8; len];
    ok(s.read_exact(&mut payload).await);
    Frame {
        kind: h[3],
        flags: h[4],
        stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        payload,
    }
}

/// What one unary call answered: response headers, message, trailers.
#[derive(Default)]
struct Answer {
    headers: Vec<(String, String)>,
    message: Vec<u8>,
    trailers: Vec<(String, String)>,
}

fn text(h: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(String, String)> {
    h.into_iter()
        .map(|(n, v)| {
            (
                String::from_utf8_lossy(&n).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect()
}

/// Call RuntimeService/Version `n` times on one connection with the
/// given `:authority` (HPACK with incremental indexing, as clients do).
async fn versions(socket: &Path, authority: &[u8], n: u32) -> Vec<Answer> {
    let mut s = ok(UnixStream::connect(socket).await);
    let mut enc = loona_hpack::Encoder::new();
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    let msg = proto::VersionRequest {
        version: "0.1.0".into(),
    }
    .encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(&msg);
    for i in 0..n {
        let stream = 1 + 2 * i;
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/runtime.v1.RuntimeService/Version"),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
            (b"user-agent", b"grpc-go/1.40.0"),
            (b"te", b"trailers"),
        ];
        out.extend(frame(HEADERS, END_HEADERS, stream, &enc.encode(headers)));
        out.extend(frame(DATA, END_STREAM, stream, &body));
    }
    ok(s.write_all(&out).await);

    let mut dec = loona_hpack::Decoder::new();
    let mut answers: Vec<Answer> = (0..n).map(|_| Answer::default()).collect();
    let mut done = 0;
    let mut block = Vec::new();
    while done < n {
        let f = ok(tokio::time::timeout(Duration::from_secs(10), read_frame(&mut s)).await);
        let idx = (f.stream.saturating_sub(1) / 2) as usize;
        match f.kind {
            SETTINGS if f.flags & ACK == 0 => ok(s.write_all(&frame(SETTINGS, ACK, 0, &[])).await),
            HEADERS | CONTINUATION => {
                block.extend_from_slice(&f.payload);
                if f.flags & END_HEADERS != 0 {
                    let h = text(ok(dec.decode(&block).map_err(|e| format!("{e:?}"))));
                    block.clear();
                    let a = &mut answers[idx];
                    if a.headers.is_empty() {
                        a.headers = h;
                    } else {
                        a.trailers = h;
                    }
                }
                if f.flags & END_STREAM != 0 {
                    done += 1;
                }
            }
            DATA => {
                answers[idx].message.extend_from_slice(&f.payload);
                if f.flags & END_STREAM != 0 {
                    done += 1;
                }
            }
            RST_STREAM => panic!("stream {} reset with error code {:?}", f.stream, f.payload),
            GOAWAY => panic!("GOAWAY {:?}", f.payload),
            _ => {}
        }
    }
    answers
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

#[test]
fn requests_with_a_socket_path_authority_are_answered() {
    let dir = ok(tempfile::tempdir());
    let d = dir.path();
    let cfg = CriConfig {
        socket: d.join("podctl.sock"),
        root: d.join("root"),
        state: d.join("state"),
        ..Default::default()
    };
    let socket = cfg.socket.clone();
    let rt = ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build());
    rt.block_on(async {
        let svc = ok(CriService::new(cfg));
        let listener = ok(server::bind(&socket));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let srv = tokio::spawn(server::serve(svc, listener, async move {
            let _ = stopped.await;
        }));
        let path = socket.display().to_string();
        let encoded = path.replace('/', "%2F");
        for authority in [path.as_str(), encoded.as_str(), "", "localhost"] {
            let answers = versions(&socket, authority.as_bytes(), 3).await;
            for a in answers {
                assert_eq!(header(&a.headers, ":status"), Some("200"), "{authority:?}");
                assert_eq!(
                    header(&a.trailers, "grpc-status").or(header(&a.headers, "grpc-status")),
                    Some("0"),
                    "{authority:?}: {:?} {:?}",
                    a.headers,
                    a.trailers
                );
                assert!(a.message.len() > 5, "{authority:?}: no message");
                let v = ok(proto::VersionResponse::decode(&a.message[5..]));
                assert_eq!(v.runtime_name, "podctl");
                assert_eq!(v.runtime_api_version, "v1");
            }
        }
        let _ = stop.send(());
        ok(ok(srv.await));
    });
}
