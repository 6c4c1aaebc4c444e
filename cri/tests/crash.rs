//! Crash consistency of `podctl serve` (cgroupfs here; the `_systemd`
//! variants run in the VM with the systemd driver): the daemon dies (a
//! SIGKILL it sends itself) at named crash points of RunPodSandbox,
//! CreateContainer, StartContainer, StopPodSandbox and RemovePodSandbox
//! (`PODCTL_CRASH_AT`, see podctl_runtime::failpoint); a restarted daemon
//! finds and cleans what the crash left or finishes the call when it is
//! retried, pods still work, and once they are removed and the daemon
//! stopped nothing is left: no mount, no pause process, no address
//! allocated, no state, no socket, no cgroup parent.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{
    channel, container_config, entries, ok, pull, run_container, run_sandbox, running,
    sandbox_config, start_daemon_in, Daemon, Driver, Parent,
};
use podctl_cri::proto;
use podctl_cri::proto::image_service_client::ImageServiceClient;
use podctl_cri::proto::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

/// Container rootfs mounts under the daemon's state directory.
fn rootfs_mounts(daemon: &Daemon) -> Vec<String> {
    podctl_tests::mounts_under(&daemon.dir.path().join("state/containers"))
}

/// Entries of the runtime's container state directory.
fn state_entries(daemon: &Daemon) -> Vec<PathBuf> {
    entries(&daemon.dir.path().join("state/containers"))
}

fn ipam_allocations(daemon: &Daemon) -> Vec<String> {
    common::ipam_allocations(daemon.dir.path())
}

/// PIDs in the sandboxes' `pause.pid` files.
fn pause_pids(daemon: &Daemon) -> Vec<i32> {
    entries(&daemon.dir.path().join("state/sandboxes"))
        .into_iter()
        .filter_map(|d| std::fs::read_to_string(d.join("pause.pid")).ok())
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

/// One tokio runtime for the whole test: a client's connection lives on it
/// between calls.
fn tokio() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| ok(tokio::runtime::Runtime::new()))
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio().block_on(f)
}

/// The daemon's RuntimeService client (a new connection).
fn runtime(daemon: &Daemon) -> RuntimeServiceClient<Channel> {
    RuntimeServiceClient::new(block_on(channel(&daemon.socket)))
}

/// Run `call` on a daemon set to die at `point`: the call fails and the
/// daemon is gone.
fn cut<T: std::fmt::Debug, F>(daemon: &mut Daemon, point: &str, call: F)
where
    F: FnOnce(RuntimeServiceClient<Channel>) -> Result<T, tonic::Status>,
{
    daemon.respawn(&[("PODCTL_CRASH_AT", point)]);
    let r = call(runtime(daemon));
    assert!(r.is_err(), "{point}: the call answered {r:?}");
    // A call that failed before the point leaves the daemon alive.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while ok(daemon.child.try_wait()).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "{point}: the daemon did not die; the call said {r:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let st = ok(daemon.child.wait());
    assert!(!st.success(), "{point}: the daemon did not die ({st})");
}

/// CreateContainer on a daemon set to die at `point`.
fn create_and_die(daemon: &mut Daemon, point: &str, sb: &str, sc: &proto::PodSandboxConfig) {
    let cfg = container_config("victim", &daemon_image(daemon), "sleep 1000");
    cut(daemon, point, |mut rt| {
        block_on(rt.create_container(proto::CreateContainerRequest {
            pod_sandbox_id: sb.into(),
            config: Some(cfg),
            sandbox_config: Some(sc.clone()),
        }))
    });
}

/// A daemon with busybox pulled and one pod running.
struct Scene {
    reg: podctl_tests::registry::Registry,
    pubd: podctl_tests::fixtures::Published,
    parent: Parent,
    daemon: Daemon,
    logs: PathBuf,
    sc: proto::PodSandboxConfig,
    sb: String,
}

