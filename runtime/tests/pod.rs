//! A pod on this host (run as root): built-in pause, pinned network
//! namespace, CNI bridge of its own on a free /24 (no masquerading), two
//! busybox containers sharing localhost and the pod hostname.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use common::*;
use podctl_runtime::{
    CniConfig, ContainerConfig, ContainerState, PortMapping, SandboxConfig, SandboxState,
};

/// The test's bridge (a per-run name) and its free /24; the bridge is
/// removed when the test ends, pass or fail.
struct Bridge {
    name: String,
    subnet: String,
}

impl Bridge {
    fn new() -> Bridge {
        Bridge {
            name: podctl_tests::unique_name("podrt"),
            subnet: ok(podctl_tests::free_subnet(std::process::id()), "free subnet"),
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.name])
            .status();
    }
}

fn cni(dir: &Path, bridge: &Bridge) -> CniConfig {
    let conf_dir = dir.join("cni");
    ok(std::fs::create_dir_all(&conf_dir), "cni dir");
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "podctl",
        "plugins": [
            {
                "type": "bridge", "bridge": bridge.name, "isGateway": true, "ipMasq": false,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": bridge.subnet}]],
                         "routes": [{"dst": "0.0.0.0/0"}], "dataDir": dir.join("ipam")},
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    });
    ok(
        std::fs::write(conf_dir.join("10-podctl.conflist"), conflist.to_string()),
        "conflist",
    );
    CniConfig {
        conf_dir,
        bin_dirs: vec!["/usr/lib/cni".into()],
    }
}

#[test]
fn two_containers_share_the_pod_network_and_hostname() {
    let dir = ok(tempfile::tempdir(), "tempdir");
    let lower = busybox_rootfs(dir.path());
    let cg = cgroup_parent("pod");
    let bridge = Bridge::new();
    let _t = Teardown::new(dir.path(), &cg, Some(cni(dir.path(), &bridge)));
    let rt = runtime(dir.path(), &cg, Some(cni(dir.path(), &bridge)));
    let sb = ok(
        rt.run_sandbox(SandboxConfig {
            name: "web".into(),
            namespace: "default".into(),
            hostname: "podhost".into(),
            port_mappings: vec![PortMapping {
                host_port: 18080,
                container_port: 8080,
                protocol: "tcp".into(),
                host_ip: String::new(),
            }],
            ..Default::default()
        }),
        "run_sandbox",
    );
    let ip = sb.ip.clone().unwrap_or_else(|| panic!("no pod IP"));
    assert!(
        ip.starts_with(bridge.subnet.trim_end_matches("0/24")),
        "{ip} not in {}",
        bridge.subnet
    );
    let pin = sb.netns_path.clone().unwrap_or_else(|| panic!("no netns"));
    assert_eq!(
        std::fs::metadata(&pin)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .ok(),
        std::fs::metadata(format!("/proc/{}/ns/net", sb.pid))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .ok(),
        "pinned netns is pause's"
    );
    let st = ok(rt.sandbox_status(&sb.id), "sandbox status");
    assert_eq!((st.state, st.pid), (SandboxState::Ready, Some(sb.pid)));
    // Pause lives as the small watcher binary (no libcontainer mapped),
    // in the pod's namespaces still.
    let exe = ok(
        std::fs::read_link(format!("/proc/{}/exe", sb.pid)),
        "pause exe",
    );
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", sb.pid)).unwrap_or_default();
    assert_eq!(
        (
            exe.file_name().and_then(|n| n.to_str()),
            String::from_utf8_lossy(&cmdline).as_ref()
        ),
        (Some("podctl-shim-watch"), "podctl-shim-watch\0pause\0")
    );

    let logs = dir.path().join("logs");
    let container = |name: &str, script: &str| ContainerConfig {
        name: name.into(),
        lower_dirs: vec![lower.clone()],
        command: vec!["sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/bin:/usr/bin:/sbin:/usr/sbin".into()],
        log_path: logs.join(format!("{name}.log")),
        ..Default::default()
    };
    let a = ok(
        rt.create_container(
            &sb.id,
            container("server", "hostname; exec httpd -f -p 8080 -h /www"),
        ),
        "create server",
    );
    ok(rt.start_container(&a), "start server");
    let b = ok(
        rt.create_container(
            &sb.id,
            container(
                "client",
                "for i in $(seq 1 50); do wget -qO- http://127.0.0.1:8080/ && break; sleep 0.1; done; \
                 hostname; cat /etc/hostname",
            ),
        ),
        "create client",
    );
    ok(rt.start_container(&b), "start client");
    let done = ok(
        rt.wait_container(&b, Duration::from_secs(30)),
        "wait client",
    );
    let lines = parse_log(&logs.join("client.log"));
    assert_eq!(done.exit_code, Some(0), "{lines:?}");
    let out: Vec<(&str, &str, &str)> = lines
        .iter()
        .map(|l| (l.1.as_str(), l.2.as_str(), l.3.as_str()))
        .collect();
    assert_eq!(
        out,
        [
            ("stdout", "F", "hello from the pod"),
            ("stdout", "F", "podhost"),
            ("stdout", "F", "podhost")
        ]
    );
    // One monitor holds both containers: the small binary in its monitor
    // mode, outliving the client while the server runs.
    let monitor_of = |id: &str| -> i32 {
        std::fs::read_to_string(dir.path().join(format!("run/containers/{id}/monitor.pid")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    let mon = monitor_of(&a);
    assert_eq!(
        (mon > 0, monitor_of(&b)),
        (true, mon),
        "one monitor per pod"
    );
    let exe = ok(
        std::fs::read_link(format!("/proc/{mon}/exe")),
        "monitor exe",
    );
    let cmdline = std::fs::read(format!("/proc/{mon}/cmdline")).unwrap_or_default();
    assert_eq!(
        exe.file_name().and_then(|n| n.to_str()),
        Some("podctl-shim-watch")
    );
    assert!(
        cmdline.starts_with(b"podctl-shim-watch\0monitor\0"),
        "{:?}",
        String::from_utf8_lossy(&cmdline)
    );
    assert_eq!(
        ok(rt.container_status(&a), "status").state,
        ContainerState::Running
    );
    let server_out = parse_log(&logs.join("server.log"));
    assert_eq!(server_out.first().map(|l| l.3.as_str()), Some("podhost"));
    assert_eq!(
        ok(rt.container_status(&a), "status").sandbox_id.as_deref(),
        Some(sb.id.as_str())
    );

    // The pod IP is reachable from the host through the bridge.
    let mut s = ok(
        std::net::TcpStream::connect_timeout(
            &ok(format!("{ip}:8080").parse(), "addr"),
            Duration::from_secs(5),
        ),
        "connect to the pod",
    );
    ok(s.set_read_timeout(Some(Duration::from_secs(5))), "timeout");
    ok(
        s.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n"),
        "request",
    );
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(
        resp.starts_with("HTTP/1.") && resp.contains("hello from the pod"),
        "{resp}"
    );

    // Exec into the server sees the pod's network.
    let r = ok(
        rt.exec_sync(
            &a,
            &["wget".into(), "-qO-".into(), format!("http://{ip}:8080/")],
            Duration::from_secs(10),
        ),
        "exec",
    );
    assert_eq!(
        (r.exit_code, String::from_utf8_lossy(&r.stdout).as_ref()),
        (0, "hello from the pod\n")
    );

    // Stopping the pod stops its containers, pause and the network.
    ok(rt.stop_sandbox(&sb.id), "stop sandbox");
    assert_eq!(
        ok(rt.container_status(&a), "status").state,
        ContainerState::Exited
    );
    assert_eq!(
        ok(rt.sandbox_status(&sb.id), "status").state,
        SandboxState::NotReady
    );
    // pause is gone (or a zombie waiting for init to reap it).
    let state = std::fs::read_to_string(format!("/proc/{}/stat", sb.pid))
        .map(|s| s.rsplit(')').next().unwrap_or("").trim().chars().next())
        .unwrap_or(Some('Z'));
    assert_eq!(state, Some('Z'), "pause stopped");
    // With no container left, the pod's monitor ends.
    let gone = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit(')').next().unwrap_or("").trim().starts_with('Z'))
            .unwrap_or(true)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !gone(mon) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(gone(mon), "monitor {mon} still runs with no container");
    ok(rt.stop_sandbox(&sb.id), "stopping twice");
    let leased = |d: &Path| {
        std::fs::read_dir(d.join("ipam/podctl"))
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
                    .count()
            })
            .unwrap_or(0)
    };
    assert_eq!(leased(dir.path()), 0, "IP released by CNI DEL");

    ok(rt.remove_sandbox(&sb.id), "remove sandbox");
    assert!(ok(rt.list_sandboxes(), "list").is_empty());
    assert!(ok(rt.list_containers(), "list").is_empty());
    assert!(!pin.exists(), "netns unpinned");
    assert!(
        !Path::new(&format!("/sys/fs/cgroup/memory{cg}/{}", sb.id)).exists(),
        "pod cgroup removed"
    );
    ok(rt.remove_sandbox(&sb.id), "removing twice");
}

