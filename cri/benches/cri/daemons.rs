//! The two daemons under test, each over its own temporary directories,
//! socket, CNI bridge and subnet, stopped (SIGTERM, by PID) on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use podctl_tests::critest_images;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

pub struct Daemon {
    pub name: &'static str,
    pub binary: String,
    pub socket: PathBuf,
    pub child: Child,
    /// Executable names of the per-pod/per-container monitor processes.
    pub monitors: &'static [&'static str],
    pub dir: tempfile::TempDir,
    bridge: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

/// A bridge conflist on a /24 no route or address of this host uses
/// (`seed` keeps the two daemons of one run apart).
fn conflist(dir: &Path, bridge: &str, seed: u32) -> Result<PathBuf> {
    let subnet = podctl_tests::free_subnet(seed)?;
    Ok(podctl_tests::write_bridge_conflist(
        dir,
        &format!("bench-{bridge}"),
        bridge,
        &subnet,
        true,
    )?)
}

fn wait_socket(socket: &Path, child: &mut Child, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        if let Ok(Some(st)) = child.try_wait() {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            return Err(format!("exited ({st}) before serving: {tail}").into());
        }
        if Instant::now() > deadline {
            return Err(format!("no socket {} after 30 s", socket.display()).into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// `podctl serve` from the bench's own target directory.
pub fn start_podctl(registry: &str) -> Result<Daemon> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let bridge = podctl_tests::unique_name("pbench");
    let cni = conflist(d, &bridge, std::process::id())?;
    let socket = d.join("podctl.sock");
    let config = format!(
        "socket = \"{}\"\nroot = \"{}\"\nstate = \"{}\"\ncgroup_parent = \"/podctl-bench\"\nlog_level = \"warn\"\n\n[cni]\nconf_dir = \"{}\"\nbin_dirs = [\"/usr/lib/cni\", \"/opt/cni/bin\"]\n\n{}",
        socket.display(),
        d.join("root").display(),
        d.join("state").display(),
        cni.display(),
        critest_images::podctl_registry_toml(registry),
    );
    std::fs::write(d.join("podctl.toml"), config)?;
    let binary = podctl_tests::workspace_bin("podctl");
    let log = d.join("daemon.log");
    let mut child = Command::new(&binary)
        .arg("serve")
        .arg("--config")
        .arg(d.join("podctl.toml"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    wait_socket(&socket, &mut child, &log)?;
    Ok(Daemon {
        name: "podctl",
        binary: binary.display().to_string(),
        socket,
        child,
        monitors: &["podctl-shim", "podctl-shim-watch"],
        dir,
        bridge,
    })
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// A private containerd with its CRI plugin, or `None` when containerd or
/// runc is not installed.
pub fn start_containerd(registry: &str) -> Result<Option<Daemon>> {
    let (Some(binary), Some(_)) = (on_path("containerd"), on_path("runc")) else {
        return Ok(None);
    };
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let bridge = format!("cbench{}", std::process::id() % 1000);
    let cni = conflist(d, &bridge, std::process::id() + 1)?;
    let socket = d.join("containerd.sock");
    let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
    let mut config = format!(
        "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\n[grpc]\naddress = \"{sock}\"\n\n[ttrpc]\naddress = \"{sock}.ttrpc\"\n\n\
         [{cri}]\nsandbox_image = \"registry.k8s.io/pause:3.9\"\n\
         # no CAP_SYS_RESOURCE here: scores below containerd's own fail\n\
         restrict_oom_score_adj = true\n\n\
         [{cri}.cni]\nbin_dir = \"/usr/lib/cni\"\nconf_dir = \"{cni}\"\n\n\
         [{cri}.containerd.runtimes.runc]\nruntime_type = \"io.containerd.runc.v2\"\n\n",
        root = d.join("root").display(),
        state = d.join("state").display(),
        sock = socket.display(),
        cni = cni.display(),
    );
    for upstream in critest_images::UPSTREAM_HOSTS {
        config.push_str(&format!(
            "[{cri}.registry.mirrors.\"{upstream}\"]\nendpoint = [\"http://{registry}\"]\n\n"
        ));
    }
    std::fs::write(d.join("config.toml"), config)?;
    let log = d.join("containerd.log");
    let mut child = Command::new(&binary)
        .arg("--config")
        .arg(d.join("config.toml"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    wait_socket(&socket, &mut child, &log)?;
    Ok(Some(Daemon {
        name: "containerd",
        binary: binary.display().to_string(),
        socket,
        child,
        monitors: &["containerd-shim-runc-v2", "containerd-shim"],
        dir,
        bridge,
    }))
}
