//! What CRI knows about a sandbox or container beyond the runtime's own
//! state: the request it was created from (metadata, labels, annotations,
//! mounts), the resolved image, and updated resources. One JSON file per
//! object under `<state>/cri/`, written atomically, so a restarted daemon
//! (or the in-process service of the CLI) sees the same objects.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{CriError, IoContext, Result};
use crate::image_volume::ImageVolume;
use crate::proto;
use podctl_runtime::file_cache::Cache;
use podctl_runtime::status_index::{Layout, StatusIndex};

/// A sandbox as CRI created it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub config: proto::PodSandboxConfig,
    pub runtime_handler: String,
}

/// A container as CRI created it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    pub config: proto::ContainerConfig,
    /// Image config digest (`sha256:…`).
    pub image_id: String,
    /// `repo@sha256:<manifest>` when known, else the image ID.
    pub image_ref: String,
    /// The full log path (sandbox log directory joined with the config's).
    pub log_path: String,
    /// Resources last applied (creation or UpdateContainerResources).
    pub resources: Option<proto::LinuxContainerResources>,
    /// Images mounted for the config's image volumes, in mount order.
    #[serde(default)]
    pub image_volumes: Vec<ImageVolume>,
}

/// The record directories, and the records last read from them.
#[derive(Clone, Debug)]
pub struct Records {
    dir: PathBuf,
    sandbox_cache: Arc<Cache<SandboxRecord>>,
    container_cache: Arc<Cache<ContainerRecord>>,
    /// The records of each kind in memory for list calls, once
    /// [`Records::watch`] turned them on.
    sandbox_index: Arc<StatusIndex<Arc<SandboxRecord>>>,
    container_index: Arc<StatusIndex<Arc<ContainerRecord>>>,
}

impl Records {
    pub fn open(state: &Path) -> Result<Self> {
        let dir = state.join("cri");
        for d in [dir.join("sandboxes"), dir.join("containers")] {
            std::fs::create_dir_all(&d).ctx("create", &d)?;
        }
        Ok(Records {
            dir,
            sandbox_cache: Arc::default(),
            container_cache: Arc::default(),
            sandbox_index: Arc::default(),
            container_index: Arc::default(),
        })
    }

    /// Keep the records in memory for list calls, read again only when
    /// their files change (see `podctl_runtime::status_index`): for a
    /// daemon, not a one-shot command.
    pub fn watch(&self) {
        self.sandbox_index
            .enable(&self.dir.join("sandboxes"), Layout::Files(".json"));
        self.container_index
            .enable(&self.dir.join("containers"), Layout::Files(".json"));
    }

    /// Remove the temporary files of record writes a crash cut short
    /// (their writer is dead; a file of the old `<id>.tmp` form has no
    /// writer to ask and goes too). Returns how many were removed.
    pub fn remove_abandoned_writes(&self) -> usize {
        let mut removed = 0;
        for kind in ["sandboxes", "containers"] {
            for e in std::fs::read_dir(self.dir.join(kind))
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.ends_with(".tmp") {
                    continue;
                }
                let alive = podctl_shim::state::temp_writer(&name)
                    .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
                if !alive && std::fs::remove_file(e.path()).is_ok() {
                    tracing::info!(path = %e.path().display(), "removed a record write a crash cut short");
                    removed += 1;
                }
            }
        }
        removed
    }

    fn path(&self, kind: &str, id: &str) -> Result<PathBuf> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(CriError::invalid(
                "id",
                format!("{id:?} is not a podctl ID"),
            ));
        }
        Ok(self.dir.join(kind).join(format!("{id}.json")))
    }

    fn write<T: Serialize>(&self, kind: &str, id: &str, v: &T) -> Result<()> {
        let p = self.path(kind, id)?;
        let b = serde_json::to_vec(v).map_err(|e| CriError::Internal(e.to_string()))?;
        podctl_shim::state::write_atomic(&p, &b).ctx("write", &p)
    }

    fn read<T: DeserializeOwned + Clone>(
        &self,
        kind: &'static str,
        id: &str,
        cache: &Cache<T>,
    ) -> Result<T> {
        let p = self.path(kind, id)?;
        cache.read(
            id,
            &p,
            |b| {
                serde_json::from_slice(b)
                    .map_err(|e| CriError::Internal(format!("corrupt {}: {e}", p.display())))
            },
            |e| match e.kind() {
                std::io::ErrorKind::NotFound => CriError::NotFound {
                    kind: kind_name(kind),
                    id: id.into(),
                },
                _ => CriError::Io {
                    op: "read",
                    path: p.clone(),
                    source: e,
                },
            },
        )
    }

    fn remove(&self, kind: &str, id: &str) -> Result<()> {
        let p = self.path(kind, id)?;
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).ctx("remove", &p),
            _ => Ok(()),
        }
    }

    /// The IDs of one kind's records, from the file names alone.
    fn ids(&self, kind: &'static str) -> Vec<String> {
        let d = self.dir.join(kind);
        std::fs::read_dir(&d)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".json").map(str::to_string)
            })
            .collect()
    }

    /// Whether a record of `kind` named `id` exists.
    fn has(&self, kind: &'static str, id: &str) -> bool {
        self.path(kind, id).is_ok_and(|p| p.exists())
    }

    fn list<T: DeserializeOwned + Clone>(
        &self,
        kind: &'static str,
        cache: &Cache<T>,
        index: &StatusIndex<Arc<T>>,
    ) -> Vec<Arc<T>> {
        let indexed = index.list(
            |id| match self.read(kind, id, cache) {
                Ok(r) => Some((Arc::new(r), None)),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping CRI record");
                    None
                }
            },
            // Records another process removed leave the cache here.
            |id| cache.forget(id),
        );
        if let Some(all) = indexed {
            return all;
        }
        let ids: std::collections::HashSet<String> = self.ids(kind).into_iter().collect();
        let mut out = Vec::new();
        for id in &ids {
            match self.read(kind, id, cache) {
                Ok(r) => out.push(Arc::new(r)),
                Err(e) => tracing::warn!(error = %e, "skipping CRI record"),
            }
        }
        // Records another process removed leave the cache here.
        cache.retain(|id| ids.contains(id));
        out
    }

    pub fn put_sandbox(&self, r: &SandboxRecord) -> Result<()> {
        self.write("sandboxes", &r.id, r)
    }
    pub fn sandbox(&self, id: &str) -> Result<SandboxRecord> {
        self.read("sandboxes", id, &self.sandbox_cache)
    }
    pub fn remove_sandbox(&self, id: &str) -> Result<()> {
        self.sandbox_cache.forget(id);
        self.remove("sandboxes", id)
    }
    /// Every sandbox record (shared: a list call clones none).
    pub fn sandboxes(&self) -> Vec<Arc<SandboxRecord>> {
        self.list("sandboxes", &self.sandbox_cache, &self.sandbox_index)
    }
    /// Sandbox IDs, without reading the records.
    pub fn sandbox_ids(&self) -> Vec<String> {
        self.ids("sandboxes")
    }
    pub fn has_sandbox(&self, id: &str) -> bool {
        self.has("sandboxes", id)
    }

    pub fn put_container(&self, r: &ContainerRecord) -> Result<()> {
        self.write("containers", &r.id, r)
    }
    pub fn container(&self, id: &str) -> Result<ContainerRecord> {
        self.read("containers", id, &self.container_cache)
    }
    pub fn remove_container(&self, id: &str) -> Result<()> {
        self.container_cache.forget(id);
        self.remove("containers", id)
    }
    /// Every container record (shared: a list call clones none).
    pub fn containers(&self) -> Vec<Arc<ContainerRecord>> {
        self.list("containers", &self.container_cache, &self.container_index)
    }
    /// Container IDs, without reading the records.
    pub fn container_ids(&self) -> Vec<String> {
        self.ids("containers")
    }
    pub fn has_container(&self, id: &str) -> bool {
        self.has("containers", id)
    }
}

