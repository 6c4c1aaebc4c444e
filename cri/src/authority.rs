//! Requests whose HTTP/2 `:authority` is not a URI authority.
//!
//! gRPC clients of the kubelet's age (grpc-go as in kubelet ≤ 1.25,
//! grpc-java, the C core behind Python and C++) dialling `unix:///path`
//! send the socket path — or its percent-encoding, or nothing — as
//! `:authority`. containerd and CRI-O ignore it; the h2 server behind
//! tonic refuses the request as malformed (RST_STREAM PROTOCOL_ERROR), so
//! such a kubelet cannot even ask for the runtime's version.
//!
//! [`AuthorityFix`] sits between the accepted socket and the HTTP/2
//! server and reads the client's frames on their way in. The server's
//! direction is never touched. The first request on a connection decides:
//!
//! - its `:authority` is absent or valid: the connection is passed
//!   through byte for byte from then on (new clients send `localhost`);
//! - it is not: every header block of the connection is decoded with the
//!   client's HPACK state and re-encoded as literals without indexing
//!   (so the server's decoder table stays empty and in step), an invalid
//!   `:authority` replaced by `localhost`.
//!
//! Anything that does not parse is passed on as it came, so the HTTP/2
//! server sees and answers the same protocol errors it would without this
//! layer.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface (RFC 9113 §3.4).
const PREFACE_LEN: usize = 24;
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The server's SETTINGS_MAX_FRAME_SIZE (h2's default, which tonic keeps).
const MAX_FRAME: usize = 16_384;
/// A header block larger than this is passed on untouched (the server's
/// own header-list limit then applies).
const MAX_BLOCK: usize = 1 << 20;
/// What replaces an invalid `:authority`.
const LOCALHOST: &[u8] = b"localhost";

/// Whether `v` is an authority the HTTP/2 server accepts.
pub fn valid_authority(v: &[u8]) -> bool {
    http::uri::Authority::try_from(v).is_ok()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// No request seen yet.
    Undecided,
    /// Header blocks are re-encoded.
    Rewrite,
    /// Bytes pass unchanged.
    Passthrough,
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Bytes of the connection preface still to pass.
    Preface(usize),
    /// At a frame boundary.
    Frame,
    /// Payload bytes of a frame that passes unchanged.
    Skip(usize),
}

/// A header block being collected (HEADERS, then CONTINUATION frames).
struct Block {
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    /// The frames as received, for when the block passes unchanged.
    raw: Vec<u8>,
}

/// A client stream whose requests' `:authority` is made acceptable.
pub struct AuthorityFix<S> {
    inner: S,
    mode: Mode,
    phase: Phase,
    input: BytesMut,
    output: BytesMut,
    block: Option<Block>,
    decoder: Option<loona_hpack::Decoder<'static>>,
    eof: bool,
    /// Some header block was re-encoded (the mode may have moved on to
    /// passing everything since).
    rewrote: bool,
}

impl<S> AuthorityFix<S> {
    pub fn new(inner: S) -> Self {
        AuthorityFix {
            inner,
            mode: Mode::Undecided,
            phase: Phase::Preface(PREFACE_LEN),
            input: BytesMut::new(),
            output: BytesMut::new(),
            block: None,
            decoder: Some(loona_hpack::Decoder::new()),
            eof: false,
            rewrote: false,
        }
    }

    /// Whether a header block of this connection has been re-encoded.
    pub fn rewriting(&self) -> bool {
        self.rewrote
    }

    /// Take `bytes` as if read from the client; what may go on to the
    /// server so far, and whether nothing is held back (for the fuzz test).
    #[cfg(test)]
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> (BytesMut, bool) {
        self.input.extend_from_slice(bytes);
        self.process();
        let settled = self.input.is_empty() && self.block.is_none();
        (self.output.split(), settled)
    }

    /// Give up on framing: everything from here on passes as it is.
    fn pass_everything(&mut self) {
        if let Some(b) = self.block.take() {
            self.output.extend_from_slice(&b.raw);
        }
        self.mode = Mode::Passthrough;
        self.decoder = None;
        let rest = self.input.split();
        self.output.unsplit(rest);
    }

