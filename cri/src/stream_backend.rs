//! The streaming server's backend over podctl's runtime: exec runs
//! `podctl-shim exec` with live stdio (a pty with `tty`), attach talks to
//! the container monitor's attach socket, port-forward connects inside
//! the pod's network namespace from a dedicated thread.

use std::os::fd::AsRawFd as _;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use podctl_runtime::ContainerState;
use podctl_shim::attach as frames;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::error::CriError;
use crate::service::CriService;
use crate::stream::{BackendError, Duplex, StreamBackend, StreamIo};

/// [`StreamBackend`] over a [`CriService`]'s runtime.
#[derive(Clone)]
pub struct RuntimeBackend {
    svc: CriService,
}

impl RuntimeBackend {
    pub fn new(svc: CriService) -> Arc<Self> {
        Arc::new(RuntimeBackend { svc })
    }
}

fn backend_err(e: CriError) -> BackendError {
    match e {
        CriError::NotFound { id, .. } => BackendError::NotFound(id),
        other => BackendError::Failed(other.to_string()),
    }
}

fn failed(e: impl std::fmt::Display) -> BackendError {
    BackendError::Failed(e.to_string())
}

async fn exec(
    svc: CriService,
    id: String,
    cmd: Vec<String>,
    io: StreamIo,
) -> Result<i32, BackendError> {
    let id = svc.container_id(&id).map_err(backend_err)?;
    let (stdin, tty) = (io.stdin.is_some(), io.tty);
    let (cid, c) = (id.clone(), cmd.clone());
    let mut prep = svc
        .blocking(move |i| Ok(i.runtime.exec_streaming(&cid, &c, stdin, tty)?))
        .await
        .map_err(backend_err)?;
    let std_cmd = std::mem::replace(&mut prep.command, std::process::Command::new("true"));
    let mut command = tokio::process::Command::from(std_cmd);
    command
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| failed(format!("exec shim: {e}")))?;
    let StreamIo {
        stdin: client_in,
        stdout: client_out,
        stderr: client_err,
        resize,
        ..
    } = io;
    let feed = match (client_in, child.stdin.take()) {
        (Some(mut from), Some(mut to)) => Some(tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from, &mut to).await;
            let _ = to.shutdown().await;
        })),
        _ => None,
    };
    let resizer = match (resize, prep.resize.clone()) {
        (Some(mut rx), Some(fifo)) => Some(tokio::spawn(async move {
            // The shim holds the FIFO open read-write, so this open does
            // not wait for a reader.
            let Ok(mut f) = tokio::fs::OpenOptions::new().write(true).open(&fifo).await else {
                return;
            };
            while let Some(sz) = rx.recv().await {
                let _ = f
                    .write_all(format!("{} {}\n", sz.width, sz.height).as_bytes())
                    .await;
            }
        })),
        _ => None,
    };
    let out = child.stdout.take();
    let err = child.stderr.take();
    let copy_out = async move {
        if let (Some(mut o), Some(mut w)) = (out, client_out) {
            let _ = tokio::io::copy(&mut o, &mut w).await;
            let _ = w.flush().await;
        }
    };
    let copy_err = async move {
        match (err, client_err) {
            (Some(mut e), Some(mut w)) => {
                let _ = tokio::io::copy(&mut e, &mut w).await;
                let _ = w.flush().await;
            }
            (Some(mut e), None) => {
                let _ = tokio::io::copy(&mut e, &mut tokio::io::sink()).await;
            }
            _ => {}
        }
    };
    let (status, _, _) = tokio::join!(child.wait(), copy_out, copy_err);
    for t in [feed, resizer].into_iter().flatten() {
        t.abort();
    }
    let status = status.map_err(|e| failed(format!("exec shim: {e}")))?;
    match tokio::task::spawn_blocking(move || prep.finish()).await {
        Ok(Ok(code)) => Ok(code),
        Ok(Err(e)) => Err(failed(format!("{e} ({status})"))),
        Err(e) => Err(failed(e)),
    }
}

