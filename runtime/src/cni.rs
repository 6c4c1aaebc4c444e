//! Invoking CNI plugins per the CNI spec: the first `*.conflist` in the
//! config dir, each plugin run with CNI_* variables and its config on stdin,
//! ADD results chained through `prevResult`, DEL in reverse order.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{IoContext, Result, RuntimeError};

/// Where CNI configuration and plugins are.
#[derive(Clone, Debug)]
pub struct CniConfig {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
        }
    }
}

/// A host port forwarded to the pod (the `portMappings` capability,
/// implemented by the `portmap` plugin).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Empty for all host addresses.
    pub host_ip: String,
}

/// Network attachment of one pod.
pub struct Attachment<'a> {
    pub container_id: &'a str,
    pub netns: &'a Path,
    pub ifname: &'a str,
    pub port_mappings: &'a [PortMapping],
    /// `CNI_ARGS` (`K=V;K=V`), e.g. the Kubernetes pod name and namespace.
    pub args: String,
}

fn err(id: &str, reason: String) -> RuntimeError {
    RuntimeError::Cni {
        id: id.into(),
        reason,
    }
}

impl CniConfig {
    /// The network list in use (first `*.conflist` by name).
    pub fn load(&self) -> Result<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.conf_dir)
            .ctx("read", &self.conf_dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "conflist"))
            .collect();
        files.sort();
        let path = files.first().ok_or_else(|| RuntimeError::Cni {
            id: String::new(),
            reason: format!("no *.conflist in {}", self.conf_dir.display()),
        })?;
        let text = std::fs::read_to_string(path).ctx("read", path)?;
        serde_json::from_str(&text).map_err(|e| RuntimeError::Cni {
            id: String::new(),
            reason: format!("{}: {e}", path.display()),
        })
    }

    fn exec(
        &self,
        cmd: &str,
        att: &Attachment<'_>,
        net: &Value,
        plugin: &Value,
        prev: Option<&Value>,
    ) -> Result<Value> {
        let id = att.container_id;
        let kind = plugin["type"]
            .as_str()
            .ok_or_else(|| err(id, "plugin without type".into()))?;
        let bin = self
            .bin_dirs
            .iter()
            .map(|d| d.join(kind))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                err(
                    id,
                    format!("plugin {kind:?} not found in {:?}", self.bin_dirs),
                )
            })?;
        let mut conf = plugin.clone();
        conf["name"] = net["name"].clone();
        conf["cniVersion"] = net["cniVersion"].clone();
        if let Some(p) = prev {
            conf["prevResult"] = p.clone();
        }
        if plugin["capabilities"]["portMappings"] == json!(true) && !att.port_mappings.is_empty() {
            let pm: Vec<Value> = att
                .port_mappings
                .iter()
                .map(|m| {
                    let mut v = json!({"hostPort": m.host_port, "containerPort": m.container_port,
                        "protocol": if m.protocol.is_empty() { "tcp" } else { m.protocol.as_str() }});
                    if !m.host_ip.is_empty() {
                        v["hostIP"] = json!(m.host_ip);
                    }
                    v
                })
                .collect();
            conf["runtimeConfig"] = json!({ "portMappings": pm });
        }
        let path = std::env::join_paths(&self.bin_dirs).map_err(|e| err(id, e.to_string()))?;
        let mut child = Command::new(&bin)
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", att.netns)
            .env("CNI_IFNAME", att.ifname)
            .env("CNI_PATH", path)
            .env("CNI_ARGS", &att.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err(id, format!("{}: {e}", bin.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(conf.to_string().as_bytes())
                .map_err(|e| err(id, format!("{}: {e}", bin.display())))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| err(id, format!("{}: {e}", bin.display())))?;
        if !out.status.success() {
            let msg = String::from_utf8_lossy(&out.stdout);
            return Err(err(
                id,
                format!(
                    "{kind} {cmd} failed: {} {}",
                    msg.trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(prev.cloned().unwrap_or(Value::Null));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| err(id, format!("{kind} result: {e}")))
    }

    /// ADD the pod to the network; returns the final result.
    pub fn add(&self, att: &Attachment<'_>) -> Result<Value> {
        let net = self.load()?;
        let plugins = net["plugins"].as_array().cloned().unwrap_or_default();
        let mut prev: Option<Value> = None;
        for p in &plugins {
            let r = self.exec("ADD", att, &net, p, prev.as_ref())?;
            prev = Some(r);
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// DEL the pod from the network (best effort across plugins).
    pub fn del(&self, att: &Attachment<'_>, prev: Option<&Value>) -> Result<()> {
        let net = self.load()?;
        let plugins = net["plugins"].as_array().cloned().unwrap_or_default();
        let mut first_err = None;
        for p in plugins.iter().rev() {
            if let Err(e) = self.exec("DEL", att, &net, p, prev) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Bring up `lo` in the namespace with the loopback plugin.
    pub fn loopback(&self, att: &Attachment<'_>, cmd: &str) -> Result<()> {
        let net = json!({"cniVersion": "1.0.0", "name": "podctl-loopback"});
        let lo = Attachment {
            ifname: "lo",
            args: att.args.clone(),
            ..*att
        };
        self.exec(cmd, &lo, &net, &json!({"type": "loopback"}), None)
            .map(|_| ())
    }
}

/// First IPv4 address of a CNI result, without prefix length.
pub fn first_ip(result: &Value) -> Option<String> {
    result["ips"]
        .as_array()?
        .iter()
        .filter_map(|ip| ip["address"].as_str())
        .map(|a| a.split('/').next().unwrap_or(a).to_string())
        .find(|a| a.contains('.') && !a.starts_with("127."))
}
