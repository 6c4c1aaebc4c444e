//! The images cri-tools' `critest` (validation mode) pulls, rebuilt from
//! this machine's Debian packages and published under the same repository
//! paths and tags, so that a registry mirror configuration mapping the
//! upstream hosts (`registry.k8s.io`, `gcr.io`, `k8s.gcr.io`, ...) to the
//! local registry fixture serves critest offline.
//!
//! What the specs need of each image (critest v1.36):
//!
//! - `registry.k8s.io/e2e-test-images/busybox:1.29-2`, the default test
//!   image: a shell and the applets the specs run (`top`, `sleep infinity`,
//!   `echo -n`, `id -u/-nu/-G`, `hostname`, `brctl`, `ping`, `touch`,
//!   `chmod`, `mount --bind`, `netstat -ln`, `dd`, `pidof`, `ls -A`, `cat`,
//!   `grep`), plus `pgrep` and `ipcs`, which Debian's busybox lacks (taken
//!   from procps and util-linux). `ls` must be a real `/bin/ls` looked up
//!   through `PATH` (the MaskedPaths spec masks it and expects
//!   `/bin/sh: ls: Permission denied`), which Debian's busybox does (no
//!   standalone shell). `/etc/passwd` has `nobody` (RunAsUserName) and
//!   `www-data`; no group lists `root` as a member; `/etc/nsswitch.conf`
//!   sends the glibc programs to those files.
//! - `gcr.io/k8s-staging-cri-tools/test-image-user-{uid,username,uid-group,username-group}`:
//!   busybox with `User` `1002`, `www-data`, `1003:1004`, `www-data:1004`
//!   (ImageStatus must report uid 1002 / username www-data / uid 1003 /
//!   username www-data).
//! - `.../test-image-predefined-group`: `User` `1000`, `/etc/passwd` has
//!   `default-user` (1000:1000), `/etc/group` has `default-user` (1000) and
//!   `group-defined-in-image` (50000) listing `default-user`: with
//!   RunAsUser 1000 and SupplementalGroups [1234], `id -G` prints
//!   `1000 1234 50000` (Merge policy) or `1000 1234` (Strict).
//! - `.../test-image-latest`, `test-image-1/2/3:latest` (three different
//!   images), `test-image-tags:1/2/3` (one image under three tags),
//!   `test-image-tag:test` and `:all`: busybox plus one empty file named
//!   after the image or tag, as upstream builds them.
//! - `registry.k8s.io/pause:3.9` and `k8s.gcr.io/pause:3.9`: the same image
//!   (one repository `pause` behind both mirrors), started with its own
//!   entrypoint; here a shell that sleeps until SIGTERM/SIGINT, as
//!   `65535:65535` like upstream.
//! - `registry.k8s.io/e2e-test-images/nginx:1.14-2`: nginx (Debian's) as
//!   PID 1 in the foreground (`/proc/1/cmdline` says `master process`),
//!   answering 200 on `/` at port 80, its pid in `/var/run/nginx.pid`,
//!   busybox for `sh`, `cat`, `grep`, `sleep`.
//! - `gcr.io/k8s-staging-cri-tools/hostnet-nginx-amd64`: the same nginx
//!   listening on 12003 (host-network specs).
//! - `registry.k8s.io/e2e-test-images/httpd:2.4.39-4`: a web server on port
//!   80 that writes a line containing `httpd` to its log and has `echo`
//!   (busybox httpd).
//! - `registry.k8s.io/e2e-test-images/nonewprivs:1.3`: its command prints
//!   `Effective uid: N` where N is the effective uid of a setuid-root
//!   program (coreutils `id`, mode 4755): 0 without NoNewPrivs, the
//!   caller's uid with it.
//!
//! Not reproducible: `gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:9700f9a2…`
//! is pulled by an upstream digest ([`NOT_REPRODUCIBLE`]); the spec
//! "public image with digest should be pulled and removed" fails offline.
//!
//! The upstream images are manifest lists (except `hostnet-nginx-amd64`);
//! these are Docker manifest lists with one linux/amd64 entry, Docker
//! schema 2 manifests inside.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::{json, Value};

use crate::fixtures::busybox_layers;
use crate::oci::{image, index, Compression, Image, ImageSpec, Index, Layer, LayerBuilder};
use crate::push::Pusher;
use crate::registry::Registry;
use crate::{io_err, Result, TestbedError};

