//! Images built from this machine's Debian packages, the same bytes on
//! every run.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::json;

use crate::oci::{image, index, Compression, Image, ImageSpec, Index, Layer, LayerBuilder};
use crate::push::Pusher;
use crate::registry::Registry;
use crate::{io_err, Result, TestbedError};

pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
www-data:x:33:33:www-data:/var/www:/bin/false\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
pub const GROUP: &str = "root:x:0:\nwww-data:x:33:\nnogroup:x:65534:\n";
pub const HTTPD_INDEX: &[u8] = b"hello from podctl httpd\n";

fn read(path: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(io_err("read", path))
}

/// Shared libraries `/bin/busybox` needs, as `ldd` lists them.
fn busybox_libs() -> Result<Vec<String>> {
    let out = Command::new("ldd")
        .arg("/bin/busybox")
        .output()
        .map_err(io_err("run", "ldd /bin/busybox"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = BTreeSet::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.insert(p.to_string());
        }
    }
    if libs.is_empty() {
        return Err(TestbedError::Command {
            cmd: "ldd /bin/busybox".into(),
            reason: "no libraries found (is Debian's dynamic busybox installed?)".into(),
        });
    }
    Ok(libs.into_iter().collect())
}

/// Applet paths (`bin/sh`, `usr/bin/wget`, ...), sorted.
fn applets() -> Result<Vec<String>> {
    let out = Command::new("/bin/busybox")
        .arg("--list-full")
        .output()
        .map_err(io_err("run", "busybox --list-full"))?;
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "bin/busybox")
        .map(str::to_string)
        .collect();
    v.sort();
    v.dedup();
    Ok(v)
}

/// The two busybox layers: C libraries + /etc, then busybox and its applets
/// as hard links.
pub fn busybox_layers(c: Compression) -> Result<Vec<Layer>> {
    let mut base = LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/passwd", 0o644, PASSWD.as_bytes())
        .file("etc/group", 0o644, GROUP.as_bytes())
        .dir("tmp", 0o1777)
        .dir("root", 0o700)
        .dir("home", 0o755)
        .dir("var", 0o755)
        .dir("var/www", 0o755)
        .dir("lib", 0o755)
        .dir("lib64", 0o755)
        .dir("lib/x86_64-linux-gnu", 0o755);
    for lib in busybox_libs()? {
        let name = lib.rsplit('/').next().unwrap_or(&lib).to_string();
        let data = read(&lib)?;
        base = base.file(&format!("lib/x86_64-linux-gnu/{name}"), 0o755, &data);
        if lib.starts_with("/lib64/") {
            base = base.symlink(
                &format!("lib64/{name}"),
                &format!("../lib/x86_64-linux-gnu/{name}"),
            );
        }
    }
    let mut bin = LayerBuilder::new()
        .dir("bin", 0o755)
        .dir("sbin", 0o755)
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .dir("usr/sbin", 0o755)
        .file("bin/busybox", 0o755, &read("/bin/busybox")?);
    for a in applets()? {
        bin = bin.hardlink(&a, "bin/busybox");
    }
    Ok(vec![base.finish(c), bin.finish(c)])
}

