//! NRI over the plugin socket of a `podctl serve`: a plugin written on
//! podctl's own framing registers, is configured and synchronized with
//! the pods and containers that exist, then sees each lifecycle event in
//! order (a container's own exit included); its refusal fails and undoes
//! RunPodSandbox and CreateContainer; a plugin that stops answering is
//! dropped and the CRI goes on without it. (critest's 13 NRI specs, run
//! by tests/critest/run.sh, are the oracle; this is podctl's own check.)

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    block_on, channel, container_config, ok, pull, registry_and_daemon, run_container, run_sandbox,
    sandbox_config, stop_and_remove_sandbox, wait_state,
};
use podctl_cri::nri::api;
use podctl_cri::nri::trunk::{self, Handler, Trunk};
use podctl_cri::nri::wire;
use podctl_cri::proto;
use podctl_cri::proto::image_service_client::ImageServiceClient;
use podctl_cri::proto::runtime_service_client::RuntimeServiceClient;
use prost::Message as _;
use tonic::transport::Channel;

/// What the test plugin saw and how it answers.
#[derive(Default)]
struct Seen {
    /// (method, pod ID, container) per event, in arrival order.
    events: Vec<(String, String, api::Container)>,
    synced_pods: Vec<String>,
    synced_containers: Vec<String>,
    synchronized: bool,
    /// Methods answered with an error.
    refuse: HashSet<String>,
    /// Methods never answered.
    hang: HashSet<String>,
    /// The answer to CreateContainer of a container of this name.
    adjust: Option<(String, api::ContainerAdjustment)>,
}

struct Plugin {
    trunk: Arc<Trunk>,
    seen: Arc<Mutex<Seen>>,
}

