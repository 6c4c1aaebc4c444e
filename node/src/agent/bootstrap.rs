//! TLS bootstrap, as the kubelet does it: with a bootstrap token (the
//! bootstrap kubeconfig) the node asks for its own client certificate by a
//! CertificateSigningRequest (`kubernetes.io/kube-apiserver-client-kubelet`,
//! subject `system:node:<name>` in `system:nodes`), waits for it to be
//! approved and signed, and writes its key, certificate and kubeconfig.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;

use crate::error::{api_code, ApiContext, IoContext, NodeError, Result};

pub const SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

fn bad(what: &Path, reason: impl std::fmt::Display) -> NodeError {
    NodeError::Source {
        what: format!("bootstrap {}", what.display()),
        reason: reason.to_string(),
    }
}

/// A new key and the PEM CSR for `system:node:<node>`.
pub fn key_and_csr(node: &str) -> std::result::Result<(String, String), String> {
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "system:nodes");
    dn.push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key).map_err(|e| e.to_string())?;
    Ok((key.serialize_pem(), csr.pem().map_err(|e| e.to_string())?))
}

/// Get a node certificate with the bootstrap credentials and write
/// `kubeconfig` (with `<cert_dir>/node-client.{crt,key}`). Nothing to do
/// when `kubeconfig` exists already.
pub async fn bootstrap(
    bootstrap_kubeconfig: &Path,
    kubeconfig: &Path,
    cert_dir: &Path,
    node: &str,
    timeout: Duration,
) -> Result<()> {
    if kubeconfig.exists() {
        return Ok(());
    }
    let kc =
        Kubeconfig::read_from(bootstrap_kubeconfig).map_err(|e| bad(bootstrap_kubeconfig, e))?;
    let client = client_for(kc.clone(), bootstrap_kubeconfig, "bootstrap").await?;
    let (key_pem, cert) =
        request_certificate(&client, node, timeout)
            .await
            .map_err(|e| match e {
                NodeError::Source { reason, .. } => bad(bootstrap_kubeconfig, reason),
                other => other,
            })?;
    std::fs::create_dir_all(cert_dir).ctx("create", cert_dir)?;
    let crt_path = cert_dir.join("node-client.crt");
    let key_path = cert_dir.join("node-client.key");
    write_private(&key_path, key_pem.as_bytes())?;
    write_private(&crt_path, &cert)?;
    let text =
        node_kubeconfig(&kc, &crt_path, &key_path).map_err(|e| bad(bootstrap_kubeconfig, e))?;
    write_private(kubeconfig, text.as_bytes())?;
    tracing::info!(kubeconfig = %kubeconfig.display(), "node credentials written");
    Ok(())
}

/// An API client for the kubeconfig `kc` read from `path`; errors name
/// `what` and the path.
pub async fn client_for(kc: Kubeconfig, path: &Path, what: &str) -> Result<Client> {
    let bad = |reason: String| NodeError::Source {
        what: format!("{what} {}", path.display()),
        reason,
    };
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| bad(e.to_string()))?;
    Client::try_from(cfg).map_err(|e| bad(e.to_string()))
}

/// Ask for a node client certificate with `client`'s credentials (a
/// bootstrap token, or the node's current certificate when renewing) and
/// wait up to `timeout` for it to be signed: the new key (PEM) and the
/// certificate (PEM).
pub async fn request_certificate(
    client: &Client,
    node: &str,
    timeout: Duration,
) -> Result<(String, Vec<u8>)> {
    let what = Path::new("CertificateSigningRequest");
    let (key_pem, csr_pem) = key_and_csr(node).map_err(|e| bad(what, e))?;
    let name = format!(
        "node-csr-{node}-{}",
        jiff::Timestamp::now().as_nanosecond() / 1_000_000
    );
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(csr_pem.into_bytes()),
            signer_name: SIGNER.into(),
            // The set every approver since 1.19 accepts for node clients.
            usages: Some(vec![
                "digital signature".into(),
                "key encipherment".into(),
                "client auth".into(),
            ]),
            ..Default::default()
        },
        status: None,
    };
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    api.create(&PostParams::default(), &csr)
        .await
        .api(format!("create CertificateSigningRequest {name}"))?;
    tracing::info!(csr = %name, "waiting for the node certificate");
    let deadline = Instant::now() + timeout;
    loop {
        match api.get(&name).await {
            Ok(c) => {
                let st = c.status.unwrap_or_default();
                if let Some(cert) = st.certificate.filter(|c| !c.0.is_empty()) {
                    return Ok((key_pem, cert.0));
                }
                if let Some(d) = st
                    .conditions
                    .unwrap_or_default()
                    .into_iter()
                    .find(|c| c.type_ == "Denied" || c.type_ == "Failed")
                {
                    return Err(bad(
                        what,
                        format!("CSR {name} {}: {}", d.type_, d.message.unwrap_or_default()),
                    ));
                }
            }
            Err(e) if api_code(&e) == Some(404) => {}
            Err(e) => return Err(e).api(format!("get CertificateSigningRequest {name}")),
        }
        if Instant::now() > deadline {
            return Err(bad(what, format!("CSR {name} not signed in time")));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Written 0600 through a temporary file and a rename.
pub(crate) fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp: PathBuf = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .ctx("create", &tmp)?;
    f.write_all(data).ctx("write", &tmp)?;
    f.sync_all().ctx("fsync", &tmp)?;
    std::fs::rename(&tmp, path).ctx("rename", path)
}

/// The bootstrap kubeconfig's cluster with the node's own certificate.
pub(crate) fn node_kubeconfig(
    boot: &Kubeconfig,
    crt: &Path,
    key: &Path,
) -> std::result::Result<String, String> {
    let ctx_name = boot.current_context.clone().unwrap_or_default();
    let cluster_name = boot
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .or_else(|| boot.clusters.first().map(|c| c.name.clone()))
        .ok_or("no cluster in the bootstrap kubeconfig")?;
    let cluster = boot
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .ok_or_else(|| format!("cluster {cluster_name:?} not found"))?;
    let cluster = serde_json::to_value(cluster).map_err(|e| e.to_string())?;
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "default-auth", "user": {
            "client-certificate": crt.display().to_string(),
            "client-key": key.display().to_string(),
        }}],
        "contexts": [{"name": "default-context", "context": {
            "cluster": cluster_name, "user": "default-auth",
        }}],
        "current-context": "default-context",
    });
    serde_yaml::to_string(&doc).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csr_names_the_node_in_system_nodes() {
        use base64::Engine as _;
        let (key, csr) = key_and_csr("n1").unwrap_or_else(|e| panic!("{e}"));
        assert!(key.contains("PRIVATE KEY"));
        let der = base64::engine::general_purpose::STANDARD
            .decode(
                csr.lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect::<String>(),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        use x509_parser::prelude::FromDer as _;
        let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
            .unwrap_or_else(|e| panic!("{e}"));
        let subject = req.certification_request_info.subject.to_string();
        assert!(subject.contains("CN=system:node:n1"), "{subject}");
        assert!(subject.contains("O=system:nodes"), "{subject}");
    }
}
