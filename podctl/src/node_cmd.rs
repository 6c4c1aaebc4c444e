//! `podctl node`: the node agent in place of the kubelet. It opens the
//! runtime and image store as `podctl serve` does (same configuration
//! file), serves the CRI socket too (for crictl), and drives pods through
//! that same in-process CRI service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use kube::config::Kubeconfig;
use podctl_cri::{server, CriService};
use podctl_node::agent::{self, AgentConfig};
use podctl_node::worker::WorkerConfig;

use crate::serve::ServeArgs;

#[derive(Args, Debug)]
pub struct NodeArgs {
    /// Credentials of this node (`system:node:<name>` in `system:nodes`);
    /// written by the TLS bootstrap when missing and
    /// `--bootstrap-kubeconfig` is given.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Bootstrap-token credentials used to request the node's client
    /// certificate (CertificateSigningRequest) when `--kubeconfig` is missing.
    #[arg(long)]
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// Where the bootstrapped key and certificate go.
    #[arg(long, default_value = "/var/lib/podctl/pki")]
    pub cert_dir: PathBuf,
    /// Renew the node's client certificate (in --cert-dir) before it
    /// expires, by a CertificateSigningRequest, as the kubelet's flag.
    #[arg(long)]
    pub rotate_certificates: bool,
    /// Node name (default: the host name).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The address the API server reaches this node at (InternalIP).
    #[arg(long, default_value = "127.0.0.1")]
    pub node_ip: String,
    /// The kubelet API's listen address.
    #[arg(long, default_value = "0.0.0.0:10250")]
    pub kubelet_address: SocketAddr,
    /// The kubelet API's serving certificate and key (PEM).
    #[arg(long)]
    pub tls_cert_file: PathBuf,
    #[arg(long)]
    pub tls_private_key_file: PathBuf,
    /// CA that signs client certificates (the API server's kubelet client).
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// Extra node labels (`key=value`, repeatable).
    #[arg(long = "node-label")]
    pub labels: Vec<String>,
    /// Directory of static Pod manifests (run here, mirrored in the API).
    #[arg(long)]
    pub pod_manifest_path: Option<PathBuf>,
    /// Seconds between rewrites of configMap/secret/projected volumes from
    /// the API (the kubelet's --sync-frequency).
    #[arg(long, default_value_t = 60)]
    pub sync_frequency: u64,
    /// DNS server(s) for pods with dnsPolicy ClusterFirst (the cluster's
    /// DNS Service IP; comma-separated or repeated).
    #[arg(long = "cluster-dns", value_delimiter = ',')]
    pub cluster_dns: Vec<String>,
    /// The cluster's DNS domain: pods search `<ns>.svc.<domain>`,
    /// `svc.<domain>` and `<domain>`.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Sysctls pods may set besides the safe set (names or `prefix*`,
    /// comma-separated or repeated).
    #[arg(long = "allowed-unsafe-sysctls", value_delimiter = ',')]
    pub allowed_unsafe_sysctls: Vec<String>,
    /// Seconds between node status updates.
    #[arg(long, default_value_t = 10)]
    pub node_status_update_frequency: u64,
    /// Resources kept from pods for the system
    /// (`cpu=500m,memory=1Gi,ephemeral-storage=1Gi`).
    #[arg(long, default_value = "")]
    pub system_reserved: String,
    /// Resources kept from pods for the node agent (as --system-reserved).
    #[arg(long, default_value = "")]
    pub kube_reserved: String,
    /// Hard eviction thresholds (`memory.available<100Mi,nodefs.available<10%`;
    /// default the kubelet's; empty: none).
    #[arg(long)]
    pub eviction_hard: Option<String>,
    /// Soft eviction thresholds (each needs --eviction-soft-grace-period).
    #[arg(long, default_value = "")]
    pub eviction_soft: String,
    /// How long a soft threshold must stay met (`memory.available=1m30s`).
    #[arg(long, default_value = "")]
    pub eviction_soft_grace_period: String,
    /// Longest grace period (seconds) a soft eviction gives a pod (0: its own).
    #[arg(long, default_value_t = 0)]
    pub eviction_max_pod_grace_period: u64,
    /// How long a pressure condition stays after its threshold was last met.
    #[arg(long, default_value = "5m")]
    pub eviction_pressure_transition_period: String,
    /// How often eviction signals are measured.
    #[arg(long, default_value = "10s")]
    pub housekeeping_interval: String,
    #[command(flatten)]
    pub serve: ServeArgs,
}

fn duration_flag(flag: &str, v: &str) -> anyhow::Result<Duration> {
    podctl_node::eviction::thresholds::parse_duration(v)
        .with_context(|| format!("--{flag} {v:?}: want a duration like 90s, 1m30s or 5m"))
}

