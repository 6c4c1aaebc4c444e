//! Static pods: Pod manifests in a directory (`--pod-manifest-path`) run
//! by this node without the API server, each shown there as a mirror pod
//! (annotation `kubernetes.io/config.mirror`, owned by the Node). Files
//! are re-read every period: new ones start, removed ones stop.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, PostParams};
use kube::Client;

use super::pods::{PodManager, MIRROR};
use crate::cri::Cri;
use crate::error::api_code;

/// FNV-1a, stable across builds (the static pod's UID must survive a
/// restart of the agent).
fn fnv(data: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The Pods of one manifest file, named `<name>-<node>` as the kubelet
/// names static pods, with a UID derived from the file and the node.
pub fn read_manifest(path: &Path, node: &str) -> Result<Vec<Pod>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let v: serde_json::Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| format!("{} document {}: {e}", path.display(), i + 1))?;
        if v.is_null() {
            continue;
        }
        if v.get("kind").and_then(|k| k.as_str()) != Some("Pod") {
            return Err(format!("{} document {}: not a Pod", path.display(), i + 1));
        }
        let mut pod: Pod = serde_json::from_value(v)
            .map_err(|e| format!("{} document {}: {e}", path.display(), i + 1))?;
        let name =
            pod.metadata.name.clone().ok_or_else(|| {
                format!("{} document {}: no metadata.name", path.display(), i + 1)
            })?;
        let seed = format!("{}\n{node}\n{i}\n{text}", path.display());
        let hash = format!(
            "{:016x}{:016x}",
            fnv(seed.as_bytes(), 0),
            fnv(seed.as_bytes(), 0x9e37_79b9_7f4a_7c15)
        );
        pod.metadata.name = Some(format!("{name}-{node}"));
        pod.metadata
            .namespace
            .get_or_insert_with(|| "default".into());
        pod.metadata.uid = Some(hash.clone());
        let ann = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
        ann.insert("kubernetes.io/config.source".into(), "file".into());
        ann.insert("kubernetes.io/config.hash".into(), hash);
        if let Some(spec) = pod.spec.as_mut() {
            spec.node_name = Some(node.to_string());
        }
        out.push(pod);
    }
    Ok(out)
}

fn read_dir(dir: &Path, node: &str) -> BTreeMap<String, Pod> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        })
        .collect();
    files.sort();
    let mut out = BTreeMap::new();
    for f in files {
        match read_manifest(&f, node) {
            Ok(pods) => {
                for p in pods {
                    out.insert(p.metadata.uid.clone().unwrap_or_default(), p);
                }
            }
            Err(e) => tracing::warn!(error = %e, "static pod manifest skipped"),
        }
    }
    out
}

/// Make sure the API shows the static pod as a mirror pod.
async fn ensure_mirror(client: &Client, pod: &Pod, node: &Node) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let hash = pod.metadata.uid.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    match api.get_opt(&name).await {
        Ok(Some(m)) => {
            let same = m
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(MIRROR))
                .is_some_and(|h| *h == hash);
            if !same {
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                };
                if let Err(e) = api.delete(&name, &dp).await {
                    tracing::warn!(pod = %name, error = %e, "replacing a stale mirror pod");
                }
            }
            return;
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(pod = %name, error = %e, "mirror pod");
            return;
        }
    }
    let mut mirror = pod.clone();
    mirror.metadata.uid = None;
    mirror.status = None;
    mirror
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(MIRROR.into(), hash);
    mirror.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node.metadata.name.clone().unwrap_or_default(),
        uid: node.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        ..Default::default()
    }]);
    match api.create(&PostParams::default(), &mirror).await {
        Ok(_) => tracing::info!(pod = %format!("{ns}/{name}"), "mirror pod created"),
        Err(e) if api_code(&e) == Some(409) => {}
        Err(e) => tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "creating mirror pod"),
    }
}

/// Keep the directory's static pods running and mirrored.
pub async fn run<C: Cri>(
    manager: Arc<PodManager<C>>,
    client: Client,
    dir: PathBuf,
    node: Node,
    every: Duration,
) {
    let name = node.metadata.name.clone().unwrap_or_default();
    let mut started: BTreeSet<String> = BTreeSet::new();
    loop {
        let want = read_dir(&dir, &name);
        for (uid, pod) in &want {
            if started.insert(uid.clone()) {
                tracing::info!(pod = ?pod.metadata.name, "static pod");
                manager.start(pod.clone());
            }
            ensure_mirror(&client, pod, &node).await;
        }
        for uid in started.clone() {
            if !want.contains_key(&uid) {
                manager.stop(&uid, None);
                started.remove(&uid);
            }
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_become_named_static_pods_with_stable_uids() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let f = dir.path().join("web.yaml");
        std::fs::write(
            &f,
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers: [{name: c, image: busybox}]\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let a = read_manifest(&f, "n1").unwrap_or_else(|e| panic!("{e}"));
        let b = read_manifest(&f, "n1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].metadata.name.as_deref(), Some("web-n1"));
        assert_eq!(a[0].metadata.uid, b[0].metadata.uid);
        assert!(crate::agent::pods::is_static(&a[0]));
        std::fs::write(&f, "kind: Service\nmetadata: {name: x}\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let err = read_manifest(&f, "n1").err().unwrap_or_default();
        assert!(
            err.contains("not a Pod") && err.contains("web.yaml"),
            "{err}"
        );
    }
}
