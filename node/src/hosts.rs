//! A pod's names and its `/etc/hosts`, as the kubelet makes them.
//!
//! - The hostname is `spec.hostname`, else the pod's name, cut to the
//!   kernel's 63 characters without a trailing `-` or `.`; with
//!   `spec.subdomain` the pod's domain is `<subdomain>.<ns>.svc.<cluster
//!   domain>` (and with `setHostnameAsFQDN` the kernel hostname is the
//!   whole name).
//! - Every container gets a hosts file the node manages (unless it mounts
//!   `/etc/hosts` itself): for a pod with its own network, `localhost`,
//!   the IPv6 names, the pod's IPs with its hostname (and FQDN), then the
//!   pod's `hostAliases`; for a host-network pod, the node's own hosts
//!   file plus the aliases. The first line says which (the e2e suite reads
//!   it).

use k8s_openapi::api::core::v1::{HostAlias, Pod};

use crate::error::{NodeError, Result};

/// The kernel's limit on a hostname.
pub const HOSTNAME_MAX: usize = 63;
/// First line of a pod's managed hosts file.
pub const MANAGED_HEADER: &str = "# Kubernetes-managed hosts file.\n";
/// First line of a host-network pod's hosts file.
pub const HOST_NETWORK_HEADER: &str = "# Kubernetes-managed hosts file (host network).\n";

/// `name` cut to the kernel's limit without a trailing `-` or `.`.
pub fn truncate_hostname(name: &str) -> String {
    if name.len() <= HOSTNAME_MAX {
        return name.to_string();
    }
    let mut end = HOSTNAME_MAX;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].trim_end_matches(['-', '.']).to_string()
}

/// The pod's hostname and, with a subdomain, its domain.
pub fn hostname_and_domain(
    pod: &Pod,
    name: &str,
    ns: &str,
    cluster_domain: &str,
) -> Result<(String, Option<String>)> {
    let spec = pod.spec.as_ref();
    let wanted = spec
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| name.to_string());
    let hostname = truncate_hostname(&wanted);
    if hostname.is_empty() {
        return Err(NodeError::Config {
            pod: format!("{ns}/{name}"),
            reason: format!("hostname {wanted:?} is not usable"),
        });
    }
    let domain = spec
        .and_then(|s| s.subdomain.clone())
        .filter(|d| !d.is_empty())
        .map(|sub| format!("{sub}.{ns}.svc.{}", cluster_domain.trim_matches('.')));
    Ok((hostname, domain))
}

/// The hostname the pod's UTS namespace gets: the hostname, or with
/// `setHostnameAsFQDN` the fully qualified name (which must fit).
pub fn kernel_hostname(pod: &Pod, hostname: &str, domain: Option<&str>) -> Result<String> {
    let fqdn = pod
        .spec
        .as_ref()
        .and_then(|s| s.set_hostname_as_fqdn)
        .unwrap_or(false);
    match domain {
        Some(d) if fqdn => {
            let full = format!("{hostname}.{d}");
            if full.len() > HOSTNAME_MAX + 1 {
                return Err(NodeError::Config {
                    pod: hostname.to_string(),
                    reason: format!(
                        "the FQDN {full:?} is longer than {} characters (setHostnameAsFQDN)",
                        HOSTNAME_MAX + 1
                    ),
                });
            }
            Ok(full)
        }
        _ => Ok(hostname.to_string()),
    }
}

fn aliases(list: &[HostAlias]) -> String {
    if list.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n# Entries added by HostAliases.\n");
    for a in list {
        let names = a.hostnames.clone().unwrap_or_default().join("\t");
        s.push_str(&format!("{}\t{names}\n", a.ip));
    }
    s
}

/// The managed hosts file of a pod with its own network.
pub fn managed(ips: &[String], hostname: &str, domain: Option<&str>, al: &[HostAlias]) -> String {
    let mut s = String::from(MANAGED_HEADER);
    s.push_str("127.0.0.1\tlocalhost\n");
    s.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
    s.push_str("fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\n");
    s.push_str("fe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n");
    for ip in ips {
        match domain {
            Some(d) => s.push_str(&format!("{ip}\t{hostname}.{d}\t{hostname}\n")),
            None => s.push_str(&format!("{ip}\t{hostname}\n")),
        }
    }
    s.push_str(&aliases(al));
    s
}

/// A host-network pod's hosts file: the node's, plus the aliases.
pub fn host_network(node_hosts: &str, al: &[HostAlias]) -> String {
    format!("{HOST_NETWORK_HEADER}{node_hosts}{}", aliases(al))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;

    #[test]
    fn long_names_are_cut_without_a_trailing_dash_or_dot() {
        let name = format!("{}-.{}", "a".repeat(61), "b".repeat(20));
        assert_eq!(truncate_hostname(&name), "a".repeat(61));
        assert_eq!(truncate_hostname("web"), "web");
        let pod = Pod::default();
        assert_eq!(
            hostname_and_domain(&pod, &name, "ns", "cluster.local").ok(),
            Some(("a".repeat(61), None))
        );
    }

    #[test]
    fn subdomain_and_fqdn() {
        let pod = Pod {
            spec: Some(PodSpec {
                hostname: Some("h".into()),
                subdomain: Some("sub".into()),
                set_hostname_as_fqdn: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (h, d) =
            hostname_and_domain(&pod, "p", "ns", "cluster.local").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.as_deref(), Some("sub.ns.svc.cluster.local"));
        assert_eq!(
            kernel_hostname(&pod, &h, d.as_deref()).ok().as_deref(),
            Some("h.sub.ns.svc.cluster.local")
        );
        let text = managed(&["10.1.2.3".into()], &h, d.as_deref(), &[]);
        assert!(text.starts_with(MANAGED_HEADER));
        assert!(
            text.ends_with("10.1.2.3\th.sub.ns.svc.cluster.local\th\n"),
            "{text}"
        );
    }

    #[test]
    fn aliases_follow_the_entries() {
        let al = [HostAlias {
            ip: "123.45.67.89".into(),
            hostnames: Some(vec!["foo.local".into(), "bar.local".into()]),
        }];
        let text = managed(&["10.0.0.2".into()], "p", None, &al);
        assert!(text.ends_with(
            "10.0.0.2\tp\n\n# Entries added by HostAliases.\n123.45.67.89\tfoo.local\tbar.local\n"
        ));
        let hn = host_network("127.0.0.1 localhost\n", &al);
        assert!(hn.starts_with(HOST_NETWORK_HEADER));
        assert!(!hn.starts_with(MANAGED_HEADER));
    }
}
