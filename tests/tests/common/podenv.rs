//! `podctl` run as a user types it, over private state directories with
//! their own CNI bridge: the set-up the standalone pod tests share.

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodCondition};
use podctl_tests::fixtures::{publish, Published};
use podctl_tests::registry::Registry;

/// A registry with the test images published to it.
pub fn setup() -> (Registry, Published) {
    let reg = Registry::start().unwrap_or_else(|e| panic!("{e}"));
    let pubd = publish(&reg, None).unwrap_or_else(|e| panic!("{e}"));
    (reg, pubd)
}

/// The status of the (init or app) container `name` of `p`.
pub fn container<'a>(p: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    let st = p.status.as_ref()?;
    st.container_statuses
        .iter()
        .flatten()
        .chain(st.init_container_statuses.iter().flatten())
        .find(|c| c.name == name)
}

/// The pod's condition of type `kind`.
pub fn condition(p: &Pod, kind: &str) -> Option<PodCondition> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .cloned()
}

pub struct Env {
    pub dir: tempfile::TempDir,
    bridge: String,
}

impl Env {
    pub fn new(tag: u32) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let bridge = podctl_tests::unique_name("podlc");
        let subnet =
            podctl_tests::free_subnet(std::process::id() + tag).unwrap_or_else(|e| panic!("{e}"));
        podctl_tests::write_bridge_conflist(
            dir.path(),
            "podctl-lifecycle",
            &bridge,
            &subnet,
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Env { dir, bridge }
    }

    pub fn podctl(&self, args: &[&str]) -> (bool, String, String) {
        let bin = podctl_tests::workspace_bin("podctl");
        podctl_tests::output(
            podctl_tests::podctl_command(&bin, self.dir.path())
                .env("PODCTL_BACKOFF_INITIAL_MS", "1000")
                .env("PODCTL_BACKOFF_MAX_MS", "4000")
                .args(args),
        )
    }

    pub fn run(&self, name: &str, manifest: &str) {
        let f = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&f, manifest).unwrap_or_else(|e| panic!("{e}"));
        let (ok, out, err) = self.podctl(&["run", &f.display().to_string()]);
        assert!(ok, "{out}{err}");
    }

    pub fn pod(&self, name: &str) -> Pod {
        let (ok, out, err) = self.podctl(&["pods", "-o", "json"]);
        assert!(ok, "{err}");
        let list: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let item = items
            .into_iter()
            .find(|p| p["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no pod {name} in {out}"));
        serde_json::from_value(item).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Poll the pod until `f` returns something (or panic after `secs`).
    pub fn until<T>(&self, name: &str, secs: u64, mut f: impl FnMut(&Pod) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let p = self.pod(name);
            if let Some(v) = f(&p) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out; last: {}",
                serde_json::to_string_pretty(&p).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for e in std::fs::read_dir(self.dir.path().join("run/pods"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let n = e.file_name().to_string_lossy().into_owned();
            let name = n
                .split_once('_')
                .map(|(ns, name)| format!("{ns}/{name}"))
                .unwrap_or(n);
            let _ = self.podctl(&["rm", "--timeout", "0", &name]);
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for c in rd.flatten() {
                let _ = std::fs::remove_dir(c.path().join("podctl"));
            }
        }
    }
}
