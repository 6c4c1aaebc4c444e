//! NRI, the Node Resource Interface of containerd and CRI-O: plugins
//! connect to a unix socket podctl listens on, subscribe to pod and
//! container lifecycle events and are called, in the order of their
//! index, before each one takes effect. A plugin's error fails the CRI
//! call it hooks where that call can still be undone (RunPodSandbox,
//! CreateContainer, StartContainer); a plugin that hangs up or does not
//! answer in time is dropped and the call goes on without it.
//!
//! Modules: [`wire`] (frames), [`trunk`] (one connection), [`api`] (the
//! messages), [`adjust`] (what plugins change in a new container),
//! [`convert`] (podctl's objects as NRI describes them),
//! `hooks` (where the CRI calls meet the plugins).

pub mod adjust;
pub mod api;
mod convert;
mod hooks;
pub mod trunk;
pub mod wire;

use std::collections::HashSet;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::{UnixListener, UnixStream};

use crate::error::{CriError, IoContext, Result};
use api::Event;
use trunk::{CallError, Handler, Trunk};

/// The `[nri]` section of the daemon's configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NriSection {
    /// Listen for plugins (off by default: one socket per host).
    pub enable: bool,
    pub socket: PathBuf,
    /// How long a connected plugin has to register.
    pub registration_timeout_ms: u64,
    /// How long a plugin has to answer an event.
    pub request_timeout_ms: u64,
    /// How long a new plugin has to take in the existing pods and
    /// containers (pod and container creation wait meanwhile).
    pub sync_timeout_ms: u64,
}

impl Default for NriSection {
    fn default() -> Self {
        NriSection {
            enable: false,
            socket: PathBuf::from("/var/run/nri/nri.sock"),
            registration_timeout_ms: 5000,
            request_timeout_ms: 2000,
            sync_timeout_ms: 30_000,
        }
    }
}

/// A registered plugin.
struct Plugin {
    /// `<index>-<name>`, as NRI names plugins.
    id: String,
    events: i32,
    trunk: Arc<Trunk>,
}

/// The plugins and what they were told.
pub(crate) struct Nri {
    cfg: NriSection,
    /// Registered plugins, in index order.
    plugins: Mutex<Vec<Arc<Plugin>>>,
    /// Held shared by pod and container creation, exclusively by a new
    /// plugin's synchronization: an object is in the snapshot a plugin
    /// gets, or its creation event reaches that plugin, never neither.
    gate: Arc<tokio::sync::RwLock<()>>,
    /// Containers and pods whose stop plugins were told of (once each).
    stopped_containers: Mutex<HashSet<String>>,
    stopped_pods: Mutex<HashSet<String>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Bind the plugin socket (mode 0600 in a 0700 directory), replacing a
/// stale one.
fn bind(cfg: &NriSection) -> Result<UnixListener> {
    let path = &cfg.socket;
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .ctx("create", dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).ctx("remove", path),
        _ => {}
    }
    let l = UnixListener::bind(path).ctx("bind", path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).ctx("chmod", path)?;
    Ok(l)
}

/// A plugin name NRI accepts: letters, digits and `_.+-`.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b))
}

