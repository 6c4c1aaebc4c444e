//! SPDY/3 frames: an 8-byte header (control bit, version and type, or a
//! stream ID; flags; 24-bit length) and a body.

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;
/// Largest frame body accepted (16 MiB is the protocol's limit; headers
/// and data from streaming clients are far smaller).
pub const MAX_BODY: usize = 1 << 24;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    #[error("control frame type {kind} with a {len}-byte body is malformed")]
    Malformed { kind: u16, len: usize },
    #[error("header block: {0}")]
    Headers(String),
}

/// One frame; header blocks are still compressed (see `HeaderCodec`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream: u32,
        fin: bool,
        data: Bytes,
    },
    SynStream {
        stream: u32,
        associated: u32,
        priority: u8,
        fin: bool,
        unidirectional: bool,
        block: Bytes,
    },
    SynReply {
        stream: u32,
        fin: bool,
        block: Bytes,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Settings {
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream: u32,
        fin: bool,
        block: Bytes,
    },
    WindowUpdate {
        stream: u32,
        delta: u32,
    },
    /// A control frame type this side ignores (the spec says to).
    Unknown {
        kind: u16,
    },
}

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

impl Frame {
    /// Decode one frame from the front of `buf`; `Ok(None)` when more bytes
    /// are needed. Consumes the frame's bytes on success.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let first = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let flags = buf[4];
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if len > MAX_BODY {
            return Err(FrameError::Malformed { kind: 0, len });
        }
        if buf.len() < 8 + len {
            return Ok(None);
        }
        buf.advance(8);
        let mut body = buf.split_to(len).freeze();
        let fin = flags & FLAG_FIN != 0;
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream: first & 0x7fff_ffff,
                fin,
                data: body,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        let kind = (first & 0xffff) as u16;
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let bad = || FrameError::Malformed { kind, len };
        let need = |n: usize| if len < n { Err(bad()) } else { Ok(()) };
        Ok(Some(match kind {
            SYN_STREAM => {
                need(10)?;
                let stream = body.get_u32() & 0x7fff_ffff;
                let associated = body.get_u32() & 0x7fff_ffff;
                let priority = body.get_u8() >> 5;
                body.advance(1);
                Frame::SynStream {
                    stream,
                    associated,
                    priority,
                    fin,
                    unidirectional: flags & 0x02 != 0,
                    block: body,
                }
            }
            SYN_REPLY => {
                need(4)?;
                Frame::SynReply {
                    stream: body.get_u32() & 0x7fff_ffff,
                    fin,
                    block: body,
                }
            }
            RST_STREAM => {
                need(8)?;
                Frame::RstStream {
                    stream: body.get_u32() & 0x7fff_ffff,
                    status: body.get_u32(),
                }
            }
            SETTINGS => {
                need(4)?;
                let n = body.get_u32() as usize;
                if body.len() != n.checked_mul(8).ok_or_else(bad)? {
                    return Err(bad());
                }
                let entries = (0..n)
                    .map(|_| {
                        let head = body.get_u32();
                        ((head >> 24) as u8, head & 0x00ff_ffff, body.get_u32())
                    })
                    .collect();
                Frame::Settings { entries }
            }
            PING => {
                need(4)?;
                Frame::Ping { id: body.get_u32() }
            }
            GOAWAY => {
                need(4)?;
                let last_good = body.get_u32() & 0x7fff_ffff;
                let status = if body.len() >= 4 { body.get_u32() } else { 0 };
                Frame::GoAway { last_good, status }
            }
            HEADERS => {
                need(4)?;
                Frame::Headers {
                    stream: body.get_u32() & 0x7fff_ffff,
                    fin,
                    block: body,
                }
            }
            WINDOW_UPDATE => {
                need(8)?;
                Frame::WindowUpdate {
                    stream: body.get_u32() & 0x7fff_ffff,
                    delta: body.get_u32() & 0x7fff_ffff,
                }
            }
            other => Frame::Unknown { kind: other },
        }))
    }

    /// Append the encoded frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let control = |out: &mut BytesMut, kind: u16, flags: u8, body: &[u8]| {
            out.put_u32(0x8000_0000 | (u32::from(VERSION) << 16) | u32::from(kind));
            out.put_u32((u32::from(flags) << 24) | (body.len() as u32 & 0x00ff_ffff));
            out.put_slice(body);
        };
        let fin_flag = |fin: bool| if fin { FLAG_FIN } else { 0 };
        match self {
            Frame::Data { stream, fin, data } => {
                out.put_u32(stream & 0x7fff_ffff);
                out.put_u32((u32::from(fin_flag(*fin)) << 24) | (data.len() as u32 & 0x00ff_ffff));
                out.put_slice(data);
            }
            Frame::SynStream {
                stream,
                associated,
                priority,
                fin,
                unidirectional,
                block,
            } => {
                let mut b = BytesMut::with_capacity(10 + block.len());
                b.put_u32(*stream);
                b.put_u32(*associated);
                b.put_u8(priority << 5);
                b.put_u8(0);
                b.put_slice(block);
                let flags = fin_flag(*fin) | if *unidirectional { 0x02 } else { 0 };
                control(out, SYN_STREAM, flags, &b);
            }
            Frame::SynReply { stream, fin, block } => {
                let mut b = BytesMut::with_capacity(4 + block.len());
                b.put_u32(*stream);
                b.put_slice(block);
                control(out, SYN_REPLY, fin_flag(*fin), &b);
            }
            Frame::RstStream { stream, status } => {
                let mut b = BytesMut::new();
                b.put_u32(*stream);
                b.put_u32(*status);
                control(out, RST_STREAM, 0, &b);
            }
            Frame::Settings { entries } => {
                let mut b = BytesMut::new();
                b.put_u32(entries.len() as u32);
                for (flags, id, value) in entries {
                    b.put_u32((u32::from(*flags) << 24) | (id & 0x00ff_ffff));
                    b.put_u32(*value);
                }
                control(out, SETTINGS, 0, &b);
            }
            Frame::Ping { id } => control(out, PING, 0, &id.to_be_bytes()),
            Frame::GoAway { last_good, status } => {
                let mut b = BytesMut::new();
                b.put_u32(*last_good);
                b.put_u32(*status);
                control(out, GOAWAY, 0, &b);
            }
            Frame::Headers { stream, fin, block } => {
                let mut b = BytesMut::with_capacity(4 + block.len());
                b.put_u32(*stream);
                b.put_slice(block);
                control(out, HEADERS, fin_flag(*fin), &b);
            }
            Frame::WindowUpdate { stream, delta } => {
                let mut b = BytesMut::new();
                b.put_u32(*stream);
                b.put_u32(*delta);
                control(out, WINDOW_UPDATE, 0, &b);
            }
            Frame::Unknown { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_partial_input_waits() {
        let frames = vec![
            Frame::Data {
                stream: 3,
                fin: true,
                data: Bytes::from_static(b"hello"),
            },
            Frame::SynStream {
                stream: 1,
                associated: 0,
                priority: 2,
                fin: false,
                unidirectional: false,
                block: Bytes::from_static(b"\x01\x02"),
            },
            Frame::SynReply {
                stream: 1,
                fin: false,
                block: Bytes::from_static(b"xyz"),
            },
            Frame::RstStream {
                stream: 5,
                status: 1,
            },
            Frame::Settings {
                entries: vec![(0, 7, 65536)],
            },
            Frame::Ping { id: 9 },
            Frame::GoAway {
                last_good: 7,
                status: 0,
            },
            Frame::WindowUpdate {
                stream: 1,
                delta: 1000,
            },
        ];
        let mut buf = BytesMut::new();
        for f in &frames {
            f.encode(&mut buf);
        }
        let whole = buf.clone();
        let mut got = Vec::new();
        while let Some(f) = Frame::decode(&mut buf).unwrap_or_else(|e| panic!("{e}")) {
            got.push(f);
        }
        assert_eq!(got, frames);
        let mut partial = BytesMut::from(&whole[..10]);
        assert_eq!(Frame::decode(&mut partial), Ok(None));
    }

    #[test]
    fn malformed_frames_are_errors() {
        // A RST_STREAM with a 2-byte body.
        let mut b = BytesMut::from(&[0x80, 3, 0, 3, 0, 0, 0, 2, 0, 0][..]);
        assert!(Frame::decode(&mut b).is_err());
        // SPDY/2.
        let mut b = BytesMut::from(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert_eq!(Frame::decode(&mut b), Err(FrameError::Version(2)));
    }
}
