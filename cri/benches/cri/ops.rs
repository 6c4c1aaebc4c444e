//! Timing each CRI call with one client, and the report.

use std::path::Path;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use podctl_cri::proto;
use podctl_cri::proto::image_service_client::ImageServiceClient;
use podctl_cri::proto::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::daemons::Daemon;

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const IMAGE: &str = "registry.k8s.io/e2e-test-images/busybox:1.29-2";
/// Ends at once on SIGTERM, so StopContainer measures the runtime, not a
/// grace period.
const SCRIPT: &str = "trap 'exit 0' TERM; sleep 3600 & wait";
const PULLS: usize = 5;
/// Times each status and list call is asked per pod.
const REPEAT: usize = 10;

/// Durations per operation, in the order first measured.
pub struct Figures {
    pub name: &'static str,
    pub ops: Vec<(&'static str, Vec<Duration>)>,
    pub daemon_rss_kib: u64,
    pub monitors_rss_kib: u64,
    /// Each monitor process: `exe subcommand`.
    pub monitors: Vec<String>,
}

impl Figures {
    fn new(name: &'static str) -> Self {
        Figures {
            name,
            ops: Vec::new(),
            daemon_rss_kib: 0,
            monitors_rss_kib: 0,
            monitors: Vec::new(),
        }
    }

    fn add(&mut self, op: &'static str, d: Duration) {
        match self.ops.iter_mut().find(|(n, _)| *n == op) {
            Some((_, v)) => v.push(d),
            None => self.ops.push((op, vec![d])),
        }
    }

