//! Reading Pod manifests: multi-document YAML with the exact Kubernetes
//! schema (k8s-openapi types). Unknown kinds are refused by name.

use std::path::Path;

use anyhow::{bail, Context as _};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use podctl_node::sources::StaticSources;
use serde::Deserialize;

/// Pods of a YAML stream, in order, and the ConfigMaps and Secrets beside
/// them (what the pods' volumes and env may refer to).
pub fn read(path: &Path) -> anyhow::Result<(Vec<Pod>, StaticSources)> {
    let mut sources = StaticSources::default();
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut pods = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let mut value = serde_yaml::Value::deserialize(doc)
            .with_context(|| format!("{}: document {}: invalid YAML", path.display(), i + 1))?;
        octal_modes(&mut value);
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        let api = value
            .get("apiVersion")
            .and_then(|k| k.as_str())
            .unwrap_or("");
        match (api, kind) {
            ("v1", "Pod") => {
                check_known_fields(&value, path, i)?;
                let pod: Pod = serde_yaml::from_value(value).with_context(|| {
                    format!("{}: document {}: not a valid Pod", path.display(), i + 1)
                })?;
                pods.push(pod);
            }
            ("v1", "ConfigMap") => {
                let cm: ConfigMap = serde_yaml::from_value(value).with_context(|| {
                    format!(
                        "{}: document {}: not a valid ConfigMap",
                        path.display(),
                        i + 1
                    )
                })?;
                sources.add_config_map(cm);
            }
            ("v1", "Secret") => {
                let s: Secret = serde_yaml::from_value(value).with_context(|| {
                    format!("{}: document {}: not a valid Secret", path.display(), i + 1)
                })?;
                sources.add_secret(s);
            }
            (_, "") => bail!("{}: document {}: no kind", path.display(), i + 1),
            (a, k) => bail!(
                "{}: document {}: unsupported kind {a}/{k} (podctl runs v1 Pods)",
                path.display(),
                i + 1
            ),
        }
    }
    if pods.is_empty() {
        bail!("{}: no Pod in the file", path.display());
    }
    Ok((pods, sources))
}

/// File modes written the YAML 1.1 way kubectl accepts (`0644`, `0o644`)
/// read as strings in YAML 1.2; turn them into the octal numbers they are.
fn octal_modes(v: &mut serde_yaml::Value) {
    use serde_yaml::Value;
    match v {
        Value::Mapping(m) => {
            for (k, val) in m.iter_mut() {
                let is_mode = matches!(k.as_str(), Some("mode" | "defaultMode"));
                if let (true, Value::String(s)) = (is_mode, &*val) {
                    let digits = s.strip_prefix("0o").or_else(|| s.strip_prefix('0'));
                    if let Some(n) = digits.and_then(|d| i64::from_str_radix(d, 8).ok()) {
                        *val = Value::Number(n.into());
                        continue;
                    }
                }
                octal_modes(val);
            }
        }
        Value::Sequence(s) => s.iter_mut().for_each(octal_modes),
        _ => {}
    }
}

/// k8s-openapi ignores unknown fields; the API server would refuse them.
/// Round-trip through the typed Pod and report keys that got lost.
fn check_known_fields(value: &serde_yaml::Value, path: &Path, i: usize) -> anyhow::Result<()> {
    let pod: Pod = serde_yaml::from_value(value.clone())
        .with_context(|| format!("{}: document {}: not a valid Pod", path.display(), i + 1))?;
    let back = serde_yaml::to_value(&pod)?;
    let mut lost = Vec::new();
    diff(value, &back, String::new(), &mut lost);
    if let Some(first) = lost.first() {
        bail!(
            "{}: document {}: unknown field {first:?}",
            path.display(),
            i + 1
        );
    }
    Ok(())
}

fn diff(orig: &serde_yaml::Value, typed: &serde_yaml::Value, at: String, lost: &mut Vec<String>) {
    use serde_yaml::Value;
    match (orig, typed) {
        (Value::Mapping(a), Value::Mapping(b)) => {
            for (k, v) in a {
                let key = k.as_str().unwrap_or("?");
                let here = if at.is_empty() {
                    key.to_string()
                } else {
                    format!("{at}.{key}")
                };
                match b.get(k) {
                    Some(w) => diff(v, w, here, lost),
                    None if v.is_null() => {}
                    None if v.as_sequence().is_some_and(|s| s.is_empty()) => {}
                    None if v.as_mapping().is_some_and(|m| m.is_empty()) => {}
                    None => lost.push(here),
                }
            }
        }
        (Value::Sequence(a), Value::Sequence(b)) => {
            for (n, (v, w)) in a.iter().zip(b.iter()).enumerate() {
                diff(v, w, format!("{at}[{n}]"), lost);
            }
        }
        _ => {}
    }
}
