//! podctl's runtime: pods and containers on this node, run through the
//! `podctl-shim` binary.
//!
//! # Design
//!
//! **No forking here.** youki's libcontainer forks its caller, changes its
//! working directory, `oom_score_adj` and dumpable flag: it must never run
//! inside the multi-threaded daemon (tokio) or the CLI. Everything that
//! forks is done by spawning the single-threaded `podctl-shim` binary
//! (`create`, `start`, `kill`, `delete`, `exec`, `pause`). The shim is
//! found through [`RuntimeConfig::shim`], else next to the current
//! executable, else on `$PATH` ([`locate_shim`]); when it is nowhere, the
//! first call that needs it fails with [`RuntimeError::ShimNotFound`],
//! which names every place looked in.
//!
//! **State on disk, nothing in memory.** A [`Runtime`] is a handle on two
//! directories; any number of instances (daemon, CLI, a restarted daemon)
//! see the same pods and containers:
//!
//! - `state_dir` (volatile, default `/run/podctl`):
//!   - `sandboxes/<id>/`: `meta.json`, `pause.pid`, the pod's `hostname`,
//!     `hosts`, `resolv.conf` (bind-mounted into every container);
//!   - `netns/<id>`: the pod's network namespace pinned by a bind mount, so
//!     it outlives pause and CNI DEL can still run;
//!   - `containers/<id>/`: the OCI bundle (`config.json`, `rootfs/` overlay
//!     mount point), `meta.json`, and the monitor's `pid`, `monitor.pid`,
//!     `exit.json`;
//!   - `runc/<id>/`: libcontainer's own state;
//!   - `locks/<id>.lock`: flock(2) locks serialising operations on one
//!     object across processes.
//! - `root_dir` (persistent, default `/var/lib/podctl`):
//!   `containers/<id>/{upper,work}`, the writable overlay layer;
//!   `state-dir`, the state dir this root dir serves (one at a time).
//!
//! JSON state is written atomically (temp file, fsync, rename).
//!
//! **Pods.** [`Runtime::run_sandbox`] starts `podctl-shim pause`: a tiny
//! process that unshares new UTS, IPC and network namespaces (and, with
//! [`SandboxConfig::share_pid`], a PID namespace), sets the hostname,
//! reaps zombies and sleeps on signals. Host network/IPC/PID use the
//! host's. The network namespace is pinned, then CNI is run on it (the
//! loopback plugin, then the first `*.conflist` in the config dir, results
//! chained through `prevResult`); the first non-loopback IPv4 address is
//! the pod IP. Stopping kills the pod's containers and pause and runs CNI
//! DEL; removing also removes the containers, unpins the netns and deletes
//! the pod's cgroup and state.
//!
//! **Containers.** [`ContainerConfig`] becomes an OCI runtime spec (module
//! `spec`): overlayfs rootfs over the image's layer snapshots (bottom
//! first) with a per-container upper dir; the user resolved through the
//! rootfs's `/etc/passwd` and `/etc/group` (supplementary groups included);
//! the default mounts (`/proc`, `/dev` tmpfs, `/dev/pts`, `/dev/shm`,
//! `/dev/mqueue`, read-only `/sys`), the pod's `/etc` files and volumes;
//! runtime-default capabilities, `no_new_privs`, masked and read-only
//! paths, the default allow-list seccomp profile (containerd's; see module
//! `seccomp`),
//! rlimits, read-only rootfs, sysctls, privileged mode; cgroup limits (CPU
//! shares/quota/period, memory, pids) at `<parent>/<pod>/<container>`
//! (cgroupfs driver) or a systemd scope. Inside a pod the container joins
//! the pod's namespaces by path (`/proc/<pause>/ns/*`, the pinned netns).
//!
//! **Monitor.** One monitor process per pod (`podctl-shim-watch monitor`,
//! a small binary shipped next to `podctl-shim`, without libcontainer;
//! ~2 MiB RSS in release builds), started by the pod's first
//! `podctl-shim create` in a session of its own (so killing whoever
//! started it leaves the containers running). It is child subreaper of
//! every container of the pod, has each one made by a short-lived
//! `podctl-shim build` (libcontainer) while it holds the stdout/stderr
//! pipes, writes CRI-format log lines (`<RFC 3339 nano> stdout|stderr F|P
//! <text>`, lines over 16 KiB split into `P` records), reopens the logs on
//! SIGUSR1 ([`Runtime::reopen_container_log`]), reaps the containers and
//! records each one's exit code, finish time and OOM kill (the cgroup's
//! `oom_kill` counter) in `exit.json`; it exits when no container is left.
//! Status is derived purely from these files and `/proc`.
//!
//! **Exec.** [`Runtime::exec_sync`] runs `podctl-shim exec`, which joins
//! the container with libcontainer's tenant builder as the container's
//! user, in its working directory, with its environment, rlimits and
//! seccomp profile (the last two re-applied by the shim: the tenant
//! builder drops them), captures output and kills the command at the
//! timeout.
//!
//! # Not (yet) done
//!
//! A control socket; SELinux.

pub mod apparmor;
mod cgroup;
pub mod cni;
mod config;
mod dir_watch;
mod error;
mod exec;
pub mod failpoint;
pub mod file_cache;
mod gc;
mod launch;
mod liveness;
mod lock;
mod pairing;
mod pod_files;
mod remove;
mod rootfs;
mod seccomp;
pub mod security;
mod shim;
mod spec;
pub mod status_index;
mod sys;
mod systemd;
mod update;
mod user;
pub mod userns;

pub mod container;
mod container_status;
pub mod sandbox;

pub use cni::{CniConfig, PortMapping};
pub use config::{CgroupDriver, RuntimeConfig};
pub use container::{
    ContainerConfig, ContainerState, ContainerStatus, Mount, Propagation, Resources, Rlimit,
    Runtime,
};
pub use error::{Result, RuntimeError};
pub use exec::{ExecResult, PreparedExec};
pub use remove::Retired;
pub use sandbox::{
    DnsConfig, PodAttachments, Sandbox, SandboxClaim, SandboxConfig, SandboxState, SandboxStatus,
};
pub use security::{Seccomp, Security};
pub use shim::{candidates as shim_candidates, locate as locate_shim, SHIM, SHIM_WATCH};
pub use user::Identity;
