//! The node agent (`podctl node`): this machine as a Kubernetes node in
//! place of the kubelet, against a stock API server.
//!
//! - registers the Node (capacity, allocatable, addresses, nodeInfo,
//!   labels) and keeps its conditions current every `status_update`;
//! - renews its Lease in `kube-node-lease` every `lease_renew`;
//! - watches the pods bound to it and runs each with the lifecycle engine
//!   ([`pods::PodManager`]), patching status and posting Events;
//! - serves the kubelet API ([`server`]).

pub mod admit;
pub mod api;
pub mod bootstrap;
pub mod lease;
pub mod node_status;
pub mod pod_cidr;
pub mod pods;
pub mod rotation;
pub mod server;
pub mod static_pods;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;

use crate::cri::Cri;
use crate::error::{api_code, ApiContext, Result};
use crate::worker::WorkerConfig;

/// The agent's settings.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node_name: String,
    /// The InternalIP the API server reaches the kubelet API at.
    pub node_ip: String,
    pub kubelet_addr: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub client_ca: Option<PathBuf>,
    pub labels: BTreeMap<String, String>,
    pub max_pods: u32,
    pub status_update: Duration,
    pub lease_renew: Duration,
    pub lease_duration_secs: i32,
    /// Filesystem whose size is the node's ephemeral-storage.
    pub root: PathBuf,
    pub runtime_version: String,
    pub kubelet_version: String,
    /// Static pod manifests (`--pod-manifest-path`).
    pub static_pods: Option<PathBuf>,
    /// Kept from pods for the system and the agent (`--system-reserved`
    /// plus `--kube-reserved`).
    pub reserved: Reserved,
    /// Node-pressure eviction (`--eviction-*`).
    pub eviction: crate::eviction::EvictionConfig,
}

/// Resources kept from pods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reserved {
    pub cpu_milli: u64,
    pub memory: u64,
    pub ephemeral_storage: u64,
}

impl Reserved {
    /// `cpu=500m,memory=1Gi,ephemeral-storage=1Gi` added to `self`; `flag`
    /// names the flag in errors.
    pub fn add(mut self, flag: &'static str, spec: &str) -> Result<Reserved> {
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let bad = |reason: String| crate::NodeError::Flag { flag, reason };
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| bad(format!("{item:?}: want resource=quantity")))?;
            let scale = if k == "cpu" { 1000.0 } else { 1.0 };
            let n = crate::quantity::parse(v, scale)
                .ok_or_else(|| bad(format!("{item:?}: {v:?} is not a quantity")))?
                .max(0) as u64;
            match k.trim() {
                "cpu" => self.cpu_milli += n,
                "memory" => self.memory += n,
                "ephemeral-storage" => self.ephemeral_storage += n,
                "pid" => {}
                other => return Err(bad(format!("{item:?}: unknown resource {other:?}"))),
            }
        }
        Ok(self)
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            node_name: String::new(),
            node_ip: "127.0.0.1".into(),
            kubelet_addr: SocketAddr::from(([0, 0, 0, 0], 10250)),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            client_ca: None,
            labels: BTreeMap::new(),
            max_pods: 110,
            status_update: Duration::from_secs(10),
            lease_renew: Duration::from_secs(10),
            lease_duration_secs: 40,
            root: PathBuf::from("/var/lib/podctl"),
            runtime_version: format!("podctl://{}", env!("CARGO_PKG_VERSION")),
            kubelet_version: format!("v1.24.0-podctl.{}", env!("CARGO_PKG_VERSION")),
            static_pods: None,
            reserved: Reserved::default(),
            eviction: crate::eviction::EvictionConfig::default(),
        }
    }
}

