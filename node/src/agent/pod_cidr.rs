//! The Node's pod CIDR to the runtime, as the kubelet does: once the
//! controller-manager allocated `spec.podCIDR(s)`, UpdateRuntimeConfig
//! carries it (comma-joined for dual stack) to the CRI service, which may
//! render its CNI configuration from it (`[cni] conf_template`).

use k8s_openapi::api::core::v1::Node;
use podctl_cri::proto;
use tonic::Request;

use crate::cri::Cri;

/// The pod CIDRs `node` has, comma-joined; empty before allocation.
pub fn of(node: &Node) -> String {
    let spec = node.spec.as_ref();
    let many = spec
        .and_then(|s| s.pod_cidrs.clone())
        .filter(|v| !v.is_empty());
    match many {
        Some(v) => v.join(","),
        None => spec.and_then(|s| s.pod_cidr.clone()).unwrap_or_default(),
    }
}

/// Send `node`'s pod CIDR when it differs from `last` (updated on success).
pub async fn send<C: Cri>(cri: &C, node: &Node, last: &mut String) {
    let cidr = of(node);
    if cidr.is_empty() || cidr == *last {
        return;
    }
    let req = proto::UpdateRuntimeConfigRequest {
        runtime_config: Some(proto::RuntimeConfig {
            network_config: Some(proto::NetworkConfig {
                pod_cidr: cidr.clone(),
            }),
        }),
    };
    match cri.update_runtime_config(Request::new(req)).await {
        Ok(_) => {
            tracing::info!(pod_cidr = %cidr, "pod CIDR sent to the runtime");
            *last = cidr;
        }
        Err(e) => tracing::warn!(pod_cidr = %cidr, error = %e.message(), "UpdateRuntimeConfig"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dual_stack_cidrs_are_joined() {
        let n: Node = serde_json::from_value(serde_json::json!({
            "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:1::/64"]}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(of(&n), "10.244.1.0/24,fd00:1::/64");
        assert_eq!(of(&Node::default()), "");
    }
}