/// `KeyValue.value` (an environment value, bytes in the protocol) in
/// records: a JSON string when the bytes are UTF-8, as records written
/// before the protocol made them bytes hold it, else a list of bytes.
/// Both forms read back.
pub(crate) mod env_value {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(v) {
            Ok(t) => s.serialize_str(t),
            Err(_) => v.serialize(s),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Text(String),
        Bytes(Vec<u8>),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(match Stored::deserialize(d)? {
            Stored::Text(t) => t.into_bytes(),
            Stored::Bytes(b) => b,
        })
    }
}

fn kind_name(dir: &str) -> &'static str {
    if dir == "sandboxes" {
        "sandbox"
    } else {
        "container"
    }
}

#[cfg(test)]
mod tests {
    use crate::proto;

    #[test]
    fn env_values_read_from_old_and_new_records() {
        let old: proto::KeyValue = serde_json::from_str(r#"{"key":"A","value":"h\u00e9"}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(old.value, "hé".as_bytes());
        let binary = proto::KeyValue {
            key: "B".into(),
            value: vec![0xff, 0, b'x'],
        };
        let text = serde_json::to_string(&binary).unwrap_or_else(|e| panic!("{e}"));
        let back: proto::KeyValue = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, binary);
        let utf8 = serde_json::to_string(&old).unwrap_or_else(|e| panic!("{e}"));
        assert!(utf8.contains(r#""value":"hé""#), "{utf8}");
        // A config from before image volumes: the new fields default.
        let c: proto::ContainerConfig =
            serde_json::from_str(r#"{"mounts":[{"container_path":"/x","host_path":"/y"}]}"#)
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.mounts[0].image_sub_path, "");
        assert!(c.mounts[0].image.is_none());
    }

    /// A record another process removed leaves the parse cache at the
    /// next list (the index reports it gone): the same bytes written again
    /// are parsed again, not answered from the cache.
    #[test]
    fn a_record_removed_behind_the_index_leaves_the_cache() {
        let state = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let r = super::Records::open(state.path()).unwrap_or_else(|e| panic!("{e}"));
        r.watch();
        let rec = super::SandboxRecord {
            id: "abc".into(),
            config: Default::default(),
            runtime_handler: String::new(),
        };
        r.put_sandbox(&rec).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.sandboxes().len(), 1);
        let p = state.path().join("cri/sandboxes/abc.json");
        let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{e}"));
        std::fs::remove_file(&p).unwrap_or_else(|e| panic!("{e}"));
        assert!(r.sandboxes().is_empty());
        std::fs::write(&p, &bytes).unwrap_or_else(|e| panic!("{e}"));
        let again =
            r.sandbox_cache
                .read("abc", &p, |_| Err("parsed".to_string()), |e| e.to_string());
        assert_eq!(again.err().as_deref(), Some("parsed"), "kept in the cache");
    }

    #[test]
    fn writes_a_dead_process_left_are_removed_a_live_ones_kept() {
        let state = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let r = super::Records::open(state.path()).unwrap_or_else(|e| panic!("{e}"));
        let dir = state.path().join("cri/containers");
        let live = format!("abc.json.{}.tmp", std::process::id());
        // PIDs never exceed 2^22 on Linux.
        for f in ["abc.json.99999999.tmp", "old.tmp", &live, "abc.json"] {
            std::fs::write(dir.join(f), b"{}").unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(r.remove_abandoned_writes(), 2);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{e}"))
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec!["abc.json".to_string(), live]);
    }
}