impl Nri {
    fn new(cfg: NriSection) -> Self {
        Nri {
            cfg,
            plugins: Mutex::default(),
            gate: Arc::default(),
            stopped_containers: Mutex::default(),
            stopped_pods: Mutex::default(),
        }
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.request_timeout_ms)
    }

    fn add(&self, p: Arc<Plugin>) {
        let mut ps = locked(&self.plugins);
        ps.push(p);
        ps.sort_by(|a, b| a.id.cmp(&b.id));
    }

    fn remove(&self, p: &Arc<Plugin>) {
        let mut ps = locked(&self.plugins);
        let before = ps.len();
        ps.retain(|q| !Arc::ptr_eq(q, p));
        if ps.len() != before {
            tracing::info!(plugin = %p.id, "NRI plugin gone");
        }
    }

    /// Whether some plugin wants `ev`.
    fn wants(&self, ev: Event) -> bool {
        locked(&self.plugins)
            .iter()
            .any(|p| p.events & ev.bit() != 0)
    }

    /// Tell every plugin subscribed to `ev`, in index order. The first
    /// refusal is returned; a plugin that is gone or silent is dropped.
    async fn dispatch(&self, ev: Event, req: &impl prost::Message) -> Result<()> {
        let _: Vec<(String, api::Empty)> = self.dispatch_with(ev, req).await?;
        Ok(())
    }

    /// [`Nri::dispatch`], returning each plugin's answer with its name.
    async fn dispatch_with<A: prost::Message + Default>(
        &self,
        ev: Event,
        req: &impl prost::Message,
    ) -> Result<Vec<(String, A)>> {
        let mut answers = Vec::new();
        let subscribed: Vec<Arc<Plugin>> = locked(&self.plugins)
            .iter()
            .filter(|p| p.events & ev.bit() != 0)
            .cloned()
            .collect();
        for p in subscribed {
            let r: std::result::Result<A, CallError> = p
                .trunk
                .call(
                    api::PLUGIN_SERVICE,
                    ev.method(),
                    req,
                    self.request_timeout(),
                )
                .await;
            match r {
                Ok(a) => answers.push((p.id.clone(), a)),
                Err(CallError::Status { message, .. }) => {
                    return Err(CriError::Nri {
                        plugin: p.id.clone(),
                        event: ev.method(),
                        reason: message,
                    })
                }
                Err(e) => {
                    tracing::warn!(plugin = %p.id, event = ev.method(), error = %e, "dropping the NRI plugin");
                    p.trunk.close();
                    self.remove(&p);
                }
            }
        }
        Ok(answers)
    }

    /// Record that `id` stopped; true the first time.
    fn first_stop(set: &Mutex<HashSet<String>>, id: &str) -> bool {
        locked(set).insert(id.to_string())
    }
}

/// What a connecting plugin said when it registered.
pub(crate) struct Registration {
    name: String,
    idx: String,
}

/// The runtime's service on a plugin's connection: registration, and
/// nothing else (podctl takes no unsolicited updates).
pub(crate) fn runtime_service(tx: tokio::sync::oneshot::Sender<Registration>) -> Handler {
    let tx = Arc::new(Mutex::new(Some(tx)));
    Arc::new(move |req: api::Request| {
        let tx = tx.clone();
        Box::pin(async move {
            if req.service != api::RUNTIME_SERVICE || req.method != "RegisterPlugin" {
                return trunk::unimplemented(&req);
            }
            use prost::Message as _;
            let Ok(r) = api::RegisterPluginRequest::decode(req.payload.as_slice()) else {
                return trunk::unimplemented(&req);
            };
            if let Some(tx) = locked(&tx).take() {
                let _ = tx.send(Registration {
                    name: r.plugin_name,
                    idx: r.plugin_idx,
                });
            }
            trunk::ok(&api::Empty {})
        })
    })
}

