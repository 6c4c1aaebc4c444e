//! A real distribution registry (`/usr/bin/docker-registry`) on a free
//! 127.0.0.1 port (or another address of this host: [`Registry::start_at`])
//! with its own config and storage, stopped on drop.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::token::TokenRealm;
use crate::{io_err, Result, TestbedError};

/// Authentication a registry fixture demands.
#[derive(Clone, Debug)]
pub enum Auth {
    None,
    /// htpasswd (bcrypt) Basic auth.
    Basic {
        user: String,
        pass: String,
    },
    /// Registry token auth with a bearer-token realm run by the fixture.
    Token {
        user: String,
        pass: String,
    },
    /// No auth, but HTTPS with a self-signed certificate for 127.0.0.1.
    Tls,
}

/// A running registry.
pub struct Registry {
    child: Child,
    ip: String,
    port: u16,
    tls: bool,
    dir: tempfile::TempDir,
    realm: Option<TokenRealm>,
}

impl Registry {
    /// An open registry.
    pub fn start() -> Result<Self> {
        Self::start_with(Auth::None)
    }

    /// A registry demanding htpasswd (bcrypt) Basic auth for everything,
    /// `GET /v2/` included.
    pub fn start_basic_auth(user: &str, pass: &str) -> Result<Self> {
        Self::start_with(Auth::Basic {
            user: user.into(),
            pass: pass.into(),
        })
    }

    /// A registry with real token auth: it answers 401 with a
    /// `WWW-Authenticate: Bearer realm=...,service=...,scope=...` challenge
    /// and accepts RS256 JWTs from the fixture's token realm, which hands
    /// them out for `user`/`pass` only.
    pub fn start_token_auth(user: &str, pass: &str) -> Result<Self> {
        Self::start_with(Auth::Token {
            user: user.into(),
            pass: pass.into(),
        })
    }

    /// An open registry listening on `ip` (an address of this host that
    /// network namespaces reach) instead of loopback.
    pub fn start_at(ip: std::net::Ipv4Addr) -> Result<Self> {
        Self::start_on(&ip.to_string(), Auth::None)
    }

    /// A registry configured by `auth`.
    pub fn start_with(auth: Auth) -> Result<Self> {
        Self::start_on("127.0.0.1", auth)
    }

