//! Serving the CRI on a unix socket: the socket is created mode 0660,
//! systemd is told `READY=1` once it accepts connections (when started
//! with `NOTIFY_SOCKET`), and the server drains when `shutdown` resolves;
//! a [`SocketFile`] removes the socket when the daemon stops.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::StreamExt as _;

use crate::authority::AuthorityFix;
use crate::error::{IoContext, Result};
use crate::proto::image_service_server::ImageServiceServer;
use crate::proto::runtime_service_server::RuntimeServiceServer;
use crate::service::CriService;

/// Messages up to this size (the kubelet's limit) are accepted and sent.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Bind the socket, replacing a stale one.
pub fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ctx("create", dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).ctx("remove", path),
        _ => {}
    }
    let l = UnixListener::bind(path).ctx("bind", path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).ctx("chmod", path)?;
    Ok(l)
}

/// The socket file [`bind`] made, removed when this is dropped (the
/// daemon stops), unless another daemon has bound the path since (then
/// the file is that one's).
pub struct SocketFile {
    path: std::path::PathBuf,
    inode: Option<u64>,
}

impl SocketFile {
    pub fn new(path: &Path) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        SocketFile {
            path: path.to_path_buf(),
            inode: std::fs::metadata(path).ok().map(|m| m.ino()),
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt as _;
        let now = std::fs::metadata(&self.path).ok().map(|m| m.ino());
        if now.is_some() && now == self.inode {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!(socket = %self.path.display(), error = %e, "removing the socket");
            }
        }
    }
}

/// Serve RuntimeService and ImageService on `listener` until `shutdown`.
pub async fn serve(
    svc: CriService,
    listener: UnixListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let rt = RuntimeServiceServer::new(svc.clone())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let img = ImageServiceServer::new(svc)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    // Old gRPC clients' socket-path `:authority` is made acceptable.
    let incoming = UnixListenerStream::new(listener).map(|c| c.map(AuthorityFix::new));
    notify("READY=1");
    tonic::transport::Server::builder()
        .add_service(rt)
        .add_service(img)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| crate::CriError::Internal(format!("gRPC server: {e}")))?;
    notify("STOPPING=1");
    Ok(())
}

/// Send a state line to systemd's notification socket, if any.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sock = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "sd_notify socket");
            return;
        }
    };
    let bytes = path.as_encoded_bytes();
    let res = if let Some(abs) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abs)
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), Path::new(&path))
    };
    if let Err(e) = res {
        tracing::warn!(error = %e, "sd_notify {state}");
    }
}
