//! NRI's two framings, one inside the other.
//!
//! The plugin's unix connection (the trunk) carries two logical byte
//! streams, told apart by a mux frame header: connection ID (u32, big
//! endian) then payload length (u32). Connection 1 carries the plugin's
//! service (podctl calls it), connection 2 the runtime's (the plugin
//! calls podctl). Each stream is a sequence of ttrpc messages: length
//! (u32), stream ID (u32), type (u8), flags (u8), then the protobuf.
//!
//! A Go reader takes a stream through a 4096-byte buffer and cannot take
//! a frame bigger than the buffer it reads into, so a message goes out as
//! Go's own writer sends it: its first 4096 bytes in one frame, the rest
//! in a second.

use std::collections::HashMap;

/// The logical connection of the plugin's service.
pub const PLUGIN_CONN: u32 = 1;
/// The logical connection of the runtime's service.
pub const RUNTIME_CONN: u32 = 2;

/// A mux frame's header length.
pub const FRAME_HEADER: usize = 8;
/// A ttrpc message header's length.
pub const MESSAGE_HEADER: usize = 10;
/// The largest ttrpc message body.
pub const MAX_MESSAGE: usize = 4 << 20;
/// The largest mux frame body.
pub const MAX_FRAME: usize = MESSAGE_HEADER + MAX_MESSAGE;
/// What a Go reader buffers: no frame that starts a message is longer.
const FIRST_FRAME: usize = 4096;

/// A ttrpc request.
pub const TYPE_REQUEST: u8 = 1;
/// A ttrpc response.
pub const TYPE_RESPONSE: u8 = 2;

/// A ttrpc message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub stream: u32,
    pub kind: u8,
    pub flags: u8,
    pub body: Vec<u8>,
}

/// What a peer sent that cannot be NRI.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("mux frame of {0} bytes (at most {MAX_FRAME})")]
    FrameTooLong(usize),
    #[error("ttrpc message of {0} bytes (at most {MAX_MESSAGE})")]
    MessageTooLong(usize),
}

/// A mux frame header's fields: (connection, payload length).
pub fn frame_header(h: [u8; FRAME_HEADER]) -> Result<(u32, usize), WireError> {
    let conn = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
    if len > MAX_FRAME {
        return Err(WireError::FrameTooLong(len));
    }
    Ok((conn, len))
}