/// Upstream hosts critest pulls from (or that a test image list may name);
/// the generated configuration sends each to the local registry only.
pub const UPSTREAM_HOSTS: &[&str] = &[
    "registry.k8s.io",
    "k8s.gcr.io",
    "gcr.io",
    "docker.io",
    "quay.io",
];

/// References critest pulls that no rebuilt image can satisfy, and why.
pub const NOT_REPRODUCIBLE: &[(&str, &str)] = &[(
    "gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf",
    "pulled by the upstream manifest digest; a rebuilt image has another digest",
)];

/// `PATH` of every image.
pub const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `/etc/passwd` of the busybox-based images (the accounts upstream's
/// busybox image has).
pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
bin:x:2:2:bin:/bin:/bin/false\n\
sys:x:3:3:sys:/dev:/bin/false\n\
sync:x:4:100:sync:/bin:/bin/sync\n\
mail:x:8:8:mail:/var/spool/mail:/bin/false\n\
www-data:x:33:33:www-data:/var/www:/bin/false\n\
operator:x:37:37:Operator:/var:/bin/false\n\
nobody:x:65534:65534:nobody:/home:/bin/false\n";

/// `/etc/group` of the busybox-based images (no group lists `root`, so a
/// root container's `id -G` is its primary and supplemental groups only).
pub const GROUP: &str = "root:x:0:\n\
daemon:x:1:\n\
bin:x:2:\n\
sys:x:3:\n\
adm:x:4:\n\
tty:x:5:\n\
disk:x:6:\n\
lp:x:7:\n\
mail:x:8:\n\
kmem:x:9:\n\
wheel:x:10:\n\
floppy:x:11:\n\
news:x:13:\n\
uucp:x:14:\n\
audio:x:29:\n\
www-data:x:33:\n\
operator:x:37:\n\
staff:x:50:\n\
users:x:100:\n\
nogroup:x:65534:\n";

/// `/etc/nsswitch.conf`: the glibc programs of the images (nginx, pgrep,
/// the nonewprivs `id`) look accounts up in the files above.
pub const NSSWITCH: &str = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n";

/// The predefined-group image's extra account.
pub const PREDEFINED_USER: &str =
    "default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n";
/// The predefined-group image's extra groups.
pub const PREDEFINED_GROUPS: &str =
    "default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n";

/// Page nginx serves on `/`.
pub const NGINX_INDEX: &[u8] = b"<html><body><h1>podctl critest nginx</h1></body></html>\n";
/// Page the httpd image serves on `/`.
pub const HTTPD_INDEX: &[u8] = b"<html><body><h1>It works!</h1></body></html>\n";
/// Document root of the httpd image (where upstream's Apache has it).
pub const HTTPD_ROOT: &str = "/usr/local/apache2/htdocs";
/// The setuid-root program of the nonewprivs image.
pub const NNP_ID: &str = "/usr/local/bin/nnp-id";
/// Port of `hostnet-nginx-amd64`.
pub const HOSTNET_NGINX_PORT: u16 = 12003;

/// Shell loop standing in for the pause binary: sleeps until SIGTERM or
/// SIGINT, then exits 0.
pub const PAUSE_SCRIPT: &str =
    "trap 'kill $p 2>/dev/null; exit 0' TERM INT; while :; do sleep 3600 & p=$!; wait $p; done";

/// What a published reference holds: one image, or a list over images.
#[derive(Clone, Debug)]
pub enum Content {
    Image(Image),
    List(Index),
}

impl Content {
    /// The platform image (the only one of a list).
    pub fn image(&self) -> Option<&Image> {
        match self {
            Content::Image(i) => Some(i),
            Content::List(idx) => idx.images.first(),
        }
    }

    /// Digest the reference resolves to (manifest or list).
    pub fn digest(&self) -> &str {
        match self {
            Content::Image(i) => &i.manifest_digest,
            Content::List(idx) => &idx.digest,
        }
    }
}

/// One image critest pulls.
#[derive(Clone, Debug)]
pub struct CritestImage {
    /// The upstream host (`registry.k8s.io`, `gcr.io`, ...).
    pub upstream_host: &'static str,
    /// Repository path, the same upstream and in the local registry.
    pub repository: String,
    pub tag: String,
    pub content: Content,
    /// What the specs use it for.
    pub purpose: &'static str,
}

impl CritestImage {
    /// The reference critest pulls (`registry.k8s.io/pause:3.9`).
    pub fn reference(&self) -> String {
        format!("{}/{}:{}", self.upstream_host, self.repository, self.tag)
    }

    /// The same image in the registry at `host` (`127.0.0.1:PORT/pause:3.9`).
    pub fn local_reference(&self, host: &str) -> String {
        format!("{host}/{}:{}", self.repository, self.tag)
    }
}

/// A pushed reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedRef {
    /// What critest pulls.
    pub reference: String,
    /// Where it is in the local registry.
    pub local: String,
    /// Manifest (or list) digest.
    pub digest: String,
}

