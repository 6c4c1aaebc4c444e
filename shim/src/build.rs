//! `podctl-shim create` and `podctl-shim build`: the two short-lived
//! halves of making a container.
//!
//! `create` (run by the runtime) asks the pod's monitor for the container
//! (see `podctl_shim::podmon`), starting the monitor when the pod has
//! none, and prints the container's PID. `build` (run by the monitor)
//! creates the container with libcontainer on the stdio descriptors it is
//! given and answers `ok <pid>` or `err <reason>` on its ready descriptor.

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;

use podctl_shim::podmon::request::{inherited_fd, CreateRequest, PodMonitor};

/// The monitor program next to this shim (`podctl-shim-watch`), or this
/// shim itself, whose `monitor` mode runs the same code with more memory.
fn monitor_program(shim: &std::path::Path) -> PathBuf {
    let small = shim.with_file_name("podctl-shim-watch");
    if small.is_file() {
        small
    } else {
        shim.to_path_buf()
    }
}

/// `create`: have the pod's monitor make the container; print its PID.
/// `pod_dir` is the sandbox's directory (the container's own when the pod
/// has none or it is gone).
pub fn create(mut req: CreateRequest, pod_dir: Option<PathBuf>) -> Result<(), String> {
    let shim = std::fs::read_link("/proc/self/exe").map_err(|e| format!("/proc/self/exe: {e}"))?;
    req.shim = shim.clone();
    let dir = pod_dir
        .filter(|d| d.is_dir())
        .unwrap_or_else(|| req.dir.clone());
    let pid = PodMonitor {
        dir,
        program: monitor_program(&shim),
    }
    .create(&req)?;
    println!("{pid}");
    Ok(())
}

pub struct BuildArgs {
    pub id: String,
    pub bundle: PathBuf,
    pub root: PathBuf,
    pub systemd: bool,
    pub stdin: i32,
    pub stdout: i32,
    pub stderr: i32,
    pub ready: i32,
}

/// `build`: create the container; the answer goes to the ready descriptor.
pub fn build(a: BuildArgs) -> Result<(), String> {
    let mut ready = File::from(inherited_fd(a.ready)?);
    let made = (|| {
        let fd = |n: i32| -> Result<OwnedFd, String> { inherited_fd(n) };
        let (stdin, stdout, stderr) = (fd(a.stdin)?, fd(a.stdout)?, fd(a.stderr)?);
        let container = ContainerBuilder::new(a.id.clone(), SyscallType::default())
            .with_root_path(&a.root)
            .map_err(|e| format!("state root {}: {e}", a.root.display()))?
            .with_stdin(stdin)
            .with_stdout(stdout)
            .with_stderr(stderr)
            .as_init(&a.bundle)
            .with_systemd(a.systemd)
            .with_detach(true)
            .build()
            .map_err(|e| format!("create container {}: {e}{}", a.id, crate::diag::cause()))?;
        container
            .pid()
            .ok_or_else(|| format!("container {} has no pid after create", a.id))
    })();
    let line = match made {
        Ok(pid) => format!("ok {pid}\n"),
        Err(e) => format!("err {}\n", e.replace('\n', " ")),
    };
    ready
        .write_all(line.as_bytes())
        .map_err(|e| format!("answering the monitor: {e}"))
}