impl Scene {
    fn new(driver: Driver, pod: &str) -> Self {
        let reg = ok(podctl_tests::registry::Registry::start());
        let pubd = ok(podctl_tests::fixtures::publish(&reg, None));
        let parent = Parent::new(driver);
        let daemon = start_daemon_in(&pubd, &parent);
        ok(std::fs::write(
            daemon.dir.path().join("image"),
            &pubd.busybox,
        ));
        let logs = daemon.dir.path().join("pod-logs");
        ok(std::fs::create_dir_all(&logs));
        let sc = sandbox_config(pod, 0, &logs);
        let sb = block_on(async {
            let ch = channel(&daemon.socket).await;
            pull(&mut ImageServiceClient::new(ch.clone()), &pubd.busybox).await;
            run_sandbox(&mut RuntimeServiceClient::new(ch), &sc).await
        });
        Scene {
            reg,
            pubd,
            parent,
            daemon,
            logs,
            sc,
            sb,
        }
    }
}

/// The busybox image the test pulled (kept in the daemon's directory).
fn daemon_image(daemon: &Daemon) -> String {
    ok(std::fs::read_to_string(daemon.dir.path().join("image")))
}

#[test]
fn create_container_cut_at_each_crash_point_leaves_nothing() {
    create_container_cut_at_each_crash_point_leaves_nothing_with(Driver::Cgroupfs);
}

/// The same with the systemd driver, in the VM (tests/vm/suite.sh).
#[test]
#[ignore = "VM only: systemd as PID 1 (tests/vm)"]
fn create_container_cut_at_each_crash_point_leaves_nothing_systemd() {
    create_container_cut_at_each_crash_point_leaves_nothing_with(Driver::Systemd);
}

fn create_container_cut_at_each_crash_point_leaves_nothing_with(driver: Driver) {
    let Scene {
        reg,
        pubd,
        parent,
        mut daemon,
        logs: _,
        sc,
        sb,
    } = Scene::new(driver, "crashy");

    // Cut after the rootfs mount: a state directory without meta.json and
    // a mounted overlay, which a restarted daemon collects at once.
    create_and_die(&mut daemon, "create_container.rootfs_mounted", &sb, &sc);
    assert_eq!(rootfs_mounts(&daemon).len(), 1, "the crash left no mount");
    assert_eq!(state_entries(&daemon).len(), 1);
    daemon.respawn(&[]);
    assert_eq!(rootfs_mounts(&daemon), Vec::<String>::new());
    assert_eq!(state_entries(&daemon), Vec::<PathBuf>::new());

    // Cut after the runtime made the container, before the CRI record: no
    // client ever sees it; removing the pod removes it.
    create_and_die(&mut daemon, "create_container.runtime_created", &sb, &sc);
    daemon.respawn(&[]);
    let mut rt = runtime(&daemon);
    let listed = ok(block_on(
        rt.list_containers(proto::ListContainersRequest::default()),
    ))
    .into_inner()
    .containers;
    assert!(listed.is_empty(), "{listed:?}");
    assert_eq!(rootfs_mounts(&daemon).len(), 1);

    // The pod still works after both crashes.
    let cfg = container_config("after", &pubd.busybox, "sleep 1000");
    let id = block_on(run_container(&mut rt, &sb, &sc, cfg));
    let out = ok(block_on(rt.exec_sync(proto::ExecSyncRequest {
        container_id: id,
        cmd: vec!["echo".into(), "alive".into()],
        timeout: 10,
    })))
    .into_inner();
    assert_eq!(out.stdout, b"alive\n");

    ok(block_on(rt.stop_pod_sandbox(
        proto::StopPodSandboxRequest {
            pod_sandbox_id: sb.clone(),
        },
    )));
    ok(block_on(rt.remove_pod_sandbox(
        proto::RemovePodSandboxRequest { pod_sandbox_id: sb },
    )));
    assert_eq!(
        podctl_tests::mounts_under(daemon.dir.path()),
        Vec::<String>::new()
    );
    assert_eq!(state_entries(&daemon), Vec::<PathBuf>::new());
    let socket = daemon.socket.clone();
    drop(daemon);
    assert!(!socket.exists());
    assert_eq!(parent.left_after_stop(), Vec::<PathBuf>::new());
    println!("crash points covered: 2 (create_container.rootfs_mounted, create_container.runtime_created)");
    drop(reg);
}

/// Pause processes a crash left, killed when the test ends whatever
/// happened (a failing assertion must not leave them running).
struct Reap(Vec<i32>);

