//! A stock kubelet on `podctl serve` with the systemd cgroup driver, in
//! the VM of `tests/vm` (systemd as PID 1, cgroup v2): the kubelet, in
//! standalone mode (static pods from a directory, no API server), makes
//! its `kubepods.slice` tree and runs a pod through podctl's socket; the
//! container lives in a systemd scope under the pod's slice that the
//! kubelet named.
//!
//! The kubelet is not built here (see the README): `tests/vm/test.sh`
//! copies `$E2E_BIN/kubelet` into the guest's share and names it in
//! `PODCTL_VM_KUBELET`; without it the test says so and passes.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{channel, ok, setup};
use podctl_cri::proto;
use podctl_cri::proto::runtime_service_client::RuntimeServiceClient;
use podctl_tests::fixtures::publish;
use podctl_tests::registry::Registry;

const UNIT: &str = "podctl-kubelet-test.service";

fn systemctl(args: &[&str]) {
    let out = ok(Command::new("systemctl").args(args).output());
    assert!(
        out.status.success(),
        "systemctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The kubelet process, killed when the test ends.
struct Kubelet(Child);

impl Drop for Kubelet {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The running containers the daemon lists for pod `pod`.
async fn running(socket: &Path, pod: &str) -> Vec<proto::Container> {
    let mut rt = RuntimeServiceClient::new(channel(socket).await);
    let mut filter = proto::ContainerFilter::default();
    filter
        .label_selector
        .insert("io.kubernetes.pod.name".into(), pod.into());
    filter.state = Some(proto::ContainerStateValue {
        state: proto::ContainerState::ContainerRunning as i32,
    });
    rt.list_containers(proto::ListContainersRequest {
        filter: Some(filter),
    })
    .await
    .map(|r| r.into_inner().containers)
    .unwrap_or_default()
}

#[test]
#[ignore = "VM only: systemd as PID 1 (tests/vm)"]
fn a_stock_kubelet_runs_a_static_pod_with_the_systemd_driver() {
    let Some(kubelet) = std::env::var_os("PODCTL_VM_KUBELET").filter(|k| Path::new(k).is_file())
    else {
        println!("skipped: no kubelet in the guest's share (tests/vm/test.sh copies $E2E_BIN/kubelet; see README)");
        return;
    };
    let reg = ok(Registry::start());
    let pubd = ok(publish(&reg, None));
    let s = setup(&pubd, "cgroup_driver = \"systemd\"\n");
    let d = s.dir.path();
    let unit = format!(
        "[Unit]\nDescription=podctl under a kubelet (test)\n\n[Service]\nType=notify\n\
         ExecStart={bin} serve --config {cfg}\nDelegate=yes\nKillMode=process\n\
         StandardError=append:{log}\n",
        bin = podctl_tests::workspace_bin("podctl").display(),
        cfg = s.config.display(),
        log = d.join("daemon.log").display(),
    );
    ok(std::fs::write(format!("/run/systemd/system/{UNIT}"), unit));
    systemctl(&["daemon-reload"]);
    systemctl(&["start", UNIT]);

    let manifests = d.join("manifests");
    ok(std::fs::create_dir_all(&manifests));
    ok(std::fs::write(
        manifests.join("web.yaml"),
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: web, namespace: default}}\nspec:\n  \
             containers:\n  - name: app\n    image: {}/library/busybox:latest\n    \
             imagePullPolicy: IfNotPresent\n    command: [sleep, '3600']\n",
            pubd.host
        ),
    ));
    let endpoint = format!("unix://{}", s.socket.display());
    let log = ok(std::fs::File::create(d.join("kubelet.log")));
    let mut cmd = Command::new(&kubelet);
    cmd.args(["--container-runtime=remote", "--cgroup-driver=systemd"])
        .arg(format!("--container-runtime-endpoint={endpoint}"))
        .arg(format!("--image-service-endpoint={endpoint}"))
        .arg(format!("--pod-manifest-path={}", manifests.display()))
        .arg(format!("--root-dir={}", d.join("kubelet").display()))
        .arg(format!("--cert-dir={}", d.join("kubelet-pki").display()))
        .args([
            "--hostname-override=vmnode",
            "--fail-swap-on=false",
            "--make-iptables-util-chains=false",
            "--read-only-port=0",
            "--port=10350",
            "--healthz-port=0",
            "--eviction-hard=",
            "--file-check-frequency=2s",
            "--v=2",
        ])
        .stdout(Stdio::null())
        .stderr(log);
    let _kubelet = Kubelet(ok(cmd.spawn()));

    // The static pod's mirror name is `<name>-<hostname>`.
    let pod = "web-vmnode";
    let deadline = Instant::now() + Duration::from_secs(300);
    let c = loop {
        let found = common::block_on(running(&s.socket, pod));
        if let Some(c) = found.into_iter().next() {
            break c;
        }
        if Instant::now() > deadline {
            let klog = std::fs::read_to_string(d.join("kubelet.log")).unwrap_or_default();
            let tail: Vec<&str> = klog.lines().rev().take(40).collect();
            panic!(
                "no running container of {pod} after 300 s; kubelet log (last lines, newest first):\n{}",
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    println!("check: the kubelet (systemd driver) ran static pod {pod} through podctl: ok");

    // Where the container runs: a scope under the slices the kubelet made.
    let status = common::block_on(async {
        let mut rt = RuntimeServiceClient::new(channel(&s.socket).await);
        rt.container_status(proto::ContainerStatusRequest {
            container_id: c.id.clone(),
            verbose: true,
        })
        .await
        .map(|r| r.into_inner())
    });
    let status = ok(status);
    let pid = status
        .info
        .get("info")
        .and_then(|i| serde_json::from_str::<serde_json::Value>(i).ok())
        .and_then(|v| v["pid"].as_i64())
        .unwrap_or_default();
    assert!(pid > 0, "no pid in the verbose status: {:?}", status.info);
    let cgroup = ok(std::fs::read_to_string(format!("/proc/{pid}/cgroup")));
    let path = cgroup.trim().trim_start_matches("0::");
    assert!(
        path.starts_with("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod")
            && path.ends_with(".scope"),
        "container {} in cgroup {path:?}",
        c.id
    );
    println!("check: its container runs in {path}: ok");

    // The kubelet gone, its pod removed through the CRI as a kubelet would.
    drop(_kubelet);
    common::block_on(async {
        let mut rt = RuntimeServiceClient::new(channel(&s.socket).await);
        let _ = rt
            .stop_pod_sandbox(proto::StopPodSandboxRequest {
                pod_sandbox_id: c.pod_sandbox_id.clone(),
            })
            .await;
        let _ = rt
            .remove_pod_sandbox(proto::RemovePodSandboxRequest {
                pod_sandbox_id: c.pod_sandbox_id.clone(),
            })
            .await;
    });
    let _ = Command::new("systemctl").args(["stop", UNIT]).status();
    drop(reg);
}