    /// Move what can be decided from `input` to `output`.
    fn process(&mut self) {
        loop {
            if self.mode == Mode::Passthrough {
                let rest = self.input.split();
                self.output.unsplit(rest);
                return;
            }
            match self.phase {
                Phase::Preface(n) | Phase::Skip(n) => {
                    let take = n.min(self.input.len());
                    if take == 0 && n > 0 {
                        return;
                    }
                    let chunk = self.input.split_to(take);
                    self.output.unsplit(chunk);
                    self.phase = if n == take {
                        Phase::Frame
                    } else {
                        match self.phase {
                            Phase::Preface(_) => Phase::Preface(n - take),
                            _ => Phase::Skip(n - take),
                        }
                    };
                }
                Phase::Frame => {
                    if self.input.len() < FRAME_HEADER {
                        return;
                    }
                    let h = &self.input[..FRAME_HEADER];
                    let len =
                        (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
                    let kind = h[3];
                    let in_block = self.block.is_some();
                    let header_frame = kind == HEADERS || kind == CONTINUATION;
                    if !header_frame {
                        if in_block {
                            // A block interrupted: a protocol error the server will name.
                            self.pass_everything();
                            return;
                        }
                        let head = self.input.split_to(FRAME_HEADER);
                        self.output.unsplit(head);
                        self.phase = Phase::Skip(len);
                        continue;
                    }
                    if self.input.len() < FRAME_HEADER + len {
                        return;
                    }
                    let frame = self.input.split_to(FRAME_HEADER + len);
                    if !self.header_frame(&frame) {
                        self.pass_everything();
                        return;
                    }
                }
            }
        }
    }

    /// Take one HEADERS or CONTINUATION frame; false when it cannot be
    /// followed (the caller then passes everything on).
    fn header_frame(&mut self, frame: &[u8]) -> bool {
        let kind = frame[3];
        let flags = frame[4];
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER..];
        match (kind, self.block.as_mut()) {
            (HEADERS, None) => {
                let mut p = payload;
                let mut pad = 0usize;
                if flags & PADDED != 0 {
                    let Some((&n, rest)) = p.split_first() else {
                        return self.refuse(frame);
                    };
                    pad = usize::from(n);
                    p = rest;
                }
                let mut priority = None;
                if flags & PRIORITY != 0 {
                    if p.len() < 5 {
                        return self.refuse(frame);
                    }
                    let mut pr = [0u8; 5];
                    pr.copy_from_slice(&p[..5]);
                    priority = Some(pr);
                    p = &p[5..];
                }
                if pad > p.len() {
                    return self.refuse(frame);
                }
                self.block = Some(Block {
                    stream,
                    flags,
                    priority,
                    fragment: p[..p.len() - pad].to_vec(),
                    raw: frame.to_vec(),
                });
            }
            (CONTINUATION, Some(b)) if b.stream == stream => {
                b.fragment.extend_from_slice(payload);
                b.raw.extend_from_slice(frame);
                b.flags |= flags & END_HEADERS;
            }
            _ => return self.refuse(frame),
        }
        let Some(b) = self.block.as_ref() else {
            return false;
        };
        if b.fragment.len() > MAX_BLOCK {
            return false;
        }
        if b.flags & END_HEADERS == 0 {
            return true;
        }
        let Some(b) = self.block.take() else {
            return false;
        };
        self.finish_block(b)
    }

    /// A frame that cannot be followed: it goes on as it came, after the
    /// frames of the block it interrupts, and the caller passes everything
    /// from here on. False, for the caller to return.
    fn refuse(&mut self, frame: &[u8]) -> bool {
        if let Some(b) = self.block.take() {
            self.output.extend_from_slice(&b.raw);
        }
        self.output.extend_from_slice(frame);
        false
    }

