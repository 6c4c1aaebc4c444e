//! Exec, attach and port-forward over WebSocket, in the Kubernetes
//! channel protocols: every binary message starts with a channel byte
//! (remote command: 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize; v5
//! adds 255 = "close channel N"); port-forward uses two channels per port
//! (data 2i, error 2i+1), each opened by a 2-byte little-endian port.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::PollSender;

use super::backend::{BackendError, StreamBackend, StreamIo, TermSize};
use super::remotecommand::{status_json, Want};

pub const REMOTECOMMAND: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
pub const PORTFORWARD: &[&str] = &[
    "SPDY/3.1+portforward.k8s.io",
    "v4.channel.k8s.io",
    "portforward.k8s.io",
];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;
/// Not a channel: tunnel bytes, sent without a prefix.
const RAW: u8 = 254;
/// The SPDY-over-WebSocket port-forward protocol of client-go ≥ 1.30.
pub const TUNNEL_PORTFORWARD: &str = "SPDY/3.1+portforward.k8s.io";

/// Bytes arriving on one channel.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    pending: Bytes,
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        // An empty message is not end of stream (a reader would take a
        // zero-length read as EOF): wait for data or the real end.
        while self.pending.is_empty() {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(b)) => self.pending = b,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = self.pending.len().min(out.remaining());
        let chunk = self.pending.split_to(n);
        out.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

/// Bytes sent on one channel.
struct ChannelWriter {
    channel: u8,
    tx: PollSender<(u8, Bytes)>,
}

impl AsyncWrite for ChannelWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let closed = || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "websocket closed");
        match self.tx.poll_reserve(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return Poll::Ready(Err(closed())),
            Poll::Pending => return Poll::Pending,
        }
        let n = data.len().min(32 * 1024);
        let ch = self.channel;
        self.tx
            .send_item((ch, Bytes::copy_from_slice(&data[..n])))
            .map_err(|_| closed())?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

type Ws<T> = WebSocketStream<T>;

/// The writer task: `(channel, data)` items become binary messages.
fn writer<T>(
    mut sink: futures::stream::SplitSink<Ws<T>, Message>,
) -> (mpsc::Sender<(u8, Bytes)>, tokio::task::JoinHandle<()>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<(u8, Bytes)>(64);
    let task = tokio::spawn(async move {
        while let Some((ch, data)) = rx.recv().await {
            let mut m = Vec::with_capacity(1 + data.len());
            if ch != RAW {
                m.push(ch);
            }
            m.extend_from_slice(&data);
            if sink.send(Message::Binary(m.into())).await.is_err() {
                return;
            }
        }
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
        let _ = sink.flush().await;
    });
    (tx, task)
}

/// A byte stream tunnelled in binary messages (client-go's
/// `SPDY/3.1+portforward.k8s.io`: a whole SPDY connection inside).
pub struct Tunnel {
    reader: ChannelReader,
    writer: ChannelWriter,
}

impl Tunnel {
    pub fn new<T>(ws: Ws<T>) -> Tunnel
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sink, mut source) = ws.split();
        let (out, _task) = writer(sink);
        let (in_tx, in_rx) = mpsc::channel::<Bytes>(64);
        tokio::spawn(async move {
            while let Some(msg) = source.next().await {
                match msg {
                    Ok(Message::Binary(b)) => {
                        if in_tx.send(b).await.is_err() {
                            break;
                        }
                    }
                    Ok(Message::Close(_)) => break,
                    Ok(other) => tracing::debug!(kind = ?other, "tunnel: non-binary message"),
                    Err(e) => {
                        tracing::warn!(error = %e, "tunnel: websocket read");
                        break;
                    }
                }
            }
        });
        // Tunnel bytes carry no channel prefix: the writer task is given
        // channel-less items through a channel number it strips.
        Tunnel {
            reader: ChannelReader {
                rx: in_rx,
                pending: Bytes::new(),
            },
            writer: ChannelWriter {
                channel: RAW,
                tx: PollSender::new(out),
            },
        }
    }
}

impl AsyncRead for Tunnel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.reader).poll_read(cx, out)
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.writer).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

