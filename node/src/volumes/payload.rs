//! The files of configMap, secret and downwardAPI volumes (and of the
//! projected sources made of them): keys or items with their modes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret};

use super::{check_item_path, Payload};
use crate::envvars::{self, PodFacts};

/// `items` of a ConfigMap/Secret, or every key; missing keys are errors
/// unless the source is optional.
pub(super) fn project(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: u32,
    optional: bool,
    what: &str,
) -> std::result::Result<Payload, String> {
    let mut out = Payload::new();
    match items {
        Some(items) => {
            for it in items {
                check_item_path(&it.path)?;
                match data.get(&it.key) {
                    Some(v) => {
                        let mode = it.mode.map(|m| m as u32).unwrap_or(default_mode);
                        out.insert(it.path.clone(), (v.clone(), mode));
                    }
                    None if optional => {}
                    None => return Err(format!("key {:?} not found in {what}", it.key)),
                }
            }
        }
        None => {
            for (k, v) in data {
                check_item_path(&k)?;
                out.insert(k, (v, default_mode));
            }
        }
    }
    Ok(out)
}

pub(super) fn cm_data(cm: ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut d: BTreeMap<String, Vec<u8>> = cm
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    for (k, v) in cm.binary_data.unwrap_or_default() {
        d.insert(k, v.0);
    }
    d
}

pub(super) fn secret_data(s: Secret) -> BTreeMap<String, Vec<u8>> {
    let mut d: BTreeMap<String, Vec<u8>> = s
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    for (k, v) in s.string_data.unwrap_or_default() {
        d.insert(k, v.into_bytes());
    }
    d
}

/// Downward API files: labels/annotations as sorted `k="v"` lines.
pub(super) fn downward(
    pod: &Pod,
    facts: &PodFacts,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
) -> std::result::Result<Payload, String> {
    let mut out = Payload::new();
    for it in items {
        check_item_path(&it.path)?;
        let value = if let Some(f) = &it.field_ref {
            let lines = |m: &Option<BTreeMap<String, String>>| {
                m.iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}={v:?}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            match f.field_path.as_str() {
                "metadata.labels" => lines(&pod.metadata.labels),
                "metadata.annotations" => lines(&pod.metadata.annotations),
                p => envvars::field(pod, facts, p)
                    .ok_or_else(|| format!("unsupported fieldPath {p:?}"))?,
            }
        } else if let Some(r) = &it.resource_field_ref {
            let c = pod
                .spec
                .as_ref()
                .and_then(|s| {
                    s.containers
                        .iter()
                        .find(|c| Some(c.name.as_str()) == r.container_name.as_deref())
                })
                .ok_or_else(|| format!("resourceFieldRef: no container {:?}", r.container_name))?;
            envvars::resource(c, &r.resource, r.divisor.as_ref().map(|d| d.0.as_str()))
                .ok_or_else(|| format!("bad resource {:?}", r.resource))?
        } else {
            return Err(format!(
                "item {:?} has neither fieldRef nor resourceFieldRef",
                it.path
            ));
        };
        let mode = it.mode.map(|m| m as u32).unwrap_or(default_mode);
        out.insert(it.path.clone(), (value.into_bytes(), mode));
    }
    Ok(out)
}
