//! CRI benchmark in the manner of `critest -benchmark`: the same tonic
//! client times each RuntimeService/ImageService call against `podctl
//! serve` and, when `containerd` (with its CRI plugin) and `runc` are
//! installed, against a private containerd started for the run; prints
//! medians, 90th percentiles, the podctl/containerd ratio, and the resident
//! memory of each daemon and of the per-pod monitors; then the density
//! (`density.rs`): 100 pods started by 4 clients at once, their processes
//! and memory, list calls over them, and the teardown.
//!
//! ```text
//! cargo build --release -p podctl -p podctl-shim
//! cargo bench -p podctl-cri --bench cri            # as root
//! PODCTL_BENCH_RUNS=50 cargo bench -p podctl-cri --bench cri
//! PODCTL_BENCH_PODS=110 cargo bench -p podctl-cri --bench cri  # density
//! ```
//!
//! Both daemons pull critest's images (rebuilt from Debian packages, see
//! `podctl_tests::critest_images`) from a registry on 127.0.0.1 through a
//! `registry.k8s.io` mirror, and use the same CNI bridge configuration.

mod daemons;
mod density;
mod ops;

use std::time::Duration;

use podctl_tests::critest_images;
use podctl_tests::registry::Registry;

fn main() {
    if let Err(e) = run() {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let runs: usize = std::env::var("PODCTL_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let reg = Registry::start()?;
    critest_images::publish(&reg)?;
    let host = reg.host();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let pods: usize = std::env::var("PODCTL_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let podctl = daemons::start_podctl(&host)?;
    println!("podctl: {} ({})", podctl.binary, podctl.socket.display());
    let ours = rt.block_on(ops::measure(&podctl, runs))?;
    let our_density = rt.block_on(density::measure(&podctl, pods))?;
    drop(podctl);

    let theirs = match daemons::start_containerd(&host) {
        Ok(Some(d)) => {
            println!("containerd: {} ({})", d.binary, d.socket.display());
            let r = rt.block_on(ops::measure(&d, runs));
            let dens = rt.block_on(density::measure(&d, pods));
            drop(d);
            Some((r?, dens?))
        }
        Ok(None) => {
            println!("containerd: not installed (containerd and runc on PATH); no comparison");
            None
        }
        Err(e) => {
            println!("containerd: could not start: {e}");
            None
        }
    };
    ops::report(&ours, theirs.as_ref().map(|t| &t.0), runs);
    density::report(&our_density, theirs.as_ref().map(|t| &t.1));
    std::thread::sleep(Duration::from_millis(100));
    drop(reg);
    Ok(())
}
