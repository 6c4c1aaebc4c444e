//! Images the cluster tests run as pods, built from this machine's files:
//!
//! - `kube-proxy`: the `kube-proxy` binary built from the same Kubernetes
//!   tree as the control plane, with Debian's `iptables` (the nf_tables
//!   variant, `xtables-nft-multi`, and its extension modules) on the
//!   busybox base, run as a DaemonSet pod on every node.
//! - `netexec`: agnhost (`netexec` serves `/hostname` and `/echo`) with
//!   curl, for pod-to-pod and Service traffic.

use std::collections::BTreeSet;

use serde_json::json;

use crate::critest_images::{
    base_layers, base_libs, docker_image, list, publish_images, read, with, CritestImage, Tree,
    PATH_ENV,
};
use crate::registry::Registry;
use crate::{io_err, Result};

/// Where Debian keeps iptables' extension modules (the path compiled
/// into `xtables-nft-multi`, the same inside the image).
const XTABLES_LIBDIR: &str = "/usr/lib/x86_64-linux-gnu/xtables";

/// The names `xtables-nft-multi` answers to, as `kube-proxy` runs them.
const IPTABLES_NAMES: [&str; 6] = [
    "iptables",
    "iptables-save",
    "iptables-restore",
    "ip6tables",
    "ip6tables-save",
    "ip6tables-restore",
];

fn image(
    repository: &str,
    content: crate::critest_images::Content,
    purpose: &'static str,
) -> CritestImage {
    CritestImage {
        upstream_host: "registry.k8s.io",
        repository: repository.into(),
        tag: "test".into(),
        content,
        purpose,
    }
}

/// The kube-proxy image; `kube_proxy` is the binary's path.
pub fn kube_proxy(kube_proxy: &str) -> Result<CritestImage> {
    let base = base_layers()?;
    let mut have: BTreeSet<String> = base_libs()?;
    let mut t = Tree::new()
        .file("usr/local/bin/kube-proxy", 0o755, &read(kube_proxy)?)
        .host_binary(
            "/usr/sbin/xtables-nft-multi",
            "usr/sbin/xtables-nft-multi",
            0o755,
            &mut have,
        )?;
    for n in IPTABLES_NAMES {
        t = t.symlink(&format!("usr/sbin/{n}"), "xtables-nft-multi");
    }
    let mut modules: Vec<String> = std::fs::read_dir(XTABLES_LIBDIR)
        .map_err(io_err("read", XTABLES_LIBDIR))?
        .flatten()
        .map(|e| e.path().display().to_string())
        .filter(|p| p.ends_with(".so"))
        .collect();
    modules.sort();
    for m in &modules {
        t = t.host_binary(m, m, 0o644, &mut have)?;
    }
    Ok(image(
        "kube-proxy",
        list(docker_image(
            with(&base, [t.dir("run", 0o755).finish()]),
            json!({"Env": [PATH_ENV], "Entrypoint": ["/usr/local/bin/kube-proxy"]}),
        )),
        "kube-proxy with iptables (nf_tables)",
    ))
}

/// agnhost (`netexec` by default, HTTP on 8080) with curl; `agnhost` is
/// the binary's path.
pub fn netexec(agnhost: &str) -> Result<CritestImage> {
    let base = base_layers()?;
    let mut have: BTreeSet<String> = base_libs()?;
    let t = Tree::new()
        .file("agnhost", 0o755, &read(agnhost)?)
        .host_binary("/usr/bin/curl", "usr/bin/curl", 0o755, &mut have)?
        .finish();
    Ok(image(
        "netexec",
        list(docker_image(
            with(&base, [t]),
            json!({
                "Env": [PATH_ENV],
                "Entrypoint": ["/agnhost"],
                "Cmd": ["netexec", "--http-port=8080"],
                "ExposedPorts": {"8080/tcp": {}},
            }),
        )),
        "HTTP server answering /hostname, with curl",
    ))
}

/// Both images pushed to `reg`: their references there, kube-proxy's
/// first.
pub fn publish(reg: &Registry, kube_proxy_bin: &str, agnhost: &str) -> Result<(String, String)> {
    let refs = publish_images(reg, None, &[kube_proxy(kube_proxy_bin)?, netexec(agnhost)?])?;
    let local = |i: usize| refs.get(i).map(|r| r.local.clone()).unwrap_or_default();
    Ok((local(0), local(1)))
}
