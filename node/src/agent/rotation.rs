//! Client certificate rotation, as the kubelet's `--rotate-certificates`:
//! when 70–90 % (jittered) of the node certificate's lifetime has passed —
//! and never sooner than halfway through what is left of it — the node asks
//! for a new one by a CertificateSigningRequest made with its current
//! credentials (approved as `selfnodeclient`), writes the new key and
//! certificate to new files in the cert dir, then the kubeconfig pointing at
//! them (one atomic rename: the commit point; a crash before it keeps the old
//! pair), and swaps the API client every part of the agent shares: requests
//! from then on use the new certificate; the old files are removed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use kube::config::Kubeconfig;
use kube::Client;

use super::bootstrap;
use crate::error::{NodeError, Result};

fn bad(what: &Path, reason: impl std::fmt::Display) -> NodeError {
    NodeError::Source {
        what: format!("certificate rotation {}", what.display()),
        reason: reason.to_string(),
    }
}

/// The API client in use, replaceable under every clone of the [`Client`]
/// made by [`rotating_client`].
#[derive(Clone)]
pub struct Slot(Arc<RwLock<Client>>);

impl Slot {
    fn current(&self) -> Client {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn replace(&self, c: Client) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = c;
    }
}

impl tower::Service<http::Request<kube::client::Body>> for Slot {
    type Response = http::Response<kube::client::Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, std::result::Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<kube::client::Body>) -> Self::Future {
        let c = self.current();
        Box::pin(async move { c.send(req).await })
    }
}

/// A client from `kubeconfig`.
async fn client_from(kubeconfig: &Path) -> Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| bad(kubeconfig, e))?;
    bootstrap::client_for(kc, kubeconfig, "certificate rotation").await
}

/// A client whose credentials [`run`] can replace underneath.
pub async fn rotating_client(kubeconfig: &Path) -> Result<(Client, Slot)> {
    let inner = client_from(kubeconfig).await?;
    let ns = inner.default_namespace().to_string();
    let slot = Slot(Arc::new(RwLock::new(inner)));
    Ok((Client::new(slot.clone(), ns), slot))
}

/// The current user's certificate and key files in `kc`.
fn cert_files(kc: &Kubeconfig) -> Option<(PathBuf, PathBuf)> {
    let ctx = kc.current_context.as_deref()?;
    let user = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx)?
        .context
        .as_ref()?
        .user
        .clone()?;
    let auth = kc
        .auth_infos
        .iter()
        .find(|a| a.name == user)?
        .auth_info
        .as_ref()?;
    Some((
        PathBuf::from(auth.client_certificate.as_ref()?),
        PathBuf::from(auth.client_key.as_ref()?),
    ))
}

/// NotBefore and NotAfter (Unix seconds), or why they are unknown.
type Validity = std::result::Result<(i64, i64), String>;

/// The client certificate file `kubeconfig` names, with its validity
/// (or why it cannot be read); None without one (token auth).
fn current_cert(kubeconfig: &Path) -> Option<(PathBuf, Validity)> {
    let (crt, _) = Kubeconfig::read_from(kubeconfig)
        .ok()
        .and_then(|kc| cert_files(&kc))?;
    let v = std::fs::read(&crt)
        .map_err(|e| e.to_string())
        .and_then(|p| validity(&p));
    Some((crt, v))
}

/// Whether `kubeconfig` names a client certificate file that has expired
/// (a node down longer than its certificate lived: it bootstraps again).
pub fn expired(kubeconfig: &Path) -> bool {
    current_cert(kubeconfig)
        .is_some_and(|(_, v)| v.is_ok_and(|(_, until)| until <= jiff::Timestamp::now().as_second()))
}

/// NotBefore and NotAfter (Unix seconds) of the first certificate in `pem`.
pub fn validity(pem: &[u8]) -> Validity {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| e.to_string())?;
    let cert = p.parse_x509().map_err(|e| e.to_string())?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// When to renew a certificate valid `[not_before, not_after]`, at `now`,
/// `jitter` in [0, 1): 70–90 % into its lifetime, but not before halfway
/// through what is left (a short-lived certificate backdated by its signer
/// would otherwise be renewed again at once).
pub fn deadline(not_before: i64, not_after: i64, now: i64, jitter: f64) -> i64 {
    let total = (not_after - not_before).max(0) as f64;
    let at = not_before + (total * (0.7 + 0.2 * jitter.clamp(0.0, 1.0))) as i64;
    at.max(now + (not_after - now).max(0) / 2)
}

