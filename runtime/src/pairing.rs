//! One root dir, one state dir.
//!
//! Writable layers live in the root dir, the containers they belong to in
//! the state dir, and the collection (`gc`) removes a layer whose container
//! is not in *its* state dir. Two runtimes sharing a root dir with
//! different state dirs would each delete the other's layers under running
//! containers. So the root dir records the state dir that uses it
//! (`<root>/state-dir`) and a runtime refuses a root dir another existing
//! state dir holds. A recorded state dir that is gone (a reboot cleared
//! `/run`) frees the root dir: its containers are gone with it.

use std::path::{Path, PathBuf};

use podctl_shim::state::write_atomic;

use crate::error::{IoContext, Result, RuntimeError};
use crate::RuntimeConfig;

const OWNER: &str = "state-dir";

/// Record `cfg.state_dir` as the user of `cfg.root_dir`, or fail when
/// another state dir that still exists uses it. Both dirs exist.
pub(crate) fn claim_root(cfg: &RuntimeConfig) -> Result<()> {
    let state = std::fs::canonicalize(&cfg.state_dir).ctx("resolve", &cfg.state_dir)?;
    let record = cfg.root_dir.join(OWNER);
    match std::fs::read_to_string(&record) {
        Ok(text) => {
            let owner = PathBuf::from(text.trim_end_matches('\n'));
            if owner == state {
                return Ok(());
            }
            if in_use(&owner) {
                return Err(RuntimeError::Config {
                    reason: format!(
                        "root dir {} holds the writable layers of state dir {}, which \
                         still exists; give each runtime its own root and state dirs \
                         (or remove {} if that runtime is gone for good)",
                        cfg.root_dir.display(),
                        owner.display(),
                        record.display()
                    ),
                });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).ctx("read", &record),
    }
    let mut text = state.into_os_string().into_encoded_bytes();
    text.push(b'\n');
    write_atomic(&record, &text).ctx("write", &record)
}

/// Whether the state dir `owner` still holds containers.
fn in_use(owner: &Path) -> bool {
    owner.join("containers").is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(state: &Path, root: &Path) -> RuntimeConfig {
        std::fs::create_dir_all(state.join("containers")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(root).unwrap_or_else(|e| panic!("{e}"));
        RuntimeConfig {
            state_dir: state.into(),
            root_dir: root.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_root_dir_serves_one_existing_state_dir() {
        let t = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = t.path().join("lib");
        let a = cfg(&t.path().join("run-a"), &root);
        let b = cfg(&t.path().join("run-b"), &root);
        claim_root(&a).unwrap_or_else(|e| panic!("{e}"));
        claim_root(&a).unwrap_or_else(|e| panic!("claiming again: {e}"));
        let err = claim_root(&b)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("run-a") && err.contains("lib"),
            "names both dirs: {err}"
        );
        // The first state dir is gone (a reboot): the root dir is free.
        std::fs::remove_dir_all(t.path().join("run-a")).unwrap_or_else(|e| panic!("{e}"));
        claim_root(&b).unwrap_or_else(|e| panic!("after the owner went: {e}"));
        let rec = std::fs::read_to_string(root.join(OWNER)).unwrap_or_default();
        assert!(rec.trim_end().ends_with("run-b"), "{rec}");
    }
}