/// Create the Node object, or bring an existing one up to date.
pub async fn register(client: &Client, cfg: &AgentConfig) -> Result<Node> {
    let api: Api<Node> = Api::all(client.clone());
    let now = crate::status::now();
    let m = node_status::Machine::read(&cfg.root);
    let node = node_status::node(cfg, &m, Default::default(), &now);
    let created = match api.create(&PostParams::default(), &node).await {
        Ok(n) => n,
        Err(e) if api_code(&e) == Some(409) => {
            let patch = serde_json::json!({"metadata": {"labels": node.metadata.labels}});
            api.patch(
                &cfg.node_name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .api(format!("update Node {}", cfg.node_name))?
        }
        Err(e) => return Err(e).api(format!("register Node {}", cfg.node_name)),
    };
    // Status is a subresource: create ignores it.
    let patch = serde_json::json!({"status": node.status});
    let n = api
        .patch_status(
            &cfg.node_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .api(format!("Node {} status", cfg.node_name))?;
    tracing::info!(node = %cfg.node_name, uid = ?created.metadata.uid, "node registered");
    Ok(n)
}

/// Update the node's status (conditions' heartbeats, capacity).
pub async fn update_status(
    client: &Client,
    cfg: &AgentConfig,
    m: &node_status::Machine,
    pressure: crate::eviction::Pressure,
    last: &Node,
) -> Result<Node> {
    let api: Api<Node> = Api::all(client.clone());
    let now = crate::status::now();
    let mut st = node_status::status(cfg, m, pressure, &now);
    if let (Some(new), Some(old)) = (
        st.conditions.as_mut(),
        last.status.as_ref().and_then(|s| s.conditions.as_ref()),
    ) {
        node_status::carry_transitions(new, old);
    }
    let patch = serde_json::json!({"status": st});
    api.patch_status(
        &cfg.node_name,
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .api(format!("Node {} status", cfg.node_name))
}

/// Whether a condition's status differs from what the Node shows.
fn conditions_changed(pressure: crate::eviction::Pressure, node: &Node) -> bool {
    let now = node_status::conditions(pressure, &crate::status::now());
    let shown = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    now.iter().any(|c| {
        shown
            .iter()
            .find(|o| o.type_ == c.type_)
            .is_none_or(|o| o.status != c.status)
    })
}

/// Run the agent until `shutdown` resolves.
pub async fn run<C: Cri>(
    cri: C,
    client: Client,
    cfg: AgentConfig,
    mut worker: WorkerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    worker.node_name = cfg.node_name.clone();
    worker.host_ip = cfg.node_ip.clone();
    let mut node = register(&client, &cfg).await?;
    lease::renew(&client, &node, cfg.lease_duration_secs).await?;
    let uid = node.metadata.uid.clone().unwrap_or_default();
    api::node_event(
        &client,
        &cfg.node_name,
        &uid,
        "Starting",
        "Starting podctl node agent.".into(),
    )
    .await;

    let events = Arc::new(api::ApiEvents::start(client.clone(), cfg.node_name.clone()));
    let sources = Arc::new(api::ApiSources {
        client: client.clone(),
    });
    let manager = pods::PodManager::new(
        cri.clone(),
        client.clone(),
        cfg.node_name.clone(),
        worker,
        sources,
        events,
    );
    let pressure = manager.pressure.clone();
    let mut eviction_cfg = cfg.eviction.clone();
    let m = node_status::Machine::read(&cfg.root);
    eviction_cfg.allocatable_memory = m.memory_bytes.saturating_sub(cfg.reserved.memory);
    let eviction = Arc::new(crate::eviction::EvictionManager::new(
        eviction_cfg,
        cfg.root.clone(),
        pressure.clone(),
    ));
    let manager = Arc::new(manager);
    let kubelet = Arc::new(server::Kubelet {
        cri: cri.clone(),
        client: client.clone(),
        node: cfg.node_name.clone(),
        root: cfg.root.clone(),
        pods: manager.view.clone(),
    });
    let server_cfg = server::ServerConfig {
        addr: cfg.kubelet_addr,
        cert: cfg.tls_cert.clone(),
        key: cfg.tls_key.clone(),
        client_ca: cfg.client_ca.clone(),
    };
    let server = tokio::spawn(server::serve(kubelet, server_cfg));
    let watch = tokio::spawn(manager.clone().run());
    let evictions = tokio::spawn(eviction.run(manager.clone()));
    let statics = cfg.static_pods.clone().map(|dir| {
        tokio::spawn(static_pods::run(
            manager.clone(),
            client.clone(),
            dir,
            node.clone(),
            Duration::from_secs(5),
        ))
    });

    let heartbeat = {
        let client = client.clone();
        let cfg = cfg.clone();
        let cri = cri.clone();
        async move {
            let mut pod_cidr = String::new();
            pod_cidr::send(&cri, &node, &mut pod_cidr).await;
            let mut status_tick = tokio::time::interval(cfg.status_update);
            let mut lease_tick = tokio::time::interval(cfg.lease_renew);
            // Conditions are checked more often and sent as soon as one flips.
            let mut check_tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                // Status goes out every period, or as soon as a condition flips.
                let periodic = tokio::select! {
                    _ = status_tick.tick() => true,
                    _ = check_tick.tick() => false,
                    _ = lease_tick.tick() => {
                        if let Err(e) = lease::renew(&client, &node, cfg.lease_duration_secs).await {
                            tracing::warn!(error = %e, "lease");
                        }
                        continue;
                    }
                };
                let p = *pods::lock(&pressure);
                if periodic || conditions_changed(p, &node) {
                    let m = node_status::Machine::read(&cfg.root);
                    match update_status(&client, &cfg, &m, p, &node).await {
                        Ok(n) => {
                            node = n;
                            pod_cidr::send(&cri, &node, &mut pod_cidr).await;
                        }
                        Err(e) => tracing::warn!(error = %e, "node status"),
                    }
                }
            }
        }
    };
    let result = tokio::select! {
        () = heartbeat => Ok(()),
        () = shutdown => {
            tracing::info!("node agent stopping");
            Ok(())
        }
        r = server => r.unwrap_or_else(|e| Err(crate::NodeError::Server { reason: e.to_string() })),
    };
    watch.abort();
    evictions.abort();
    if let Some(s) = statics {
        s.abort();
    }
    result
}
