//! The CNI configuration rendered from a template once the pod CIDR is
//! known, as containerd's `conf_template`: the node agent (or a kubelet)
//! sends its Node's `spec.podCIDR` by UpdateRuntimeConfig, and
//! `[cni] conf_template` becomes `<conf_dir>/10-podctl-net.conflist` with
//! `{{.PodCIDR}}` replaced (the first range of a dual-stack pair).

use std::path::{Path, PathBuf};

use crate::error::{CriError, IoContext, Result};

/// The file the template is rendered into.
pub const RENDERED: &str = "10-podctl-net.conflist";

const PLACEHOLDER: &str = "{{.PodCIDR}}";

fn cidr_ok(c: &str) -> bool {
    let Some((ip, len)) = c.split_once('/') else {
        return false;
    };
    match (ip.parse::<std::net::IpAddr>(), len.parse::<u8>()) {
        (Ok(std::net::IpAddr::V4(_)), Ok(l)) => l <= 32,
        (Ok(std::net::IpAddr::V6(_)), Ok(l)) => l <= 128,
        _ => false,
    }
}

/// Render `template` for `pod_cidr` into `conf_dir` (atomically); the
/// written file.
pub fn render(template: &Path, conf_dir: &Path, pod_cidr: &str) -> Result<PathBuf> {
    let first = pod_cidr.split(',').next().unwrap_or("").trim();
    if !cidr_ok(first) {
        return Err(CriError::Invalid {
            what: "pod CIDR".into(),
            reason: format!("{pod_cidr:?} is not a CIDR"),
        });
    }
    let text = std::fs::read_to_string(template).ctx("read", template)?;
    let bad = |reason: String| CriError::Config {
        path: template.to_path_buf(),
        reason,
    };
    if !text.contains(PLACEHOLDER) {
        return Err(bad(format!("the CNI template has no {PLACEHOLDER}")));
    }
    let out = text.replace(PLACEHOLDER, first);
    if let Some(i) = out.find("{{") {
        let rest: String = out[i..].chars().take(40).collect();
        return Err(bad(format!(
            "unknown template directive at {rest:?} (only {PLACEHOLDER} is known)"
        )));
    }
    serde_json::from_str::<serde_json::Value>(&out)
        .map_err(|e| bad(format!("not JSON once rendered: {e}")))?;
    std::fs::create_dir_all(conf_dir).ctx("create", conf_dir)?;
    let path = conf_dir.join(RENDERED);
    podctl_shim::state::write_atomic(&path, out.as_bytes()).ctx("write", &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_pod_cidr_and_refuses_what_it_cannot() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let t = d.path().join("template.json");
        std::fs::write(
            &t,
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","ipam":{"type":"host-local","ranges":[[{"subnet":"{{.PodCIDR}}"}]]}}]}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let conf = d.path().join("net.d");
        let p = render(&t, &conf, "10.244.1.0/24,fd00::/64").unwrap_or_else(|e| panic!("{e}"));
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&p).unwrap_or_default()).unwrap_or_default();
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.244.1.0/24"
        );
        let err = |cidr: &str| {
            render(&t, &conf, cidr)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err("10.244.1.0").contains("not a CIDR"));
        assert!(err("10.244.1.0/33").contains("not a CIDR"));
        std::fs::write(&t, r#"{"subnet":"{{.PodCIDR}}","x":"{{.Routes}}"}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        let e = err("10.244.1.0/24");
        assert!(
            e.contains("template.json") && e.contains("{{.Routes}}"),
            "{e}"
        );
        std::fs::write(&t, "{\"subnet\": {{.PodCIDR}}}").unwrap_or_else(|e| panic!("{e}"));
        assert!(err("10.244.1.0/24").contains("not JSON"));
        // What was written last stays.
        assert!(std::fs::read_to_string(&p)
            .unwrap_or_default()
            .contains("10.244.1.0/24"));
    }
}
