//! `/containerLogs/{ns}/{pod}/{container}`: the container's CRI log file
//! turned back into its output, with the kubelet's `follow`, `tailLines`,
//! `sinceSeconds`, `timestamps`, `limitBytes` and `previous`.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::crilog;

/// The query options.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogOptions {
    pub follow: bool,
    pub tail_lines: Option<usize>,
    pub since_seconds: Option<i64>,
    pub timestamps: bool,
    pub limit_bytes: Option<usize>,
    pub previous: bool,
}

impl LogOptions {
    pub fn from_query(q: &HashMap<String, Vec<String>>) -> LogOptions {
        let one = |k: &str| q.get(k).and_then(|v| v.first()).map(String::as_str);
        let flag = |k: &str| one(k).is_some_and(|v| v == "true" || v == "1");
        LogOptions {
            follow: flag("follow"),
            tail_lines: one("tailLines").and_then(|v| v.parse().ok()),
            since_seconds: one("sinceSeconds").and_then(|v| v.parse().ok()),
            timestamps: flag("timestamps"),
            limit_bytes: one("limitBytes").and_then(|v| v.parse().ok()),
            previous: flag("previous"),
        }
    }
}

fn unix_seconds(rfc3339: &str) -> Option<i64> {
    rfc3339
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_second())
}

/// Turn CRI records into output, one string a record (the kubelet's
/// rendering: a partial record's text without a newline).
fn render(text: &str, o: &LogOptions, since: Option<i64>) -> Vec<String> {
    text.lines()
        .filter_map(crilog::parse)
        .filter(|r| since.is_none_or(|s| unix_seconds(r.time).is_none_or(|t| t >= s)))
        .map(|r| r.render(o.timestamps))
        .collect()
}

/// A (non-follow) answer's body as the kubelet sends it: chunked, the
/// text flushed before the end of the body is written. The API server's
/// WebSocket relay of `pods/log` drops the bytes of a read that also
/// reports the end; a body whose end arrives with its text (a length, or
/// both chunks in one TLS record) would reach WebSocket clients empty.
pub fn flushed_body(text: String) -> super::Body {
    use futures::StreamExt as _;
    let frames = futures::stream::unfold(Some(text), |state| async move {
        match state {
            Some(t) => Some((
                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(t))),
                None,
            )),
            None => {
                // Let the text go out on its own before the end.
                tokio::time::sleep(Duration::from_millis(5)).await;
                None
            }
        }
    });
    http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(super::SyncStream(
        frames.boxed(),
    )))
}

/// The whole (non-follow) answer.
pub fn read_all(path: &Path, o: &LogOptions) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    Ok(answer(&text, o))
}

/// The answer for the log text read so far.
fn answer(text: &str, o: &LogOptions) -> String {
    let since = o
        .since_seconds
        .map(|s| jiff::Timestamp::now().as_second() - s);
    let mut lines = render(text, o, since);
    if let Some(n) = o.tail_lines {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    let mut s = lines.concat();
    if let Some(n) = o.limit_bytes {
        s.truncate(n.min(s.len()));
    }
    s
}

/// Follow: the answer so far, then new complete lines as they come,
/// until `running` says the container stopped and the file is drained, or
/// the reader went away.
pub fn follow(
    path: PathBuf,
    o: LogOptions,
    running: impl Fn() -> futures::future::BoxFuture<'static, bool> + Send + 'static,
) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        // Read once: what the answer shows so far is where following starts
        // (a second look at the file's size would skip lines written in between).
        if std::fs::File::open(&path).is_err() {
            return;
        }
        let mut offset = 0;
        let mut carry = read_from(&path, &mut offset);
        // Whole records only; a record still being written waits.
        let cut = carry.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let text: String = carry.drain(..cut).collect();
        let head = answer(
            &text,
            &LogOptions {
                follow: false,
                limit_bytes: None,
                ..o.clone()
            },
        );
        if tx.send(Bytes::from(head)).await.is_err() {
            return;
        }
        loop {
            let chunk = read_from(&path, &mut offset);
            let done = chunk.is_empty() && !running().await;
            carry.push_str(&chunk);
            // Only whole lines; keep a trailing fragment for next time.
            let cut = carry.rfind('\n').map(|i| i + 1).unwrap_or(0);
            if cut > 0 {
                let whole: String = carry.drain(..cut).collect();
                let out = render(&whole, &o, None).concat();
                if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
                    return;
                }
            }
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    rx
}

fn read_from(path: &Path, offset: &mut u64) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len < *offset {
        *offset = 0; // rotated or truncated
    }
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(*offset)).is_ok() && f.read_to_end(&mut buf).is_ok() {
        *offset += buf.len() as u64;
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2026-01-01T00:00:00.000000001Z stdout F one\n\
2026-01-01T00:00:01.000000000Z stderr P tw\n\
2026-01-01T00:00:01.500000000Z stderr F o\n\
2026-01-01T00:00:02.000000000Z stdout F three\n";

    #[test]
    fn records_become_lines_with_options() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = dir.path().join("0.log");
        std::fs::write(&p, LOG).unwrap_or_else(|e| panic!("{e}"));
        let all = |o: LogOptions| read_all(&p, &o).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all(LogOptions::default()), "one\ntwo\nthree\n");
        // Tail counts records, as the kubelet counts the file's lines.
        assert_eq!(
            all(LogOptions {
                tail_lines: Some(2),
                ..Default::default()
            }),
            "o\nthree\n"
        );
        assert_eq!(
            all(LogOptions {
                timestamps: true,
                tail_lines: Some(1),
                ..Default::default()
            }),
            "2026-01-01T00:00:02.000000000Z three\n"
        );
        assert_eq!(
            all(LogOptions {
                limit_bytes: Some(5),
                ..Default::default()
            }),
            "one\nt"
        );
        // Everything is older than 10 s ago.
        assert_eq!(
            all(LogOptions {
                since_seconds: Some(10),
                ..Default::default()
            }),
            ""
        );
    }
}