// ---------------------------------------------------------------- host files

/// Shared libraries a host binary loads, as `ldd` resolves them (the vDSO
/// left out).
pub fn shared_libs(binary: &str) -> Result<Vec<String>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(io_err("run", format!("ldd {binary}")))?;
    if !out.status.success() {
        return Err(TestbedError::Command {
            cmd: format!("ldd {binary}"),
            reason: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let mut libs = BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.insert(p.to_string());
        }
    }
    Ok(libs.into_iter().collect())
}

pub(crate) fn read(path: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(io_err("read", path))
}

pub(crate) fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Builds a layer, adding each parent directory (0755, root) once before
/// the entries below it.
pub(crate) struct Tree {
    b: LayerBuilder,
    dirs: BTreeSet<String>,
}

impl Tree {
    pub(crate) fn new() -> Self {
        Tree {
            b: LayerBuilder::new(),
            dirs: BTreeSet::new(),
        }
    }

    fn parents(mut self, path: &str) -> Self {
        let mut acc = String::new();
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        for c in comps.iter().take(comps.len().saturating_sub(1)) {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(c);
            if self.dirs.insert(acc.clone()) {
                self.b = self.b.dir(&acc, 0o755);
            }
        }
        self
    }

    pub(crate) fn dir(mut self, path: &str, mode: u32) -> Self {
        self = self.parents(path);
        let p = path.trim_matches('/').to_string();
        if self.dirs.insert(p.clone()) {
            self.b = self.b.dir(&p, mode);
        }
        self
    }

    pub(crate) fn dir_owned(mut self, path: &str, mode: u32, uid: u64, gid: u64) -> Self {
        self = self.parents(path);
        let p = path.trim_matches('/').to_string();
        if self.dirs.insert(p.clone()) {
            self.b = self.b.owner(uid, gid).dir(&p, mode).owner(0, 0);
        }
        self
    }

    pub(crate) fn file(mut self, path: &str, mode: u32, data: &[u8]) -> Self {
        self = self.parents(path);
        self.b = self.b.file(path.trim_start_matches('/'), mode, data);
        self
    }

    pub(crate) fn symlink(mut self, path: &str, target: &str) -> Self {
        self = self.parents(path);
        self.b = self.b.symlink(path.trim_start_matches('/'), target);
        self
    }

    /// Host binary `src` at `dest` with the libraries it needs that are not
    /// in `have` (file names), at the paths `ldd` gives.
    pub(crate) fn host_binary(
        mut self,
        src: &str,
        dest: &str,
        mode: u32,
        have: &mut BTreeSet<String>,
    ) -> Result<Self> {
        self = self.file(dest, mode, &read(src)?);
        for lib in shared_libs(src)? {
            let name = file_name(&lib).to_string();
            if lib.starts_with("/lib64/") || !have.insert(name) {
                // The loader comes with busybox (lib/x86_64-linux-gnu and
                // the lib64 link).
                continue;
            }
            self = self.file(&lib, 0o755, &read(&lib)?);
        }
        Ok(self)
    }

    pub(crate) fn finish(self) -> Layer {
        self.b.finish(Compression::Gzip)
    }
}

// ------------------------------------------------------------------- images

