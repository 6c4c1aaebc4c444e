//! A container's environment as the kubelet builds it: `envFrom` first,
//! then `env` in order (later wins), values with `$(VAR)` expanded from
//! what is already defined (`$$` escapes), `valueFrom` resolved from
//! ConfigMaps, Secrets, the pod's fields and the container's resources.
//! A missing non-optional reference is an error (the kubelet's
//! CreateContainerConfigError).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::error::{NodeError, Result};
use crate::quantity;
use crate::sources::Sources;

/// Facts about the pod that the downward API exposes.
#[derive(Clone, Debug, Default)]
pub struct PodFacts {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub node_name: String,
    pub host_ip: String,
    pub pod_ips: Vec<String>,
    pub service_account: String,
}

/// Expand `$(NAME)` from `vars`; `$$` is a literal `$`; unknown
/// references stay as written.
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'(' {
                if let Some(end) = s[i + 2..].find(')') {
                    let name = &s[i + 2..i + 2 + end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => out.push_str(&s[i..i + 3 + end]),
                    }
                    i += 3 + end;
                    continue;
                }
            }
        }
        let ch = s[i..].chars().next().unwrap_or('$');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// A pod field by its downward-API path.
pub fn field(pod: &Pod, facts: &PodFacts, path: &str) -> Option<String> {
    let meta = &pod.metadata;
    let keyed = |prefix: &str, m: &Option<BTreeMap<String, String>>| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        m.as_ref()?.get(key).cloned()
    };
    Some(match path {
        "metadata.name" => facts.name.clone(),
        "metadata.namespace" => facts.namespace.clone(),
        "metadata.uid" => facts.uid.clone(),
        "spec.nodeName" => facts.node_name.clone(),
        "spec.serviceAccountName" => facts.service_account.clone(),
        "status.hostIP" => facts.host_ip.clone(),
        "status.hostIPs" => facts.host_ip.clone(),
        "status.podIP" => facts.pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => facts.pod_ips.join(","),
        p if p.starts_with("metadata.labels['") => {
            keyed("metadata.labels['", &meta.labels).unwrap_or_default()
        }
        p if p.starts_with("metadata.annotations['") => {
            keyed("metadata.annotations['", &meta.annotations).unwrap_or_default()
        }
        _ => return None,
    })
}

/// A container resource (`limits.memory`, `requests.cpu`, ...) divided
/// by `divisor` (default 1), rounded up as the kubelet does; unset limits
/// fall back to the node's capacity.
pub fn resource(c: &Container, res: &str, divisor: Option<&str>) -> Option<String> {
    let (which, name) = res.split_once('.')?;
    let q = c.resources.as_ref().and_then(|r| {
        if which == "limits" {
            r.limits.as_ref()
        } else {
            r.requests.as_ref()
        }
        .and_then(|m| m.get(name))
        .map(|q| q.0.clone())
    });
    let cpu = name == "cpu";
    let scale = if cpu { 1000.0 } else { 1.0 };
    let value = match q.and_then(|q| quantity::parse(&q, scale)) {
        Some(v) => v,
        None if which == "limits" && cpu => std::thread::available_parallelism()
            .map(|n| n.get() as i64 * 1000)
            .unwrap_or(1000),
        None if which == "limits" => crate::resources::memory_capacity(),
        None => 0,
    };
    let div = divisor
        .and_then(|d| quantity::parse(d, scale))
        .filter(|d| *d > 0)
        .unwrap_or(if cpu { 1000 } else { 1 });
    Some(((value + div - 1) / div).to_string())
}

fn missing(pod: &str, c: &Container, what: String) -> NodeError {
    NodeError::Container {
        pod: pod.to_string(),
        container: c.name.clone(),
        reason: what,
    }
}

/// The environment of `c` as `NAME=value` pairs in kubelet order.
/// The Docker-links style variables of Services, as the kubelet makes
/// them (`KUBERNETES_SERVICE_HOST`, `KUBERNETES_PORT_443_TCP_ADDR`, ...).
/// Headless services (no cluster IP) give none.
pub fn service_env(services: &[k8s_openapi::api::core::v1::Service]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let ip = match spec.cluster_ip.as_deref() {
            Some(ip) if !ip.is_empty() && ip != "None" => ip,
            _ => continue,
        };
        let name = svc
            .metadata
            .name
            .clone()
            .unwrap_or_default()
            .to_uppercase()
            .replace('-', "_");
        let ports = spec.ports.clone().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        out.push((format!("{name}_SERVICE_HOST"), ip.to_string()));
        out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for p in &ports {
            if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!(
                        "{name}_SERVICE_PORT_{}",
                        pn.to_uppercase().replace('-', "_")
                    ),
                    p.port.to_string(),
                ));
            }
        }
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.clone().unwrap_or_else(|| "TCP".into())
        };
        out.push((
            format!("{name}_PORT"),
            format!("{}://{ip}:{}", proto(first).to_lowercase(), first.port),
        ));
        for p in &ports {
            let pr = proto(p);
            let base = format!("{name}_PORT_{}_{}", p.port, pr.to_uppercase());
            out.push((
                base.clone(),
                format!("{}://{ip}:{}", pr.to_lowercase(), p.port),
            ));
            out.push((format!("{base}_PROTO"), pr.to_lowercase()));
            out.push((format!("{base}_PORT"), p.port.to_string()));
            out.push((format!("{base}_ADDR"), ip.to_string()));
        }
    }
    out
}

