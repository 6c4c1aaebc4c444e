//! Exec and attach over SPDY, the kubelet's way: the client opens an
//! error stream plus stdin/stdout/stderr/resize as requested; the command
//! runs with them; the result is written on the error stream (plain text
//! up to v3, a metav1.Status JSON from v4) and every stream is closed.

use std::time::Duration;

use bytes::BytesMut;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::backend::{BackendError, StreamIo, TermSize};
use super::spdy::{Connection, Incoming, Stream};

/// Protocols offered over SPDY, most preferred first.
pub const PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// Which streams the request asked for.
#[derive(Clone, Copy, Debug)]
pub struct Want {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

fn version(protocol: &str) -> u8 {
    match protocol {
        "v5.channel.k8s.io" => 5,
        "v4.channel.k8s.io" => 4,
        "v3.channel.k8s.io" => 3,
        "v2.channel.k8s.io" => 2,
        _ => 1,
    }
}

/// The streams of one exec/attach, as the client opened them.
#[derive(Default)]
struct Streams {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

impl Streams {
    fn complete(&self, w: Want, v: u8) -> bool {
        (v < 2 || self.error.is_some())
            && (!w.stdin || self.stdin.is_some())
            && (!w.stdout || self.stdout.is_some())
            && (!w.stderr || w.tty || self.stderr.is_some())
            && (!w.tty || v < 3 || self.resize.is_some())
    }
}

/// The outcome, as a metav1.Status.
pub(super) fn status_json(r: &Result<i32, BackendError>) -> String {
    match r {
        Ok(0) => r#"{"metadata":{},"status":"Success"}"#.to_string(),
        Ok(code) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        })
        .to_string(),
        Err(e) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": e.to_string(),
            "reason": "InternalError",
        })
        .to_string(),
    }
}

/// Forward `{"Width":W,"Height":H}` objects from the resize stream.
fn resizes(mut s: Stream) -> mpsc::Receiver<TermSize> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        #[derive(serde::Deserialize)]
        struct Size {
            #[serde(rename = "Width")]
            width: u16,
            #[serde(rename = "Height")]
            height: u16,
        }
        let mut buf = BytesMut::new();
        while let Some(chunk) = s.reader.chunk().await {
            buf.extend_from_slice(&chunk);
            let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<Size>();
            let mut used = 0;
            while let Some(Ok(sz)) = it.next() {
                used = it.byte_offset();
                let _ = tx
                    .send(TermSize {
                        width: sz.width,
                        height: sz.height,
                    })
                    .await;
            }
            let _ = buf.split_to(used);
        }
    });
    rx
}

/// Serve one exec or attach on a SPDY connection; `run` does the work.
pub async fn serve(
    conn: Connection,
    mut incoming: Incoming,
    protocol: &str,
    want: Want,
    run: impl FnOnce(StreamIo) -> BoxFuture<'static, Result<i32, BackendError>>,
) {
    let v = version(protocol);
    let mut s = Streams::default();
    let deadline = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(deadline);
    while !s.complete(want, v) {
        let stream = tokio::select! {
            st = incoming.recv() => st,
            _ = &mut deadline => None,
        };
        let Some(stream) = stream else {
            tracing::warn!("streaming: client did not open the expected streams");
            conn.close().await;
            return;
        };
        stream.reply().await;
        let kind = stream.headers.get("streamtype").unwrap_or("").to_string();
        let slot = match kind.as_str() {
            "error" => &mut s.error,
            "stdin" => &mut s.stdin,
            "stdout" => &mut s.stdout,
            "stderr" => &mut s.stderr,
            "resize" => &mut s.resize,
            other => {
                tracing::warn!(stream_type = other, "streaming: unexpected stream");
                continue;
            }
        };
        *slot = Some(stream);
    }
    let mut fins = Vec::new();
    let stdout = s.stdout.map(|st| {
        fins.push(st.writer.fin());
        Box::new(st.writer) as super::backend::Writer
    });
    let stderr = s.stderr.filter(|_| !want.tty).map(|st| {
        fins.push(st.writer.fin());
        Box::new(st.writer) as super::backend::Writer
    });
    let io = StreamIo {
        stdin: s
            .stdin
            .map(|st| Box::new(st.reader) as super::backend::Reader),
        stdout,
        stderr,
        tty: want.tty,
        resize: s.resize.map(resizes),
    };
    let result = run(io).await;
    for f in &fins {
        f.finish().await;
    }
    if let Some(err) = s.error {
        let msg = if v >= 4 {
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
            err.writer.send(m.into()).await;
        }
        err.writer.finish().await;
    }
    conn.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_become_statuses() {
        assert!(status_json(&Ok(0)).contains("Success"));
        let s: serde_json::Value = serde_json::from_str(&status_json(&Ok(3))).unwrap_or_default();
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
    }
}
