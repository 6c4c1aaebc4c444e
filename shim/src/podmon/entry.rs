//! One container of the pod monitor: its output pipes, CRI log, attach
//! socket and, once its init has been reaped, the drain and the exit
//! record.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::attach::Attach;
use crate::logfmt::{now_ns, record, rfc3339_nano, LineSplitter};
use crate::podmon::request::CreateRequest;
use crate::ExitRecord;

/// How long output is still read after the container's init was reaped:
/// processes that inherited the pipes may keep them open.
const DRAIN_NS: i64 = 2_000_000_000;

struct Stream {
    name: &'static str,
    fd: Option<File>,
    lines: LineSplitter,
}

/// A container the monitor holds.
pub struct Entry {
    pub pid: Pid,
    dir: PathBuf,
    log_path: PathBuf,
    log: Option<File>,
    oom_file: Option<PathBuf>,
    oom_parent: Option<PathBuf>,
    /// The pod's OOM-kill counter when the container began.
    parent_base: Option<u64>,
    streams: [Stream; 2],
    attach: Option<Attach>,
    exit: Option<WaitStatus>,
    drain_deadline: Option<i64>,
}

fn open_log(path: &Path) -> Option<File> {
    OpenOptions::new().create(true).append(true).open(path).ok()
}

impl Entry {
    /// Hold a created container: `stdout`/`stderr` are the read ends of
    /// its output, `stdin` the write end of its input (or a pty master).
    pub fn new(
        req: &CreateRequest,
        pid: Pid,
        stdout: OwnedFd,
        stderr: OwnedFd,
        stdin: Option<OwnedFd>,
    ) -> Entry {
        let attach = match Attach::bind(&req.dir, stdin.map(File::from), req.stdin_once, req.tty) {
            Ok(at) => Some(at),
            Err(e) => {
                let _ = std::fs::write(req.dir.join("attach.err"), e.to_string());
                None
            }
        };
        Entry {
            pid,
            dir: req.dir.clone(),
            log_path: req.log.clone(),
            log: open_log(&req.log),
            oom_file: req.oom_file.clone(),
            oom_parent: req.oom_parent.clone(),
            parent_base: req.oom_parent.as_deref().and_then(oom_count),
            streams: [
                Stream {
                    name: "stdout",
                    fd: Some(File::from(stdout)),
                    lines: LineSplitter::default(),
                },
                Stream {
                    name: "stderr",
                    fd: Some(File::from(stderr)),
                    lines: LineSplitter::default(),
                },
            ],
            attach,
            exit: None,
            drain_deadline: None,
        }
    }

    /// Reopen the log file (after a rotation).
    pub fn reopen_log(&mut self) {
        self.log = open_log(&self.log_path);
    }

    /// The container's init ended with `st`.
    pub fn exited(&mut self, st: WaitStatus) {
        if self.exit.is_none() {
            self.exit = Some(st);
            self.drain_deadline = Some(now_ns() + DRAIN_NS);
        }
    }

    pub fn has_exited(&self) -> bool {
        self.exit.is_some()
    }

    /// Exited, and its output read to the end (or the drain timed out).
    pub fn done(&self) -> bool {
        self.exit.is_some()
            && (self.streams.iter().all(|s| s.fd.is_none())
                || self.drain_deadline.is_some_and(|d| now_ns() > d))
    }

    /// Descriptors to poll: open output pipes, then the attach socket's.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        let mut v: Vec<BorrowedFd<'_>> = self
            .streams
            .iter()
            .filter_map(|s| s.fd.as_ref().map(|f| f.as_fd()))
            .collect();
        if let Some(at) = &self.attach {
            v.extend(at.fds());
        }
        v
    }

    /// Handle readiness: `ready[i]` for `fds()[i]`.
    pub fn ready(&mut self, ready: &[bool], buf: &mut [u8]) {
        let open: Vec<usize> = (0..2).filter(|&i| self.streams[i].fd.is_some()).collect();
        if let Some(at) = self.attach.as_mut() {
            at.ready(ready.get(open.len()..).unwrap_or(&[]));
        }
        for (k, &i) in open.iter().enumerate() {
            if ready.get(k).copied().unwrap_or(false) {
                self.read_stream(i, buf);
            }
        }
    }

    fn read_stream(&mut self, i: usize, buf: &mut [u8]) {
        let s = &mut self.streams[i];
        let n = match s.fd.as_mut().map(|f| f.read(buf)) {
            Some(Ok(n)) => n,
            Some(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => return,
            _ => 0,
        };
        let ts = now_ns();
        let name = s.name;
        let log = &mut self.log;
        let mut emit = |body: &[u8], partial: bool| {
            if let Some(l) = log.as_mut() {
                let _ = l.write_all(&record(ts, name, body, partial));
            }
        };
        if n == 0 {
            s.lines.finish(&mut emit);
            s.fd = None;
            return;
        }
        s.lines.feed(&buf[..n], &mut emit);
        if let Some(at) = self.attach.as_mut() {
            let kind = if i == 0 {
                crate::attach::STDOUT
            } else {
                crate::attach::STDERR
            };
            at.broadcast(kind, &buf[..n]);
        }
    }

    /// Log what is left of unterminated lines and write the exit record.
    pub fn finish(mut self) {
        for s in &mut self.streams {
            let name = s.name;
            let ts = now_ns();
            let log = &mut self.log;
            s.lines.finish(&mut |body: &[u8], partial: bool| {
                if let Some(l) = log.as_mut() {
                    let _ = l.write_all(&record(ts, name, body, partial));
                }
            });
        }
        // A start that failed was recorded by the runtime, with its reason:
        // the init it killed does not replace that.
        if matches!(ExitRecord::read(&self.dir), Ok(Some(r)) if r.reason.is_some()) {
            return;
        }
        let (exit_code, signal) = match self.exit {
            Some(WaitStatus::Exited(_, c)) => (c, None),
            Some(WaitStatus::Signaled(_, s, _)) => (128 + s as i32, Some(s as i32)),
            _ => (255, None),
        };
        let ns = now_ns();
        let rec = ExitRecord {
            exit_code,
            signal,
            finished_at: rfc3339_nano(ns),
            finished_at_ns: ns,
            oom_killed: match self.oom_file.as_deref().and_then(oom_count) {
                Some(n) => n > 0,
                // The scope's cgroup is gone: a SIGKILL while the pod's
                // counter rose is taken as this container's OOM kill.
                None => {
                    signal == Some(Signal::SIGKILL as i32)
                        && matches!(
                            (self.parent_base, self.oom_parent.as_deref().and_then(oom_count)),
                            (Some(b), Some(n)) if n > b
                        )
                }
            },
            reason: None,
            message: None,
        };
        if let Err(e) = rec.write(&self.dir) {
            let _ = std::fs::write(self.dir.join("monitor.err"), e.to_string());
        }
        // No one can attach to an ended container (its listener closes).
        drop(self.attach.take());
    }
}

/// The cgroup's `oom_kill` counter, `None` when the file is unreadable.
fn oom_count(file: &Path) -> Option<u64> {
    std::fs::read_to_string(file).ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse::<u64>().ok())
    })
}
