//! The pod's names on the network: the sandbox's hostname and DNS
//! configuration ([`crate::hosts`], [`crate::dns`]) and the managed
//! `/etc/hosts` every container mounts.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::Container;
use podctl_cri::proto;

use super::PodWorker;
use crate::cri::Cri;
use crate::error::{IoContext, Result};

impl<C: Cri> PodWorker<C> {
    fn host_network(&self) -> bool {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false)
    }

    /// Hostname and DNS of the sandbox, as the kubelet sets them.
    pub(super) fn name_sandbox(&self, config: &mut proto::PodSandboxConfig) -> Result<()> {
        let (hostname, domain) = crate::hosts::hostname_and_domain(
            &self.pod,
            &self.name,
            &self.ns,
            &self.cfg.cluster_domain,
        )?;
        // A host-network pod keeps the node's hostname.
        config.hostname = if self.host_network() {
            String::new()
        } else {
            crate::hosts::kernel_hostname(&self.pod, &hostname, domain.as_deref())?
        };
        let node = crate::dns::NodeDns {
            cluster_dns: self.cfg.cluster_dns.clone(),
            cluster_domain: self.cfg.cluster_domain.clone(),
            host_resolv: std::fs::read_to_string(&self.cfg.host_resolv_conf).unwrap_or_default(),
        };
        config.dns_config = Some(crate::dns::pod_dns(&self.pod, &self.ns, &node));
        Ok(())
    }

    fn hosts_path(&self) -> PathBuf {
        self.cfg.pods_root.join(&self.uid).join("etc-hosts")
    }

    /// Write the pod's managed hosts file (once its IPs are known).
    pub(super) fn write_hosts(&self) -> Result<()> {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let aliases = spec.host_aliases.unwrap_or_default();
        let text = if self.host_network() {
            let node = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
            crate::hosts::host_network(&node, &aliases)
        } else {
            let (hostname, domain) = crate::hosts::hostname_and_domain(
                &self.pod,
                &self.name,
                &self.ns,
                &self.cfg.cluster_domain,
            )?;
            crate::hosts::managed(&self.facts.ips, &hostname, domain.as_deref(), &aliases)
        };
        let p = self.hosts_path();
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).ctx("create", dir)?;
        }
        // Written in place: containers bind-mount this very file.
        std::fs::write(&p, text).ctx("write", &p)
    }

    /// The `/etc/hosts` mount of container `c`, unless it mounts that
    /// path itself or the pod has no address yet.
    pub(super) fn hosts_mount(&self, c: &Container) -> Option<proto::Mount> {
        let own = c
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path.trim_end_matches('/') == "/etc/hosts");
        let p = self.hosts_path();
        (!own && !self.facts.ips.is_empty() && p.exists()).then(|| proto::Mount {
            container_path: "/etc/hosts".into(),
            host_path: p.display().to_string(),
            ..Default::default()
        })
    }
}