/// Layers shared by every busybox-based image: Debian's busybox (the
/// standard fixture's two layers), then `/etc` accounts, `pgrep` and `ipcs`.
pub fn base_layers() -> Result<Vec<Layer>> {
    let mut layers = busybox_layers(Compression::Gzip)?;
    let mut have: BTreeSet<String> = shared_libs("/bin/busybox")?
        .iter()
        .map(|l| file_name(l).to_string())
        .collect();
    let extra = Tree::new()
        .file("etc/passwd", 0o644, PASSWD.as_bytes())
        .file("etc/group", 0o644, GROUP.as_bytes())
        .file("etc/nsswitch.conf", 0o644, NSSWITCH.as_bytes())
        .dir("var/spool/mail", 0o755)
        .host_binary("/usr/bin/pgrep", "usr/bin/pgrep", 0o755, &mut have)?
        .host_binary("/usr/bin/ipcs", "usr/bin/ipcs", 0o755, &mut have)?
        .finish();
    layers.push(extra);
    Ok(layers)
}

pub(crate) fn with(base: &[Layer], more: impl IntoIterator<Item = Layer>) -> Vec<Layer> {
    let mut v = base.to_vec();
    v.extend(more);
    v
}

pub(crate) fn docker_image(layers: Vec<Layer>, run: Value) -> Image {
    image(
        layers,
        &ImageSpec {
            docker: true,
            run,
            ..Default::default()
        },
    )
}

pub(crate) fn list(img: Image) -> Content {
    Content::List(index(vec![img], true))
}

pub(crate) fn sh_config(extra: Value) -> Value {
    let mut run = json!({"Env": [PATH_ENV], "Cmd": ["sh"]});
    if let (Some(m), Some(e)) = (run.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            m.insert(k.clone(), v.clone());
        }
    }
    run
}

/// A layer with one empty file `/name` (how upstream tells its test images
/// apart).
pub(crate) fn marker(name: &str) -> Layer {
    LayerBuilder::new()
        .file(name, 0o644, b"")
        .finish(Compression::Gzip)
}

/// The nginx configuration of the web-server images.
pub fn nginx_conf(port: u16) -> String {
    format!(
        "user www-data;\n\
worker_processes 1;\n\
pid /var/run/nginx.pid;\n\
error_log stderr notice;\n\
events {{\n    worker_connections 256;\n}}\n\
http {{\n\
    include /etc/nginx/mime.types;\n\
    default_type application/octet-stream;\n\
    access_log /var/log/nginx/access.log;\n\
    sendfile on;\n\
    server {{\n\
        listen {port};\n\
        server_name localhost;\n\
        location / {{\n\
            root /usr/share/nginx/html;\n\
            index index.html;\n\
        }}\n\
    }}\n\
}}\n"
    )
}

/// Debian's nginx with the directories its compiled-in paths need; the
/// access log goes to the container's stdout.
pub(crate) fn nginx_layer(base_libs: &BTreeSet<String>) -> Result<Layer> {
    let mut have = base_libs.clone();
    Ok(Tree::new()
        .host_binary("/usr/sbin/nginx", "usr/sbin/nginx", 0o755, &mut have)?
        .file(
            "etc/nginx/mime.types",
            0o644,
            &read("/etc/nginx/mime.types")?,
        )
        .file("usr/share/nginx/html/index.html", 0o644, NGINX_INDEX)
        .dir("var/lib/nginx", 0o755)
        .dir("var/log/nginx", 0o755)
        .symlink("var/log/nginx/access.log", "/dev/stdout")
        .dir("run", 0o755)
        .symlink("var/run", "../run")
        .finish())
}

pub(crate) fn nginx_image(base: &[Layer], nginx: &Layer, port: u16) -> Image {
    let conf = LayerBuilder::new()
        .dir("etc", 0o755)
        .dir("etc/nginx", 0o755)
        .file("etc/nginx/nginx.conf", 0o644, nginx_conf(port).as_bytes())
        .finish(Compression::Gzip);
    docker_image(
        with(base, [nginx.clone(), conf]),
        json!({
            "Env": [PATH_ENV],
            "Cmd": ["nginx", "-g", "daemon off;"],
            "ExposedPorts": {format!("{port}/tcp"): {}},
        }),
    )
}

/// Command of the nonewprivs image.
pub fn nnp_command() -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("echo \"Effective uid: $({NNP_ID} -u)\""),
    ]
}

/// Command of the httpd image.
pub fn httpd_command() -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("echo 'httpd: serving {HTTPD_ROOT} on port 80' >&2; exec httpd -f -v -p 80 -h {HTTPD_ROOT}"),
    ]
}

