//! A pod's volumes on this node, laid out like the kubelet's
//! (`<pods_root>/<uid>/volumes/<plugin>/<name>`): emptyDir (a directory, or
//! a tmpfs with `medium: Memory`), hostPath (with its type check),
//! configMap, secret, downwardAPI and projected (their files written
//! atomically; secrets and projected volumes on a tmpfs of their own, never
//! on disk), image (mounted read-only by the runtime, the worker pulls
//! its image), and the CRI mounts of each container's volumeMounts,
//! subPath and subPathExpr included.

mod files;
mod payload;
mod subpath;

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, Volume};
use podctl_cri::proto;

use crate::envvars::{self, PodFacts};
use crate::error::{IoContext, NodeError, Result};
use crate::sources::{Sources, TokenRequest};

pub use files::check_item_path;
pub use subpath::open_within;

use files::Payload;
use payload::{cm_data, downward, project, secret_data};

/// One prepared volume.
#[derive(Clone, Debug)]
struct Prepared {
    path: PathBuf,
    /// Mounted read-only whatever the volumeMount says (the kubelet does
    /// so for configMap, secret, downwardAPI and projected).
    readonly: bool,
    /// An image volume: the image reference, mounted by the runtime
    /// (CRI `Mount.image`) rather than from a host path.
    image: Option<String>,
}

/// The pod's prepared volumes and the mounts made for them.
#[derive(Debug, Default)]
pub struct Volumes {
    root: PathBuf,
    pod: String,
    prepared: BTreeMap<String, Prepared>,
    /// Our mounts (tmpfs, subPath binds), unmounted on teardown.
    mounts: Vec<PathBuf>,
    /// Service-account tokens by (volume, path), with when they were got.
    tokens: BTreeMap<(String, String), (crate::sources::Token, i64)>,
}

fn err(pod: &str, volume: &str, reason: impl Into<String>) -> NodeError {
    NodeError::Volume {
        pod: pod.into(),
        volume: volume.into(),
        reason: reason.into(),
    }
}

/// A mount point (its device differs from its parent's).
fn is_mount_point(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(dir), dir.parent().map(std::fs::metadata)) {
        (Ok(d), Some(Ok(p))) => d.dev() != p.dev(),
        _ => false,
    }
}

fn mount_tmpfs(dir: &Path, size: Option<i64>) -> std::result::Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if is_mount_point(dir) {
        // Still mounted from before an agent restart: containers use it.
        return Ok(());
    }
    let mut data = "mode=0755".to_string();
    if let Some(s) = size.filter(|s| *s > 0) {
        data.push_str(&format!(",size={s}"));
    }
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(|e| format!("mount tmpfs on {}: {e}", dir.display()))
}

fn host_path_check(path: &Path, kind: &str) -> std::result::Result<(), String> {
    let md = std::fs::metadata(path);
    let ft = md.as_ref().map(|m| m.file_type());
    let ok = match kind {
        "" => return Ok(()),
        "DirectoryOrCreate" => {
            if md.is_err() {
                std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| e.to_string())?;
            }
            std::fs::metadata(path).is_ok_and(|m| m.is_dir())
        }
        "FileOrCreate" => {
            if md.is_err() {
                std::fs::write(path, b"").map_err(|e| e.to_string())?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
                    .map_err(|e| e.to_string())?;
            }
            std::fs::metadata(path).is_ok_and(|m| m.is_file())
        }
        "Directory" => ft.is_ok_and(|f| f.is_dir()),
        "File" => ft.is_ok_and(|f| f.is_file()),
        "Socket" => ft.is_ok_and(|f| f.is_socket()),
        "CharDevice" => ft.is_ok_and(|f| f.is_char_device()),
        "BlockDevice" => ft.is_ok_and(|f| f.is_block_device()),
        other => return Err(format!("unknown hostPath type {other:?}")),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("hostPath {} is not a {kind}", path.display()))
    }
}

/// The pod's volumes, borrowed.
fn volumes_of(pod: &Pod) -> &[Volume] {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default()
}

/// What is left of a pod whose worker is gone (an agent restart, a pod
/// deleted meanwhile): unmount everything below `<pods_root>/<uid>`
/// (deepest first) and remove the directory.
pub fn remove_pod_dir(pods_root: &Path, uid: &str) -> Result<()> {
    let dir = pods_root.join(uid);
    if uid.is_empty() || !dir.exists() {
        return Ok(());
    }
    let prefix = format!("{}/", dir.display());
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    points.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in points {
        if let Err(e) = nix::mount::umount2(Path::new(&m), nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!(mount = %m, error = %e, "unmounting a pod volume");
        }
    }
    std::fs::remove_dir_all(&dir).ctx("remove", &dir)
}