    /// A whole header block: decide, then pass or re-encode it.
    fn finish_block(&mut self, b: Block) -> bool {
        let Some(decoder) = self.decoder.as_mut() else {
            self.block = Some(b);
            return false;
        };
        let headers = match decoder.decode(&b.fragment) {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(error = ?e, "HPACK block not decodable; passing it on");
                self.block = Some(b);
                return false;
            }
        };
        let bad = headers
            .iter()
            .any(|(n, v)| n == b":authority" && !valid_authority(v));
        if self.mode == Mode::Undecided {
            if !bad {
                self.block = Some(b);
                return false; // passes everything from here on
            }
            tracing::debug!("client sends an invalid :authority; rewriting its header blocks");
            self.mode = Mode::Rewrite;
            self.rewrote = true;
        }
        let mut block = Vec::with_capacity(b.fragment.len() + 64);
        for (name, value) in &headers {
            let value: &[u8] = if name == b":authority" && !valid_authority(value) {
                LOCALHOST
            } else {
                value
            };
            encode_literal(&mut block, name, value);
        }
        write_block(&mut self.output, b.stream, b.flags, b.priority, &block);
        true
    }
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn encode_int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 0x80 {
        out.push((v & 0x7f) as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A literal header field without indexing, new name, no Huffman coding
/// (RFC 7541 §6.2.2).
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    for s in [name, value] {
        encode_int(out, 0x00, 7, s.len());
        out.extend_from_slice(s);
    }
}

/// A header block as HEADERS and CONTINUATION frames within the server's
/// frame size.
fn write_block(
    out: &mut BytesMut,
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    block: &[u8],
) {
    let first_room = MAX_FRAME - if priority.is_some() { 5 } else { 0 };
    let (first, mut rest) = block.split_at(block.len().min(first_room));
    let mut f = flags & (END_STREAM | PRIORITY);
    if rest.is_empty() {
        f |= END_HEADERS;
    }
    let len = first.len() + if priority.is_some() { 5 } else { 0 };
    frame_header(out, len, HEADERS, f, stream);
    if let Some(p) = priority {
        out.extend_from_slice(&p);
    }
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME));
        rest = tail;
        let f = if rest.is_empty() { END_HEADERS } else { 0 };
        frame_header(out, chunk.len(), CONTINUATION, f, stream);
        out.extend_from_slice(chunk);
    }
}

