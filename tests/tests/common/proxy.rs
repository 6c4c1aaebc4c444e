//! A TCP proxy in front of the registry that breaks the first connection
//! carrying more than `cut_after` bytes towards the client, to prove that an
//! interrupted layer download resumes where it stopped.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

pub struct CuttingProxy {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Connections that were cut.
    pub cuts: Arc<AtomicUsize>,
}

impl CuttingProxy {
    /// Listen on 127.0.0.1 and forward to `upstream`; cut at most `max_cuts`
    /// connections, each after `cut_after` response bytes.
    pub fn start(upstream: SocketAddr, cut_after: usize, max_cuts: usize) -> std::io::Result<Self> {
        Self::start_with_delay(upstream, cut_after, max_cuts, std::time::Duration::ZERO)
    }

    /// Like [`CuttingProxy::start`], sleeping `delay` before relaying each
    /// chunk of up to 16 KiB towards the client (a slow link).
    pub fn start_with_delay(
        upstream: SocketAddr,
        cut_after: usize,
        max_cuts: usize,
        delay: std::time::Duration,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicUsize::new(0));
        let (stop2, cuts2) = (stop.clone(), cuts.clone());
        thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let cuts = cuts2.clone();
                        thread::spawn(move || {
                            let _ = relay(client, upstream, cut_after, max_cuts, &cuts, delay);
                        });
                    }
                    Err(_) => thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        Ok(CuttingProxy { addr, stop, cuts })
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    cut_after: usize,
    max_cuts: usize,
    cuts: &AtomicUsize,
    delay: std::time::Duration,
) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    let server = TcpStream::connect(upstream)?;
    let mut c2s_from = client.try_clone()?;
    let mut c2s_to = server.try_clone()?;
    thread::spawn(move || {
        let _ = std::io::copy(&mut c2s_from, &mut c2s_to);
        let _ = c2s_to.shutdown(Shutdown::Write);
    });
    let mut from = server;
    let mut to = client;
    let mut sent = 0usize;
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf)?;
        if !delay.is_zero() {
            thread::sleep(delay);
        }
        if n == 0 {
            let _ = to.shutdown(Shutdown::Write);
            return Ok(());
        }
        if sent + n > cut_after && cuts.load(Ordering::SeqCst) < max_cuts {
            cuts.fetch_add(1, Ordering::SeqCst);
            let keep = cut_after.saturating_sub(sent);
            to.write_all(&buf[..keep])?;
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
            return Ok(());
        }
        to.write_all(&buf[..n])?;
        sent += n;
    }
}
