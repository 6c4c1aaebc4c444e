//! A running daemon collects what another process sharing its state
//! directories left when it crashed (a CLI or a standalone supervisor cut
//! in the middle of RunPodSandbox), without being restarted: the
//! collection runs every `gc_interval_secs`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{
    channel, entries, ipam_allocations, ok, running, sandbox_config, setup, Driver, Parent,
};
use podctl_cri::proto;
use podctl_cri::proto::runtime_service_client::RuntimeServiceClient;

/// `podctl serve --config <config>` with `env`; returns once `socket`
/// exists.
fn serve(config: &Path, socket: &Path, env: &[(&str, &str)], log: &Path) -> Child {
    let log = ok(std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log));
    let child = ok(Command::new(podctl_tests::workspace_bin("podctl"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied())
        .stderr(log)
        .spawn());
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "no socket {socket:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

struct Stop(Vec<Child>);

impl Drop for Stop {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if c.try_wait().ok().flatten().is_none() {
                let _ = Command::new("kill")
                    .args(["-TERM", &c.id().to_string()])
                    .status();
            }
            let _ = c.wait();
        }
    }
}

#[test]
fn a_running_daemon_collects_what_a_crashed_neighbour_left() {
    let reg = ok(podctl_tests::registry::Registry::start());
    let pubd = ok(podctl_tests::fixtures::publish(&reg, None));
    let parent = Parent::new(Driver::Cgroupfs);
    let s = setup(&pubd, &format!("{}gc_interval_secs = 1\n", parent.config()));
    let d = s.dir.path();
    // The neighbour: same directories, its own socket, set to die in
    // RunPodSandbox after the runtime made the sandbox, before the record.
    let text = ok(std::fs::read_to_string(&s.config));
    let other_sock = d.join("other.sock");
    let other = d.join("other.toml");
    ok(std::fs::write(
        &other,
        text.replace(
            &format!("socket = \"{}\"", s.socket.display()),
            &format!("socket = \"{}\"", other_sock.display()),
        )
        .replace("gc_interval_secs = 1", "gc_interval_secs = 0"),
    ));
    let log = d.join("daemon.log");
    let mut procs = Stop(vec![serve(&s.config, &s.socket, &[], &log)]);
    let at = [("PODCTL_CRASH_AT", "run_sandbox.runtime_created")];
    procs.0.push(serve(&other, &other_sock, &at, &log));

    let logs = d.join("pod-logs");
    ok(std::fs::create_dir_all(&logs));
    let r = common::block_on(async {
        let mut rt = RuntimeServiceClient::new(channel(&other_sock).await);
        rt.run_pod_sandbox(proto::RunPodSandboxRequest {
            config: Some(sandbox_config("cut", 0, &logs)),
            runtime_handler: String::new(),
        })
        .await
    });
    assert!(r.is_err(), "RunPodSandbox answered {r:?}");
    let st = ok(procs.0[1].wait());
    assert!(!st.success(), "the neighbour did not die ({st})");

    // What it left: a pause, a pinned namespace, an address.
    let sandboxes = d.join("state/sandboxes");
    let pauses: Vec<i32> = entries(&sandboxes)
        .iter()
        .filter_map(|p| std::fs::read_to_string(p.join("pause.pid")).ok())
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    assert_eq!(pauses.len(), 1, "the crash left no pause");
    let netns = d.join("state/netns");
    assert_eq!(podctl_tests::mounts_under(&netns).len(), 1);

    // The daemon, never restarted, collects it within a few intervals.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !entries(&sandboxes).is_empty() {
        assert!(
            Instant::now() < deadline,
            "not collected: {:?}\n{}",
            entries(&sandboxes),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(pauses.iter().all(|p| !running(*p)), "pause survived");
    assert_eq!(podctl_tests::mounts_under(&netns), Vec::<String>::new());
    assert_eq!(entries(&netns), Vec::<PathBuf>::new());
    assert_eq!(ipam_allocations(d), Vec::<String>::new());
    drop(procs);
    let _ = Command::new("ip").args(["link", "del", &s.bridge]).status();
    assert_eq!(parent.left_after_stop(), Vec::<PathBuf>::new());
    drop(reg);
}