fn jitter() -> f64 {
    let n = jiff::Timestamp::now().subsec_nanosecond().unsigned_abs();
    f64::from(n % 1000) / 1000.0
}

/// Renew once: a new key and certificate, the kubeconfig rewritten to
/// them, the client swapped, the old files removed.
async fn renew(slot: &Slot, kubeconfig: &Path, cert_dir: &Path, node: &str) -> Result<()> {
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| bad(kubeconfig, e))?;
    let old = cert_files(&kc);
    let (key_pem, cert) =
        bootstrap::request_certificate(&slot.current(), node, Duration::from_secs(300)).await?;
    std::fs::create_dir_all(cert_dir).map_err(|e| bad(cert_dir, e))?;
    let stamp = jiff::Timestamp::now().as_nanosecond() / 1_000_000;
    let crt = cert_dir.join(format!("node-client-{stamp}.crt"));
    let key = cert_dir.join(format!("node-client-{stamp}.key"));
    bootstrap::write_private(&key, key_pem.as_bytes())?;
    bootstrap::write_private(&crt, &cert)?;
    let text = bootstrap::node_kubeconfig(&kc, &crt, &key).map_err(|e| bad(kubeconfig, e))?;
    bootstrap::write_private(kubeconfig, text.as_bytes())?;
    slot.replace(client_from(kubeconfig).await?);
    if let Some((c, k)) = old {
        for f in [c, k] {
            if f.starts_with(cert_dir) && f != crt && f != key {
                let _ = std::fs::remove_file(&f);
            }
        }
    }
    let (_, until) = validity(&cert).map_err(|e| bad(&crt, e))?;
    tracing::info!(cert = %crt.display(), valid_until = until, "node client certificate rotated");
    Ok(())
}

/// Renew the node's client certificate for ever (see the module). Returns
/// at once when the kubeconfig names no certificate file (token auth).
pub async fn run(slot: Slot, kubeconfig: PathBuf, cert_dir: PathBuf, node: String) {
    let mut retry = Duration::from_secs(5);
    loop {
        let Some((crt, v)) = current_cert(&kubeconfig) else {
            tracing::info!(kubeconfig = %kubeconfig.display(), "no client certificate file: nothing to rotate");
            return;
        };
        let (nb, na) = match v {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(cert = %crt.display(), error = %e, "cannot read the node certificate: not rotating");
                return;
            }
        };
        let now = jiff::Timestamp::now().as_second();
        let at = deadline(nb, na, now, jitter());
        tracing::info!(cert = %crt.display(), renew_in_secs = at - now, "node certificate rotation scheduled");
        tokio::time::sleep(Duration::from_secs((at - now).max(0) as u64)).await;
        match renew(&slot, &kubeconfig, &cert_dir, &node).await {
            Ok(()) => retry = Duration::from_secs(5),
            Err(e) => {
                tracing::warn!(error = %e, retry_secs = retry.as_secs(), "rotating the node certificate");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(300));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_late_in_the_lifetime_but_never_at_once() {
        // A year-long certificate issued now: 70-90 % in.
        let year = 365 * 86400;
        assert_eq!(deadline(0, year, 0, 0.0), year * 7 / 10);
        assert!(deadline(0, year, 0, 0.99) < year * 9 / 10 + 1);
        // A 2-minute certificate backdated 5 minutes: 70 % in is already
        // past; halfway through the 2 minutes left instead.
        let now = 1_000_000;
        assert_eq!(deadline(now - 300, now + 120, now, 0.0), now + 60);
        // Expired: now.
        assert_eq!(deadline(0, 100, 200, 0.5), 200);
    }

    #[test]
    fn validity_reads_the_certificate() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut params =
            rcgen::CertificateParams::new(vec!["n".to_string()]).unwrap_or_else(|e| panic!("{e}"));
        params.not_before = rcgen::date_time_ymd(2030, 1, 1);
        params.not_after = rcgen::date_time_ymd(2030, 1, 2);
        let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
        let (nb, na) = validity(cert.pem().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(na - nb, 86400);
        assert!(validity(b"not a certificate").is_err());
    }
}