impl Drop for Reap {
    fn drop(&mut self) {
        for pid in self.0.iter().filter(|p| running(**p)) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// RunPodSandbox on a daemon set to die at `point`.
fn run_sandbox_and_die(daemon: &mut Daemon, point: &str, sc: &proto::PodSandboxConfig) {
    cut(daemon, point, |mut rt| {
        block_on(rt.run_pod_sandbox(proto::RunPodSandboxRequest {
            config: Some(sc.clone()),
            runtime_handler: String::new(),
        }))
    });
}

#[test]
fn run_pod_sandbox_cut_at_each_crash_point_leaves_nothing() {
    run_pod_sandbox_cut_at_each_crash_point_leaves_nothing_with(Driver::Cgroupfs);
}

/// The same with the systemd driver, in the VM (tests/vm/suite.sh).
#[test]
#[ignore = "VM only: systemd as PID 1 (tests/vm)"]
fn run_pod_sandbox_cut_at_each_crash_point_leaves_nothing_systemd() {
    run_pod_sandbox_cut_at_each_crash_point_leaves_nothing_with(Driver::Systemd);
}

fn run_pod_sandbox_cut_at_each_crash_point_leaves_nothing_with(driver: Driver) {
    let reg = ok(podctl_tests::registry::Registry::start());
    let pubd = ok(podctl_tests::fixtures::publish(&reg, None));
    let parent = Parent::new(driver);
    let mut daemon = start_daemon_in(&pubd, &parent);
    let logs = daemon.dir.path().join("pod-logs");
    ok(std::fs::create_dir_all(&logs));
    let netns = daemon.dir.path().join("state/netns");
    let sandboxes = daemon.dir.path().join("state/sandboxes");
    let points = [
        // pause runs, the namespace is not pinned yet
        "run_sandbox.pause_started",
        // CNI ADD done (an address allocated), its result not saved
        "run_sandbox.network_attached",
        // the runtime's sandbox is complete, the CRI record not written
        "run_sandbox.runtime_created",
    ];
    let mut reap = Reap(vec![]);
    for (i, point) in points.iter().enumerate() {
        let sc = sandbox_config(&format!("cut{i}"), 0, &logs);
        run_sandbox_and_die(&mut daemon, point, &sc);
        let pauses = pause_pids(&daemon);
        reap.0.extend(&pauses);
        assert_eq!(pauses.len(), 1, "{point}: no pause left by the crash");
        assert!(pauses.iter().all(|p| running(*p)), "{point}");
        if *point != "run_sandbox.pause_started" {
            assert_eq!(
                ipam_allocations(&daemon).len(),
                1,
                "{point}: no address held"
            );
            assert_eq!(podctl_tests::mounts_under(&netns).len(), 1, "{point}");
        }

        daemon.respawn(&[]);
        let listed = ok(block_on(
            runtime(&daemon).list_pod_sandbox(proto::ListPodSandboxRequest::default()),
        ))
        .into_inner()
        .items;
        assert!(listed.is_empty(), "{point}: {listed:?}");
        assert!(
            pauses.iter().all(|p| !running(*p)),
            "{point}: pause survived"
        );
        assert_eq!(ipam_allocations(&daemon), Vec::<String>::new(), "{point}");
        assert_eq!(
            podctl_tests::mounts_under(&netns),
            Vec::<String>::new(),
            "{point}"
        );
        assert_eq!(entries(&netns), Vec::<PathBuf>::new(), "{point}");
        assert_eq!(entries(&sandboxes), Vec::<PathBuf>::new(), "{point}");
    }

    // A pod made after the crashes gets an address and removes cleanly.
    let sc = sandbox_config("after", 0, &logs);
    let mut rt = runtime(&daemon);
    let sb = block_on(run_sandbox(&mut rt, &sc));
    assert_eq!(ipam_allocations(&daemon).len(), 1);
    ok(block_on(rt.stop_pod_sandbox(
        proto::StopPodSandboxRequest {
            pod_sandbox_id: sb.clone(),
        },
    )));
    ok(block_on(rt.remove_pod_sandbox(
        proto::RemovePodSandboxRequest { pod_sandbox_id: sb },
    )));
    assert_eq!(ipam_allocations(&daemon), Vec::<String>::new());
    assert_eq!(
        podctl_tests::mounts_under(daemon.dir.path()),
        Vec::<String>::new()
    );
    assert_eq!(entries(&sandboxes), Vec::<PathBuf>::new());
    drop(daemon);
    println!(
        "crash points covered: {} ({})",
        points.len(),
        points.join(", ")
    );
    drop(reg);
}

/// A container's CRI state and start time.
fn state_of(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> (i32, i64) {
    let st = ok(block_on(rt.container_status(
        proto::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        },
    )))
    .into_inner()
    .status
    .unwrap_or_default();
    (st.state, st.started_at)
}

fn echo(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> Vec<u8> {
    ok(block_on(rt.exec_sync(proto::ExecSyncRequest {
        container_id: id.into(),
        cmd: vec!["echo".into(), "alive".into()],
        timeout: 10,
    })))
    .into_inner()
    .stdout
}

/// Creates a container (not started) in `sb`.
fn create(daemon: &Daemon, sb: &str, sc: &proto::PodSandboxConfig, name: &str) -> String {
    let cfg = container_config(name, &daemon_image(daemon), "sleep 1000");
    ok(block_on(runtime(daemon).create_container(
        proto::CreateContainerRequest {
            pod_sandbox_id: sb.into(),
            config: Some(cfg),
            sandbox_config: Some(sc.clone()),
        },
    )))
    .into_inner()
    .container_id
}

fn start(id: &str) -> impl FnOnce(RuntimeServiceClient<Channel>) -> Result<(), tonic::Status> + '_ {
    move |mut rt| {
        block_on(rt.start_container(proto::StartContainerRequest {
            container_id: id.into(),
        }))
        .map(drop)
    }
}

fn remove_c(
    id: &str,
) -> impl FnOnce(RuntimeServiceClient<Channel>) -> Result<(), tonic::Status> + '_ {
    move |mut rt| {
        block_on(rt.remove_container(proto::RemoveContainerRequest {
            container_id: id.into(),
        }))
        .map(drop)
    }
}

fn stop_sb(
    id: &str,
) -> impl FnOnce(RuntimeServiceClient<Channel>) -> Result<(), tonic::Status> + '_ {
    move |mut rt| {
        block_on(rt.stop_pod_sandbox(proto::StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        }))
        .map(drop)
    }
}

