//! Pull + unpack benchmark: a ~200 MB, five-layer image from a local
//! registry, podctl against containerd (`ctr`) when containerd is installed.
//!
//! Run: `cargo bench -p podctl-tests --bench pull` (as root). Prints the
//! median of a few runs, the throughput and the ratio to containerd.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use podctl_images::{PullOptions, Puller, RegistryClient, RegistryConfig, Store};
use podctl_tests::fixtures;
use podctl_tests::push::Pusher;
use podctl_tests::registry::Registry;

const RUNS: usize = 3;

fn main() {
    if let Err(e) = run() {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let size: usize = std::env::var("PODCTL_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200 << 20);
    let t = Instant::now();
    let img = fixtures::big(size);
    let compressed: usize = img.layers.iter().map(|l| l.blob.len()).sum();
    println!(
        "image: {} layers, {:.1} MB uncompressed, {:.1} MB compressed (built in {:.1}s)",
        img.layers.len(),
        size as f64 / 1e6,
        compressed as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let reg = Registry::start()?;
    Pusher::new(&reg.url(), None).image("bench/big", "v1", &img)?;
    let reference = format!("{}/bench/big:v1", reg.host());

    let mut podctl = Vec::new();
    for _ in 0..RUNS {
        let dir = tempfile::tempdir()?;
        podctl.push(podctl_pull(dir.path(), &reference)?);
    }
    let p = median(&mut podctl);
    println!(
        "podctl     pull+unpack: median {:.3}s of {RUNS} ({:.1} MB/s compressed, {:.1} MB/s unpacked)",
        p.as_secs_f64(),
        compressed as f64 / 1e6 / p.as_secs_f64(),
        size as f64 / 1e6 / p.as_secs_f64()
    );

    if which("containerd") && which("ctr") {
        let mut ctrd = Vec::new();
        for _ in 0..RUNS {
            ctrd.push(containerd_pull(&reference)?);
        }
        let c = median(&mut ctrd);
        println!(
            "containerd pull+unpack: median {:.3}s of {RUNS} ({:.1} MB/s compressed)",
            c.as_secs_f64(),
            compressed as f64 / 1e6 / c.as_secs_f64()
        );
        println!(
            "ratio: podctl is {:.2}x containerd's throughput (goal >= 1.5x)",
            c.as_secs_f64() / p.as_secs_f64()
        );
    } else {
        println!("containerd: not installed (apt-get install containerd to compare)");
    }
    Ok(())
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn which(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn podctl_pull(root: &Path, reference: &str) -> Result<Duration, Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let store = Arc::new(Store::open(root)?);
    let client = Arc::new(RegistryClient::new(RegistryConfig::default())?);
    let puller = Puller::new(store, client);
    let t = Instant::now();
    rt.block_on(puller.pull(reference, &PullOptions::default()))?;
    Ok(t.elapsed())
}

/// A private containerd (own root, state and socket), stopped on drop.
struct Containerd {
    child: Child,
    sock: String,
    _dir: tempfile::TempDir,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let root = self._dir.path().join("root");
        // Snapshots may still be mounted read-only by nothing; unmount leftovers.
        let _ = Command::new("sh")
            .args([
                "-c",
                &format!(
                    "grep -o '{}[^ ]*' /proc/mounts | xargs -r umount",
                    root.display()
                ),
            ])
            .status();
    }
}

fn start_containerd() -> Result<Containerd, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("containerd.sock").display().to_string();
    let cfg = format!(
        "version = 2\nroot = \"{}\"\nstate = \"{}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{sock}\"\n",
        dir.path().join("root").display(),
        dir.path().join("state").display()
    );
    let cfg_path = dir.path().join("config.toml");
    std::fs::write(&cfg_path, cfg)?;
    let log = std::fs::File::create(dir.path().join("containerd.log"))?;
    let child = Command::new("containerd")
        .arg("--config")
        .arg(&cfg_path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let c = Containerd {
        child,
        sock,
        _dir: dir,
    };
    for _ in 0..200 {
        let ok = Command::new("ctr")
            .args(["--address", &c.sock, "version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return Ok(c);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("containerd did not start".into())
}

fn containerd_pull(reference: &str) -> Result<Duration, Box<dyn std::error::Error>> {
    let c = start_containerd()?;
    let t = Instant::now();
    let out = Command::new("ctr")
        .args([
            "--address",
            &c.sock,
            "-n",
            "bench",
            "images",
            "pull",
            "--plain-http",
            reference,
        ])
        .stdout(Stdio::null())
        .output()?;
    let elapsed = t.elapsed();
    if !out.status.success() {
        return Err(format!("ctr pull: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(elapsed)
}
