//! A server-side SPDY connection: a reader task decoding frames and routing
//! data to the streams the client opened, a writer task owning the socket's
//! write half and the header compressor. Streams are handed out through
//! [`Incoming`] as their SYN_STREAM arrives.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use super::frame::Frame;
use super::headers::{HeaderCodec, Headers};

/// What the writer task sends.
enum Out {
    Frame(Frame),
    Reply { stream: u32 },
    Close,
}

type Routes = Arc<Mutex<HashMap<u32, mpsc::UnboundedSender<Bytes>>>>;

/// A stream the client opened.
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    pub reader: StreamReader,
    pub writer: StreamWriter,
}

/// The client's data on one stream (EOF at its FIN or RST).
pub struct StreamReader {
    rx: mpsc::UnboundedReceiver<Bytes>,
    pending: Bytes,
}

/// Data frames to the client on one stream.
pub struct StreamWriter {
    id: u32,
    tx: PollSender<Out>,
    raw: mpsc::Sender<Out>,
}

pub type Incoming = mpsc::Receiver<Stream>;

/// Handle to the connection (to end it).
#[derive(Clone)]
pub struct Connection {
    out: mpsc::Sender<Out>,
}

impl Connection {
    /// Serve SPDY on `io`; streams arrive on the returned receiver until the
    /// client goes away.
    pub fn start<T>(io: T) -> (Connection, Incoming)
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel::<Out>(256);
        let (in_tx, in_rx) = mpsc::channel::<Stream>(16);
        let routes: Routes = Arc::default();
        tokio::spawn(write_loop(wr, out_rx));
        tokio::spawn(read_loop(rd, routes, in_tx, out_tx.clone()));
        (Connection { out: out_tx }, in_rx)
    }

    /// GOAWAY, then close the socket once queued frames are written.
    pub async fn close(&self) {
        let _ = self
            .out
            .send(Out::Frame(Frame::GoAway {
                last_good: 0,
                status: 0,
            }))
            .await;
        let _ = self.out.send(Out::Close).await;
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, mut rx: mpsc::Receiver<Out>) {
    let mut codec = HeaderCodec::new();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    while let Some(item) = rx.recv().await {
        let mut close = false;
        let mut push = |item: Out, buf: &mut BytesMut, codec: &mut HeaderCodec| match item {
            Out::Frame(f) => f.encode(buf),
            Out::Reply { stream } => Frame::SynReply {
                stream,
                fin: false,
                block: codec.encode(&Headers::default()),
            }
            .encode(buf),
            Out::Close => close = true,
        };
        push(item, &mut buf, &mut codec);
        // Batch what is already queued into one write.
        while buf.len() < 64 * 1024 {
            match rx.try_recv() {
                Ok(item) => push(item, &mut buf, &mut codec),
                Err(_) => break,
            }
        }
        if let Err(e) = wr.write_all(&buf).await {
            tracing::debug!(error = %e, "spdy: write");
            return;
        }
        buf.clear();
        if close {
            let _ = wr.shutdown().await;
            return;
        }
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    routes: Routes,
    incoming: mpsc::Sender<Stream>,
    out: mpsc::Sender<Out>,
) {
    let mut codec = HeaderCodec::new();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        loop {
            let frame = match Frame::decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "spdy: closing the connection");
                    return finish(&routes, &out).await;
                }
            };
            match frame {
                Frame::SynStream {
                    stream, fin, block, ..
                } => {
                    let headers = match codec.decode(&block) {
                        Ok(h) => h,
                        Err(e) => {
                            tracing::warn!(error = %e, "spdy: bad headers; closing");
                            return finish(&routes, &out).await;
                        }
                    };
                    let (tx, rx) = mpsc::unbounded_channel();
                    if !fin {
                        if let Ok(mut r) = routes.lock() {
                            r.insert(stream, tx);
                        }
                    }
                    let s = Stream {
                        id: stream,
                        headers,
                        reader: StreamReader {
                            rx,
                            pending: Bytes::new(),
                        },
                        writer: StreamWriter {
                            id: stream,
                            tx: PollSender::new(out.clone()),
                            raw: out.clone(),
                        },
                    };
                    if incoming.send(s).await.is_err() {
                        return finish(&routes, &out).await;
                    }
                }
                Frame::Data { stream, fin, data } => {
                    if let Ok(mut r) = routes.lock() {
                        if !data.is_empty() {
                            if let Some(tx) = r.get(&stream) {
                                let _ = tx.send(data);
                            }
                        }
                        if fin {
                            r.remove(&stream);
                        }
                    }
                }
                Frame::RstStream { stream, .. } => {
                    if let Ok(mut r) = routes.lock() {
                        r.remove(&stream);
                    }
                }
                Frame::Ping { id } => {
                    let _ = out.send(Out::Frame(Frame::Ping { id })).await;
                }
                Frame::GoAway { .. } => {
                    tracing::debug!("spdy: client sent GOAWAY");
                    return finish(&routes, &out).await;
                }
                Frame::Headers { block, .. } => {
                    // Keep the decompression context in step.
                    let _ = codec.decode(&block);
                }
                _ => {}
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) => {
                tracing::debug!("spdy: client closed the connection");
                return finish(&routes, &out).await;
            }
            Err(e) => {
                tracing::debug!(error = %e, "spdy: read");
                return finish(&routes, &out).await;
            }
            Ok(_) => {}
        }
    }
}

