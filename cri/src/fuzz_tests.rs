//! Fuzz targets of the parsers that read what CRI and streaming clients
//! send (see `podctl_tests::fuzz`; seeds in `tests/fuzz/<target>/`).

use bytes::BytesMut;
use podctl_tests::fuzz;

use crate::authority::AuthorityFix;
use crate::stream::spdy::{Frame, HeaderCodec};

/// A client's HTTP/2 bytes through the `:authority` fixer, cut into two
/// reads: it may pass, rewrite or give up, never panic; a connection it
/// never rewrote comes out byte for byte as it came in.
#[test]
fn fuzz_h2_authority() {
    let tokens: &[&[u8]] = &[
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x00\x00\x00\x01\x04\x00\x00\x00\x01",
        b"\x00\x00\x00\x09\x00\x00\x00\x00\x01",
        b":authority",
        b"\x41\x17/run/podctl/podctl.sock",
    ];
    fuzz::run("h2_authority", 20_000, tokens, |b| {
        let mut fix = AuthorityFix::new(());
        let cut = b.len() / 3;
        let mut out = BytesMut::new();
        let mut settled = false;
        for part in [&b[..cut], &b[cut..]] {
            let (o, s) = fix.feed(part);
            out.extend_from_slice(&o);
            settled = s;
        }
        if !fix.rewriting() && settled {
            assert_eq!(&out[..], b);
        }
    });
}

/// SPDY frames as clients send them: every known frame decoded encodes
/// back to bytes that decode to the same frame.
#[test]
fn fuzz_spdy_frames() {
    let tokens: &[&[u8]] = &[
        b"\x80\x03\x00\x01",
        b"\x80\x03\x00\x04",
        b"\x80\x03\x00\x06",
        b"\x00\x00\x00\x01",
    ];
    fuzz::run("spdy_frames", 20_000, tokens, |b| {
        let mut buf = BytesMut::from(b);
        while let Ok(Some(f)) = Frame::decode(&mut buf) {
            if matches!(f, Frame::Unknown { .. }) {
                continue; // skipped by the connection; never sent
            }
            let mut out = BytesMut::new();
            f.encode(&mut out);
            let again = Frame::decode(&mut out).unwrap_or_else(|e| panic!("{f:?}: {e}"));
            assert_eq!(again.as_ref(), Some(&f));
        }
    });
}

/// SPDY header blocks (zlib with the protocol's dictionary): what decodes
/// encodes and decodes back to the same headers.
#[test]
fn fuzz_spdy_headers() {
    let tokens: &[&[u8]] = &[b"\x78\xbb", b"\x00\x00\xff\xff", b"streamtype"];
    fuzz::run("spdy_headers", 5_000, tokens, |b| {
        if let Ok(h) = HeaderCodec::new().decode(b) {
            let block = HeaderCodec::new().encode(&h);
            let again = HeaderCodec::new()
                .decode(&block)
                .unwrap_or_else(|e| panic!("{h:?}: {e}"));
            assert_eq!(again, h);
        }
    });
}

/// CRI requests as a client's bytes: what decodes is turned into the
/// runtime's sandbox and container configurations (or refused), never a
/// panic.
#[test]
fn fuzz_cri_requests() {
    use crate::proto;
    use prost::Message as _;
    let tokens: &[&[u8]] = &[b"\x0a\x00", b"\x12\x00", b"\x1a\x02", b"/etc", b".."];
    let img = podctl_images::store::ImageRecord {
        id: podctl_images::digest::Digest::of(b"fuzz"),
        repo_tags: vec!["fuzz:latest".into()],
        repo_digests: vec![],
        manifest_digest: podctl_images::digest::Digest::of(b"fuzz-manifest"),
        size: 0,
        architecture: "amd64".into(),
        os: "linux".into(),
        config: Default::default(),
        layers: vec![],
        pulled_at: 0,
        pinned: false,
    };
    fuzz::run("cri_requests", 20_000, tokens, |b| {
        if let Ok(r) = proto::RunPodSandboxRequest::decode(b) {
            if let Some(c) = &r.config {
                let _ = crate::sandbox::runtime_config(c);
            }
        }
        if let Ok(r) = proto::CreateContainerRequest::decode(b) {
            if let (Some(c), Some(s)) = (&r.config, &r.sandbox_config) {
                let _ = crate::spec::runtime_container(c, s, &img, vec![], "log/0.log");
            }
        }
    });
}

