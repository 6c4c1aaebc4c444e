//! A small bearer-token realm for registry token auth: checks Basic
//! credentials and issues RS256 JWTs that the registry verifies against the
//! fixture's self-signed certificate (signing is done by the openssl CLI).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine as _;

use crate::{io_err, Result, TestbedError};

pub struct TokenRealm {
    port: u16,
    cert: PathBuf,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

struct Signer {
    key: PathBuf,
    cert_der_b64: String,
    user: String,
    pass: String,
}

fn openssl(args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .map_err(io_err("run", "openssl"))?;
    if !out.status.success() {
        return Err(TestbedError::Command {
            cmd: format!("openssl {}", args.join(" ")),
            reason: String::from_utf8_lossy(&out.stderr).into(),
        });
    }
    Ok(out.stdout)
}

impl TokenRealm {
    pub fn start(dir: &Path, user: &str, pass: &str) -> Result<Self> {
        let key = dir.join("token.key");
        let cert = dir.join("token.crt");
        let (k, c) = (key.display().to_string(), cert.display().to_string());
        openssl(&["genrsa", "-out", &k, "2048"])?;
        openssl(&[
            "req",
            "-new",
            "-x509",
            "-key",
            &k,
            "-out",
            &c,
            "-days",
            "2",
            "-subj",
            "/CN=podctl-testbed-token",
        ])?;
        let der = openssl(&["x509", "-in", &c, "-outform", "DER"])?;
        let signer = Arc::new(Signer {
            key,
            cert_der_b64: base64::engine::general_purpose::STANDARD.encode(der),
            user: user.into(),
            pass: pass.into(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io_err("bind", "token realm"))?;
        let port = listener
            .local_addr()
            .map_err(io_err("local_addr", "token realm"))?
            .port();
        listener
            .set_nonblocking(true)
            .map_err(io_err("nonblocking", "token realm"))?;
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (req2, stop2) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        req2.fetch_add(1, Ordering::SeqCst);
                        let signer = signer.clone();
                        std::thread::spawn(move || {
                            let _ = serve(s, &signer);
                        });
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        Ok(TokenRealm {
            port,
            cert,
            requests,
            stop,
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for TokenRealm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(stream: TcpStream, signer: &Signer) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let mut auth = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                auth = Some(v.trim().to_string());
            }
        }
    }
    let target = first.split_whitespace().nth(1).unwrap_or("/");
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut service = String::new();
    let mut scopes = Vec::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "service" => service = v,
            "scope" => scopes.push(v),
            _ => {}
        }
    }
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", signer.user, signer.pass))
    );
    let mut out = stream;
    if auth.as_deref() != Some(expected.as_str()) {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
        write!(
            out,
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return Ok(());
    }
    let token = match sign(signer, &service, &scopes) {
        Ok(t) => t,
        Err(e) => {
            let body = e.to_string();
            write!(
                out,
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            return Ok(());
        }
    };
    let body =
        serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut sink = Vec::new();
    let _ = reader.read_to_end(&mut sink);
    Ok(())
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn sign(signer: &Signer, service: &str, scopes: &[String]) -> Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({
                "type": kind, "name": name,
                "actions": actions.split(',').collect::<Vec<_>>(),
            }))
        })
        .collect();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [signer.cert_der_b64]});
    let claims = serde_json::json!({
        "iss": "podctl-testbed", "sub": signer.user, "aud": service,
        "exp": now + 300, "nbf": now.saturating_sub(10), "iat": now,
        "jti": format!("{now}-{}", std::process::id()), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let key = signer.key.display().to_string();
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign", &key])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(io_err("run", "openssl dgst"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(signing_input.as_bytes())
            .map_err(io_err("write", "openssl dgst"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(io_err("wait", "openssl dgst"))?;
    if !out.status.success() {
        return Err(TestbedError::Command {
            cmd: "openssl dgst".into(),
            reason: "signing failed".into(),
        });
    }
    Ok(format!("{signing_input}.{}", b64url(&out.stdout)))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
