//! Density: many pods (a sandbox and one busybox container each) started
//! through the CRI by several clients at once, as a kubelet starting a
//! full node does; then what they cost while running and how long the
//! teardown takes.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use podctl_cri::proto;
use podctl_cri::proto::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use crate::daemons::Daemon;
use crate::ops::{self, Result};

/// Concurrent CRI clients.
pub const CLIENTS: usize = 4;
/// Each list call is timed this many times with every pod running.
const LISTS: usize = 10;

pub struct Density {
    pub name: &'static str,
    pub pods: usize,
    pub start: Duration,
    pub teardown: Duration,
    /// Processes that exist for the pods besides their containers'
    /// workloads: monitors and the sandbox's process (with its children).
    pub processes: usize,
    /// Proportional set size of those processes, summed.
    pub pss_kib: u64,
    pub daemon_rss_kib: u64,
    pub list_containers: Vec<Duration>,
    pub list_sandboxes: Vec<Duration>,
}

/// Start `pods` pods with [`CLIENTS`] clients, measure, tear them down.
pub async fn measure(d: &Daemon, pods: usize) -> Result<Density> {
    let ch = ops::channel(&d.socket).await?;
    let logs = d.dir.path().join("density-logs");
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let mut rt = RuntimeServiceClient::new(ch.clone());
        let logs = logs.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in (client..pods).step_by(CLIENTS) {
                mine.push(ops::run_pod(&mut rt, 1000 + i, &logs).await?);
            }
            Ok::<_, String>(mine)
        }));
    }
    let mut started = Vec::new();
    for t in tasks {
        started.extend(t.await.map_err(|e| e.to_string())??);
    }
    let start = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut rt = RuntimeServiceClient::new(ch.clone());
    let mut set = BTreeSet::new();
    for m in ops::monitors_of(d) {
        set.insert(m);
    }
    for (sb, _) in &started {
        let st = rt
            .pod_sandbox_status(proto::PodSandboxStatusRequest {
                pod_sandbox_id: sb.clone(),
                verbose: true,
            })
            .await?
            .into_inner();
        if let Some(pid) = st.info.get("info").and_then(|i| sandbox_pid(i)) {
            set.insert(pid);
            set.extend(descendants(pid));
        }
    }
    let pss_kib = set.iter().map(|p| pss_kib(*p)).sum();
    let mut list_containers = Vec::new();
    let mut list_sandboxes = Vec::new();
    for _ in 0..LISTS {
        let t = Instant::now();
        let n = rt
            .list_containers(proto::ListContainersRequest::default())
            .await?
            .into_inner()
            .containers
            .len();
        list_containers.push(t.elapsed());
        if n != pods {
            return Err(format!("{}: {n} containers listed, {pods} started", d.name).into());
        }
        let t = Instant::now();
        rt.list_pod_sandbox(proto::ListPodSandboxRequest::default())
            .await?;
        list_sandboxes.push(t.elapsed());
    }
    let daemon_rss_kib = ops::rss_kib(d.child.id());

    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for chunk in started.chunks(pods.div_ceil(CLIENTS).max(1)) {
        let mut rt = RuntimeServiceClient::new(ch.clone());
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            for pod in &chunk {
                stop_and_remove(&mut rt, pod).await?;
            }
            Ok::<_, String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(Density {
        name: d.name,
        pods,
        start,
        teardown: t0.elapsed(),
        processes: set.len(),
        pss_kib,
        daemon_rss_kib,
        list_containers,
        list_sandboxes,
    })
}

async fn stop_and_remove(
    rt: &mut RuntimeServiceClient<Channel>,
    (sb, _): &(String, String),
) -> std::result::Result<(), String> {
    rt.stop_pod_sandbox(proto::StopPodSandboxRequest {
        pod_sandbox_id: sb.clone(),
    })
    .await
    .map_err(|e| format!("StopPodSandbox: {e}"))?;
    rt.remove_pod_sandbox(proto::RemovePodSandboxRequest {
        pod_sandbox_id: sb.clone(),
    })
    .await
    .map_err(|e| format!("RemovePodSandbox: {e}"))?;
    Ok(())
}

/// `pid` in a sandbox's verbose info (podctl and containerd both say so).
fn sandbox_pid(info: &str) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_str(info).ok()?;
    v.get("pid")?.as_u64().and_then(|p| u32::try_from(p).ok())
}

/// Every process below `pid`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let path = format!("/proc/{p}/task/{p}/children");
        for c in std::fs::read_to_string(Path::new(&path))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            out.push(c);
            todo.push(c);
        }
    }
    out
}

fn pss_kib(pid: u32) -> u64 {
    ops::proc_kib(pid, "smaps_rollup", "Pss:")
}

pub fn report(ours: &Density, theirs: Option<&Density>) {
    println!();
    println!(
        "density: {} pods (sandbox + one busybox container), {CLIENTS} clients:",
        ours.pods
    );
    println!(
        "{:<11} {:>9} {:>9} {:>10} {:>12} {:>11} {:>11} {:>11}",
        "daemon",
        "start s",
        "teardown",
        "procs/pod",
        "PSS/pod KiB",
        "daemon KiB",
        "ListCtr ms",
        "ListPod ms"
    );
    for f in std::iter::once(ours).chain(theirs) {
        let n = f.pods.max(1) as f64;
        println!(
            "{:<11} {:>9.2} {:>9.2} {:>10.2} {:>12.0} {:>11} {:>11.2} {:>11.2}",
            f.name,
            f.start.as_secs_f64(),
            f.teardown.as_secs_f64(),
            f.processes as f64 / n,
            f.pss_kib as f64 / n,
            f.daemon_rss_kib,
            ops::pct(&f.list_containers, 50).as_secs_f64() * 1e3,
            ops::pct(&f.list_sandboxes, 50).as_secs_f64() * 1e3,
        );
    }
    println!(
        "  (per pod: its monitors and its sandbox process with children, not the container's own processes;\n   \
         containerd's sandbox is critest's pause stand-in, a shell loop, heavier than the real pause)"
    );
}