/// File names of the libraries [`base_layers`] already holds.
pub(crate) fn base_libs() -> Result<BTreeSet<String>> {
    Ok(shared_libs("/bin/busybox")?
        .iter()
        .chain(shared_libs("/usr/bin/pgrep")?.iter())
        .chain(shared_libs("/usr/bin/ipcs")?.iter())
        .map(|l| file_name(l).to_string())
        .collect())
}

/// Every image critest's validation specs pull (except [`NOT_REPRODUCIBLE`]).
pub fn build() -> Result<Vec<CritestImage>> {
    let base = base_layers()?;
    let base_libs = base_libs()?;
    let mut out = Vec::new();
    let mut add = |upstream_host, repository: &str, tag: &str, content, purpose| {
        out.push(CritestImage {
            upstream_host,
            repository: repository.into(),
            tag: tag.into(),
            content,
            purpose,
        })
    };
    const E2E: &str = "e2e-test-images";
    const CRI: &str = "k8s-staging-cri-tools";

    add(
        "registry.k8s.io",
        &format!("{E2E}/busybox"),
        "1.29-2",
        list(docker_image(base.clone(), sh_config(json!({})))),
        "default test container image",
    );

    for (name, user) in [
        ("test-image-user-uid", "1002"),
        ("test-image-user-username", "www-data"),
        ("test-image-user-uid-group", "1003:1004"),
        ("test-image-user-username-group", "www-data:1004"),
    ] {
        add(
            "gcr.io",
            &format!("{CRI}/{name}"),
            "latest",
            list(docker_image(base.clone(), sh_config(json!({"User": user})))),
            "ImageStatus uid/username",
        );
    }

    let predefined = Tree::new()
        .file(
            "etc/passwd",
            0o644,
            format!("{PASSWD}{PREDEFINED_USER}").as_bytes(),
        )
        .file(
            "etc/group",
            0o644,
            format!("{GROUP}{PREDEFINED_GROUPS}").as_bytes(),
        )
        .dir_owned("home/default-user", 0o755, 1000, 1000)
        .finish();
    add(
        "gcr.io",
        &format!("{CRI}/test-image-predefined-group"),
        "latest",
        list(docker_image(
            with(&base, [predefined]),
            sh_config(json!({"User": "1000"})),
        )),
        "SupplementalGroupsPolicy Merge/Strict",
    );

    for name in [
        "test-image-latest",
        "test-image-1",
        "test-image-2",
        "test-image-3",
    ] {
        add(
            "gcr.io",
            &format!("{CRI}/{name}"),
            "latest",
            list(docker_image(
                with(&base, [marker(name)]),
                sh_config(json!({})),
            )),
            "pull/list/remove by tag",
        );
    }
    let same = list(docker_image(
        with(&base, [marker("same-image")]),
        sh_config(json!({})),
    ));
    for tag in ["1", "2", "3"] {
        add(
            "gcr.io",
            &format!("{CRI}/test-image-tags"),
            tag,
            same.clone(),
            "one image under three tags",
        );
    }
    for tag in ["test", "all"] {
        add(
            "gcr.io",
            &format!("{CRI}/test-image-tag"),
            tag,
            list(docker_image(
                with(&base, [marker(tag)]),
                sh_config(json!({})),
            )),
            "pull by tag, image status by every reference, ID consistency",
        );
    }

    let pause = list(docker_image(
        base.clone(),
        json!({
            "Env": [PATH_ENV],
            "Entrypoint": ["/bin/sh", "-c", PAUSE_SCRIPT],
            "User": "65535:65535",
        }),
    ));
    for host in ["registry.k8s.io", "k8s.gcr.io"] {
        add(
            host,
            "pause",
            "3.9",
            pause.clone(),
            "same image from two registries",
        );
    }

    let nginx = nginx_layer(&base_libs)?;
    add(
        "registry.k8s.io",
        &format!("{E2E}/nginx"),
        "1.14-2",
        list(nginx_image(&base, &nginx, 80)),
        "web server on port 80; PID namespace specs",
    );
    add(
        "gcr.io",
        &format!("{CRI}/hostnet-nginx-amd64"),
        "latest",
        Content::Image(nginx_image(&base, &nginx, HOSTNET_NGINX_PORT)),
        "web server on host port 12003",
    );

    let htdocs = Tree::new()
        .file(&format!("{HTTPD_ROOT}/index.html"), 0o644, HTTPD_INDEX)
        .finish();
    add(
        "registry.k8s.io",
        &format!("{E2E}/httpd"),
        "2.4.39-4",
        list(docker_image(
            with(&base, [htdocs]),
            json!({
                "Env": [PATH_ENV],
                "Cmd": httpd_command(),
                "ExposedPorts": {"80/tcp": {}},
            }),
        )),
        "multi-container pod: network, log, exec",
    );

    let mut have = base_libs.clone();
    let nnp = Tree::new()
        .host_binary("/usr/bin/id", NNP_ID, 0o4755, &mut have)?
        .finish();
    add(
        "registry.k8s.io",
        &format!("{E2E}/nonewprivs"),
        "1.3",
        list(docker_image(
            with(&base, [nnp]),
            json!({"Env": [PATH_ENV], "Cmd": nnp_command()}),
        )),
        "NoNewPrivs true/false",
    );

    Ok(out)
}