fn busybox_spec(docker: bool) -> ImageSpec {
    ImageSpec {
        docker,
        run: json!({"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]}),
        ..Default::default()
    }
}

/// busybox (OCI media types, gzip).
pub fn busybox() -> Result<Image> {
    Ok(image(
        busybox_layers(Compression::Gzip)?,
        &busybox_spec(false),
    ))
}

/// busybox with Docker schema 2 media types.
pub fn busybox_docker() -> Result<Image> {
    Ok(image(
        busybox_layers(Compression::Gzip)?,
        &busybox_spec(true),
    ))
}

/// busybox with zstd layers (`application/vnd.oci.image.layer.v1.tar+zstd`).
pub fn zstd_image() -> Result<Image> {
    busybox_zstd()
}

/// busybox with zstd layers.
pub fn busybox_zstd() -> Result<Image> {
    Ok(image(
        busybox_layers(Compression::Zstd)?,
        &busybox_spec(false),
    ))
}

/// An HTTP server: busybox httpd serving /www on port 80.
pub fn httpd() -> Result<Image> {
    let mut layers = busybox_layers(Compression::Gzip)?;
    layers.push(
        LayerBuilder::new()
            .dir("www", 0o755)
            .file("www/index.html", 0o644, HTTPD_INDEX)
            .finish(Compression::Gzip),
    );
    Ok(image(
        layers,
        &ImageSpec {
            run: json!({
                "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["httpd", "-f", "-p", "80", "-h", "/www"],
                "ExposedPorts": {"80/tcp": {}},
                "User": "www-data",
                "WorkingDir": "/www",
            }),
            ..Default::default()
        },
    ))
}

/// Files of the `layered` image after all layers are applied, sorted:
/// (path, Some(contents) for files / None for directories and the symlink).
///
/// - layer 1 (gzip): `a/keep`, `a/gone`, `dir/old1`, `dir/sub/old2`,
///   `replaced` ("first"), `doomed`;
/// - layer 2 (gzip): whiteouts `a/.wh.gone` and `.wh.doomed`, opaque
///   `dir/.wh..wh..opq` (hides `dir/old1` and `dir/sub`), new `dir/new`;
/// - layer 3 (uncompressed): symlink `link-to-keep -> a/keep`, file
///   `same-as-keep` plus hard link `hardlink-to-same` to it (same inode),
///   `dir/sub/fresh` (so `dir/sub` exists again, without `old2`), and
///   `replaced` ("second").
pub const LAYERED_TREE: &[(&str, Option<&str>)] = &[
    ("a", None),
    ("a/keep", Some("keep\n")),
    ("dir", None),
    ("dir/new", Some("new\n")),
    ("dir/sub", None),
    ("dir/sub/fresh", Some("fresh\n")),
    ("hardlink-to-same", Some("keep\n")),
    ("link-to-keep", None),
    ("replaced", Some("second\n")),
    ("same-as-keep", Some("keep\n")),
];

/// Three layers with whiteouts and an opaque directory.
pub fn layered() -> Image {
    let l1 = LayerBuilder::new()
        .dir("a", 0o755)
        .file("a/keep", 0o644, b"keep\n")
        .file("a/gone", 0o644, b"gone\n")
        .dir("dir", 0o755)
        .file("dir/old1", 0o644, b"old1\n")
        .dir("dir/sub", 0o755)
        .file("dir/sub/old2", 0o644, b"old2\n")
        .file("replaced", 0o644, b"first\n")
        .file("doomed", 0o644, b"doomed\n")
        .finish(Compression::Gzip);
    let l2 = LayerBuilder::new()
        .dir("a", 0o755)
        .whiteout("a/gone")
        .dir("dir", 0o755)
        .opaque("dir")
        .file("dir/new", 0o644, b"new\n")
        .whiteout("doomed")
        .finish(Compression::Gzip);
    let l3 = LayerBuilder::new()
        .symlink("link-to-keep", "a/keep")
        .file("same-as-keep", 0o644, b"keep\n")
        .hardlink("hardlink-to-same", "same-as-keep")
        .dir("dir", 0o755)
        .dir("dir/sub", 0o755)
        .file("dir/sub/fresh", 0o644, b"fresh\n")
        .file("replaced", 0o644, b"second\n")
        .finish(Compression::None);
    image(vec![l1, l2, l3], &ImageSpec::default())
}

/// An index with linux/amd64 and linux/arm64 images; `/arch` says which.
pub fn multiarch(docker: bool) -> Index {
    let imgs = ["amd64", "arm64"]
        .iter()
        .map(|arch| {
            let l = LayerBuilder::new()
                .file("arch", 0o644, format!("{arch}\n").as_bytes())
                .finish(Compression::Gzip);
            image(
                vec![l],
                &ImageSpec {
                    architecture: (*arch).into(),
                    docker,
                    ..Default::default()
                },
            )
        })
        .collect();
    index(imgs, docker)
}

/// Deterministic pseudo-random bytes (xorshift64*).
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

pub use crate::big::{big, big_uncached};

/// References of the standard fixtures in a registry.
#[derive(Clone, Debug)]
pub struct Published {
    pub host: String,
    pub busybox: String,
    pub busybox_docker: String,
    pub busybox_zstd: String,
    pub httpd: String,
    pub layered: String,
    pub multiarch: String,
    pub busybox_image: Image,
    pub httpd_image: Image,
    pub layered_image: Image,
    pub multiarch_index: Index,
    /// Every pushed reference with its manifest (or index) digest.
    pub digests: Vec<(String, String)>,
}

/// What [`push_standard`] pushed.
pub type Pushed = Published;

/// Push the standard fixtures to an open `reg`.
pub fn push_standard(reg: &Registry) -> Result<Pushed> {
    publish(reg, None)
}

/// Push the standard fixtures to `reg`.
pub fn publish(reg: &Registry, creds: Option<(&str, &str)>) -> Result<Published> {
    let mut p = Pusher::new(&reg.url(), creds);
    let host = reg.host();
    let mut digests = Vec::new();
    let mut record = |repo_tag: &str, digest: String| {
        digests.push((format!("{host}/{repo_tag}"), digest));
    };
    let bb = busybox()?;
    record(
        "library/busybox:latest",
        p.image("library/busybox", "latest", &bb)?,
    );
    let bbd = busybox_docker()?;
    record(
        "podctl/busybox-docker:v1",
        p.image("podctl/busybox-docker", "v1", &bbd)?,
    );
    let bbz = busybox_zstd()?;
    record(
        "podctl/busybox-zstd:v1",
        p.image("podctl/busybox-zstd", "v1", &bbz)?,
    );
    let web = httpd()?;
    record(
        "podctl/httpd:latest",
        p.image("podctl/httpd", "latest", &web)?,
    );
    let lay = layered();
    record("podctl/layered:v1", p.image("podctl/layered", "v1", &lay)?);
    let ma = multiarch(false);
    record(
        "podctl/multiarch:v1",
        p.index("podctl/multiarch", "v1", &ma)?,
    );
    Ok(Published {
        digests,
        busybox: format!("{host}/library/busybox:latest"),
        busybox_docker: format!("{host}/podctl/busybox-docker:v1"),
        busybox_zstd: format!("{host}/podctl/busybox-zstd:v1"),
        httpd: format!("{host}/podctl/httpd:latest"),
        layered: format!("{host}/podctl/layered:v1"),
        multiarch: format!("{host}/podctl/multiarch:v1"),
        host,
        busybox_image: bb,
        httpd_image: web,
        layered_image: lay,
        multiarch_index: ma,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::{OCI_INDEX, OCI_MANIFEST};

    fn http(url: &str) -> Result<reqwest::blocking::Response> {
        reqwest::blocking::Client::new()
            .get(url)
            .header("Accept", format!("{OCI_INDEX}, {OCI_MANIFEST}"))
            .send()
            .map_err(|source| TestbedError::Http {
                url: url.into(),
                source,
            })
    }

    #[test]
    fn fixtures_are_deterministic() -> Result<()> {
        assert_eq!(busybox()?.manifest_digest, busybox()?.manifest_digest);
        assert_eq!(layered().manifest_digest, layered().manifest_digest);
        assert_eq!(multiarch(false).digest, multiarch(false).digest);
        assert_eq!(multiarch(true).digest, multiarch(true).digest);
        let a = crate::big::big_uncached(1 << 20)?;
        assert_eq!(
            a.manifest_digest,
            crate::big::big_uncached(1 << 20)?.manifest_digest
        );
        assert_eq!(a.layers.len(), 5);
        Ok(())
    }

    #[test]
    fn big_is_cached_on_disk() -> Result<()> {
        let size = (3 << 20) + 12345;
        let _ = std::fs::remove_dir_all(crate::big::big_cache_dir(size));
        let first = big(size);
        assert!(crate::big::big_cache_dir(size).join("layers.json").exists());
        let second = big(size);
        assert_eq!(first.manifest_digest, second.manifest_digest);
        assert_eq!(
            first.manifest_digest,
            crate::big::big_uncached(size)?.manifest_digest
        );
        let _ = std::fs::remove_dir_all(crate::big::big_cache_dir(size));
        Ok(())
    }

    /// Unpack the busybox layers with GNU tar and run a shell in a chroot:
    /// the image is complete (libraries, loader, applet links, /etc).
    #[test]
    fn busybox_runs_in_a_chroot() -> Result<()> {
        let root = tempfile::tempdir().map_err(io_err("create", "tempdir"))?;
        for (i, l) in busybox_layers(Compression::Gzip)?.iter().enumerate() {
            let path = root.path().join(format!("../layer{i}.tgz"));
            std::fs::write(&path, &l.blob).map_err(io_err("write", path.display()))?;
            let st = Command::new("tar")
                .arg("-xzf")
                .arg(&path)
                .arg("-C")
                .arg(root.path())
                .status()
                .map_err(io_err("run", "tar"))?;
            let _ = std::fs::remove_file(&path);
            assert!(st.success(), "GNU tar unpacks layer {i}");
        }
        let out = Command::new("chroot")
            .arg(root.path())
            .args([
                "/bin/sh",
                "-c",
                "id -u www-data; id -g nobody; ls /usr/bin/wget; echo ok",
            ])
            .env_clear()
            .env("PATH", "/bin:/usr/bin:/sbin:/usr/sbin")
            .output()
            .map_err(io_err("run", "chroot"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text, "33\n65534\n/usr/bin/wget\nok\n", "{out:?}");
        Ok(())
    }

    #[test]
    fn push_standard_is_deterministic_across_registries() -> Result<()> {
        let (r1, r2) = (Registry::start()?, Registry::start()?);
        let a = push_standard(&r1)?;
        let b = push_standard(&r2)?;
        let strip = |p: &Pushed, host: &str| -> Vec<(String, String)> {
            p.digests
                .iter()
                .map(|(r, d)| (r.replace(host, "HOST"), d.clone()))
                .collect()
        };
        assert_eq!(strip(&a, &r1.host()), strip(&b, &r2.host()));
        assert_eq!(a.digests.len(), 6);
        // Pushing again is a no-op with the same digests.
        assert_eq!(push_standard(&r1)?.digests, a.digests);
        Ok(())
    }

    #[test]
    fn multiarch_index_resolves_to_two_manifests() -> Result<()> {
        let reg = Registry::start()?;
        let pushed = push_standard(&reg)?;
        let url = format!("{}/v2/podctl/multiarch/manifests/v1", reg.url());
        let r = http(&url)?;
        assert_eq!(r.status().as_u16(), 200);
        let ct = r
            .headers()
            .get("Content-Type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert_eq!(ct, OCI_INDEX);
        let body = r.bytes().map_err(|source| TestbedError::Http {
            url: url.clone(),
            source,
        })?;
        assert_eq!(crate::sha256(&body), pushed.multiarch_index.digest);
        let idx: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let ms = idx["manifests"].as_array().cloned().unwrap_or_default();
        assert_eq!(ms.len(), 2);
        let mut archs = Vec::new();
        for m in ms {
            let arch = m["platform"]["architecture"].as_str().unwrap_or_default();
            assert_eq!(m["platform"]["os"], "linux");
            let d = m["digest"].as_str().unwrap_or_default();
            let url = format!("{}/v2/podctl/multiarch/manifests/{d}", reg.url());
            let r = http(&url)?;
            assert_eq!(r.status().as_u16(), 200, "{url}");
            let img = pushed
                .multiarch_index
                .images
                .iter()
                .find(|i| i.manifest_digest == d);
            assert_eq!(img.map(|i| i.architecture.as_str()), Some(arch));
            archs.push(arch.to_string());
        }
        assert_eq!(archs, ["amd64", "arm64"]);
        Ok(())
    }
}
