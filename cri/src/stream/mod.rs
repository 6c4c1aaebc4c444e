//! The CRI streaming server (Exec, Attach, PortForward): see [`backend`]
//! for what it needs from the runtime.

pub mod backend;

pub use backend::{BackendError, Duplex, StreamBackend, StreamIo, TermSize};
