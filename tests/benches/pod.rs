//! Pod lifecycle benchmark: run sandbox (pause + CNI bridge) + create +
//! start a busybox container, then stop + remove both; median of 20. Also
//! prints the monitor's resident memory for a running container.
//!
//! Run: `cargo bench -p podctl-tests --bench pod` (as root). With
//! `--release` shim binaries (`cargo build --release -p podctl-shim`) the
//! monitor figure is the one to compare with the 2 MiB goal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use podctl_images::{PullOptions, Puller, RegistryClient, RegistryConfig, Store};
use podctl_runtime::{CniConfig, ContainerConfig, Runtime, RuntimeConfig, SandboxConfig};
use podctl_tests::fixtures::publish;
use podctl_tests::registry::Registry;

const RUNS: usize = 20;

fn main() {
    if let Err(e) = run() {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let reg = Registry::start()?;
    let pubd = publish(&reg, None)?;
    let dir = tempfile::tempdir()?;
    let store = Arc::new(Store::open(dir.path().join("images"))?);
    let puller = Puller::new(
        store.clone(),
        Arc::new(RegistryClient::new(RegistryConfig::default())?),
    );
    let rec = tokio::runtime::Runtime::new()?
        .block_on(puller.pull(&pubd.busybox, &PullOptions::default()))?;
    let lowers = store.layer_dirs(&rec)?;

    let bridge = podctl_tests::unique_name("podctl-b");
    let conf_dir = podctl_tests::write_bridge_conflist(
        dir.path(),
        "podctl-bench",
        &bridge,
        &podctl_tests::free_subnet(std::process::id())?,
        false,
    )?;
    let shim = std::env::var_os("PODCTL_SHIM")
        .map(Into::into)
        .unwrap_or_else(|| podctl_tests::workspace_bin("podctl-shim"));
    println!("shim: {}", std::path::Path::new(&shim).display());
    let rt = Runtime::new(RuntimeConfig {
        state_dir: dir.path().join("run"),
        root_dir: dir.path().join("lib"),
        shim: Some(shim),
        cgroup_parent: "/podctl-bench".into(),
        cni: Some(CniConfig {
            conf_dir,
            bin_dirs: vec!["/usr/lib/cni".into()],
        }),
        ..Default::default()
    })?;
    let cfg = |script: &str| ContainerConfig {
        name: "c".into(),
        lower_dirs: lowers.clone(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        log_path: dir.path().join("logs/c.log"),
        ..Default::default()
    };

    let mut times = Vec::new();
    for i in 0..RUNS {
        let t = Instant::now();
        let sb = rt.run_sandbox(SandboxConfig {
            name: format!("bench-{i}"),
            namespace: "default".into(),
            ..Default::default()
        })?;
        let id = rt.create_container(&sb.id, cfg("exec sleep 60"))?;
        rt.start_container(&id)?;
        rt.stop_container(&id, Duration::from_secs(0))?;
        rt.remove_container(&id)?;
        rt.remove_sandbox(&sb.id)?;
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "pod create+start+stop+remove (1 busybox container, CNI bridge): median {:.1} ms, min {:.1} ms, max {:.1} ms over {RUNS}",
        times[RUNS / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[RUNS - 1].as_secs_f64() * 1e3
    );

    let sb = rt.run_sandbox(SandboxConfig {
        name: "rss".into(),
        namespace: "default".into(),
        ..Default::default()
    })?;
    let id = rt.create_container(&sb.id, cfg("exec sleep 60"))?;
    rt.start_container(&id)?;
    std::thread::sleep(Duration::from_millis(300));
    let mon = std::fs::read_to_string(dir.path().join(format!("run/containers/{id}/monitor.pid")))
        .or_else(|_| {
            std::fs::read_to_string(dir.path().join(format!("lib/containers/{id}/monitor.pid")))
        })
        .unwrap_or_default();
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", mon.trim())).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .unwrap_or("VmRSS: unknown");
    println!(
        "monitor (pid {}): {}",
        mon.trim(),
        rss.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
    );
    rt.stop_container(&id, Duration::from_secs(0))?;
    rt.remove_container(&id)?;
    rt.remove_sandbox(&sb.id)?;
    let _ = std::process::Command::new("ip")
        .args(["link", "del", &bridge])
        .status();
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        for c in rd.flatten() {
            let _ = std::fs::remove_dir(c.path().join("podctl-bench"));
        }
    }
    Ok(())
}