    fn get(&self, op: &str) -> Option<&[Duration]> {
        self.ops
            .iter()
            .find(|(n, _)| *n == op)
            .map(|(_, v)| v.as_slice())
    }
}

pub async fn channel(socket: &Path) -> Result<Channel> {
    let path = socket.to_path_buf();
    Ok(Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await?)
}

/// Time one call, recording it under `op`.
macro_rules! timed {
    ($f:expr, $op:expr, $call:expr) => {{
        let t = Instant::now();
        let r = $call.await.map_err(|e| format!("{}: {e}", $op))?;
        $f.add($op, t.elapsed());
        r.into_inner()
    }};
}

fn image_spec() -> Option<proto::ImageSpec> {
    Some(proto::ImageSpec {
        image: IMAGE.into(),
        ..Default::default()
    })
}

fn sandbox(i: usize, logs: &Path) -> proto::PodSandboxConfig {
    proto::PodSandboxConfig {
        metadata: Some(proto::PodSandboxMetadata {
            name: format!("bench-{i}"),
            uid: format!("bench-uid-{i}"),
            namespace: "bench".into(),
            attempt: 0,
        }),
        log_directory: logs.join(i.to_string()).display().to_string(),
        ..Default::default()
    }
}

fn container() -> proto::ContainerConfig {
    proto::ContainerConfig {
        metadata: Some(proto::ContainerMetadata {
            name: "c".into(),
            attempt: 0,
        }),
        image: image_spec(),
        command: vec!["sh".into(), "-c".into(), SCRIPT.into()],
        log_path: "c.log".into(),
        ..Default::default()
    }
}

pub async fn measure(d: &Daemon, runs: usize) -> Result<Figures> {
    let ch = channel(&d.socket).await?;
    let mut rt = RuntimeServiceClient::new(ch.clone());
    let mut img = ImageServiceClient::new(ch);
    let mut f = Figures::new(d.name);
    for _ in 0..PULLS {
        let _ = img
            .remove_image(proto::RemoveImageRequest {
                image: image_spec(),
            })
            .await;
        timed!(
            f,
            "PullImage",
            img.pull_image(proto::PullImageRequest {
                image: image_spec(),
                ..Default::default()
            })
        );
    }
    let logs = d.dir.path().join("logs");
    for i in 0..runs {
        let pod = start_pod(&mut rt, &mut f, i, &logs).await?;
        // Queries are cheap and asked often (a kubelet's relist every
        // second): each is timed REPEAT times per pod, so their figures
        // rest on many samples, not on the first (cold) answer alone.
        for _ in 0..REPEAT {
            queries(&mut rt, &mut img, &mut f, &pod).await?;
        }
        timed!(
            f,
            "ExecSync",
            rt.exec_sync(proto::ExecSyncRequest {
                container_id: pod.1.clone(),
                cmd: vec!["true".into()],
                timeout: 10,
            })
        );
        timed!(
            f,
            "ContainerStats",
            rt.container_stats(proto::ContainerStatsRequest {
                container_id: pod.1.clone(),
            })
        );
        remove_pod(&mut rt, &mut f, &pod).await?;
    }
    // Memory with one pod and one container running.
    let pod = start_pod(&mut rt, &mut Figures::new(""), runs, &logs).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    f.daemon_rss_kib = rss_kib(d.child.id());
    for pid in monitors_of(d) {
        let args = cmdline(pid);
        let exe = args
            .first()
            .map(|a| a.rsplit('/').next().unwrap_or(a))
            .unwrap_or("?");
        f.monitors.push(format!(
            "{exe} {}",
            args.get(1).map(String::as_str).unwrap_or("")
        ));
        f.monitors_rss_kib += rss_kib(pid);
    }
    remove_pod(&mut rt, &mut Figures::new(""), &pod).await?;
    Ok(f)
}

fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The daemon's monitor processes (their command lines name its
/// directory).
pub fn monitors_of(d: &Daemon) -> Vec<u32> {
    let dir = d.dir.path().display().to_string();
    processes_named(d.monitors)
        .into_iter()
        .filter(|p| cmdline(*p).iter().any(|a| a.contains(&dir)))
        .collect()
}

/// [`start_pod`] untimed, with the error as text (for spawned clients).
pub async fn run_pod(
    rt: &mut RuntimeServiceClient<Channel>,
    i: usize,
    logs: &Path,
) -> std::result::Result<(String, String), String> {
    let mut f = Figures::new("");
    match start_pod(rt, &mut f, i, logs).await {
        Ok(p) => Ok(p),
        Err(e) => Err(format!("pod {i}: {e}")),
    }
}

/// Run a sandbox and start one container in it: (sandbox, container).
async fn start_pod(
    rt: &mut RuntimeServiceClient<Channel>,
    f: &mut Figures,
    i: usize,
    logs: &Path,
) -> Result<(String, String)> {
    let config = sandbox(i, logs);
    std::fs::create_dir_all(&config.log_directory)?;
    let t0 = Instant::now();
    let sb = timed!(
        f,
        "RunPodSandbox",
        rt.run_pod_sandbox(proto::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
    )
    .pod_sandbox_id;
    let c = timed!(
        f,
        "CreateContainer",
        rt.create_container(proto::CreateContainerRequest {
            pod_sandbox_id: sb.clone(),
            config: Some(container()),
            sandbox_config: Some(config),
        })
    )
    .container_id;
    timed!(
        f,
        "StartContainer",
        rt.start_container(proto::StartContainerRequest {
            container_id: c.clone(),
        })
    );
    f.add("pod from scratch", t0.elapsed());
    Ok((sb, c))
}

/// Start a second container, `extra`, in pod `i` (untimed); its ID.
pub async fn add_container(
    rt: &mut RuntimeServiceClient<Channel>,
    sb: &str,
    i: usize,
    logs: &Path,
) -> std::result::Result<String, String> {
    let mut config = container();
    config.metadata = Some(proto::ContainerMetadata {
        name: "extra".into(),
        attempt: 0,
    });
    config.log_path = "extra.log".into();
    let c = rt
        .create_container(proto::CreateContainerRequest {
            pod_sandbox_id: sb.to_string(),
            config: Some(config),
            sandbox_config: Some(sandbox(i, logs)),
        })
        .await
        .map_err(|e| format!("CreateContainer extra in pod {i}: {e}"))?
        .into_inner()
        .container_id;
    rt.start_container(proto::StartContainerRequest {
        container_id: c.clone(),
    })
    .await
    .map_err(|e| format!("StartContainer extra in pod {i}: {e}"))?;
    Ok(c)
}

/// Stop and remove a container (untimed).
pub async fn drop_container(
    rt: &mut RuntimeServiceClient<Channel>,
    c: &str,
) -> std::result::Result<(), String> {
    rt.stop_container(proto::StopContainerRequest {
        container_id: c.to_string(),
        timeout: 0,
    })
    .await
    .map_err(|e| format!("StopContainer {c}: {e}"))?;
    rt.remove_container(proto::RemoveContainerRequest {
        container_id: c.to_string(),
    })
    .await
    .map_err(|e| format!("RemoveContainer {c}: {e}"))?;
    Ok(())
}

/// The status and list calls, once each.
async fn queries(
    rt: &mut RuntimeServiceClient<Channel>,
    img: &mut ImageServiceClient<Channel>,
    f: &mut Figures,
    (sb, c): &(String, String),
) -> Result<()> {
    timed!(
        f,
        "ContainerStatus",
        rt.container_status(proto::ContainerStatusRequest {
            container_id: c.clone(),
            verbose: false,
        })
    );
    timed!(
        f,
        "PodSandboxStatus",
        rt.pod_sandbox_status(proto::PodSandboxStatusRequest {
            pod_sandbox_id: sb.clone(),
            verbose: false,
        })
    );
    timed!(
        f,
        "ListContainers",
        rt.list_containers(proto::ListContainersRequest::default())
    );
    timed!(
        f,
        "ListPodSandbox",
        rt.list_pod_sandbox(proto::ListPodSandboxRequest::default())
    );
    timed!(
        f,
        "ImageStatus",
        img.image_status(proto::ImageStatusRequest {
            image: image_spec(),
            verbose: false,
        })
    );
    timed!(
        f,
        "ListImages",
        img.list_images(proto::ListImagesRequest::default())
    );
    Ok(())
}

async fn remove_pod(
    rt: &mut RuntimeServiceClient<Channel>,
    f: &mut Figures,
    (sb, c): &(String, String),
) -> Result<()> {
    timed!(
        f,
        "StopContainer",
        rt.stop_container(proto::StopContainerRequest {
            container_id: c.clone(),
            timeout: 10,
        })
    );
    timed!(
        f,
        "RemoveContainer",
        rt.remove_container(proto::RemoveContainerRequest {
            container_id: c.clone(),
        })
    );
    timed!(
        f,
        "StopPodSandbox",
        rt.stop_pod_sandbox(proto::StopPodSandboxRequest {
            pod_sandbox_id: sb.clone(),
        })
    );
    timed!(
        f,
        "RemovePodSandbox",
        rt.remove_pod_sandbox(proto::RemovePodSandboxRequest {
            pod_sandbox_id: sb.clone(),
        })
    );
    Ok(())
}

pub fn rss_kib(pid: u32) -> u64 {
    proc_kib(pid, "status", "VmRSS:")
}

/// A `<key> <n> kB` line of `/proc/<pid>/<file>`, in KiB (0 if absent).
pub fn proc_kib(pid: u32, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// PIDs whose executable's file name is one of `names`.
fn processes_named(names: &[&str]) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let exe = std::fs::read_link(e.path().join("exe")).unwrap_or_default();
        let file = exe.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if names.contains(&file) {
            out.push(pid);
        }
    }
    out
}

pub fn pct(v: &[Duration], p: usize) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s.get((s.len() * p / 100).min(s.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

pub fn report(ours: &Figures, theirs: Option<&Figures>, runs: usize) {
    println!();
    println!(
        "CRI calls, milliseconds ({runs} pods; {PULLS} pulls of {IMAGE}; status and list calls {REPEAT} times per pod):"
    );
    let other = theirs.map(|t| t.name).unwrap_or("-");
    println!(
        "{:<18} {:>10} {:>10} {:>12} {:>12} {:>8}",
        "operation",
        "podctl p50",
        "p90",
        format!("{other} p50"),
        "p90",
        "ratio"
    );
    for (op, v) in &ours.ops {
        let (o50, o90) = (pct(v, 50), pct(v, 90));
        let (t50, t90, ratio) = match theirs.and_then(|t| t.get(op)) {
            Some(tv) => {
                let (a, b) = (pct(tv, 50), pct(tv, 90));
                let r = o50.as_secs_f64() / a.as_secs_f64().max(1e-9);
                (ms(a), ms(b), format!("{r:.2}x"))
            }
            None => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "{op:<18} {:>10} {:>10} {t50:>12} {t90:>12} {ratio:>8}",
            ms(o50),
            ms(o90)
        );
    }
    println!();
    println!("resident memory with one pod running one container:");
    for f in std::iter::once(ours).chain(theirs) {
        println!(
            "  {:<11} daemon {:>7} KiB   monitors {:>6} KiB: {}",
            f.name,
            f.daemon_rss_kib,
            f.monitors_rss_kib,
            f.monitors.join(", ")
        );
    }
    println!("  (ratio < 1: podctl faster; podctl's monitors include its pause process)");
}
