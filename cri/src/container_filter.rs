//! The checks list calls make alike of a record: ListContainers and
//! ListContainerStats of a container's (`ContainerFilter`,
//! `ContainerStatsFilter` share these fields), ListPodSandbox and
//! ListPodSandboxStats of a sandbox's. State filters are about the
//! runtime's status, not the record, and stay with the calls.

use std::collections::HashMap;

use crate::proto;
use crate::records::ContainerRecord;
use crate::records::SandboxRecord;

/// The record fields a container filter asks about.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordFilter<'a> {
    /// A prefix of the container ID; empty: any.
    pub id: &'a str,
    /// A prefix of the sandbox ID; empty: any.
    pub pod_sandbox_id: &'a str,
    /// Labels the container must carry, with these values.
    pub label_selector: &'a HashMap<String, String>,
}

impl<'a> From<&'a proto::ContainerFilter> for RecordFilter<'a> {
    fn from(f: &'a proto::ContainerFilter) -> Self {
        RecordFilter {
            id: &f.id,
            pod_sandbox_id: &f.pod_sandbox_id,
            label_selector: &f.label_selector,
        }
    }
}

impl<'a> From<&'a proto::ContainerStatsFilter> for RecordFilter<'a> {
    fn from(f: &'a proto::ContainerStatsFilter) -> Self {
        RecordFilter {
            id: &f.id,
            pod_sandbox_id: &f.pod_sandbox_id,
            label_selector: &f.label_selector,
        }
    }
}

/// Whether `rec` passes `f`.
pub(crate) fn matches(rec: &ContainerRecord, f: RecordFilter<'_>) -> bool {
    (f.id.is_empty() || rec.id.starts_with(f.id))
        && (f.pod_sandbox_id.is_empty() || rec.sandbox_id.starts_with(f.pod_sandbox_id))
        && labels_match(f.label_selector, &rec.config.labels)
}

/// Whether sandbox `rec` passes an ID prefix (empty: any) and a label
/// selector.
pub(crate) fn sandbox_matches(
    rec: &SandboxRecord,
    id: &str,
    label_selector: &HashMap<String, String>,
) -> bool {
    (id.is_empty() || rec.id.starts_with(id)) && labels_match(label_selector, &rec.config.labels)
}

/// Whether `labels` has every key of `sel` with its value.
fn labels_match(sel: &HashMap<String, String>, labels: &HashMap<String, String>) -> bool {
    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// IDs and sandbox IDs by prefix, labels by key and value, an empty
    /// field matching any; both filter messages ask the same.
    #[test]
    fn prefixes_and_labels() {
        let rec = ContainerRecord {
            id: "abc123".into(),
            sandbox_id: "def456".into(),
            config: proto::ContainerConfig {
                labels: HashMap::from([("app".to_string(), "web".to_string())]),
                ..Default::default()
            },
            image_id: String::new(),
            image_ref: String::new(),
            log_path: String::new(),
            resources: None,
            image_volumes: Vec::new(),
        };
        let labels = |kv: &[(&str, &str)]| -> HashMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let cases = [
            ("", "", labels(&[]), true),
            ("abc", "", labels(&[]), true),
            ("abc123", "def", labels(&[("app", "web")]), true),
            ("bc", "", labels(&[]), false),
            ("", "ef", labels(&[]), false),
            ("", "", labels(&[("app", "db")]), false),
            ("", "", labels(&[("tier", "web")]), false),
        ];
        for (id, sandbox, sel, want) in cases {
            let list = proto::ContainerFilter {
                id: id.into(),
                pod_sandbox_id: sandbox.into(),
                label_selector: sel.clone(),
                state: None,
            };
            let stats = proto::ContainerStatsFilter {
                id: id.into(),
                pod_sandbox_id: sandbox.into(),
                label_selector: sel,
            };
            assert_eq!(matches(&rec, (&list).into()), want, "{list:?}");
            assert_eq!(matches(&rec, (&stats).into()), want, "{stats:?}");
        }
    }
}
