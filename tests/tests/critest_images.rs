//! critest's images, rebuilt from Debian packages and published to the
//! registry fixture under their upstream paths: what each spec relies on is
//! checked on what the registry serves (configs, files), by running the
//! images' programs in a chroot of their layers, and by pulling every
//! upstream reference through podctl with the generated mirror
//! configuration.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use podctl_images::RegistryConfig;
use podctl_tests::critest_images::{
    self as ci, fetch, unpack, Fetched, PublishedRef, HOSTNET_NGINX_PORT, HTTPD_INDEX, HTTPD_ROOT,
    NGINX_INDEX, NNP_ID, NOT_REPRODUCIBLE, PAUSE_SCRIPT,
};
use podctl_tests::registry::{free_port, Registry};
use serde_json::Value;

const CRI: &str = "gcr.io/k8s-staging-cri-tools";
const E2E: &str = "registry.k8s.io/e2e-test-images";

/// (reference, User, Cmd, Entrypoint, exposed port)
type Expected = (
    String,
    Option<&'static str>,
    Vec<String>,
    Vec<String>,
    Option<String>,
);

/// What critest v1.36 pulls (validation specs), and the image config each
/// spec relies on.
fn expected() -> Vec<Expected> {
    let sh = vec!["sh".to_string()];
    let none = Vec::new;
    let mut v = vec![(
        format!("{E2E}/busybox:1.29-2"),
        None,
        sh.clone(),
        none(),
        None,
    )];
    for (name, user) in [
        ("test-image-user-uid", "1002"),
        ("test-image-user-username", "www-data"),
        ("test-image-user-uid-group", "1003:1004"),
        ("test-image-user-username-group", "www-data:1004"),
        ("test-image-predefined-group", "1000"),
    ] {
        v.push((
            format!("{CRI}/{name}:latest"),
            Some(user),
            sh.clone(),
            none(),
            None,
        ));
    }
    for r in [
        "test-image-latest:latest",
        "test-image-1:latest",
        "test-image-2:latest",
        "test-image-3:latest",
        "test-image-tags:1",
        "test-image-tags:2",
        "test-image-tags:3",
        "test-image-tag:test",
        "test-image-tag:all",
    ] {
        v.push((format!("{CRI}/{r}"), None, sh.clone(), none(), None));
    }
    let pause_ep: Vec<String> = ["/bin/sh", "-c", PAUSE_SCRIPT]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for r in ["registry.k8s.io/pause:3.9", "k8s.gcr.io/pause:3.9"] {
        v.push((
            r.to_string(),
            Some("65535:65535"),
            none(),
            pause_ep.clone(),
            None,
        ));
    }
    let nginx_cmd: Vec<String> = ["nginx", "-g", "daemon off;"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.push((
        format!("{E2E}/nginx:1.14-2"),
        None,
        nginx_cmd.clone(),
        none(),
        Some("80/tcp".into()),
    ));
    v.push((
        format!("{CRI}/hostnet-nginx-amd64:latest"),
        None,
        nginx_cmd,
        none(),
        Some("12003/tcp".into()),
    ));
    v.push((
        format!("{E2E}/httpd:2.4.39-4"),
        None,
        ci::httpd_command(),
        none(),
        Some("80/tcp".into()),
    ));
    v.push((
        format!("{E2E}/nonewprivs:1.3"),
        None,
        ci::nnp_command(),
        none(),
        None,
    ));
    v
}

struct Bed {
    reg: Registry,
    published: Vec<PublishedRef>,
}

impl Bed {
    fn start() -> Bed {
        let reg = Registry::start().unwrap_or_else(|e| panic!("registry: {e}"));
        let published = ci::publish(&reg).unwrap_or_else(|e| panic!("publish: {e}"));
        Bed { reg, published }
    }

    /// `reference` as the registry serves it.
    fn fetch(&self, reference: &str) -> Fetched {
        let p = self
            .published
            .iter()
            .find(|p| p.reference == reference)
            .unwrap_or_else(|| panic!("{reference} was not published"));
        let path = p
            .local
            .strip_prefix(&format!("{}/", self.reg.host()))
            .unwrap_or(&p.local);
        let (repo, tag) = path.rsplit_once(':').unwrap_or((path, "latest"));
        let f = fetch(&self.reg.url(), repo, tag).unwrap_or_else(|e| panic!("{reference}: {e}"));
        assert_eq!(f.digest, p.digest, "{reference}: served digest");
        f
    }

    /// `reference`'s layers unpacked into a fresh directory.
    fn rootfs(&self, reference: &str) -> tempfile::TempDir {
        // Under the target directory: /tmp may be mounted nosuid.
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        unpack(&self.fetch(reference).layers, dir.path())
            .unwrap_or_else(|e| panic!("unpack {reference}: {e}"));
        dir
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Run `argv` chrooted in `root` (as `userspec` if given, with
/// no_new_privs set first if `nnp`).
fn chroot(root: &Path, userspec: Option<&str>, nnp: bool, argv: &[&str]) -> Output {
    let mut cmd = if nnp {
        let mut c = Command::new("setpriv");
        c.args(["--no-new-privs", "chroot"]);
        c
    } else {
        Command::new("chroot")
    };
    if let Some(u) = userspec {
        cmd.arg(format!("--userspec={u}"));
    }
    cmd.arg(root)
        .args(argv)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .output()
        .unwrap_or_else(|e| panic!("chroot {argv:?}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A server process chrooted in an image; SIGTERM (then SIGKILL) on drop.
struct Server(Child);

impl Server {
    fn start(root: &Path, argv: &[&str]) -> Server {
        let child = Command::new("chroot")
            .arg(root)
            .args(argv)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {argv:?}: {e}"));
        Server(child)
    }

    /// SIGTERM, then wait up to 10 s: the exit status.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let pid = libc::pid_t::try_from(self.0.id()).unwrap_or(0);
        if pid > 0 {
            // SAFETY: kill(2) on the pid of our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.0.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.stop().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// GET `url` until it answers (10 s): status and body.
fn http_get(url: &str) -> (u16, Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match reqwest::blocking::get(url).and_then(|r| {
            let s = r.status().as_u16();
            r.bytes().map(|b| (s, b.to_vec()))
        }) {
            Ok(r) => return r,
            Err(e) if Instant::now() > deadline => panic!("GET {url}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A bind mount of /dev/null over a file, undone on drop.
struct MaskedFile(PathBuf);

impl MaskedFile {
    fn new(path: PathBuf) -> MaskedFile {
        let st = Command::new("mount")
            .args(["--bind", "/dev/null"])
            .arg(&path)
            .status()
            .unwrap_or_else(|e| panic!("mount: {e}"));
        assert!(st.success(), "masking {}", path.display());
        MaskedFile(path)
    }
}

impl Drop for MaskedFile {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn publishes_every_reference_critest_pulls() {
    let bed = Bed::start();
    let host = bed.reg.host();
    let got: BTreeSet<&str> = bed.published.iter().map(|p| p.reference.as_str()).collect();
    let want: Vec<String> = expected().into_iter().map(|e| e.0).collect();
    let want: BTreeSet<&str> = want.iter().map(String::as_str).collect();
    assert_eq!(got, want);
    for p in &bed.published {
        // Same repository path and tag as upstream, on the local registry.
        let (_, path) = p.reference.split_once('/').unwrap_or_default();
        assert_eq!(p.local, format!("{host}/{path}"));
    }
    let digest = |r: &str| {
        bed.published
            .iter()
            .find(|p| p.reference == r)
            .map(|p| p.digest.clone())
            .unwrap_or_default()
    };
    // One image under three tags; one pause behind two registries.
    let tags: BTreeSet<String> = (1..=3)
        .map(|i| digest(&format!("{CRI}/test-image-tags:{i}")))
        .collect();
    assert_eq!(tags.len(), 1);
    assert_eq!(
        digest("registry.k8s.io/pause:3.9"),
        digest("k8s.gcr.io/pause:3.9")
    );
    // Three different images (IDs) for test-image-1/2/3.
    let ids: BTreeSet<String> = (1..=3)
        .map(|i| {
            bed.fetch(&format!("{CRI}/test-image-{i}:latest"))
                .config_digest
        })
        .collect();
    assert_eq!(ids.len(), 3);
    // The digest-pinned one is the only reference left out.
    assert_eq!(NOT_REPRODUCIBLE.len(), 1);
    assert!(NOT_REPRODUCIBLE[0]
        .0
        .starts_with(&format!("{CRI}/test-image-digest@sha256:")));

    // Publishing again gives the same digests (deterministic images).
    let again = ci::publish(&bed.reg).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, bed.published);
}

#[test]
fn configs_and_files_are_what_the_specs_expect() {
    let bed = Bed::start();
    for (reference, user, cmd, entrypoint, port) in expected() {
        let f = bed.fetch(&reference);
        let c = &f.config["config"];
        assert_eq!(c["User"].as_str(), user, "{reference}: User");
        assert_eq!(strings(&c["Cmd"]), cmd, "{reference}: Cmd");
        assert_eq!(
            strings(&c["Entrypoint"]),
            entrypoint,
            "{reference}: Entrypoint"
        );
        let ports: Vec<String> = c["ExposedPorts"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        assert_eq!(ports, port.into_iter().collect::<Vec<_>>(), "{reference}");
        assert_eq!(f.config["architecture"], "amd64", "{reference}");
        assert_eq!(f.config["os"], "linux", "{reference}");
        assert!(
            strings(&c["Env"]).iter().any(|e| e.starts_with("PATH=")),
            "{reference}: PATH"
        );
    }

    // Accounts: nobody for RunAsUserName, www-data for the user images,
    // root in no group's member list.
    let root = bed.rootfs(&format!("{E2E}/busybox:1.29-2"));
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap_or_default();
    assert!(passwd.contains("\nnobody:x:65534:65534:"), "{passwd}");
    assert!(passwd.contains("\nwww-data:x:33:33:"), "{passwd}");
    let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap_or_default();
    for line in group.lines() {
        let members = line.rsplit(':').next().unwrap_or("");
        assert!(!members.split(',').any(|m| m == "root"), "{line}");
    }
    for tool in ["usr/bin/pgrep", "usr/bin/ipcs", "bin/ls", "bin/sh"] {
        assert!(root.path().join(tool).exists(), "{tool}");
    }

    let pre = bed.rootfs(&format!("{CRI}/test-image-predefined-group:latest"));
    let passwd = std::fs::read_to_string(pre.path().join("etc/passwd")).unwrap_or_default();
    assert!(passwd.contains("\ndefault-user:x:1000:1000:"), "{passwd}");
    let group = std::fs::read_to_string(pre.path().join("etc/group")).unwrap_or_default();
    assert!(group.contains("\ndefault-user:x:1000:\n"), "{group}");
    assert!(
        group.contains("\ngroup-defined-in-image:x:50000:default-user\n"),
        "{group}"
    );

    // Marker files tell the test images apart, as upstream's do.
    for (reference, marker) in [
        (format!("{CRI}/test-image-1:latest"), "test-image-1"),
        (format!("{CRI}/test-image-tags:2"), "same-image"),
        (format!("{CRI}/test-image-tag:all"), "all"),
    ] {
        let r = bed.rootfs(&reference);
        assert!(r.path().join(marker).is_file(), "{reference}: /{marker}");
    }

    // nonewprivs: a setuid-root program.
    let nnp = bed.rootfs(&format!("{E2E}/nonewprivs:1.3"));
    let m = std::fs::metadata(nnp.path().join(NNP_ID.trim_start_matches('/')))
        .unwrap_or_else(|e| panic!("{NNP_ID}: {e}"));
    assert_eq!((m.mode() & 0o7777, m.uid()), (0o4755, 0));

    // Web servers: pages, nginx's pid file path and ports.
    let web = bed.rootfs(&format!("{E2E}/nginx:1.14-2"));
    let page =
        std::fs::read(web.path().join("usr/share/nginx/html/index.html")).unwrap_or_default();
    assert_eq!(page, NGINX_INDEX);
    let conf = std::fs::read_to_string(web.path().join("etc/nginx/nginx.conf")).unwrap_or_default();
    assert!(conf.contains("listen 80;") && conf.contains("pid /var/run/nginx.pid;"));
    let hostnet = bed.rootfs(&format!("{CRI}/hostnet-nginx-amd64:latest"));
    let conf =
        std::fs::read_to_string(hostnet.path().join("etc/nginx/nginx.conf")).unwrap_or_default();
    assert!(
        conf.contains(&format!("listen {HOSTNET_NGINX_PORT};")),
        "{conf}"
    );
    let httpd = bed.rootfs(&format!("{E2E}/httpd:2.4.39-4"));
    let page = std::fs::read(
        httpd
            .path()
            .join(format!("{}/index.html", &HTTPD_ROOT[1..])),
    )
    .unwrap_or_default();
    assert_eq!(page, HTTPD_INDEX);
}

#[test]
fn busybox_runs_what_the_specs_run() {
    let bed = Bed::start();
    let root = bed.rootfs(&format!("{E2E}/busybox:1.29-2"));
    let r = root.path();

    // execSync with timeout: `pgrep sleep || true` prints nothing at all.
    let out = chroot(r, None, false, &["sh", "-c", "pgrep sleep || true"]);
    assert_eq!(
        (text(&out.stdout), text(&out.stderr)),
        (String::new(), String::new())
    );
    let out = chroot(r, None, false, &["echo", "-n", "hello"]);
    assert_eq!(text(&out.stdout), "hello");
    let out = chroot(r, None, false, &["ipcs", "-m"]);
    assert!(out.status.success(), "ipcs -m: {out:?}");
    assert!(
        text(&out.stdout).contains("Shared Memory Segments"),
        "{out:?}"
    );
    let out = chroot(r, Some("65534:65534"), false, &["id", "-nu"]);
    assert_eq!(text(&out.stdout), "nobody\n", "{out:?}");
    let out = chroot(
        r,
        Some("1001:1002"),
        false,
        &["sh", "-c", "echo $(id -u):$(id -g)"],
    );
    assert_eq!(text(&out.stdout), "1001:1002\n", "{out:?}");
    let out = chroot(
        r,
        None,
        false,
        &[
            "sh",
            "-c",
            "touch test.go && [ -f test.go ] && echo 'Found'",
        ],
    );
    assert_eq!(text(&out.stdout), "Found\n", "{out:?}");
    for applet in [
        "brctl", "hostname", "netstat", "pidof", "top", "ping", "mount", "dd",
    ] {
        let out = chroot(
            r,
            None,
            false,
            &["sh", "-c", &format!("command -v {applet}")],
        );
        assert!(out.status.success(), "{applet}: {out:?}");
    }
    // `sleep infinity` is accepted (the SupplementalGroupsPolicy specs).
    let out = chroot(r, None, false, &["timeout", "1", "sleep", "infinity"]);
    assert!(text(&out.stderr).is_empty(), "{out:?}");

    // MaskedPaths: with /bin/ls masked the shell reports exactly this.
    {
        let _mask = MaskedFile::new(r.join("bin/ls"));
        let out = chroot(r, None, false, &["/bin/sh", "-c", "ls"]);
        assert!(!out.status.success());
        assert_eq!(text(&out.stderr), "/bin/sh: ls: Permission denied\n");
    }

    // SupplementalGroupsPolicy=Merge: the image's /etc/group adds 50000.
    let pre = bed.rootfs(&format!("{CRI}/test-image-predefined-group:latest"));
    let out = chroot(pre.path(), None, false, &["id", "-G", "default-user"]);
    assert_eq!(text(&out.stdout), "1000 50000\n", "{out:?}");
    let out = chroot(pre.path(), Some("1000:1000"), false, &["id", "-un"]);
    assert_eq!(text(&out.stdout), "default-user\n", "{out:?}");

    // pause: runs until SIGTERM, then exits 0 at once.
    let pause = bed.rootfs("registry.k8s.io/pause:3.9");
    let mut srv = Server::start(pause.path(), &["/bin/sh", "-c", PAUSE_SCRIPT]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(matches!(srv.0.try_wait(), Ok(None)), "pause keeps running");
    let st = srv.stop();
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(0),
        "pause exits 0 on SIGTERM"
    );
}

#[test]
fn nonewprivs_reports_the_effective_uid() {
    let bed = Bed::start();
    let f = bed.fetch(&format!("{E2E}/nonewprivs:1.3"));
    let cmd = strings(&f.config["config"]["Cmd"]);
    let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let root = bed.rootfs(&format!("{E2E}/nonewprivs:1.3"));
    let out = chroot(root.path(), Some("1000:1000"), false, &argv);
    assert_eq!(text(&out.stdout), "Effective uid: 0\n", "{out:?}");
    let out = chroot(root.path(), Some("1000:1000"), true, &argv);
    assert_eq!(text(&out.stdout), "Effective uid: 1000\n", "{out:?}");
}

#[test]
fn web_servers_serve_their_pages() {
    let bed = Bed::start();
    for reference in [
        format!("{E2E}/nginx:1.14-2"),
        format!("{CRI}/hostnet-nginx-amd64:latest"),
    ] {
        let root = bed.rootfs(&reference);
        // The access log is a link to /dev/stdout; give it somewhere to go.
        std::fs::create_dir_all(root.path().join("dev")).unwrap_or_else(|e| panic!("{e}"));
        let out = chroot(root.path(), None, false, &["nginx", "-t"]);
        assert!(
            out.status.success() && text(&out.stderr).contains("test is successful"),
            "{reference}: {out:?}"
        );
        if !reference.contains("hostnet") {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", HOSTNET_NGINX_PORT)).is_err() {
            eprintln!("port {HOSTNET_NGINX_PORT} is busy: not starting nginx");
            continue;
        }
        let mut srv = Server::start(root.path(), &["nginx", "-g", "daemon off;"]);
        let (status, body) = http_get(&format!("http://127.0.0.1:{HOSTNET_NGINX_PORT}/"));
        assert_eq!((status, body.as_slice()), (200, NGINX_INDEX));
        let pid = std::fs::read_to_string(root.path().join("run/nginx.pid")).unwrap_or_default();
        assert_eq!(pid.trim(), srv.0.id().to_string(), "/var/run/nginx.pid");
        assert!(srv.stop().is_some(), "nginx stops on SIGTERM");
    }

    let root = bed.rootfs(&format!("{E2E}/httpd:2.4.39-4"));
    let port = free_port().unwrap_or_else(|e| panic!("{e}"));
    let addr = format!("127.0.0.1:{port}");
    let _srv = Server::start(root.path(), &["httpd", "-f", "-p", &addr, "-h", HTTPD_ROOT]);
    let (status, body) = http_get(&format!("http://{addr}/"));
    assert_eq!((status, body.as_slice()), (200, HTTPD_INDEX));
}

#[derive(serde::Deserialize)]
struct DaemonConfig {
    registry: RegistryConfig,
}

#[test]
fn mirror_config_serves_every_reference_through_podctl() {
    let bed = Bed::start();
    let host = bed.reg.host();
    let cfg: DaemonConfig = toml::from_str(&ci::podctl_registry_toml(&host))
        .unwrap_or_else(|e| panic!("generated config: {e}"));
    let standalone: RegistryConfig = toml::from_str(&ci::registry_config_toml(&host))
        .unwrap_or_else(|e| panic!("generated registry config: {e}"));
    assert_eq!(standalone, cfg.registry);
    for h in ci::UPSTREAM_HOSTS {
        let eps = cfg.registry.endpoints(h);
        let bases: Vec<&str> = eps.iter().map(|e| e.base.as_str()).collect();
        assert_eq!(
            bases,
            [format!("http://{host}")],
            "{h}: the local registry only"
        );
    }

    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap_or_else(|e| panic!("{e}"));
    let p = common::puller(dir.path(), cfg.registry.clone());
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    for (reference, ..) in expected() {
        let (rec, _) = common::pull(&p, &reference).unwrap_or_else(|e| panic!("{reference}: {e}"));
        let served = bed.fetch(&reference);
        assert_eq!(
            rec.id.to_string(),
            served.config_digest,
            "{reference}: image ID"
        );
        assert!(
            rec.repo_tags.contains(&reference),
            "{reference}: {:?}",
            rec.repo_tags
        );
        ids.insert(reference, rec.id.to_string());
    }
    // ImageStatus's uid / username of the user images.
    for (name, uid, username) in [
        ("test-image-user-uid", Some(1002), ""),
        ("test-image-user-username", None, "www-data"),
        ("test-image-user-uid-group", Some(1003), ""),
        ("test-image-user-username-group", None, "www-data"),
    ] {
        let rec = p
            .store()
            .get(&format!("{CRI}/{name}:latest"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(rec.user(), (uid, username.to_string()), "{name}");
    }
    assert_eq!(
        ids.get("registry.k8s.io/pause:3.9"),
        ids.get("k8s.gcr.io/pause:3.9"),
        "the same image ID from both registries"
    );
    let pause = p
        .store()
        .get("registry.k8s.io/pause:3.9")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut tags = pause.repo_tags.clone();
    tags.sort();
    assert_eq!(tags, ["k8s.gcr.io/pause:3.9", "registry.k8s.io/pause:3.9"]);

    // The upstream digest is not served: the pull fails.
    assert!(common::pull(&p, NOT_REPRODUCIBLE[0].0).is_err());
}