/// Push every image of [`build`] to `reg` under its upstream repository
/// path and tag.
pub fn publish(reg: &Registry) -> Result<Vec<PublishedRef>> {
    publish_images(reg, None, &build()?)
}

/// Push `images` to `reg` (with `creds` for a registry behind auth).
pub fn publish_images(
    reg: &Registry,
    creds: Option<(&str, &str)>,
    images: &[CritestImage],
) -> Result<Vec<PublishedRef>> {
    let mut p = Pusher::new(&reg.url(), creds);
    let host = reg.host();
    let mut out = Vec::new();
    for img in images {
        let digest = match &img.content {
            Content::Image(i) => p.image(&img.repository, &img.tag, i)?,
            Content::List(idx) => p.index(&img.repository, &img.tag, idx)?,
        };
        out.push(PublishedRef {
            reference: img.reference(),
            local: img.local_reference(&host),
            digest,
        });
    }
    Ok(out)
}

/// The registry section of a podctl daemon configuration
/// (`[registry.hosts."registry.k8s.io"]`, ...): every upstream host of
/// [`UPSTREAM_HOSTS`] goes to the registry at `registry_host`
/// (`127.0.0.1:PORT`) only, over plain HTTP.
pub fn podctl_registry_toml(registry_host: &str) -> String {
    hosts_toml("registry.hosts", registry_host)
}

/// The same as a stand-alone registry configuration (`podctl
/// --registry-config`: `[hosts."registry.k8s.io"]`, ...).
pub fn registry_config_toml(registry_host: &str) -> String {
    hosts_toml("hosts", registry_host)
}

fn hosts_toml(table: &str, registry_host: &str) -> String {
    let mut s = String::new();
    for h in UPSTREAM_HOSTS {
        s.push_str(&format!(
            "[{table}.\"{h}\"]\nmirrors = [\"http://{registry_host}\"]\nmirrors_only = true\n\n"
        ));
    }
    s.push_str(&format!("[{table}.\"{registry_host}\"]\ninsecure = true\n"));
    s
}

// ------------------------------------------------------------------ reading

/// An image read back from a registry.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// Digest the tag resolves to (a list's digest for lists).
    pub digest: String,
    /// Digest of the linux/amd64 manifest.
    pub manifest_digest: String,
    /// Digest of the config blob (the image ID).
    pub config_digest: String,
    pub config: Value,
    /// Layer blobs, bottom first, as stored.
    pub layers: Vec<Vec<u8>>,
}

