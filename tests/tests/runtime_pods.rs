//! A pod: built-in pause, pinned network namespace, CNI bridge networking,
//! two containers sharing localhost and the pod hostname.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{pull, puller};
use podctl_images::RegistryConfig;
use podctl_runtime::{
    CniConfig, ContainerConfig, ContainerState, Runtime, RuntimeConfig, SandboxConfig, SandboxState,
};
use podctl_tests::fixtures::{publish, HTTPD_INDEX};
use podctl_tests::registry::Registry;

/// Remove the test bridge and parent cgroup even when the test fails.
struct Cleanup {
    bridge: String,
    cgroup_parent: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for c in rd.flatten() {
                let _ =
                    std::fs::remove_dir(c.path().join(self.cgroup_parent.trim_start_matches('/')));
            }
        }
    }
}

#[test]
fn two_containers_share_the_pod_network_and_hostname() {
    let reg = Registry::start().unwrap_or_else(|e| panic!("{e}"));
    let pubd = publish(&reg, None).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let p = puller(&dir.path().join("images"), RegistryConfig::default());
    let (bb, _) = pull(&p, &pubd.busybox).unwrap_or_else(|e| panic!("{e}"));
    let (web, _) = pull(&p, &pubd.httpd).unwrap_or_else(|e| panic!("{e}"));
    let bb_lowers = p.store().layer_dirs(&bb).unwrap_or_else(|e| panic!("{e}"));
    let web_lowers = p.store().layer_dirs(&web).unwrap_or_else(|e| panic!("{e}"));

    let n = std::process::id() % 200 + 20;
    let _cleanup = Cleanup {
        bridge: format!("podctl-t{n}"),
        cgroup_parent: format!("/podctl-test-pod-{}", std::process::id()),
    };
    let conf_dir = dir.path().join("cni");
    std::fs::create_dir_all(&conf_dir).unwrap_or_else(|e| panic!("{e}"));
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "podctl-test",
        "plugins": [{
            "type": "bridge", "bridge": _cleanup.bridge, "isGateway": true, "ipMasq": false,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": format!("10.88.{n}.0/24")}]],
                     "dataDir": dir.path().join("ipam")},
        }],
    });
    std::fs::write(conf_dir.join("10-podctl.conflist"), conflist.to_string())
        .unwrap_or_else(|e| panic!("{e}"));
    let cni = CniConfig {
        conf_dir,
        bin_dirs: vec!["/usr/lib/cni".into()],
    };

    let rt = Runtime::new(RuntimeConfig {
        state_dir: dir.path().join("run"),
        shim: Some(podctl_tests::workspace_bin("podctl-shim")),
        cgroup_parent: _cleanup.cgroup_parent.clone(),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let sb = rt
        .run_sandbox(
            SandboxConfig {
                name: "web".into(),
                namespace: "default".into(),
                hostname: "podhost".into(),
                ..Default::default()
            },
            Some(&cni),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let st = rt.sandbox_status(&sb).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(st.state, SandboxState::Ready);
    let ip = st.ip.clone().unwrap_or_else(|| panic!("no pod IP"));
    assert!(ip.starts_with(&format!("10.88.{n}.")), "{ip}");
    let (ns, mounts) = rt
        .sandbox_attachments(&sb)
        .unwrap_or_else(|e| panic!("{e}"));

    let base = |name: &str, lowers: &Vec<std::path::PathBuf>, script: &str| ContainerConfig {
        name: name.into(),
        lower_dirs: lowers.clone(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/bin:/usr/bin:/sbin:/usr/sbin".into()],
        namespaces: ns.clone(),
        mounts: mounts.clone(),
        log_path: dir.path().join(format!("logs/{name}.log")),
        ..Default::default()
    };
    let a = rt
        .create(base("server", &web_lowers, "exec httpd -f -p 8080 -h /www"))
        .unwrap_or_else(|e| panic!("{e}"));
    rt.start(&a).unwrap_or_else(|e| panic!("{e}"));
    let b = rt
        .create(base(
            "client",
            &bb_lowers,
            "for i in $(seq 1 30); do wget -qO- http://127.0.0.1:8080/ && break; sleep 0.2; done; hostname; cat /etc/hostname",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    rt.start(&b).unwrap_or_else(|e| panic!("{e}"));
    let done = rt
        .wait(&b, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    let log = std::fs::read_to_string(dir.path().join("logs/client.log")).unwrap_or_default();
    assert_eq!(done.exit_code, Some(0), "{log}");
    let out: Vec<&str> = log
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .collect();
    assert_eq!(
        out,
        [
            String::from_utf8_lossy(HTTPD_INDEX).trim(),
            "podhost",
            "podhost"
        ],
        "{log}"
    );

    // The pod IP is reachable from the host through the bridge.
    let mut s = std::net::TcpStream::connect_timeout(
        &format!("{ip}:8080")
            .parse()
            .unwrap_or_else(|e| panic!("{e}")),
        Duration::from_secs(5),
    )
    .unwrap_or_else(|e| panic!("connect {ip}:8080: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("{e}"));
    s.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(
        resp.starts_with("HTTP/1.") && resp.contains(String::from_utf8_lossy(HTTPD_INDEX).trim()),
        "{resp}"
    );

    rt.stop(&a, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        rt.status(&a).map(|s| s.state).ok(),
        Some(ContainerState::Exited)
    );
    for c in [&a, &b] {
        rt.remove(c).unwrap_or_else(|e| panic!("{e}"));
    }
    rt.stop_sandbox(&sb, Some(&cni))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        rt.sandbox_status(&sb).map(|s| s.state).ok(),
        Some(SandboxState::NotReady)
    );
    rt.stop_sandbox(&sb, Some(&cni))
        .unwrap_or_else(|e| panic!("stopping twice: {e}"));
    rt.remove_sandbox(&sb, Some(&cni))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(rt.list_sandboxes().map(|l| l.is_empty()).unwrap_or(false));
    rt.remove_sandbox(&sb, Some(&cni))
        .unwrap_or_else(|e| panic!("removing twice: {e}"));
    // The IP went back to the pool.
    let leased = std::fs::read_dir(dir.path().join("ipam/podctl-test"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(leased, 0);
}