/// The bytes that send `msg` on logical connection `conn`: one or two
/// mux frames.
pub fn encode(conn: u32, msg: &Message) -> Result<Vec<u8>, WireError> {
    if msg.body.len() > MAX_MESSAGE {
        return Err(WireError::MessageTooLong(msg.body.len()));
    }
    let mut stream = Vec::with_capacity(MESSAGE_HEADER + msg.body.len());
    stream.extend_from_slice(&(msg.body.len() as u32).to_be_bytes());
    stream.extend_from_slice(&msg.stream.to_be_bytes());
    stream.push(msg.kind);
    stream.push(msg.flags);
    stream.extend_from_slice(&msg.body);
    let mut out = Vec::with_capacity(stream.len() + 2 * FRAME_HEADER);
    let (first, rest) = stream.split_at(stream.len().min(FIRST_FRAME));
    for chunk in [first, rest] {
        if chunk.is_empty() {
            continue;
        }
        out.extend_from_slice(&conn.to_be_bytes());
        out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    Ok(out)
}

/// Each logical connection's bytes so far, cut into ttrpc messages as
/// they complete (a message may span frames, a frame may hold several).
#[derive(Default)]
pub struct Reassembler {
    streams: HashMap<u32, Vec<u8>>,
}

impl Reassembler {
    /// Add a frame's payload for `conn`; returns the messages it
    /// completed, in order.
    pub fn push(&mut self, conn: u32, payload: &[u8]) -> Result<Vec<Message>, WireError> {
        let buf = self.streams.entry(conn).or_default();
        buf.extend_from_slice(payload);
        let mut out = Vec::new();
        let mut at = 0;
        while buf.len() - at >= MESSAGE_HEADER {
            let h = &buf[at..at + MESSAGE_HEADER];
            let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
            if len > MAX_MESSAGE {
                return Err(WireError::MessageTooLong(len));
            }
            if buf.len() - at < MESSAGE_HEADER + len {
                break;
            }
            out.push(Message {
                stream: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                kind: h[8],
                flags: h[9],
                body: buf[at + MESSAGE_HEADER..at + MESSAGE_HEADER + len].to_vec(),
            });
            at += MESSAGE_HEADER + len;
        }
        buf.drain(..at);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(mut bytes: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let h: [u8; FRAME_HEADER] = bytes[..FRAME_HEADER].try_into().unwrap();
            let (conn, len) = frame_header(h).unwrap();
            out.push((conn, bytes[FRAME_HEADER..FRAME_HEADER + len].to_vec()));
            bytes = &bytes[FRAME_HEADER + len..];
        }
        out
    }

    #[test]
    fn a_small_message_is_one_frame_with_both_headers() {
        let msg = Message {
            stream: 1,
            kind: TYPE_RESPONSE,
            flags: 0,
            body: vec![0x0a, 0x00, 0x12, 0x03, 0x10, 0xaf, 0x0c],
        };
        let bytes = encode(PLUGIN_CONN, &msg).unwrap();
        assert_eq!(
            bytes,
            [
                &[0, 0, 0, 1, 0, 0, 0, 17][..],
                &[0, 0, 0, 7, 0, 0, 0, 1, 2, 0],
                &msg.body
            ]
            .concat()
        );
        let mut r = Reassembler::default();
        assert_eq!(r.push(1, &bytes[8..]).unwrap(), vec![msg]);
    }

    #[test]
    fn a_large_message_is_its_first_4096_bytes_then_the_rest() {
        let msg = Message {
            stream: 7,
            kind: TYPE_REQUEST,
            flags: 0,
            body: (0..10_000u32).map(|i| i as u8).collect(),
        };
        let f = frames(&encode(RUNTIME_CONN, &msg).unwrap());
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].1.len(), 4096);
        assert_eq!(f[1].1.len(), 10_000 + MESSAGE_HEADER - 4096);
        let mut r = Reassembler::default();
        assert!(r.push(2, &f[0].1).unwrap().is_empty());
        assert_eq!(r.push(2, &f[1].1).unwrap(), vec![msg]);
    }

    #[test]
    fn messages_are_cut_out_of_any_split_of_the_stream() {
        let a = Message {
            stream: 1,
            kind: TYPE_REQUEST,
            flags: 0,
            body: b"first".to_vec(),
        };
        let b = Message {
            stream: 3,
            kind: TYPE_REQUEST,
            flags: 0,
            body: vec![],
        };
        let mut stream = Vec::new();
        for m in [&a, &b] {
            for (_, p) in frames(&encode(1, m).unwrap()) {
                stream.extend(p);
            }
        }
        for cut in 0..stream.len() {
            let mut r = Reassembler::default();
            let mut got = r.push(1, &stream[..cut]).unwrap();
            got.extend(r.push(1, &stream[cut..]).unwrap());
            assert_eq!(got, vec![a.clone(), b.clone()], "cut at {cut}");
        }
    }

    #[test]
    fn oversized_lengths_are_refused() {
        let mut h = [0u8; 8];
        h[4..].copy_from_slice(&((MAX_FRAME + 1) as u32).to_be_bytes());
        assert_eq!(frame_header(h), Err(WireError::FrameTooLong(MAX_FRAME + 1)));
        let mut r = Reassembler::default();
        let big = ((MAX_MESSAGE + 1) as u32).to_be_bytes();
        let head = [&big[..], &[0, 0, 0, 1, 1, 0]].concat();
        assert_eq!(
            r.push(1, &head),
            Err(WireError::MessageTooLong(MAX_MESSAGE + 1))
        );
    }
}
