//! The CRI service object: one handle on the runtime, the image store and
//! the streaming server, shared by the gRPC server and in-process callers
//! (`podctl run`). All state is on disk (runtime state, image store, CRI
//! records), so several instances over the same directories agree.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use podctl_images::{Puller, RegistryClient, Store};
use podctl_runtime::Runtime;
use tokio::sync::broadcast;

use crate::config::CriConfig;
use crate::error::{CriError, Result};
use crate::proto;
use crate::records::Records;

/// Hands out the streaming server's one-time URLs.
pub trait StreamUrls: Send + Sync + 'static {
    fn get_exec(
        &self,
        req: &proto::ExecRequest,
    ) -> std::result::Result<proto::ExecResponse, tonic::Status>;
    fn get_attach(
        &self,
        req: &proto::AttachRequest,
    ) -> std::result::Result<proto::AttachResponse, tonic::Status>;
    fn get_port_forward(
        &self,
        req: &proto::PortForwardRequest,
    ) -> std::result::Result<proto::PortForwardResponse, tonic::Status>;
}

/// The CRI v1 RuntimeService and ImageService over podctl's runtime and
/// image store. Cheap to clone.
#[derive(Clone)]
pub struct CriService {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub cfg: CriConfig,
    pub runtime: Arc<Runtime>,
    pub store: Arc<Store>,
    pub puller: Puller,
    pub records: Records,
    /// Per-name locks so that concurrent or retried creations of the same
    /// (pod, name, attempt) are serialised.
    pub naming: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub events: broadcast::Sender<proto::ContainerEventResponse>,
    pub stream: OnceLock<Arc<dyn StreamUrls>>,
    pub pod_cidr: Mutex<String>,
    /// Last (time, cumulative CPU ns) per container or pod, for rates.
    pub cpu_samples: Mutex<HashMap<String, (i64, u64)>>,
    /// NRI plugins, once [`CriService::start_nri`] listens for them.
    pub nri: OnceLock<Arc<crate::nri::Nri>>,
}

impl CriService {
    /// Open the runtime and image store described by `cfg`. The streaming
    /// server is attached separately ([`CriService::set_stream_server`]).
    pub fn new(cfg: CriConfig) -> Result<Self> {
        let runtime = Arc::new(Runtime::new(cfg.runtime())?);
        let store = Arc::new(Store::open(cfg.image_root())?);
        let client = Arc::new(RegistryClient::new(cfg.registry.clone())?);
        let puller = Puller::new(store.clone(), client);
        let records = Records::open(&cfg.state)?;
        let collected = crate::collect::collect(&runtime, &records, &cfg.root);
        if collected != Default::default() {
            tracing::info!(?collected, "collected what a crash left");
        }
        let (events, _) = broadcast::channel(1024);
        Ok(CriService {
            inner: Arc::new(Inner {
                cfg,
                runtime,
                store,
                puller,
                records,
                naming: Mutex::new(HashMap::new()),
                events,
                stream: OnceLock::new(),
                pod_cidr: Mutex::new(String::new()),
                cpu_samples: Mutex::new(HashMap::new()),
                nri: OnceLock::new(),
            }),
        })
    }

    /// Answer list calls from memory kept in step with the state files
    /// (inotify and pidfds; see `podctl_runtime::status_index`): for a
    /// long-lived daemon or node agent, not a one-shot command.
    pub fn watch_state(&self) {
        self.inner.runtime.watch_state();
        self.inner.records.watch();
    }

    /// The configuration this service runs with.
    pub fn config(&self) -> &CriConfig {
        &self.inner.cfg
    }

    /// The runtime underneath (for the streaming backend).
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.inner.runtime
    }

    /// Serve Exec/Attach/PortForward URLs from this server.
    pub fn set_stream_server(&self, s: Arc<dyn StreamUrls>) {
        if self.inner.stream.set(s).is_err() {
            tracing::warn!("streaming server already set");
        }
    }

    pub(crate) fn stream(&self) -> Result<&Arc<dyn StreamUrls>> {
        self.inner
            .stream
            .get()
            .ok_or_else(|| CriError::Unavailable("no streaming server is running".into()))
    }

    /// A lock for one object name.
    pub(crate) fn name_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = match self.inner.naming.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        m.retain(|_, l| Arc::strong_count(l) > 1);
        m.entry(name.to_string()).or_default().clone()
    }

    /// Run blocking runtime work off the async executor.
    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| CriError::Internal(format!("blocking task: {e}")))?
    }

    pub(crate) fn emit(&self, ev: proto::ContainerEventResponse) {
        let _ = self.inner.events.send(ev);
    }
}