#[test]
fn host_network_pod_and_shared_pid_namespace() {
    let dir = ok(tempfile::tempdir(), "tempdir");
    let lower = busybox_rootfs(dir.path());
    let cg = cgroup_parent("hostnet");
    let _t = Teardown::new(dir.path(), &cg, None);
    let rt = runtime(dir.path(), &cg, None);
    let sb = ok(
        rt.run_sandbox(SandboxConfig {
            name: "hostnet".into(),
            host_network: true,
            share_pid: true,
            ..Default::default()
        }),
        "run_sandbox",
    );
    assert_eq!((sb.ip.as_deref(), sb.netns_path.as_deref()), (None, None));
    let id = ok(
        rt.create_container(
            &sb.id,
            ContainerConfig {
                name: "c".into(),
                lower_dirs: vec![lower],
                command: vec![
                    "sh".into(),
                    "-c".into(),
                    "hostname; ls /sys/class/net | grep -c . ; echo $$; ps -o pid,comm | grep -c '^ *1 '"
                        .into(),
                ],
                log_path: dir.path().join("c.log"),
                ..Default::default()
            },
        ),
        "create",
    );
    ok(rt.start_container(&id), "start");
    let st = ok(rt.wait_container(&id, Duration::from_secs(20)), "wait");
    let lines = parse_log(&dir.path().join("c.log"));
    assert_eq!(st.exit_code, Some(0), "{lines:?}");
    let out: Vec<&str> = lines.iter().map(|l| l.3.as_str()).collect();
    // A host-network pod shares the node's UTS namespace (as with
    // containerd): the node's hostname, never changed by the pod.
    let node = ok(nix::unistd::gethostname(), "gethostname");
    assert_eq!(out[0], node.to_string_lossy());
    let host_ifaces = ok(std::fs::read_dir("/sys/class/net"), "ifaces").count();
    assert_eq!(out[1], host_ifaces.to_string(), "host network");
    assert_ne!(out[2], "1", "pause is PID 1 of the shared PID namespace");
    ok(rt.remove_sandbox(&sb.id), "remove");
    assert!(ok(rt.list_containers(), "list").is_empty());
}