fn get(client: &reqwest::blocking::Client, url: &str, accept: &str) -> Result<(String, Vec<u8>)> {
    let http = |source| TestbedError::Http {
        url: url.to_string(),
        source,
    };
    let r = client
        .get(url)
        .header("Accept", accept)
        .send()
        .map_err(http)?;
    if !r.status().is_success() {
        return Err(TestbedError::Registry {
            url: url.to_string(),
            reason: format!("GET: {}", r.status()),
        });
    }
    let ct = r
        .headers()
        .get("Content-Type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = r.bytes().map_err(http)?.to_vec();
    Ok((ct, body))
}

fn parse_json(url: &str, body: &[u8]) -> Result<Value> {
    serde_json::from_slice(body).map_err(|e| TestbedError::Registry {
        url: url.to_string(),
        reason: format!("not JSON: {e}"),
    })
}

/// Read `repo:tag` from the registry at `base` (`http://127.0.0.1:PORT`):
/// the linux/amd64 manifest (through a list if the tag names one), its
/// config and its layer blobs, each checked against its digest.
pub fn fetch(base: &str, repo: &str, tag: &str) -> Result<Fetched> {
    use crate::oci::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
    let client = reqwest::blocking::Client::new();
    let accept = format!("{DOCKER_LIST}, {OCI_INDEX}, {DOCKER_MANIFEST}, {OCI_MANIFEST}");
    let bad = |url: &str, reason: String| TestbedError::Registry {
        url: url.to_string(),
        reason,
    };
    let url = format!("{base}/v2/{repo}/manifests/{tag}");
    let (ct, body) = get(&client, &url, &accept)?;
    let digest = crate::sha256(&body);
    let mut manifest = parse_json(&url, &body)?;
    let mut manifest_digest = digest.clone();
    if ct == DOCKER_LIST || ct == OCI_INDEX {
        let entry = manifest["manifests"]
            .as_array()
            .and_then(|m| {
                m.iter().find(|d| {
                    d["platform"]["architecture"] == "amd64" && d["platform"]["os"] == "linux"
                })
            })
            .and_then(|d| d["digest"].as_str())
            .ok_or_else(|| bad(&url, "no linux/amd64 entry".into()))?
            .to_string();
        let murl = format!("{base}/v2/{repo}/manifests/{entry}");
        let (_, mbody) = get(&client, &murl, &accept)?;
        if crate::sha256(&mbody) != entry {
            return Err(bad(&murl, "manifest does not match its digest".into()));
        }
        manifest = parse_json(&murl, &mbody)?;
        manifest_digest = entry;
    }
    let blob = |d: &str| -> Result<Vec<u8>> {
        let burl = format!("{base}/v2/{repo}/blobs/{d}");
        let (_, data) = get(&client, &burl, "*/*")?;
        if crate::sha256(&data) != d {
            return Err(bad(&burl, "blob does not match its digest".into()));
        }
        Ok(data)
    };
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .ok_or_else(|| bad(&url, "manifest has no config".into()))?
        .to_string();
    let config = parse_json(&url, &blob(&config_digest)?)?;
    let mut layers = Vec::new();
    for l in manifest["layers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let d = l["digest"]
            .as_str()
            .ok_or_else(|| bad(&url, "layer without digest".into()))?;
        layers.push(blob(d)?);
    }
    Ok(Fetched {
        digest,
        manifest_digest,
        config_digest,
        config,
        layers,
    })
}

/// Unpack gzip layer blobs, bottom first, into `root` with GNU tar (owners
/// and modes kept when run as root; no whiteouts in these images).
pub fn unpack(layers: &[Vec<u8>], root: &std::path::Path) -> Result<()> {
    use std::io::Write as _;
    use std::process::Stdio;
    for (i, blob) in layers.iter().enumerate() {
        let mut child = Command::new("tar")
            .arg("-xzpf")
            .arg("-")
            .arg("-C")
            .arg(root)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io_err("run", "tar"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(blob)
                .map_err(io_err("write layer to", "tar"))?;
        }
        let out = child.wait_with_output().map_err(io_err("wait", "tar"))?;
        if !out.status.success() {
            return Err(TestbedError::Command {
                cmd: format!("tar -xz (layer {i})"),
                reason: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_tables_cover_every_upstream_host() {
        let t = podctl_registry_toml("127.0.0.1:5000");
        for h in UPSTREAM_HOSTS {
            assert!(
                t.contains(&format!(
                    "[registry.hosts.\"{h}\"]\nmirrors = [\"http://127.0.0.1:5000\"]\nmirrors_only = true\n"
                )),
                "{t}"
            );
        }
        assert!(t.ends_with("[registry.hosts.\"127.0.0.1:5000\"]\ninsecure = true\n"));
        assert!(registry_config_toml("127.0.0.1:5000").starts_with("[hosts.\"registry.k8s.io\"]"));
    }

    #[test]
    fn nginx_conf_listens_where_asked() {
        assert!(nginx_conf(12003).contains("listen 12003;"));
        assert!(nginx_conf(80).contains("pid /var/run/nginx.pid;"));
    }
}
