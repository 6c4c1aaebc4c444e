//! `podctl node`: the node agent in place of the kubelet. It opens the
//! runtime and image store as `podctl serve` does (same configuration
//! file), serves the CRI socket too (for crictl), and drives pods through
//! that same in-process CRI service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use kube::config::{KubeConfigOptions, Kubeconfig};
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
    #[command(flatten)]
    pub serve: ServeArgs,
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
    let cfg = a.serve.load()?;
    let socket = cfg.socket.clone();
    let pods_root = cfg.root.join("pods");
    let svc = CriService::new(cfg).context("opening the runtime and image store")?;
    crate::stream::start(&svc).await?;
    svc.collect_periodically();
    let listener = server::bind(&socket)?;
    let _socket = server::SocketFile::new(&socket);
    let cri_server = tokio::spawn(server::serve(
        svc.clone(),
        listener,
        std::future::pending::<()>(),
    ));

    let node_name = a.node_name.clone().unwrap_or_else(host_name);
    if let Some(boot) = &a.bootstrap_kubeconfig {
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
    let kc = Kubeconfig::read_from(&a.kubeconfig)
        .with_context(|| format!("reading {}", a.kubeconfig.display()))?;
    let kcfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("kubeconfig {}", a.kubeconfig.display()))?;
    let client = kube::Client::try_from(kcfg).context("API client")?;

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
    r.map_err(Into::into)
}
