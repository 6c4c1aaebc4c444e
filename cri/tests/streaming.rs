//! Exec, Attach and PortForward end to end: the CRI calls over the socket
//! return URLs; a SPDY/3.1 client written here (over the crate's frame and
//! header codecs) speaks the Kubernetes streaming protocols to them, as
//! crictl and the kubelet's proxy do, against real containers.

mod common;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{
    block_on, channel, container_config, ok, pull, registry_and_daemon, run_container, run_sandbox,
    sandbox_config, stop_and_remove_sandbox, wait_state, Daemon,
};
use podctl_cri::proto;
use podctl_cri::proto::image_service_client::ImageServiceClient;
use podctl_cri::proto::runtime_service_client::RuntimeServiceClient;
use podctl_cri::stream::spdy::{Frame, HeaderCodec, Headers};
use podctl_tests::fixtures::HTTPD_INDEX;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A byte transport: TCP after an HTTP upgrade, or a WebSocket tunnel.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// The client side of a SPDY streaming connection.
struct Spdy {
    sock: Box<dyn Io>,
    codec: HeaderCodec,
    buf: BytesMut,
    next: u32,
}

impl Spdy {
    async fn connect(url: &str, protocol: &str) -> Result<Spdy, String> {
        let rest = url.strip_prefix("http://").ok_or("not http")?;
        let (host, path) = rest.split_once('/').ok_or("no path")?;
        let mut sock = TcpStream::connect(host).await.map_err(|e| e.to_string())?;
        let req = format!(
            "POST /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {protocol}\r\nContent-Length: 0\r\n\r\n"
        );
        sock.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            if sock.read(&mut b).await.map_err(|e| e.to_string())? == 0 {
                break;
            }
            head.push(b[0]);
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        if !text.starts_with("HTTP/1.1 101") {
            return Err(text);
        }
        Ok(Spdy {
            sock: Box::new(sock),
            codec: HeaderCodec::new(),
            buf: BytesMut::new(),
            next: 1,
        })
    }

    /// client-go's tunnel: a whole SPDY connection inside binary WebSocket
    /// messages (`SPDY/3.1+portforward.k8s.io`). Empty messages are sent
    /// between the bytes, as gorilla/websocket writers may.
    async fn connect_tunnel(url: &str) -> Spdy {
        use futures::{SinkExt as _, StreamExt as _};
        use tokio_tungstenite::tungstenite::Message;
        let ws = websocket(url, "SPDY/3.1+portforward.k8s.io").await;
        let (mut sink, mut source) = ws.split();
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let (mut rd, mut wr) = tokio::io::split(theirs);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let empty = Message::Binary(Bytes::new());
                if sink.send(empty).await.is_err()
                    || sink
                        .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            while let Some(Ok(m)) = source.next().await {
                if let Message::Binary(b) = m {
                    if wr.write_all(&b).await.is_err() {
                        return;
                    }
                }
            }
        });
        Spdy {
            sock: Box::new(ours),
            codec: HeaderCodec::new(),
            buf: BytesMut::new(),
            next: 1,
        }
    }

    async fn send(&mut self, f: Frame) {
        let mut b = BytesMut::new();
        f.encode(&mut b);
        ok(self.sock.write_all(&b).await);
    }

    /// Open a stream with these headers; its ID.
    async fn open(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.next;
        self.next += 2;
        let h = Headers(
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let block = self.codec.encode(&h);
        self.send(Frame::SynStream {
            stream: id,
            associated: 0,
            priority: 0,
            fin: false,
            unidirectional: false,
            block,
        })
        .await;
        id
    }

    async fn data(&mut self, stream: u32, data: &[u8], fin: bool) {
        self.send(Frame::Data {
            stream,
            fin,
            data: Bytes::copy_from_slice(data),
        })
        .await;
    }

    /// Data per stream until `done` streams have FINed (or the connection
    /// ends, or 30 s pass).
    async fn collect(&mut self, done: &[u32]) -> std::collections::HashMap<u32, Vec<u8>> {
        let mut got: std::collections::HashMap<u32, Vec<u8>> = Default::default();
        let mut fins = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !done.iter().all(|d| fins.contains(d)) {
            let f = match Frame::decode(&mut self.buf) {
                Ok(Some(f)) => f,
                Ok(None) => {
                    let r =
                        tokio::time::timeout_at(deadline, self.sock.read_buf(&mut self.buf)).await;
                    match r {
                        Ok(Ok(n)) if n > 0 => continue,
                        _ => break,
                    }
                }
                Err(e) => panic!("bad frame from the server: {e}"),
            };
            match f {
                Frame::Data { stream, fin, data } => {
                    got.entry(stream).or_default().extend_from_slice(&data);
                    if fin {
                        fins.push(stream);
                    }
                }
                Frame::SynReply { block, .. } => {
                    ok(self.codec.decode(&block));
                }
                Frame::GoAway { .. } => break,
                _ => {}
            }
        }
        got
    }
}

