//! What the streaming server needs from the runtime: run a command with
//! live stdio, attach to a container's stdio, connect to a port inside a
//! pod's network namespace. The CRI service implements this over the
//! runtime; tests implement it with in-process fakes.

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// A byte source the backend reads (client stdin).
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// A byte sink the backend writes (client stdout/stderr).
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;
/// A bidirectional byte stream (a forwarded TCP connection).
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// Terminal size in character cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TermSize {
    pub width: u16,
    pub height: u16,
}

/// The client's side of an exec or attach session. A `None` stream was
/// not requested. With `tty`, the terminal's output comes on `stdout` only
/// and `resize` carries window size changes.
pub struct StreamIo {
    pub stdin: Option<Reader>,
    pub stdout: Option<Writer>,
    pub stderr: Option<Writer>,
    pub tty: bool,
    pub resize: Option<mpsc::Receiver<TermSize>>,
}

/// Why a backend call failed; shown to the client.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("container {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Failed(String),
}

/// The runtime behind the streaming server.
pub trait StreamBackend: Send + Sync + 'static {
    /// Run `cmd` in the running container with the given stdio; resolve to
    /// the command's exit code once it ends and its output is flushed.
    fn exec(
        &self,
        container_id: String,
        cmd: Vec<String>,
        io: StreamIo,
    ) -> BoxFuture<'static, Result<i32, BackendError>>;

    /// Attach to the container's main process stdio until the container
    /// exits or the client leaves.
    fn attach(
        &self,
        container_id: String,
        io: StreamIo,
    ) -> BoxFuture<'static, Result<(), BackendError>>;

    /// Open a TCP connection to `127.0.0.1:port` (or `[::1]`) inside the
    /// pod sandbox's network namespace.
    fn port_forward(
        &self,
        sandbox_id: String,
        port: u16,
    ) -> BoxFuture<'static, Result<Box<dyn Duplex>, BackendError>>;
}