/// A WebSocket client's bytes (frames, masked or not, of any opcode and
/// length; Kubernetes' channel bytes inside) into an exec served over the
/// v5 channel protocol (the process echoes its stdin): the session ends
/// when the bytes do, never a panic or a hang.
#[test]
fn fuzz_websocket_frames() {
    use crate::stream::remotecommand::Want;
    use crate::stream::websocket::serve_remotecommand;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::WebSocketStream;

    let tokens: &[&[u8]] = &[
        b"\x82\x80\x00\x00\x00\x00",
        b"\x82\x81\x00\x00\x00\x00\x00",
        b"\x88\x80\x00\x00\x00\x00",
        b"\x89\x80\x00\x00\x00\x00",
        b"\x02\x81\x01\x02\x03\x04",
        b"\x80\x81\x01\x02\x03\x04",
        b"\x82\xfe\x00\x10",
        b"\xff",
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    fuzz::run("websocket_frames", 5_000, tokens, |b| {
        rt.block_on(async {
            let (mut client, server) = tokio::io::duplex(1 << 16);
            let input = b.to_vec();
            let peer = tokio::spawn(async move {
                let _ = client.write_all(&input).await;
                let _ = client.shutdown().await;
                let mut sink = Vec::new();
                let _ = client.read_to_end(&mut sink).await;
            });
            let ws = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
            let want = Want {
                stdin: true,
                stdout: true,
                stderr: true,
                tty: false,
            };
            let session = serve_remotecommand(ws, "v5.channel.k8s.io", want, |io| {
                Box::pin(async move {
                    let mut got = Vec::new();
                    if let Some(mut r) = io.stdin {
                        let _ = r.read_to_end(&mut got).await;
                    }
                    if let Some(mut w) = io.stdout {
                        let _ = w.write_all(&got).await;
                    }
                    Ok(0)
                })
            });
            tokio::time::timeout(std::time::Duration::from_secs(10), session)
                .await
                .unwrap_or_else(|_| panic!("the session outlived its client's bytes"));
            let _ = peer.await;
        });
    });
}

/// A plugin's bytes on the NRI socket: mux frames of any connection and
/// length carrying ttrpc messages of any kind. The connection answers
/// only with well-formed responses, never panics, and ends when the
/// plugin hangs up.
#[test]
fn fuzz_nri_frames() {
    use crate::nri::{api, trunk::Trunk, wire};
    use prost::Message as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tokens: &[&[u8]] = &[
        b"\x00\x00\x00\x02",
        b"\x00\x00\x00\x01",
        b"\x00\x00\x00\x01\x01\x00",
        b"nri.pkg.api.v1alpha1.Runtime",
        b"RegisterPlugin",
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    fuzz::run("nri_frames", 5_000, tokens, |b| {
        rt.block_on(async {
            let (mut plugin, runtime) =
                tokio::net::UnixStream::pair().unwrap_or_else(|e| panic!("{e}"));
            let (tx, _rx) = tokio::sync::oneshot::channel();
            let t = Trunk::start(runtime, wire::PLUGIN_CONN, crate::nri::runtime_service(tx));
            let input = b.to_vec();
            let (mut r, mut w) = plugin.split();
            let send = async move {
                let _ = w.write_all(&input).await;
                let _ = w.shutdown().await;
            };
            let mut replies = Vec::new();
            let read = r.read_to_end(&mut replies);
            let ends = async {
                let (_, got) = tokio::join!(send, read);
                t.closed().await;
                got
            };
            tokio::time::timeout(std::time::Duration::from_secs(10), ends)
                .await
                .unwrap_or_else(|_| panic!("the connection outlived its plugin's bytes"))
                .unwrap_or_else(|e| panic!("{e}"));
            let mut streams = wire::Reassembler::default();
            let mut at = 0;
            while at < replies.len() {
                let h: [u8; wire::FRAME_HEADER] = replies[at..at + wire::FRAME_HEADER]
                    .try_into()
                    .unwrap_or_else(|e| panic!("{e}"));
                let (conn, len) = wire::frame_header(h).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(conn, wire::RUNTIME_CONN);
                let p = &replies[at + wire::FRAME_HEADER..at + wire::FRAME_HEADER + len];
                for m in streams.push(conn, p).unwrap_or_else(|e| panic!("{e}")) {
                    assert_eq!(m.kind, wire::TYPE_RESPONSE);
                    api::Response::decode(m.body.as_slice()).unwrap_or_else(|e| panic!("{e}"));
                }
                at += wire::FRAME_HEADER + len;
            }
        });
    });
}
