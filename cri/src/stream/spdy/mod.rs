//! SPDY/3.1 as Kubernetes streaming clients speak it (client-go's
//! `httpstream/spdy` over moby/spdystream): frames, zlib-compressed header
//! blocks, and a connection that hands out the streams the client opens.
//! Flow control is not enforced: spdystream never sends WINDOW_UPDATE, so a
//! server honouring windows would stall after 64 KiB.

mod conn;
mod frame;
mod headers;

pub use conn::{Connection, Fin, Incoming, Stream, StreamReader, StreamWriter};
pub use frame::{Frame, FrameError};
pub use headers::{HeaderCodec, Headers};