impl Volumes {
    /// Prepare every volume of `pod` under `<pods_root>/<uid>`.
    pub async fn prepare(
        pods_root: &Path,
        pod: &Pod,
        facts: &PodFacts,
        sources: &dyn Sources,
    ) -> Result<Volumes> {
        let mut v = Volumes {
            root: pods_root.join(&facts.uid),
            pod: format!("{}/{}", facts.namespace, facts.name),
            ..Default::default()
        };
        for vol in volumes_of(pod) {
            if let Err(e) = v.prepare_one(vol, pod, facts, sources).await {
                v.teardown();
                return Err(e);
            }
        }
        Ok(v)
    }

    fn dir(&self, plugin: &str, name: &str) -> PathBuf {
        self.root.join("volumes").join(plugin).join(name)
    }

    async fn prepare_one(
        &mut self,
        vol: &Volume,
        pod: &Pod,
        facts: &PodFacts,
        sources: &dyn Sources,
    ) -> Result<()> {
        let name = vol.name.as_str();
        let pod_name = self.pod.clone();
        let bad = |r: String| err(&pod_name, name, r);
        let (path, readonly) = if let Some(e) = &vol.empty_dir {
            let d = self.dir("kubernetes.io~empty-dir", name);
            if e.medium.as_deref() == Some("Memory") {
                let size = e
                    .size_limit
                    .as_ref()
                    .and_then(|q| crate::quantity::parse(&q.0, 1.0));
                mount_tmpfs(&d, size).map_err(bad)?;
                self.mounts.push(d.clone());
            } else {
                std::fs::create_dir_all(&d).ctx("create", &d)?;
            }
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777))
                .ctx("chmod", &d)?;
            (d, false)
        } else if let Some(i) = &vol.image {
            // Pulled by the worker before each container that mounts it,
            // mounted by the runtime: nothing on the host here.
            let reference = i.reference.clone().unwrap_or_default();
            if reference.is_empty() {
                return Err(bad("image volume without a reference".into()));
            }
            self.prepared.insert(
                name.to_string(),
                Prepared {
                    path: PathBuf::new(),
                    readonly: true,
                    image: Some(reference),
                },
            );
            return Ok(());
        } else if let Some(h) = &vol.host_path {
            let p = PathBuf::from(&h.path);
            host_path_check(&p, h.type_.as_deref().unwrap_or("")).map_err(bad)?;
            (p, false)
        } else if let Some((plugin, payload, tmpfs)) =
            self.payload_of(vol, pod, facts, sources).await?
        {
            let d = self.dir(plugin, name);
            if tmpfs {
                mount_tmpfs(&d, None).map_err(bad)?;
                self.mounts.push(d.clone());
            }
            files::write_atomic(&d, &payload)?;
            (d, true)
        } else {
            return Err(bad("unsupported volume type".into()));
        };
        self.prepared.insert(
            name.to_string(),
            Prepared {
                path,
                readonly,
                image: None,
            },
        );
        Ok(())
    }

    /// The files of a configMap, secret, downwardAPI or projected volume
    /// now: (plugin directory, files, on a tmpfs). `None` for other kinds.
    async fn payload_of(
        &mut self,
        vol: &Volume,
        pod: &Pod,
        facts: &PodFacts,
        sources: &dyn Sources,
    ) -> Result<Option<(&'static str, Payload, bool)>> {
        let name = vol.name.as_str();
        let pod_name = self.pod.clone();
        let bad = |r: String| err(&pod_name, name, r);
        let ns = facts.namespace.as_str();
        if let Some(c) = &vol.config_map {
            let optional = c.optional == Some(true);
            let data = match sources.config_map(ns, &c.name).await? {
                Some(cm) => cm_data(cm),
                None if optional => BTreeMap::new(),
                None => return Err(bad(format!("configmap {:?} not found", c.name))),
            };
            let mode = c.default_mode.map(|m| m as u32).unwrap_or(0o644);
            let payload = project(
                data,
                c.items.as_ref(),
                mode,
                optional,
                &format!("configmap {:?}", c.name),
            )
            .map_err(bad)?;
            return Ok(Some(("kubernetes.io~configmap", payload, false)));
        }
        if let Some(s) = &vol.secret {
            let sname = s.secret_name.clone().unwrap_or_default();
            let optional = s.optional == Some(true);
            let data = match sources.secret(ns, &sname).await? {
                Some(sec) => secret_data(sec),
                None if optional => BTreeMap::new(),
                None => return Err(bad(format!("secret {sname:?} not found"))),
            };
            let mode = s.default_mode.map(|m| m as u32).unwrap_or(0o644);
            let payload = project(
                data,
                s.items.as_ref(),
                mode,
                optional,
                &format!("secret {sname:?}"),
            )
            .map_err(bad)?;
            // Secrets never touch the disk.
            return Ok(Some(("kubernetes.io~secret", payload, true)));
        }
        if let Some(da) = &vol.downward_api {
            let mode = da.default_mode.map(|m| m as u32).unwrap_or(0o644);
            let payload =
                downward(pod, facts, da.items.as_deref().unwrap_or_default(), mode).map_err(bad)?;
            return Ok(Some(("kubernetes.io~downward-api", payload, false)));
        }
        if let Some(pr) = &vol.projected {
            let mode = pr.default_mode.map(|m| m as u32).unwrap_or(0o644);
            let mut payload = Payload::new();
            for src in pr.sources.iter().flatten() {
                if let Some(c) = &src.config_map {
                    let optional = c.optional == Some(true);
                    let data = match sources.config_map(ns, &c.name).await? {
                        Some(cm) => cm_data(cm),
                        None if optional => BTreeMap::new(),
                        None => return Err(bad(format!("configmap {:?} not found", c.name))),
                    };
                    payload.extend(
                        project(
                            data,
                            c.items.as_ref(),
                            mode,
                            optional,
                            &format!("configmap {:?}", c.name),
                        )
                        .map_err(bad)?,
                    );
                }
                if let Some(s) = &src.secret {
                    let optional = s.optional == Some(true);
                    let data = match sources.secret(ns, &s.name).await? {
                        Some(sec) => secret_data(sec),
                        None if optional => BTreeMap::new(),
                        None => return Err(bad(format!("secret {:?} not found", s.name))),
                    };
                    payload.extend(
                        project(
                            data,
                            s.items.as_ref(),
                            mode,
                            optional,
                            &format!("secret {:?}", s.name),
                        )
                        .map_err(bad)?,
                    );
                }
                if let Some(da) = &src.downward_api {
                    payload.extend(
                        downward(pod, facts, da.items.as_deref().unwrap_or_default(), mode)
                            .map_err(bad)?,
                    );
                }
                if let Some(t) = &src.service_account_token {
                    check_item_path(&t.path).map_err(bad)?;
                    let req = TokenRequest {
                        namespace: facts.namespace.clone(),
                        service_account: facts.service_account.clone(),
                        pod_name: facts.name.clone(),
                        pod_uid: facts.uid.clone(),
                        audience: t.audience.clone(),
                        expiration_seconds: t.expiration_seconds.unwrap_or(3600),
                    };
                    match self.token(name, &t.path, &req, sources).await? {
                        Some(tok) => {
                            payload.insert(t.path.clone(), (tok.token.into_bytes(), mode));
                        }
                        None => tracing::warn!(
                            pod = %self.pod, volume = name,
                            "no token issuer (standalone): serviceAccountToken left out"
                        ),
                    }
                }
            }
            return Ok(Some(("kubernetes.io~projected", payload, true)));
        }
        Ok(None)
    }

    /// A service-account token, requested again once 80% of its life has
    /// passed (as the kubelet rotates them).
    async fn token(
        &mut self,
        volume: &str,
        path: &str,
        req: &TokenRequest,
        sources: &dyn Sources,
    ) -> Result<Option<crate::sources::Token>> {
        let now = jiff::Timestamp::now().as_second();
        let key = (volume.to_string(), path.to_string());
        if let Some((tok, issued)) = self.tokens.get(&key) {
            if now < issued + (tok.expires_at - issued) * 4 / 5 {
                return Ok(Some(tok.clone()));
            }
        }
        let tok = sources.token(req).await?;
        if let Some(t) = &tok {
            self.tokens.insert(key, (t.clone(), now));
        }
        Ok(tok)
    }

    /// Rewrite configMap, secret, downwardAPI and projected volumes from
    /// their sources (the kubelet's periodic volume sync; tokens rotate).
    pub async fn refresh(
        &mut self,
        pod: &Pod,
        facts: &PodFacts,
        sources: &dyn Sources,
    ) -> Result<()> {
        for vol in volumes_of(pod) {
            if let Some((plugin, payload, _)) = self.payload_of(vol, pod, facts, sources).await? {
                let d = self.dir(plugin, &vol.name);
                if d.is_dir() {
                    files::write_atomic(&d, &payload)?;
                }
            }
        }
        Ok(())
    }

    /// CRI mounts for `c`'s volumeMounts; `env` expands subPathExpr.
    pub fn mounts(
        &mut self,
        c: &Container,
        env: &BTreeMap<String, String>,
    ) -> Result<Vec<proto::Mount>> {
        let mut out = Vec::new();
        for (i, vm) in c.volume_mounts.iter().flatten().enumerate() {
            let bad = |r: String| NodeError::Container {
                pod: self.pod.clone(),
                container: c.name.clone(),
                reason: format!("volumeMount {:?}: {r}", vm.name),
            };
            let Some(p) = self.prepared.get(&vm.name).cloned() else {
                return Err(bad("no such volume in the pod".into()));
            };
            let sub = match (&vm.sub_path, &vm.sub_path_expr) {
                (Some(s), _) if !s.is_empty() => s.clone(),
                (_, Some(e)) if !e.is_empty() => envvars::expand(e, env),
                _ => String::new(),
            };
            if let Some(image) = &p.image {
                // The runtime mounts the image (or its subPath) read-only.
                out.push(proto::Mount {
                    container_path: vm.mount_path.clone(),
                    readonly: true,
                    image: Some(proto::ImageSpec {
                        image: image.clone(),
                        ..Default::default()
                    }),
                    image_sub_path: sub,
                    ..Default::default()
                });
                continue;
            }
            let host = if sub.is_empty() {
                p.path.clone()
            } else {
                let target = self
                    .root
                    .join("volume-subpaths")
                    .join(&vm.name)
                    .join(&c.name)
                    .join(i.to_string());
                if !self.mounts.contains(&target) {
                    subpath::bind(&p.path, &sub, &target).map_err(bad)?;
                    self.mounts.push(target.clone());
                }
                target
            };
            let propagation = match vm.mount_propagation.as_deref() {
                Some("HostToContainer") => proto::MountPropagation::PropagationHostToContainer,
                Some("Bidirectional") => proto::MountPropagation::PropagationBidirectional,
                _ => proto::MountPropagation::PropagationPrivate,
            };
            out.push(proto::Mount {
                container_path: vm.mount_path.clone(),
                host_path: host.display().to_string(),
                readonly: vm.read_only == Some(true) || p.readonly,
                propagation: propagation as i32,
                ..Default::default()
            });
        }
        Ok(out)
    }

    /// Unmount what we mounted (tmpfs, subPath binds) and remove the
    /// subPath mount points. The volume directories stay, emptyDir
    /// contents included, as the kubelet keeps them for a pod that stopped
    /// and has not been removed: a pod stopped by a shutdown finds them
    /// again when it starts after the reboot. They go with the pod
    /// ([`remove_pod_dir`]).
    pub fn teardown(&mut self) {
        for m in self.mounts.drain(..).rev() {
            if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
                tracing::warn!(path = %m.display(), error = %e, "unmount");
            }
        }
        // Nothing is mounted below any more.
        let _ = std::fs::remove_dir_all(self.root.join("volume-subpaths"));
    }
}

#[cfg(test)]
mod cleanup_tests {
    use super::*;

    #[test]
    fn a_pod_dir_goes_with_the_mounts_below_it() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let d = root.path().join("uid1/volumes/kubernetes.io~secret/s");
        mount_tmpfs(&d, None).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(d.join("key"), "v").unwrap_or_else(|e| panic!("{e}"));
        remove_pod_dir(root.path(), "uid1").unwrap_or_else(|e| panic!("{e}"));
        assert!(!root.path().join("uid1").exists());
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        assert!(!info.contains(&d.display().to_string()), "still mounted");
        // Nothing there: nothing to do.
        remove_pod_dir(root.path(), "uid2").unwrap_or_else(|e| panic!("{e}"));
    }
}