fn remove_sb(
    id: &str,
) -> impl FnOnce(RuntimeServiceClient<Channel>) -> Result<(), tonic::Status> + '_ {
    move |mut rt| {
        block_on(rt.remove_pod_sandbox(proto::RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        }))
        .map(drop)
    }
}

fn sandboxes(daemon: &Daemon) -> Vec<(String, i32)> {
    ok(block_on(
        runtime(daemon).list_pod_sandbox(proto::ListPodSandboxRequest::default()),
    ))
    .into_inner()
    .items
    .into_iter()
    .map(|s| (s.id, s.state))
    .collect()
}

#[test]
fn start_stop_and_remove_cut_at_each_crash_point_finish_on_retry() {
    start_stop_and_remove_cut_at_each_crash_point_finish_on_retry_with(Driver::Cgroupfs);
}

/// The same with the systemd driver, in the VM (tests/vm/suite.sh).
#[test]
#[ignore = "VM only: systemd as PID 1 (tests/vm)"]
fn start_stop_and_remove_cut_at_each_crash_point_finish_on_retry_systemd() {
    start_stop_and_remove_cut_at_each_crash_point_finish_on_retry_with(Driver::Systemd);
}

fn start_stop_and_remove_cut_at_each_crash_point_finish_on_retry_with(driver: Driver) {
    let Scene {
        reg,
        pubd: _,
        parent,
        mut daemon,
        logs,
        sc,
        sb,
    } = Scene::new(driver, "life");
    let created = proto::ContainerState::ContainerCreated as i32;
    let running = proto::ContainerState::ContainerRunning as i32;
    let mut points = vec![];

    // Cut after the launch: still created; a new start runs it.
    let c1 = create(&daemon, &sb, &sc, "one");
    points.push("start_container.launched");
    cut(&mut daemon, "start_container.launched", start(&c1));
    daemon.respawn(&[]);
    let mut rt = runtime(&daemon);
    assert_eq!(state_of(&mut rt, &c1).0, created);
    ok(start(&c1)(rt.clone()));
    assert_eq!(state_of(&mut rt, &c1).0, running);
    assert_eq!(echo(&mut rt, &c1), b"alive\n");

    // Cut after the start: running, with its start time; a retried start
    // records it and changes nothing else.
    let c2 = create(&daemon, &sb, &sc, "two");
    points.push("start_container.started");
    cut(&mut daemon, "start_container.started", start(&c2));
    daemon.respawn(&[]);
    let mut rt = runtime(&daemon);
    let (state, at) = state_of(&mut rt, &c2);
    assert_eq!(state, running);
    assert!(at > 0, "no start time: {at}");
    ok(start(&c2)(rt.clone()));
    assert_eq!(state_of(&mut rt, &c2), (running, at));
    assert_eq!(echo(&mut rt, &c2), b"alive\n");

    // Cut after RemoveContainer took the container out of the listings
    // (killed, its state directory under removing/), before the finish:
    // the restarted daemon's collector finishes it.
    points.push("remove_container.retired");
    cut(&mut daemon, "remove_container.retired", remove_c(&c1));
    daemon.respawn(&[]);
    let mut rt = runtime(&daemon);
    let gone = block_on(rt.container_status(proto::ContainerStatusRequest {
        container_id: c1.clone(),
        verbose: false,
    }));
    assert_eq!(gone.err().map(|e| e.code()), Some(tonic::Code::NotFound));
    let root = daemon.dir.path();
    let left: Vec<String> = podctl_tests::mounts_under(root)
        .into_iter()
        .filter(|m| m.contains(&c1))
        .collect();
    assert_eq!(left, Vec::<String>::new());
    assert_eq!(entries(&root.join("state/removing")), Vec::<PathBuf>::new());
    assert!(!root.join("root/containers").join(&c1).exists());
    assert_eq!(state_of(&mut rt, &c2).0, running);

    // Cut after CNI DEL: a retried stop finishes, the address is free.
    points.push("stop_sandbox.network_detached");
    cut(&mut daemon, "stop_sandbox.network_detached", stop_sb(&sb));
    daemon.respawn(&[]);
    ok(stop_sb(&sb)(runtime(&daemon)));
    let not_ready = proto::PodSandboxState::SandboxNotready as i32;
    assert_eq!(sandboxes(&daemon), vec![(sb.clone(), not_ready)]);
    assert_eq!(ipam_allocations(&daemon), Vec::<String>::new());

    // Cut inside the runtime's removal: still listed; a retry removes it.
    points.push("remove_sandbox.containers_removed");
    cut(
        &mut daemon,
        "remove_sandbox.containers_removed",
        remove_sb(&sb),
    );
    daemon.respawn(&[]);
    assert_eq!(sandboxes(&daemon), vec![(sb.clone(), not_ready)]);
    ok(remove_sb(&sb)(runtime(&daemon)));
    assert_eq!(sandboxes(&daemon), vec![]);

    // Cut between the runtime's removal and the record's: the restarted
    // daemon forgets the record.
    let sb2 = block_on(run_sandbox(
        &mut runtime(&daemon),
        &sandbox_config("gone", 0, &logs),
    ));
    ok(stop_sb(&sb2)(runtime(&daemon)));
    points.push("remove_pod_sandbox.runtime_removed");
    cut(
        &mut daemon,
        "remove_pod_sandbox.runtime_removed",
        remove_sb(&sb2),
    );
    daemon.respawn(&[]);
    assert_eq!(sandboxes(&daemon), vec![]);
    let cri = daemon.dir.path().join("state/cri");
    assert_eq!(entries(&cri.join("sandboxes")), Vec::<PathBuf>::new());
    assert_eq!(entries(&cri.join("containers")), Vec::<PathBuf>::new());

    assert_eq!(
        podctl_tests::mounts_under(daemon.dir.path()),
        Vec::<String>::new()
    );
    assert_eq!(pause_pids(&daemon), Vec::<i32>::new());
    assert_eq!(ipam_allocations(&daemon), Vec::<String>::new());
    assert_eq!(state_entries(&daemon), Vec::<PathBuf>::new());
    assert_eq!(
        entries(&daemon.dir.path().join("state/sandboxes")),
        Vec::<PathBuf>::new()
    );
    drop(daemon);
    assert_eq!(parent.left_after_stop(), Vec::<PathBuf>::new());
    println!(
        "crash points covered: {} ({})",
        points.len(),
        points.join(", ")
    );
    drop(reg);
}
