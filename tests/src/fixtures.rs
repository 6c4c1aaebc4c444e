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

/// Files of the `layered` image after all layers are applied:
/// (path, Some(contents) for files / None for directories).
pub const LAYERED_TREE: &[(&str, Option<&str>)] = &[
    ("a", None),
    ("a/keep", Some("keep\n")),
    ("dir", None),
    ("dir/new", Some("new\n")),
    ("dir/sub", None),
    ("dir/sub/fresh", Some("fresh\n")),
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

/// A benchmark image of about `total` bytes (uncompressed) in five layers:
/// half incompressible data, half text, in files from 4 KiB to 4 MiB.
pub fn big(total: usize) -> Image {
    let per_layer = total / 5;
    let words = b"podctl pulls layers while it unpacks them into overlay snapshots ";
    let layers = (0..5u64)
        .map(|li| {
            let mut b = LayerBuilder::new().dir(&format!("data{li}"), 0o755);
            let mut done = 0usize;
            let mut i = 0u64;
            while done < per_layer {
                let size = [4 << 10, 64 << 10, 512 << 10, 4 << 20][(i % 4) as usize];
                let data = if (i / 4).is_multiple_of(2) {
                    noise(li * 1_000_003 + i, size)
                } else {
                    words.iter().cycle().take(size).copied().collect()
                };
                b = b.file(&format!("data{li}/f{i:05}"), 0o644, &data);
                done += size;
                i += 1;
            }
            b.finish(Compression::Gzip)
        })
        .collect();
    image(layers, &ImageSpec::default())
}

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
}

/// Push the standard fixtures to `reg`.
pub fn publish(reg: &Registry, creds: Option<(&str, &str)>) -> Result<Published> {
    let mut p = Pusher::new(&reg.url(), creds);
    let host = reg.host();
    let bb = busybox()?;
    p.image("library/busybox", "latest", &bb)?;
    let bbd = busybox_docker()?;
    p.image("podctl/busybox-docker", "v1", &bbd)?;
    let bbz = busybox_zstd()?;
    p.image("podctl/busybox-zstd", "v1", &bbz)?;
    let web = httpd()?;
    p.image("podctl/httpd", "latest", &web)?;
    let lay = layered();
    p.image("podctl/layered", "v1", &lay)?;
    let ma = multiarch(false);
    p.index("podctl/multiarch", "v1", &ma)?;
    Ok(Published {
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

    #[test]
    fn fixtures_are_deterministic() -> Result<()> {
        assert_eq!(busybox()?.manifest_digest, busybox()?.manifest_digest);
        assert_eq!(layered().manifest_digest, layered().manifest_digest);
        assert_eq!(multiarch(false).digest, multiarch(false).digest);
        assert_eq!(big(1 << 20).manifest_digest, big(1 << 20).manifest_digest);
        Ok(())
    }

    #[test]
    fn publish_to_a_real_registry_and_auth_is_enforced() -> Result<()> {
        use crate::registry::Auth;
        let reg = Registry::start()?;
        let pubd = publish(&reg, None)?;
        let again = publish(&reg, None)?;
        assert_eq!(
            pubd.busybox_image.manifest_digest,
            again.busybox_image.manifest_digest
        );
        let client = reqwest::blocking::Client::new();
        let url = format!("{}/v2/podctl/multiarch/manifests/v1", reg.url());
        let resp = client
            .get(&url)
            .header("Accept", crate::oci::OCI_INDEX)
            .send()
            .map_err(|e| TestbedError::Http {
                url: url.clone(),
                source: e,
            })?;
        assert_eq!(resp.status().as_u16(), 200);
        for auth in [
            Auth::Basic {
                user: "u".into(),
                pass: "p".into(),
            },
            Auth::Token {
                user: "u".into(),
                pass: "p".into(),
            },
        ] {
            let reg = Registry::start_with(auth)?;
            let mut p = Pusher::new(&reg.url(), Some(("u", "p")));
            p.image("podctl/layered", "v1", &layered())?;
            let url = format!("{}/v2/podctl/layered/manifests/v1", reg.url());
            let anon = client.get(&url).send().map_err(|e| TestbedError::Http {
                url: url.clone(),
                source: e,
            })?;
            assert_eq!(anon.status().as_u16(), 401);
        }
        Ok(())
    }
}