pub async fn serve_remotecommand<T>(
    ws: Ws<T>,
    protocol: &str,
    want: Want,
    run: impl FnOnce(StreamIo) -> BoxFuture<'static, Result<i32, BackendError>>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let v5 = protocol == "v5.channel.k8s.io";
    let v4 = v5 || protocol == "v4.channel.k8s.io";
    let (sink, mut source) = ws.split();
    let (out, write_task) = writer(sink);
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(16);
    let (resize_tx, resize_rx) = mpsc::channel::<TermSize>(8);
    let read_task = tokio::spawn(async move {
        let mut stdin_tx = Some(stdin_tx);
        while let Some(Ok(msg)) = source.next().await {
            let data = match msg {
                Message::Binary(b) => b,
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&ch, body)) = data.split_first() else {
                continue;
            };
            match ch {
                STDIN => {
                    if let Some(tx) = &stdin_tx {
                        let _ = tx.send(Bytes::copy_from_slice(body)).await;
                    }
                }
                RESIZE => {
                    #[derive(serde::Deserialize)]
                    struct Size {
                        #[serde(rename = "Width")]
                        width: u16,
                        #[serde(rename = "Height")]
                        height: u16,
                    }
                    if let Ok(s) = serde_json::from_slice::<Size>(body) {
                        let _ = resize_tx
                            .send(TermSize {
                                width: s.width,
                                height: s.height,
                            })
                            .await;
                    }
                }
                CLOSE if v5 && body.first() == Some(&STDIN) => stdin_tx = None,
                _ => {}
            }
        }
    });
    let chan = |c: u8| {
        Box::new(ChannelWriter {
            channel: c,
            tx: PollSender::new(out.clone()),
        }) as super::backend::Writer
    };
    let io = StreamIo {
        stdin: want.stdin.then(|| {
            Box::new(ChannelReader {
                rx: stdin_rx,
                pending: Bytes::new(),
            }) as super::backend::Reader
        }),
        stdout: want.stdout.then(|| chan(STDOUT)),
        stderr: (want.stderr && !want.tty).then(|| chan(STDERR)),
        tty: want.tty,
        resize: want.tty.then_some(resize_rx),
    };
    let result = run(io).await;
    let msg = if v4 {
        Some(status_json(&result))
    } else {
        match &result {
            Ok(0) => None,
            Ok(code) => Some(format!(
                "command terminated with non-zero exit code: {code}"
            )),
            Err(e) => Some(e.to_string()),
        }
    };
    if let Some(m) = msg {
        let _ = out.send((ERROR, Bytes::from(m))).await;
    }
    drop(out);
    read_task.abort();
    let _ = write_task.await;
}

pub async fn serve_portforward<T>(
    ws: Ws<T>,
    ports: Vec<u16>,
    backend: Arc<dyn StreamBackend>,
    sandbox: String,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, mut source) = ws.split();
    let (out, write_task) = writer(sink);
    let mut to_pod: Vec<Option<mpsc::Sender<Bytes>>> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let (data_ch, err_ch) = ((2 * i) as u8, (2 * i + 1) as u8);
        for ch in [data_ch, err_ch] {
            let _ = out
                .send((ch, Bytes::copy_from_slice(&port.to_le_bytes())))
                .await;
        }
        let (tx, mut rx) = mpsc::channel::<Bytes>(16);
        to_pod.push(Some(tx));
        let (b, sb, out, port) = (backend.clone(), sandbox.clone(), out.clone(), *port);
        tokio::spawn(async move {
            let conn = match b.port_forward(sb.clone(), port).await {
                Ok(c) => c,
                Err(e) => {
                    let msg = format!("error forwarding port {port} to pod {sb}: {e}");
                    let _ = out.send((err_ch, Bytes::from(msg))).await;
                    return;
                }
            };
            let (mut r, mut w) = tokio::io::split(conn);
            let up = tokio::spawn(async move {
                while let Some(b) = rx.recv().await {
                    if w.write_all(&b).await.is_err() {
                        break;
                    }
                }
                let _ = w.shutdown().await;
            });
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if out
                            .send((data_ch, Bytes::copy_from_slice(&buf[..n])))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
            up.abort();
        });
    }
    drop(out);
    while let Some(Ok(msg)) = source.next().await {
        let data = match msg {
            Message::Binary(b) => b,
            Message::Close(_) => break,
            _ => continue,
        };
        let Some((&ch, body)) = data.split_first() else {
            continue;
        };
        let i = usize::from(ch / 2);
        // Data channels only; the port prefix the client sends first is
        // not payload.
        if ch % 2 == 0 {
            if let Some(Some(tx)) = to_pod.get(i) {
                let _ = tx.send(Bytes::copy_from_slice(body)).await;
            }
        }
    }
    to_pod.clear();
    write_task.abort();
}