/// The eviction and reserve flags, checked.
fn eviction_flags(
    a: &NodeArgs,
) -> anyhow::Result<(agent::Reserved, podctl_node::eviction::EvictionConfig)> {
    let reserved = agent::Reserved::default()
        .add("--system-reserved", &a.system_reserved)?
        .add("--kube-reserved", &a.kube_reserved)?;
    let thresholds = podctl_node::eviction::thresholds::build(
        a.eviction_hard.as_deref(),
        &a.eviction_soft,
        &a.eviction_soft_grace_period,
    )?;
    let cfg = podctl_node::eviction::EvictionConfig {
        thresholds,
        max_pod_grace: Duration::from_secs(a.eviction_max_pod_grace_period),
        transition: duration_flag(
            "eviction-pressure-transition-period",
            &a.eviction_pressure_transition_period,
        )?,
        interval: duration_flag("housekeeping-interval", &a.housekeeping_interval)?
            .max(Duration::from_millis(100)),
        allocatable_memory: 0,
    };
    Ok((reserved, cfg))
}

fn host_name() -> String {
    nix_hostname().unwrap_or_else(|| "localhost".into())
}

fn nix_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
}

/// Run the agent; container logs go under `log_root` (`--log-root`).
pub async fn node(a: NodeArgs, log_root: PathBuf) -> anyhow::Result<()> {
    let (reserved, eviction) = eviction_flags(&a)?;
    let cfg = a.serve.load()?;
    let socket = cfg.socket.clone();
    let pods_root = cfg.root.join("pods");
    let root = cfg.root.clone();
    let svc = CriService::new(cfg).context("opening the runtime and image store")?;
    svc.watch_state();
    crate::stream::start(&svc).await?;
    svc.collect_periodically();
    svc.start_nri().context("starting NRI")?;
    let listener = server::bind(&socket)?;
    let _socket = server::SocketFile::new(&socket);
    let cri_server = tokio::spawn(server::serve(
        svc.clone(),
        listener,
        std::future::pending::<()>(),
    ));

    let node_name = a.node_name.clone().unwrap_or_else(host_name);
    if let Some(boot) = &a.bootstrap_kubeconfig {
        if a.rotate_certificates && agent::rotation::expired(&a.kubeconfig) {
            tracing::warn!(kubeconfig = %a.kubeconfig.display(), "the node certificate expired: bootstrapping again");
            std::fs::remove_file(&a.kubeconfig)
                .with_context(|| format!("removing {}", a.kubeconfig.display()))?;
        }
        agent::bootstrap::bootstrap(
            boot,
            &a.kubeconfig,
            &a.cert_dir,
            &node_name,
            Duration::from_secs(300),
        )
        .await
        .context("TLS bootstrap")?;
    }
    let (client, rotation) = if a.rotate_certificates {
        let (client, slot) = agent::rotation::rotating_client(&a.kubeconfig).await?;
        let task = tokio::spawn(agent::rotation::run(
            slot,
            a.kubeconfig.clone(),
            a.cert_dir.clone(),
            node_name.clone(),
        ));
        (client, Some(task))
    } else {
        let kc = Kubeconfig::read_from(&a.kubeconfig)
            .with_context(|| format!("reading {}", a.kubeconfig.display()))?;
        let client = agent::bootstrap::client_for(kc, &a.kubeconfig, "kubeconfig").await?;
        (client, None)
    };

    let mut labels = std::collections::BTreeMap::new();
    for l in &a.labels {
        let (k, v) = l
            .split_once('=')
            .with_context(|| format!("--node-label {l:?}: want key=value"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    let acfg = AgentConfig {
        node_name,
        node_ip: a.node_ip.clone(),
        kubelet_addr: a.kubelet_address,
        tls_cert: a.tls_cert_file.clone(),
        tls_key: a.tls_private_key_file.clone(),
        client_ca: a.client_ca_file.clone(),
        labels,
        status_update: Duration::from_secs(a.node_status_update_frequency.max(1)),
        static_pods: a.pod_manifest_path.clone(),
        root,
        reserved,
        eviction,
        ..Default::default()
    };
    let worker = WorkerConfig {
        volume_sync: Duration::from_secs(a.sync_frequency.max(1)),
        log_root,
        pods_root,
        cluster_dns: a.cluster_dns.clone(),
        cluster_domain: a.cluster_domain.clone(),
        allowed_unsafe_sysctls: a.allowed_unsafe_sysctls.clone(),
        ..Default::default()
    };
    tracing::info!(node = %acfg.node_name, "starting node agent");
    let r = agent::run(svc, client, acfg, worker, crate::serve::shutdown_signal()).await;
    cri_server.abort();
    if let Some(t) = rotation {
        t.abort();
    }
    r.map_err(Into::into)
}