impl crate::service::CriService {
    /// Listen for NRI plugins when the configuration enables NRI.
    pub fn start_nri(&self) -> Result<()> {
        let cfg = self.config().nri.clone();
        if !cfg.enable {
            return Ok(());
        }
        let listener = bind(&cfg)?;
        let socket = cfg.socket.clone();
        let nri = Arc::new(Nri::new(cfg));
        if self.inner.nri.set(nri.clone()).is_err() {
            return Err(CriError::Internal("NRI is already started".into()));
        }
        self.seed_stopped(&nri);
        tracing::info!(socket = %socket.display(), "listening for NRI plugins");
        let svc = self.clone();
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let svc = svc.clone();
                        let nri = nri.clone();
                        tokio::spawn(async move { svc.connect_plugin(nri, stream).await });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "NRI socket accept");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        self.watch_exits();
        Ok(())
    }

    /// Register, configure and synchronize one plugin, then tell it of
    /// events until it hangs up.
    async fn connect_plugin(&self, nri: Arc<Nri>, stream: UnixStream) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let t = Trunk::start(stream, wire::PLUGIN_CONN, runtime_service(tx));
        match self.handshake(&nri, &t, rx).await {
            Ok(p) => {
                tracing::info!(plugin = %p.id, events = format!("{:#x}", p.events), "NRI plugin registered");
                t.closed().await;
                nri.remove(&p);
            }
            Err(why) => {
                tracing::warn!(error = %why, "NRI plugin refused");
                t.close();
            }
        }
    }

    async fn handshake(
        &self,
        nri: &Arc<Nri>,
        t: &Arc<Trunk>,
        rx: tokio::sync::oneshot::Receiver<Registration>,
    ) -> std::result::Result<Arc<Plugin>, String> {
        let wait = Duration::from_millis(nri.cfg.registration_timeout_ms);
        let reg = match tokio::time::timeout(wait, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => return Err("the plugin hung up before registering".into()),
            Err(_) => return Err(format!("the plugin did not register within {wait:?}")),
        };
        if !valid_name(&reg.name) {
            return Err(format!("plugin name {:?}: not [A-Za-z0-9_.+-]+", reg.name));
        }
        if reg.idx.len() != 2 || !reg.idx.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "plugin {:?}: index {:?} is not two digits",
                reg.name, reg.idx
            ));
        }
        let id = format!("{}-{}", reg.idx, reg.name);
        if locked(&nri.plugins).iter().any(|p| p.id == id) {
            return Err(format!("plugin {id} is already registered"));
        }
        let conf = api::ConfigureRequest {
            config: String::new(),
            runtime_name: crate::RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            registration_timeout: nri.cfg.registration_timeout_ms as i64,
            request_timeout: nri.cfg.request_timeout_ms as i64,
            nri_version: api::NRI_VERSION.into(),
        };
        let r: api::ConfigureResponse = t
            .call(
                api::PLUGIN_SERVICE,
                "Configure",
                &conf,
                nri.request_timeout(),
            )
            .await
            .map_err(|e| format!("plugin {id}: Configure: {e}"))?;
        let events = if r.events == 0 {
            api::VALID_EVENTS
        } else {
            r.events
        };
        if events & !api::VALID_EVENTS != 0 {
            return Err(format!("plugin {id}: unknown events in mask {events:#x}"));
        }
        // No pod or container is made while the plugin takes in the
        // ones that exist.
        let _sync = nri.gate.write().await;
        let (pods, containers) = self.nri_snapshot().await;
        let req = api::SynchronizeRequest {
            pods,
            containers,
            more: false,
        };
        let wait = Duration::from_millis(nri.cfg.sync_timeout_ms);
        let _: api::SynchronizeResponse = t
            .call(api::PLUGIN_SERVICE, "Synchronize", &req, wait)
            .await
            .map_err(|e| format!("plugin {id}: Synchronize: {e}"))?;
        let p = Arc::new(Plugin {
            id,
            events,
            trunk: t.clone(),
        });
        nri.add(p.clone());
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names_are_checked() {
        assert!(valid_name("critest-plugin_1.0+x"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name("a/b"));
    }

    #[test]
    fn event_bits_follow_the_protocol() {
        assert_eq!(Event::RunPodSandbox.bit(), 1);
        assert_eq!(Event::StopContainer.bit(), 1 << 9);
        // The critest plugin's handlers.
        let critest = [
            Event::RunPodSandbox,
            Event::StopPodSandbox,
            Event::RemovePodSandbox,
            Event::CreateContainer,
            Event::StartContainer,
            Event::StopContainer,
            Event::RemoveContainer,
        ]
        .iter()
        .fold(0, |m, e| m | e.bit());
        assert_eq!(critest, 0x62F);
    }
}