/// The client is gone: every stream sees EOF.
async fn finish(routes: &Routes, _out: &mpsc::Sender<Out>) {
    if let Ok(mut r) = routes.lock() {
        r.clear();
    }
}

impl Stream {
    /// Accept the stream (SYN_REPLY).
    pub async fn reply(&self) {
        let _ = self.writer.raw.send(Out::Reply { stream: self.id }).await;
    }
}

impl StreamReader {
    /// The next chunk; `None` at end of stream.
    pub async fn chunk(&mut self) -> Option<Bytes> {
        if !self.pending.is_empty() {
            return Some(std::mem::take(&mut self.pending));
        }
        self.rx.recv().await
    }
}

impl AsyncRead for StreamReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.pending.is_empty() {
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

/// Ends one stream from the server side after its writer was handed away.
#[derive(Clone)]
pub struct Fin {
    id: u32,
    raw: mpsc::Sender<Out>,
}

impl Fin {
    pub async fn finish(&self) {
        let _ = self
            .raw
            .send(Out::Frame(Frame::Data {
                stream: self.id,
                fin: true,
                data: Bytes::new(),
            }))
            .await;
    }
}

impl StreamWriter {
    /// A handle that can FIN this stream later.
    pub fn fin(&self) -> Fin {
        Fin {
            id: self.id,
            raw: self.raw.clone(),
        }
    }

    /// Send `data` on the stream.
    pub async fn send(&self, data: Bytes) -> bool {
        self.raw
            .send(Out::Frame(Frame::Data {
                stream: self.id,
                fin: false,
                data,
            }))
            .await
            .is_ok()
    }

    /// Half-close: a FIN data frame.
    pub async fn finish(&self) {
        let _ = self
            .raw
            .send(Out::Frame(Frame::Data {
                stream: self.id,
                fin: true,
                data: Bytes::new(),
            }))
            .await;
    }
}

const MAX_DATA: usize = 32 * 1024;

impl AsyncWrite for StreamWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let closed =
            || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "spdy connection closed");
        match self.tx.poll_reserve(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return Poll::Ready(Err(closed())),
            Poll::Pending => return Poll::Pending,
        }
        let n = data.len().min(MAX_DATA);
        let id = self.id;
        self.tx
            .send_item(Out::Frame(Frame::Data {
                stream: id,
                fin: false,
                data: Bytes::copy_from_slice(&data[..n]),
            }))
            .map_err(|_| closed())?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
