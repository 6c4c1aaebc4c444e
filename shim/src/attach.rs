//! The monitor's attach socket (`<container dir>/attach.sock`): clients
//! receive the container's output as it is logged and may write to its
//! stdin. Frames both ways are `kind: u8, length: u32 (big-endian),
//! payload`. Kinds: [`STDOUT`], [`STDERR`] from the monitor; [`STDIN`],
//! [`STDIN_CLOSE`] from a client. With `stdin_once`, the container's stdin
//! closes when a client closes its stdin. Only root may connect.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

pub const SOCKET: &str = "attach.sock";
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const STDIN_CLOSE: u8 = 3;
/// `WIDTH HEIGHT` for a tty container.
pub const RESIZE: u8 = 4;
/// Largest frame payload accepted from a client.
const MAX_FRAME: usize = 1 << 20;

pub fn frame(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + data.len());
    v.push(kind);
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

struct Client {
    sock: UnixStream,
    buf: Vec<u8>,
}

pub struct Attach {
    listener: UnixListener,
    clients: Vec<Client>,
    stdin: Option<File>,
    stdin_once: bool,
    tty: bool,
}

pub fn peer_is_root(s: &UnixStream) -> bool {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED fills a ucred of the size we pass; the socket is
    // open for the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(s),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    rc == 0 && cred.uid == 0
}

impl Attach {
    /// Listen in `dir` (bound by a relative name after a chdir, so long
    /// state paths do not hit the 108-byte socket path limit).
    pub fn bind(
        dir: &Path,
        stdin: Option<File>,
        stdin_once: bool,
        tty: bool,
    ) -> std::io::Result<Attach> {
        let _ = std::fs::remove_file(dir.join(SOCKET));
        let listener = crate::podmon::request::in_dir(dir, || UnixListener::bind(SOCKET))?;
        listener.set_nonblocking(true)?;
        Ok(Attach {
            listener,
            clients: Vec::new(),
            stdin,
            stdin_once,
            tty,
        })
    }

    /// Descriptors to poll: the listener, then each client.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        std::iter::once(self.listener.as_fd())
            .chain(self.clients.iter().map(|c| c.sock.as_fd()))
            .collect()
    }

    /// Handle readiness (`ready[i]` for `fds()[i]`).
    pub fn ready(&mut self, ready: &[bool]) {
        let mut gone = Vec::new();
        for (i, r) in ready.iter().enumerate().skip(1) {
            if *r && !self.read_client(i - 1) {
                gone.push(i - 1);
            }
        }
        for i in gone.into_iter().rev() {
            self.clients.remove(i);
        }
        if ready.first().copied().unwrap_or(false) {
            while let Ok((sock, _)) = self.listener.accept() {
                if peer_is_root(&sock) && sock.set_nonblocking(true).is_ok() {
                    self.clients.push(Client {
                        sock,
                        buf: Vec::new(),
                    });
                }
            }
        }
    }

    /// Read from client `i`; false when it is gone.
    fn read_client(&mut self, i: usize) -> bool {
        let mut tmp = [0u8; 16 * 1024];
        let n = match self.clients[i].sock.read(&mut tmp) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        };
        self.clients[i].buf.extend_from_slice(&tmp[..n]);
        loop {
            let buf = &self.clients[i].buf;
            if buf.len() < 5 {
                return true;
            }
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if len > MAX_FRAME {
                return false;
            }
            if buf.len() < 5 + len {
                return true;
            }
            let kind = buf[0];
            let payload: Vec<u8> = buf[5..5 + len].to_vec();
            self.clients[i].buf.drain(..5 + len);
            match kind {
                STDIN => {
                    if let Some(f) = self.stdin.as_mut() {
                        if f.write_all(&payload).is_err() {
                            self.stdin = None;
                        }
                    }
                }
                STDIN_CLOSE if self.stdin_once => {
                    if self.tty {
                        // A terminal's end of input is ^D.
                        if let Some(f) = self.stdin.as_mut() {
                            let _ = f.write_all(&[4]);
                        }
                    }
                    self.stdin = None;
                }
                RESIZE if self.tty => {
                    let text = String::from_utf8_lossy(&payload).into_owned();
                    let mut it = text
                        .split_whitespace()
                        .filter_map(|v| v.parse::<u16>().ok());
                    if let (Some(w), Some(h), Some(f)) = (it.next(), it.next(), self.stdin.as_ref())
                    {
                        let ws = libc::winsize {
                            ws_row: h,
                            ws_col: w,
                            ws_xpixel: 0,
                            ws_ypixel: 0,
                        };
                        // SAFETY: TIOCSWINSZ reads a winsize from the pointer;
                        // the master descriptor is open during the call.
                        unsafe {
                            libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(f), libc::TIOCSWINSZ, &ws)
                        };
                    }
                }
                _ => {}
            }
        }
    }

    /// Send output to every client; slow or gone clients are dropped.
    pub fn broadcast(&mut self, kind: u8, data: &[u8]) {
        if self.clients.is_empty() {
            return;
        }
        let f = frame(kind, data);
        self.clients.retain_mut(|c| c.sock.write_all(&f).is_ok());
    }
}
