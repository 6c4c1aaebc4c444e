//! One probe check: exec (CRI ExecSync), httpGet, tcpSocket, grpc.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerPort, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use podctl_cri::proto;
use tokio::net::TcpStream;
use tonic::Request;

use crate::cri::Cri;

/// Where a probe goes.
#[derive(Clone, Debug)]
pub struct Target {
    pub container_id: String,
    /// The pod's IP (the host's for host-network pods).
    pub ip: String,
}

/// Resolve a port given by number or by container port name.
pub fn port(p: &IntOrString, ports: &[ContainerPort]) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n} out of range")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            ports
                .iter()
                .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                .and_then(|cp| u16::try_from(cp.container_port).ok())
                .ok_or_else(|| format!("no container port named {name:?}"))
        }
    }
}

fn host(ip: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    }
}

pub async fn run<C: Cri>(
    cri: &C,
    probe: &Probe,
    t: &Target,
    ports: &[ContainerPort],
    timeout: Duration,
) -> Result<(), String> {
    if let Some(e) = &probe.exec {
        let r = cri
            .exec_sync(Request::new(proto::ExecSyncRequest {
                container_id: t.container_id.clone(),
                cmd: e.command.clone().unwrap_or_default(),
                timeout: timeout.as_secs() as i64,
            }))
            .await
            .map_err(|s| s.message().to_string())?
            .into_inner();
        return if r.exit_code == 0 {
            Ok(())
        } else {
            Err(format!(
                "exec exited {}: {}",
                r.exit_code,
                String::from_utf8_lossy(&r.stdout).trim()
            ))
        };
    }
    if let Some(h) = &probe.http_get {
        let port = port(&h.port, ports)?;
        let scheme = h.scheme.as_deref().unwrap_or("HTTP").to_ascii_lowercase();
        let addr = h
            .host
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| t.ip.clone());
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        let url = format!("{scheme}://{}:{port}{path}", host(&addr));
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .danger_accept_invalid_certs(true)
            .redirect(reqwest::redirect::Policy::limited(10))
            .build()
            .map_err(|e| e.to_string())?;
        let mut req = client
            .get(&url)
            .header("User-Agent", "kube-probe/1.34")
            .header("Accept", "*/*");
        for hd in h.http_headers.iter().flatten() {
            req = req.header(hd.name.as_str(), hd.value.as_str());
        }
        let resp = req.send().await.map_err(|e| format!("GET {url}: {e}"))?;
        let code = resp.status().as_u16();
        return if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("GET {url}: HTTP {code}"))
        };
    }
    if let Some(s) = &probe.tcp_socket {
        let port = port(&s.port, ports)?;
        let addr = s
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| t.ip.clone());
        let target = format!("{}:{port}", host(&addr));
        return match tokio::time::timeout(timeout, TcpStream::connect(&target)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial {target}: {e}")),
            Err(_) => Err(format!("dial {target}: timed out")),
        };
    }
    if let Some(g) = &probe.grpc {
        let port = u16::try_from(g.port).map_err(|_| format!("port {} out of range", g.port))?;
        let uri = format!("http://{}:{port}", host(&t.ip));
        let service = g.service.clone().unwrap_or_default();
        let call = async {
            let ch = tonic::transport::Endpoint::from_shared(uri.clone())
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| format!("connect {uri}: {e}"))?;
            let mut client = tonic_health::pb::health_client::HealthClient::new(ch);
            let r = client
                .check(tonic_health::pb::HealthCheckRequest { service })
                .await
                .map_err(|s| format!("health check {uri}: {}", s.message()))?
                .into_inner();
            if r.status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
                Ok(())
            } else {
                Err(format!("health check {uri}: status {}", r.status))
            }
        };
        return match tokio::time::timeout(timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(format!("health check {uri}: timed out")),
        };
    }
    Err("probe has no handler (exec, httpGet, tcpSocket or grpc)".into())
}