fn frame_header(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    out.put_uint(len as u64, 3);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream & 0x7fff_ffff);
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.mode == Mode::Passthrough && this.input.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            if this.eof {
                // An unfinished frame at the end goes as it came.
                let rest = this.input.split();
                this.output.unsplit(rest);
                if this.output.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            let mut chunk = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                this.eof = true;
            } else {
                this.input.extend_from_slice(rb.filled());
                this.process();
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityFix<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        frame_header(&mut b, payload.len(), kind, flags, stream);
        b.extend_from_slice(payload);
        b.to_vec()
    }

    fn request(encoder: &mut loona_hpack::Encoder<'_>, authority: &[u8]) -> Vec<u8> {
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/runtime.v1.RuntimeService/Version"),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ];
        encoder.encode(headers)
    }

    /// Everything the server side reads, with the client's bytes fed in
    /// small pieces.
    async fn through(input: Vec<u8>) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in input.chunks(7) {
                client.write_all(piece).await.map_err(|e| e.to_string())?;
            }
            client.shutdown().await.map_err(|e| e.to_string())
        });
        let mut fix = AuthorityFix::new(server);
        let mut out = Vec::new();
        fix.read_to_end(&mut out)
            .await
            .map_err(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(writer.await.ok(), Some(Ok(())));
        out
    }

    /// The header blocks the server decodes from `bytes`.
    fn blocks(bytes: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        assert!(bytes.starts_with(PREFACE));
        let mut p = &bytes[PREFACE.len()..];
        let mut dec = loona_hpack::Decoder::new();
        let mut out = Vec::new();
        let mut block = Vec::new();
        while p.len() >= FRAME_HEADER {
            let len = (usize::from(p[0]) << 16) | (usize::from(p[1]) << 8) | usize::from(p[2]);
            let (kind, flags) = (p[3], p[4]);
            let payload = &p[FRAME_HEADER..FRAME_HEADER + len];
            if kind == HEADERS || kind == CONTINUATION {
                let skip = if kind == HEADERS && flags & PRIORITY != 0 {
                    5
                } else {
                    0
                };
                block.extend_from_slice(&payload[skip..]);
                if flags & END_HEADERS != 0 {
                    out.push(dec.decode(&block).unwrap_or_default());
                    block.clear();
                }
            }
            p = &p[FRAME_HEADER + len..];
        }
        assert!(p.is_empty());
        out
    }

    fn authority(block: &[(Vec<u8>, Vec<u8>)]) -> Option<&[u8]> {
        block
            .iter()
            .find(|(n, _)| n == b":authority")
            .map(|(_, v)| v.as_slice())
    }

    #[test]
    fn validity_matches_what_h2_accepts() {
        assert!(valid_authority(b"localhost"));
        assert!(valid_authority(b"127.0.0.1:80"));
        assert!(!valid_authority(b"/run/podctl/podctl.sock"));
        assert!(!valid_authority(b""));
    }

    #[tokio::test]
    async fn socket_path_authority_is_rewritten_on_every_request() {
        let mut enc = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        for stream in [1u32, 3, 5] {
            let block = request(&mut enc, b"/run/podctl/podctl.sock");
            input.extend(frame(HEADERS, END_HEADERS, stream, &block));
            input.extend(frame(0x0, END_STREAM, stream, &[0, 0, 0, 0, 0]));
        }
        let out = through(input).await;
        let seen = blocks(&out);
        assert_eq!(seen.len(), 3);
        for b in &seen {
            assert_eq!(authority(b), Some(&b"localhost"[..]));
            assert!(b
                .iter()
                .any(|(n, v)| n == b":path" && v == b"/runtime.v1.RuntimeService/Version"));
        }
    }

    #[tokio::test]
    async fn valid_authority_passes_byte_for_byte() {
        let mut enc = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        for stream in [1u32, 3] {
            let block = request(&mut enc, b"localhost");
            input.extend(frame(HEADERS, END_HEADERS, stream, &block));
            input.extend(frame(0x0, END_STREAM, stream, &[0, 0, 0, 0, 0]));
        }
        assert_eq!(through(input.clone()).await, input);
    }

    #[tokio::test]
    async fn padded_prioritized_and_continued_blocks_are_rewritten() {
        let mut enc = loona_hpack::Encoder::new();
        let block = request(&mut enc, b"%2Frun%2Fx.sock/");
        let (a, b) = block.split_at(block.len() / 2);
        let mut headers = vec![3u8]; // pad length
        headers.extend_from_slice(&[0, 0, 0, 0, 15]); // priority
        headers.extend_from_slice(a);
        headers.extend_from_slice(&[0, 0, 0]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 1, &headers));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, b));
        let out = through(input).await;
        let seen = blocks(&out);
        assert_eq!(seen.len(), 1);
        assert_eq!(authority(&seen[0]), Some(&b"localhost"[..]));
        // HEADERS keeps END_STREAM and the priority, drops the padding.
        let h = &out[PREFACE.len()..];
        assert_eq!(h[3], HEADERS);
        assert_eq!(h[4], END_STREAM | PRIORITY | END_HEADERS);
        assert_eq!(&h[FRAME_HEADER..FRAME_HEADER + 5], &[0, 0, 0, 0, 15]);
    }

    #[tokio::test]
    async fn garbage_passes_unchanged() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &[0xff, 0xff, 0xff, 0xff]));
        input.extend_from_slice(b"trailing");
        assert_eq!(through(input.clone()).await, input);
    }

    #[test]
    fn long_integers_round_trip() {
        let mut enc = Vec::new();
        let long = vec![b'a'; 70_000];
        encode_literal(&mut enc, b"x-long", &long);
        let mut dec = loona_hpack::Decoder::new();
        let got = dec.decode(&enc).unwrap_or_default();
        assert_eq!(got, vec![(b"x-long".to_vec(), long)]);
    }
}
