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
/// Each list call is timed this many times with every pod running
/// (`PODCTL_BENCH_LISTS`; more to profile the daemon meanwhile).
fn lists() -> usize {
    std::env::var("PODCTL_BENCH_LISTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

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
    /// What a second container in every pod added to those processes
    /// (count and PSS, summed over the pods).
    pub extra_processes: isize,
    pub extra_pss_kib: i64,
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
                mine.push((1000 + i, ops::run_pod(&mut rt, 1000 + i, &logs).await?));
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
    let set = footprint(d, &mut rt, &started).await?;
    let pss_kib: u64 = set.iter().map(|p| pss_kib(*p)).sum();
    let mut list_containers = Vec::new();
    let mut list_sandboxes = Vec::new();
    for _ in 0..lists() {
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

    // A second container in every pod: what it adds besides its own
    // processes. Removed again before the timed teardown.
    let mut tasks = Vec::new();
    for chunk in started.chunks(pods.div_ceil(CLIENTS).max(1)) {
        let mut rt = RuntimeServiceClient::new(ch.clone());
        let (chunk, logs) = (chunk.to_vec(), logs.clone());
        tasks.push(tokio::spawn(async move {
            let mut extra = Vec::new();
            for (i, (sb, _)) in &chunk {
                extra.push(ops::add_container(&mut rt, sb, *i, &logs).await?);
            }
            Ok::<_, String>(extra)
        }));
    }
    let mut extra = Vec::new();
    for t in tasks {
        extra.extend(t.await.map_err(|e| e.to_string())??);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let set2 = footprint(d, &mut rt, &started).await?;
    let pss2: u64 = set2.iter().map(|p| self::pss_kib(*p)).sum();
    let extra_processes = set2.len() as isize - set.len() as isize;
    let extra_pss_kib = pss2 as i64 - pss_kib as i64;
    let mut tasks = Vec::new();
    for chunk in extra.chunks(pods.div_ceil(CLIENTS).max(1)) {
        let mut rt = RuntimeServiceClient::new(ch.clone());
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            for c in &chunk {
                ops::drop_container(&mut rt, c).await?;
            }
            Ok::<_, String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }

    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for chunk in started.chunks(pods.div_ceil(CLIENTS).max(1)) {
        let mut rt = RuntimeServiceClient::new(ch.clone());
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            for (_, pod) in &chunk {
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
        extra_processes,
        extra_pss_kib,
        daemon_rss_kib,
        list_containers,
        list_sandboxes,
    })
}

/// The pods' monitors and sandbox processes (with their children).
async fn footprint(
    d: &Daemon,
    rt: &mut RuntimeServiceClient<Channel>,
    started: &[(usize, (String, String))],
) -> Result<BTreeSet<u32>> {
    let mut set: BTreeSet<u32> = ops::monitors_of(d).into_iter().collect();
    for (_, (sb, _)) in started {
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
    Ok(set)
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
    println!("a second container in every pod adds, per pod:");
    println!("{:<11} {:>10} {:>9}", "daemon", "processes", "PSS KiB");
    for f in std::iter::once(ours).chain(theirs) {
        let n = f.pods.max(1) as f64;
        println!(
            "{:<11} {:>10.2} {:>9.0}",
            f.name,
            f.extra_processes as f64 / n,
            f.extra_pss_kib as f64 / n
        );
    }
}