    fn start_on(ip: &str, auth: Auth) -> Result<Self> {
        let dir = tempfile::tempdir().map_err(io_err("create tempdir", "registry"))?;
        let mut last = None;
        for _ in 0..3 {
            match Self::try_start(&dir, ip, &auth) {
                Ok((child, port, realm)) => {
                    return Ok(Registry {
                        child,
                        ip: ip.into(),
                        port,
                        tls: matches!(auth, Auth::Tls),
                        dir,
                        realm,
                    })
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| TestbedError::Registry {
            url: ip.into(),
            reason: "did not start".into(),
        }))
    }

    fn try_start(
        dir: &tempfile::TempDir,
        ip: &str,
        auth: &Auth,
    ) -> Result<(Child, u16, Option<TokenRealm>)> {
        let port = free_port()?;
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).map_err(io_err("create", storage.display()))?;
        let mut realm = None;
        let mut tls_yaml = String::new();
        let auth_yaml = match auth {
            Auth::None => String::new(),
            Auth::Tls => {
                let key = dir.path().join("tls.key").display().to_string();
                let crt = dir.path().join("tls.crt").display().to_string();
                let out = Command::new("openssl")
                    .args([
                        "req",
                        "-x509",
                        "-newkey",
                        "rsa:2048",
                        "-nodes",
                        "-keyout",
                        &key,
                        "-out",
                        &crt,
                        "-days",
                        "2",
                        "-subj",
                        "/CN=127.0.0.1",
                        "-addext",
                        "subjectAltName=IP:127.0.0.1",
                    ])
                    .output()
                    .map_err(io_err("run", "openssl req"))?;
                if !out.status.success() {
                    return Err(TestbedError::Command {
                        cmd: "openssl req".into(),
                        reason: String::from_utf8_lossy(&out.stderr).into(),
                    });
                }
                tls_yaml = format!("  tls:\n    certificate: {crt}\n    key: {key}\n");
                String::new()
            }
            Auth::Basic { user, pass } => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, pass])
                    .output()
                    .map_err(io_err("run", "htpasswd"))?;
                if !out.status.success() {
                    return Err(TestbedError::Command {
                        cmd: "htpasswd".into(),
                        reason: String::from_utf8_lossy(&out.stderr).into(),
                    });
                }
                let path = dir.path().join("htpasswd");
                std::fs::write(&path, &out.stdout).map_err(io_err("write", path.display()))?;
                format!(
                    "auth:\n  htpasswd:\n    realm: podctl-test\n    path: {}\n",
                    path.display()
                )
            }
            Auth::Token { user, pass } => {
                let r = TokenRealm::start(dir.path(), user, pass)?;
                let yaml = format!(
                    "auth:\n  token:\n    realm: {}\n    service: podctl-registry\n    issuer: podctl-testbed\n    rootcertbundle: {}\n",
                    r.url(),
                    r.cert_path().display()
                );
                realm = Some(r);
                yaml
            }
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  redirect:\n    disable: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhealth:\n  storagedriver:\n    enabled: false\nhttp:\n  addr: {ip}:{port}\n{tls_yaml}{auth_yaml}",
            storage.display()
        );
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, config).map_err(io_err("write", cfg_path.display()))?;
        let log_path = dir.path().join("registry.log");
        let log = std::fs::File::create(&log_path).map_err(io_err("create", log_path.display()))?;
        let log2 = log.try_clone().map_err(io_err("dup", log_path.display()))?;
        let mut cmd = Command::new("/usr/bin/docker-registry");
        let mut child = crate::signals::unblocked(&mut cmd)
            .arg("serve")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(io_err("spawn", "/usr/bin/docker-registry"))?;
        let scheme = if matches!(auth, Auth::Tls) {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://{ip}:{port}/v2/");
        let deadline = Instant::now() + Duration::from_secs(15);
        let client = reqwest::blocking::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .map_err(|e| TestbedError::Http {
                url: url.clone(),
                source: e,
            })?;
        loop {
            if let Ok(resp) = client.get(&url).send() {
                let s = resp.status().as_u16();
                if s == 200 || s == 401 {
                    return Ok((child, port, realm));
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(TestbedError::Registry {
                    url,
                    reason: format!("exited with {status}: {log}"),
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(TestbedError::Registry {
                    url,
                    reason: format!("no answer within 15 s: {log}"),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT` (the address of [`Registry::start_at`])
    pub fn host(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// `http://127.0.0.1:PORT` (`https://` for [`Auth::Tls`])
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.ip, self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The registry's storage root (to tamper with blobs in tests).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// File of a stored blob's data in the registry's filesystem driver.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(hex.get(..2).unwrap_or(hex))
            .join(hex)
            .join("data")
    }

    /// Replace the stored content of blob `digest` behind the registry's
    /// back: it then serves `data` under the old digest (the only way to get
    /// a blob whose content does not match its digest out of a real
    /// registry, which verifies digests on upload).
    pub fn tamper_blob(&self, digest: &str, data: &[u8]) -> Result<()> {
        let path = self.blob_data_path(digest);
        if !path.exists() {
            return Err(TestbedError::Registry {
                url: self.url(),
                reason: format!("blob {digest} is not stored at {}", path.display()),
            });
        }
        std::fs::write(&path, data).map_err(io_err("write", path.display()))
    }

    /// The registry's log (access log included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// How many GET requests for a blob the registry answered.
    pub fn blob_gets(&self, digest: &str) -> usize {
        let needle = format!("/blobs/{digest} ");
        self.log()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains(&needle))
            .count()
    }

    /// Token requests served by the token realm (0 without token auth).
    pub fn token_requests(&self) -> usize {
        self.realm.as_ref().map(|r| r.requests()).unwrap_or(0)
    }

    /// Path of the fixture's working directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Append a line to the log (marks test phases).
    pub fn mark(&self, text: &str) {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("registry.log"))
        {
            let _ = writeln!(f, "=== {text}");
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io_err("bind", "127.0.0.1:0"))?;
    let port = l
        .local_addr()
        .map_err(io_err("local_addr", "127.0.0.1:0"))?
        .port();
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::layered;
    use crate::oci::OCI_MANIFEST;
    use crate::push::Pusher;

    fn get(url: &str, auth: Option<&str>) -> Result<reqwest::blocking::Response> {
        let mut req = reqwest::blocking::Client::new()
            .get(url)
            .header("Accept", OCI_MANIFEST);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        req.send().map_err(|source| TestbedError::Http {
            url: url.into(),
            source,
        })
    }

    fn header(r: &reqwest::blocking::Response, name: &str) -> String {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn starts_answers_and_stops() -> Result<()> {
        let reg = Registry::start()?;
        let url = format!("{}/v2/", reg.url());
        assert_eq!(reg.url(), format!("http://{}", reg.host()));
        let r = get(&url, None)?;
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(
            header(&r, "Docker-Distribution-Api-Version"),
            "registry/2.0"
        );
        let dir = reg.dir().to_path_buf();
        drop(reg);
        assert!(get(&url, None).is_err(), "nothing listens after drop");
        assert!(!dir.exists(), "temp dir removed");
        Ok(())
    }

    #[test]
    fn basic_auth_refuses_anonymous_and_accepts_credentials() -> Result<()> {
        let reg = Registry::start_basic_auth("alice", "s3cret")?;
        let digest = Pusher::new(&reg.url(), Some(("alice", "s3cret"))).image(
            "podctl/layered",
            "v1",
            &layered(),
        )?;
        let url = format!("{}/v2/podctl/layered/manifests/v1", reg.url());
        let anon = get(&url, None)?;
        assert_eq!(anon.status().as_u16(), 401);
        assert!(header(&anon, "WWW-Authenticate").starts_with("Basic realm="));
        use base64::Engine as _;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let wrong = get(&url, Some(&format!("Basic {}", b64("alice:nope"))))?;
        assert_eq!(wrong.status().as_u16(), 401);
        let ok = get(&url, Some(&format!("Basic {}", b64("alice:s3cret"))))?;
        assert_eq!(ok.status().as_u16(), 200);
        assert_eq!(header(&ok, "Docker-Content-Digest"), digest);
        assert!(Pusher::new(&reg.url(), None)
            .image("podctl/layered", "v2", &layered())
            .is_err());
        Ok(())
    }

    #[test]
    fn token_auth_issues_tokens_the_registry_accepts() -> Result<()> {
        let reg = Registry::start_token_auth("alice", "s3cret")?;
        assert_eq!(reg.token_requests(), 0);
        let mut p = Pusher::new(&reg.url(), Some(("alice", "s3cret")));
        let digest = p.image("podctl/layered", "v1", &layered())?;
        assert!(reg.token_requests() >= 1);

        let url = format!("{}/v2/podctl/layered/manifests/v1", reg.url());
        let anon = get(&url, None)?;
        assert_eq!(anon.status().as_u16(), 401);
        let challenge = header(&anon, "WWW-Authenticate");
        assert!(
            challenge.starts_with("Bearer realm=\"http://127.0.0.1:"),
            "{challenge}"
        );
        assert!(
            challenge.contains("service=\"podctl-registry\""),
            "{challenge}"
        );
        assert!(
            challenge.contains("scope=\"repository:podctl/layered:pull\""),
            "{challenge}"
        );

        // The realm wants the right Basic credentials.
        let realm = challenge.split('"').nth(1).unwrap_or_default().to_string();
        let token_url =
            format!("{realm}?service=podctl-registry&scope=repository%3Apodctl%2Flayered%3Apull");
        let client = reqwest::blocking::Client::new();
        let send = |pass: Option<&str>| {
            let mut req = client.get(&token_url);
            if let Some(pass) = pass {
                req = req.basic_auth("alice", Some(pass));
            }
            req.send().map_err(|source| TestbedError::Http {
                url: token_url.clone(),
                source,
            })
        };
        assert_eq!(send(None)?.status().as_u16(), 401);
        assert_eq!(send(Some("wrong"))?.status().as_u16(), 401);
        let resp = send(Some("s3cret"))?;
        assert_eq!(resp.status().as_u16(), 200);
        let v: serde_json::Value = resp.json().map_err(|source| TestbedError::Http {
            url: token_url.clone(),
            source,
        })?;
        assert_eq!(v["expires_in"], 300);
        assert_eq!(v["token"], v["access_token"]);
        let token = v["token"].as_str().unwrap_or_default();
        assert_eq!(token.split('.').count(), 3);

        let ok = get(&url, Some(&format!("Bearer {token}")))?;
        assert_eq!(ok.status().as_u16(), 200);
        assert_eq!(header(&ok, "Docker-Content-Digest"), digest);
        // A pull-only token for another repository does not open this one.
        let other = get(
            &format!("{}/v2/podctl/other/manifests/v1", reg.url()),
            Some(&format!("Bearer {token}")),
        )?;
        assert_eq!(other.status().as_u16(), 401);
        // A forged signature is refused.
        let forged = format!("{}AAAA", token.trim_end_matches('='));
        assert_eq!(
            get(&url, Some(&format!("Bearer {forged}")))?
                .status()
                .as_u16(),
            401
        );

        let (status, _, _) = p.get_manifest("podctl/layered", "v1", OCI_MANIFEST)?;
        assert_eq!(status, 200);
        assert!(Pusher::new(&reg.url(), Some(("alice", "bad")))
            .image("podctl/layered", "v2", &layered())
            .is_err());
        Ok(())
    }
}
