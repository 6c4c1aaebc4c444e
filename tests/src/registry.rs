//! A real distribution registry (`/usr/bin/docker-registry`) on a free
//! 127.0.0.1 port with its own config and storage, stopped on drop.

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

    /// A registry that needs credentials.
    pub fn start_with(auth: Auth) -> Result<Self> {
        let dir = tempfile::tempdir().map_err(io_err("create tempdir", "registry"))?;
        let mut last = None;
        for _ in 0..3 {
            match Self::try_start(&dir, &auth) {
                Ok((child, port, realm)) => {
                    return Ok(Registry {
                        child,
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
            url: "127.0.0.1".into(),
            reason: "did not start".into(),
        }))
    }

    fn try_start(dir: &tempfile::TempDir, auth: &Auth) -> Result<(Child, u16, Option<TokenRealm>)> {
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
            "version: 0.1\nlog:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{tls_yaml}{auth_yaml}",
            storage.display()
        );
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, config).map_err(io_err("write", cfg_path.display()))?;
        let log_path = dir.path().join("registry.log");
        let log = std::fs::File::create(&log_path).map_err(io_err("create", log_path.display()))?;
        let log2 = log.try_clone().map_err(io_err("dup", log_path.display()))?;
        let mut child = Command::new("/usr/bin/docker-registry")
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
        let url = format!("{scheme}://127.0.0.1:{port}/v2/");
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

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT` (`https://` for [`Auth::Tls`])
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
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
            .join(&hex[..2])
            .join(hex)
            .join("data")
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
