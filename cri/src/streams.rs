//! The `Stream*` RPCs: the answer of the matching `List*` call, cut into
//! messages that each stay well under gRPC's default 4 MiB limit, so a
//! node with many objects is not refused for an oversized reply.

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::Status;

/// A server-streaming reply.
pub(crate) type Chunks<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Encoded bytes per message before a new one is started.
const CHUNK_BYTES: usize = 1 << 20;

/// Split `items` into messages of at most [`CHUNK_BYTES`] (an item larger
/// than that travels alone) and wrap each with `wrap`. No items, no
/// messages: the client reads end-of-stream at once.
pub(crate) fn chunked<I, T>(items: Vec<I>, wrap: impl Fn(Vec<I>) -> T) -> Chunks<T>
where
    I: prost::Message,
    T: Send + 'static,
{
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut size = 0;
    for it in items {
        let n = it.encoded_len();
        if !cur.is_empty() && size + n > CHUNK_BYTES {
            out.push(Ok(wrap(std::mem::take(&mut cur))));
            size = 0;
        }
        size += n;
        cur.push(it);
    }
    if !cur.is_empty() {
        out.push(Ok(wrap(cur)));
    }
    Box::pin(tokio_stream::iter(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;
    use tokio_stream::StreamExt;

    fn image(n: usize) -> proto::Image {
        proto::Image {
            id: format!("sha256:{n:064}"),
            repo_tags: vec!["x".repeat(100_000)],
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn chunks_keep_every_item_in_order_and_stay_small() {
        let items: Vec<_> = (0..25).map(image).collect();
        let msgs: Vec<_> = chunked(items.clone(), |images| proto::StreamImagesResponse {
            images,
        })
        .collect::<Vec<_>>()
        .await;
        assert!(msgs.len() >= 3, "{} messages", msgs.len());
        let mut seen = Vec::new();
        for m in msgs {
            let m = m.unwrap_or_else(|e| panic!("{e}"));
            assert!(prost::Message::encoded_len(&m) <= CHUNK_BYTES + 16);
            seen.extend(m.images);
        }
        assert_eq!(seen, items);
    }

    #[tokio::test]
    async fn nothing_to_send_ends_the_stream() {
        let msgs: Vec<_> = chunked(Vec::<proto::Image>::new(), |images| {
            proto::StreamImagesResponse { images }
        })
        .collect::<Vec<_>>()
        .await;
        assert!(msgs.is_empty());
    }
}
