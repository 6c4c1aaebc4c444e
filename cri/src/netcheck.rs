//! Whether pod networking can work: a CNI network list exists and every
//! plugin it names is installed.

use crate::config::CniSection;

/// `Err` explains what is missing.
pub fn network_ready(cni: &CniSection) -> Result<(), String> {
    let cfg = podctl_runtime::CniConfig {
        conf_dir: cni.conf_dir.clone(),
        bin_dirs: cni.bin_dirs.clone(),
    };
    let list = cfg.load().map_err(|e| e.to_string())?;
    let plugins = list
        .get("plugins")
        .and_then(|p| p.as_array())
        .cloned()
        .unwrap_or_default();
    for p in plugins {
        let ty = p.get("type").and_then(|t| t.as_str()).unwrap_or_default();
        if !cni.bin_dirs.iter().any(|d| d.join(ty).is_file()) {
            return Err(format!("CNI plugin {ty:?} not found in {:?}", cni.bin_dirs));
        }
    }
    Ok(())
}