async fn attach(svc: CriService, id: String, io: StreamIo) -> Result<(), BackendError> {
    let id = svc.container_id(&id).map_err(backend_err)?;
    let cid = id.clone();
    let (dir, st) = svc
        .blocking(move |i| {
            Ok((
                i.runtime.container_dir(&cid)?,
                i.runtime.container_status(&cid)?,
            ))
        })
        .await
        .map_err(backend_err)?;
    if st.state != ContainerState::Running {
        return Err(failed(format!("container {id} is not running")));
    }
    // Through /proc/self/fd: state paths can exceed the socket path limit.
    let d = std::fs::File::open(&dir).map_err(|e| failed(format!("{}: {e}", dir.display())))?;
    let path = format!("/proc/self/fd/{}/{}", d.as_raw_fd(), frames::SOCKET);
    let sock = UnixStream::connect(&path)
        .await
        .map_err(|e| failed(format!("attach to {id}: {e}")))?;
    drop(d);
    let (mut rd, mut wr) = sock.into_split();
    let StreamIo {
        stdin,
        stdout,
        stderr,
        resize,
        ..
    } = io;
    // One writer to the socket: stdin and resize frames.
    let (frames_tx, mut frames_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    let writer = tokio::spawn(async move {
        while let Some(f) = frames_rx.recv().await {
            if wr.write_all(&f).await.is_err() {
                return;
            }
        }
        // Keep the write half open: closing it reads as a detach.
        std::future::pending::<()>().await;
    });
    let resizer = resize.map(|mut rx| {
        let tx = frames_tx.clone();
        tokio::spawn(async move {
            while let Some(sz) = rx.recv().await {
                let text = format!("{} {}", sz.width, sz.height);
                if tx
                    .send(frames::frame(frames::RESIZE, text.as_bytes()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
    });
    let feed = stdin.map(|mut from| {
        let tx = frames_tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match from.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx
                            .send(frames::frame(frames::STDIN, &buf[..n]))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(frames::frame(frames::STDIN_CLOSE, &[])).await;
        })
    });
    drop(frames_tx);
    let (mut out, mut err) = (stdout, stderr);
    let mut head = [0u8; 5];
    loop {
        if rd.read_exact(&mut head).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut data = vec![0u8; len.min(1 << 20)];
        if rd.read_exact(&mut data).await.is_err() {
            break;
        }
        let target = match head[0] {
            frames::STDOUT => out.as_mut(),
            frames::STDERR => err.as_mut(),
            _ => None,
        };
        if let Some(w) = target {
            if w.write_all(&data).await.is_err() {
                break;
            }
            let _ = w.flush().await;
        }
    }
    for t in [feed, resizer].into_iter().flatten() {
        t.abort();
    }
    writer.abort();
    Ok(())
}

/// Connect to `127.0.0.1:port` (then `[::1]`) in `netns` (none: here),
/// from a thread of its own: setns changes only the calling thread.
fn connect_in(
    netns: Option<std::path::PathBuf>,
    port: u16,
) -> std::io::Result<std::net::TcpStream> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = (|| {
            if let Some(ns) = &netns {
                let f = std::fs::File::open(ns)?;
                nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| std::io::Error::other(format!("setns {}: {e}", ns.display())))?;
            }
            let t = Duration::from_secs(5);
            let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
            std::net::TcpStream::connect_timeout(&v4, t)
                .or_else(|_| std::net::TcpStream::connect_timeout(&v6, t))
        })();
        let _ = tx.send(r);
    });
    rx.recv()
        .map_err(|_| std::io::Error::other("connect thread died"))?
}

async fn port_forward(
    svc: CriService,
    sandbox: String,
    port: u16,
) -> Result<Box<dyn Duplex>, BackendError> {
    let id = svc.sandbox_id(&sandbox).map_err(backend_err)?;
    let sid = id.clone();
    let st = svc
        .blocking(move |i| Ok(i.runtime.sandbox_status(&sid)?))
        .await
        .map_err(backend_err)?;
    let netns = if st.config.host_network {
        None
    } else {
        st.netns.clone()
    };
    let s = tokio::task::spawn_blocking(move || connect_in(netns, port))
        .await
        .map_err(failed)?
        .map_err(|e| failed(format!("port {port} in pod {id}: {e}")))?;
    s.set_nonblocking(true).map_err(failed)?;
    let t = tokio::net::TcpStream::from_std(s).map_err(failed)?;
    Ok(Box::new(t))
}

impl StreamBackend for RuntimeBackend {
    fn exec(
        &self,
        container_id: String,
        cmd: Vec<String>,
        io: StreamIo,
    ) -> BoxFuture<'static, Result<i32, BackendError>> {
        Box::pin(exec(self.svc.clone(), container_id, cmd, io))
    }

    fn attach(
        &self,
        container_id: String,
        io: StreamIo,
    ) -> BoxFuture<'static, Result<(), BackendError>> {
        Box::pin(attach(self.svc.clone(), container_id, io))
    }

    fn port_forward(
        &self,
        sandbox_id: String,
        port: u16,
    ) -> BoxFuture<'static, Result<Box<dyn Duplex>, BackendError>> {
        Box::pin(port_forward(self.svc.clone(), sandbox_id, port))
    }
}
