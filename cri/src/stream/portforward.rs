//! Port forwarding over SPDY (`portforward.k8s.io`): the client opens a
//! data and an error stream per connection, tagged with `port` and
//! `requestID`; each pair becomes one TCP connection inside the pod.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::backend::StreamBackend;
use super::spdy::{Connection, Incoming, Stream};

pub const PROTOCOL: &str = "portforward.k8s.io";

#[derive(Default)]
struct Pair {
    data: Option<Stream>,
    error: Option<Stream>,
}

pub async fn serve(
    conn: Connection,
    mut incoming: Incoming,
    backend: Arc<dyn StreamBackend>,
    sandbox: String,
) {
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    while let Some(stream) = incoming.recv().await {
        stream.reply().await;
        let id = stream.headers.get("requestid").unwrap_or("").to_string();
        let kind = stream.headers.get("streamtype").unwrap_or("").to_string();
        let entry = pairs.entry(id.clone()).or_default();
        match kind.as_str() {
            "data" => entry.data = Some(stream),
            "error" => entry.error = Some(stream),
            other => {
                tracing::warn!(stream_type = other, "port-forward: unexpected stream");
                continue;
            }
        }
        if entry.data.is_some() && entry.error.is_some() {
            if let Some(Pair {
                data: Some(data),
                error: Some(error),
            }) = pairs.remove(&id)
            {
                tokio::spawn(forward(backend.clone(), sandbox.clone(), data, error));
            }
        }
    }
    conn.close().await;
}

async fn forward(backend: Arc<dyn StreamBackend>, sandbox: String, data: Stream, error: Stream) {
    let port = data.headers.get("port").and_then(|p| p.parse::<u16>().ok());
    let Some(port) = port.filter(|p| *p > 0) else {
        let msg = format!(
            "invalid port {:?}",
            data.headers.get("port").unwrap_or_default()
        );
        error.writer.send(msg.into()).await;
        error.writer.finish().await;
        data.writer.finish().await;
        return;
    };
    let tcp = match backend.port_forward(sandbox.clone(), port).await {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("error forwarding port {port} to pod {sandbox}: {e}");
            error.writer.send(msg.into()).await;
            error.writer.finish().await;
            data.writer.finish().await;
            return;
        }
    };
    let (mut tr, mut tw) = tokio::io::split(tcp);
    let Stream {
        reader: mut from_client,
        writer: to_client,
        ..
    } = data;
    let up = async move {
        while let Some(chunk) = from_client.chunk().await {
            if tw.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = tw.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match tr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !to_client
                        .send(bytes::Bytes::copy_from_slice(&buf[..n]))
                        .await
                    {
                        break;
                    }
                }
            }
        }
        to_client.finish().await;
    };
    // As the kubelet: done when the pod side has closed, whether or not
    // the client half-closed its side.
    let up = tokio::spawn(up);
    down.await;
    error.writer.finish().await;
    up.abort();
}