pub async fn resolve(
    pod: &Pod,
    facts: &PodFacts,
    c: &Container,
    sources: &dyn Sources,
) -> Result<Vec<(String, String)>> {
    let full = format!("{}/{}", facts.namespace, facts.name);
    let ns = facts.namespace.as_str();
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut set = |vars: &mut BTreeMap<String, String>, k: String, v: String| {
        if !vars.contains_key(&k) {
            order.push(k.clone());
        }
        vars.insert(k, v);
    };
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    for (k, v) in service_env(&sources.services(ns, links).await?) {
        set(&mut vars, k, v);
    }
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match sources.config_map(ns, &r.name).await? {
                Some(cm) => {
                    for (k, v) in cm.data.unwrap_or_default() {
                        set(&mut vars, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => {
                    return Err(missing(
                        &full,
                        c,
                        format!("configmap {:?} not found", r.name),
                    ))
                }
            }
        }
        if let Some(r) = &from.secret_ref {
            match sources.secret(ns, &r.name).await? {
                Some(s) => {
                    for (k, v) in s.data.unwrap_or_default() {
                        set(
                            &mut vars,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v.0).into_owned(),
                        );
                    }
                    for (k, v) in s.string_data.unwrap_or_default() {
                        set(&mut vars, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(missing(&full, c, format!("secret {:?} not found", r.name))),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (_, Some(from)) => {
                if let Some(r) = &from.config_map_key_ref {
                    let cm = sources.config_map(ns, &r.name).await?;
                    match cm.and_then(|cm| cm.data.and_then(|d| d.get(&r.key).cloned())) {
                        Some(v) => Some(v),
                        None if r.optional == Some(true) => None,
                        None => {
                            return Err(missing(
                                &full,
                                c,
                                format!(
                                    "env {}: key {:?} of configmap {:?} not found",
                                    e.name, r.key, r.name
                                ),
                            ))
                        }
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    let s = sources.secret(ns, &r.name).await?;
                    let v = s.and_then(|s| {
                        s.data
                            .and_then(|d| {
                                d.get(&r.key)
                                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                            })
                            .or_else(|| s.string_data.and_then(|d| d.get(&r.key).cloned()))
                    });
                    match v {
                        Some(v) => Some(v),
                        None if r.optional == Some(true) => None,
                        None => {
                            return Err(missing(
                                &full,
                                c,
                                format!(
                                    "env {}: key {:?} of secret {:?} not found",
                                    e.name, r.key, r.name
                                ),
                            ))
                        }
                    }
                } else if let Some(f) = &from.field_ref {
                    Some(field(pod, facts, &f.field_path).ok_or_else(|| {
                        missing(
                            &full,
                            c,
                            format!("env {}: unsupported fieldPath {:?}", e.name, f.field_path),
                        )
                    })?)
                } else if let Some(r) = &from.resource_field_ref {
                    let target = match r.container_name.as_deref() {
                        Some(n) if !n.is_empty() && n != c.name => pod
                            .spec
                            .as_ref()
                            .and_then(|s| s.containers.iter().find(|x| x.name == n))
                            .cloned()
                            .ok_or_else(|| {
                                missing(&full, c, format!("env {}: no container {n:?}", e.name))
                            })?,
                        _ => c.clone(),
                    };
                    Some(
                        resource(
                            &target,
                            &r.resource,
                            r.divisor.as_ref().map(|d| d.0.as_str()),
                        )
                        .ok_or_else(|| {
                            missing(
                                &full,
                                c,
                                format!("env {}: bad resource {:?}", e.name, r.resource),
                            )
                        })?,
                    )
                } else {
                    None
                }
            }
            (Some(v), None) => Some(expand(v, &vars)),
            (None, None) => Some(String::new()),
        };
        if let Some(v) = value {
            set(&mut vars, e.name.clone(), v);
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|k| vars.get(&k).map(|v| (k.clone(), v.clone())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_give_docker_link_variables() {
        let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kubernetes"},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}
        }))
        .unwrap_or_default();
        let env: BTreeMap<String, String> = service_env(&[svc]).into_iter().collect();
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.96.0.1");
        assert_eq!(env["KUBERNETES_SERVICE_PORT"], "443");
        assert_eq!(env["KUBERNETES_SERVICE_PORT_HTTPS"], "443");
        assert_eq!(env["KUBERNETES_PORT"], "tcp://10.96.0.1:443");
        assert_eq!(env["KUBERNETES_PORT_443_TCP_ADDR"], "10.96.0.1");
        assert_eq!(env["KUBERNETES_PORT_443_TCP_PROTO"], "tcp");
    }

    #[test]
    fn expands_like_the_kubelet() {
        let vars: BTreeMap<String, String> = [("A".to_string(), "x".to_string())].into();
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &vars), "x-$(B)-$(A)-$");
        assert_eq!(expand("plain", &vars), "plain");
    }

    #[test]
    fn resources_round_up_by_divisor() {
        use k8s_openapi::api::core::v1::ResourceRequirements;
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let c = Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                limits: Some(
                    [
                        ("memory".to_string(), Quantity("64Mi".into())),
                        ("cpu".to_string(), Quantity("250m".into())),
                    ]
                    .into(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            resource(&c, "limits.memory", Some("1Mi")).as_deref(),
            Some("64")
        );
        assert_eq!(resource(&c, "limits.cpu", None).as_deref(), Some("1"));
        assert_eq!(
            resource(&c, "limits.cpu", Some("1m")).as_deref(),
            Some("250")
        );
    }
}