/// A WebSocket to a streaming URL with `protocol`, which the server must
/// have chosen.
async fn websocket(url: &str, protocol: &str) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut req = ok(url.replacen("http://", "ws://", 1).into_client_request());
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", ok(protocol.parse()));
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    let sock = ok(TcpStream::connect(host).await);
    let (ws, resp) = ok(tokio_tungstenite::client_async(req, sock).await);
    assert_eq!(
        resp.headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok()),
        Some(protocol)
    );
    ws
}

/// Exec over WebSocket; bytes per channel until the server closes.
async fn websocket_exec(url: &str) -> std::collections::HashMap<u8, Vec<u8>> {
    use futures::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = websocket(url, "v5.channel.k8s.io").await;
    let mut chans: std::collections::HashMap<u8, Vec<u8>> = Default::default();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
        match msg {
            Message::Binary(b) => {
                if let Some((ch, body)) = b.split_first() {
                    chans.entry(*ch).or_default().extend_from_slice(body);
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    chans
}

#[test]
fn exec_attach_and_port_forward_over_spdy() {
    let (reg, pubd, daemon) = registry_and_daemon();
    block_on(check(&daemon, &pubd.httpd));
    drop(reg);
}

async fn check(daemon: &Daemon, httpd: &str) {
    let ch = channel(&daemon.socket).await;
    let mut rt = RuntimeServiceClient::new(ch.clone());
    let mut img = ImageServiceClient::new(ch);
    for image in ["busybox", httpd] {
        pull(&mut img, image).await;
    }
    let logs = daemon.dir.path().join("logs");
    let sc = sandbox_config("streams", 0, &logs);
    let sb = run_sandbox(&mut rt, &sc).await;

    // Exec: stdout and stderr apart, the exit code in the v4 status.
    let sleeper = run_container(
        &mut rt,
        &sb,
        &sc,
        container_config("sleeper", "busybox", "exec sleep 1000"),
    )
    .await;
    let url = ok(rt
        .exec(proto::ExecRequest {
            container_id: sleeper.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "echo hello; echo oops >&2; exit 3".into(),
            ],
            stdout: true,
            stderr: true,
            ..Default::default()
        })
        .await)
    .into_inner()
    .url;
    let mut c = ok(Spdy::connect(&url, "v4.channel.k8s.io").await);
    let e = c.open(&[("streamType", "error")]).await;
    let o = c.open(&[("streamType", "stdout")]).await;
    let r = c.open(&[("streamType", "stderr")]).await;
    let got = c.collect(&[e, o, r]).await;
    assert_eq!(got.get(&o).map(|v| v.as_slice()), Some(&b"hello\n"[..]));
    assert_eq!(got.get(&r).map(|v| v.as_slice()), Some(&b"oops\n"[..]));
    let status: serde_json::Value = ok(serde_json::from_slice(
        got.get(&e).map(|v| v.as_slice()).unwrap_or(b"{}"),
    ));
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
    // The token was for one connection only.
    assert!(Spdy::connect(&url, "v4.channel.k8s.io").await.is_err());

    // The same over WebSocket (v5.channel.k8s.io): channel-prefixed messages.
    let url = ok(rt
        .exec(proto::ExecRequest {
            container_id: sleeper.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "echo ws-out; echo ws-err >&2; exit 5".into(),
            ],
            stdout: true,
            stderr: true,
            ..Default::default()
        })
        .await)
    .into_inner()
    .url;
    let chans = websocket_exec(&url).await;
    assert_eq!(chans.get(&1).map(|v| v.as_slice()), Some(&b"ws-out\n"[..]));
    assert_eq!(chans.get(&2).map(|v| v.as_slice()), Some(&b"ws-err\n"[..]));
    let status: serde_json::Value = ok(serde_json::from_slice(
        chans.get(&3).map(|v| v.as_slice()).unwrap_or(b"{}"),
    ));
    assert_eq!(status["details"]["causes"][0]["message"], "5");

    // A terminal: stdin in, a resize applied, output on stdout.
    let url = ok(rt
        .exec(proto::ExecRequest {
            container_id: sleeper.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "read line; echo got:$line; stty size".into(),
            ],
            stdin: true,
            stdout: true,
            tty: true,
            ..Default::default()
        })
        .await)
    .into_inner()
    .url;
    let mut c = ok(Spdy::connect(&url, "v4.channel.k8s.io").await);
    let e = c.open(&[("streamType", "error")]).await;
    let i = c.open(&[("streamType", "stdin")]).await;
    let o = c.open(&[("streamType", "stdout")]).await;
    let z = c.open(&[("streamType", "resize")]).await;
    c.data(z, br#"{"Width":100,"Height":30}"#, false).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.data(i, b"ping\n", false).await;
    let got = c.collect(&[e, o]).await;
    let out =
        String::from_utf8_lossy(got.get(&o).map(|v| v.as_slice()).unwrap_or_default()).into_owned();
    assert!(
        out.contains("got:ping") && out.contains("30 100"),
        "{out:?}"
    );
    assert!(
        String::from_utf8_lossy(got.get(&e).map(|v| v.as_slice()).unwrap_or_default())
            .contains("Success")
    );

    // Attach to a shell reading its stdin; closing stdin ends it (stdin_once).
    let mut shell = container_config("shell", "busybox", "");
    shell.command = vec!["sh".into()];
    shell.stdin = true;
    shell.stdin_once = true;
    let shell = run_container(&mut rt, &sb, &sc, shell).await;
    let url = ok(rt
        .attach(proto::AttachRequest {
            container_id: shell.clone(),
            stdin: true,
            stdout: true,
            stderr: true,
            ..Default::default()
        })
        .await)
    .into_inner()
    .url;
    let mut c = ok(Spdy::connect(&url, "v4.channel.k8s.io").await);
    let e = c.open(&[("streamType", "error")]).await;
    let i = c.open(&[("streamType", "stdin")]).await;
    let o = c.open(&[("streamType", "stdout")]).await;
    let _r = c.open(&[("streamType", "stderr")]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.data(i, b"echo attached-$((40+2))\n", true).await;
    let got = c.collect(&[e, o]).await;
    assert_eq!(
        got.get(&o).map(|v| v.as_slice()),
        Some(&b"attached-42\n"[..])
    );
    let st = wait_state(&mut rt, &shell, proto::ContainerState::ContainerExited).await;
    assert_eq!(st.exit_code, 0);

    // A tty container: attach with a resize; the shell sees a terminal.
    let mut term = container_config("term", "busybox", "");
    term.command = vec!["sh".into()];
    term.stdin = true;
    term.tty = true;
    let term = run_container(&mut rt, &sb, &sc, term).await;
    let url = ok(rt
        .attach(proto::AttachRequest {
            container_id: term.clone(),
            stdin: true,
            stdout: true,
            tty: true,
            ..Default::default()
        })
        .await)
    .into_inner()
    .url;
    let mut c = ok(Spdy::connect(&url, "v4.channel.k8s.io").await);
    let e = c.open(&[("streamType", "error")]).await;
    let i = c.open(&[("streamType", "stdin")]).await;
    let o = c.open(&[("streamType", "stdout")]).await;
    let z = c.open(&[("streamType", "resize")]).await;
    c.data(z, br#"{"Width":120,"Height":40}"#, false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.data(i, b"[ -t 0 ] && echo is-a-tty; stty size; exit\n", false)
        .await;
    let got = c.collect(&[e, o]).await;
    let out =
        String::from_utf8_lossy(got.get(&o).map(|v| v.as_slice()).unwrap_or_default()).into_owned();
    assert!(
        out.contains("is-a-tty") && out.contains("40 120"),
        "{out:?}"
    );

    // Port forward to a web server listening only inside the pod.
    let mut web = container_config("web", httpd, "");
    web.command = vec![
        "httpd".into(),
        "-f".into(),
        "-p".into(),
        "8080".into(),
        "-h".into(),
        "/www".into(),
    ];
    run_container(&mut rt, &sb, &sc, web).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = ok(rt
        .port_forward(proto::PortForwardRequest {
            pod_sandbox_id: sb.clone(),
            port: vec![8080],
        })
        .await)
    .into_inner()
    .url;
    // Plain SPDY, then SPDY tunnelled in WebSocket (two connections in a
    // row over one tunnel, as kubectl makes them).
    let plain = ok(Spdy::connect(&url, "portforward.k8s.io").await);
    forward_twice(plain, 1).await;
    // URLs are one-time: ask again.
    let url = ok(rt
        .port_forward(proto::PortForwardRequest {
            pod_sandbox_id: sb.clone(),
            port: vec![8080],
        })
        .await)
    .into_inner()
    .url;
    let tunnel = Spdy::connect_tunnel(&url).await;
    forward_twice(tunnel, 2).await;

    stop_and_remove_sandbox(&mut rt, sb).await;
}

/// `rounds` HTTP requests to port 8080 through one port-forward
/// connection, each on its own pair of streams.
async fn forward_twice(mut c: Spdy, rounds: u32) {
    for i in 0..rounds {
        let rid = i.to_string();
        let e = c
            .open(&[
                ("streamType", "error"),
                ("port", "8080"),
                ("requestID", &rid),
            ])
            .await;
        let d = c
            .open(&[
                ("streamType", "data"),
                ("port", "8080"),
                ("requestID", &rid),
            ])
            .await;
        c.data(d, b"GET / HTTP/1.0\r\n\r\n", false).await;
        let got = c.collect(&[d, e]).await;
        let body = got.get(&d).cloned().unwrap_or_default();
        assert!(
            body.ends_with(HTTPD_INDEX),
            "round {i}: {}",
            String::from_utf8_lossy(&body)
        );
        assert!(got.get(&e).is_none_or(|v| v.is_empty()));
    }
}
