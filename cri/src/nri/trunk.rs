//! One plugin connection (the trunk): a reader task that cuts the mux
//! frames into ttrpc messages, answers the requests of the connection
//! this side serves and hands responses to the calls waiting for them,
//! and a writer shared by both directions (one message at a time, so two
//! messages' frames never interleave).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::wire::{self, Message, Reassembler, TYPE_REQUEST, TYPE_RESPONSE};
use super::{api, locked};

/// Serves the requests that arrive on the connection this side serves.
pub type Handler = Arc<dyn Fn(api::Request) -> BoxFuture<'static, api::Response> + Send + Sync>;

/// Why a call got no answer, or the answer was an error.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the connection is closed")]
    Closed,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{message} (code {code})")]
    Status { code: i32, message: String },
    #[error("undecodable answer: {0}")]
    Decode(String),
}

impl CallError {
    /// Errors after which the connection is of no further use (the
    /// plugin is dropped); a status is the plugin's answer.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, CallError::Status { .. })
    }
}

type Pending = Mutex<HashMap<u32, oneshot::Sender<Result<Vec<u8>, CallError>>>>;

/// A connection carrying the two logical NRI connections.
pub struct Trunk {
    client_conn: u32,
    server_conn: u32,
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Pending,
    next_stream: AtomicU32,
    closed: CancellationToken,
}

impl Trunk {
    /// Run the connection: this side calls on `client_conn` and serves
    /// the other logical connection with `handler`.
    pub fn start(stream: UnixStream, client_conn: u32, handler: Handler) -> Arc<Trunk> {
        let (read, write) = stream.into_split();
        let server_conn = if client_conn == wire::PLUGIN_CONN {
            wire::RUNTIME_CONN
        } else {
            wire::PLUGIN_CONN
        };
        let t = Arc::new(Trunk {
            client_conn,
            server_conn,
            writer: tokio::sync::Mutex::new(write),
            pending: Mutex::default(),
            next_stream: AtomicU32::new(1),
            closed: CancellationToken::new(),
        });
        let me = t.clone();
        tokio::spawn(async move {
            let why = tokio::select! {
                r = me.read_loop(read, handler) => r,
                _ = me.closed.cancelled() => Ok(()),
            };
            if let Err(e) = why {
                tracing::info!(error = %e, "NRI connection ends");
            }
            me.closed.cancel();
            for (_, tx) in locked(&me.pending).drain() {
                let _ = tx.send(Err(CallError::Closed));
            }
            let _ = me.writer.lock().await.shutdown().await;
        });
        t
    }

    async fn read_loop(
        self: &Arc<Self>,
        mut read: tokio::net::unix::OwnedReadHalf,
        handler: Handler,
    ) -> std::io::Result<()> {
        let mut streams = Reassembler::default();
        let mut payload = Vec::new();
        let mut last_stream = 0;
        loop {
            let mut h = [0u8; wire::FRAME_HEADER];
            match read.read_exact(&mut h).await {
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                r => r?,
            };
            let (conn, len) = wire::frame_header(h).map_err(std::io::Error::other)?;
            payload.resize(len, 0);
            read.read_exact(&mut payload).await?;
            if conn != self.client_conn && conn != self.server_conn {
                continue;
            }
            for msg in streams
                .push(conn, &payload)
                .map_err(std::io::Error::other)?
            {
                match (conn == self.server_conn, msg.kind) {
                    (true, TYPE_REQUEST) => self.serve(msg, &handler, &mut last_stream),
                    (false, TYPE_RESPONSE) => self.answered(msg),
                    (_, kind) => tracing::debug!(conn, kind, "NRI: unexpected message dropped"),
                }
            }
        }
    }

    fn serve(self: &Arc<Self>, msg: Message, handler: &Handler, last: &mut u32) {
        let me = self.clone();
        // As ttrpc's servers: client streams are odd and increase.
        let fresh = msg.stream % 2 == 1 && msg.stream > *last;
        if fresh {
            *last = msg.stream;
        }
        let answer = match api::Request::decode(msg.body.as_slice()) {
            Ok(req) if fresh => handler(req),
            r => {
                let status = api::Status {
                    code: api::CODE_INVALID_ARGUMENT,
                    message: match r {
                        Err(e) => format!("undecodable request: {e}"),
                        Ok(_) => format!("stream {} is not odd and increasing", msg.stream),
                    },
                };
                Box::pin(async move {
                    api::Response {
                        status: Some(status),
                        payload: vec![],
                    }
                })
            }
        };
        tokio::spawn(async move {
            let resp = answer.await;
            let reply = Message {
                stream: msg.stream,
                kind: TYPE_RESPONSE,
                flags: 0,
                body: resp.encode_to_vec(),
            };
            if let Err(e) = me.send(me.server_conn, &reply).await {
                tracing::debug!(error = %e, "NRI: answering a request");
            }
        });
    }

