//! Certificates for a throw-away control plane: one CA made with openssl,
//! server and client certificates it signs, and kubeconfigs that use them.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Certificates signed by one CA, in `dir`.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let d = dir.to_path_buf();
        run(Command::new("openssl")
            .current_dir(&d)
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
            ])
            .args([
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=podctl-test-ca",
            ]));
        run(Command::new("openssl")
            .current_dir(&d)
            .args(["genrsa", "-out", "sa.key", "2048"]));
        run(Command::new("openssl")
            .current_dir(&d)
            .args(["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]));
        Pki { dir: d }
    }

    /// `<name>.crt` / `<name>.key` for `subject`; a server certificate for
    /// loopback when `server`, else a client certificate.
    pub fn cert(&self, name: &str, subject: &str, server: bool) -> (PathBuf, PathBuf) {
        self.cert_for(name, subject, server.then_some(&[][..]))
    }

    /// A server certificate for loopback and the addresses `ips`.
    pub fn server_cert(&self, name: &str, subject: &str, ips: &[Ipv4Addr]) -> (PathBuf, PathBuf) {
        self.cert_for(name, subject, Some(ips))
    }

    fn cert_for(
        &self,
        name: &str,
        subject: &str,
        server: Option<&[Ipv4Addr]>,
    ) -> (PathBuf, PathBuf) {
        let d = &self.dir;
        run(Command::new("openssl")
            .current_dir(d)
            .args(["req", "-newkey", "rsa:2048", "-nodes", "-keyout"])
            .arg(format!("{name}.key"))
            .arg("-out")
            .arg(format!("{name}.csr"))
            .args(["-subj", subject]));
        let ext = match server {
            Some(ips) => {
                let extra: String = ips.iter().map(|ip| format!(",IP:{ip}")).collect();
                format!("subjectAltName=IP:127.0.0.1,IP:10.96.0.1{extra},DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n")
            }
            None => "extendedKeyUsage=clientAuth\n".to_string(),
        };
        let ext_file = d.join(format!("{name}.ext"));
        std::fs::write(&ext_file, ext).unwrap_or_else(|e| panic!("{e}"));
        run(Command::new("openssl")
            .current_dir(d)
            .args(["x509", "-req", "-in"])
            .arg(format!("{name}.csr"))
            .args([
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
            ])
            .arg(format!("{name}.crt"))
            .arg("-extfile")
            .arg(&ext_file));
        (d.join(format!("{name}.crt")), d.join(format!("{name}.key")))
    }

    /// A kubeconfig for a client certificate.
    pub fn kubeconfig(&self, name: &str, server: &str, crt: &Path, key: &Path) -> PathBuf {
        let user = format!(
            "client-certificate: {}\n    client-key: {}",
            crt.display(),
            key.display()
        );
        self.write_kubeconfig(name, server, &user)
    }

    /// A kubeconfig for a bearer token (a bootstrap token).
    pub fn token_kubeconfig(&self, name: &str, server: &str, token: &str) -> PathBuf {
        self.write_kubeconfig(name, server, &format!("token: {token}"))
    }

    /// `<name>.kubeconfig`: the cluster at `server` trusted by this CA, and
    /// user `name` with the `user` block's lines.
    fn write_kubeconfig(&self, name: &str, server: &str, user: &str) -> PathBuf {
        let p = self.dir.join(format!("{name}.kubeconfig"));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
             users:\n- name: {name}\n  user:\n    {user}\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: {name}\ncurrent-context: test\n",
            ca = self.dir.join("ca.crt").display(),
        );
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
        p
    }
}

/// The serial and NotAfter of the certificate in `path` (openssl).
pub fn serial_and_end(path: &Path) -> (String, String) {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-enddate", "-in"])
        .arg(path)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let field = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_default()
            .to_string()
    };
    (field("serial="), field("notAfter="))
}

/// The client certificate file the kubeconfig points at.
pub fn client_cert_of(kubeconfig: &Path) -> PathBuf {
    let text = std::fs::read_to_string(kubeconfig).unwrap_or_default();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("client-certificate:"))
        .map(|p| PathBuf::from(p.trim().trim_matches('\'').trim_matches('"')))
        .unwrap_or_default()
}
