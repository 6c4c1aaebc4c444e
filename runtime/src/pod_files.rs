//! The pod's `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf`,
//! written into the sandbox directory and bind-mounted into every
//! container of the pod.

use std::path::Path;

use podctl_shim::state::write_atomic;

use crate::error::{IoContext, Result};
use crate::sandbox::SandboxConfig;

/// Write the three files for a pod with address `ip` into `dir`.
pub(crate) fn write(dir: &Path, cfg: &SandboxConfig, ip: Option<&str>) -> Result<()> {
    let (hostname, hosts) = if cfg.host_network {
        (
            host_name(),
            std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
        )
    } else {
        let hostname = pod_hostname(cfg).to_string();
        let mut hosts =
            String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        if let Some(ip) = ip {
            hosts.push_str(&format!("{ip}\t{hostname}\n"));
        }
        (hostname, hosts)
    };
    let resolv = match &cfg.dns {
        Some(d) => d.render(),
        None => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    };
    for (name, data) in [
        ("hostname", format!("{hostname}\n")),
        ("hosts", hosts),
        ("resolv.conf", resolv),
    ] {
        let p = dir.join(name);
        write_atomic(&p, data.as_bytes()).ctx("write", &p)?;
    }
    Ok(())
}

/// The node's hostname (a host-network pod's).
pub(crate) fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The pod's hostname: the configured one, else the pod name cut to the
/// kernel's limit (63 bytes, as the kubelet does) without a trailing `-`
/// or `.`.
pub(crate) fn pod_hostname(cfg: &SandboxConfig) -> &str {
    if !cfg.hostname.is_empty() {
        return &cfg.hostname;
    }
    if cfg.name.is_empty() {
        return "localhost";
    }
    let mut end = cfg.name.len().min(63);
    while !cfg.name.is_char_boundary(end) {
        end -= 1;
    }
    let cut = cfg.name[..end].trim_end_matches(['-', '.']);
    if cut.is_empty() {
        "localhost"
    } else {
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_fits_the_kernel_limit() {
        let mut cfg = SandboxConfig {
            name: format!("{}-x", "a".repeat(62)),
            ..Default::default()
        };
        assert_eq!(pod_hostname(&cfg), "a".repeat(62));
        cfg.name = "web".into();
        assert_eq!(pod_hostname(&cfg), "web");
        cfg.hostname = "given".into();
        assert_eq!(pod_hostname(&cfg), "given");
    }
}