    fn answered(&self, msg: Message) {
        let Some(tx) = locked(&self.pending).remove(&msg.stream) else {
            return;
        };
        let r = match api::Response::decode(msg.body.as_slice()) {
            Err(e) => Err(CallError::Decode(e.to_string())),
            Ok(api::Response {
                status: Some(s), ..
            }) if s.code != 0 => Err(CallError::Status {
                code: s.code,
                message: s.message,
            }),
            Ok(r) => Ok(r.payload),
        };
        let _ = tx.send(r);
    }

    async fn send(&self, conn: u32, msg: &Message) -> std::io::Result<()> {
        let bytes = wire::encode(conn, msg).map_err(std::io::Error::other)?;
        let mut w = self.writer.lock().await;
        if self.closed.is_cancelled() {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        w.write_all(&bytes).await
    }

    /// Call `service.method` on the peer and decode its answer; no
    /// answer within `timeout` is an error (the peer is told the
    /// deadline too).
    pub async fn call<Q: prost::Message, A: prost::Message + Default>(
        &self,
        service: &str,
        method: &str,
        req: &Q,
        timeout: Duration,
    ) -> Result<A, CallError> {
        let env = api::Request {
            service: service.into(),
            method: method.into(),
            payload: req.encode_to_vec(),
            timeout_nano: i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX),
        };
        let (tx, rx) = oneshot::channel();
        let mut msg = Message {
            stream: 0,
            kind: TYPE_REQUEST,
            flags: 0,
            body: env.encode_to_vec(),
        };
        // The stream ID is taken with the writer held: the peer requires
        // the IDs it reads to increase.
        let stream = {
            let mut w = self.writer.lock().await;
            if self.closed.is_cancelled() {
                return Err(CallError::Closed);
            }
            msg.stream = self.next_stream.fetch_add(2, Ordering::Relaxed);
            let bytes = wire::encode(self.client_conn, &msg)
                .map_err(|e| CallError::Decode(e.to_string()))?;
            locked(&self.pending).insert(msg.stream, tx);
            if w.write_all(&bytes).await.is_err() {
                locked(&self.pending).remove(&msg.stream);
                return Err(CallError::Closed);
            }
            msg.stream
        };
        let payload = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(CallError::Closed),
            Err(_) => {
                locked(&self.pending).remove(&stream);
                return Err(CallError::Timeout(timeout));
            }
        };
        A::decode(payload.as_slice()).map_err(|e| CallError::Decode(e.to_string()))
    }

    /// Close the connection (the peer reads its end).
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Resolves once the connection is closed, by either side.
    pub async fn closed(&self) {
        self.closed.cancelled().await
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }
}

/// The answer to a request nobody serves.
pub fn unimplemented(req: &api::Request) -> api::Response {
    api::Response {
        status: Some(api::Status {
            code: api::CODE_UNIMPLEMENTED,
            message: format!("{}/{} is not served", req.service, req.method),
        }),
        payload: vec![],
    }
}

/// A successful answer carrying `msg`.
pub fn ok(msg: &impl prost::Message) -> api::Response {
    api::Response {
        status: Some(api::Status::default()),
        payload: msg.encode_to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many calls at once on one connection: each answered, in whatever
    /// order, by a server that refuses stream IDs that do not increase.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_calls_keep_stream_ids_increasing() {
        let (a, b) = UnixStream::pair().unwrap_or_else(|e| panic!("{e}"));
        let echo: Handler = Arc::new(|req: api::Request| {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(u64::from(
                    req.payload.len() as u8 % 5,
                )))
                .await;
                ok(&api::RegisterPluginRequest {
                    plugin_name: req.method,
                    ..Default::default()
                })
            })
        });
        let refuse: Handler =
            Arc::new(|req: api::Request| Box::pin(async move { unimplemented(&req) }));
        let client = Trunk::start(a, wire::PLUGIN_CONN, refuse);
        let _server = Trunk::start(b, wire::RUNTIME_CONN, echo);
        let calls = (0..64).map(|i| {
            let c = client.clone();
            tokio::spawn(async move {
                let r: Result<api::RegisterPluginRequest, CallError> = c
                    .call(
                        api::PLUGIN_SERVICE,
                        &format!("m{i}"),
                        &api::Empty {},
                        Duration::from_secs(10),
                    )
                    .await;
                (i, r)
            })
        });
        for call in calls {
            let (i, r) = call.await.unwrap_or_else(|e| panic!("{e}"));
            match r {
                Ok(a) => assert_eq!(a.plugin_name, format!("m{i}")),
                Err(e) => panic!("call {i}: {e}"),
            }
        }
    }
}