fn seen(s: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

fn plugin_service(seen_by: Arc<Mutex<Seen>>) -> Handler {
    Arc::new(move |req: api::Request| {
        let s = seen_by.clone();
        Box::pin(async move {
            match req.method.as_str() {
                // Every event.
                "Configure" => return trunk::ok(&api::ConfigureResponse { events: 0 }),
                "Synchronize" => {
                    let r = ok(api::SynchronizeRequest::decode(req.payload.as_slice()));
                    let mut g = seen(&s);
                    g.synced_pods = r.pods.into_iter().map(|p| p.id).collect();
                    g.synced_containers = r.containers.into_iter().map(|c| c.id).collect();
                    g.synchronized = true;
                    return trunk::ok(&api::Empty {});
                }
                _ => {}
            }
            let r = ok(api::ContainerRequest::decode(req.payload.as_slice()));
            let (refuse, hang) = {
                let mut g = seen(&s);
                g.events.push((
                    req.method.clone(),
                    r.pod.map(|p| p.id).unwrap_or_default(),
                    r.container.unwrap_or_default(),
                ));
                (g.refuse.contains(&req.method), g.hang.contains(&req.method))
            };
            if hang {
                std::future::pending::<()>().await;
            }
            if req.method == "CreateContainer" {
                let g = seen(&s);
                let name = g.events.last().map(|(_, _, c)| c.name.clone());
                if let Some((_, a)) = g.adjust.as_ref().filter(|(n, _)| Some(n) == name.as_ref()) {
                    return trunk::ok(&api::CreateContainerResponse {
                        adjust: Some(a.clone()),
                        ..Default::default()
                    });
                }
            }
            if refuse {
                return api::Response {
                    status: Some(api::Status {
                        code: 2,
                        message: "refused by the test".into(),
                    }),
                    payload: vec![],
                };
            }
            trunk::ok(&api::Empty {})
        })
    })
}

async fn connect(socket: &Path, name: &str, idx: &str) -> Plugin {
    let seen_by = Arc::new(Mutex::new(Seen::default()));
    let stream = ok(tokio::net::UnixStream::connect(socket).await);
    let t = Trunk::start(stream, wire::RUNTIME_CONN, plugin_service(seen_by.clone()));
    let reg = api::RegisterPluginRequest {
        plugin_name: name.into(),
        plugin_idx: idx.into(),
        nri_version: api::NRI_VERSION.into(),
    };
    let _: api::Empty = ok(t
        .call(
            api::RUNTIME_SERVICE,
            "RegisterPlugin",
            &reg,
            Duration::from_secs(5),
        )
        .await);
    let p = Plugin {
        trunk: t,
        seen: seen_by,
    };
    wait_for("Synchronize", || seen(&p.seen).synchronized).await;
    p
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Plugin {
    /// The events about `id` (a pod's or a container's): their methods.
    fn about(&self, id: &str) -> Vec<String> {
        seen(&self.seen)
            .events
            .iter()
            .filter(|(_, pod, c)| c.id == id || (c.id.is_empty() && pod == id))
            .map(|(m, _, _)| m.clone())
            .collect()
    }
}

#[test]
fn nri_plugins_see_and_can_refuse_the_lifecycle() {
    let (reg, pubd, daemon) = registry_and_daemon();
    let nri_sock = daemon.dir.path().join("nri/nri.sock");
    let conf = daemon.dir.path().join("podctl.toml");
    let text = ok(std::fs::read_to_string(&conf));
    ok(std::fs::write(
        &conf,
        format!(
            "{text}\n[nri]\nenable = true\nsocket = \"{}\"\nrequest_timeout_ms = 1000\n",
            nri_sock.display()
        ),
    ));
    let mut daemon = daemon;
    daemon.respawn(&[]);
    block_on(async {
        let ch = channel(&daemon.socket).await;
        let mut rt = RuntimeServiceClient::new(ch.clone());
        let mut img = ImageServiceClient::new(ch);
        let busybox = pull(&mut img, &pubd.busybox).await;
        let logs = daemon.dir.path().join("logs");
        let pod = sandbox_config("nri", 0, &logs);
        let sb = run_sandbox(&mut rt, &pod).await;
        let early = run_container(
            &mut rt,
            &sb,
            &pod,
            container_config("early", &busybox, "sleep 3600"),
        )
        .await;

        // A plugin connecting now is told of what exists.
        let p = connect(&nri_sock, "test-plugin", "10").await;
        {
            let g = seen(&p.seen);
            assert_eq!(g.synced_pods, [sb.as_str()]);
            assert_eq!(g.synced_containers, [early.as_str()]);
        }

        lifecycle(&mut rt, &p, &sb, &pod, &busybox).await;
        refusals(&mut rt, &p, &sb, &pod, &busybox, &logs).await;
        adjustments(&mut rt, &p, &sb, &pod, &busybox).await;

        // One StopPodSandbox however often the pod is stopped.
        ok(rt
            .stop_pod_sandbox(proto::StopPodSandboxRequest {
                pod_sandbox_id: sb.clone(),
            })
            .await);
        stop_and_remove_sandbox(&mut rt, sb.clone()).await;
        assert_eq!(p.about(&sb), ["StopPodSandbox", "RemovePodSandbox"]);
        assert_eq!(
            p.about(&early),
            ["StopContainer", "RemoveContainer"],
            "the running container stopped with its pod"
        );

        // A plugin that does not answer is dropped: the call goes on.
        seen(&p.seen).hang.insert("RunPodSandbox".into());
        let t0 = Instant::now();
        let sb2 = run_sandbox(&mut rt, &sandbox_config("nri-after", 0, &logs)).await;
        assert!(t0.elapsed() < Duration::from_secs(10));
        wait_for("the silent plugin dropped", || p.trunk.is_closed()).await;
        stop_and_remove_sandbox(&mut rt, sb2).await;
    });
    drop(daemon);
    drop(reg);
}

/// Create, start, stop, remove: each event once, in order, with the
/// container's CRI name; a container's own exit is told as a stop.
async fn lifecycle(
    rt: &mut RuntimeServiceClient<Channel>,
    p: &Plugin,
    sb: &str,
    pod: &proto::PodSandboxConfig,
    image: &str,
) {
    let id = run_container(rt, sb, pod, container_config("app", image, "sleep 3600")).await;
    ok(rt
        .stop_container(proto::StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await);
    ok(rt
        .remove_container(proto::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await);
    assert_eq!(
        p.about(&id),
        [
            "CreateContainer",
            "PostCreateContainer",
            "StartContainer",
            "PostStartContainer",
            "StopContainer",
            "RemoveContainer"
        ]
    );
    assert!(seen(&p.seen)
        .events
        .iter()
        .filter(|(_, _, c)| c.id == id)
        .all(|(_, pod_id, c)| c.name == "app" && pod_id == sb));

    let quitter = run_container(rt, sb, pod, container_config("quitter", image, "exit 3")).await;
    wait_state(rt, &quitter, proto::ContainerState::ContainerExited).await;
    wait_for("StopContainer of a container that exited", || {
        p.about(&quitter).contains(&"StopContainer".to_string())
    })
    .await;
    let stop = seen(&p.seen)
        .events
        .iter()
        .find(|(m, _, c)| m == "StopContainer" && c.id == quitter)
        .map(|(_, _, c)| c.clone())
        .unwrap_or_default();
    assert_eq!(
        (stop.state, stop.exit_code),
        (api::ContainerState::Stopped as i32, 3)
    );
    ok(rt
        .remove_container(proto::RemoveContainerRequest {
            container_id: quitter.clone(),
        })
        .await);
    assert_eq!(
        p.about(&quitter).last().map(String::as_str),
        Some("RemoveContainer")
    );
    assert_eq!(
        p.about(&quitter)
            .iter()
            .filter(|m| *m == "StopContainer")
            .count(),
        1
    );
}

/// A refused RunPodSandbox or CreateContainer fails, leaves nothing
/// listed, and succeeds when retried as it was.
async fn refusals(
    rt: &mut RuntimeServiceClient<Channel>,
    p: &Plugin,
    sb: &str,
    pod: &proto::PodSandboxConfig,
    image: &str,
    logs: &Path,
) {
    seen(&p.seen).refuse.insert("CreateContainer".into());
    let req = proto::CreateContainerRequest {
        pod_sandbox_id: sb.into(),
        config: Some(container_config("refused", image, "sleep 3600")),
        sandbox_config: Some(pod.clone()),
    };
    let e = rt
        .create_container(req.clone())
        .await
        .err()
        .unwrap_or_else(|| panic!("a refused CreateContainer succeeded"));
    assert!(
        e.message().contains("10-test-plugin") && e.message().contains("refused by the test"),
        "{e}"
    );
    let names = |cs: Vec<proto::Container>| -> Vec<String> {
        cs.into_iter()
            .filter_map(|c| c.metadata.map(|m| m.name))
            .collect()
    };
    let listed = ok(rt
        .list_containers(proto::ListContainersRequest::default())
        .await)
    .into_inner()
    .containers;
    assert!(!names(listed).contains(&"refused".to_string()));
    seen(&p.seen).refuse.clear();
    let id = ok(rt.create_container(req).await).into_inner().container_id;
    ok(rt
        .remove_container(proto::RemoveContainerRequest { container_id: id })
        .await);

    seen(&p.seen).refuse.insert("RunPodSandbox".into());
    let cfg = sandbox_config("nri-refused", 0, logs);
    let run = proto::RunPodSandboxRequest {
        config: Some(cfg.clone()),
        runtime_handler: String::new(),
    };
    let e = rt
        .run_pod_sandbox(run.clone())
        .await
        .err()
        .unwrap_or_else(|| panic!("a refused RunPodSandbox succeeded"));
    assert!(e.message().contains("refused by the test"), "{e}");
    let listed = ok(rt
        .list_pod_sandbox(proto::ListPodSandboxRequest::default())
        .await)
    .into_inner()
    .items;
    assert!(!listed
        .iter()
        .any(|s| s.metadata.as_ref().map(|m| m.name.as_str()) == Some("nri-refused")));
    seen(&p.seen).refuse.clear();
    let again = ok(rt.run_pod_sandbox(run).await)
        .into_inner()
        .pod_sandbox_id;
    stop_and_remove_sandbox(rt, again).await;
}

/// A plugin's adjustment at CreateContainer becomes the container's
/// environment, command, annotations and resources; one podctl cannot
/// apply fails the creation, naming what it was.
async fn adjustments(
    rt: &mut RuntimeServiceClient<Channel>,
    p: &Plugin,
    sb: &str,
    pod: &proto::PodSandboxConfig,
    image: &str,
) {
    let a = api::ContainerAdjustment {
        env: vec![
            api::KeyValue {
                key: "FROM_NRI".into(),
                value: "yes".into(),
            },
            api::KeyValue {
                key: "-GREETING".into(),
                value: String::new(),
            },
        ],
        annotations: [("nri.example/added".to_string(), "1".to_string())].into(),
        args: vec![
            "sh".into(),
            "-c".into(),
            "echo adjusted; exec sleep 3601".into(),
        ],
        linux: Some(api::LinuxContainerAdjustment {
            resources: Some(api::LinuxResources {
                memory: Some(api::LinuxMemory {
                    limit: Some(api::OptionalInt64 { value: 96 << 20 }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    seen(&p.seen).adjust = Some(("adjusted".into(), a));
    let id = run_container(
        rt,
        sb,
        pod,
        container_config("adjusted", image, "sleep 3600"),
    )
    .await;
    let (code, out) = common::exec_sh(
        rt,
        &id,
        "echo ${FROM_NRI}-${GREETING:-unset}; cat /proc/1/cmdline | tr '\\0' ' '",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out, "yes-unset\nsleep 3601 ",
        "the environment and command as adjusted"
    );
    let st = ok(rt
        .container_status(proto::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await)
    .into_inner()
    .status
    .unwrap_or_default();
    assert_eq!(
        st.annotations.get("nri.example/added").map(String::as_str),
        Some("1")
    );
    assert_eq!(
        st.resources
            .and_then(|r| r.linux)
            .map(|l| l.memory_limit_in_bytes),
        Some(96 << 20)
    );
    let (_, limit) = common::exec_sh(
        rt,
        &id,
        "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes",
    )
    .await;
    assert_eq!(
        limit.trim(),
        (96u64 << 20).to_string(),
        "the cgroup's limit"
    );
    ok(rt
        .remove_container(proto::RemoveContainerRequest { container_id: id })
        .await);

    // OCI hooks are not podctl's to run: the creation fails, saying so,
    // and the plugin hears the container is gone.
    let hooks = api::ContainerAdjustment {
        hooks: Some(vec![]),
        ..Default::default()
    };
    seen(&p.seen).adjust = Some(("hooked".into(), hooks));
    let e = rt
        .create_container(proto::CreateContainerRequest {
            pod_sandbox_id: sb.into(),
            config: Some(container_config("hooked", image, "sleep 3600")),
            sandbox_config: Some(pod.clone()),
        })
        .await
        .err()
        .unwrap_or_else(|| panic!("a container with OCI hooks was created"));
    assert!(
        e.message()
            .contains("adjusts hooks, which podctl does not apply"),
        "{e}"
    );
    let hooked = seen(&p.seen)
        .events
        .iter()
        .rev()
        .find(|(m, _, c)| m == "CreateContainer" && c.name == "hooked")
        .map(|(_, _, c)| c.id.clone())
        .unwrap_or_default();
    assert_eq!(p.about(&hooked), ["CreateContainer", "RemoveContainer"]);
    seen(&p.seen).adjust = None;
}
