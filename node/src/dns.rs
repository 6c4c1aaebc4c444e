//! A pod's DNS configuration as the kubelet makes it from the pod's
//! `dnsPolicy` and `dnsConfig`, the node's resolv.conf and the cluster's
//! DNS settings (`--cluster-dns`, `--cluster-domain`).
//!
//! - `ClusterFirst` (the default): the cluster's name servers, searching
//!   `<ns>.svc.<domain>`, `svc.<domain>`, `<domain>` and then the node's
//!   search list, with `ndots:5`. A host-network pod, or a node without
//!   cluster DNS, falls back to `Default`.
//! - `ClusterFirstWithHostNet`: the same, also for host-network pods.
//! - `Default`: the node's resolv.conf.
//! - `None`: nothing but the pod's `dnsConfig`.
//!
//! The pod's `dnsConfig` is then merged in (servers and searches added
//! once each, options overriding by name) and the result cut to what
//! resolvers take: 3 servers, 6 search domains of 256 characters in all.

use k8s_openapi::api::core::v1::{Pod, PodDNSConfig};
use podctl_cri::proto;

/// At most this many name servers are used by resolvers.
pub const MAX_SERVERS: usize = 3;
/// Search list limits.
pub const MAX_SEARCHES: usize = 6;
pub const MAX_SEARCH_CHARS: usize = 256;

/// The node's side of DNS.
#[derive(Clone, Debug, Default)]
pub struct NodeDns {
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    /// The node's resolv.conf text.
    pub host_resolv: String,
}

/// The name servers, search list and options of resolv.conf text.
pub fn parse_resolv(text: &str) -> proto::DnsConfig {
    let mut out = proto::DnsConfig::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => out.servers.extend(words.next().map(str::to_string)),
            // The last search (or domain) line wins, as in resolv.conf(5).
            Some("search") | Some("domain") => {
                out.searches = words.map(str::to_string).collect();
            }
            Some("options") => out.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    out
}

fn push_unique(v: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for i in items {
        if !v.contains(&i) {
            v.push(i);
        }
    }
}

/// Merge options by name (`name` or `name:value`), later ones winning.
fn merge_options(base: &mut Vec<String>, more: impl IntoIterator<Item = String>) {
    for o in more {
        let name = o.split(':').next().unwrap_or(&o).to_string();
        match base
            .iter_mut()
            .find(|b| b.split(':').next().unwrap_or(b) == name)
        {
            Some(b) => *b = o,
            None => base.push(o),
        }
    }
}

fn pod_dns_config(c: &PodDNSConfig) -> proto::DnsConfig {
    proto::DnsConfig {
        servers: c.nameservers.clone().unwrap_or_default(),
        searches: c.searches.clone().unwrap_or_default(),
        options: c
            .options
            .iter()
            .flatten()
            .filter_map(|o| {
                let n = o.name.clone()?;
                Some(match &o.value {
                    Some(v) => format!("{n}:{v}"),
                    None => n,
                })
            })
            .collect(),
    }
}

/// The DNS configuration RunPodSandbox gets for `pod` in namespace `ns`.
pub fn pod_dns(pod: &Pod, ns: &str, node: &NodeDns) -> proto::DnsConfig {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let host = parse_resolv(&node.host_resolv);
    let cluster = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        _ => false,
    } && !node.cluster_dns.is_empty();
    let mut out = match policy {
        "None" => proto::DnsConfig::default(),
        _ if cluster => {
            let d = node.cluster_domain.trim_matches('.');
            let mut searches = Vec::new();
            if !d.is_empty() {
                searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.to_string()];
            }
            push_unique(&mut searches, host.searches);
            proto::DnsConfig {
                servers: node.cluster_dns.clone(),
                searches,
                options: vec!["ndots:5".into()],
            }
        }
        _ => host,
    };
    if let Some(c) = spec.and_then(|s| s.dns_config.as_ref()) {
        let extra = pod_dns_config(c);
        push_unique(&mut out.servers, extra.servers);
        push_unique(&mut out.searches, extra.searches);
        merge_options(&mut out.options, extra.options);
    }
    out.servers.truncate(MAX_SERVERS);
    let mut chars = 0;
    let mut kept = Vec::new();
    for s in out.searches {
        chars += s.len() + usize::from(!kept.is_empty());
        if kept.len() == MAX_SEARCHES || chars > MAX_SEARCH_CHARS {
            break;
        }
        kept.push(s);
    }
    out.searches = kept;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodDNSConfigOption, PodSpec};

    fn node() -> NodeDns {
        NodeDns {
            cluster_dns: vec!["10.96.0.10".into()],
            cluster_domain: "cluster.local".into(),
            host_resolv: "# host\nnameserver 192.0.2.53\nsearch corp.example\noptions rotate\n"
                .into(),
        }
    }

    fn pod(policy: Option<&str>, host_network: bool, cfg: Option<PodDNSConfig>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                dns_policy: policy.map(str::to_string),
                host_network: Some(host_network),
                dns_config: cfg,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn cluster_first_searches_the_namespace_then_the_node() {
        let d = pod_dns(&pod(None, false, None), "team", &node());
        assert_eq!(d.servers, ["10.96.0.10"]);
        assert_eq!(
            d.searches,
            [
                "team.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example"
            ]
        );
        assert_eq!(d.options, ["ndots:5"]);
    }

    #[test]
    fn host_network_and_default_use_the_nodes_resolv_conf() {
        for p in [pod(None, true, None), pod(Some("Default"), false, None)] {
            let d = pod_dns(&p, "team", &node());
            assert_eq!(d.servers, ["192.0.2.53"]);
            assert_eq!(d.searches, ["corp.example"]);
            assert_eq!(d.options, ["rotate"]);
        }
        let d = pod_dns(
            &pod(Some("ClusterFirstWithHostNet"), true, None),
            "team",
            &node(),
        );
        assert_eq!(d.servers, ["10.96.0.10"]);
        let mut no_cluster = node();
        no_cluster.cluster_dns.clear();
        let d = pod_dns(&pod(None, false, None), "team", &no_cluster);
        assert_eq!(d.servers, ["192.0.2.53"]);
    }

    #[test]
    fn none_takes_only_the_pods_config_and_limits_apply() {
        let cfg = PodDNSConfig {
            nameservers: Some(vec!["1.1.1.1".into(), "1.1.1.1".into(), "2.2.2.2".into()]),
            searches: Some((0..8).map(|i| format!("s{i}.example")).collect()),
            options: Some(vec![
                PodDNSConfigOption {
                    name: Some("ndots".into()),
                    value: Some("2".into()),
                },
                PodDNSConfigOption {
                    name: Some("edns0".into()),
                    value: None,
                },
            ]),
        };
        let d = pod_dns(&pod(Some("None"), false, Some(cfg.clone())), "ns", &node());
        assert_eq!(d.servers, ["1.1.1.1", "2.2.2.2"]);
        assert_eq!(d.searches.len(), MAX_SEARCHES);
        assert_eq!(d.options, ["ndots:2", "edns0"]);
        // Merged into ClusterFirst: ndots overridden, servers added.
        let d = pod_dns(&pod(None, false, Some(cfg)), "ns", &node());
        assert_eq!(d.servers, ["10.96.0.10", "1.1.1.1", "2.2.2.2"]);
        assert_eq!(d.options, ["ndots:2", "edns0"]);
    }
}
