//! The README's build command, exactly as written there, into a clean
//! target directory; then a pod run from the binaries it produced alone
//! (copied into an empty directory, nothing else of the build on hand).
//!
//! It is a full release build, so it is `#[ignore]`d in `cargo test`;
//! `scripts/test.sh` runs it on its own:
//!
//! ```text
//! cargo test -p podctl-tests --test readme_build -- --ignored --nocapture
//! ```
//!
//! The target directory is `$PODCTL_README_TARGET` (emptied first) or
//! `target/readme-build`; it is kept, so the package and the VM suite can
//! use the same binaries.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use podctl_tests::fixtures::{publish, HTTPD_INDEX};
use podctl_tests::registry::Registry;

/// The binaries podctl needs.
const BINARIES: [&str; 3] = ["podctl", "podctl-shim", "podctl-shim-watch"];
/// The issue's goal for the release binary.
const PODCTL_MAX_BYTES: u64 = 40 << 20;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The shell command in the README's first ```sh block after "Build podctl".
fn readme_build_command() -> String {
    let readme =
        std::fs::read_to_string(repo().join("README.md")).unwrap_or_else(|e| panic!("{e}"));
    let after = readme
        .split_once("Build podctl")
        .map(|(_, a)| a)
        .unwrap_or_else(|| panic!("README has no \"Build podctl\""));
    let block = after
        .split_once("```sh\n")
        .and_then(|(_, b)| b.split_once("```"))
        .map(|(b, _)| b.trim().to_string())
        .unwrap_or_else(|| panic!("no sh block after \"Build podctl\""));
    assert!(
        block.contains("cargo build"),
        "not a build command: {block}"
    );
    block
}

fn podctl(bin: &Path, dir: &Path, args: &[&str]) -> (bool, String, String) {
    podctl_tests::output(
        podctl_tests::podctl_command(&bin.join("podctl"), dir)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .args(args),
    )
}

#[test]
#[ignore = "a full release build (minutes): scripts/test.sh runs it with --ignored"]
fn the_readme_build_command_gives_every_binary_and_they_run_a_pod() {
    let cmd = readme_build_command();
    let target = std::env::var_os("PODCTL_README_TARGET")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/readme-build"));
    if target.exists() {
        std::fs::remove_dir_all(&target).unwrap_or_else(|e| panic!("{e}"));
    }
    println!("readme-build: running `{cmd}` into {}", target.display());
    let t0 = Instant::now();
    let st = Command::new("bash")
        .args(["-c", &cmd])
        .current_dir(repo())
        .env("CARGO_TARGET_DIR", &target)
        .env("CARGO_TERM_COLOR", "never")
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    let took = t0.elapsed();
    assert!(st.success(), "`{cmd}`: {st}");
    println!(
        "readme-build: the README's build command took {:.0} s",
        took.as_secs_f64()
    );

    // Every binary, podctl within its size goal; copied alone elsewhere.
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bin = work.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap_or_else(|e| panic!("{e}"));
    for b in BINARIES {
        let p = target.join("release").join(b);
        let size = std::fs::metadata(&p)
            .unwrap_or_else(|e| panic!("{b} not built by `{cmd}`: {e}"))
            .len();
        println!(
            "readme-build: {b}: {size} bytes ({:.1} MiB)",
            size as f64 / (1 << 20) as f64
        );
        if b == "podctl" {
            assert!(size <= PODCTL_MAX_BYTES, "podctl is {size} bytes");
        }
        std::fs::copy(&p, bin.join(b)).unwrap_or_else(|e| panic!("{e}"));
    }

    // A pod from those binaries, over private directories and network.
    let reg = Registry::start().unwrap_or_else(|e| panic!("{e}"));
    let pubd = publish(&reg, None).unwrap_or_else(|e| panic!("{e}"));
    let dir = work.path();
    let bridge = podctl_tests::unique_name("rdme");
    let subnet = podctl_tests::free_subnet(std::process::id()).unwrap_or_else(|e| panic!("{e}"));
    podctl_tests::write_bridge_conflist(dir, "readme-build", &bridge, &subnet, false)
        .unwrap_or_else(|e| panic!("{e}"));
    let (ok, out, err) = podctl(&bin, dir, &["info"]);
    assert!(ok, "podctl info:\n{out}{err}");
    assert!(
        out.contains(&format!(
            "ok    shim             {}",
            bin.join("podctl-shim").display()
        )),
        "{out}"
    );
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\nspec:\n  containers:\n  - name: httpd\n    image: {}\n    \
         command: [httpd, -f, -p, '8080', -h, /www]\n",
        pubd.httpd
    );
    let f = dir.join("pod.yaml");
    std::fs::write(&f, manifest).unwrap_or_else(|e| panic!("{e}"));
    let t0 = Instant::now();
    let (ok, out, err) = podctl(&bin, dir, &["run", &f.display().to_string()]);
    let started = t0.elapsed();
    let cleanup = || {
        let _ = podctl(&bin, dir, &["rm", "--timeout", "0", "web"]);
        let _ = Command::new("ip").args(["link", "del", &bridge]).status();
        // The default parent cgroup, if no other pod uses it.
        for c in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_dir(c.path().join("podctl"));
        }
    };
    if !ok {
        cleanup();
        panic!("podctl run: {out}{err}");
    }
    println!(
        "readme-build: podctl run: {} in {:.1} s",
        out.trim(),
        started.as_secs_f64()
    );
    let (_, ps, _) = podctl(&bin, dir, &["ps", "-o", "json"]);
    let (ok, page, err) = podctl(&bin, dir, &["exec", "web", "--", "cat", "/www/index.html"]);
    cleanup();
    let list: serde_json::Value = serde_json::from_str(&ps).unwrap_or_else(|e| panic!("{e}: {ps}"));
    assert_eq!(list["items"][0]["image"], pubd.httpd.as_str(), "{ps}");
    assert_eq!(list["items"][0]["state"], "Running", "{ps}");
    assert!(ok, "{err}");
    assert_eq!(page.as_bytes(), HTTPD_INDEX);
    assert!(started < Duration::from_secs(60), "run took {started:?}");
}
