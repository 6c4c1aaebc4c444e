//! Standalone pods across a host reboot. Their running state lives in the
//! state directory (`/run/podctl`, a tmpfs), which a reboot empties; what
//! must come back is kept beside the images, on persistent storage:
//!
//! ```text
//! <root>/boot/<namespace>_<name>.json   the pod file `podctl run` made
//!                                       (Pod with its UID, ConfigMaps,
//!                                       Secrets), mode 0600
//! ```
//!
//! A pod is kept there while it should be running: `podctl run` writes the
//! record (after the pod's state directory, so nobody mistakes a pod being
//! started for one a reboot lost) for pods whose `restartPolicy` is
//! `Always` or `OnFailure`; `podctl stop` and `podctl rm` remove it
//! first, and a supervisor removes it when its pod reached a final phase.
//!
//! `podctl restore` (the packaged `podctl-restore.service` runs it at
//! boot; other init systems call it the same way) starts a supervisor for
//! every record whose pod has no state directory: the pod comes back under
//! the same UID, so its emptyDir volumes and its log directory are the
//! ones it had. A pod that still has its state directory is left alone
//! (running `restore` twice starts nothing twice; a pod that lost its
//! supervisor is revived by the other commands).

use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;

use crate::pods::PodContext;
use crate::run::Unsettled;
use crate::supervise::{self, PodFile};

/// How long `restore` waits for each pod to leave Pending: a boot should
/// not wait on an image pull; the supervisor goes on alone after that.
const WAIT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Args, Debug)]
pub struct RestoreArgs {}

/// Where the records are.
pub fn boot_dir(ctx: &PodContext) -> PathBuf {
    ctx.images.root.join("boot")
}

fn record(ctx: &PodContext, ns: &str, name: &str) -> PathBuf {
    boot_dir(ctx).join(format!("{ns}_{name}.json"))
}

/// Whether a pod with this spec is brought back after a reboot: it is
/// meant to keep running (`Always`, the default) or to run until it
/// succeeds (`OnFailure`).
pub fn wanted(file: &PodFile) -> bool {
    let policy = file
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    matches!(policy, "Always" | "OnFailure")
}

/// Keep `file` (the pod `ns/name`) for `restore`, if it is [`wanted`]:
/// written to a temporary file (owner-only: it may hold Secrets), synced
/// and renamed.
pub fn keep(ctx: &PodContext, ns: &str, name: &str, file: &PodFile) -> anyhow::Result<()> {
    if !wanted(file) {
        return Ok(());
    }
    let dir = boot_dir(ctx);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = record(ctx, ns, name);
    let tmp = path.with_extension("tmp");
    let data = serde_json::to_vec(file)?;
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        std::io::Write::write_all(&mut f, &data)?;
        f.sync_all()
    };
    write().with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Stop keeping the pod `ns/name` for `restore` (nothing if it was not).
pub fn forget(ctx: &PodContext, ns: &str, name: &str) -> anyhow::Result<()> {
    let path = record(ctx, ns, name);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// [`forget`] for the pod whose state directory is `dir`
/// (`<state>/pods/<ns>_<name>`).
pub fn forget_dir(ctx: &PodContext, dir: &Path) -> anyhow::Result<()> {
    let Some(base) = dir.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(());
    };
    let (ns, name) = base.split_once('_').unwrap_or(("default", &base));
    forget(ctx, ns, name)
}

/// `podctl restore`: start every kept pod that has no state directory and
/// wait until each runs (at most [`WAIT`] while it is Pending). A record that cannot be read, or a pod that
/// cannot start, is named on stderr and the command fails; the record is
/// kept and such a pod's supervisor goes on trying with back-off.
pub async fn restore(ctx: &PodContext, _a: RestoreArgs) -> anyhow::Result<()> {
    let dir = boot_dir(ctx);
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    entries.sort();
    let mut failed = Vec::new();
    let mut started = Vec::new();
    for path in entries {
        match restore_one(ctx, &path) {
            Ok(Some(pod)) => started.push(pod),
            Ok(None) => {}
            Err(e) => {
                eprintln!("podctl restore: {}: {e:#}", path.display());
                failed.push(path.display().to_string());
            }
        }
    }
    for (pod, dir) in started {
        match crate::run::settle(&dir, false, WAIT).await {
            Ok(p) => println!("pod/{pod} restored ({})", crate::run::phase(&p)),
            // A long pull, say: the boot need not wait for it.
            Err(Unsettled::Pending(why)) => {
                println!("pod/{pod} restored ({why}; its supervisor goes on)")
            }
            Err(Unsettled::Failed(why)) => {
                eprintln!("podctl restore: pod {pod}: {why} (its supervisor keeps trying)");
                failed.push(pod);
            }
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("could not restore: {}", failed.join(", "));
    }
    Ok(())
}

/// Start the pod kept in `path` unless it has a state directory; its
/// `ns/name` and state directory when it was started.
fn restore_one(ctx: &PodContext, path: &Path) -> anyhow::Result<Option<(String, PathBuf)>> {
    let file: PodFile =
        serde_json::from_slice(&std::fs::read(path).context("reading")?).context("parsing")?;
    let (name, ns, _uid) = podctl_node::convert::identity(&file.pod)?;
    if file.pod.metadata.uid.is_none() {
        anyhow::bail!("the kept pod {ns}/{name} has no UID");
    }
    let dir = supervise::pod_dir(ctx, &ns, &name);
    if dir.exists() {
        return Ok(None);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    supervise::write_atomic(&dir.join("pod.json"), &serde_json::to_vec(&file)?)?;
    supervise::spawn(ctx, &dir)?;
    Ok(Some((format!("{ns}/{name}"), dir)))
}
