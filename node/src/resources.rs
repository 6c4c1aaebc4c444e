//! Requests and limits as the kubelet turns them into QoS classes and OOM
//! scores.

use k8s_openapi::api::core::v1::{Container, PodSpec};

use crate::quantity;

fn has(c: &Container, which: &str, res: &str) -> bool {
    c.resources
        .as_ref()
        .and_then(|r| {
            if which == "limits" {
                r.limits.as_ref()
            } else {
                r.requests.as_ref()
            }
        })
        .is_some_and(|m| m.contains_key(res))
}

fn value(c: &Container, which: &str, res: &str) -> Option<String> {
    c.resources
        .as_ref()
        .and_then(|r| {
            if which == "limits" {
                r.limits.as_ref()
            } else {
                r.requests.as_ref()
            }
        })
        .and_then(|m| m.get(res))
        .map(|q| q.0.clone())
}

/// The container's request of `res` scaled by `scale` (as
/// [`quantity::parse`]); a missing request defaults to the limit.
pub fn request_or_limit(c: &Container, res: &str, scale: f64) -> Option<i64> {
    let limit = value(c, "limits", res).and_then(|q| quantity::parse(&q, scale));
    value(c, "requests", res)
        .and_then(|q| quantity::parse(&q, scale))
        .or(limit)
}

/// `Guaranteed`, `Burstable` or `BestEffort`.
pub fn qos_class(spec: &PodSpec) -> &'static str {
    let all: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let none = all.iter().all(|c| {
        ["cpu", "memory"]
            .iter()
            .all(|r| !has(c, "limits", r) && !has(c, "requests", r))
    });
    if none {
        return "BestEffort";
    }
    let guaranteed = all.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let scale = if *r == "cpu" { 1000.0 } else { 1.0 };
            let limit = value(c, "limits", r).and_then(|q| quantity::parse(&q, scale));
            limit.is_some() && request_or_limit(c, r, scale) == limit
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The OOM score adjustment the kubelet gives a container of a pod of
/// this class, `memory_capacity` being the node's memory in bytes.
pub fn oom_score_adj(qos: &str, c: &Container, memory_capacity: i64) -> i64 {
    match qos {
        "Guaranteed" => -997,
        "BestEffort" => 1000,
        _ => {
            let request = value(c, "requests", "memory")
                .and_then(|q| quantity::parse(&q, 1.0))
                .unwrap_or(0);
            let cap = memory_capacity.max(1);
            (1000 - 1000 * request / cap).clamp(2, 999)
        }
    }
}

/// The machine's memory in bytes (MemTotal).
pub fn memory_capacity() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok())
        })
        .map(|kib| kib * 1024)
        .unwrap_or(1 << 30)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn c(limits: &[(&str, &str)], requests: &[(&str, &str)]) -> Container {
        let m = |v: &[(&str, &str)]| {
            (!v.is_empty()).then(|| {
                v.iter()
                    .map(|(k, q)| (k.to_string(), Quantity(q.to_string())))
                    .collect()
            })
        };
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                limits: m(limits),
                requests: m(requests),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn classes_like_the_kubelet() {
        let spec = |cs: Vec<Container>| PodSpec {
            containers: cs,
            ..Default::default()
        };
        assert_eq!(qos_class(&spec(vec![c(&[], &[])])), "BestEffort");
        assert_eq!(
            qos_class(&spec(vec![c(&[("cpu", "1"), ("memory", "64Mi")], &[])])),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&spec(vec![c(
                &[("cpu", "1"), ("memory", "64Mi")],
                &[("cpu", "500m")]
            )])),
            "Burstable"
        );
        let b = c(&[], &[("memory", "512Mi")]);
        assert_eq!(oom_score_adj("Burstable", &b, 1 << 30), 500);
        assert_eq!(oom_score_adj("Guaranteed", &b, 1 << 30), -997);
    }
}
